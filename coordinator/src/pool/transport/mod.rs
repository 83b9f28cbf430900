//! The seam between the supervisor and the engine that reaches its workers.
//!
//! The supervisor (`pool/core`) reaches workers only through [`Transport`]: how a worker
//! it starts finds the coordinator, the peers that arrive and what the engine vouches for
//! of them, their admission, each connection's frames both ways ([`FrameReceiver`],
//! [`FrameSender`]) with its end and failure, and the wake-ups of a stop. Unix sockets are
//! the engine today ([`socket`]); docs/architecture.md says how a message-based engine
//! such as MPI, where a frame is one message to or from a rank, fills the same traits as
//! one more module here.

use std::{ffi::OsString, io, path::PathBuf, sync::Arc, time::Duration};

use corepool_protocol::frame::FrameError;

use crate::outgoing::Outgoing;

mod engine;
#[cfg(feature = "mpi")]
pub(crate) mod mpi;
pub(crate) mod socket;

/// The engine the supervisor holds, and the types of its connections: the one place that
/// names them. An enum over the engines built in; with the socket engine alone, each match
/// has one arm and costs nothing.
pub(crate) use engine::{Arrival, Engine, Receiver, Sender, Ticket};

/// How a slot's worker comes to be, as the engine has it.
pub(crate) enum Launch<T> {
    /// The supervisor starts the worker program as a child process, with what the engine
    /// added to its environment, and writes `stdin` to its standard input at once (the
    /// engine's secrets never go on a command line).
    Process {
        /// What the worker must prove it holds to join.
        ticket: T,
        /// The first line of the worker's standard input.
        stdin: Vec<u8>,
    },
    /// The worker runs already (MPI: the ranks exist from the start): nothing is started,
    /// and the slot waits for it to join.
    #[allow(dead_code, reason = "made by an engine whose workers run already, such as MPI's")]
    Running {
        /// What the worker must prove it holds to join.
        ticket: T,
    },
}

/// What the engine vouches for of a peer before it has said a word: only a peer this
/// pool waits for is heard at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vouched {
    /// Its process id (Unix sockets: `SO_PEERCRED`, from the kernel).
    Pid(u32),
    /// Its slot (MPI: its rank, from the MPI runtime).
    #[cfg_attr(not(test), allow(dead_code, reason = "made by an engine that knows its peers' slots, such as MPI's"))]
    Slot(usize),
    /// Nothing: it is turned away.
    Nothing,
}

/// Who a peer says it is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The slot it says it was started for.
    pub index: usize,
    /// The process id it says it has.
    pub pid: u32,
}

/// A worker just admitted: who it is, and its connection's two sides.
pub(crate) struct Joined<R, S> {
    /// Who it proved to be.
    pub claim: Claim,
    /// The receiving side of its connection.
    pub receiver: R,
    /// The sending side of its connection.
    pub sender: S,
}

/// An engine that carries the supervisor's frames to and from its workers. One value per
/// pool, shared by the supervisor's threads.
pub(crate) trait Transport: Send + Sync + 'static {
    /// What a worker started for a slot must prove it holds (socket: a fresh challenge,
    /// answered with the run's secret).
    type Ticket: Copy + Send + 'static;
    /// A peer that has reached the coordinator, not yet admitted (socket: an accepted
    /// connection).
    type Arrival: Send + 'static;
    /// The receiving side of an admitted worker's connection.
    type Receiver: FrameReceiver;
    /// The sending side of an admitted worker's connection.
    type Sender: FrameSender;

    /// Readies the start of slot `index`'s worker: adds to `env` (the worker program's
    /// environment, set up by the supervisor) what the worker needs to reach this
    /// coordinator, and says how the worker comes to be.
    fn launch(&self, index: usize, env: &mut Vec<(OsString, OsString)>) -> io::Result<Launch<Self::Ticket>>;

    /// Waits at most `timeout` (`None`: until one comes, or the engine is stopped) for
    /// the next peer. `Ok(None)`: none came in time.
    fn next_arrival(&self, timeout: Option<Duration>) -> io::Result<Option<Self::Arrival>>;

    /// What the engine vouches for of `arrival`.
    fn vouch(&self, arrival: &Self::Arrival) -> Vouched;

    /// Tells `arrival` that it is turned away, and why, where the engine can; the
    /// connection ends when the supervisor drops it.
    fn refuse(&self, arrival: &Self::Arrival, reason: &str);

    /// Runs the handshake with `arrival`: checks the protocol version, and that the peer
    /// holds the ticket `ticket_for` gives for who it claims to be (`None`: nobody of that
    /// name is awaited, and it is refused). Bounded in time. The error says why it failed.
    fn admit(
        &self,
        arrival: Self::Arrival,
        ticket_for: impl FnOnce(Claim) -> Option<Self::Ticket>,
    ) -> Result<Joined<Self::Receiver, Self::Sender>, String>;

    /// The pool stops: wakes every thread blocked in [`next_arrival`](Self::next_arrival),
    /// and every reader that its worker's exit will not wake, then frees what the engine
    /// holds (socket: its private directory). Arrivals after this are ended at once.
    fn stop(&self);

    /// Where the engine lives on the file system, if anywhere, until it is stopped
    /// (socket: the private directory of its socket).
    fn location(&self) -> Option<PathBuf>;

    /// Tidies up what dead runs of this engine left behind; called once, while the
    /// first workers load.
    fn sweep_leftovers(&self);

    /// Who slot `index`'s worker is, where the engine can say more than the slot's number
    /// and process id (MPI: its rank and host).
    fn describe(&self, _index: usize) -> Option<String> {
        None
    }

    /// The host slot `index`'s worker runs on (MPI: its rank's); this machine, where the
    /// engine starts its workers itself.
    fn host(&self, _index: usize) -> String {
        crate::pool::platform::host_name()
    }

    /// Gives up on slot `index`'s worker where there is no child process to kill (MPI: a
    /// rank that stopped answering): its receiver fails, and the pool deals with the loss.
    fn cut_off(&self, _index: usize) {}

    /// Whether the chunks of a lost worker can run again on other workers (false under
    /// MPI without fault tolerance: the job cannot go on past a lost rank).
    fn reruns_lost_work(&self) -> bool {
        true
    }

    /// Whether slot `index`'s worker is surely gone, where the engine can tell without its
    /// connection (MPI: a rank on this host whose process has ended).
    fn known_gone(&self, _index: usize) -> bool {
        false
    }
}

/// The receiving side of one worker's connection, used by one thread at a time.
pub(crate) trait FrameReceiver: Send + 'static {
    /// Waits for the worker's next frame and puts it in `frame`, in place of what was
    /// there: `Ok(true)`, or `Ok(false)` once the worker has ended the connection. An error
    /// means the connection failed.
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError>;

    /// Whether input has already been taken in on this side, so that a receive starts
    /// without asking the engine.
    fn holds_input(&self) -> bool;

    /// Waits at most `timeout` (`None`: for as long as it takes) until a receive would
    /// not wait: a frame, the connection's end or its failure has arrived. True where the
    /// engine cannot tell.
    fn input_waiting(&self, timeout: Option<Duration>) -> bool;
}

/// The sending side of one worker's connection, used by one thread at a time.
pub(crate) trait FrameSender: Send + 'static {
    /// Sends `frames`, each whole and in order, and returns once all are on their way. An
    /// error means the connection failed. Each frame comes as its head and its tail apart
    /// ([`Outgoing`]), so that an engine may send a large tail by another path than the
    /// control messages.
    fn send(&mut self, frames: &[Arc<Outgoing>]) -> io::Result<()>;
}
