//! Checks corepool's MPI hub under `mpirun -np N` (N >= 2): rank 0 gives each worker a
//! thread of its own, which queues frames of every size from empty to 16 MiB at once and
//! checks every byte of their echoes, while the workers echo them as they come.
//!
//! Build: `cargo build -p corepool --features mpi --release --example mpi_hub_echo`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corepool::mpi::{Hub, Kind, Options};

/// The sizes of the frames each worker echoes, in order.
const SIZES: [usize; 9] = [0, 1, 100, 4096, 4097, 65536, 1 << 20, 3 << 20, 16 << 20];
/// How many times each worker gets the whole list.
const ROUNDS: usize = 4;

/// The bytes of frame `index` to `rank`.
fn frame(rank: usize, index: usize, len: usize) -> Vec<u8> {
    let seed = (rank * 7919 + index * 104_729) as u32;
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes()[3]).collect()
}

fn main() -> anyhow::Result<()> {
    let mut hub = Hub::start(Options::default())?;
    if hub.me().rank != 0 {
        let (sender, mut receiver) = hub.link(0).context("a link to rank 0")?;
        loop {
            let (kind, bytes) = receiver.receive(None)?.context("rank 0 went silent")?;
            if kind == Kind::Control && bytes == b"bye" {
                break;
            }
            sender.send(kind, bytes)?;
        }
        return Ok(());
    }
    if hub.size() < 2 {
        bail!("the hub check needs at least 2 ranks");
    }
    let started = Instant::now();
    let links: Vec<_> = (1..hub.size()).map(|rank| hub.link(rank).expect("a link to each worker")).collect();
    let checkers: Vec<_> = links
        .into_iter()
        .map(|(sender, mut receiver)| {
            std::thread::spawn(move || -> anyhow::Result<String> {
                let rank = sender.rank();
                let sizes: Vec<usize> = (0..ROUNDS).flat_map(|_| SIZES).collect();
                let started = Instant::now();
                for (index, len) in sizes.iter().enumerate() {
                    sender.send(Kind::Data, frame(rank, index, *len))?;
                }
                for (index, len) in sizes.iter().enumerate() {
                    let (kind, bytes) =
                        receiver.receive(Some(Duration::from_secs(30)))?.context("an echo within 30 s")?;
                    if kind != Kind::Data || bytes != frame(rank, index, *len) {
                        bail!("echo {index} ({len} bytes) from rank {rank} came back wrong");
                    }
                }
                sender.send(Kind::Control, b"bye".to_vec())?;
                let mib = sizes.iter().sum::<usize>() as f64 / f64::from(1 << 20);
                Ok(format!(
                    "hub: rank {rank} echoed {} frames ({mib:.1} MiB each way) exact in {:.0} ms",
                    sizes.len(),
                    started.elapsed().as_secs_f64() * 1e3
                ))
            })
        })
        .collect();
    for checker in checkers {
        println!("{}", checker.join().expect("a checker thread")?);
    }
    drop(hub);
    println!("hub: all ranks exact in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}
