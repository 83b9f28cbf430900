//! Where streamed counts go: put back in row order through a bounded reorder buffer,
//! summed up for the summary and the report, checked against a serial count with
//! `--verify`, and written to `--output` as they come (CSV or `.npy`), into a file kept
//! out of sight and put in place only when the whole run has succeeded.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufWriter, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
};

use anyhow::{Context, bail};

use super::pending::Pending;

/// The counts so far, summed up: what the summary and the report say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Rows counted.
    pub rows: u64,
    /// Sum of the counts.
    pub in_range: u64,
    /// The first ten counts, in row order.
    pub first: Vec<u32>,
    /// FNV-1a state over the counts in row order (see `report::checksum`).
    pub checksum: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Self { rows: 0, in_range: 0, first: Vec::new(), checksum: FNV_OFFSET }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV's prime to the fourth: the three zero bytes of a count below 256 are three
/// multiplications by the prime, which this does at once.
const FNV_PRIME_4: u64 = FNV_PRIME.wrapping_mul(FNV_PRIME).wrapping_mul(FNV_PRIME).wrapping_mul(FNV_PRIME);

impl Totals {
    fn add(&mut self, counts: &[u32]) {
        let first = counts.len().min(10 - self.first.len());
        self.first.extend_from_slice(&counts[..first]);
        self.in_range += counts.iter().map(|&count| u64::from(count)).sum::<u64>();
        // FNV-1a is one long chain of multiplications, byte after byte; a count below 256
        // (every count of a row of fewer than 256 values) takes one instead of four.
        let mut hash = self.checksum;
        for &count in counts {
            if count < 256 {
                hash = (hash ^ u64::from(count)).wrapping_mul(FNV_PRIME_4);
            } else {
                for byte in count.to_le_bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
                }
            }
        }
        self.checksum = hash;
        self.rows += counts.len() as u64;
    }
}

/// Expected counts from a serial pass, chunk by chunk in row order (`--verify`).
pub type Expected = Arc<Mutex<VecDeque<(usize, Vec<u32>)>>>;

/// Where a finished output waits for the end of the run, handed over by the sink.
pub type FinishedOutput = Arc<Mutex<Option<Pending>>>;

/// The file `--output` names, being written.
pub struct OutputFile {
    path: PathBuf,
    writer: BufWriter<Pending>,
    finished: FinishedOutput,
    npy: bool,
    /// `row,count` pairs in arrival order rather than counts in row order.
    arrival: bool,
    /// Entries written (counts, or pairs).
    entries: u64,
    /// Bytes handed to the writer since the kernel was last asked to start writing back.
    unflushed: usize,
}

/// How often the kernel is asked to start writing the output to disk: the final sync then
/// has little left to wait for.
const WRITEBACK_EVERY: usize = 8 << 20;

/// Bytes of the `.npy` header written: room for any shape, patched at the end.
const NPY_HEADER_BYTES: usize = 128;

impl OutputFile {
    /// Starts writing, out of sight, what `path` will hold; `.npy` by its extension.
    pub fn create(path: &Path, arrival: bool) -> anyhow::Result<Self> {
        let file = Pending::create("--output", path)?;
        let npy = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("npy"));
        let mut output = Self {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 20, file),
            finished: FinishedOutput::default(),
            npy,
            arrival,
            entries: 0,
            unflushed: 0,
        };
        if npy {
            // A placeholder of the final header's size; the shape is known only at the end.
            output.writer.write_all(&[b' '; NPY_HEADER_BYTES]).with_context(|| output.context())?;
        }
        Ok(output)
    }

    fn context(&self) -> String {
        format!("writing {}", self.path.display())
    }

    /// Where the file waits once the sink has finished it, to be put in place with the
    /// report when the whole run has succeeded.
    pub fn finished(&self) -> FinishedOutput {
        Arc::clone(&self.finished)
    }

    /// Starts the disk writing of what is written so far, without waiting for it.
    fn start_writeback(&mut self, written: usize) {
        self.unflushed += written;
        if self.unflushed < WRITEBACK_EVERY {
            return;
        }
        self.unflushed = 0;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.writer.get_ref().as_raw_fd();
            // SAFETY: an open descriptor; the call only schedules I/O. Failure is harmless:
            // the final sync writes everything anyway.
            unsafe {
                libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }

    fn counts(&mut self, counts: &[u32]) -> anyhow::Result<()> {
        self.start_writeback(counts.len() * 4);
        if self.npy {
            // One write per chunk: a call per count costs more than the counts.
            let bytes: Vec<u8> = counts.iter().flat_map(|count| count.to_le_bytes()).collect();
            self.writer.write_all(&bytes).with_context(|| self.context())?;
        } else {
            let mut buffer = itoa::Buffer::new();
            for &count in counts {
                let text = buffer.format(count);
                self.writer
                    .write_all(text.as_bytes())
                    .and_then(|()| self.writer.write_all(b"\n"))
                    .with_context(|| self.context())?;
            }
        }
        self.entries += counts.len() as u64;
        Ok(())
    }

    fn pairs(&mut self, first: usize, counts: &[u32]) -> anyhow::Result<()> {
        self.start_writeback(counts.len() * 16);
        let mut row_text = itoa::Buffer::new();
        let mut count_text = itoa::Buffer::new();
        for (row, &count) in (first..).zip(counts) {
            let written = if self.npy {
                self.writer
                    .write_all(&(row as u64).to_le_bytes())
                    .and_then(|()| self.writer.write_all(&u64::from(count).to_le_bytes()))
            } else {
                let line = [row_text.format(row).as_bytes(), b",", count_text.format(count).as_bytes(), b"\n"];
                line.iter().try_for_each(|part| self.writer.write_all(part))
            };
            written.with_context(|| self.context())?;
        }
        self.entries += counts.len() as u64;
        Ok(())
    }

    /// Finishes the file and hands it over to wait for the end of the run.
    fn finish(self) -> anyhow::Result<()> {
        let context = self.context();
        let mut file = self.writer.into_inner().map_err(|e| e.into_error()).with_context(|| context.clone())?;
        if self.npy {
            let (descr, shape) = if self.arrival {
                ("<u8", format!("({}, 2)", self.entries))
            } else {
                ("<u4", format!("({},)", self.entries))
            };
            let header = npy_header(descr, &shape);
            file.seek(SeekFrom::Start(0)).and_then(|_| file.write_all(&header)).with_context(|| context.clone())?;
        }
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }
}

