//! The Unix socket engine: workers started as child processes find the coordinator's
//! socket (in a private directory) through their environment, and prove themselves with
//! the run's secret, handed to them on standard input; the kernel vouches for each
//! peer's process id (`SO_PEERCRED`) before it is heard. Frames are read from and
//! written to each connection's byte stream.

use std::{
    ffi::OsString,
    io::{self, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use corepool_protocol::{
    frame::{FrameError, MAX_FRAME_LEN, read_frame},
    handshake::{Challenge, Credentials, Secret, coordinator_handshake, refuse},
    transport::{Link, LinkReader, LinkWriter, Listener},
};
use corepool_worker::serve::ENDPOINT_ENV;

use super::{Claim, FrameReceiver, FrameSender, Joined, Launch, Transport, Vouched};
use crate::{
    outgoing::Outgoing,
    pool::{
        PoolError,
        socket_dir::{SOCKET_NAME, SocketDir, sweep_dead_runs},
    },
};

/// How long a peer this pool started may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Unix socket engine of one pool: its private directory, the socket listening in it,
/// and the run's secret.
pub(crate) struct SocketEngine {
    listener: Listener,
    endpoint: PathBuf,
    secret: Secret,
    /// Removed when the pool stops.
    dir: Mutex<Option<SocketDir>>,
}

impl SocketEngine {
    /// Makes the pool's private directory, listens in it, and draws the run's secret.
    pub(crate) fn open() -> Result<Self, PoolError> {
        let dir = SocketDir::create()?;
        let endpoint = dir.path().join(SOCKET_NAME);
        let listener = Listener::bind(&endpoint).map_err(PoolError::Socket)?;
        let secret = Secret::generate().map_err(PoolError::Socket)?;
        Ok(Self { listener, endpoint, secret, dir: Mutex::new(Some(dir)) })
    }
}

impl Transport for SocketEngine {
    type Ticket = Challenge;
    type Arrival = Link;
    type Receiver = SocketReceiver;
    type Sender = SocketSender;

    fn launch(&self, _index: usize, env: &mut Vec<(OsString, OsString)>) -> io::Result<Launch<Challenge>> {
        let challenge = Challenge::generate()?;
        env.push((ENDPOINT_ENV.into(), self.endpoint.clone().into()));
        let stdin = Credentials { secret: self.secret.clone(), challenge }.to_line().into_bytes();
        Ok(Launch::Process { ticket: challenge, stdin })
    }

    fn next_arrival(&self, timeout: Option<Duration>) -> io::Result<Option<Link>> {
        match timeout {
            None => self.listener.accept().map(Some),
            // A peer that gave up between the poll and the accept is no arrival.
            Some(timeout) => {
                Ok(self.listener.wait_for_connection(timeout)?.then(|| self.listener.accept().ok()).flatten())
            }
        }
    }

    fn vouch(&self, link: &Link) -> Vouched {
        link.peer_pid().map_or(Vouched::Nothing, Vouched::Pid)
    }

    fn refuse(&self, link: &Link, reason: &str) {
        let (_, mut writer) = link.halves();
        refuse(&mut writer, reason);
    }

    fn admit(
        &self,
        link: Link,
        ticket_for: impl FnOnce(Claim) -> Option<Challenge>,
    ) -> Result<Joined<SocketReceiver, SocketSender>, String> {
        // Our own child, but it must not hold the admitting thread for ever either.
        let _ = link.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
        let hello = {
            let (mut reader, mut writer) = link.halves();
            coordinator_handshake(&mut reader, &mut writer, &self.secret, |hello| {
                ticket_for(Claim { index: hello.worker_index as usize, pid: hello.pid })
            })
        };
        let hello = hello.map_err(|error| error.to_string())?;
        let _ = link.set_read_timeout(None);
        let (receiver, sender) = connection(link);
        Ok(Joined { claim: Claim { index: hello.worker_index as usize, pid: hello.pid }, receiver, sender })
    }

    fn stop(&self) {
        // The acceptor wakes, sees the pool stopping, and returns; readers need no wake-up:
        // their workers' exit ends their streams. Then nothing needs the socket any more,
        // and its directory goes while the workers exit.
        let _ = Link::connect(&self.endpoint);
        self.dir.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn location(&self) -> Option<PathBuf> {
        self.dir.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|dir| dir.path().to_path_buf())
    }

    fn sweep_leftovers(&self) {
        // Others' leftovers lie beside this pool's own directory.
        if let Some(base) = self.endpoint.parent().and_then(Path::parent) {
            sweep_dead_runs(base);
        }
    }
}

/// Turns an admitted worker's socket into the two sides of its connection.
fn connection(link: Link) -> (SocketReceiver, SocketSender) {
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
    use super::*;

    type Receiver = SocketReceiver;
    type Sender = SocketSender;

    /// Both ends of a connection over a real socket, each as the supervisor sees it.
    fn connected() -> ((Receiver, Sender), (Receiver, Sender), tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Listener::bind(&path).unwrap();
        let near = Link::connect(&path).unwrap();
        let far = listener.accept().unwrap();
        (connection(near), connection(far), dir)
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
