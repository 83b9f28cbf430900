//! The opening exchange: version check and mutual proof of the run's secret, in one
//! message each way.
//!
//! The coordinator hands every worker it starts, over a pipe only that child can read,
//! the run's secret and a [`Challenge`] made for that start alone ([`Credentials`]). The
//! worker's first frame carries its proof over that challenge, so the coordinator can
//! admit it as soon as the frame arrives, without a round trip of its own; its answer
//! carries its proof over the worker's nonce. The first frame's body starts with
//! [`MAGIC`] and the protocol version as raw bytes, ahead of anything the codec encodes,
//! so that a peer of any other version is refused with a clear error instead of a
//! decoding failure. Proofs are HMAC-SHA256 with a label per role, so that a proof cannot
//! be reflected back; they are compared in constant time.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    PROTOCOL_VERSION, codec,
    frame::{FrameError, HANDSHAKE_FRAME_LEN, read_frame, write_frame},
};

/// First bytes of every connection's first frame.
pub const MAGIC: [u8; 4] = *b"CPL\0";

/// Bytes of a secret, a challenge, a nonce and a proof.
pub const NONCE_LEN: usize = 32;

/// A run's shared secret, known to the coordinator and the workers it started.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; NONCE_LEN]);

/// A one-time random value that a worker must prove the secret over: one per worker
/// start, so that a proof seen once is worth nothing afterwards.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Challenge([u8; NONCE_LEN]);

impl Secret {
    /// Makes a fresh random secret from the operating system's generator.
    pub fn generate() -> std::io::Result<Self> {
        random_bytes().map(Self)
    }
}

impl Challenge {
    /// Makes a fresh random challenge from the operating system's generator.
    pub fn generate() -> std::io::Result<Self> {
        random_bytes().map(Self)
    }
}

fn random_bytes() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut bytes = [0u8; NONCE_LEN];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes)
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenge(..)")
    }
}

/// What a coordinator hands a worker it starts, over a private pipe (never the command
/// line, where `ps` shows it): the run's secret and the challenge made for this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The run's secret.
    pub secret: Secret,
    /// The challenge the worker answers in its first frame.
    pub challenge: Challenge,
}

impl Credentials {
    /// One line: the secret and the challenge as 64 lowercase hex digits each, a space
    /// between, and a newline.
    pub fn to_line(&self) -> String {
        format!("{} {}\n", hex(&self.secret.0), hex(&self.challenge.0))
    }

    /// Parses the line [`Credentials::to_line`] writes; surrounding white space is ignored.
    pub fn from_line(line: &str) -> Option<Self> {
        let (secret, challenge) = line.trim().split_once(' ')?;
        Some(Self { secret: Secret(unhex(secret)?), challenge: Challenge(unhex(challenge)?) })
    }
}

fn hex(bytes: &[u8; NONCE_LEN]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; NONCE_LEN]> {
    if text.len() != 2 * NONCE_LEN || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; NONCE_LEN];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

/// What a worker says of itself in its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The index the coordinator gave this worker when it started it.
    pub worker_index: u32,
    /// The worker's process id.
    pub pid: u32,
    /// The worker's challenge to the coordinator.
    pub nonce: [u8; NONCE_LEN],
    /// The worker's proof of the secret over the [`Challenge`] it was started with.
    pub proof: [u8; NONCE_LEN],
}

#[derive(Debug, Serialize, Deserialize)]
enum Admission {
    Welcome { proof: [u8; NONCE_LEN] },
    Refused { reason: String },
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer closed the connection before the handshake finished.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The first frame does not start with [`MAGIC`]: not a corepool peer.
    #[error("peer is not a corepool peer (bad magic bytes)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
    /// The peer's proof of the secret is wrong.
    #[error("peer failed authentication")]
    BadProof,
    /// The peer claims to be a worker that the coordinator did not start, or not now.
    #[error("peer claims to be worker {worker_index} (pid {pid}), which this pool is not waiting for")]
    Unexpected {
        /// The index it claims.
        worker_index: u32,
        /// The process id it claims.
        pid: u32,
    },
    /// The coordinator refused this worker.
    #[error("refused by the coordinator: {0}")]
    Refused(String),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame's body is malformed.
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
}

#[derive(Clone, Copy)]
enum Role {
    Coordinator,
    Worker,
}

fn mac(secret: &Secret, role: Role, nonce: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes keys of any length");
    mac.update(match role {
        Role::Coordinator => b"corepool coordinator proof\0",
        Role::Worker => b"corepool worker proof\0\0\0\0\0\0",
    });
    mac.update(nonce);
    mac
}

fn prove(secret: &Secret, role: Role, nonce: &[u8; NONCE_LEN]) -> [u8; NONCE_LEN] {
    mac(secret, role, nonce).finalize().into_bytes().into()
}

