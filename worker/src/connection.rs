//! The worker's side of the transport seam: its connection to its coordinator.
//!
//! The serve loop sees the coordinator only as a [`CoordinatorConnection`]: whole frames
//! in, whole frames out, the connection's end and its failure. [`SocketConnection`] is the
//! engine today (a Unix socket, joined by path and proven with the run's secret); a
//! message-based engine such as MPI fills the same trait with one message per frame.

use std::io::{BufReader, BufWriter, Write};

use corepool_protocol::{
    frame::{FrameError, MAX_FRAME_LEN, read_frame},
    handshake::worker_handshake,
    transport::{Link, LinkReader, LinkWriter},
};

use crate::{WorkerConfig, WorkerError, platform};

/// A worker's connection to its coordinator, once joined.
///
/// A frame is its length (four bytes, little-endian) and then its body, as
/// [`corepool_protocol::frame`] writes it; an engine that carries messages of their own
/// length may leave the four bytes out on the way.
pub trait CoordinatorConnection {
    /// Waits for the coordinator's next frame and puts it in `frame`, in place of what
    /// was there: `Ok(true)`, or `Ok(false)` once the coordinator ended the connection. An
    /// error means the connection failed. Frames sent and not yet flushed go out before
    /// this waits.
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError>;

    /// Sends `frame`, whole; it may wait in a buffer until the next [`receive`](Self::receive)
    /// that would wait, or [`flush`](Self::flush), so that a burst of answers costs one write.
    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError>;

    /// Sends the frame in `frame`, whole, as [`send`](Self::send) does; an engine that sends
    /// whole buffers may take `frame`'s rather than copy it, and leave in its place another
    /// buffer to reuse. Either way, what `frame` holds afterwards is unspecified.
    fn send_owned(&mut self, frame: &mut Vec<u8>) -> Result<(), FrameError> {
        self.send(frame)
    }

    /// Sends whatever frames still wait in a buffer.
    fn flush(&mut self) -> Result<(), FrameError>;

    /// Whether the worker tells the coordinator its own CPU time and memory before each
    /// answer: where the coordinator cannot read them from its process table (a worker on
    /// another host).
    fn reports_usage(&self) -> bool {
        false
    }
}

/// The connection over the coordinator's Unix socket, read and written through buffers.
pub struct SocketConnection {
    reader: BufReader<LinkReader>,
    writer: BufWriter<LinkWriter>,
}

impl SocketConnection {
    /// Connects to the coordinator's socket named in `config` and proves this worker with
    /// the run's secret over its challenge.
    pub fn join(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let link = Link::connect(&config.endpoint).map_err(|source| {
            // The coordinator removes its socket when its pool stops, and before it exits:
            // a worker started by one that finds no socket, or no listener, started too late.
            use std::io::ErrorKind::{ConnectionRefused, NotFound};
            let pool_stopped = config.parent.is_some() && matches!(source.kind(), NotFound | ConnectionRefused);
            if pool_stopped || config.parent.is_some_and(platform::parent_is_gone) {
                WorkerError::CoordinatorGone
            } else {
                WorkerError::Connect { path: config.endpoint.clone(), source }
            }
        })?;
        let (reader, writer) = link.split();
        let mut connection = Self {
            reader: BufReader::with_capacity(1 << 16, reader),
            writer: BufWriter::with_capacity(1 << 16, writer),
        };
        worker_handshake(
            &mut connection.reader,
            &mut connection.writer,
            &config.credentials,
            config.index,
            std::process::id(),
        )?;
        Ok(connection)
    }
}

impl CoordinatorConnection for SocketConnection {
    fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
        // Answers wait in the buffer while more tasks are already here, so that a burst of
        // small tasks costs one write; before blocking on a read, they must go out.
        if !holds_complete_frame(self.reader.buffer()) {
            self.writer.flush().map_err(FrameError::Io)?;
            if self.reader.buffer().is_empty() {
                // Waiting for the next task in a poll, not in the read, spares the
                // coordinator a wake-up of this worker each time it takes an answer.
                self.reader.get_ref().wait_readable(None).map_err(FrameError::Io)?;
            }
        }
        read_frame(&mut self.reader, frame, MAX_FRAME_LEN)
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.writer.write_all(frame).map_err(FrameError::Io)
    }

    fn flush(&mut self) -> Result<(), FrameError> {
        self.writer.flush().map_err(FrameError::Io)
    }
}

