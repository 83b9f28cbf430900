//! The MPI engine: the workers are the job's other ranks, which run already when the pool
//! starts (slot `i` is rank `i + 1`); a frame is one message to or from a rank, carried by
//! the [`Hub`]'s progress thread. The MPI runtime vouches for each rank, so there is no
//! socket and no secret; the protocol version is still checked as each rank joins, and the
//! welcome carries what a local worker finds in its environment ([`JoinSettings`]): the
//! program's identity by content, the initializer, the worker's name.

use std::{
    collections::VecDeque,
    ffi::OsString,
    io,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use corepool_protocol::{PROTOCOL_VERSION, codec, frame::FrameError, handshake::MAGIC};
use corepool_worker::function::JoinSettings;

use super::{Claim, FrameReceiver, FrameSender, Joined, Launch, Transport, Vouched};
use crate::{
    outgoing::Outgoing,
    pool::{
        PoolError,
        mpi::{self as process, Kind, LinkError, Options, OutgoingFrame, Peer, RankReceiver, RankSender},
    },
};

/// How long a rank may take to say which protocol it speaks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting receiver looks whether the pool stopped or gave up on its rank.
const WAKE_CHECK: Duration = Duration::from_millis(20);
/// The start of the coordinator's answer that admits a rank; the encoded [`JoinSettings`]
/// follow.
pub(crate) const WELCOME: &[u8] = b"welcome";
/// What a rank other than 0 sends in place of its hello when its program builds a pool
/// instead of serving: its `main` does not call `corepool::init()` first.
pub(crate) const INIT_FORGOTTEN: &[u8] = b"corepool::init() not called";

/// What every rank is told as it is admitted, as a local worker is through its environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct RankSettings {
    /// The coordinator's program by its content, if it could tell.
    pub identity: Option<String>,
    /// The pool's initializer setting, if any.
    pub initializer: Option<String>,
    /// The workers' name prefix: rank `i + 1` is `{prefix}-w{i}`.
    pub name_prefix: String,
}

/// The MPI engine of one pool: a link to each worker rank, and the ranks not yet joined.
pub(crate) struct MpiEngine {
    peers: Vec<Peer>,
    /// Rank 0's host, where a rank's process can be looked up.
    host: String,
    links: Mutex<Vec<Option<(RankSender, RankReceiver)>>>,
    /// Per slot: its rank's hello, if it came while the pool opened.
    hellos: Mutex<Vec<Option<Vec<u8>>>>,
    settings: RankSettings,
    /// Ranks readied by `launch` and not yet taken by `next_arrival`.
    arriving: Mutex<VecDeque<usize>>,
    arrived: Condvar,
    stopped: Arc<AtomicBool>,
    /// Per slot: the pool gave up on its rank (it stopped answering).
    cut: Vec<Arc<AtomicBool>>,
}

impl MpiEngine {
    /// Starts MPI in this process (rank 0), waits for every worker rank's hello, and checks
    /// that the job has `workers` of them (0: as many as it has), and that every one serves
    /// (its program calls `corepool::init()`). Each rank is told `settings` as it joins.
    pub(crate) fn open(workers: usize, settings: RankSettings) -> Result<(Self, usize), PoolError> {
        let mut hub = process::start_coordinator(Options::default())?;
        let ranks = hub.size();
        if ranks < 2 || (workers != 0 && workers != ranks - 1) {
            let asked = if workers == 0 { String::from("at least one") } else { workers.to_string() };
            // Worker ranks, if any, wait to be welcomed: the job ends, at exit, rather than wait.
            process::keep_until_exit(hub);
            if ranks > 1 {
                process::end_job_at_exit(process::EXIT_SETTINGS);
            }
            return Err(PoolError::Settings(format!(
                "the MPI job has {ranks} ranks, which gives {} workers (rank 0 is the coordinator); {asked} asked for",
                ranks - 1
            )));
        }
        let mut links: Vec<_> = (1..ranks).map(|rank| hub.link(rank)).collect();
        let hellos = first_hellos(&mut links);
        let forgotten: Vec<String> = (1..ranks)
            .filter(|rank| hellos[rank - 1].as_deref() == Some(INIT_FORGOTTEN))
            .map(|rank| describe_rank(hub.peers(), rank))
            .collect();
        if !forgotten.is_empty() {
            // The ranks that do serve are told at exit that there is no pool, and end.
            process::keep_until_exit(hub);
            return Err(PoolError::Broken(format!(
                "{} built a pool of its own instead of serving as a worker: the program must call \
                 corepool::init() first thing in main, on every rank",
                forgotten.join(", ")
            )));
        }
        let engine = Self {
            peers: hub.peers().to_vec(),
            host: hub.me().host.clone(),
            links: Mutex::new(links),
            hellos: Mutex::new(hellos),
            settings,
            arriving: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            stopped: Arc::new(AtomicBool::new(false)),
            cut: (1..ranks).map(|_| Arc::new(AtomicBool::new(false))).collect(),
        };
        process::keep_until_exit(hub);
        Ok((engine, ranks - 1))
    }
}