fn verify(secret: &Secret, role: Role, nonce: &[u8; NONCE_LEN], proof: &[u8]) -> Result<(), HandshakeError> {
    mac(secret, role, nonce).verify_slice(proof).map_err(|_| HandshakeError::BadProof)
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], HandshakeError> {
    random_bytes().map_err(|e| HandshakeError::Frame(FrameError::Io(e)))
}

fn read_handshake_frame(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), HandshakeError> {
    if read_frame(reader, buf, HANDSHAKE_FRAME_LEN)? { Ok(()) } else { Err(HandshakeError::Closed) }
}

fn send(writer: &mut impl Write, body: &[u8]) -> Result<(), HandshakeError> {
    write_frame(writer, body)?;
    writer.flush().map_err(FrameError::Io)?;
    Ok(())
}

/// The worker's side: announce itself with its proof over its challenge, then check the
/// coordinator's proof over its own nonce.
pub fn worker_handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    credentials: &Credentials,
    worker_index: u32,
    pid: u32,
) -> Result<(), HandshakeError> {
    let nonce = fresh_nonce()?;
    let proof = prove(&credentials.secret, Role::Worker, &credentials.challenge.0);
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    codec::encode_into(&Hello { worker_index, pid, nonce, proof }, &mut body)?;
    if let Err(error) = send(writer, &body) {
        // A coordinator turns a stranger away before it reads a word, and may have hung up
        // before the hello went out: its reason is still there to read.
        let refusal = read_handshake_frame(reader, &mut body).ok().and_then(|()| codec::decode(&body).ok());
        return match refusal {
            Some(Admission::Refused { reason }) => Err(HandshakeError::Refused(reason)),
            _ => Err(error),
        };
    }

    read_handshake_frame(reader, &mut body)?;
    match codec::decode::<Admission>(&body)? {
        Admission::Refused { reason } => Err(HandshakeError::Refused(reason)),
        Admission::Welcome { proof } => verify(&credentials.secret, Role::Coordinator, &nonce, &proof),
    }
}

