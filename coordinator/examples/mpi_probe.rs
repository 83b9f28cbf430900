//! Checks corepool's MPI message layer under `mpirun -np N` (N >= 2): rank 0 exchanges
//! frames with every other rank, small round trips and large frames both ways at once,
//! checks every byte, and prints where each rank runs, the round trip, the bandwidth and
//! the CPU an idle rank uses.
//!
//! Build: `cargo build -p corepool --features mpi --release --example mpi_probe`.
//! Options: `--sizes 1,16,64` (MiB), `--round-trips N`, `--idle SECS` (measure idle CPU),
//! `--hold SECS` (keep pinging every rank, for a link to be cut meanwhile),
//! `--deadline SECS` (how long rank 0 waits for any answer before it ends the job).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use corepool::mpi::{self, Endpoint, Kind, OutgoingFrame, Received};

/// Exit code when a rank did not answer in time.
const SILENT_RANK: i32 = 3;
/// Exit code when bytes arrived wrong.
const WRONG_BYTES: i32 = 4;

struct Args {
    sizes_mib: Vec<usize>,
    round_trips: usize,
    idle: Duration,
    hold: Duration,
    deadline: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        sizes_mib: vec![1, 16, 64],
        round_trips: 2000,
        idle: Duration::ZERO,
        hold: Duration::ZERO,
        deadline: Duration::from_secs(30),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().with_context(|| format!("{flag} needs a value"))?;
        let seconds = || value.parse::<f64>().map(Duration::from_secs_f64).with_context(|| format!("{flag} {value}"));
        match flag.as_str() {
            "--sizes" => {
                args.sizes_mib = value.split(',').map(str::parse).collect::<Result<_, _>>().context("--sizes")?
            }
            "--round-trips" => args.round_trips = value.parse().context("--round-trips")?,
            "--idle" => args.idle = seconds()?,
            "--hold" => args.hold = seconds()?,
            "--deadline" => args.deadline = seconds()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut endpoint = mpi::init(&mpi::Options::default())?;
    if endpoint.me().rank == mpi::COORDINATOR { coordinate(&mut endpoint, &args) } else { serve(&mut endpoint) }
}

/// The bytes rank `from` sends rank `to` in a frame of `len`: a pattern no two frames share.
fn pattern(from: usize, to: usize, len: usize) -> Vec<u8> {
    let mut state = (from as u64) << 48 ^ (to as u64) << 32 ^ len as u64;
    let mut bytes = vec![0u8; len];
    for word in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..word.len()]);
    }
    bytes
}

/// Where `got` first differs from what `from` should have sent `to`.
fn first_difference(from: usize, to: usize, got: &[u8], len: usize) -> Option<usize> {
    if got.len() != len {
        return Some(got.len().min(len));
    }
    let expected = pattern(from, to, len);
    got.iter().zip(&expected).position(|(a, b)| a != b)
}

/// A frame in two pieces: a short head, then a tail shared with others (sent without a copy).
struct HeadAndTail(Vec<u8>, Arc<Vec<u8>>);

impl OutgoingFrame for HeadAndTail {
    fn pieces(&self) -> [&[u8]; 2] {
        [&self.0, &self.1]
    }
}

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A worker: echoes control frames, checks data frames, and sends what it is asked to.
fn serve(endpoint: &mut Endpoint) -> anyhow::Result<()> {
    let me = endpoint.me().rank;
    let mut prepared = None;
    loop {
        let Some(Received { kind, bytes, .. }) = endpoint.receive(None)? else { continue };
        match kind {
            Kind::Data => {
                let len = bytes.len();
                let verdict = match first_difference(0, me, &bytes, len) {
                    None => format!("got {len} ok"),
                    Some(at) => format!("got {len} bad at {at}"),
                };
                endpoint.send(0, Kind::Control, verdict.into_bytes())?;
            }
            Kind::Control => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut words = text.split(' ');
                match words.next() {
                    Some("prepare") => {
                        let len: usize = words.next().context("prepare needs a length")?.parse()?;
                        let whole = pattern(me, 0, len);
                        let split = 16.min(len);
                        prepared = Some(HeadAndTail(whole[..split].to_vec(), Arc::new(whole[split..].to_vec())));
                        endpoint.send(0, Kind::Control, b"ready".to_vec())?;
                    }
                    Some("send") => {
                        let frame = prepared.take().context("send before prepare")?;
                        endpoint.send(0, Kind::Data, frame)?;
                    }
                    Some("cpu") => {
                        let cpu = cpu_time().as_micros().to_string();
                        endpoint.send(0, Kind::Control, format!("cpu {cpu}").into_bytes())?;
                    }
                    Some("bye") => break,
                    _ => endpoint.send(0, Kind::Control, bytes)?,
                }
            }
        }
    }
    endpoint.flush(Some(Instant::now() + Duration::from_secs(10)))?;
    Ok(())
}

