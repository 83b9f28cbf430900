//! A user's program: its own functions over its own serde types, run by every call of the
//! pool, with nothing but `corepool::init` and the function API. It prints one line per
//! result, `call<TAB>index<TAB>result`, for the test to check against its own computation.
//!
//! `own-functions init DIR`: each worker's initializer records its pid in a file of DIR,
//! and the tasks report what the initializer set up.
//! `own-functions init-fails`: the initializer fails; the pool must not start.
//! `own-functions replace-self`: replaces its own executable file with another program
//! before it starts its pool, as a rebuild during a run would.
//! `own-functions nested`: a function that builds a pool prints what its call returned.
//! `own-functions callback-panics`: an `apply_async` callback panics; the result must still
//! come, and the next call's callback run.
//! `own-functions too-large`: calls whose results are over the frame limit fail alone,
//! and the pool goes on with the same worker.
//! `own-functions replace-often ROUNDS ITEMS`: a pool that replaces each worker after one
//! chunk maps one-item chunks, ROUNDS times; after each round it prints the number of its
//! own memory mappings (`maps<TAB>round<TAB>count`).

use std::{
    process::ExitCode,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use corepool::{Callbacks, Pool, PoolError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

fn norm(p: Point) -> f64 {
    (p.x * p.x + p.y * p.y).sqrt()
}

fn shout(text: String) -> String {
    format!("{}!", text.to_uppercase())
}

fn sum_and_max(values: Vec<f64>) -> (f64, f64) {
    (values.iter().sum(), values.iter().copied().fold(f64::MIN, f64::max))
}

fn scale(p: Point, k: f64) -> Point {
    Point { x: p.x * k, y: p.y * k }
}

fn label(name: String, count: u32, values: Vec<f64>) -> String {
    format!("{name}x{count}:{}", values.len())
}

fn unlucky(x: i64) -> i64 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x
}

/// `n` zero bytes once encoded, though it holds none: the worker's answer is the only copy.
#[derive(Debug)]
struct Zeros(usize);

impl Serialize for Zeros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Memory never written maps no page.
        serializer.serialize_bytes(&vec![0u8; self.0])
    }
}

impl<'de> Deserialize<'de> for Zeros {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(|bytes| Zeros(bytes.len()))
    }
}

fn zeros(n: usize) -> Zeros {
    Zeros(n)
}

fn points() -> Vec<Point> {
    (0..40).map(|i| Point { x: i as f64 * 0.5, y: 3.0 - i as f64 }).collect()
}

fn words() -> Vec<String> {
    (0..25).map(|i| format!("word{i}é")).collect()
}

fn vectors() -> Vec<Vec<f64>> {
    (0..30).map(|i| (0..i % 7 + 1).map(|j| (i * j) as f64 / 3.0).collect()).collect()
}

fn print_all<T: std::fmt::Debug>(call: &str, results: &[T]) {
    for (index, result) in results.iter().enumerate() {
        println!("{call}\t{index}\t{result:?}");
    }
}

fn every_call(pool: &Pool) -> Result<(), PoolError> {
    let points_vec = points();
    println!("apply\t0\t{:?}", pool.apply(norm, Point { x: 3.0, y: 4.0 })?);
    print_all("map", &pool.map(norm, points())?);
    print_all("map-slice", &pool.map(norm, &points()[..])?);
    print_all("map-chunks-of-7", &pool.chunksize(7).map(norm, &points_vec)?);
    print_all("map-closure", &pool.map(|x: i64| x * 3 - 1, 0..50)?);
    print_all("starmap", &pool.starmap(scale, points().into_iter().map(|p| (p, 2.5)))?);
    print_all("imap", &pool.imap(shout, words())?.collect::<Result<Vec<_>, _>>()?);
    print_all("imap-chunks-of-4", &pool.chunksize(4).imap(shout, words())?.collect::<Result<Vec<_>, _>>()?);
    let mut unordered = pool.imap_unordered(sum_and_max, vectors())?.collect::<Result<Vec<_>, _>>()?;
    unordered.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    print_all("imap-unordered-sorted", &unordered);
    static CALLED_BACK: AtomicUsize = AtomicUsize::new(0);
    let called_back = Callbacks::on_success(|_: &String| {
        CALLED_BACK.fetch_add(1, Ordering::SeqCst);
    });
    let shouted = pool.apply_async(shout, "hello".to_owned(), called_back)?;
    let sums = pool.map_async(|v: Vec<f64>| v.iter().sum::<f64>(), vectors(), Callbacks::none())?;
    let labels = (0..12).map(|i| (format!("n{i}"), i as u32, vec![1.0; i]));
    let labelled = pool.chunksize(5).starmap_async(label, labels, Callbacks::none())?;
    println!("apply-async\t0\t{:?}", shouted.get(None)?);
    println!("apply-async-callbacks\t0\t{}", CALLED_BACK.load(Ordering::SeqCst));
    print_all("map-async", &sums.get(None)?);
    print_all("starmap-async", &labelled.get(None)?);
    let panicked = pool.apply(unlucky, 13).expect_err("13 panics");
    println!("panic\t0\t{panicked}");
    Ok(())
}

