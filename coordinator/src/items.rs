//! Items a pool can cut into chunks for a task.

use std::ops::{Deref, Range};

use corepool_protocol::codec::{self, CodecError};
use corepool_worker::{
    Task, encode_payload,
    tasks::{BoundedRows, BoundedRowsView, BoundsRun, RowBlock},
};
use serde::Serialize;

use crate::{
    Matrix,
    outgoing::{Outgoing, SharedBytes},
};

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

/// The frame of `message`, then `task` and `items` at `range`, encoded whole.
fn whole_frame<C, I: Items<C> + ?Sized, T: Task<Chunk = C>, Message: Serialize>(
    items: &I,
    message: &Message,
    task: &T,
    range: Range<usize>,
) -> Result<Outgoing, CodecError> {
    codec::encode_frame(message, 0, |out| items.encode_chunk(task, range, out)).map(Outgoing::encoded)
}

/// The frame of `message`, then `payload`, whose last field is `values`: those are sent
/// from the matrix's memory, not copied into the frame.
fn frame_sharing(
    message: &impl Serialize,
    payload: &impl Serialize,
    values: SharedBytes,
) -> Result<Outgoing, CodecError> {
    let head = codec::encode_frame_head(message, payload, values.as_slice())?;
    Ok(Outgoing::with_tail(head, values))
}

impl Items<RowBlock> for Matrix {
    fn len(&self) -> usize {
        self.rows()
    }

    fn chunk(&self, range: Range<usize>) -> RowBlock {
        self.block(range)
    }

    fn encode_chunk<T: Task<Chunk = RowBlock>>(
        &self,
        task: &T,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        match self.block_view(range.clone()) {
            Some(view) => codec::encode_into(&(task, view), out),
            None => encode_payload(task, &self.chunk(range), out),
        }
    }

    fn chunk_frame<T: Task<Chunk = RowBlock>, Message: Serialize>(
        &self,
        message: &Message,
        task: &T,
        range: Range<usize>,
    ) -> Result<Outgoing, CodecError> {
        match self.block_view(range.clone()) {
            Some(view) => frame_sharing(message, &(task, view), self.shared_bytes(range)),
            None => whole_frame(self, message, task, range),
        }
    }
}

/// Rows paired with the bounds to count them in: the items `(row, min, max)` that the
/// tutorial passes to `starmap`.
#[derive(Debug, Clone)]
pub struct WithBounds<M> {
    /// The rows (a `&Matrix`, an `Arc<Matrix>`, ...).
    pub matrix: M,
    /// Smallest value counted, for every row.
    pub min: i64,
    /// Largest value counted, for every row.
    pub max: i64,
}

impl<M> WithBounds<M> {
    /// Every row's bounds, as the one run they make.
    fn bounds(&self, rows: usize) -> Vec<BoundsRun> {
        let run = BoundsRun { min: self.min, max: self.max, rows: rows as u64 };
        if rows == 0 { Vec::new() } else { vec![run] }
    }
}

impl<M: Deref<Target = Matrix>> Items<BoundedRows> for WithBounds<M> {
    fn len(&self) -> usize {
        self.matrix.rows()
    }

    fn chunk(&self, range: Range<usize>) -> BoundedRows {
        BoundedRows { bounds: self.bounds(range.len()), rows: self.matrix.chunk(range) }
    }

    fn encode_chunk<T: Task<Chunk = BoundedRows>>(
        &self,
        task: &T,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let bounds = self.bounds(range.len());
        match self.matrix.block_view(range.clone()) {
            Some(rows) => codec::encode_into(&(task, BoundedRowsView { bounds: &bounds, rows }), out),
            None => encode_payload(task, &self.chunk(range), out),
        }
    }

    fn chunk_frame<T: Task<Chunk = BoundedRows>, Message: Serialize>(
        &self,
        message: &Message,
        task: &T,
        range: Range<usize>,
    ) -> Result<Outgoing, CodecError> {
        let Some(rows) = self.matrix.block_view(range.clone()) else {
            return codec::encode_frame(message, 0, |out| self.encode_chunk(task, range, out)).map(Outgoing::encoded);
        };
        let bounds = self.bounds(range.len());
        let values = self.matrix.shared_bytes(range);
        let head =
            codec::encode_frame_head(message, &(task, BoundedRowsView { bounds: &bounds, rows }), values.as_slice())?;
        Ok(Outgoing::with_tail(head, values))
    }
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