/// A version 1.0 `.npy` header of exactly [`NPY_HEADER_BYTES`] bytes.
fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((NPY_HEADER_BYTES - 10) as u16).to_le_bytes());
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    header.extend_from_slice(dict.as_bytes());
    header.resize(NPY_HEADER_BYTES - 1, b' ');
    header.push(b'\n');
    header
}

/// Where the counts are summed up: on a thread of their own (the checksum is a serial chain
/// of multiplies, so it runs beside the rest of the coordinator's work rather than in its
/// way), or in line when no thread can start.
enum Summing {
    Thread(mpsc::SyncSender<Vec<u32>>, std::thread::JoinHandle<Totals>),
    InLine(Totals),
}

impl Summing {
    /// Starts the thread that sums counts up, fed in row order.
    fn start() -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Vec<u32>>(2);
        let spawned = std::thread::Builder::new().name("corepool-totals".into()).spawn(move || {
            let mut totals = Totals::default();
            for counts in receiver {
                totals.add(&counts);
            }
            totals
        });
        match spawned {
            Ok(thread) => Summing::Thread(sender, thread),
            Err(_) => Summing::InLine(Totals::default()),
        }
    }

    fn add(&mut self, counts: Vec<u32>) {
        match self {
            // The thread ends only when the sender goes: a failed send cannot happen.
            Summing::Thread(sender, _) => drop(sender.send(counts)),
            Summing::InLine(totals) => totals.add(&counts),
        }
    }

    fn finish(self) -> anyhow::Result<Totals> {
        match self {
            Summing::Thread(sender, thread) => {
                drop(sender);
                thread.join().map_err(|_| anyhow::anyhow!("the thread summing the counts up panicked"))
            }
            Summing::InLine(totals) => Ok(totals),
        }
    }
}

/// Takes each chunk's counts as it arrives, and hands them on in row order.
pub struct CountSink {
    /// Where the counts are summed up; taken by `finish`.
    totals: Option<Summing>,
    /// Chunks that arrived ahead of their turn, by first row: at most the pool's window.
    pending: BTreeMap<usize, Vec<u32>>,
    next_row: usize,
    output: Option<OutputFile>,
    expected: Option<Expected>,
    /// The mode's name, for `--verify`'s message.
    mode: &'static str,
    /// Most chunks ever waiting in the reorder buffer.
    pub most_pending: usize,
}

impl CountSink {
    /// A sink writing to `output` (if any), checking against `expected` (if any).
    pub fn new(output: Option<OutputFile>, expected: Option<Expected>, mode: &'static str) -> Self {
        Self {
            totals: Some(Summing::start()),
            pending: BTreeMap::new(),
            next_row: 0,
            output,
            expected,
            mode,
            most_pending: 0,
        }
    }

