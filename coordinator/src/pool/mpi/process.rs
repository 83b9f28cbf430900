//! The pool's MPI life in one process: on rank 0, the hub that lives until the process
//! exits (MPI starts and ends once per process); on every other rank, a worker that
//! serves its tasks over MPI ([`init`], [`init_with`]) and then ends MPI.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::Duration,
};

use corepool_protocol::{PROTOCOL_VERSION, ToWorker, codec, frame::FrameError, handshake::MAGIC};
use corepool_worker::{CoordinatorConnection, Registry, WorkerError, function::JoinSettings};

use super::{COORDINATOR, Hub, Kind, LinkError, Options, OutgoingFrame, RankReceiver, RankSender};
use crate::pool::{PoolError, transport::mpi::WELCOME};

/// Environment variables in which the MPI launchers tell a process its rank: Open MPI's
/// `mpirun`, PMIx (`srun --mpi=pmix`), then PMI (MPICH, `srun --mpi=pmi2`).
const RANK_ENV: [&str; 3] = ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"];
/// The same for the number of ranks in the job.
const SIZE_ENV: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "PMI_SIZE"];

/// How long rank 0 lets MPI end (sends on their way, then `MPI_Finalize`) before it exits
/// anyway.
const FINALIZE_LIMIT: Duration = Duration::from_secs(15);
/// Exit code of a job ended because a rank was lost.
pub(crate) const EXIT_RANK_LOST: i32 = 1;
/// Exit code of a job ended because its pool's settings do not fit it.
pub(crate) const EXIT_SETTINGS: i32 = 2;

