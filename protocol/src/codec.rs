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
    /// An encoded frame would be over the frame limit.
    #[error("a frame of {0} bytes is over the limit of {MAX_FRAME_LEN} bytes: use smaller chunks")]
    TooLarge(usize),
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

/// Decodes a `T` from the start of `bytes`, returning it and the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    Ok((value, &bytes[used..]))
}

/// Builds a whole frame: the length prefix, `message`, then the payload that
/// `write_payload` appends, which runs to the end of the frame. A payload carried this way
/// is neither length-prefixed nor copied a second time, and the receiver reads it in place
/// ([`decode_prefix`] gives it back).
pub fn encode_frame<M: Serialize + ?Sized>(
    message: &M,
    capacity: usize,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<Vec<u8>, CodecError> {
    let mut frame = Vec::with_capacity(capacity.saturating_add(64));
    frame.extend_from_slice(&[0; 4]);
    encode_into(message, &mut frame)?;
    write_payload(&mut frame)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_LEN as usize {
        return Err(CodecError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskId, ToWorker, frame::read_frame};

    #[test]
    fn a_frame_carries_its_message_then_its_payload() {
        let id = TaskId { job: 4, chunk: 5, first_row: 6 };
        let message = ToWorker::Task { id, task: "t".into() };
        let frame = encode_frame(&message, 3, |out| {
            out.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        let mut body = Vec::new();
        assert!(read_frame(&mut frame.as_slice(), &mut body, MAX_FRAME_LEN).unwrap());
        let (decoded, payload) = decode_prefix::<ToWorker>(&body).unwrap();
        assert_eq!((decoded, payload), (message, &b"abc"[..]));
    }
}
