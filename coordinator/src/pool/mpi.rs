//! The MPI message layer: what an MPI engine behind the transport seam sends and receives.
//!
//! Under `mpirun` (or `srun`) every process of the job calls [`init`]. Rank 0 is the
//! coordinator; every other rank is a worker, and says hello to rank 0 with its host name
//! and process id ([`Peer`]). A frame (the bytes of one corepool frame) is one MPI
//! message to or from a rank, and its [`Kind`] is the message's tag: a small fixed set,
//! never a chunk's id (MPI only promises tags up to 32767).
//!
//! Sends never block: each is an `MPI_Isend` whose frame [`Endpoint`] keeps alive until it
//! completes, at most [`Options::sends_in_flight_per_rank`] per rank. A send that finds no
//! room keeps receiving while it waits, so a coordinator never sits in a send while a worker
//! sits in its own send of an answer (the deadlock of blocking sends past the eager limit).
//! Receives take the next message from any rank (`MPI_Improbe`, then the matched
//! `MPI_Imrecv`). Waiting spins briefly, then yields, then sleeps ([`Backoff`]), so an idle
//! rank does not hold a core.
//!
//! [`Hub`] runs an [`Endpoint`] on a progress thread of its own, and gives each rank a
//! [`RankSender`] and a [`RankReceiver`], so that many threads use MPI while one makes
//! every MPI call (MPI then needs no thread support).
//!
//! The pool runs on this layer with [`crate::Transport::Mpi`]: rank 0 builds the pool, and
//! [`crate::init`] (or [`crate::task::init_with`]) turns every other rank into one of its
//! workers.

mod endpoint;
mod hub;
mod idle;
pub(crate) mod process;
mod raw;

use std::time::Duration;

pub use endpoint::{Endpoint, OutgoingFrame, Received, init};
pub use hub::{Hub, LinkError, RankReceiver, RankSender};
pub use idle::{Backoff, LONGEST_SLEEP, LONGEST_SLEEP_SENDING, Pause};
pub(crate) use process::{EXIT_RANK_LOST, EXIT_SETTINGS, end_job_at_exit, keep_until_exit, start_coordinator};
pub use process::{MpiConnection, rank_from_env, size_from_env};

/// The coordinator's rank.
pub const COORDINATOR: usize = 0;

/// What a message carries, sent as its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Handshake, small calls, shutdown: the frames that steer.
    Control,
    /// Chunks and their answers: the frames that carry rows.
    Data,
}

/// The tag of a worker's hello, which this layer sends and takes in itself.
const HELLO_TAG: i32 = 1;

impl Kind {
    /// The MPI tag for this kind (all well below the 32767 every MPI allows).
    pub const fn tag(self) -> i32 {
        match self {
            Kind::Control => 2,
            Kind::Data => 3,
        }
    }

    /// The kind a tag stands for, if it is one of this layer's.
    pub const fn from_tag(tag: i32) -> Option<Kind> {
        match tag {
            2 => Some(Kind::Control),
            3 => Some(Kind::Data),
            _ => None,
        }
    }
}

/// One process of the job, as its hello described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its rank in `MPI_COMM_WORLD`.
    pub rank: usize,
    /// The name of the host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
}

/// How an [`Endpoint`] behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most sends to one rank that may be on their way at once; a send past that waits
    /// (receiving meanwhile) for one to complete.
    pub sends_in_flight_per_rank: usize,
    /// How long rank 0 waits in [`init`] for every worker's hello.
    pub hello_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { sends_in_flight_per_rank: 4, hello_timeout: Duration::from_secs(60) }
    }
}

/// What went wrong in the MPI layer.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// `MPI_Init_thread` failed, or MPI had been started before.
    #[error("MPI could not be started in this process (or was started twice)")]
    Init,
    /// An MPI call returned an error code.
    #[error("{call} failed: {text} (MPI error {code})")]
    Call {
        /// The MPI function.
        call: &'static str,
        /// Its error code.
        code: i32,
        /// MPI's words for the code.
        text: String,
    },
    /// A rank outside the job.
    #[error("there is no rank {rank}: the job has {size} ranks")]
    NoSuchRank {
        /// The rank asked for.
        rank: usize,
        /// How many ranks the job has.
        size: usize,
    },
    /// A frame too long for one MPI message (whose count is a C `int`).
    #[error("a frame of {len} bytes is longer than one MPI message can carry")]
    TooLong {
        /// The frame's length.
        len: usize,
    },
    /// A message whose tag is none of this layer's: another program shares the job.
    #[error("rank {rank} sent a message with tag {tag}, which is not corepool's")]
    ForeignTag {
        /// Who sent it.
        rank: usize,
        /// Its tag.
        tag: i32,
    },
    /// A hello that is not corepool's.
    #[error("rank {rank} said hello in a form that is not corepool's")]
    BadHello {
        /// Who sent it.
        rank: usize,
    },
    /// Some workers did not say hello in time.
    #[error("ranks {missing:?} did not say hello within {waited:?}")]
    NoHello {
        /// The ranks that stayed silent.
        missing: Vec<usize>,
        /// How long rank 0 waited.
        waited: Duration,
    },
}
