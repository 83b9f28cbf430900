//! The seam between the supervisor and the engine that carries its frames to and from a
//! worker.
//!
//! Once a worker is admitted, the supervisor sees its connection only as a
//! [`FrameReceiver`] and a [`FrameSender`]: whole frames, in order, the connection's end,
//! and its failure. Unix sockets are the engine today ([`SocketReceiver`],
//! [`SocketSender`]); docs/architecture.md says how a message-based engine such as MPI,
//! where a frame is one message to or from a rank, fills the same two traits.

use std::{
    io::{self, BufReader, BufWriter, Write},
    sync::Arc,
    time::Duration,
};

use corepool_protocol::{
    frame::{FrameError, MAX_FRAME_LEN, read_frame},
    transport::{Link, LinkReader, LinkWriter},
};

use crate::outgoing::Outgoing;

/// The receiving side of one worker's connection, used by one thread at a time.
pub(crate) trait FrameReceiver: Send + 'static {
    /// Waits for the worker's next frame and puts it in `frame`, in place of what was
    /// there: `Ok(true)`, or `Ok(false)` once the worker has ended the connection. An error
    /// means the connection failed.
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError>;

    /// Whether input has already been taken in on this side, so that a receive starts
    /// without asking the engine.
    fn holds_input(&self) -> bool;

    /// Waits at most `timeout` (`None`: for as long as it takes) until a receive would
    /// not wait: a frame, the connection's end or its failure has arrived. True where the
    /// engine cannot tell.
    fn input_waiting(&self, timeout: Option<Duration>) -> bool;
}

/// The sending side of one worker's connection, used by one thread at a time.
pub(crate) trait FrameSender: Send + 'static {
    /// Sends `frames`, each whole and in order, and returns once all are on their way. An
    /// error means the connection failed.
    fn send(&mut self, frames: &[Arc<Outgoing>]) -> io::Result<()>;
}

/// The receiving side the supervisor holds: the one place that names the engine.
pub(crate) type Receiver = SocketReceiver;

/// The sending side the supervisor holds.
pub(crate) type Sender = SocketSender;

/// Turns an admitted worker's socket into the two sides of its connection.
pub(crate) fn socket_connection(link: Link) -> (Receiver, Sender) {
    let (reader, writer) = link.split();
    (SocketReceiver::new(reader), SocketSender::new(writer))
}

/// A Unix socket's receiving side: frames are read from the byte stream through a buffer.
pub(crate) struct SocketReceiver {
    reader: BufReader<LinkReader>,
}

impl SocketReceiver {
    /// Receives from `reader`.
    pub(crate) fn new(reader: LinkReader) -> Self {
        Self { reader: BufReader::with_capacity(1 << 16, reader) }
    }
}

impl FrameReceiver for SocketReceiver {
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
        read_frame(&mut self.reader, frame, MAX_FRAME_LEN)
    }

    fn holds_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    fn input_waiting(&self, timeout: Option<Duration>) -> bool {
        self.reader.get_ref().wait_readable(timeout).unwrap_or(true)
    }
}

/// A Unix socket's sending side: small frames gather in a buffer and go out in one write;
/// a large shared tail goes to the socket directly.
pub(crate) struct SocketSender {
    writer: BufWriter<LinkWriter>,
}

impl SocketSender {
    /// Sends on `writer`.
    pub(crate) fn new(writer: LinkWriter) -> Self {
        Self { writer: BufWriter::with_capacity(1 << 16, writer) }
    }
}

impl FrameSender for SocketSender {
    fn send(&mut self, frames: &[Arc<Outgoing>]) -> io::Result<()> {
        for frame in frames {
            frame.write_to(&mut self.writer)?;
        }
        self.writer.flush()
    }
}
