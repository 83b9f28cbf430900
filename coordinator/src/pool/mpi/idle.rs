//! Waiting for MPI without a busy core: poll, then sleep briefly while a message is likely
//! due, then sleep ever longer.

use std::time::{Duration, Instant};

/// How long after the last progress a rank spins: a reply already on its way comes sooner.
const SPIN_FOR: Duration = Duration::from_micros(10);
/// How long after the last progress a rank polls every [`DUE_SLEEP`]: the gaps within a
/// conversation (a chunk's work, a round trip) are shorter, so a rank in one does not
/// oversleep its next message.
const DUE_FOR: Duration = Duration::from_millis(2);
/// The sleep between polls while a message is likely due. A sleep, not a yield: a yield on a
/// core that a busy process shares gives the core away for a whole time slice.
const DUE_SLEEP: Duration = Duration::from_micros(20);
/// The first sleep past [`DUE_FOR`]; each one after it doubles, up to [`LONGEST_SLEEP`].
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

/// How a rank waits between polls that found nothing: it spins briefly, then sleeps
/// briefly while a message is likely due, then sleeps, each sleep twice the last up to
/// [`LONGEST_SLEEP`], so an idle rank costs almost no CPU and a busy one answers at once. Progress calls [`Backoff::reset`].
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    idle_since: Option<Instant>,
    sleeps: u32,
}

impl Backoff {
    /// A backoff that starts by spinning.
    pub fn new() -> Self {
        Self::default()
    }

    /// Something arrived or left: the next wait starts by spinning again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Whether the rank has been idle long enough that no message is likely due.
    pub fn sleeping(&self) -> bool {
        self.idle_since.is_some_and(|since| since.elapsed() >= DUE_FOR)
    }

    /// The pause after one more poll that found nothing.
    pub fn next_pause(&mut self) -> Pause {
        let idle_since = *self.idle_since.get_or_insert_with(Instant::now);
        let idle = idle_since.elapsed();
        let pause = pause_after(idle, self.sleeps);
        if idle >= DUE_FOR {
            self.sleeps = self.sleeps.saturating_add(1);
        }
        pause
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

/// The pause for a rank idle for `idle` that has slept `sleeps` times since [`DUE_FOR`].
fn pause_after(idle: Duration, sleeps: u32) -> Pause {
    if idle < SPIN_FOR {
        Pause::Spin
    } else if idle < DUE_FOR {
        Pause::Sleep(DUE_SLEEP)
    } else {
        Pause::Sleep(FIRST_SLEEP.saturating_mul(1 << sleeps.min(16)).min(LONGEST_SLEEP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_then_sleeps_briefly_while_due_then_longer_up_to_the_cap() {
        assert_eq!(pause_after(Duration::ZERO, 0), Pause::Spin);
        assert_eq!(pause_after(SPIN_FOR, 0), Pause::Sleep(DUE_SLEEP));
        assert_eq!(pause_after(DUE_FOR - SPIN_FOR, 0), Pause::Sleep(DUE_SLEEP));
        assert_eq!(pause_after(DUE_FOR, 0), Pause::Sleep(FIRST_SLEEP));
        let sleeps: Vec<Pause> = (0..20).map(|slept| pause_after(DUE_FOR, slept)).collect();
        assert!(sleeps.windows(2).all(|w| matches!(w, [Pause::Sleep(a), Pause::Sleep(b)] if b >= a)));
        assert_eq!(sleeps.last(), Some(&Pause::Sleep(LONGEST_SLEEP)));
    }

    #[test]
    fn the_brief_sleeps_while_due_do_not_lengthen_the_later_ones() {
        let mut backoff = Backoff { idle_since: Some(Instant::now() - DUE_FOR / 2), sleeps: 0 };
        for _ in 0..100 {
            backoff.next_pause();
        }
        assert_eq!(backoff.sleeps, 0);
    }

    #[test]
    fn progress_starts_the_wait_over() {
        let mut backoff = Backoff { idle_since: Some(Instant::now() - DUE_FOR), sleeps: 9 };
        assert!(matches!(backoff.next_pause(), Pause::Sleep(_)));
        backoff.reset();
        assert_eq!(backoff.next_pause(), Pause::Spin);
    }

    #[test]
    fn a_sleep_never_passes_the_deadline() {
        let mut backoff = Backoff { idle_since: Some(Instant::now() - DUE_FOR), sleeps: 20 };
        let started = Instant::now();
        backoff.wait(Some(started), LONGEST_SLEEP);
        assert!(started.elapsed() < LONGEST_SLEEP * 20);
    }
}
