//! MPI from many threads: one progress thread makes every MPI call, and each rank is
//! reached through a pair of queues to it (so MPI needs no thread support of its own).

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    Endpoint, Kind, LONGEST_SLEEP_SENDING, MpiError, Options, OutgoingFrame, Peer, Received,
    endpoint::init,
    idle::{Backoff, Pause},
};

/// How long the progress thread waits, on ending, for sends still on their way.
const FLUSH_ON_STOP: Duration = Duration::from_secs(10);

/// Why a rank's queue gave up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LinkError {
    /// MPI failed in the progress thread; every link reports it.
    #[error("MPI failed: {0}")]
    Mpi(String),
    /// The hub has stopped.
    #[error("the MPI progress thread has stopped")]
    Stopped,
}

/// What a rank's link hands its receiver: a frame and its kind, or the link's failure.
type Delivery = Result<(Kind, Vec<u8>), LinkError>;
type Inbox = mpsc::Receiver<Delivery>;
type Outbox = mpsc::Sender<Delivery>;

enum Command {
    Send { rank: usize, kind: Kind, frame: Box<dyn OutgoingFrame> },
    Abort(i32),
    Stop,
}

/// This process's MPI, run by a progress thread of its own. On rank 0 there is a link to
/// each worker; on a worker, one link to rank 0. Dropping the hub sends what is left (for
/// at most 10 s) and ends MPI.
pub struct Hub {
    me: Peer,
    size: usize,
    peers: Vec<Peer>,
    commands: mpsc::Sender<Command>,
    inboxes: Vec<Option<Inbox>>,
    thread: Option<JoinHandle<()>>,
}

/// What the progress thread tells the hub once MPI has started.
struct Started {
    me: Peer,
    size: usize,
    peers: Vec<Peer>,
    inboxes: Vec<Inbox>,
}

