//! The tutorial's application on corepool: for a matrix of integers, count how many values
//! of each row lie in a range, serially or in a pool.
//!
//! - [`Matrix`]: the rows, in memory, in the narrowest integer type that holds them;
//! - [`tasks`]: the tasks workers run on row blocks: count in range (per row, and with
//!   each row's own bounds, for `starmap`), and the tutorial's "normalize each row";
//! - [`input`]: CSV and `.npy` files, read whole into a [`Matrix`] or cut into pieces that
//!   the workers parse themselves ([`text`], [`values`]).
//!
//! Workers find these tasks in [`registry`]; a program that runs them serves as its own
//! worker with `corepool::task::init_with(corepool_tutorial::registry)` first thing in `main`.

mod excerpt;
pub mod input;
mod items;
pub mod matrix;
pub mod tasks;
pub mod text;
pub mod values;

pub use items::WithBounds;
pub use matrix::Matrix;

use corepool::task::Registry;

/// Every task of the tutorial, for a worker to find by name.
pub fn registry() -> Registry {
    Registry::new()
        .register::<tasks::CountInRange>()
        .register::<tasks::CountInRangeStar>()
        .register::<tasks::NormalizeRows>()
        .register::<text::CountText>()
        .register::<values::CountNpyRows>()
}