/// What each worker's initializer set up.
static GREETING: OnceLock<String> = OnceLock::new();

fn record_pid(dir: String) -> Result<(), String> {
    let pid = std::process::id();
    std::fs::write(format!("{dir}/{pid}"), format!("{pid}\n")).map_err(|e| e.to_string())?;
    GREETING.set(format!("set up in {pid}")).map_err(|_| "the initializer ran twice".to_owned())
}

fn greeting(_: u32) -> String {
    GREETING.get().cloned().unwrap_or_else(|| "not set up".to_owned())
}

fn build_a_pool(_: u8) -> String {
    match Pool::builder().workers(1).build() {
        Ok(_) => "a pool was built inside a task".to_owned(),
        Err(error) => error.to_string(),
    }
}

fn no_model(path: String) -> Result<(), String> {
    Err(format!("no model file at {path}"))
}

fn main() -> ExitCode {
    corepool::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<(), PoolError> {
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [] => every_call(&Pool::builder().workers(3).build()?),
            ["init", dir] => {
                let pool = Pool::builder().workers(2).initializer(record_pid, dir.to_owned()).build()?;
                println!("pids\t{:?}", pool.worker_pids());
                for pid in pool.worker_pids() {
                    // What `top` shows (the process name) and what `ps` shows (argv[0]).
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let argv0 = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next().unwrap_or_default());
                    println!("names\t{}\t{argv0}", comm.trim_end());
                }
                print_all("greeting", &pool.map(greeting, 0..20)?);
                // A worker that dies is replaced by one that runs the initializer too.
                let victim = pool.worker_pids()[0];
                std::process::Command::new("kill").args(["-9", &victim.to_string()]).status().expect("kill runs");
                while pool.worker_pids().contains(&victim) || pool.worker_pids().len() < 2 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                println!("replaced\t{victim}\t{:?}", pool.worker_pids());
                print_all("greeting-after", &pool.map(greeting, 0..20)?);
                Ok(())
            }
            ["init-fails"] => {
                Pool::builder().workers(2).initializer(no_model, "/nowhere/model.bin".to_owned()).build()?;
                Ok(())
            }
            ["replace-self"] => {
                let me = std::env::current_exe().expect("own path");
                std::fs::remove_file(&me).expect("own file removed");
                std::fs::write(&me, "#!/bin/sh\nexit 7\n").expect("another program written");
                let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                std::fs::set_permissions(&me, executable).expect("another program made executable");
                let pool = Pool::builder().workers(2).build()?;
                print_all("after-replace", &pool.map(norm, points())?);
                Ok(())
            }
            ["nested"] => {
                println!("nested\t0\t{}", Pool::builder().workers(1).build()?.apply(build_a_pool, 0)?);
                Ok(())
            }
            ["callback-panics"] => {
                let pool = Pool::builder().workers(1).build()?;
                let panics = Callbacks::on_success(|value: &i64| panic!("callback refuses {value}"));
                println!("after-panic\t0\t{}", pool.apply_async(|x: i64| x + 1, 41, panics)?.get(None)?);
                static CALLED_BACK: AtomicUsize = AtomicUsize::new(0);
                let counts = Callbacks::on_success(|_: &i64| {
                    CALLED_BACK.fetch_add(1, Ordering::SeqCst);
                });
                println!("next\t0\t{}", pool.apply_async(|x: i64| x * 2, 21, counts)?.get(None)?);
                println!("called-back\t0\t{}", CALLED_BACK.load(Ordering::SeqCst));
                Ok(())
            }
            ["too-large"] => {
                let pool = Pool::builder().workers(1).build()?;
                let pids = pool.worker_pids();
                println!("apply-too-large\t0\t{}", pool.apply(zeros, (1 << 30) + 1000).expect_err("too large"));
                // Two items that fit a frame each, but not together.
                let halves = [600 << 20, 600 << 20];
                println!("map-too-large\t0\t{}", pool.chunksize(2).map(zeros, halves).expect_err("too large"));
                println!("after\t0\t{}", pool.apply(|x: i64| x + 1, 1)?);
                println!("same-worker\t0\t{}", pool.worker_pids() == pids);
                Ok(())
            }
            ["replace-often", rounds, items] => {
                let (rounds, items): (usize, i64) = (rounds.parse().expect("rounds"), items.parse().expect("items"));
                let pool = Pool::builder().workers(2).max_tasks_per_worker(Some(1)).build()?;
                for round in 0..rounds {
                    let results = pool.chunksize(1).map(|x: i64| x + 1, 0..items)?;
                    assert_eq!(results, (1..=items).collect::<Vec<_>>());
                    let maps = std::fs::read_to_string("/proc/self/maps").expect("own mappings");
                    println!("maps\t{round}\t{}", maps.lines().count());
                }
                Ok(())
            }
            _ => panic!(
                "usage: own-functions [init DIR | init-fails | replace-self | nested | callback-panics | too-large | replace-often ROUNDS ITEMS]"
            ),
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("own-functions: {error}");
            ExitCode::FAILURE
        }
    }
}
