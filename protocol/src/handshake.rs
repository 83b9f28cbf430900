//! The opening exchange: version check and mutual proof of the run's secret.
//!
//! The first frame's body starts with [`MAGIC`] and the protocol version as raw bytes,
//! ahead of anything the codec encodes, so that a peer of any other version is refused
//! with a clear error instead of a decoding failure. Proofs are HMAC-SHA256 over the
//! other side's random nonce, with a label per role so that a proof cannot be reflected
//! back; they are compared in constant time.

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

/// Bytes of random challenge and of a proof.
pub const NONCE_LEN: usize = 32;

/// A run's shared secret, known to the coordinator and the workers it started.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Makes a fresh random secret from the operating system's generator.
    pub fn generate() -> std::io::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        Ok(Self(bytes))
    }

    /// The secret as 64 lowercase hex digits, to hand to a worker over a private pipe.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the form [`Secret::to_hex`] writes; surrounding white space is ignored.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
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
}

#[derive(Debug, Serialize, Deserialize)]
enum Admission {
    Welcome { nonce: [u8; NONCE_LEN], proof: [u8; NONCE_LEN] },
    Refused { reason: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    proof: [u8; NONCE_LEN],
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
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| FrameError::Io(std::io::Error::other(e)))?;
    Ok(nonce)
}

fn read_handshake_frame(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), HandshakeError> {
    if read_frame(reader, buf, HANDSHAKE_FRAME_LEN)? { Ok(()) } else { Err(HandshakeError::Closed) }
}

fn send(writer: &mut impl Write, body: &[u8]) -> Result<(), HandshakeError> {
    write_frame(writer, body)?;
    writer.flush().map_err(FrameError::Io)?;
    Ok(())
}

/// The worker's side: announce itself, check the coordinator's proof, prove its own.
pub fn worker_handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    secret: &Secret,
    worker_index: u32,
    pid: u32,
) -> Result<(), HandshakeError> {
    let nonce = fresh_nonce()?;
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&MAGIC);
    body.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    codec::encode_into(&Hello { worker_index, pid, nonce }, &mut body)?;
    send(writer, &body)?;

    read_handshake_frame(reader, &mut body)?;
    match codec::decode::<Admission>(&body)? {
        Admission::Refused { reason } => Err(HandshakeError::Refused(reason)),
        Admission::Welcome { nonce: challenge, proof } => {
            verify(secret, Role::Coordinator, &nonce, &proof)?;
            send(writer, &codec::encode(&Proof { proof: prove(secret, Role::Worker, &challenge) })?)
        }
    }
}

/// The coordinator's side: check the version, prove the secret, check the worker's proof.
///
/// A peer of another version is sent a refusal naming both versions before the error is
/// returned, so that it can say why it was turned away.
pub fn coordinator_handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    secret: &Secret,
) -> Result<Hello, HandshakeError> {
    let mut body = Vec::new();
    read_handshake_frame(reader, &mut body)?;
    if body.len() < 8 || body[..4] != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
    let theirs = u32::from_le_bytes(body[4..8].try_into().expect("slice of four bytes"));
    if theirs != PROTOCOL_VERSION {
        let reason = format!("coordinator speaks protocol version {PROTOCOL_VERSION}, worker speaks {theirs}");
        // The peer is leaving anyway; a failed refusal changes nothing.
        let _ = send(writer, &codec::encode(&Admission::Refused { reason })?);
        return Err(HandshakeError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    }
    let hello: Hello = codec::decode(&body[8..])?;

    let challenge = fresh_nonce()?;
    let proof = prove(secret, Role::Coordinator, &hello.nonce);
    send(writer, &codec::encode(&Admission::Welcome { nonce: challenge, proof })?)?;

    read_handshake_frame(reader, &mut body)?;
    let answer: Proof = codec::decode(&body)?;
    verify(secret, Role::Worker, &challenge, &answer.proof)?;
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn run_pair(
        worker_secret: Secret,
        coordinator_secret: Secret,
    ) -> (Result<(), HandshakeError>, Result<Hello, HandshakeError>) {
        let (a, b) = UnixStream::pair().unwrap();
        let worker = std::thread::spawn(move || {
            let result = worker_handshake(&mut &a, &mut &a, &worker_secret, 3, 42);
            drop(a);
            result
        });
        let coordinator = coordinator_handshake(&mut &b, &mut &b, &coordinator_secret);
        drop(b);
        (worker.join().unwrap(), coordinator)
    }

    #[test]
    fn peers_with_the_same_secret_are_admitted() {
        let secret = Secret::generate().unwrap();
        let (worker, coordinator) = run_pair(secret.clone(), secret);
        worker.unwrap();
        let hello = coordinator.unwrap();
        assert_eq!((hello.worker_index, hello.pid), (3, 42));
    }

    #[test]
    fn a_worker_with_another_secret_is_rejected_on_both_sides() {
        let (worker, coordinator) = run_pair(Secret::generate().unwrap(), Secret::generate().unwrap());
        assert!(matches!(worker, Err(HandshakeError::BadProof)), "{worker:?}");
        assert!(coordinator.is_err());
    }

    #[test]
    fn another_version_is_refused_with_both_versions_named() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut body = MAGIC.to_vec();
        body.extend(99u32.to_le_bytes());
        write_frame(&mut &a, &body).unwrap();
        let err = coordinator_handshake(&mut &b, &mut &b, &Secret::generate().unwrap()).unwrap_err();
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
        let err = coordinator_handshake(&mut &b, &mut &b, &Secret::generate().unwrap()).unwrap_err();
        assert!(matches!(err, HandshakeError::BadMagic), "{err}");
    }

    #[test]
    fn secret_hex_round_trips_and_rejects_junk() {
        let secret = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&format!("{}\n", secret.to_hex())), Some(secret));
        assert_eq!(Secret::from_hex("zz"), None);
        assert_eq!(Secret::from_hex(&"g".repeat(64)), None);
    }
}
