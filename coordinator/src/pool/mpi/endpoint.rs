//! One process's end of the job: non-blocking sends with their frames kept alive, and
//! receives of whole messages from any rank.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use mpi::{Threading, environment::Universe, traits::Communicator};

use super::{
    COORDINATOR, HELLO_TAG, Kind, MpiError, Options, Peer,
    idle::{Backoff, LONGEST_SLEEP, LONGEST_SLEEP_SENDING},
    raw::{self, Matched, Request},
};
use crate::outgoing::Outgoing;

/// A frame to send: bytes that stay where they are until MPI has sent them.
pub trait OutgoingFrame: Send + 'static {
    /// The frame's bytes, in one or two pieces that go out as one message (a head and a
    /// tail shared with the caller's data go out without being copied together). Every
    /// call returns the same bytes.
    fn pieces(&self) -> [&[u8]; 2];
}

impl OutgoingFrame for Vec<u8> {
    fn pieces(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl OutgoingFrame for Box<[u8]> {
    fn pieces(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl OutgoingFrame for Arc<[u8]> {
    fn pieces(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl OutgoingFrame for Box<dyn OutgoingFrame> {
    fn pieces(&self) -> [&[u8]; 2] {
        (**self).pieces()
    }
}

impl OutgoingFrame for Arc<Vec<u8>> {
    fn pieces(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl OutgoingFrame for Arc<Outgoing> {
    fn pieces(&self) -> [&[u8]; 2] {
        [self.head(), self.tail()]
    }
}

/// A whole message taken in from a rank.
#[derive(Debug)]
pub struct Received {
    /// Who sent it.
    pub rank: usize,
    /// What it carries.
    pub kind: Kind,
    /// Its bytes, exactly as sent.
    pub bytes: Vec<u8>,
}

/// A send on its way, and the frame it reads from.
struct InFlight {
    request: Request,
    // Held, never read: MPI reads the frame's bytes until the request completes.
    _frame: Box<dyn OutgoingFrame>,
}

/// A matched message being received.
struct Arriving {
    request: Request,
    rank: usize,
    tag: i32,
    len: usize,
    bytes: Vec<u8>,
}

/// This process's end of the MPI job. Made by [`init`]; used from the thread that made it
/// (MPI runs with `MPI_THREAD_FUNNELED`). Dropping it ends MPI (`MPI_Finalize`); call
/// [`Endpoint::flush`] first so that every send has arrived.
pub struct Endpoint {
    me: Peer,
    size: usize,
    peers: Vec<Peer>,
    sends_in_flight_per_rank: usize,
    sending: Vec<VecDeque<InFlight>>,
    arriving: Option<Arriving>,
    arrived: VecDeque<(usize, i32, Vec<u8>)>,
    // Last, so that MPI ends after every request above is gone.
    _universe: Universe,
}

/// Starts MPI in this process and says hello: a worker sends rank 0 its host name and
/// process id; rank 0 waits (at most `options.hello_timeout`) until every worker has.
pub fn init(options: &Options) -> Result<Endpoint, MpiError> {
    let (universe, _) = mpi::initialize_with_threading(Threading::Funneled).ok_or(MpiError::Init)?;
    raw::errors_return()?;
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let host = mpi::environment::processor_name().unwrap_or_else(|_| String::from("?"));
    let me = Peer { rank, host, pid: std::process::id() };
    let mut endpoint = Endpoint {
        me,
        size,
        peers: Vec::new(),
        sends_in_flight_per_rank: options.sends_in_flight_per_rank.max(1),
        sending: (0..size).map(|_| VecDeque::new()).collect(),
        arriving: None,
        arrived: VecDeque::new(),
        _universe: universe,
    };
    if rank == COORDINATOR {
        endpoint.gather_hellos(options.hello_timeout)?;
    } else {
        let hello = hello_bytes(&endpoint.me);
        endpoint.start_send(COORDINATOR, HELLO_TAG, Box::new(hello))?;
    }
    Ok(endpoint)
}

/// A hello: a fixed mark, the process id, then the host name.
const HELLO_MARK: &[u8; 8] = b"cp-hello";

fn hello_bytes(me: &Peer) -> Vec<u8> {
    let mut bytes = HELLO_MARK.to_vec();
    bytes.extend_from_slice(&me.pid.to_le_bytes());
    bytes.extend_from_slice(me.host.as_bytes());
    bytes
}

fn parse_hello(rank: usize, bytes: &[u8]) -> Result<Peer, MpiError> {
    let rest = bytes.strip_prefix(HELLO_MARK).ok_or(MpiError::BadHello { rank })?;
    let (pid, host) = rest.split_first_chunk::<4>().ok_or(MpiError::BadHello { rank })?;
    Ok(Peer { rank, host: String::from_utf8_lossy(host).into_owned(), pid: u32::from_le_bytes(*pid) })
}

impl Endpoint {
    /// This process: its rank, host and process id.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// How many ranks the job has, rank 0 included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Every worker (ranks 1 and up) as its hello described it, on rank 0; empty on a
    /// worker.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The worker with `rank`, on rank 0.
    pub fn peer(&self, rank: usize) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.rank == rank)
    }

    /// Sends `frame` to `rank` as one message of `kind`, without waiting for it to arrive.
    /// If `rank` already has [`Options::sends_in_flight_per_rank`] sends on their way, this
    /// waits for one of them to complete, and keeps receiving meanwhile (what arrives is
    /// kept for [`Endpoint::receive`]).
    pub fn send(&mut self, rank: usize, kind: Kind, frame: impl OutgoingFrame) -> Result<(), MpiError> {
        self.check_rank(rank)?;
        let mut idle = Backoff::new();
        loop {
            self.complete_sends(rank)?;
            if self.sending[rank].len() < self.sends_in_flight_per_rank {
                break;
            }
            if self.step_receive()? { idle.reset() } else { idle.wait(None, self.longest_sleep()) }
        }
        self.start_send(rank, kind.tag(), Box::new(frame))
    }

    /// Sends `frame` to `rank` if fewer than [`Options::sends_in_flight_per_rank`] sends to
    /// it are on their way; else gives the frame back, untouched.
    pub fn try_send<F: OutgoingFrame>(&mut self, rank: usize, kind: Kind, frame: F) -> Result<Result<(), F>, MpiError> {
        self.check_rank(rank)?;
        self.complete_sends(rank)?;
        if self.sending[rank].len() >= self.sends_in_flight_per_rank {
            return Ok(Err(frame));
        }
        self.start_send(rank, kind.tag(), Box::new(frame))?;
        Ok(Ok(()))
    }

    /// Whether a message is being received: it needs MPI calls to move on.
    pub fn receiving(&self) -> bool {
        self.arriving.is_some()
    }

    /// Whether any send, to any rank, is still on its way.
    pub fn sending(&self) -> bool {
        self.sending.iter().any(|queue| !queue.is_empty())
    }

    /// Sends on their way to `rank` that have not completed yet.
    pub fn sends_in_flight(&mut self, rank: usize) -> Result<usize, MpiError> {
        self.check_rank(rank)?;
        self.complete_sends(rank)?;
        Ok(self.sending[rank].len())
    }

    /// The next whole message from any rank, waiting until `deadline` (`None`: for as long
    /// as it takes): `Ok(None)` once the deadline has passed with nothing in. Sends in
    /// flight make progress meanwhile.
    pub fn receive(&mut self, deadline: Option<Instant>) -> Result<Option<Received>, MpiError> {
        let mut idle = Backoff::new();
        loop {
            if let Some(received) = self.take_arrived()? {
                return Ok(Some(received));
            }
            let sent = self.complete_all_sends()?;
            if self.step_receive()? || sent {
                idle.reset();
                continue;
            }
            if deadline.is_some_and(|end| Instant::now() >= end) {
                return Ok(None);
            }
            idle.wait(deadline, self.longest_sleep());
        }
    }

    /// The next whole message if one is already in, without waiting.
    pub fn try_receive(&mut self) -> Result<Option<Received>, MpiError> {
        self.complete_all_sends()?;
        while self.step_receive()? {}
        self.take_arrived()
    }

    /// Waits until every send has completed, or `deadline` has passed (then `Ok(false)`),
    /// receiving meanwhile.
    pub fn flush(&mut self, deadline: Option<Instant>) -> Result<bool, MpiError> {
        let mut idle = Backoff::new();
        loop {
            let sent = self.complete_all_sends()?;
            if self.sending.iter().all(VecDeque::is_empty) {
                return Ok(true);
            }
            if self.step_receive()? || sent {
                idle.reset();
                continue;
            }
            if deadline.is_some_and(|end| Instant::now() >= end) {
                return Ok(false);
            }
            idle.wait(deadline, self.longest_sleep());
        }
    }

    /// Ends the whole job at once, every rank on every host, with exit code `code`: for a
    /// coordinator that has given up on a rank (MPI cannot end just one).
    pub fn abort(&self, code: i32) -> ! {
        raw::abort(code)
    }

    /// How long an idle step may sleep: not at all while a message is arriving, briefly
    /// while sends are on their way, else up to [`LONGEST_SLEEP`].
    fn longest_sleep(&self) -> Duration {
        if self.arriving.is_some() {
            Duration::ZERO
        } else if self.sending.iter().any(|queue| !queue.is_empty()) {
            LONGEST_SLEEP_SENDING
        } else {
            LONGEST_SLEEP
        }
    }

    fn check_rank(&self, rank: usize) -> Result<(), MpiError> {
        if rank < self.size { Ok(()) } else { Err(MpiError::NoSuchRank { rank, size: self.size }) }
    }

    fn start_send(&mut self, rank: usize, tag: i32, frame: Box<dyn OutgoingFrame>) -> Result<(), MpiError> {
        // SAFETY: the boxed frame's bytes do not move with the box, and the box is kept in
        // `sending` until the request completes.
        let request = unsafe { raw::start_send(&frame.pieces(), rank, tag)? };
        self.sending[rank].push_back(InFlight { request, _frame: frame });
        Ok(())
    }

    /// Drops the sends to `rank` that have completed; true if any had.
    fn complete_sends(&mut self, rank: usize) -> Result<bool, MpiError> {
        let queue = &mut self.sending[rank];
        let before = queue.len();
        let mut kept = VecDeque::with_capacity(before);
        while let Some(mut in_flight) = queue.pop_front() {
            if !in_flight.request.test()? {
                kept.push_back(in_flight);
            }
        }
        *queue = kept;
        Ok(queue.len() < before)
    }

    fn complete_all_sends(&mut self) -> Result<bool, MpiError> {
        let mut any = false;
        for rank in 0..self.size {
            if !self.sending[rank].is_empty() {
                any |= self.complete_sends(rank)?;
            }
        }
        Ok(any)
    }

    /// One step of receiving: finishes the message under way, or matches and starts the
    /// next. True if anything moved.
    fn step_receive(&mut self) -> Result<bool, MpiError> {
        if let Some(arriving) = &mut self.arriving {
            if !arriving.request.test()? {
                return Ok(false);
            }
            let mut done = self.arriving.take().expect("a message was arriving");
            // SAFETY: the receive into the spare room completed with exactly this many bytes.
            unsafe { done.bytes.set_len(done.len) };
            self.arrived.push_back((done.rank, done.tag, done.bytes));
            return Ok(true);
        }
        // A probe that matches nothing makes MPI progress, which may take a message in that
        // only the next probe matches: one more, so that a message in is seen at once.
        let matched = match raw::matched_probe()? {
            Some(matched) => matched,
            None => match raw::matched_probe()? {
                Some(matched) => matched,
                None => return Ok(false),
            },
        };
        self.start_receive(matched)?;
        Ok(true)
    }

    fn start_receive(&mut self, matched: Matched) -> Result<(), MpiError> {
        let (rank, tag, len) = (matched.rank, matched.tag, matched.len);
        let mut bytes = Vec::with_capacity(len);
        // SAFETY: `bytes` moves into `self.arriving` (its heap room stays put) and is not
        // touched until the request completes.
        let request = unsafe { matched.start_receive(&mut bytes)? };
        self.arriving = Some(Arriving { request, rank, tag, len, bytes });
        Ok(())
    }

    /// The oldest message that has arrived, as what it carries.
    fn take_arrived(&mut self) -> Result<Option<Received>, MpiError> {
        let Some((rank, tag, bytes)) = self.arrived.pop_front() else { return Ok(None) };
        match Kind::from_tag(tag) {
            Some(kind) => Ok(Some(Received { rank, kind, bytes })),
            None if tag == HELLO_TAG => Err(MpiError::BadHello { rank }),
            None => Err(MpiError::ForeignTag { rank, tag }),
        }
    }

    fn gather_hellos(&mut self, timeout: Duration) -> Result<(), MpiError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut idle = Backoff::new();
        while self.peers.len() + 1 < self.size {
            if self.step_receive()? {
                idle.reset();
            } else if Instant::now() >= deadline {
                let missing = (1..self.size).filter(|rank| self.peer(*rank).is_none()).collect();
                return Err(MpiError::NoHello { missing, waited: started.elapsed() });
            } else {
                idle.wait(Some(deadline), self.longest_sleep());
            }
            while let Some(at) = self.arrived.iter().position(|(_, tag, _)| *tag == HELLO_TAG) {
                let (rank, _, bytes) = self.arrived.remove(at).expect("found just now");
                let peer = parse_hello(rank, &bytes)?;
                if self.peer(rank).is_none() {
                    self.peers.push(peer);
                }
            }
        }
        self.peers.sort_by_key(|peer| peer.rank);
        Ok(())
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A send still under way may read its frame until MPI ends: leave those frames be
        // rather than free memory MPI may still read.
        for queue in &mut self.sending {
            for in_flight in queue.drain(..) {
                std::mem::forget(in_flight);
            }
        }
        if let Some(arriving) = self.arriving.take() {
            std::mem::forget(arriving);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_says_who_and_where() {
        let me = Peer { rank: 3, host: String::from("node-b"), pid: 4242 };
        assert_eq!(parse_hello(3, &hello_bytes(&me)).unwrap(), me);
    }

    #[test]
    fn a_hello_of_another_form_is_refused() {
        assert!(matches!(parse_hello(2, b"hello"), Err(MpiError::BadHello { rank: 2 })));
        assert!(matches!(parse_hello(2, b"cp-hel"), Err(MpiError::BadHello { rank: 2 })));
    }

    #[test]
    fn a_frame_goes_out_as_its_head_then_its_tail() {
        let frame: Vec<u8> = vec![1, 2, 3];
        assert_eq!(frame.pieces(), [&[1u8, 2, 3][..], &[][..]]);
    }
}
