//! Items a pool can cut into chunks for a task.

use std::ops::Range;

use corepool_protocol::codec::{self, CodecError};
use corepool_worker::{Task, encode_payload};
use serde::Serialize;

use crate::outgoing::Outgoing;

/// A sequence of items that can be cut into chunks of a task's wire form `C`.
pub trait Items<C> {
    /// How many items there are.
    fn len(&self) -> usize;

    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items at `range` (which lies within `0..self.len()`) as one chunk.
    fn chunk(&self, range: Range<usize>) -> C;

    /// Appends `task` and the items at `range`, encoded as one chunk, to `out`. The default
    /// builds the chunk and encodes it; a source that holds its items in their wire form
    /// already writes them straight in, sparing a copy.
    fn encode_chunk<T: Task<Chunk = C>>(
        &self,
        task: &T,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        encode_payload(task, &self.chunk(range), out)
    }

    /// The whole frame of `message` followed by `task` and the items at `range`. The
    /// default encodes them into it ([`encode_chunk`](Items::encode_chunk)); a source whose
    /// items lie in memory in their wire form has them written from there instead.
    fn chunk_frame<T: Task<Chunk = C>, Message: Serialize>(
        &self,
        message: &Message,
        task: &T,
        range: Range<usize>,
    ) -> Result<Outgoing, CodecError> {
        whole_frame(self, message, task, range)
    }
}

/// The frame of `message`, then `task` and `items` at `range`, encoded whole: what
/// [`Items::chunk_frame`] does unless a source overrides it.
pub fn whole_frame<C, I: Items<C> + ?Sized, T: Task<Chunk = C>, Message: Serialize>(
    items: &I,
    message: &Message,
    task: &T,
    range: Range<usize>,
) -> Result<Outgoing, CodecError> {
    codec::encode_frame(message, 0, |out| items.encode_chunk(task, range, out)).map(Outgoing::encoded)
}

impl<T: Clone> Items<Vec<T>> for [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn chunk(&self, range: Range<usize>) -> Vec<T> {
        self[range].to_vec()
    }
}

impl<T: Clone> Items<Vec<T>> for Vec<T> {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn chunk(&self, range: Range<usize>) -> Vec<T> {
        self[range].to_vec()
    }
}

/// Items behind a pointer (`Arc<Matrix>` for `map_async`, `&Matrix`) are the items
/// pointed at.
macro_rules! forward_to_pointee {
    ($($pointer:ty),*) => {$(
        impl<C, I: Items<C> + ?Sized> Items<C> for $pointer {
            fn len(&self) -> usize {
                (**self).len()
            }

            fn chunk(&self, range: Range<usize>) -> C {
                (**self).chunk(range)
            }

            fn encode_chunk<T: Task<Chunk = C>>(
                &self,
                task: &T,
                range: Range<usize>,
                out: &mut Vec<u8>,
            ) -> Result<(), CodecError> {
                (**self).encode_chunk(task, range, out)
            }

            fn chunk_frame<T: Task<Chunk = C>, Message: Serialize>(
                &self,
                message: &Message,
                task: &T,
                range: Range<usize>,
            ) -> Result<Outgoing, CodecError> {
                (**self).chunk_frame(message, task, range)
            }
        }
    )*};
}

forward_to_pointee!(std::sync::Arc<I>, &I);
