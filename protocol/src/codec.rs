//! The one place that knows how values become bytes: bincode 2 through serde.
//!
//! Swapping the codec means changing this module only.

use serde::{Serialize, de::DeserializeOwned};

use crate::frame::MAX_FRAME_LEN;

/// An error from encoding or decoding a value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded, but some were left over.
    #[error("cannot decode: {0} trailing bytes")]
    Trailing(usize),
}

// The limit stops a hostile length prefix inside a body from making the decoder
// allocate more than a whole frame may hold.
fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ MAX_FRAME_LEN as usize }>()
}

/// Encodes `value`, appending its bytes to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a whole `T` from `bytes`; bytes left over are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}
