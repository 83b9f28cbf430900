//! The tutorial's rows as items a pool cuts into chunks: a matrix's rows are sent from its
//! own memory, not copied into each frame.

use std::ops::{Deref, Range};

use corepool::task::{
    ChunkLen, Items, Outgoing, SharedBytes, Task,
    codec::{self, CodecError},
    encode_payload, whole_frame,
};
use serde::Serialize;

use crate::{
    Matrix,
    tasks::{BoundedRows, BoundedRowsView, BoundsRun, RowBlock},
    text::TextPiece,
    values::FileRows,
};

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

impl ChunkLen for RowBlock {
    fn items(&self) -> usize {
        self.rows()
    }
}

impl ChunkLen for BoundedRows {
    fn items(&self) -> usize {
        self.rows.rows()
    }
}

impl ChunkLen for TextPiece {
    fn items(&self) -> usize {
        self.rows as usize
    }
}

impl ChunkLen for FileRows {
    fn items(&self) -> usize {
        self.rows as usize
    }
}
