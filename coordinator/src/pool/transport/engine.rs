//! The engines built in, as one type: the socket engine always, MPI's with the `mpi`
//! feature. The pool's builder chooses one; the supervisor sees only this.

use std::{ffi::OsString, io, path::PathBuf, sync::Arc, time::Duration};

use corepool_protocol::{frame::FrameError, handshake::Challenge};

#[cfg(feature = "mpi")]
use super::mpi::{MpiEngine, MpiReceiver, MpiSender};
use super::{
    Claim, FrameReceiver, FrameSender, Joined, Launch, Transport, Vouched,
    socket::{SocketEngine, SocketReceiver, SocketSender},
};
use crate::outgoing::Outgoing;

/// The engine of one pool.
pub(crate) enum Engine {
    /// Local workers over Unix sockets.
    Socket(SocketEngine),
    /// The ranks of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(MpiEngine),
}

impl Engine {
    /// The transport a user chose, which this engine is.
    pub(crate) fn transport(&self) -> crate::Transport {
        match self {
            Engine::Socket(_) => crate::Transport::Local,
            #[cfg(feature = "mpi")]
            Engine::Mpi(_) => crate::Transport::Mpi,
        }
    }
}

/// The receiving side of a worker's connection, as the supervisor holds it.
pub(crate) enum Receiver {
    /// Over a Unix socket.
    Socket(SocketReceiver),
    /// From an MPI rank.
    #[cfg(feature = "mpi")]
    Mpi(MpiReceiver),
}

/// The sending side of a worker's connection, as the supervisor holds it.
pub(crate) enum Sender {
    /// Over a Unix socket.
    Socket(SocketSender),
    /// To an MPI rank.
    #[cfg(feature = "mpi")]
    Mpi(MpiSender),
}

/// A peer that has reached the coordinator and waits to be admitted.
pub(crate) enum Arrival {
    /// An accepted socket connection.
    Socket(corepool_protocol::transport::Link),
    /// An MPI rank.
    #[cfg(feature = "mpi")]
    Mpi(usize),
}

/// What a worker started for a slot holds to prove that it is that worker.
#[derive(Clone, Copy)]
pub(crate) enum Ticket {
    /// A fresh challenge, answered with the run's secret.
    Socket(Challenge),
    /// Nothing: the MPI runtime vouches for its ranks.
    #[cfg(feature = "mpi")]
    Mpi,
}

impl From<SocketEngine> for Engine {
    fn from(engine: SocketEngine) -> Self {
        Engine::Socket(engine)
    }
}

impl From<SocketSender> for Sender {
    fn from(sender: SocketSender) -> Self {
        Sender::Socket(sender)
    }
}

/// The same call on whichever engine `$engine` is.
macro_rules! each {
    ($engine:expr, $inner:ident => $call:expr) => {
        match $engine {
            Engine::Socket($inner) => $call,
            #[cfg(feature = "mpi")]
            Engine::Mpi($inner) => $call,
        }
    };
}

fn ticket_from<T>(launch: Launch<T>, wrap: impl Fn(T) -> Ticket) -> Launch<Ticket> {
    match launch {
        Launch::Process { ticket, stdin } => Launch::Process { ticket: wrap(ticket), stdin },
        Launch::Running { ticket } => Launch::Running { ticket: wrap(ticket) },
    }
}

impl Transport for Engine {
    type Ticket = Ticket;
    type Arrival = Arrival;
    type Receiver = Receiver;
    type Sender = Sender;

    fn launch(&self, index: usize, env: &mut Vec<(OsString, OsString)>) -> io::Result<Launch<Ticket>> {
        match self {
            Engine::Socket(engine) => Ok(ticket_from(engine.launch(index, env)?, Ticket::Socket)),
            #[cfg(feature = "mpi")]
            Engine::Mpi(engine) => Ok(ticket_from(engine.launch(index, env)?, |()| Ticket::Mpi)),
        }
    }

    fn next_arrival(&self, timeout: Option<Duration>) -> io::Result<Option<Arrival>> {
        match self {
            Engine::Socket(engine) => Ok(engine.next_arrival(timeout)?.map(Arrival::Socket)),
            #[cfg(feature = "mpi")]
            Engine::Mpi(engine) => Ok(engine.next_arrival(timeout)?.map(Arrival::Mpi)),
        }
    }

