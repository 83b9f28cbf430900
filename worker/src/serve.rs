//! The worker's life: connect, prove the secret, then run tasks until told to stop or
//! until the connection closes.

use std::path::PathBuf;

use corepool_protocol::{
    TaskFailure, TaskRef, ToCoordinator, ToWorker, batch, codec, frame::MAX_FRAME_LEN, handshake::Credentials,
};

use crate::{
    Registry,
    connection::{CoordinatorConnection, SocketConnection},
    function::Functions,
    platform,
    task::Runner,
    test_knobs::TestKnobs,
};

/// Environment variable holding the path of the coordinator's socket.
pub const ENDPOINT_ENV: &str = "COREPOOL_WORKER_ENDPOINT";
/// Environment variable holding the worker's index in its pool.
pub const INDEX_ENV: &str = "COREPOOL_WORKER_INDEX";
/// Environment variable holding the coordinator's process id.
pub const PARENT_ENV: &str = "COREPOOL_PARENT_PID";
/// Environment variable holding the worker's process name, such as `corepool-w0`.
pub const NAME_ENV: &str = "COREPOOL_WORKER_NAME";
/// How a worker was told to run, read from its environment and standard input.
#[derive(Debug)]
pub struct WorkerConfig {
    /// Where the coordinator listens.
    pub endpoint: PathBuf,
    /// This worker's index in the pool.
    pub index: u32,
    /// This worker's process name (`corepool-w0` unless the pool names it otherwise).
    pub name: String,
    /// The coordinator's process id, if given.
    pub parent: Option<u32>,
    /// The run's secret, and the challenge this worker was started with.
    pub credentials: Credentials,
    /// What the tests' knobs ask of this worker (only with the `test-knobs` feature).
    pub(crate) knobs: TestKnobs,
    /// Whether functions sent by address may run here.
    pub(crate) functions: Functions,
}

/// Why a worker stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The environment or standard input did not say how to run.
    #[error("not started as a corepool worker: {0}")]
    Config(String),
    /// The coordinator could not be reached or did not admit this worker.
    #[error("cannot join the coordinator at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The handshake failed.
    #[error("handshake with the coordinator failed: {0}")]
    Handshake(#[from] corepool_protocol::handshake::HandshakeError),
    /// A frame could not be read or written.
    #[error("connection to the coordinator failed: {0}")]
    Frame(#[from] corepool_protocol::frame::FrameError),
    /// A frame from the coordinator was malformed.
    #[error("malformed message from the coordinator: {0}")]
    Codec(#[from] codec::CodecError),
    /// A batch from the coordinator was malformed.
    #[error("malformed batch from the coordinator: {0}")]
    Batch(String),
    /// The coordinator exited, or stopped its pool, before this worker could join it:
    /// nothing a user needs to hear of.
    #[error("the coordinator is gone")]
    CoordinatorGone,
    /// The pool's initializer failed (returned an error or panicked) in this worker.
    #[error("the initializer failed: {0}")]
    Initializer(String),
}

impl WorkerError {
    /// Whether the error only says that the coordinator closed the connection.
    pub fn is_disconnect(&self) -> bool {
        use corepool_protocol::{frame::FrameError, handshake::HandshakeError};
        let io = match self {
            WorkerError::CoordinatorGone => return true,
            WorkerError::Handshake(HandshakeError::Closed) => return true,
            WorkerError::Handshake(HandshakeError::Frame(FrameError::Truncated { .. })) => return true,
            WorkerError::Frame(FrameError::Truncated { .. }) => return true,
            WorkerError::Handshake(HandshakeError::Frame(FrameError::Io(io)))
            | WorkerError::Frame(FrameError::Io(io)) => io,
            _ => return false,
        };
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof)
    }
}

impl WorkerConfig {
    /// Reads the configuration the coordinator gave: the environment, and the secret and
    /// challenge as the first line of standard input (never on the command line, where
    /// `ps` shows it).
    pub fn from_env_and_stdin() -> Result<Self, WorkerError> {
        let endpoint =
            std::env::var_os(ENDPOINT_ENV).ok_or_else(|| WorkerError::Config(format!("{ENDPOINT_ENV} is not set")))?;
        let index = std::env::var(INDEX_ENV)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| WorkerError::Config(format!("{INDEX_ENV} is not a worker index")))?;
        let parent = std::env::var(PARENT_ENV).ok().and_then(|text| text.parse().ok());
        let name = std::env::var(NAME_ENV).unwrap_or_else(|_| format!("corepool-w{index}"));
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| WorkerError::Config(format!("cannot read the secret from standard input: {e}")))?;
        // The coordinator writes the line as soon as it has started this worker, and
        // closes the pipe unwritten only when it kills it: an empty pipe means that it
        // died or stopped first (its pipe closes before this process has a new parent).
        if line.is_empty() && parent.is_some() {
            return Err(WorkerError::CoordinatorGone);
        }
        let credentials = Credentials::from_line(&line).ok_or_else(|| {
            WorkerError::Config("standard input does not start with the run's secret and challenge".into())
        })?;
        let knobs = TestKnobs::from_env(index);
        Ok(Self {
            endpoint: endpoint.into(),
            index,
            name,
            parent,
            credentials,
            knobs,
            functions: Functions::from_env(),
        })
    }
}