/// Each worker rank's first message, which comes as soon as it has started MPI; `None`
/// for one not heard within the handshake's time, whose hello `admit` waits for again.
fn first_hellos(links: &mut [Option<(RankSender, RankReceiver)>]) -> Vec<Option<Vec<u8>>> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    links
        .iter_mut()
        .map(|link| {
            let (_, receiver) = link.as_mut()?;
            let wait = deadline.saturating_duration_since(Instant::now());
            receiver.receive(Some(wait)).ok().flatten().map(|(_, hello)| hello)
        })
        .collect()
}

fn describe_rank(peers: &[Peer], rank: usize) -> String {
    match peers.iter().find(|peer| peer.rank == rank) {
        Some(peer) => format!("rank {rank} on host {} (pid {})", peer.host, peer.pid),
        None => format!("rank {rank}"),
    }
}

impl Transport for MpiEngine {
    type Ticket = ();
    type Arrival = usize;
    type Receiver = MpiReceiver;
    type Sender = MpiSender;

    fn launch(&self, index: usize, _env: &mut Vec<(OsString, OsString)>) -> io::Result<Launch<()>> {
        self.arriving.lock().unwrap_or_else(|e| e.into_inner()).push_back(index + 1);
        self.arrived.notify_all();
        Ok(Launch::Running { ticket: () })
    }

    fn next_arrival(&self, timeout: Option<Duration>) -> io::Result<Option<usize>> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut arriving = self.arriving.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if let Some(rank) = arriving.pop_front() {
                return Ok(Some(rank));
            }
            let wait = match deadline {
                None => WAKE_CHECK,
                Some(end) if Instant::now() >= end => return Ok(None),
                Some(end) => end.saturating_duration_since(Instant::now()).min(WAKE_CHECK),
            };
            arriving = self.arrived.wait_timeout(arriving, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn vouch(&self, rank: &usize) -> Vouched {
        match rank.checked_sub(1) {
            Some(index) if index < self.cut.len() => Vouched::Slot(index),
            _ => Vouched::Nothing,
        }
    }

    fn refuse(&self, rank: &usize, _reason: &str) {
        // A rank of this job came before its slot was readied: it is heard once it is.
        if !self.stopped.load(Ordering::SeqCst) {
            self.arriving.lock().unwrap_or_else(|e| e.into_inner()).push_back(*rank);
        }
    }

    fn admit(
        &self,
        rank: usize,
        ticket_for: impl FnOnce(Claim) -> Option<()>,
    ) -> Result<Joined<MpiReceiver, MpiSender>, String> {
        let index = rank - 1;
        let pid = self.peers.iter().find(|peer| peer.rank == rank).map_or(0, |peer| peer.pid);
        let taken = self.links.lock().unwrap_or_else(|e| e.into_inner()).get_mut(index).and_then(Option::take);
        let Some((sender, mut link)) = taken else { return Err(format!("rank {rank} has joined already")) };
        let who = describe_rank(&self.peers, rank);
        let heard = self.hellos.lock().unwrap_or_else(|e| e.into_inner()).get_mut(index).and_then(Option::take);
        let hello = match heard {
            Some(hello) => hello,
            None => match link.receive(Some(HANDSHAKE_TIMEOUT)).map_err(|error| format!("{who}: {error}"))? {
                Some((_, hello)) => hello,
                None => return Err(format!("{who} did not say hello within {HANDSHAKE_TIMEOUT:?}")),
            },
        };
        let theirs =
            hello.strip_prefix(&MAGIC).and_then(|rest| rest.first_chunk::<4>()).map(|v| u32::from_le_bytes(*v));
        let refused = match theirs {
            Some(PROTOCOL_VERSION) => None,
            Some(theirs) => {
                Some(format!("coordinator speaks protocol version {PROTOCOL_VERSION}, {who} speaks {theirs}"))
            }
            None => Some(format!("{who} is not a corepool worker")),
        };
        let refused =
            refused.or_else(|| ticket_for(Claim { index, pid }).is_none().then(|| format!("{who} is not awaited")));
        if let Some(reason) = refused {
            let _ = sender.send(Kind::Control, reason.clone().into_bytes());
            return Err(reason);
        }
        let settings = JoinSettings {
            identity: self.settings.identity.clone(),
            initializer: self.settings.initializer.clone(),
            name: format!("{}-w{index}", self.settings.name_prefix),
        };
        let mut welcome = WELCOME.to_vec();
        welcome.extend(codec::encode(&settings).map_err(|error| format!("{who}: the welcome: {error}"))?);
        sender.send(Kind::Control, welcome).map_err(|error| format!("{who}: {error}"))?;
        let receiver = MpiReceiver { link, who, stopped: Arc::clone(&self.stopped), cut: Arc::clone(&self.cut[index]) };
        Ok(Joined { claim: Claim { index, pid }, receiver, sender: MpiSender { link: sender } })
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.arrived.notify_all();
    }

    fn location(&self) -> Option<PathBuf> {
        None
    }

    fn sweep_leftovers(&self) {}

    fn describe(&self, index: usize) -> Option<String> {
        Some(describe_rank(&self.peers, index + 1))
    }

    fn host(&self, index: usize) -> String {
        self.peers.iter().find(|peer| peer.rank == index + 1).map_or_else(String::new, |peer| peer.host.clone())
    }

    fn cut_off(&self, index: usize) {
        if let Some(cut) = self.cut.get(index) {
            cut.store(true, Ordering::SeqCst);
            process::end_job_at_exit(process::EXIT_RANK_LOST);
        }
    }

    fn reruns_lost_work(&self) -> bool {
        // Without fault tolerance (ULFM), MPI cannot go on past a lost rank.
        false
    }

    fn known_gone(&self, index: usize) -> bool {
        let rank = index + 1;
        self.peers
            .iter()
            .find(|peer| peer.rank == rank)
            .is_some_and(|peer| peer.host == self.host && process_ended(peer.pid))
    }
}

/// Whether process `pid` of this host has ended: it is not there, or it is a zombie that
/// its launcher has not reaped yet.
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => true,
        Err(_) => {
            // SAFETY: signal 0 only asks whether the process exists.
            let asked = unsafe { libc::kill(pid as libc::pid_t, 0) };
            asked == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        }
    }
}