    fn vouch(&self, arrival: &Arrival) -> Vouched {
        match (self, arrival) {
            (Engine::Socket(engine), Arrival::Socket(link)) => engine.vouch(link),
            #[cfg(feature = "mpi")]
            (Engine::Mpi(engine), Arrival::Mpi(rank)) => engine.vouch(rank),
            #[cfg(feature = "mpi")]
            _ => Vouched::Nothing,
        }
    }

    fn refuse(&self, arrival: &Arrival, reason: &str) {
        match (self, arrival) {
            (Engine::Socket(engine), Arrival::Socket(link)) => engine.refuse(link, reason),
            #[cfg(feature = "mpi")]
            (Engine::Mpi(engine), Arrival::Mpi(rank)) => engine.refuse(rank, reason),
            #[cfg(feature = "mpi")]
            _ => {}
        }
    }

    fn admit(
        &self,
        arrival: Arrival,
        ticket_for: impl FnOnce(Claim) -> Option<Ticket>,
    ) -> Result<Joined<Receiver, Sender>, String> {
        match (self, arrival) {
            (Engine::Socket(engine), Arrival::Socket(link)) => {
                let ticket = |claim| match ticket_for(claim)? {
                    Ticket::Socket(challenge) => Some(challenge),
                    #[cfg(feature = "mpi")]
                    Ticket::Mpi => None,
                };
                let Joined { claim, receiver, sender } = engine.admit(link, ticket)?;
                Ok(Joined { claim, receiver: Receiver::Socket(receiver), sender: Sender::Socket(sender) })
            }
            #[cfg(feature = "mpi")]
            (Engine::Mpi(engine), Arrival::Mpi(rank)) => {
                let ticket = |claim| matches!(ticket_for(claim)?, Ticket::Mpi).then_some(());
                let Joined { claim, receiver, sender } = engine.admit(rank, ticket)?;
                Ok(Joined { claim, receiver: Receiver::Mpi(receiver), sender: Sender::Mpi(sender) })
            }
            #[cfg(feature = "mpi")]
            _ => Err(String::from("a peer of another engine")),
        }
    }

    fn stop(&self) {
        each!(self, engine => engine.stop())
    }

    fn location(&self) -> Option<PathBuf> {
        each!(self, engine => engine.location())
    }

    fn sweep_leftovers(&self) {
        each!(self, engine => engine.sweep_leftovers())
    }

    fn describe(&self, index: usize) -> Option<String> {
        each!(self, engine => engine.describe(index))
    }

    fn host(&self, index: usize) -> String {
        each!(self, engine => engine.host(index))
    }

    fn cut_off(&self, index: usize) {
        each!(self, engine => engine.cut_off(index))
    }

    fn reruns_lost_work(&self) -> bool {
        each!(self, engine => engine.reruns_lost_work())
    }

    fn known_gone(&self, index: usize) -> bool {
        each!(self, engine => engine.known_gone(index))
    }
}

impl FrameReceiver for Receiver {
    #[inline]
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
        match self {
            Receiver::Socket(receiver) => receiver.receive(frame),
            #[cfg(feature = "mpi")]
            Receiver::Mpi(receiver) => receiver.receive(frame),
        }
    }

    #[inline]
    fn holds_input(&self) -> bool {
        match self {
            Receiver::Socket(receiver) => receiver.holds_input(),
            #[cfg(feature = "mpi")]
            Receiver::Mpi(receiver) => receiver.holds_input(),
        }
    }

    #[inline]
    fn input_waiting(&self, timeout: Option<Duration>) -> bool {
        match self {
            Receiver::Socket(receiver) => receiver.input_waiting(timeout),
            #[cfg(feature = "mpi")]
            Receiver::Mpi(receiver) => receiver.input_waiting(timeout),
        }
    }
}

impl FrameSender for Sender {
    #[inline]
    fn send(&mut self, frames: &[Arc<Outgoing>]) -> io::Result<()> {
        match self {
            Sender::Socket(sender) => sender.send(frames),
            #[cfg(feature = "mpi")]
            Sender::Mpi(sender) => sender.send(frames),
        }
    }
}
