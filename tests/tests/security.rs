//! Strangers on the socket: a peer without the secret, with a wrong one, or sending
//! garbage, is turned away and counted, and the run's results stay exact.

use std::{io::Write, os::unix::net::UnixStream, time::Duration};

use corepool::Pool;
use corepool_protocol::{
    frame::write_frame,
    handshake::{Challenge, Credentials, HandshakeError, Secret, worker_handshake},
};
use corepool_tests::tasks::SquarePlus;

#[test]
fn rogue_peers_are_rejected_and_results_stay_exact() {
    let items: Vec<i64> = (0..2_000).collect();
    let expected: Vec<i64> = items.iter().map(|x| x * x).collect();
    let pool = Pool::builder()
        .workers(2)
        .worker_program(env!("CARGO_BIN_EXE_test-worker"))
        .env("COREPOOL_TEST_SLOW_WORKER", "0:2")
        .build()
        .unwrap();
    let socket = pool.socket_dir().unwrap().join("pool.sock");
    let task = SquarePlus { offset: 0 };

    std::thread::scope(|scope| {
        let run = scope.spawn(|| pool.map_task(&task, &items, Some(10)));

        // A peer with a wrong secret, claiming to be worker 0: it is not a process the pool
        // started, so it is turned away, and told so, before anything it says is read.
        let stream = UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let wrong = Credentials { secret: Secret::generate().unwrap(), challenge: Challenge::generate().unwrap() };
        let result = worker_handshake(&mut &stream, &mut &stream, &wrong, 0, std::process::id());
        assert!(
            matches!(&result, Err(HandshakeError::Refused(reason)) if reason.contains("not a worker")),
            "{result:?}"
        );

        // Garbage, and a frame claiming 4 GiB.
        let mut garbage = UnixStream::connect(&socket).unwrap();
        let _ = garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut huge = UnixStream::connect(&socket).unwrap();
        let _ = huge.write_all(&u32::MAX.to_le_bytes());
        // A valid-looking first frame, then silence and a hang-up.
        let silent = UnixStream::connect(&socket).unwrap();
        let _ = write_frame(&mut &silent, b"CPL\0\x01\0\0\0");
        drop((garbage, huge, silent));

        assert_eq!(run.join().unwrap().unwrap(), expected);
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.rejected_peers() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.rejected_peers(), 4);
    assert_eq!(pool.worker_pids().len(), 2, "the real workers were not disturbed");
    assert_eq!(pool.map_task(&task, &items, None).unwrap(), expected);
}