/// This process's rank in an MPI job, as its launcher set it in the environment; `None`
/// outside one.
pub fn rank_from_env() -> Option<usize> {
    RANK_ENV.iter().find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// How many ranks this process's MPI job has, as its launcher set it in the environment;
/// `None` outside one, or where the launcher does not say.
pub fn size_from_env() -> Option<usize> {
    SIZE_ENV.iter().find_map(|name| std::env::var(name).ok()?.parse().ok())
}

/// Rank 0's hub, and a sender to each worker rank, kept until the process exits.
static HUB: Mutex<Option<(Hub, Vec<RankSender>)>> = Mutex::new(None);
/// MPI was started in this process (it starts once per process).
static MPI_STARTED: AtomicBool = AtomicBool::new(false);
/// What rank 0 tells the worker ranks when it ran no MPI pool: they end without a word.
const NO_POOL: &[u8] = b"no pool";
/// Not 0: the job must end at exit, with this code, rather than wait for its ranks.
static END_JOB: AtomicI32 = AtomicI32::new(0);

/// Starts MPI on rank 0 for a pool.
pub(crate) fn start_coordinator(options: Options) -> Result<Hub, PoolError> {
    if MPI_STARTED.swap(true, Ordering::SeqCst) {
        return Err(PoolError::Settings("MPI runs one pool per process, and this process has one".into()));
    }
    let hub = Hub::start(options).map_err(|error| PoolError::Settings(format!("MPI: {error}")))?;
    if hub.me().rank != COORDINATOR {
        return Err(PoolError::Settings(format!("an MPI pool is built on rank 0, not on rank {}", hub.me().rank)));
    }
    Ok(hub)
}

/// On a rank other than 0 whose program builds an MPI pool rather than serve (its `main`
/// does not call [`init`] first): tells rank 0 so, in place of the hello a worker sends,
/// so that rank 0's pool fails at once, naming this rank; MPI ends at this process's exit.
pub(crate) fn refuse_pool_on_worker_rank() -> PoolError {
    if !MPI_STARTED.swap(true, Ordering::SeqCst)
        && let Ok(mut hub) = Hub::start(Options::default())
    {
        if let Some((sender, _)) = hub.link(COORDINATOR) {
            let _ = sender.send(Kind::Control, crate::pool::transport::mpi::INIT_FORGOTTEN.to_vec());
        }
        keep_until_exit(hub);
    }
    PoolError::InsideWorker
}

/// Keeps this process's `hub` until the process exits, then ends MPI there: on rank 0,
/// every worker rank is told to stop and MPI ends, or, once a rank was lost, the whole job
/// is ended.
pub(crate) fn keep_until_exit(hub: Hub) {
    // A worker rank (one whose program forgot `init`) has no workers to stop.
    let workers = if hub.me().rank == COORDINATOR { 1..hub.size() } else { 0..0 };
    let senders = workers.filter_map(|rank| hub.sender(rank)).collect();
    *HUB.lock().unwrap_or_else(|e| e.into_inner()) = Some((hub, senders));
    extern "C" fn at_exit() {
        finish();
    }
    // SAFETY: registers a plain function, which runs once, at the process's exit.
    unsafe {
        libc::atexit(at_exit);
    }
}

/// A rank was lost, or the pool could not start: at exit, the whole job is ended with
/// `code` rather than waited for.
pub(crate) fn end_job_at_exit(code: i32) {
    END_JOB.store(code, Ordering::SeqCst);
}

/// Rank 0's end of MPI, at the process's exit.
fn finish() {
    let Some((hub, senders)) = HUB.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    let code = END_JOB.load(Ordering::SeqCst);
    if code != 0 {
        hub.abort(code);
    }
    // A worker already told to stop has stopped reading: one more stop frame is never read.
    let stop = codec::encode(&ToWorker::Shutdown).expect("a message with no payload encodes");
    for sender in senders {
        let _ = sender.send(Kind::Data, stop.clone());
    }
    // MPI_Finalize waits for every rank: one that never ends must not hold this exit.
    let _ = std::thread::Builder::new().name("corepool-mpi-end".into()).spawn(|| {
        std::thread::sleep(FINALIZE_LIMIT);
        // SAFETY: ends this process at once, as its exit was going to.
        unsafe { libc::_exit(EXIT_RANK_LOST) }
    });
    drop(hub);
}

/// Like [`corepool_worker::init`], and under MPI, on a rank other than 0, serves as one of
/// the pool's workers over MPI, then exits. Call it first thing in `main`.
pub fn init() {
    init_with(Registry::new);
}

/// Like [`corepool_worker::init_with`], and under MPI, on a rank other than 0, serves the
/// tasks `registry` names over MPI, then exits.
pub fn init_with(registry: impl FnOnce() -> Registry) {
    match rank_from_env() {
        Some(rank) if rank != COORDINATOR && !corepool_worker::started_as_worker() => {
            std::process::exit(serve_rank(rank, registry()))
        }
        Some(COORDINATOR) if size_from_env().is_some_and(|size| size > 1) && !corepool_worker::started_as_worker() => {
            extern "C" fn at_exit() {
                release_unused_ranks();
            }
            // SAFETY: registers a plain function, which runs once, at the process's exit.
            unsafe {
                libc::atexit(at_exit);
            }
        }
        // A local worker of rank 0's own pool inherits its rank from rank 0's environment.
        _ => corepool_worker::init_with(registry),
    }
}

/// On rank 0 at exit, if it ran no MPI pool (a local pool, or none): the worker ranks
/// wait for one, so they are told there is none, and MPI ends with them.
fn release_unused_ranks() {
    if MPI_STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let options = Options { hello_timeout: Duration::from_secs(10), ..Options::default() };
    let Ok(hub) = Hub::start(options) else { return };
    for sender in (1..hub.size()).filter_map(|rank| hub.sender(rank)) {
        let _ = sender.send(Kind::Control, NO_POOL.to_vec());
    }
    drop(hub);
}

/// A worker rank's whole life, as its exit code.
fn serve_rank(rank: usize, registry: Registry) -> i32 {
    // Before MPI starts its threads: a rank moves as many large buffers as a local worker.
    corepool_worker::serve::prepare_joined_worker();
    let mut hub = match Hub::start(Options::default()) {
        Ok(hub) => hub,
        Err(error) => {
            eprintln!("corepool rank {rank}: MPI: {error}");
            return i32::from(corepool_worker::EXIT_NOT_A_WORKER);
        }
    };
    let served = MpiConnection::join(&mut hub)
        .and_then(|mut connection| corepool_worker::serve::serve_joined(&mut connection, (rank - 1) as u32, &registry));
    let code = match served {
        // Rank 0 ran no MPI pool: nothing to serve, nothing to report.
        Ok(()) | Err(WorkerError::CoordinatorGone) => 0,
        Err(WorkerError::Initializer(message)) => {
            // One write, so that the lines of several ranks do not mix.
            let line = format!("corepool rank {rank} on host {}: the initializer failed: {message}\n", hub.me().host);
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            // Rank 0 counts this rank as joined, and would wait for its answers for ever.
            hub.abort(i32::from(corepool_worker::EXIT_INITIALIZER_FAILED));
        }
        Err(error) => {
            eprintln!("corepool rank {rank} on host {}: {error}", hub.me().host);
            i32::from(corepool_worker::EXIT_CONNECTION_FAILED)
        }
    };
    // Sends what is left, then ends MPI with the other ranks.
    drop(hub);
    code
}

/// A worker rank's connection to rank 0: one message per frame, through the hub.
pub struct MpiConnection {
    sender: RankSender,
    receiver: RankReceiver,
    /// Buffers of answers sent, back once MPI has sent them, for the next answers.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// How many sent answers' buffers a rank keeps for reuse (a few may be on their way at
/// once).
const SPARE_BUFFERS: usize = 4;

/// An answer's buffer on its way: the frame without its length (the message carries
/// it), handed back to its connection once MPI no longer reads it.
struct SentAnswer {
    buffer: Vec<u8>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl OutgoingFrame for SentAnswer {
    fn pieces(&self) -> [&[u8]; 2] {
        [self.buffer.get(4..).unwrap_or_default(), &[]]
    }
}

impl Drop for SentAnswer {
    fn drop(&mut self) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(std::mem::take(&mut self.buffer));
        }
    }
}

impl MpiConnection {
    /// The roomiest buffer handed back, or a new one of `capacity` bytes.
    fn spare_buffer(&self, capacity: usize) -> Vec<u8> {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        let roomiest = (0..spare.len()).max_by_key(|&at| spare[at].capacity());
        roomiest.map_or_else(|| Vec::with_capacity(capacity), |at| spare.swap_remove(at))
    }

    /// Says which protocol this worker speaks, and waits (for as long as rank 0 takes to
    /// build its pool) to be welcomed, with the settings a local worker finds in its
    /// environment (see [`corepool_worker::function::adopt_join_settings`]).
    pub fn join(hub: &mut Hub) -> Result<Self, WorkerError> {
        let (sender, mut receiver) =
            hub.link(COORDINATOR).ok_or_else(|| WorkerError::Config("this rank is rank 0".into()))?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        sender.send(Kind::Control, hello).map_err(link_failed)?;
        match receiver.receive(None).map_err(link_failed)? {
            Some((Kind::Control, answer)) if answer.starts_with(WELCOME) => {
                let settings = codec::decode::<JoinSettings>(&answer[WELCOME.len()..])?;
                corepool_worker::function::adopt_join_settings(settings);
                Ok(Self { sender, receiver, spare: Arc::default() })
            }
            Some((Kind::Control, answer)) if answer == NO_POOL => Err(WorkerError::CoordinatorGone),
            Some((Kind::Control, refusal)) => Err(WorkerError::Config(String::from_utf8_lossy(&refusal).into_owned())),
            // Rank 0's stop at its exit: its pool did not start.
            Some((Kind::Data, _)) | None => Err(WorkerError::CoordinatorGone),
        }
    }
}

fn link_failed(error: LinkError) -> WorkerError {
    WorkerError::Frame(FrameError::Io(std::io::Error::other(error)))
}

impl CoordinatorConnection for MpiConnection {
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
        match self.receiver.receive(None) {
            // Each message is a frame's body: its length is the message's.
            Ok(Some((_, bytes))) => {
                *frame = bytes;
                Ok(true)
            }
            Ok(None) | Err(LinkError::Stopped) => Ok(false),
            Err(error) => Err(FrameError::Io(std::io::Error::other(error))),
        }
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        // The frame's length stays behind: the message carries it.
        let body = frame.get(4..).unwrap_or_default().to_vec();
        self.sender.send(Kind::Data, body).map_err(|error| FrameError::Io(std::io::Error::other(error)))
    }

    fn send_owned(&mut self, frame: &mut Vec<u8>) -> Result<(), FrameError> {
        // The buffer itself goes out, not a copy: the serve loop builds its next answer in
        // one handed back.
        let buffer = std::mem::replace(frame, self.spare_buffer(frame.capacity()));
        let answer = SentAnswer { buffer, spare: Arc::clone(&self.spare) };
        self.sender.send(Kind::Data, answer).map_err(|error| FrameError::Io(std::io::Error::other(error)))
    }

    fn flush(&mut self) -> Result<(), FrameError> {
        Ok(())
    }

    fn reports_usage(&self) -> bool {
        // Rank 0 cannot read the process table of another host.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_goes_out_without_its_length_and_its_buffer_comes_back_once_sent() {
        let spare = Arc::default();
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(b"abc");
        let (address, capacity) = (frame.as_ptr(), frame.capacity());
        let answer = SentAnswer { buffer: frame, spare: Arc::clone(&spare) };
        assert_eq!(answer.pieces(), [&b"abc"[..], &[][..]], "the message carries the length");
        drop(answer);
        let returned = spare.lock().unwrap().pop().expect("the buffer came back");
        assert_eq!((returned.as_ptr(), returned.capacity()), (address, capacity), "the same buffer, not a copy");
    }

    #[test]
    fn a_rank_keeps_only_a_few_sent_buffers() {
        let spare = Arc::default();
        for _ in 0..2 * SPARE_BUFFERS {
            drop(SentAnswer { buffer: vec![0; 8], spare: Arc::clone(&spare) });
        }
        assert_eq!(spare.lock().unwrap().len(), SPARE_BUFFERS);
    }
}