/// A rank's receiving side: whole messages from the hub's queue for that rank.
pub(crate) struct MpiReceiver {
    link: RankReceiver,
    who: String,
    stopped: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl FrameReceiver for MpiReceiver {
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
        loop {
            if !self.link.holds_input() {
                if self.cut.load(Ordering::SeqCst) {
                    return Err(FrameError::Io(io::Error::other(format!("{} stopped answering", self.who))));
                }
                if self.stopped.load(Ordering::SeqCst) {
                    return Ok(false);
                }
            }
            match self.link.receive(Some(WAKE_CHECK)) {
                Ok(None) => continue,
                Ok(Some((_, bytes))) => {
                    // Each message is a frame's body: its length is the message's.
                    *frame = bytes;
                    return Ok(true);
                }
                Err(LinkError::Stopped) => return Ok(false),
                Err(error) => {
                    process::end_job_at_exit(process::EXIT_RANK_LOST);
                    return Err(FrameError::Io(io::Error::other(format!("{}: {error}", self.who))));
                }
            }
        }
    }

    fn holds_input(&self) -> bool {
        self.link.holds_input()
    }

    fn input_waiting(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            let wait = deadline.map_or(WAKE_CHECK, |end| end.saturating_duration_since(Instant::now()).min(WAKE_CHECK));
            if self.link.input_waiting(Some(wait))
                || self.cut.load(Ordering::SeqCst)
                || self.stopped.load(Ordering::SeqCst)
            {
                return true;
            }
            if deadline.is_some_and(|end| Instant::now() >= end) {
                return false;
            }
        }
    }
}

/// A rank's sending side: each frame goes to the hub as one message, head and shared tail
/// without a copy.
pub(crate) struct MpiSender {
    link: RankSender,
}

impl FrameSender for MpiSender {
    fn send(&mut self, frames: &[Arc<Outgoing>]) -> io::Result<()> {
        for frame in frames {
            self.link.send(Kind::Data, Body(Arc::clone(frame))).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// A frame without its four-byte length, which its message carries already.
struct Body(Arc<Outgoing>);

impl OutgoingFrame for Body {
    fn pieces(&self) -> [&[u8]; 2] {
        [self.0.head().get(4..).unwrap_or_default(), self.0.tail()]
    }
}
