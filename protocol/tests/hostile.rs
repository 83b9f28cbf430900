//! Hostile bytes on the wire, in the spirit of a fuzzer: whatever arrives, reading frames
//! and decoding them gives a value or an error, never a panic, and never allocates more
//! than the frame limit. (cargo-fuzz needs a nightly compiler; this runs on stable, in CI.)

use corepool_protocol::{
    ToCoordinator, ToWorker, codec,
    frame::{HANDSHAKE_FRAME_LEN, MAX_FRAME_LEN, read_frame},
    handshake::{Challenge, Credentials, Secret, coordinator_handshake, worker_handshake},
};
use proptest::prelude::*;

/// Reads frames from `bytes` until the end or an error, decoding each as both directions.
fn swallow(bytes: &[u8], limit: u32) {
    let mut reader = bytes;
    let mut buf = Vec::new();
    while let Ok(true) = read_frame(&mut reader, &mut buf, limit) {
        assert!(buf.len() <= limit as usize);
        let _ = codec::decode_prefix::<ToWorker>(&buf);
        let _ = codec::decode_prefix::<ToCoordinator>(&buf);
    }
}

/// Frames with plausible prefixes and arbitrary bodies: what a fuzzer finds quickly.
fn framed_noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 0..64), any::<bool>(), any::<u32>()).prop_map(|(body, honest, lie)| {
            let len = if honest { body.len() as u32 } else { lie };
            let mut frame = len.to_le_bytes().to_vec();
            frame.extend(body);
            frame
        }),
        0..8,
    )
    .prop_map(|frames| frames.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        swallow(&bytes, MAX_FRAME_LEN);
        swallow(&bytes, HANDSHAKE_FRAME_LEN);
    }

    #[test]
    fn framed_noise_never_panics(bytes in framed_noise()) {
        swallow(&bytes, MAX_FRAME_LEN);
    }

    #[test]
    fn mutated_messages_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let message = ToWorker::Task {
            id: corepool_protocol::TaskId { job: 1, chunk: 2, first_row: 3 },
            task: "count-in-range".into(),
        };
        let mut bytes = codec::encode(&message).unwrap();
        bytes.extend(payload);
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] ^= value;
        }
        let _ = codec::decode_prefix::<ToWorker>(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// The coordinator's side of the handshake, fed anything, fails cleanly.
    #[test]
    fn handshake_fed_noise_fails_cleanly(bytes in framed_noise()) {
        let credentials = Credentials { secret: Secret::generate().unwrap(), challenge: Challenge::generate().unwrap() };
        let mut replies = Vec::new();
        let expected = |_: &_| Some(credentials.challenge);
        prop_assert!(coordinator_handshake(&mut bytes.as_slice(), &mut replies, &credentials.secret, expected).is_err());
        // And the worker's side, fed anything as the coordinator's answer.
        let mut sink = Vec::new();
        prop_assert!(worker_handshake(&mut bytes.as_slice(), &mut sink, &credentials, 0, 1).is_err());
    }
}
