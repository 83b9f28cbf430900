//! Length-prefixed frames: a little-endian `u32` body length, then the body.

use std::io::{self, Read, Write};

/// The largest body a frame may carry once a peer is authenticated (1 GiB).
pub const MAX_FRAME_LEN: u32 = 1 << 30;

/// The largest body a frame may carry during the handshake, before the peer is trusted.
pub const HANDSHAKE_FRAME_LEN: u32 = 4 << 10;

/// An error from reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit; nothing was allocated for it.
    #[error("frame of {len} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The length the prefix claimed.
        len: u64,
        /// The limit in force.
        limit: u32,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame (prefix included) that arrived.
        got: u64,
        /// Bytes the frame should have had.
        expected: u64,
    },
    /// The underlying read or write failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes `body` as one frame. The caller buffers `writer` if it wants one system call.
pub fn write_frame(writer: &mut impl Write, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge { len: body.len() as u64, limit: MAX_FRAME_LEN })?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(body)?;
    Ok(())
}

/// Reads one frame body into `buf` (replacing its contents).
///
/// Returns `Ok(false)` on a clean end of stream before the frame's first byte, and an
/// error if the stream ends inside a frame or the length is over `limit`. The buffer
/// grows with the bytes that actually arrive, so a lying prefix cannot force a large
/// allocation.
pub fn read_frame(reader: &mut impl Read, buf: &mut Vec<u8>, limit: u32) -> Result<bool, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match reader.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated { got: got as u64, expected: 4 }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(prefix);
    if len > limit {
        return Err(FrameError::TooLarge { len: u64::from(len), limit });
    }
    buf.clear();
    buf.reserve((len as usize).min(1 << 20));
    let read = reader.take(u64::from(len)).read_to_end(buf)?;
    if read < len as usize {
        return Err(FrameError::Truncated { got: 4 + read as u64, expected: 4 + u64::from(len) });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, body).unwrap();
        out
    }

    #[test]
    fn round_trips_bodies_back_to_back() {
        let mut wire = framed(b"first");
        wire.extend(framed(b""));
        wire.extend(framed(&[7; 300]));
        let mut reader = wire.as_slice();
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap());
        assert_eq!(buf, b"first");
        assert!(read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap());
        assert!(buf.is_empty());
        assert!(read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap());
        assert_eq!(buf, [7; 300]);
        assert!(!read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap(), "clean EOF");
    }

    #[test]
    fn eof_inside_prefix_is_an_error() {
        let mut reader: &[u8] = &[5, 0];
        let err = read_frame(&mut reader, &mut Vec::new(), MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 2, expected: 4 }), "{err}");
    }

    #[test]
    fn eof_inside_body_is_an_error() {
        let mut wire = framed(b"hello world");
        wire.truncate(9);
        let err = read_frame(&mut wire.as_slice(), &mut Vec::new(), MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { got: 9, expected: 15 }), "{err}");
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut reader: &[u8] = &u32::MAX.to_le_bytes();
        let mut buf = Vec::new();
        let err = read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len, .. } if len == u64::from(u32::MAX)));
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn handshake_limit_is_enforced() {
        let wire = framed(&[0; HANDSHAKE_FRAME_LEN as usize + 1]);
        let err = read_frame(&mut wire.as_slice(), &mut Vec::new(), HANDSHAKE_FRAME_LEN).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }
}
