//! Where a streamed matrix comes from, in which format, and what can be wrong with it.

use std::path::{Path, PathBuf};

use super::InputError;

/// The formats `--input` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text, one row a line, cells separated by a delimiter or blanks.
    Csv,
    /// numpy's `.npy`: a 2-D array in C order.
    Npy,
}

impl Format {
    /// The format a file name implies: `.npy` is numpy's, anything else is text.
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("npy") => Format::Npy,
            _ => Format::Csv,
        }
    }
}

/// The place a matrix is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// Standard input (`-` on the command line).
    Stdin,
}

impl Origin {
    /// `-` is standard input; anything else a file.
    pub fn from_arg(path: &Path) -> Self {
        if path.as_os_str() == "-" { Origin::Stdin } else { Origin::File(path.to_path_buf()) }
    }

    /// The name errors give: the path as given, or `<stdin>`.
    pub fn name(&self) -> String {
        match self {
            Origin::File(path) => path.display().to_string(),
            Origin::Stdin => "<stdin>".to_owned(),
        }
    }
}

/// Why a streamed matrix could not be read; Display is one line naming the place.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An error of the kinds the in-memory reader has (cannot read, empty, bad cell, ...).
    #[error(transparent)]
    Input(#[from] InputError),
    /// A header line and no row under it.
    #[error("{file}: no rows: only a header (line {line})")]
    HeaderOnly {
        /// The input's name.
        file: String,
        /// The header's line number.
        line: u64,
    },
    /// A line longer than `--max-line-bytes`.
    #[error("{file}:{line}: line longer than {limit} bytes (--max-line-bytes raises the limit)")]
    LineTooLong {
        /// The input's name.
        file: String,
        /// Where the line starts.
        line: u64,
        /// The limit.
        limit: usize,
    },
    /// A NUL byte among the first bytes: not text at all.
    #[error("{file}:{line}: binary data (a NUL byte), not CSV text")]
    Binary {
        /// The input's name.
        file: String,
        /// The line the NUL byte is on.
        line: u64,
    },
    /// A first line whose quoted cell is not closed on it.
    #[error("{file}:{line}: {}", crate::text::SPANS_LINES)]
    UnclosedQuote {
        /// The input's name.
        file: String,
        /// The line.
        line: u64,
    },
    /// A first data row with no cell left after `--skip-cols`.
    #[error("{file}:{line}: --skip-cols {skip} leaves no values: the line has {cells} cell{}", if *cells == 1 { "" } else { "s" })]
    NoValuesLeft {
        /// The input's name.
        file: String,
        /// The row's line number.
        line: u64,
        /// Cells on the line.
        cells: usize,
        /// Cells skipped.
        skip: usize,
    },
    /// A `.npy` file corepool cannot count (not 2-D, Fortran order, not numbers, cut short).
    #[error("{file}: {message}")]
    Npy {
        /// The input's name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A fault a worker found in its piece: `LINE:COLUMN: what`, put after the file's name.
    #[error("{file}:{fault}")]
    Cell {
        /// The input's name.
        file: String,
        /// The worker's message, its line numbered in the whole file.
        fault: String,
    },
}
