//! The frames on their way to one worker, and who writes them.
//!
//! A writer thread per worker sends frames, so that handing out work never waits on a
//! socket. But waking that thread costs about as much as a third of a socket round trip
//! on a small machine, which a caller of `apply` pays on every call. So a caller whose
//! frames are small, and who finds the connection idle, writes them itself
//! ([`Outbox::write_here`]). Whoever writes holds the sender, taken out of the queue, so
//! that frames never interleave and go out in the order they were queued.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
};

use crate::{
    outgoing::Outgoing,
    pool::transport::{FrameSender, Sender},
};

/// Frames no longer than this may be written by the thread that queued them. A frame
/// this small fits the socket's buffer unless the worker has fallen far behind, so the
/// write does not wait on the worker.
pub(super) const WRITE_HERE_MAX: usize = 16 << 10;

/// The frames waiting for one worker's connection.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer thread.
    wake: Condvar,
}

struct Queue {
    frames: VecDeque<Arc<Outgoing>>,
    /// The connection's sending side, when nobody is sending on it.
    sender: Option<Sender>,
    /// No more frames will come: the writer thread ends once those queued are out.
    closed: bool,
    /// A write failed: the worker is gone, and frames are refused.
    failed: bool,
    /// The writer thread is waiting for work (so a wake-up is needed).
    thread_idle: bool,
}

impl Outbox {
    /// An outbox sending on `sender`; [`Outbox::run_writer`] must run on a thread of its own.
    pub fn new(sender: Sender) -> Arc<Self> {
        let queue =
            Queue { frames: VecDeque::new(), sender: Some(sender), closed: false, failed: false, thread_idle: false };
        Arc::new(Self { queue: Mutex::new(queue), wake: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame`, waking the writer thread unless `leave_to_caller` (the caller then
    /// calls [`Outbox::write_here`]). Gives the frame back if the worker's connection failed
    /// or the outbox is closed.
    pub fn push(&self, frame: Arc<Outgoing>, leave_to_caller: bool) -> Result<(), Arc<Outgoing>> {
        let mut queue = self.lock();
        if queue.failed || queue.closed {
            return Err(frame);
        }
        queue.frames.push_back(frame);
        if !leave_to_caller {
            self.wake_writer(&queue);
        }
        Ok(())
    }

    /// Writes the queued frames on this thread if the sender is free and they are all
    /// small; otherwise leaves them to the writer thread.
    pub fn write_here(&self) {
        let mut queue = self.lock();
        let small = queue.frames.iter().all(|frame| frame.frame_len() <= WRITE_HERE_MAX);
        if !small || queue.sender.is_none() {
            // Whoever holds the sender looks at the queue again once done.
            self.wake_writer(&queue);
            return;
        }
        let mut sender = queue.sender.take().expect("checked above");
        let frames: Vec<_> = queue.frames.drain(..).collect();
        drop(queue);
        let written = sender.send(&frames);
        let mut queue = self.lock();
        queue.failed |= written.is_err();
        queue.sender = Some(sender);
        self.wake_writer(&queue);
    }

    /// Takes no more frames; the writer thread ends once those queued are written.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        self.wake.notify_all();
        drop(queue);
    }

    /// The writer thread's loop: writes queued frames until the outbox is closed and empty,
    /// or a write fails.
    pub fn run_writer(&self) {
        let mut queue = self.lock();
        loop {
            if queue.failed || (queue.closed && queue.frames.is_empty() && queue.sender.is_some()) {
                return;
            }
            if queue.frames.is_empty() || queue.sender.is_none() {
                queue.thread_idle = true;
                queue = self.wake.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
                queue.thread_idle = false;
                continue;
            }
            let mut sender = queue.sender.take().expect("checked above");
            let frames: Vec<_> = queue.frames.drain(..).collect();
            drop(queue);
            let written = sender.send(&frames);
            drop(frames);
            queue = self.lock();
            queue.failed |= written.is_err();
            queue.sender = Some(sender);
        }
    }

    /// Wakes the writer thread if it waits and has something to do, or should end: a
    /// failed write (on whichever thread) ends it too.
    fn wake_writer(&self, queue: &Queue) {
        let work = !queue.frames.is_empty() || queue.closed || queue.failed;
        if queue.thread_idle && queue.sender.is_some() && work {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use corepool_protocol::transport::{Link, Listener};

    use super::*;
    use crate::pool::transport::socket::SocketSender;

    fn frame(byte: u8, len: usize) -> Arc<Outgoing> {
        Arc::new(Outgoing::encoded(vec![byte; len]))
    }

    #[test]
    fn frames_go_out_in_queue_order_whoever_writes_them_and_closing_drains_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Listener::bind(&path).unwrap();
        let receiver = std::thread::spawn({
            let path = path.clone();
            move || {
                let (mut reader, _writer) = Link::connect(&path).unwrap().split();
                let mut received = Vec::new();
                reader.read_to_end(&mut received).unwrap();
                received
            }
        });
        let (reader, writer) = listener.accept().unwrap().split();
        let outbox = Outbox::new(SocketSender::new(writer).into());
        let thread = std::thread::spawn({
            let outbox = Arc::clone(&outbox);
            move || outbox.run_writer()
        });
        let frames = [frame(1, 10), frame(2, 20), frame(3, WRITE_HERE_MAX + 1), frame(4, 30), frame(5, 40)];
        outbox.push(Arc::clone(&frames[0]), true).unwrap();
        outbox.push(Arc::clone(&frames[1]), true).unwrap();
        outbox.write_here();
        // Too large to write here: the writer thread takes it, and whatever is queued behind it.
        outbox.push(Arc::clone(&frames[2]), true).unwrap();
        outbox.write_here();
        outbox.push(Arc::clone(&frames[3]), false).unwrap();
        outbox.push(Arc::clone(&frames[4]), true).unwrap();
        outbox.close();
        assert!(outbox.push(frame(6, 1), false).is_err(), "a closed outbox refuses frames");
        thread.join().unwrap();
        // The socket closes with its last half, and the receiver reads to its end.
        drop((outbox, reader));

        let expected: Vec<u8> = frames.iter().flat_map(|frame| frame.head().to_vec()).collect();
        assert_eq!(receiver.join().unwrap(), expected);
    }

    #[test]
    fn a_failed_write_on_the_callers_thread_ends_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = Listener::bind(&path).unwrap();
        let peer = Link::connect(&path).unwrap();
        let (_reader, writer) = listener.accept().unwrap().split();
        let outbox = Outbox::new(SocketSender::new(writer).into());
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn({
            let outbox = Arc::clone(&outbox);
            move || {
                outbox.run_writer();
                let _ = done.send(());
            }
        });
        // The writer thread waits for work; then the peer goes away, so that writes fail.
        while !outbox.lock().thread_idle {
            std::thread::yield_now();
        }
        drop(peer);
        // Big enough not to fit the socket's buffer in one go, so the write surely fails.
        for _ in 0..64 {
            if outbox.push(frame(7, WRITE_HERE_MAX), true).is_err() {
                break;
            }
            outbox.write_here();
        }
        assert!(outbox.push(frame(8, 1), true).is_err(), "a failed outbox refuses frames");
        // Nobody closes the outbox: the failure alone must end its thread.
        ended.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer thread ended");
    }
}