/// Heap memory a worker maps in while it waits for its first task (see
/// [`platform::warm_heap`]).
const WARM_HEAP_BYTES: usize = 512 << 10;

/// Serves tasks from `registry` until the coordinator says stop or goes away.
pub fn serve(config: &WorkerConfig, registry: &Registry) -> Result<(), WorkerError> {
    platform::set_process_name(&config.name);
    platform::ignore_terminal_interrupts();
    if !platform::die_with_parent(config.parent) {
        return Err(WorkerError::CoordinatorGone);
    }
    crate::panics::record_panic_locations();
    config.functions.run_initializer_from_env().map_err(WorkerError::Initializer)?;
    config.knobs.before_connect();

    let mut connection = SocketConnection::join(config)?;
    // The coordinator is still sending or making the first chunk: fault in the pages its
    // buffers will need meanwhile (half a megabyte covers a tutorial chunk's three).
    platform::warm_heap(WARM_HEAP_BYTES);
    serve_on(&mut connection, config, registry)
}

/// Tunes this process's allocator as a local worker's is (see [`serve`]), for a process
/// that will serve through [`serve_joined`]: large buffers are then reused rather than
/// mapped and zeroed afresh for every task. Call it first, before any other thread starts.
pub fn prepare_joined_worker() {
    platform::keep_freed_memory_for_reuse();
}

/// Serves tasks from `registry` as worker `index` on `connection`, a connection another
/// engine has joined already (MPI: a rank of the job, vouched for by the MPI runtime, with
/// no socket and no secret), until the coordinator says stop or ends it.
pub fn serve_joined(
    connection: &mut impl CoordinatorConnection,
    index: u32,
    registry: &Registry,
) -> Result<(), WorkerError> {
    let secret = "0".repeat(2 * corepool_protocol::handshake::NONCE_LEN);
    let credentials = Credentials::from_line(&format!("{secret} {secret}\n")).expect("a well-formed line");
    let config = WorkerConfig {
        endpoint: PathBuf::new(),
        index,
        name: std::env::var(NAME_ENV).unwrap_or_else(|_| format!("corepool-w{index}")),
        parent: None,
        credentials,
        knobs: TestKnobs::from_env(index),
        functions: Functions::from_env(),
    };
    crate::panics::record_panic_locations();
    config.functions.run_initializer_from_env().map_err(WorkerError::Initializer)?;
    config.knobs.before_connect();
    platform::warm_heap(WARM_HEAP_BYTES);
    serve_on(connection, &config, registry)
}

