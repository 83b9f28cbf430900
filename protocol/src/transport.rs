//! How bytes reach a worker: the one module that knows the transport.
//!
//! A local socket (a Unix domain socket) at a filesystem path inside a private
//! directory. Only the Unix socket engines use it: the coordinator's
//! (`corepool::pool::transport::socket`) and the worker's
//! (`corepool_worker::connection::SocketConnection`); the supervisor and the serve loop
//! see only their transport traits, so another engine (MPI, TCP) sits beside these.

use std::{
    io::{self, Read, Write},
    path::Path,
    sync::Arc,
    time::Duration,
};

use interprocess::local_socket::{GenericFilePath, ListenerOptions, Stream, ToFsName, prelude::*};

/// Accepts connections from workers.
///
/// Dropping it removes its socket file.
#[derive(Debug)]
pub struct Listener {
    inner: interprocess::local_socket::Listener,
}

impl Listener {
    /// Listens at `path`, which must not exist yet.
    pub fn bind(path: &Path) -> io::Result<Self> {
        let name = path.to_fs_name::<GenericFilePath>()?;
        let inner = ListenerOptions::new().name(name).reclaim_name(true).create_sync()?;
        Ok(Self { inner })
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<Link> {
        Ok(Link { stream: Arc::new(self.inner.accept()?) })
    }

    /// Waits at most `timeout` until a connection is waiting to be accepted; returns
    /// whether one is.
    pub fn wait_for_connection(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let interprocess::local_socket::Listener::UdSocket(listener) = &self.inner;
        poll_readable(listener.inner().as_raw_fd(), Some(timeout))
    }
}

/// Waits at most `timeout` (`None`: for as long as it takes) until `fd` is readable (for a
/// listener: a connection is waiting); returns whether it is.
fn poll_readable(fd: std::os::fd::RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // Rounded up, so that a short wait is not a busy one.
    let millis =
        timeout.map_or(-1, |timeout| i32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX));
    loop {
        // SAFETY: one valid pollfd, which outlives the call.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => return Err(io::Error::last_os_error()),
            ready => return Ok(ready > 0),
        }
    }
}

/// One connection between the coordinator and a worker.
#[derive(Debug)]
pub struct Link {
    stream: Arc<Stream>,
}

impl Link {
    /// Connects to a coordinator listening at `path`.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let name = path.to_fs_name::<GenericFilePath>()?;
        Ok(Self { stream: Arc::new(Stream::connect(name)?) })
    }

    /// The process id of the peer, as the kernel reports it, where it does.
    pub fn peer_pid(&self) -> Option<u32> {
        let pid = self.stream.peer_creds().ok()?.pid()?;
        u32::try_from(pid).ok()
    }

    /// Bounds how long a read may wait (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_recv_timeout(timeout)
    }

    /// Splits the link into halves that two threads can use at once.
    pub fn split(self) -> (LinkReader, LinkWriter) {
        (LinkReader { stream: Arc::clone(&self.stream) }, LinkWriter { stream: self.stream })
    }

    /// Borrows the link as a reader and a writer, for a handshake on one thread.
    pub fn halves(&self) -> (impl Read + '_, impl Write + '_) {
        (&*self.stream, &*self.stream)
    }
}

/// The receiving half of a [`Link`].
#[derive(Debug)]
pub struct LinkReader {
    stream: Arc<Stream>,
}

impl LinkReader {
    /// Waits at most `timeout` (`None`: for as long as it takes) until a read would return
    /// at once (bytes, the end of the stream or an error are waiting); returns whether one
    /// would.
    ///
    /// Unlike a thread blocked in a read, one waiting here is not woken each time the peer
    /// reads what this side sent: Linux wakes a socket's readers then too, which costs the
    /// peer a wake-up on every answer it takes.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let interprocess::local_socket::Stream::UdSocket(stream) = &*self.stream;
        poll_readable(stream.inner().as_raw_fd(), timeout)
    }
}

impl Read for LinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.stream).read(buf)
    }
}

/// The sending half of a [`Link`].
#[derive(Debug)]
pub struct LinkWriter {
    stream: Arc<Stream>,
}

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.stream).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        (&*self.stream).write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.stream).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_FRAME_LEN, read_frame, write_frame};

    #[test]
    fn frames_cross_a_real_socket_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Listener::bind(&path).unwrap();
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let (mut reader, mut writer) = Link::connect(&path).unwrap().split();
                write_frame(&mut writer, b"ping").unwrap();
                let mut buf = Vec::new();
                assert!(read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap());
                buf
            }
        });
        let link = listener.accept().unwrap();
        assert_eq!(link.peer_pid(), Some(std::process::id()));
        let (mut reader, mut writer) = link.split();
        let mut buf = Vec::new();
        assert!(read_frame(&mut reader, &mut buf, MAX_FRAME_LEN).unwrap());
        assert_eq!(buf, b"ping");
        write_frame(&mut writer, b"pong").unwrap();
        assert_eq!(client.join().unwrap(), b"pong");
        drop(listener);
        assert!(!path.exists(), "the listener removes its socket file on drop");
    }
}
