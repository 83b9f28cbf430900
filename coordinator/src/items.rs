//! Items a pool can cut into chunks for a task.

use std::ops::{Deref, Range};

use corepool_worker::tasks::{BoundedRows, RowBlock};

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
}

impl Items<RowBlock> for Matrix {
    fn len(&self) -> usize {
        self.rows()
    }

    fn chunk(&self, range: Range<usize>) -> RowBlock {
        self.block(range)
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

impl<M: Deref<Target = Matrix>> Items<BoundedRows> for WithBounds<M> {
    fn len(&self) -> usize {
        self.matrix.rows()
    }

    fn chunk(&self, range: Range<usize>) -> BoundedRows {
        BoundedRows { bounds: vec![(self.min, self.max); range.len()], rows: self.matrix.chunk(range) }
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

impl<C, I: Items<C> + ?Sized> Items<C> for std::sync::Arc<I> {
    fn len(&self) -> usize {
        (**self).len()
    }

    fn chunk(&self, range: Range<usize>) -> C {
        (**self).chunk(range)
    }
}

impl<C, I: Items<C> + ?Sized> Items<C> for &I {
    fn len(&self) -> usize {
        (**self).len()
    }

    fn chunk(&self, range: Range<usize>) -> C {
        (**self).chunk(range)
    }
}
