//! Knobs with which the end-to-end tests slow a worker down or make it fail on purpose,
//! read from the environment. They are compiled in only with the `test-knobs` feature (the
//! tests' build turns it on), so that a production worker neither reads nor checks them.

#[cfg(feature = "test-knobs")]
use std::time::Duration;

/// `INDEX:MILLIS`: the worker of that index sleeps that long before each chunk, so that
/// tests can load workers unevenly on purpose.
#[cfg(feature = "test-knobs")]
const SLOW_WORKER_ENV: &str = "COREPOOL_TEST_SLOW_WORKER";
/// `MILLIS`: every worker sleeps that long before it connects, so that tests can kill a
/// worker before its handshake.
#[cfg(feature = "test-knobs")]
const SLOW_START_ENV: &str = "COREPOOL_TEST_SLOW_START";
/// `abort@ROW`, `exit@ROW` or `hang@ROW`: a worker handed the chunk whose first item is
/// ROW aborts (SIGABRT), exits with code 9, or stops answering.
#[cfg(feature = "test-knobs")]
const FAULT_ENV: &str = "COREPOOL_TEST_FAULT";

/// A fault that [`FAULT_ENV`] asks for.
#[cfg(feature = "test-knobs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Abort,
    Exit,
    Hang,
}

/// What the knobs ask of this worker; nothing without the `test-knobs` feature.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestKnobs {
    /// Delay before each chunk.
    #[cfg(feature = "test-knobs")]
    delay: Duration,
    /// Delay before connecting.
    #[cfg(feature = "test-knobs")]
    start_delay: Duration,
    /// A fault to commit on the chunk starting at a given row.
    #[cfg(feature = "test-knobs")]
    fault: Option<(Fault, u64)>,
}

impl TestKnobs {
    /// The knobs set in the environment for the worker of this `index`.
    #[cfg(feature = "test-knobs")]
    pub fn from_env(index: u32) -> Self {
        let delay = std::env::var(SLOW_WORKER_ENV)
            .ok()
            .and_then(|text| {
                let (slow_index, millis) = text.split_once(':')?;
                (slow_index.parse::<u32>().ok()? == index).then_some(Duration::from_millis(millis.parse().ok()?))
            })
            .unwrap_or_default();
        let start_delay = std::env::var(SLOW_START_ENV)
            .ok()
            .and_then(|text| text.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or_default();
        let fault = std::env::var(FAULT_ENV).ok().and_then(|text| {
            let (kind, row) = text.split_once('@')?;
            let kind = match kind {
                "abort" => Fault::Abort,
                "exit" => Fault::Exit,
                "hang" => Fault::Hang,
                _ => return None,
            };
            Some((kind, row.parse().ok()?))
        });
        Self { delay, start_delay, fault }
    }

    /// No knobs: a production build reads nothing.
    #[cfg(not(feature = "test-knobs"))]
    pub fn from_env(_index: u32) -> Self {
        Self {}
    }

    /// Called before the worker connects.
    #[inline]
    pub fn before_connect(&self) {
        #[cfg(feature = "test-knobs")]
        if !self.start_delay.is_zero() {
            std::thread::sleep(self.start_delay);
        }
    }

    /// Called before each chunk, with the chunk's first row (`None` for a batch of calls,
    /// which no fault targets).
    #[inline]
    pub fn before_chunk(&self, first_row: Option<u64>) {
        #[cfg(feature = "test-knobs")]
        {
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
            match self.fault {
                Some((fault, row)) if Some(row) == first_row => match fault {
                    Fault::Abort => std::process::abort(),
                    Fault::Exit => std::process::exit(9),
                    Fault::Hang => loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    },
                },
                _ => {}
            }
        }
        #[cfg(not(feature = "test-knobs"))]
        let _ = first_row;
    }
}