/// Runs the tasks that come on `connection` until the coordinator says stop or ends it.
pub(crate) fn serve_on(
    connection: &mut impl CoordinatorConnection,
    config: &WorkerConfig,
    registry: &Registry,
) -> Result<(), WorkerError> {
    let mut frame = Vec::new();
    let mut answer = Vec::new();
    let mut usage_report = Vec::new();
    loop {
        if !connection.receive(&mut frame)? {
            return Ok(());
        }
        let (message, payload) = codec::decode_prefix::<ToWorker>(&frame)?;
        match message {
            ToWorker::Shutdown => {
                connection.flush()?;
                return Ok(());
            }
            ToWorker::Task { id, task } => {
                config.knobs.before_chunk(Some(id.first_row));
                // The outputs go straight after the answer's header, in a buffer kept from
                // one task to the next.
                answer.clear();
                answer.extend_from_slice(&[0; 4]);
                codec::encode_into(&ToCoordinator::Done { id }, &mut answer)?;
                let outputs_start = answer.len();
                let ran = find_runner(registry, &config.functions, task.as_ref())
                    .and_then(|run| run(payload, &mut answer))
                    .and_then(|()| fits_a_frame(&answer, outputs_start));
                if let Err(failure) = ran {
                    answer.truncate(4);
                    codec::encode_into(&ToCoordinator::Failed { id, failure }, &mut answer)?;
                }
                report_usage(connection, &mut usage_report)?;
                send_answer(connection, &mut answer)?;
            }
            ToWorker::Batch { id, tasks } => {
                config.knobs.before_chunk(None);
                answer.clear();
                answer.extend_from_slice(&[0; 4]);
                codec::encode_into(&ToCoordinator::Done { id }, &mut answer)?;
                let mut ran = 0u32;
                // The last task looked up, kept for the calls after it that name it too.
                let mut last: Option<(corepool_protocol::TaskRef<&str>, Result<Runner, TaskFailure>)> = None;
                for entry in batch::tasks(payload) {
                    let (task, payload) = entry.map_err(|e| WorkerError::Batch(e.to_string()))?;
                    if last.as_ref().is_none_or(|(previous, _)| *previous != task) {
                        last = Some((task, find_runner(registry, &config.functions, task)));
                    }
                    let runner = &last.as_ref().expect("looked up above").1;
                    batch::push_answer(&mut answer, |out| {
                        let outputs_start = out.len();
                        runner.clone().and_then(|run| run(payload, out)).and_then(|()| fits_a_frame(out, outputs_start))
                    })?;
                    ran += 1;
                }
                if ran != tasks {
                    return Err(WorkerError::Batch(format!("announced {tasks} tasks, held {ran}")));
                }
                report_usage(connection, &mut usage_report)?;
                send_answer(connection, &mut answer)?;
            }
        }
    }
}

/// Fails a task whose outputs, from `outputs_start` on in `answer`, make the answer too
/// long for a frame: the coordinator could not read it, and would take the worker for dead.
fn fits_a_frame(answer: &[u8], outputs_start: usize) -> Result<(), TaskFailure> {
    // The frame's 4-byte length prefix is not part of its length.
    if answer.len() - 4 <= MAX_FRAME_LEN as usize {
        return Ok(());
    }
    Err(TaskFailure::result_too_large(answer.len() - outputs_start))
}

/// Sends this worker's usage so far, measured after the task it is about to answer, where
/// the connection asks for it: the answer that follows then finds its usage counted.
fn report_usage(connection: &mut impl CoordinatorConnection, report: &mut Vec<u8>) -> Result<(), WorkerError> {
    if !connection.reports_usage() {
        return Ok(());
    }
    report.clear();
    report.extend_from_slice(&[0; 4]);
    codec::encode_into(&ToCoordinator::Usage(platform::own_usage()), report)?;
    fill_in_length(report)?;
    // A few dozen bytes, copied: the buffers an engine hands back are kept for answers.
    connection.send(report)?;
    Ok(())
}

/// Fills in the length of the whole frame in `answer` and sends it, its buffer and all.
fn send_answer(connection: &mut impl CoordinatorConnection, answer: &mut Vec<u8>) -> Result<(), WorkerError> {
    fill_in_length(answer)?;
    connection.send_owned(answer)?;
    Ok(())
}

/// Writes the frame's length, all of it but the four bytes that hold it, into those bytes.
fn fill_in_length(frame: &mut [u8]) -> Result<(), WorkerError> {
    let len = u32::try_from(frame.len() - 4)
        .ok()
        .filter(|&len| len <= MAX_FRAME_LEN)
        .ok_or(codec::CodecError::TooLarge(frame.len() - 4))?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The code of the task `task` refers to: a registered task, or a function sent by
/// address (if this worker runs the coordinator's own program).
pub(crate) fn find_runner(
    registry: &Registry,
    functions: &Functions,
    task: TaskRef<&str>,
) -> Result<Runner, TaskFailure> {
    match task {
        TaskRef::Named(name) => registry.runner(name),
        TaskRef::Function(offset) => functions.runner(offset),
    }
}
