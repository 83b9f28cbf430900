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

#[cfg(test)]
mod tests {
    use corepool_protocol::transport::Listener;

    use super::*;

    /// Both ends of a connection over a real socket, each as the supervisor sees it.
    fn connected() -> ((Receiver, Sender), (Receiver, Sender), tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Listener::bind(&path).unwrap();
        let near = Link::connect(&path).unwrap();
        let far = listener.accept().unwrap();
        (socket_connection(near), socket_connection(far), dir)
    }

    fn frame(body: &[u8]) -> Arc<Outgoing> {
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        Arc::new(Outgoing::encoded(bytes))
    }

    #[test]
    fn frames_arrive_whole_and_in_order_then_the_end_of_the_connection() {
        let ((mut receiver, sender), (far_receiver, mut far_sender), _dir) = connected();
        assert!(!receiver.input_waiting(Some(Duration::ZERO)), "nothing sent yet");
        far_sender.send(&[frame(b"one"), frame(b""), frame(&[7; 100_000])]).unwrap();
        assert!(receiver.input_waiting(Some(Duration::from_secs(5))));
        let mut got = Vec::new();
        assert!(receiver.receive(&mut got).unwrap());
        assert_eq!(got, b"one");
        assert!(receiver.holds_input(), "the rest came in the same read");
        assert!(receiver.receive(&mut got).unwrap());
        assert!(got.is_empty());
        assert!(receiver.receive(&mut got).unwrap());
        assert_eq!(got, vec![7; 100_000]);
        drop((far_receiver, far_sender, sender));
        assert!(receiver.input_waiting(Some(Duration::from_secs(5))), "the end is input too");
        assert!(!receiver.receive(&mut got).unwrap(), "the peer ended the connection");
    }

    #[test]
    fn a_frame_cut_short_is_a_failure_not_an_end() {
        let ((mut receiver, _sender), (far_receiver, far_sender), _dir) = connected();
        let mut writer = far_sender.writer.into_inner().unwrap();
        writer.write_all(&10u32.to_le_bytes()).unwrap();
        writer.write_all(b"abc").unwrap();
        drop((far_receiver, writer));
        assert!(receiver.receive(&mut Vec::new()).is_err());
    }

    #[test]
    fn sending_to_a_connection_whose_peer_is_gone_fails() {
        let ((receiver, sender), (_far_receiver, mut far_sender), _dir) = connected();
        drop((receiver, sender));
        let big = frame(&vec![0; 1 << 22]);
        assert!((0..8).any(|_| far_sender.send(std::slice::from_ref(&big)).is_err()));
    }
}
