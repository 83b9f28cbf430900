//! Waiting for MPI without a busy core: poll, then yield, then sleep ever longer.

use std::time::{Duration, Instant};

/// Polls that spin before the first yield: a reply that is already on its way comes sooner.
const SPINS: u32 = 64;
/// Polls that yield the core before the first sleep.
const YIELDS: u32 = 256;
/// The first sleep; each one after it doubles, up to [`LONGEST_SLEEP`].
const FIRST_SLEEP: Duration = Duration::from_micros(20);
/// The longest sleep: how late an idle rank may notice its next message.
pub const LONGEST_SLEEP: Duration = Duration::from_millis(1);
/// The longest sleep while sends are on their way: they need MPI calls to move on.
pub const LONGEST_SLEEP_SENDING: Duration = Duration::from_micros(50);

/// What one idle step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// Poll again at once.
    Spin,
    /// Give the core to another runnable thread, then poll.
    Yield,
    /// Sleep this long, then poll.
    Sleep(Duration),
}

/// How a rank waits between polls that found nothing: it spins briefly, then yields, then
/// sleeps, each sleep twice the last up to [`LONGEST_SLEEP`], so an idle rank costs
/// almost no CPU and a busy one answers at once. Progress calls [`Backoff::reset`].
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    empty_polls: u32,
}

impl Backoff {
    /// A backoff that starts by spinning.
    pub fn new() -> Self {
        Self::default()
    }

    /// Something arrived or left: the next wait starts by spinning again.
    pub fn reset(&mut self) {
        self.empty_polls = 0;
    }

    /// The pause after one more poll that found nothing.
    pub fn next_pause(&mut self) -> Pause {
        let polls = self.empty_polls;
        self.empty_polls = self.empty_polls.saturating_add(1);
        if polls < SPINS {
            Pause::Spin
        } else if polls < SPINS + YIELDS {
            Pause::Yield
        } else {
            let doublings = (polls - SPINS - YIELDS).min(16);
            Pause::Sleep(FIRST_SLEEP.saturating_mul(1 << doublings).min(LONGEST_SLEEP))
        }
    }

    /// Waits one idle step, sleeping at most `longest` (zero: yield instead of sleeping,
    /// for while bytes are moving and MPI needs calls to move them) and never past
    /// `deadline`.
    pub fn wait(&mut self, deadline: Option<Instant>, longest: Duration) {
        match self.next_pause() {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Sleep(pause) if !longest.is_zero() => {
                let pause = pause.min(longest);
                let pause = deadline.map_or(pause, |end| pause.min(end.saturating_duration_since(Instant::now())));
                std::thread::sleep(pause);
            }
            Pause::Yield | Pause::Sleep(_) => std::thread::yield_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_then_yields_then_sleeps_longer_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let pauses: Vec<Pause> = (0..SPINS + YIELDS + 10).map(|_| backoff.next_pause()).collect();
        assert!(pauses[..SPINS as usize].iter().all(|p| *p == Pause::Spin));
        assert!(pauses[SPINS as usize..(SPINS + YIELDS) as usize].iter().all(|p| *p == Pause::Yield));
        let sleeps: Vec<Duration> = pauses[(SPINS + YIELDS) as usize..]
            .iter()
            .map(|p| match p {
                Pause::Sleep(d) => *d,
                other => panic!("expected a sleep, got {other:?}"),
            })
            .collect();
        assert_eq!(sleeps[0], FIRST_SLEEP);
        assert!(sleeps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*sleeps.last().unwrap(), LONGEST_SLEEP);
    }

    #[test]
    fn progress_starts_the_wait_over() {
        let mut backoff = Backoff::new();
        for _ in 0..1000 {
            backoff.next_pause();
        }
        backoff.reset();
        assert_eq!(backoff.next_pause(), Pause::Spin);
    }

    #[test]
    fn a_sleep_never_passes_the_deadline() {
        let mut backoff = Backoff::new();
        for _ in 0..SPINS + YIELDS + 20 {
            backoff.next_pause();
        }
        let started = Instant::now();
        backoff.wait(Some(started), LONGEST_SLEEP);
        assert!(started.elapsed() < LONGEST_SLEEP * 20);
    }
}
