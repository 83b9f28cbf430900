//! The messages of each direction once the handshake is done.

use serde::{Deserialize, Serialize};

/// The identity of one unit of work: which job, which chunk of it, and its first row.
///
/// Results are put back in place by this id, and a dead worker's unfinished chunks are
/// found by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    /// The job (one `map`, one `apply`, ...) this chunk belongs to.
    pub job: u64,
    /// The chunk's index within its job, from 0.
    pub chunk: u64,
    /// Index of the chunk's first item within its job.
    pub first_row: u64,
}

/// How a worker finds the code of a task: by the name a registry holds it under, or, for
/// a plain function, by its trampoline's offset from a base symbol of the program (valid
/// only in a worker that runs the coordinator's own executable, which the worker checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskRef<S = String> {
    /// A task registered under this name.
    Named(S),
    /// A function's trampoline, as an address relative to the program's base symbol.
    Function(u64),
}

impl TaskRef {
    /// The same reference, borrowing its name.
    pub fn as_ref(&self) -> TaskRef<&str> {
        match self {
            TaskRef::Named(name) => TaskRef::Named(name),
            TaskRef::Function(offset) => TaskRef::Function(*offset),
        }
    }
}

impl From<&str> for TaskRef {
    /// The task registered under `name`.
    fn from(name: &str) -> Self {
        TaskRef::Named(name.to_owned())
    }
}

impl std::fmt::Display for TaskRef<&str> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskRef::Named(name) => write!(f, "task {name:?}"),
            TaskRef::Function(offset) => write!(f, "function at offset {offset:#x}"),
        }
    }
}

/// From the coordinator to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run the task `task` refers to on the frame's payload: the task's parameters and one
    /// chunk of items, encoded by the task (see [`crate::codec::encode_frame`]).
    Task {
        /// Identity to echo in the answer.
        id: TaskId,
        /// How the worker finds the task's code.
        task: TaskRef,
    },
    /// Finish and exit: no more tasks will come.
    Shutdown,
    /// Run `tasks` independent one-item tasks, each with its own task name and payload,
    /// packed in the frame's payload by [`crate::batch::push_task`]; answer them all in one
    /// [`ToCoordinator::Done`] whose payload [`crate::batch::push_answer`] fills.
    Batch {
        /// Identity to echo in the answer.
        id: TaskId,
        /// How many tasks the payload holds.
        tasks: u32,
    },
}

/// From a worker to the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// The task ran; the frame's payload holds its outputs, one per item, encoded by the
    /// task.
    Done {
        /// The id of the task this answers.
        id: TaskId,
    },
    /// The task failed; the worker is still able to take more.
    Failed {
        /// The id of the task this answers.
        id: TaskId,
        /// What went wrong, and where.
        failure: TaskFailure,
    },
    /// What the worker has used so far, sent just before an answer by a worker whose
    /// coordinator cannot read its process table (another host, under MPI).
    Usage(ResourceUsage),
}

/// What a worker process has used since it started, as it measures it itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time in user mode, in microseconds.
    pub cpu_user_micros: u64,
    /// CPU time in the kernel on its behalf, in microseconds.
    pub cpu_system_micros: u64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident memory, in bytes.
    pub peak_rss_bytes: u64,
}

/// How a task failed inside a worker, sent back as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// A one-line description.
    pub message: String,
    /// Where it happened (source file and line, for a panic), when known.
    pub location: Option<String>,
}

/// The kinds of [`TaskFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The task returned an error.
    Error,
    /// The task panicked; the worker caught it and lives on.
    Panic,
    /// The worker has no task of that name.
    UnknownTask,
    /// The payload could not be decoded as the task's input.
    BadPayload,
    /// A function was sent to a worker that does not run the coordinator's own program,
    /// where its address means nothing.
    ForeignProgram,
    /// The task's outputs would not fit in one frame ([`MAX_FRAME_LEN`](crate::frame::MAX_FRAME_LEN)).
    ResultTooLarge,
}

