//! Items a pool can cut into chunks for a task.

use std::ops::{Deref, Range};

use corepool_protocol::codec::{self, CodecError};
use corepool_worker::{
    Task, encode_payload,
    tasks::{BoundedRows, BoundedRowsView, BoundsRun, RowBlock},
};

use crate::Matrix;

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
            Some(rows) => codec::encode_into(&(task, BoundedRowsView { rows, bounds: &bounds }), out),
            None => encode_payload(task, &self.chunk(range), out),
        }
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
        }
    )*};
}

forward_to_pointee!(std::sync::Arc<I>, &I);
