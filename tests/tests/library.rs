//! The library API used directly, with tasks of the tests' own, against real worker
//! processes (the `test-worker` binary).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use corepool::FailureKind;
use corepool::{Callbacks, Pool, PoolError};
use corepool_tests::{
    alive, children_of,
    tasks::{FailOn, Failure, SquarePlus},
};
use corepool_tutorial::tasks::{CountInRange, CountInRangeStar, NormalizeRows, normalize_row};
use corepool_tutorial::{Matrix, WithBounds};

fn pool(workers: usize) -> Pool {
    Pool::builder().workers(workers).worker_program(env!("CARGO_BIN_EXE_test-worker")).build().expect("pool starts")
}

fn slow_first_worker_pool(workers: usize, millis: u32) -> Pool {
    Pool::builder()
        .workers(workers)
        .worker_program(env!("CARGO_BIN_EXE_test-worker"))
        .env("COREPOOL_TEST_SLOW_WORKER", format!("0:{millis}"))
        .build()
        .expect("pool starts")
}

fn squares(items: &[i64], offset: i64) -> Vec<i64> {
    items.iter().map(|x| x * x + offset).collect()
}

#[test]
fn a_task_of_our_own_runs_in_every_method() {
    let items: Vec<i64> = (-500..700).collect();
    let expected = squares(&items, 3);
    let task = SquarePlus { offset: 3 };
    let mut pool = pool(3);
    assert_eq!(pool.map_task(&task, &items, Some(7)).unwrap(), expected);
    assert_eq!(pool.starmap_task(&task, &items, None).unwrap(), expected);
    assert_eq!(pool.imap_task(&task, &items, Some(5)).unwrap().collect::<Result<Vec<_>, _>>().unwrap(), expected);
    let mut unordered: Vec<(usize, i64)> =
        pool.imap_unordered_task(&task, &items, Some(11)).unwrap().collect::<Result<_, _>>().unwrap();
    unordered.sort_unstable();
    assert_eq!(unordered.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), expected);
    assert_eq!(pool.apply_task(&task, &items, 10).unwrap(), expected[10]);
    let handle = pool.map_async_task(task.clone(), items.clone(), Some(13), Callbacks::none()).unwrap();
    assert_eq!(handle.get(Some(Duration::from_secs(60))).unwrap(), expected);

    let collected = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..items.len())
        .map(|index| {
            let collected = Arc::clone(&collected);
            let callbacks = Callbacks::on_success(move |value: &i64| collected.lock().unwrap().push((index, *value)));
            pool.apply_async_task(&task, &items, index, callbacks).unwrap()
        })
        .collect();
    pool.close();
    pool.join();
    assert!(handles.iter().all(|handle| handle.successful() == Some(true)));
    let mut collected = std::mem::take(&mut *collected.lock().unwrap());
    collected.sort_unstable();
    assert_eq!(collected.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), expected);
}