impl TaskFailure {
    /// The failure of a task whose outputs, `bytes` long encoded, would make its answer's
    /// frame longer than the limit.
    pub fn result_too_large(bytes: usize) -> Self {
        let limit_gib = crate::frame::MAX_FRAME_LEN >> 30;
        TaskFailure {
            kind: FailureKind::ResultTooLarge,
            message: format!("the result is {bytes} bytes, over the {limit_gib} GiB frame limit: use smaller chunks"),
            location: None,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            FailureKind::Error => "task failed",
            FailureKind::Panic => "task panicked",
            FailureKind::UnknownTask => "unknown task",
            FailureKind::BadPayload => "bad task payload",
            FailureKind::ForeignProgram => "cannot run a function here",
            // The message says it all.
            FailureKind::ResultTooLarge => "",
        };
        if !kind.is_empty() {
            write!(f, "{kind}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(location) = &self.location {
            write!(f, " (at {location})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    fn task_id() -> impl Strategy<Value = TaskId> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(job, chunk, first_row)| TaskId { job, chunk, first_row })
    }

    fn failure() -> impl Strategy<Value = TaskFailure> {
        let kind = prop_oneof![
            Just(FailureKind::Error),
            Just(FailureKind::Panic),
            Just(FailureKind::UnknownTask),
            Just(FailureKind::BadPayload),
            Just(FailureKind::ForeignProgram)
        ];
        (kind, ".*", proptest::option::of(".*")).prop_map(|(kind, message, location)| TaskFailure {
            kind,
            message,
            location,
        })
    }

    fn to_worker() -> impl Strategy<Value = ToWorker> {
        let task = prop_oneof![".*".prop_map(TaskRef::Named), any::<u64>().prop_map(TaskRef::Function)];
        prop_oneof![(task_id(), task).prop_map(|(id, task)| ToWorker::Task { id, task }), Just(ToWorker::Shutdown),]
    }

    fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
        prop_oneof![
            task_id().prop_map(|id| ToCoordinator::Done { id }),
            (task_id(), failure()).prop_map(|(id, failure)| ToCoordinator::Failed { id, failure }),
            any::<[u64; 4]>().prop_map(|[cpu_user_micros, cpu_system_micros, rss_bytes, peak_rss_bytes]| {
                ToCoordinator::Usage(ResourceUsage { cpu_user_micros, cpu_system_micros, rss_bytes, peak_rss_bytes })
            }),
        ]
    }

    proptest! {
        #[test]
        fn to_worker_round_trips(message in to_worker()) {
            prop_assert_eq!(decode::<ToWorker>(&encode(&message).unwrap()).unwrap(), message);
        }

        #[test]
        fn to_coordinator_round_trips(message in to_coordinator()) {
            prop_assert_eq!(decode::<ToCoordinator>(&encode(&message).unwrap()).unwrap(), message);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<ToWorker>(&bytes);
            let _ = decode::<ToCoordinator>(&bytes);
        }

        #[test]
        fn truncated_messages_are_errors(message in to_coordinator(), cut in 1usize..64) {
            let bytes = encode(&message).unwrap();
            let keep = bytes.len().saturating_sub(cut);
            prop_assert!(decode::<ToCoordinator>(&bytes[..keep]).is_err());
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&ToWorker::Shutdown).unwrap();
        bytes.push(0);
        assert!(decode::<ToWorker>(&bytes).is_err());
    }

    #[test]
    fn huge_inner_length_is_refused_without_allocating() {
        // Variant 0 (Task), the id, variant 0 (Named), then a varint claiming a string of
        // u64::MAX bytes.
        let mut bytes = encode(&ToWorker::Task {
            id: TaskId { job: 1, chunk: 2, first_row: 3 },
            task: TaskRef::Named(String::new()),
        })
        .unwrap();
        bytes.truncate(5);
        bytes.extend([253, 255, 255, 255, 255, 255, 255, 255, 255]);
        assert!(decode::<ToWorker>(&bytes).is_err());
    }
}