impl Hub {
    /// Starts MPI on a new progress thread, says hello (see [`init`]) and returns once
    /// every rank is known.
    pub fn start(options: Options) -> Result<Hub, MpiError> {
        let (commands, taken) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(String::from("corepool-mpi"))
            .spawn(move || {
                let mut endpoint = match init(&options) {
                    Ok(endpoint) => endpoint,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let size = endpoint.size();
                let (outboxes, inboxes): (Vec<_>, Vec<_>) = (0..size).map(|_| mpsc::channel()).unzip();
                let started = Started { me: endpoint.me().clone(), size, peers: endpoint.peers().to_vec(), inboxes };
                if started_tx.send(Ok(started)).is_ok() {
                    progress(&mut endpoint, &taken, &outboxes);
                }
            })
            .expect("a thread starts");
        let started = started_rx.recv().map_err(|_| MpiError::Init)??;
        let me_rank = started.me.rank;
        let inboxes =
            started.inboxes.into_iter().enumerate().map(|(rank, inbox)| (rank != me_rank).then_some(inbox)).collect();
        Ok(Hub { me: started.me, size: started.size, peers: started.peers, commands, inboxes, thread: Some(thread) })
    }

    /// This process: its rank, host and process id.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// How many ranks the job has, rank 0 included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Every worker as its hello described it, on rank 0; empty on a worker.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The two ends of the link to `rank`, once: a sender any thread may use, and a
    /// receiver for one thread at a time. `None` for this process's own rank, or if taken.
    pub fn link(&mut self, rank: usize) -> Option<(RankSender, RankReceiver)> {
        let inbox = self.inboxes.get_mut(rank)?.take()?;
        let sender = RankSender { rank, commands: self.commands.clone() };
        Some((sender, RankReceiver { inbox, waiting: RefCell::new(None) }))
    }

    /// A further sender to `rank` (not this process's own), beside the one [`Hub::link`]
    /// gives.
    pub fn sender(&self, rank: usize) -> Option<RankSender> {
        (rank < self.size && rank != self.me.rank).then(|| RankSender { rank, commands: self.commands.clone() })
    }

    /// Ends the whole job, every rank on every host, with exit code `code`.
    pub fn abort(&self, code: i32) -> ! {
        let _ = self.commands.send(Command::Abort(code));
        std::thread::sleep(Duration::from_secs(10));
        std::process::exit(code)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sending end of a link to one rank.
#[derive(Clone)]
pub struct RankSender {
    rank: usize,
    commands: mpsc::Sender<Command>,
}

impl RankSender {
    /// Hands `frame` to the progress thread, which sends it as one message of `kind` once
    /// the rank has room; frames to one rank leave in the order given.
    pub fn send(&self, kind: Kind, frame: impl OutgoingFrame) -> Result<(), LinkError> {
        let command = Command::Send { rank: self.rank, kind, frame: Box::new(frame) };
        self.commands.send(command).map_err(|_| LinkError::Stopped)
    }

    /// The rank this sends to.
    pub fn rank(&self) -> usize {
        self.rank
    }
}

/// The receiving end of a link to one rank.
pub struct RankReceiver {
    inbox: Inbox,
    // A delivery taken in by `input_waiting` (which takes `&self`), kept for `receive`.
    waiting: RefCell<Option<Delivery>>,
}

impl RankReceiver {
    /// The rank's next frame, waiting at most `timeout` (`None`: for as long as it takes);
    /// `Ok(None)` if none came in time.
    pub fn receive(&mut self, timeout: Option<Duration>) -> Result<Option<(Kind, Vec<u8>)>, LinkError> {
        if !self.input_waiting(timeout) {
            return Ok(None);
        }
        self.waiting.get_mut().take().expect("input is waiting").map(Some)
    }

    /// Whether a frame (or the link's failure) has already been taken in on this side.
    pub fn holds_input(&self) -> bool {
        self.waiting.borrow().is_some()
    }

    /// Waits at most `timeout` (`None`: for as long as it takes) until a receive would not
    /// wait.
    pub fn input_waiting(&self, timeout: Option<Duration>) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        if waiting.is_none() {
            // Only a closed inbox is an error: a closed one that still holds frames gives
            // them first, and nothing taken from it is ever dropped.
            let next = match timeout {
                None => self.inbox.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(timeout) => self.inbox.recv_timeout(timeout),
            };
            *waiting = match next {
                Ok(item) => Some(item),
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Err(LinkError::Stopped)),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
            };
        }
        waiting.is_some()
    }
}

/// The progress thread's loop: takes commands, sends what has room, hands out what
/// arrives, and waits when there is nothing to do: polling with short sleeps while
/// the next message is likely due, then on the command queue, so that a send starts at
/// once while MPI is polled between ever longer waits.
fn progress(endpoint: &mut Endpoint, commands: &mpsc::Receiver<Command>, outboxes: &[Outbox]) {
    let mut queued: Vec<VecDeque<(Kind, Box<dyn OutgoingFrame>)>> = outboxes.iter().map(|_| VecDeque::new()).collect();
    let mut idle = Backoff::new();
    let mut stopping = false;
    let failed = |error: MpiError| {
        for outbox in outboxes {
            let _ = outbox.send(Err(LinkError::Mpi(error.to_string())));
        }
    };
    let take = |command: Command, queued: &mut Vec<VecDeque<_>>, stopping: &mut bool| match command {
        Command::Send { rank, kind, frame } => queued[rank].push_back((kind, frame)),
        Command::Abort(code) => super::raw::abort(code),
        Command::Stop => *stopping = true,
    };
    loop {
        let mut moved = false;
        loop {
            match commands.try_recv() {
                Ok(command) => take(command, &mut queued, &mut stopping),
                Err(mpsc::TryRecvError::Empty) => break,
                // Every sender is gone without a stop: nothing more can come to send.
                Err(mpsc::TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
            }
            moved = true;
        }
        for (rank, queue) in queued.iter_mut().enumerate() {
            while let Some((kind, frame)) = queue.pop_front() {
                match endpoint.try_send(rank, kind, frame) {
                    Ok(Ok(())) => moved = true,
                    Ok(Err(frame)) => {
                        queue.push_front((kind, frame));
                        break;
                    }
                    Err(error) => return failed(error),
                }
            }
        }
        loop {
            match endpoint.try_receive() {
                Ok(Some(Received { rank, kind, bytes })) => {
                    moved = true;
                    let _ = outboxes[rank].send(Ok((kind, bytes)));
                }
                Ok(None) => break,
                Err(error) => return failed(error),
            }
        }
        if stopping && queued.iter().all(VecDeque::is_empty) {
            let _ = endpoint.flush(Some(Instant::now() + FLUSH_ON_STOP));
            return;
        }
        if moved {
            idle.reset();
            continue;
        }
        match idle.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            // A message half received needs MPI calls to move on: no sleep then.
            Pause::Yield => std::thread::yield_now(),
            Pause::Sleep(_) if endpoint.receiving() => std::thread::yield_now(),
            Pause::Sleep(pause) => {
                let pause = if endpoint.sending() { pause.min(LONGEST_SLEEP_SENDING) } else { pause };
                // Waiting on the queue rather than in a sleep starts a send at once.
                match commands.recv_timeout(pause) {
                    Ok(command) => {
                        take(command, &mut queued, &mut stopping);
                        idle.reset();
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => stopping = true,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_come_while_a_receiver_polls_are_all_received() {
        let (outbox, inbox) = mpsc::channel();
        let mut receiver = RankReceiver { inbox, waiting: RefCell::new(None) };
        let frames = 20_000u32;
        let sender = std::thread::spawn(move || {
            for n in 0..frames {
                outbox.send(Ok((Kind::Data, n.to_le_bytes().to_vec()))).unwrap();
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
        });
        let mut received = Vec::new();
        loop {
            while !receiver.input_waiting(Some(Duration::ZERO)) {}
            match receiver.receive(Some(Duration::ZERO)) {
                Ok(Some((_, bytes))) => received.push(u32::from_le_bytes(bytes.try_into().unwrap())),
                Ok(None) => unreachable!("input was waiting"),
                Err(LinkError::Stopped) => break,
                Err(error) => panic!("{error}"),
            }
        }
        sender.join().unwrap();
        assert!(received.iter().copied().eq(0..frames), "{} of {frames} frames received, in order", received.len());
    }
}