#[test]
fn map_async_runs_its_callbacks_on_the_callback_thread_and_completes_an_empty_job() {
    let items: Vec<i64> = (0..1_000).collect();
    let pool = pool(2);
    // A few chunks (all submitted on this thread) and many (the rest from a thread of
    // their own, once the queue is full).
    for chunk_size in [300, 7] {
        let seen = Arc::new(Mutex::new(None));
        let seen_in = Arc::clone(&seen);
        let callbacks = Callbacks::on_success(move |outputs: &Vec<i64>| {
            let thread = std::thread::current().name().map(str::to_owned);
            *seen_in.lock().unwrap() = Some((outputs.clone(), thread));
        });
        let handle = pool.map_async_task(SquarePlus { offset: 1 }, items.clone(), Some(chunk_size), callbacks).unwrap();
        assert_eq!(handle.get(Some(Duration::from_secs(60))).unwrap(), squares(&items, 1));
        let (outputs, thread) = seen.lock().unwrap().take().expect("the callback ran before the result was ready");
        assert_eq!(outputs, squares(&items, 1), "chunks of {chunk_size}");
        assert_eq!(thread.as_deref(), Some("corepool-callbacks"), "chunks of {chunk_size}");
    }

    let outcome = Arc::new(Mutex::new(Vec::new()));
    let (on_success, on_error) = (Arc::clone(&outcome), Arc::clone(&outcome));
    let callbacks = Callbacks::on_success(move |_: &Vec<i64>| on_success.lock().unwrap().push("success".to_owned()))
        .or_on_error(move |error| on_error.lock().unwrap().push(error.to_string()));
    let task = FailOn { bad: 517, how: Failure::Panic };
    let handle = pool.map_async_task(task, items.clone(), Some(50), callbacks).unwrap();
    assert!(matches!(handle.get(Some(Duration::from_secs(60))), Err(PoolError::Task { .. })));
    let outcome = outcome.lock().unwrap();
    assert_eq!(outcome.len(), 1, "one callback, once: {outcome:?}");
    assert!(outcome[0].contains("500..550"), "the error names the failed chunk's rows: {}", outcome[0]);

    let handle = pool.map_async_task(SquarePlus { offset: 1 }, Vec::<i64>::new(), None, Callbacks::none()).unwrap();
    assert_eq!(handle.get(Some(Duration::from_secs(60))).unwrap(), Vec::<i64>::new());
}

#[test]
fn imap_hands_out_whole_chunks_and_the_rest_of_one_begun_item_by_item() {
    let items: Vec<i64> = (0..1_000).collect();
    let expected = squares(&items, 2);
    let task = SquarePlus { offset: 2 };
    let pool = pool(2);

    let mut ordered = pool.imap_task(&task, &items, Some(64)).unwrap();
    let taken: Vec<i64> = ordered.by_ref().take(10).map(Result::unwrap).collect();
    let mut all = taken.clone();
    let mut firsts = Vec::new();
    while let Some(chunk) = ordered.next_chunk() {
        let (first, outputs) = chunk.unwrap();
        assert_eq!(first, all.len(), "chunks come in item order");
        firsts.push(first);
        all.extend(outputs);
    }
    assert_eq!(all, expected);
    assert_eq!(firsts[..3], [10, 64, 128], "the rest of the chunk begun, then whole chunks");

    let mut unordered = pool.imap_unordered_task(&task, &items, Some(64)).unwrap();
    let mut got = vec![None; items.len()];
    let (index, output) = unordered.next().unwrap().unwrap();
    got[index] = Some(output);
    while let Some(chunk) = unordered.next_chunk() {
        let (first, outputs) = chunk.unwrap();
        for (index, output) in (first..).zip(outputs) {
            assert!(got[index].replace(output).is_none(), "item {index} came twice");
        }
    }
    assert_eq!(got.into_iter().map(Option::unwrap).collect::<Vec<_>>(), expected);

    let failing = FailOn { bad: 517, how: Failure::Panic };
    let mut ordered = pool.imap_task(&failing, &items, Some(64)).unwrap();
    let good: usize = std::iter::from_fn(|| ordered.next_chunk()).map_while(Result::ok).map(|(_, o)| o.len()).sum();
    assert_eq!(good, 512, "the chunks before the failed one come out first");
    assert!(ordered.next_chunk().is_none(), "the iterator ends after its error");
}

#[test]
fn a_large_result_is_exact_and_a_failure_still_returns() {
    // 1,100,000 outputs of 8 bytes: a result in memory of its own (mapped apart from the heap).
    let items: Vec<i64> = (0..1_100_000).collect();
    let pool = pool(2);
    let outputs = pool.map_task(&SquarePlus { offset: 1 }, &items, Some(65_536)).unwrap();
    assert_eq!(outputs, squares(&items, 1));
    let handle = pool.map_async_task(SquarePlus { offset: 1 }, items.clone(), Some(65_536), Callbacks::none()).unwrap();
    assert_eq!(handle.get(Some(Duration::from_secs(60))).unwrap(), squares(&items, 1));
    let error = pool.map_task(&FailOn { bad: 700_000, how: Failure::Error }, &items, Some(65_536)).unwrap_err();
    assert!(matches!(error, PoolError::Task { .. }), "{error}");
}

