//! The wire format spoken between the corepool coordinator and its workers.
//!
//! This crate holds no process logic: only what travels on a connection and how.
//!
//! # Protocol
//!
//! Every message is one *frame*: a little-endian `u32` body length, then the body. The
//! length is checked against a limit before anything is allocated ([`frame`]). Bodies are
//! encoded by [`codec`], the one place that knows the encoding (bincode 2 through serde).
//!
//! A connection opens with a handshake ([`handshake`]):
//!
//! ```text
//! coordinator, starting a worker: its stdin pipe <- "k c"   the secret, and a challenge c
//!                                                           made for this start alone
//! worker                                            coordinator
//!   | -- Hello {magic, version, index, pid, nonce_w,     -> |  version checked first;
//!   |           proof_w = HMAC(k, c)}                       |  worker admitted
//!   | <- Welcome {proof_c = HMAC(k, nonce_w)}            -- |  or Refused {reason}
//! ```
//!
//! Both sides prove that they know the run's secret `k` before any task is sent, so a
//! stranger on the socket can neither take a task nor deliver a result. The challenge
//! travels with the secret, so the coordinator admits a worker on its first frame,
//! without waiting for another. After the
//! handshake the coordinator sends [`ToWorker`] messages and the worker answers with
//! [`ToCoordinator`] messages. Every task and every answer carries its [`TaskId`].
//!
//! # Transport
//!
//! [`transport`] is the only module that knows how bytes reach a worker (today, a local
//! socket at a filesystem path); everything else sees a [`transport::Link`] of a reader
//! and a writer.

pub mod batch;
pub mod codec;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod transport;

pub use message::{FailureKind, ResourceUsage, TaskFailure, TaskId, TaskRef, ToCoordinator, ToWorker};

/// Version of this protocol; a peer that speaks another one is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 4;
