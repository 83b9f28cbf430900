//! What a task is, and the registry a worker finds tasks in by name.

use std::{collections::HashMap, panic::AssertUnwindSafe};

use corepool_protocol::{FailureKind, TaskFailure, TaskRef, codec};
use serde::{Serialize, de::DeserializeOwned};

/// A function that workers run over chunks of items.
///
/// The task value itself carries the parameters shared by every item (for counting, the
/// range), and travels with each chunk. Both the coordinator and the worker must know the
/// type: the coordinator to encode chunks and decode outputs, the worker (through a
/// [`Registry`]) to run it.
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name a worker finds this task by; unique within a [`Registry`].
    const NAME: &'static str;
    /// One chunk of items as it travels to a worker.
    type Chunk: Serialize + DeserializeOwned + Send + 'static;
    /// The result for one item.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs the task over every item of `chunk`, returning one output per item, in order.
    ///
    /// An `Err` travels back to the caller as a [`TaskFailure`]; so does a panic, which the
    /// worker survives.
    fn run(&self, chunk: Self::Chunk) -> Result<Vec<Self::Output>, String>;

    /// How a worker finds this task's code: by [`NAME`](Task::NAME) in its [`Registry`].
    /// (corepool's own function calls refer to a function instead.)
    #[doc(hidden)]
    fn task_ref() -> TaskRef<&'static str> {
        TaskRef::Named(Self::NAME)
    }

    /// Appends the wire form of one chunk's outputs to `out`. The default is the codec's;
    /// a task with plain outputs (counts, say) can write them more compactly.
    fn encode_outputs(outputs: &[Self::Output], out: &mut Vec<u8>) -> Result<(), codec::CodecError> {
        codec::encode_into(outputs, out)
    }

    /// Reads back what [`encode_outputs`](Task::encode_outputs) wrote.
    fn decode_outputs(bytes: &[u8]) -> Result<Vec<Self::Output>, codec::CodecError> {
        codec::decode(bytes)
    }

    /// Appends to `outputs` what [`encode_outputs`](Task::encode_outputs) wrote, so that a
    /// caller gathering many chunks decodes each straight into its result. The default
    /// decodes a list and moves it over; a task that reads its outputs itself writes them
    /// in place, sparing a fresh list a chunk (fresh memory is the dearest part of a short
    /// job: a page fault costs microseconds). On error, `outputs` may hold part of them.
    fn decode_outputs_into(bytes: &[u8], outputs: &mut Vec<Self::Output>) -> Result<(), codec::CodecError> {
        outputs.extend(Self::decode_outputs(bytes)?);
        Ok(())
    }

    /// Reads the one output of a one-item chunk (an `apply_async` call) from what
    /// [`encode_outputs`](Task::encode_outputs) wrote. The default reads the list; a task
    /// that reads its outputs itself can spare the list, an allocation per call.
    fn decode_output(bytes: &[u8]) -> Result<Self::Output, codec::CodecError> {
        let outputs = Self::decode_outputs(bytes)?;
        <[Self::Output; 1]>::try_from(outputs).map(|[output]| output).map_err(|outputs| not_one_output(outputs.len()))
    }
}

/// The error for the answer to a one-item chunk that holds `outputs` outputs.
pub(crate) fn not_one_output(outputs: usize) -> codec::CodecError {
    codec::CodecError::Decode(bincode::error::DecodeError::OtherString(format!("{outputs} outputs for one item")))
}

pub(crate) type Runner = fn(&[u8], &mut Vec<u8>) -> Result<(), TaskFailure>;

/// The tasks a worker can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    runners: HashMap<&'static str, Runner>,
}

impl Registry {
    /// A registry with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds task `T`.
    ///
    /// # Panics
    /// If another task already has `T::NAME`.
    pub fn register<T: Task>(mut self) -> Self {
        let previous = self.runners.insert(T::NAME, run_encoded::<T>);
        assert!(previous.is_none(), "two tasks are named {:?}", T::NAME);
        self
    }

    /// Runs the task named `name` on an encoded `(task, chunk)` payload, appending its
    /// encoded outputs to `out` (on failure, `out` may hold part of them).
    pub fn run(&self, name: &str, payload: &[u8], out: &mut Vec<u8>) -> Result<(), TaskFailure> {
        self.runner(name)?(payload, out)
    }

    /// The runner of the task named `name`: for a batch, whose calls mostly name one task,
    /// to look it up once rather than once a call.
    pub(crate) fn runner(&self, name: &str) -> Result<Runner, TaskFailure> {
        self.runners.get(name).copied().ok_or_else(|| TaskFailure {
            kind: FailureKind::UnknownTask,
            message: format!("this worker has no task named {name:?}"),
            location: None,
        })
    }
}

/// Encodes one chunk for task `task`, as [`Registry::run`] expects it.
pub fn encode_payload<T: Task>(task: &T, chunk: &T::Chunk, out: &mut Vec<u8>) -> Result<(), codec::CodecError> {
    codec::encode_into(&(task, chunk), out)
}

/// Decodes the outputs of one chunk of task `T`.
pub fn decode_outputs<T: Task>(payload: &[u8]) -> Result<Vec<T::Output>, codec::CodecError> {
    T::decode_outputs(payload)
}

/// Decodes the outputs of one chunk of task `T`, appending them to `outputs`.
pub fn decode_outputs_into<T: Task>(payload: &[u8], outputs: &mut Vec<T::Output>) -> Result<(), codec::CodecError> {
    T::decode_outputs_into(payload, outputs)
}

/// Decodes the one output of a one-item chunk of task `T`.
pub fn decode_output<T: Task>(payload: &[u8]) -> Result<T::Output, codec::CodecError> {
    T::decode_output(payload)
}

fn run_encoded<T: Task>(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TaskFailure> {
    let (task, chunk): (T, T::Chunk) = codec::decode(payload).map_err(|e| TaskFailure {
        kind: FailureKind::BadPayload,
        message: format!("task {:?}: {e}", T::NAME),
        location: None,
    })?;
    let outputs = match std::panic::catch_unwind(AssertUnwindSafe(|| task.run(chunk))) {
        Ok(Ok(outputs)) => outputs,
        Ok(Err(message)) => return Err(TaskFailure { kind: FailureKind::Error, message, location: None }),
        Err(panic) => return Err(crate::panics::failure_from_panic(panic)),
    };
    T::encode_outputs(&outputs, out).map_err(|e| TaskFailure {
        kind: FailureKind::Error,
        message: format!("task {:?}: cannot encode its outputs: {e}", T::NAME),
        location: None,
    })
}