/// Rank 0's view of the job.
struct Coordinator<'a> {
    endpoint: &'a mut Endpoint,
    deadline: Duration,
}

impl Coordinator<'_> {
    fn workers(&self) -> Vec<usize> {
        (1..self.endpoint.size()).collect()
    }

    /// The next message, or the end of the job naming the ranks still owed an answer.
    fn receive(&mut self, owed: &[usize]) -> anyhow::Result<Received> {
        if let Some(received) = self.endpoint.receive(Some(Instant::now() + self.deadline))? {
            return Ok(received);
        }
        for rank in owed {
            let peer =
                self.endpoint.peer(*rank).cloned().unwrap_or(mpi::Peer { rank: *rank, host: "?".into(), pid: 0 });
            println!(
                "probe: no answer within {:?} from rank {rank} on host {} (pid {})",
                self.deadline, peer.host, peer.pid
            );
        }
        self.endpoint.abort(SILENT_RANK)
    }

    fn wrong(&self, what: String) -> ! {
        println!("probe: {what}");
        self.endpoint.abort(WRONG_BYTES)
    }

    fn round_trips(&mut self, count: usize) -> anyhow::Result<()> {
        for rank in self.workers() {
            let mut times = Vec::with_capacity(count);
            for round in 0..count {
                let frame = format!("ping {round:058}").into_bytes();
                let started = Instant::now();
                self.endpoint.send(rank, Kind::Control, frame.clone())?;
                let answer = self.receive(&[rank])?;
                times.push(started.elapsed());
                if answer.rank != rank || answer.bytes != frame {
                    self.wrong(format!("round trip {round} to rank {rank} came back wrong"));
                }
            }
            times.sort();
            let micros = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "round trip rank {rank}: {count} x 64 B, median {:.1} us, p99 {:.1} us",
                micros(times[count / 2]),
                micros(times[count * 99 / 100])
            );
        }
        Ok(())
    }

    /// Every worker and rank 0 send each other `len` bytes at the same time.
    fn both_ways(&mut self, len: usize) -> anyhow::Result<()> {
        let workers = self.workers();
        let tails: Vec<Arc<Vec<u8>>> = workers.iter().map(|rank| Arc::new(pattern(0, *rank, len))).collect();
        for rank in &workers {
            self.endpoint.send(*rank, Kind::Control, format!("prepare {len}").into_bytes())?;
        }
        let mut owed = workers.clone();
        while !owed.is_empty() {
            let ready = self.receive(&owed)?;
            owed.retain(|owed| *owed != ready.rank);
        }
        let started = Instant::now();
        for rank in &workers {
            self.endpoint.send(*rank, Kind::Control, b"send".to_vec())?;
        }
        for (rank, tail) in workers.iter().zip(&tails) {
            self.endpoint.send(*rank, Kind::Data, tail.clone())?;
        }
        // Checked once the clock has stopped, so that the figure is the transfer's.
        let mut frames = Vec::new();
        let (mut frames_owed, mut verdicts_owed) = (workers.clone(), workers.clone());
        while !frames_owed.is_empty() || !verdicts_owed.is_empty() {
            let owed: Vec<usize> = frames_owed.iter().chain(&verdicts_owed).copied().collect();
            let received = self.receive(&owed)?;
            let rank = received.rank;
            match received.kind {
                Kind::Data => {
                    frames_owed.retain(|owed| *owed != rank);
                    frames.push(received);
                }
                Kind::Control => {
                    let verdict = String::from_utf8_lossy(&received.bytes).into_owned();
                    if verdict != format!("got {len} ok") {
                        self.wrong(format!("rank {rank} says: {verdict}"));
                    }
                    verdicts_owed.retain(|owed| *owed != rank);
                }
            }
        }
        let elapsed = started.elapsed();
        for frame in frames {
            if let Some(at) = first_difference(frame.rank, 0, &frame.bytes, len) {
                self.wrong(format!("the {len}-byte frame from rank {} differs at byte {at}", frame.rank));
            }
        }
        let moved = 2 * len * workers.len();
        println!(
            "frames {} MiB both ways with {} ranks: exact, {:.1} ms, {:.2} GB/s",
            len >> 20,
            workers.len(),
            elapsed.as_secs_f64() * 1e3,
            moved as f64 / elapsed.as_secs_f64() / 1e9
        );
        Ok(())
    }

    /// Each worker's CPU time, asked for and answered.
    fn workers_cpu(&mut self) -> anyhow::Result<Vec<Duration>> {
        let workers = self.workers();
        for rank in &workers {
            self.endpoint.send(*rank, Kind::Control, b"cpu".to_vec())?;
        }
        let mut cpu = vec![Duration::ZERO; workers.len()];
        let mut owed = workers.clone();
        while !owed.is_empty() {
            let received = self.receive(&owed)?;
            let text = String::from_utf8_lossy(&received.bytes).into_owned();
            let micros: u64 = text.strip_prefix("cpu ").and_then(|m| m.parse().ok()).context("a cpu answer")?;
            cpu[received.rank - 1] = Duration::from_micros(micros);
            owed.retain(|rank| *rank != received.rank);
        }
        Ok(cpu)
    }

    fn idle(&mut self, span: Duration) -> anyhow::Result<()> {
        let (before, own_before) = (self.workers_cpu()?, cpu_time());
        let started = Instant::now();
        if let Some(received) = self.endpoint.receive(Some(started + span))? {
            bail!("nothing should arrive while idle, but rank {} sent a frame", received.rank);
        }
        let wall = started.elapsed().as_secs_f64();
        let own = (cpu_time() - own_before).as_secs_f64() / wall * 100.0;
        let after = self.workers_cpu()?;
        let shares: Vec<String> = before
            .iter()
            .zip(&after)
            .enumerate()
            .map(|(i, (b, a))| format!("rank {} {:.1}%", i + 1, (*a - *b).as_secs_f64() / wall * 100.0))
            .collect();
        println!("idle {wall:.1} s, CPU: rank 0 {own:.1}%, {}", shares.join(", "));
        Ok(())
    }

    fn hold(&mut self, span: Duration) -> anyhow::Result<()> {
        println!("holding for {span:?}: pinging every rank");
        let end = Instant::now() + span;
        while Instant::now() < end {
            for rank in self.workers() {
                self.endpoint.send(rank, Kind::Control, b"ping".to_vec())?;
            }
            let mut owed = self.workers();
            while !owed.is_empty() {
                let received = self.receive(&owed)?;
                owed.retain(|rank| *rank != received.rank);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn coordinate(endpoint: &mut Endpoint, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    if endpoint.size() < 2 {
        bail!("the probe needs at least 2 ranks (mpirun -np 2 or more)");
    }
    let me = endpoint.me().clone();
    println!("rank {} host {} pid {}", me.rank, me.host, me.pid);
    for peer in endpoint.peers() {
        println!("rank {} host {} pid {}", peer.rank, peer.host, peer.pid);
    }
    let mut coordinator = Coordinator { endpoint, deadline: args.deadline };
    coordinator.round_trips(args.round_trips)?;
    for mib in &args.sizes_mib {
        coordinator.both_ways(mib << 20)?;
    }
    if !args.idle.is_zero() {
        coordinator.idle(args.idle)?;
    }
    if !args.hold.is_zero() {
        coordinator.hold(args.hold)?;
    }
    for rank in coordinator.workers() {
        coordinator.endpoint.send(rank, Kind::Control, b"bye".to_vec())?;
    }
    coordinator.endpoint.flush(Some(Instant::now() + args.deadline))?;
    println!("probe: all {} ranks exact in {:.2} s", coordinator.endpoint.size(), started.elapsed().as_secs_f64());
    Ok(())
}
