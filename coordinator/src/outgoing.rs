//! Frames on their way to a worker: bytes encoded for the frame, then, for a chunk of a
//! matrix, the matrix's own bytes, written to the socket straight from its memory.

use std::{io::Write, ops::Range, sync::Arc};

/// A frame to send: its encoded head, then perhaps bytes that are sent from where they lie.
#[derive(Clone)]
pub struct Outgoing {
    head: Vec<u8>,
    tail: Option<SharedBytes>,
}

impl Outgoing {
    /// A frame encoded whole.
    pub fn encoded(frame: Vec<u8>) -> Self {
        Self { head: frame, tail: None }
    }

    /// A frame whose last bytes are `tail`; the length prefix in `head` must count them.
    pub fn with_tail(head: Vec<u8>, tail: SharedBytes) -> Self {
        Self { head, tail: Some(tail) }
    }

    /// The encoded part: the whole frame, unless it has a tail.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The bytes sent from where they lie, after the head (none for a frame encoded whole).
    pub fn tail(&self) -> &[u8] {
        self.tail.as_ref().map_or(&[], SharedBytes::as_slice)
    }

    /// The frame's length in bytes, head and tail.
    pub fn frame_len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, |tail| tail.range.len())
    }

    /// Writes the whole frame to `out`.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(&self.head)?;
        match &self.tail {
            Some(tail) => out.write_all(tail.as_slice()),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = self.tail.as_ref().map_or(0, |tail| tail.range.len());
        write!(f, "Outgoing({} bytes + {tail} shared)", self.head.len())
    }
}

/// Bytes inside a buffer that others share (a matrix's values), kept alive while a frame
/// that carries them waits to be written.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsBytes>,
    range: Range<usize>,
}

impl SharedBytes {
    /// The bytes at `range` of what `owner` holds.
    ///
    /// # Panics
    /// If `range` is not within the owner's bytes.
    pub fn new(owner: Arc<dyn AsBytes>, range: Range<usize>) -> Self {
        assert!(range.start <= range.end && range.end <= owner.as_bytes().len(), "{range:?} is out of bounds");
        Self { owner, range }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.owner.as_bytes()[self.range.clone()]
    }
}

/// A buffer that can be seen as bytes, from any thread.
pub trait AsBytes: Send + Sync {
    /// The buffer's bytes, in memory order.
    fn as_bytes(&self) -> &[u8];
}

impl<T: bytemuck::Pod + Send + Sync> AsBytes for Vec<T> {
    fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}
