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
    /// The bytes to leave out of a frame head were not the payload's last field.
    #[error("cannot encode: the bytes sent apart are not the payload's last field")]
    NotSpliced,
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

/// Builds the head of a frame whose payload, `payload_len` raw bytes, is sent from where it
/// lies right after the head: the length prefix, which counts the payload, and `message`.
pub fn encode_frame_head_before<M: Serialize + ?Sized>(message: &M, payload_len: usize) -> Result<Vec<u8>, CodecError> {
    let mut head = vec![0; 4];
    encode_into(message, &mut head)?;
    let len = head.len() - 4 + payload_len;
    if len > MAX_FRAME_LEN as usize {
        return Err(CodecError::TooLarge(len));
    }
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(head)
}

/// Builds the head of a frame whose end is sent from where it lies: the length prefix,
/// `message`, then `payload` *without* the bytes of `spliced`, which `payload` must encode
/// last (as a byte field, so in one piece). The prefix counts `spliced`: written right after
/// the head, they complete the same frame that [`encode_frame`] would have built, without
/// ever being copied.
pub fn encode_frame_head<M: Serialize + ?Sized, P: Serialize + ?Sized>(
    message: &M,
    payload: &P,
    spliced: &[u8],
) -> Result<Vec<u8>, CodecError> {
    let mut head = SplicingWriter { head: vec![0; 4], spliced, seen: spliced.is_empty(), after: false };
    bincode::serde::encode_into_std_write(message, &mut head, config())?;
    bincode::serde::encode_into_std_write(payload, &mut head, config())?;
    if !head.seen || head.after {
        return Err(CodecError::NotSpliced);
    }
    let mut head = head.head;
    let len = head.len() - 4 + spliced.len();
    if len > MAX_FRAME_LEN as usize {
        return Err(CodecError::TooLarge(len));
    }
    head[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(head)
}

/// Collects what the encoder writes, but skips the one write of `spliced` (known by its
/// address, so equal bytes elsewhere are kept), noting whether anything came after it.
struct SplicingWriter<'a> {
    head: Vec<u8>,
    spliced: &'a [u8],
    seen: bool,
    after: bool,
}

impl std::io::Write for SplicingWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !self.seen && std::ptr::eq(bytes, self.spliced) {
            self.seen = true;
        } else {
            self.after |= self.seen && !bytes.is_empty();
            self.head.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    #[test]
    fn a_head_and_its_spliced_bytes_make_the_same_frame() {
        let id = TaskId { job: 1, chunk: 2, first_row: 3 };
        let message = ToWorker::Task { id, task: "t".into() };
        let data = vec![7u8; 300];
        let payload = (5u32, serde_bytes::Bytes::new(&data));
        let whole = encode_frame(&message, 0, |out| encode_into(&payload, out)).unwrap();
        let mut spliced = encode_frame_head(&message, &payload, &data).unwrap();
        assert_eq!(spliced.len(), whole.len() - data.len(), "the data is left out of the head");
        spliced.extend_from_slice(&data);
        assert_eq!(spliced, whole);
    }

    #[test]
    fn a_head_before_raw_bytes_makes_the_same_frame_as_one_encoded_whole() {
        let message = ToWorker::Batch { id: TaskId { job: 1, chunk: 0, first_row: 0 }, tasks: 2 };
        let calls = b"two calls, encoded";
        let whole = encode_frame(&message, calls.len(), |out| {
            out.extend_from_slice(calls);
            Ok(())
        })
        .unwrap();
        let mut head = encode_frame_head_before(&message, calls.len()).unwrap();
        head.extend_from_slice(calls);
        assert_eq!(head, whole);
        let too_long = MAX_FRAME_LEN as usize;
        assert!(matches!(encode_frame_head_before(&message, too_long), Err(CodecError::TooLarge(_))));
    }

    #[test]
    fn bytes_that_are_not_the_last_field_cannot_be_spliced() {
        let data = vec![1u8; 8];
        let other = vec![1u8; 8];
        let first = (serde_bytes::Bytes::new(&data), 9u32);
        assert!(matches!(encode_frame_head(&ToWorker::Shutdown, &first, &data), Err(CodecError::NotSpliced)));
        // Equal bytes elsewhere are not the ones to splice.
        let elsewhere = (5u32, serde_bytes::Bytes::new(&other));
        assert!(matches!(encode_frame_head(&ToWorker::Shutdown, &elsewhere, &data), Err(CodecError::NotSpliced)));
    }
}