#[test]
fn built_in_tasks_count_and_normalize_through_the_library() {
    let matrix = Arc::new(Matrix::random(5_000, 7, -3, 40, 5));
    let expected: Vec<u32> =
        matrix.iter_rows().map(|row| row.iter().filter(|&&v| (4..=8).contains(&v)).count() as u32).collect();
    let pool = pool(2);
    assert_eq!(pool.map_task(&CountInRange { min: 4, max: 8 }, &*matrix, None).unwrap(), expected);
    let bounded = WithBounds { matrix: Arc::clone(&matrix), min: 4, max: 8 };
    assert_eq!(pool.starmap_task(&CountInRangeStar, &bounded, Some(333)).unwrap(), expected);
    let handle = pool.starmap_async_task(CountInRangeStar, bounded, None, Callbacks::none()).unwrap();
    assert_eq!(handle.get(Some(Duration::from_secs(60))).unwrap(), expected);

    let normalized = pool.map_task(&NormalizeRows, &*matrix, Some(100)).unwrap();
    let expected: Vec<Vec<f64>> = matrix.iter_rows().map(|row| normalize_row(&row)).collect();
    assert_eq!(normalized, expected);
    assert!(normalized.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn workers_are_separate_child_processes_and_are_reaped_on_drop() {
    let pool = pool(3);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    let children = children_of(std::process::id());
    for (index, pid) in pids.iter().enumerate() {
        let name = children.iter().find(|(child, _)| child == pid).map(|(_, name)| name.clone());
        assert_eq!(name.as_deref(), Some(format!("corepool-w{index}").as_str()), "worker {index} is our child");
        assert_ne!(*pid, std::process::id());
    }
    let socket_dir = pool.socket_dir().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the socket directory is private");
    drop(pool);
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its pool");
    }
    assert!(!socket_dir.exists(), "the socket directory is removed");
}

#[test]
fn async_results_really_arrive_out_of_order_when_one_worker_is_slow() {
    let items: Vec<i64> = (0..40).collect();
    let task = SquarePlus { offset: 0 };
    let pool = slow_first_worker_pool(2, 25);
    let order: Vec<usize> =
        pool.imap_unordered_task(&task, &items, Some(1)).unwrap().map(|result| result.unwrap().0).collect();
    assert!(order.windows(2).any(|pair| pair[0] > pair[1]), "imap_unordered gave submission order: {order:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..items.len()).collect::<Vec<_>>());

    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..items.len())
        .map(|index| {
            let arrivals = Arc::clone(&arrivals);
            pool.apply_async_task(
                &task,
                &items,
                index,
                Callbacks::on_success(move |_| arrivals.lock().unwrap().push(index)),
            )
            .unwrap()
        })
        .collect();
    for handle in handles {
        handle.get(Some(Duration::from_secs(60))).unwrap();
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(
        arrivals.windows(2).any(|pair| pair[0] > pair[1]),
        "apply_async callbacks in submission order: {arrivals:?}"
    );

    // The ordered methods put the same uneven arrivals back in order.
    assert_eq!(
        pool.imap_task(&task, &items, Some(1)).unwrap().collect::<Result<Vec<_>, _>>().unwrap(),
        squares(&items, 0)
    );
}

#[test]
fn a_task_error_comes_back_as_data_and_the_worker_lives_on() {
    let items: Vec<i64> = (0..100).collect();
    let pool = pool(2);
    let pids = pool.worker_pids();
    let error = pool.map_task(&FailOn { bad: 42, how: Failure::Error }, &items, Some(10)).unwrap_err();
    let PoolError::Task { rows, failure } = error else { panic!("expected a task error, got {error}") };
    assert_eq!((rows, failure.kind), (40..50, FailureKind::Error));
    assert!(failure.message.contains("item 42 is bad"), "{}", failure.message);

    let error = pool.map_task(&FailOn { bad: 7, how: Failure::Panic }, &items, Some(10)).unwrap_err();
    let PoolError::Task { rows, failure } = error else { panic!("expected a panic report, got {error}") };
    assert_eq!((rows, failure.kind), (0..10, FailureKind::Panic));
    assert!(failure.location.as_deref().is_some_and(|at| at.contains("lib.rs")), "{failure:?}");

    assert_eq!(pool.worker_pids(), pids, "no worker died for a failed task");
    assert_eq!(pool.map_task(&SquarePlus { offset: 1 }, &items, None).unwrap(), squares(&items, 1));
}

#[test]
fn error_callback_receives_a_failed_apply_async() {
    let items: Vec<i64> = (0..4).collect();
    let pool = pool(1);
    let seen = Arc::new(Mutex::new(None));
    let callbacks = Callbacks::on_success(|_: &i64| panic!("must not succeed")).or_on_error({
        let seen = Arc::clone(&seen);
        move |error: &PoolError| *seen.lock().unwrap() = Some(error.to_string())
    });
    let handle = pool.apply_async_task(&FailOn { bad: 2, how: Failure::Error }, &items, 2, callbacks).unwrap();
    assert!(handle.wait(Some(Duration::from_secs(60))));
    assert_eq!(handle.successful(), Some(false));
    assert!(seen.lock().unwrap().as_deref().is_some_and(|text| text.contains("item 2 is bad")));

    // One callback for both outcomes, the handles dropped at once: every call still ends
    // in its callback.
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    for index in 0..items.len() {
        let outcomes = Arc::clone(&outcomes);
        let callbacks = Callbacks::on_result(move |result: Result<&i64, &PoolError>| {
            outcomes.lock().unwrap().push((index, result.copied().map_err(|_| ())));
        });
        drop(pool.apply_async_task(&FailOn { bad: 2, how: Failure::Error }, &items, index, callbacks).unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while outcomes.lock().unwrap().len() < items.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    outcomes.sort_unstable();
    assert_eq!(outcomes, [(0, Ok(0)), (1, Ok(1)), (2, Err(())), (3, Ok(3))]);
}

#[test]
fn a_chunk_that_kills_its_worker_fails_after_the_retries_and_the_pool_recovers() {
    let items: Vec<i64> = (0..60).collect();
    let pool =
        Pool::builder().workers(2).worker_program(env!("CARGO_BIN_EXE_test-worker")).max_retries(2).build().unwrap();
    let error = pool.map_task(&FailOn { bad: 33, how: Failure::Exit }, &items, Some(10)).unwrap_err();
    let PoolError::WorkerDied { rows, attempts, death } = error else { panic!("expected a dead worker, got {error}") };
    assert_eq!((rows, attempts), (30..40, 2));
    assert!(death.contains("exited with code 7"), "{death}");
    // Two deaths charged to the chunk; one more if the first death was ambiguous (the
    // worker also held another chunk, so neither was charged and both were sent alone).
    let restarts: u64 = pool.worker_stats().iter().map(|w| w.restarts).sum();
    assert!((2..=3).contains(&restarts), "{restarts} restarts");
    // Replacements joined, and the pool still gives exact results.
    assert_eq!(pool.map_task(&SquarePlus { offset: 0 }, &items, Some(3)).unwrap(), squares(&items, 0));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.worker_pids().len(), 2, "the last replacement starts too");
}

#[test]
fn terminate_fails_outstanding_work_and_leaves_no_worker() {
    let items: Vec<i64> = (0..50).collect();
    let mut pool = slow_first_worker_pool(2, 200);
    let pids = pool.worker_pids();
    let handle = pool.map_async_task(SquarePlus { offset: 0 }, items, Some(1), Callbacks::none()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    pool.terminate();
    assert!(matches!(handle.get(Some(Duration::from_secs(10))), Err(PoolError::Terminated)));
    assert!(pids.iter().all(|&pid| !alive(pid)));
    assert!(matches!(pool.map_task(&SquarePlus { offset: 0 }, &[1i64][..], None), Err(PoolError::Closed)));
}

#[test]
fn index_out_of_range_is_an_error_not_a_panic() {
    let pool = pool(1);
    let error = pool.apply_task(&SquarePlus { offset: 0 }, &[1i64, 2][..], 2).unwrap_err();
    assert!(matches!(error, PoolError::IndexOutOfRange { index: 2, len: 2 }));
}

#[test]
fn workers_killed_during_shutdown_do_not_hang_join() {
    let items: Vec<i64> = (0..100).collect();
    let mut pool = pool(3);
    assert_eq!(pool.map_task(&SquarePlus { offset: 0 }, &items, None).unwrap(), squares(&items, 0));
    let pids = pool.worker_pids();
    pool.close();
    for &pid in &pids {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let started = std::time::Instant::now();
    pool.join();
    assert!(started.elapsed() < Duration::from_secs(5), "join took {:?}", started.elapsed());
    assert!(pids.iter().all(|&pid| !alive(pid)));
    assert!(pool.worker_pids().is_empty(), "replacements started meanwhile are stopped too");
}

#[test]
fn panics_and_exits_in_a_task_reach_the_caller_through_every_method() {
    let items: Vec<i64> = (0..30).collect();
    let pool =
        Pool::builder().workers(2).worker_program(env!("CARGO_BIN_EXE_test-worker")).max_retries(2).build().unwrap();
    for (how, expect_panic) in [(Failure::Panic, true), (Failure::Exit, false)] {
        let task = FailOn { bad: 17, how };
        let check = |method: &str, error: PoolError| match (&error, expect_panic) {
            (PoolError::Task { failure, .. }, true) => assert_eq!(failure.kind, FailureKind::Panic, "{method}"),
            (PoolError::WorkerDied { death, .. }, false) => {
                assert!(death.contains("exited with code 7"), "{method}: {death}")
            }
            _ => panic!("{method}: unexpected {error}"),
        };
        check("map", pool.map_task(&task, &items, Some(5)).unwrap_err());
        check("imap", pool.imap_task(&task, &items, Some(5)).unwrap().find_map(Result::err).unwrap());
        check(
            "imap_unordered",
            pool.imap_unordered_task(&task, &items, Some(5)).unwrap().find_map(Result::err).unwrap(),
        );
        check("apply", pool.apply_task(&task, &items, 17).unwrap_err());
        let handle = pool.apply_async_task(&task, &items, 17, Callbacks::none()).unwrap();
        check("apply_async", handle.get(Some(Duration::from_secs(60))).unwrap_err());
        let handle = pool.map_async_task(task.clone(), items.clone(), Some(5), Callbacks::none()).unwrap();
        check("map_async", handle.get(Some(Duration::from_secs(60))).unwrap_err());
        // Items before the bad one still come back from the ordered stream.
        let good: Vec<i64> = pool.imap_task(&task, &items, Some(5)).unwrap().map_while(Result::ok).collect();
        assert_eq!(good, (0..15).collect::<Vec<_>>());
    }
}

#[test]
fn a_call_that_kills_its_worker_fails_alone_though_it_rode_in_a_batch() {
    let items: Vec<i64> = (0..3_000).collect();
    // Worker 0 is slow, so that calls pile up into batches behind it.
    let pool = Pool::builder()
        .workers(2)
        .worker_program(env!("CARGO_BIN_EXE_test-worker"))
        .env("COREPOOL_TEST_SLOW_WORKER", "0:20")
        .build()
        .unwrap();
    let task = FailOn { bad: 1_717, how: Failure::Exit };
    let handles: Vec<_> =
        (0..items.len()).map(|index| pool.apply_async_task(&task, &items, index, Callbacks::none()).unwrap()).collect();
    for (index, handle) in handles.into_iter().enumerate() {
        match handle.get(Some(Duration::from_secs(60))) {
            Ok(value) => assert_eq!(value, items[index]),
            Err(PoolError::WorkerDied { rows, death, .. }) => {
                assert_eq!(index, 1_717, "an innocent call failed: {death}");
                assert_eq!(rows, 1_717..1_718);
            }
            Err(error) => panic!("item {index}: {error}"),
        }
    }
    let restarts: u64 = pool.worker_stats().iter().map(|w| w.restarts).sum();
    assert!(restarts >= 3, "the culprit was retried until it failed ({restarts} restarts)");
}

/// Kills worker `pid` and waits until the pool has replaced it.
fn kill_and_await_replacement(pool: &Pool, pid: u32) {
    // SAFETY: kill has no memory effects; a pid that has gone just makes it fail.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.worker_pids().contains(&pid) || pool.worker_pids().len() < pool.workers() {
        assert!(std::time::Instant::now() < deadline, "worker {pid} was not replaced: {:?}", pool.worker_pids());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_worker_that_dies_while_idle_is_replaced_and_apply_goes_on() {
    // `apply` reads its answer on the caller's thread when the worker has nothing else in
    // flight, so nobody reads an idle worker's connection: its death must still be seen.
    let items: Vec<i64> = (0..200).collect();
    let task = SquarePlus { offset: 1 };
    let pool = pool(2);
    for round in 0..4 {
        for index in 0..items.len() {
            assert_eq!(
                pool.apply_task(&task, &items, index).unwrap(),
                items[index] * items[index] + 1,
                "round {round}"
            );
        }
        let victim = pool.worker_pids()[round % 2];
        kill_and_await_replacement(&pool, victim);
    }
    let restarts: u64 = pool.worker_stats().iter().map(|w| w.restarts).sum();
    assert_eq!(restarts, 4);
}

#[test]
fn apply_whose_worker_dies_mid_call_is_answered_by_another() {
    let items: Vec<i64> = (0..50).collect();
    let pool = pool(2);
    // Each call of row 7 kills the worker that takes it, until the retries run out; every
    // other row is answered, whichever worker's connection the caller was reading.
    let task = FailOn { bad: 7, how: Failure::Exit };
    for (index, &item) in items.iter().enumerate() {
        match pool.apply_task(&task, &items, index) {
            Ok(value) => assert_eq!(value, item, "row {index}"),
            Err(PoolError::WorkerDied { rows, .. }) => assert_eq!((index, rows), (7, 7..8)),
            Err(error) => panic!("row {index}: {error}"),
        }
    }
}

#[test]
fn bursts_of_apply_async_calls_all_finish_however_their_batches_interleave() {
    // Short bursts leave workers idle between them, so batches are sealed by the caller,
    // by a worker's reader waiting for one to fill, or by one that waited for another:
    // every call of every burst must still be answered.
    let items: Vec<i64> = (0..64).collect();
    let task = SquarePlus { offset: 2 };
    let pool = pool(3);
    for burst in 0..300 {
        let calls = 1 + burst % 64;
        let handles: Vec<_> =
            (0..calls).map(|index| pool.apply_async_task(&task, &items, index, Callbacks::none()).unwrap()).collect();
        for (index, handle) in handles.into_iter().enumerate() {
            let value = handle.get(Some(Duration::from_secs(20)));
            assert_eq!(value.unwrap(), items[index] * items[index] + 2, "burst {burst}, call {index}");
        }
    }
}