/// The coordinator's side: check the version, check the worker's proof over the
/// challenge that `challenge_for` says the claimed worker was started with, and answer
/// with its own proof. The worker is admitted when this returns its [`Hello`].
///
/// A peer of another version, one that `challenge_for` does not expect (`None`), or one
/// whose proof is wrong is sent a refusal that says why before the error is returned.
pub fn coordinator_handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    secret: &Secret,
    challenge_for: impl FnOnce(&Hello) -> Option<Challenge>,
) -> Result<Hello, HandshakeError> {
    let mut body = Vec::new();
    read_handshake_frame(reader, &mut body)?;
    if body.len() < 8 || body[..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let theirs = u32::from_le_bytes(body[4..8].try_into().expect("slice of four bytes"));
    if theirs != PROTOCOL_VERSION {
        let reason = format!("coordinator speaks protocol version {PROTOCOL_VERSION}, worker speaks {theirs}");
        refuse(writer, &reason);
        return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    }
    let hello: Hello = codec::decode(&body[8..])?;
    let Some(challenge) = challenge_for(&hello) else {
        refuse(writer, &format!("no worker {} with this process id was started", hello.worker_index));
        return Err(HandshakeError::Unexpected { worker_index: hello.worker_index, pid: hello.pid });
    };
    if verify(secret, Role::Worker, &challenge.0, &hello.proof).is_err() {
        refuse(writer, "wrong proof of the run's secret");
        return Err(HandshakeError::BadProof);
    }
    let proof = prove(secret, Role::Coordinator, &hello.nonce);
    send(writer, &codec::encode(&Admission::Welcome { proof })?)?;
    Ok(hello)
}

/// Tells a peer that it is turned away, and why, in the frame a worker reads in answer to
/// its first. The peer is leaving anyway: a refusal that cannot be sent changes nothing.
pub fn refuse(writer: &mut impl Write, reason: &str) {
    if let Ok(body) = codec::encode(&Admission::Refused { reason: reason.to_owned() }) {
        let _ = send(writer, &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn credentials() -> Credentials {
        Credentials { secret: Secret::generate().unwrap(), challenge: Challenge::generate().unwrap() }
    }

    /// Runs both sides over a real socket pair: the worker with `worker`, the coordinator
    /// with `secret`, expecting the worker started with `expected` (`None`: no worker).
    fn run_pair(
        worker: Credentials,
        secret: Secret,
        expected: Option<Challenge>,
    ) -> (Result<(), HandshakeError>, Result<Hello, HandshakeError>) {
        let (a, b) = UnixStream::pair().unwrap();
        let worker = std::thread::spawn(move || {
            let result = worker_handshake(&mut &a, &mut &a, &worker, 3, 42);
            drop(a);
            result
        });
        let coordinator = coordinator_handshake(&mut &b, &mut &b, &secret, |hello| {
            assert_eq!((hello.worker_index, hello.pid), (3, 42));
            expected
        });
        drop(b);
        (worker.join().unwrap(), coordinator)
    }

    #[test]
    fn a_worker_with_the_secret_and_its_challenge_is_admitted() {
        let worker = credentials();
        let (secret, challenge) = (worker.secret.clone(), worker.challenge);
        let (worker, coordinator) = run_pair(worker, secret, Some(challenge));
        worker.unwrap();
        let hello = coordinator.unwrap();
        assert_eq!((hello.worker_index, hello.pid), (3, 42));
    }

    #[test]
    fn a_worker_with_another_secret_is_refused_and_told_why() {
        let worker = credentials();
        let challenge = worker.challenge;
        let (worker, coordinator) = run_pair(worker, Secret::generate().unwrap(), Some(challenge));
        assert!(matches!(coordinator, Err(HandshakeError::BadProof)), "{coordinator:?}");
        assert!(matches!(&worker, Err(HandshakeError::Refused(reason)) if reason.contains("proof")), "{worker:?}");
    }

    #[test]
    fn a_refusal_sent_before_the_hello_is_read_reaches_the_worker_even_after_a_hang_up() {
        let (a, mut b) = UnixStream::pair().unwrap();
        refuse(&mut b, "not a worker this pool started");
        drop(b);
        let worker = worker_handshake(&mut &a, &mut &a, &credentials(), 3, 42);
        assert!(
            matches!(&worker, Err(HandshakeError::Refused(reason)) if reason.contains("not a worker")),
            "{worker:?}"
        );
    }

    #[test]
    fn a_proof_over_another_challenge_is_refused() {
        let worker = credentials();
        let secret = worker.secret.clone();
        let (worker, coordinator) = run_pair(worker, secret, Some(Challenge::generate().unwrap()));
        assert!(matches!(coordinator, Err(HandshakeError::BadProof)), "{coordinator:?}");
        assert!(worker.is_err());
    }

    #[test]
    fn a_worker_nobody_waits_for_is_refused() {
        let worker = credentials();
        let secret = worker.secret.clone();
        let (worker, coordinator) = run_pair(worker, secret, None);
        assert!(matches!(coordinator, Err(HandshakeError::Unexpected { worker_index: 3, pid: 42 })), "{coordinator:?}");
        assert!(matches!(worker, Err(HandshakeError::Refused(_))), "{worker:?}");
    }

    #[test]
    fn a_coordinator_without_the_secret_is_not_trusted() {
        let worker = credentials();
        let (a, b) = UnixStream::pair().unwrap();
        let impostor = std::thread::spawn(move || {
            let mut body = Vec::new();
            read_frame(&mut &b, &mut body, HANDSHAKE_FRAME_LEN).unwrap();
            let hello: Hello = codec::decode(&body[8..]).unwrap();
            let proof = prove(&Secret::generate().unwrap(), Role::Coordinator, &hello.nonce);
            send(&mut &b, &codec::encode(&Admission::Welcome { proof }).unwrap()).unwrap();
        });
        let result = worker_handshake(&mut &a, &mut &a, &worker, 0, 1);
        impostor.join().unwrap();
        assert!(matches!(result, Err(HandshakeError::BadProof)), "{result:?}");
    }

    #[test]
    fn another_version_is_refused_with_both_versions_named() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut body = MAGIC.to_vec();
        body.extend(99u32.to_le_bytes());
        write_frame(&mut &a, &body).unwrap();
        let err = coordinator_handshake(&mut &b, &mut &b, &Secret::generate().unwrap(), |_| None).unwrap_err();
        assert!(matches!(err, HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 99 }));
        let mut reply = Vec::new();
        assert!(read_frame(&mut &a, &mut reply, HANDSHAKE_FRAME_LEN).unwrap());
        let Admission::Refused { reason } = codec::decode(&reply).unwrap() else { panic!("expected a refusal") };
        assert!(reason.contains("99"), "{reason}");
    }

    #[test]
    fn garbage_is_not_a_peer() {
        let (a, b) = UnixStream::pair().unwrap();
        write_frame(&mut &a, b"GET / HTTP/1.1").unwrap();
        let err = coordinator_handshake(&mut &b, &mut &b, &Secret::generate().unwrap(), |_| None).unwrap_err();
        assert!(matches!(err, HandshakeError::BadMagic), "{err}");
    }

    #[test]
    fn credentials_round_trip_through_their_line_and_junk_is_refused() {
        let sent = credentials();
        assert_eq!(Credentials::from_line(&sent.to_line()), Some(sent.clone()));
        let line = sent.to_line();
        assert_eq!(Credentials::from_line(line.split(' ').next().unwrap()), None, "a secret alone");
        assert_eq!(Credentials::from_line("zz zz"), None);
        assert_eq!(Credentials::from_line(&format!("{} {}", "g".repeat(64), "0".repeat(64))), None);
    }
}