fn holds_complete_frame(buffered: &[u8]) -> bool {
    buffered.len() >= 4 && (u32::from_le_bytes(buffered[..4].try_into().unwrap()) as usize) <= buffered.len() - 4
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use corepool_protocol::{FailureKind, TaskId, ToCoordinator, ToWorker, codec, handshake::Credentials};
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{Registry, Task, serve::serve_on, test_knobs::TestKnobs};

    /// A connection held in memory: the frames the coordinator would send, and those the
    /// worker sent, with how many had been flushed each time the worker waited.
    #[derive(Default)]
    struct InMemory {
        incoming: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        flushed: usize,
        reports_usage: bool,
    }

    impl CoordinatorConnection for InMemory {
        fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
            self.flushed = self.sent.len();
            let Some(next) = self.incoming.pop_front() else { return Ok(false) };
            *frame = next;
            Ok(true)
        }

        fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
            self.sent.push(frame.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> Result<(), FrameError> {
            self.flushed = self.sent.len();
            Ok(())
        }

        fn reports_usage(&self) -> bool {
            self.reports_usage
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Double;

    impl Task for Double {
        const NAME: &'static str = "double";
        type Chunk = Vec<i64>;
        type Output = i64;

        fn run(&self, chunk: Vec<i64>) -> Result<Vec<i64>, String> {
            Ok(chunk.into_iter().map(|x| 2 * x).collect())
        }
    }

    fn config() -> WorkerConfig {
        let credentials = Credentials::from_line(&format!("{} {}\n", "ab".repeat(32), "cd".repeat(32)));
        WorkerConfig {
            endpoint: "unused".into(),
            index: 0,
            name: "corepool-w0".into(),
            parent: None,
            credentials: credentials.expect("a well-formed line"),
            knobs: TestKnobs::default(),
            functions: crate::function::Functions::from_env(),
        }
    }

    /// The body of a frame, as a receive gives it.
    fn task(chunk: u64, name: &str, items: &[i64]) -> Vec<u8> {
        let id = TaskId { job: 1, chunk, first_row: 0 };
        let message = ToWorker::Task { id, task: name.into() };
        let frame = codec::encode_frame(&message, 0, |out| crate::encode_payload(&Double, &items.to_vec(), out));
        frame.unwrap()[4..].to_vec()
    }

    #[test]
    fn the_serve_loop_answers_each_task_as_a_whole_frame_and_flushes_before_stopping() {
        let shutdown = codec::encode(&ToWorker::Shutdown).unwrap();
        let incoming = [task(0, "double", &[1, 2, 3]), task(1, "nothing", &[]), shutdown, task(2, "double", &[9])];
        let mut connection = InMemory { incoming: incoming.into(), ..InMemory::default() };
        serve_on(&mut connection, &config(), &Registry::new().register::<Double>()).unwrap();
        assert_eq!(connection.incoming.len(), 1, "nothing is read after the stop");
        assert_eq!(connection.sent.len(), 2);
        assert_eq!(connection.flushed, 2, "every answer went out before the worker stopped");
        for frame in &connection.sent {
            assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        }
        let (done, outputs) = codec::decode_prefix::<ToCoordinator>(&connection.sent[0][4..]).unwrap();
        assert!(matches!(done, ToCoordinator::Done { id } if id.chunk == 0));
        assert_eq!(crate::decode_outputs::<Double>(outputs).unwrap(), [2, 4, 6]);
        let (failed, _) = codec::decode_prefix::<ToCoordinator>(&connection.sent[1][4..]).unwrap();
        assert!(matches!(failed, ToCoordinator::Failed { failure, .. } if failure.kind == FailureKind::UnknownTask));
    }

    /// Like [`InMemory`], but it takes each answer's buffer, as an engine that sends whole
    /// buffers does, and leaves a dirty one in its place.
    #[derive(Default)]
    struct TakesBuffers(InMemory);

    impl CoordinatorConnection for TakesBuffers {
        fn receive(&mut self, frame: &mut Vec<u8>) -> Result<bool, FrameError> {
            self.0.receive(frame)
        }

        fn send(&mut self, frame: &[u8]) -> Result<(), FrameError> {
            self.0.send(frame)
        }

        fn send_owned(&mut self, frame: &mut Vec<u8>) -> Result<(), FrameError> {
            self.0.sent.push(std::mem::replace(frame, vec![0xee; 64]));
            Ok(())
        }

        fn flush(&mut self) -> Result<(), FrameError> {
            self.0.flush()
        }

        fn reports_usage(&self) -> bool {
            true
        }
    }

    #[test]
    fn answers_sent_as_whole_buffers_are_whole_frames_whatever_buffer_comes_back() {
        let incoming = [task(0, "double", &[1, 2, 3]), task(1, "double", &[4]), task(2, "nothing", &[])];
        let mut connection = TakesBuffers(InMemory { incoming: incoming.into(), ..InMemory::default() });
        serve_on(&mut connection, &config(), &Registry::new().register::<Double>()).unwrap();
        let sent = &connection.0.sent;
        assert_eq!(sent.len(), 6, "a usage report and an answer per task");
        for frame in sent {
            assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
            codec::decode_prefix::<ToCoordinator>(&frame[4..]).expect("a whole message, nothing left over before it");
        }
        let (_, outputs) = codec::decode_prefix::<ToCoordinator>(&sent[3][4..]).unwrap();
        assert_eq!(crate::decode_outputs::<Double>(outputs).unwrap(), [8]);
    }

    #[test]
    fn the_serve_loop_ends_quietly_when_the_coordinator_ends_the_connection() {
        let mut connection = InMemory { incoming: [task(0, "double", &[5])].into(), ..InMemory::default() };
        serve_on(&mut connection, &config(), &Registry::new().register::<Double>()).unwrap();
        assert_eq!(connection.sent.len(), 1);
        assert_eq!(connection.flushed, 1, "the answer went out before the wait for more");
    }

    #[test]
    fn a_worker_that_reports_its_usage_sends_it_before_each_answer() {
        let incoming = [task(0, "double", &[1, 2, 3]), task(1, "nothing", &[])];
        let mut connection = InMemory { incoming: incoming.into(), reports_usage: true, ..InMemory::default() };
        serve_on(&mut connection, &config(), &Registry::new().register::<Double>()).unwrap();
        let messages: Vec<ToCoordinator> =
            connection.sent.iter().map(|frame| codec::decode_prefix(&frame[4..]).unwrap().0).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        for (usage, answer) in messages.iter().step_by(2).zip(messages.iter().skip(1).step_by(2)) {
            let ToCoordinator::Usage(usage) = usage else { panic!("usage first: {messages:?}") };
            assert!(usage.peak_rss_bytes > 0 && usage.rss_bytes > 0, "{usage:?}");
            assert!(matches!(answer, ToCoordinator::Done { .. } | ToCoordinator::Failed { .. }), "{messages:?}");
        }
    }
}