    /// The counts of rows `first..`, in whatever order chunks arrive.
    pub fn add(&mut self, first: usize, counts: Vec<u32>) -> anyhow::Result<()> {
        if let Some(output) = self.output.as_mut().filter(|output| output.arrival) {
            output.pairs(first, &counts)?;
        }
        if first < self.next_row || self.pending.contains_key(&first) {
            bail!("rows from {first} came back twice");
        }
        if first > self.next_row {
            self.pending.insert(first, counts);
            self.most_pending = self.most_pending.max(self.pending.len());
            return Ok(());
        }
        self.in_order(counts)?;
        while let Some(counts) = self.pending.remove(&self.next_row) {
            self.in_order(counts)?;
        }
        Ok(())
    }

    fn in_order(&mut self, counts: Vec<u32>) -> anyhow::Result<()> {
        if let Some(expected) = &self.expected {
            check_against(expected, self.next_row, &counts, self.mode)?;
        }
        if let Some(output) = self.output.as_mut().filter(|output| !output.arrival) {
            output.counts(&counts)?;
        }
        self.next_row += counts.len();
        if let Some(totals) = &mut self.totals {
            totals.add(counts);
        }
        Ok(())
    }

    /// Chunks waiting in the reorder buffer for an earlier one.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Ends the run: every row must have come back; the output is put in place.
    pub fn finish(mut self) -> anyhow::Result<Totals> {
        if let Some((&first, _)) = self.pending.iter().next() {
            bail!("no result came back for row {}, though rows from {first} did", self.next_row);
        }
        if let Some(expected) = &self.expected {
            let left = expected.lock().unwrap_or_else(|e| e.into_inner()).front().map(|(first, _)| *first);
            if let Some(first) = left {
                bail!("--verify: {} returned no count for row {first}", self.mode);
            }
        }
        if let Some(output) = self.output.take() {
            output.finish()?;
        }
        self.totals.take().expect("finished once").finish()
    }
}

impl Drop for CountSink {
    fn drop(&mut self) {
        if let Some(totals) = self.totals.take() {
            let _ = totals.finish();
        }
    }
}

/// Compares counts of rows `first..` with the serial pass's, chunk by chunk.
fn check_against(expected: &Expected, first: usize, counts: &[u32], mode: &str) -> anyhow::Result<()> {
    let mut expected = expected.lock().unwrap_or_else(|e| e.into_inner());
    let mut row = first;
    for &count in counts {
        let Some((start, chunk)) = expected.front_mut() else {
            bail!("--verify: {mode} gave a count for row {row}, past the serial count's last row");
        };
        let serial = chunk[row - *start];
        if serial != count {
            bail!("--verify: {mode} disagrees with serial at row {row}: {count} instead of {serial}");
        }
        row += 1;
        if row == *start + chunk.len() {
            expected.pop_front();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorders_sums_and_checksums_like_the_report() {
        let mut sink = CountSink::new(None, None, "imap-unordered");
        sink.add(3, vec![4, 5]).unwrap();
        sink.add(0, vec![1, 2, 3]).unwrap();
        sink.add(5, vec![6]).unwrap();
        assert!(sink.add(3, vec![0, 0]).is_err());
        let totals = sink.finish().unwrap();
        assert_eq!(totals.first, [1, 2, 3, 4, 5, 6]);
        assert_eq!(totals.in_range, 21);
        assert_eq!(totals.checksum, super::super::report::checksum(&[1, 2, 3, 4, 5, 6]));
        let mut big = Totals::default();
        big.add(&[255, 256, 70_000, 0]);
        assert_eq!(big.checksum, super::super::report::checksum(&[255, 256, 70_000, 0]));
    }

    #[test]
    fn a_missing_chunk_is_an_error() {
        let mut sink = CountSink::new(None, None, "imap");
        sink.add(2, vec![1]).unwrap();
        assert!(sink.finish().unwrap_err().to_string().contains("no result came back for row 0"));
    }

    #[test]
    fn verify_names_the_first_difference() {
        let expected: Expected = Arc::new(Mutex::new(VecDeque::from([(0, vec![1, 2]), (2, vec![3])])));
        let mut sink = CountSink::new(None, Some(expected), "map");
        sink.add(0, vec![1, 2]).unwrap();
        assert_eq!(
            sink.add(2, vec![4]).unwrap_err().to_string(),
            "--verify: map disagrees with serial at row 2: 4 instead of 3"
        );
    }

    #[test]
    fn npy_output_loads_with_its_real_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.npy");
        let output = OutputFile::create(&path, false).unwrap();
        let finished = output.finished();
        let mut sink = CountSink::new(Some(output), None, "map");
        sink.add(0, vec![7, 8, 9]).unwrap();
        sink.finish().unwrap();
        assert!(!path.exists(), "in place before the run's end");
        let taken = finished.lock().unwrap().take();
        super::super::pending::commit(taken).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(file.shape(), [3]);
        assert_eq!(file.into_vec::<u32>().unwrap(), [7, 8, 9]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.npy"]);
    }
}
