//! What the kernel says about a process, and waiting for its end, behind one small face:
//! Linux answers from `/proc` and `wait4`; elsewhere nothing is known, and reports say zero.

use std::time::{Duration, Instant};

pub(crate) use spawn::{Child, spawn_dying_with_this_process};

mod spawn;

/// CPU time and peak memory of one process, as the kernel counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcessUsage {
    /// CPU time in user mode.
    pub cpu_user: Duration,
    /// CPU time in the kernel on the process's behalf.
    pub cpu_system: Duration,
    /// Peak resident set size in bytes (`VmHWM`); 0 once the process has exited.
    pub peak_rss: u64,
    /// Resident set size in bytes at the reading (`VmRSS`); 0 once the process has exited.
    pub rss: u64,
}

impl ProcessUsage {
    /// Usage of two processes that ran one after the other in the same slot: CPU times
    /// add up, the peak is the higher one.
    pub fn then(self, later: Self) -> Self {
        Self {
            cpu_user: self.cpu_user + later.cpu_user,
            cpu_system: self.cpu_system + later.cpu_system,
            peak_rss: self.peak_rss.max(later.peak_rss),
            rss: later.rss,
        }
    }

    /// This reading brought up to date by `newer`, of the same process: counters only
    /// grow, so each keeps its larger value (a zombie's reading has CPU times but no
    /// memory); the memory in use now is the newer reading's.
    pub fn latest(self, newer: Self) -> Self {
        Self {
            cpu_user: self.cpu_user.max(newer.cpu_user),
            cpu_system: self.cpu_system.max(newer.cpu_system),
            peak_rss: self.peak_rss.max(newer.peak_rss),
            rss: newer.rss,
        }
    }

    /// What a worker reported of itself.
    pub fn reported(usage: corepool_protocol::ResourceUsage) -> Self {
        Self {
            cpu_user: Duration::from_micros(usage.cpu_user_micros),
            cpu_system: Duration::from_micros(usage.cpu_system_micros),
            peak_rss: usage.peak_rss_bytes,
            rss: usage.rss_bytes,
        }
    }
}

/// Reads `pid`'s CPU times and peak memory; `None` if the process is gone or the
/// platform cannot say.
pub(crate) fn process_usage(pid: u32) -> Option<ProcessUsage> {
    #[cfg(target_os = "linux")]
    {
        linux::process_usage(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// This machine's name, as `hostname` prints it; empty where the platform cannot say.
pub(crate) fn host_name() -> String {
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `name.len()` bytes into `name`.
    if unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) } != 0 {
        return String::new();
    }
    let len = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..len]).into_owned()
}

/// Waits up to `grace` for `children` to exit, kills those still running, and reaps them
/// all; returns each one's final usage, where the platform tells it. On Linux the wait
/// ends the moment the last child exits, and reaping gives the usage for free.
pub(crate) fn reap_all(children: Vec<Child>, grace: Duration) -> Vec<Option<ProcessUsage>> {
    #[cfg(target_os = "linux")]
    {
        linux::reap_all(children, grace)
    }
    #[cfg(not(target_os = "linux"))]
    {
        poll_and_reap(children, grace)
    }
}

/// [`reap_all`] by polling every child, a little less often each time, and without usage.
fn poll_and_reap(mut children: Vec<Child>, grace: Duration) -> Vec<Option<ProcessUsage>> {
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_micros(20);
    let mut exited = vec![false; children.len()];
    loop {
        for (child, exited) in children.iter_mut().zip(&mut exited) {
            *exited = *exited || !matches!(child.try_wait(), Ok(None));
        }
        if !exited.contains(&false) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    vec![None; children.len()]
}

/// Whether this process may run on more than one CPU. On Linux it asks the process's CPU
/// affinity alone, which takes a microsecond, where [`super::logical_cpus`] first reads
/// cgroup quotas from files (a tenth of a millisecond, on a pool's start).
pub(crate) fn may_run_on_several_cpus() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, which the call fills in.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                return libc::CPU_COUNT(&set) > 1;
            }
        }
    }
    super::logical_cpus() > 1
}

/// Whether this is the process's main thread, which lives as long as the process.
pub(crate) fn on_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and getpid have no preconditions and cannot fail.
    return unsafe { libc::gettid() == libc::getpid() };
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(target_os = "linux")]
mod linux {
    use std::{
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        time::{Duration, Instant},
    };

    use super::{Child, ProcessUsage};

    pub fn reap_all(mut children: Vec<Child>, grace: Duration) -> Vec<Option<ProcessUsage>> {
        let Some(pidfds) = children.iter().map(|child| pidfd_open(child.id())).collect::<Option<Vec<_>>>() else {
            // Kernels before 5.3 have no pidfd.
            return super::poll_and_reap(children, grace);
        };
        let deadline = Instant::now() + grace;
        // `None` while the child runs; then its usage, if reaping told it.
        let mut usages: Vec<Option<Option<ProcessUsage>>> = vec![None; children.len()];
        loop {
            for (child, usage) in children.iter().zip(&mut usages) {
                if usage.is_none() {
                    *usage = reap(child.id(), libc::WNOHANG);
                }
            }
            let mut waiting: Vec<libc::pollfd> = pidfds
                .iter()
                .zip(&usages)
                .filter(|(_, usage)| usage.is_none())
                .map(|(pidfd, _)| libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if waiting.is_empty() || left.is_zero() {
                break;
            }
            let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: `waiting` holds `waiting.len()` initialised pollfds.
            unsafe { libc::poll(waiting.as_mut_ptr(), waiting.len() as libc::nfds_t, millis) };
        }
        children
            .iter_mut()
            .zip(usages)
            .map(|(child, usage)| {
                usage.unwrap_or_else(|| {
                    // Not reaped, so the pid is still this child's: killing it is safe.
                    let _ = child.kill();
                    reap(child.id(), 0).flatten()
                })
            })
            .collect()
    }

    fn pidfd_open(pid: u32) -> Option<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a non-negative result is a descriptor that nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Reaps `pid` (`flags` as for wait4): `None` while it runs, then `Some` of its usage,
    /// which is unknown if something else reaped it first.
    fn reap(pid: u32, flags: i32) -> Option<Option<ProcessUsage>> {
        let mut status = 0;
        // SAFETY: rusage is plain data, for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only into the status and rusage it is given.
        let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, flags, &mut usage) };
        match reaped {
            0 => None,
            -1 => Some(None),
            _ => Some(Some(ProcessUsage {
                cpu_user: duration(usage.ru_utime),
                cpu_system: duration(usage.ru_stime),
                peak_rss: (usage.ru_maxrss.max(0) as u64) * 1024,
                rss: 0,
            })),
        }
    }

    fn duration(time: libc::timeval) -> Duration {
        Duration::from_secs(time.tv_sec.max(0) as u64) + Duration::from_micros(time.tv_usec.max(0) as u64)
    }

    pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (utime, stime) = cpu_ticks(&stat)?;
        // A zombie has no memory map, hence no VmHWM or VmRSS: they are then unknown (0).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let tick = ticks_per_second();
        Some(ProcessUsage {
            cpu_user: Duration::from_secs_f64(utime as f64 / tick),
            cpu_system: Duration::from_secs_f64(stime as f64 / tick),
            peak_rss: status_bytes(&status, "VmHWM:").unwrap_or(0),
            rss: status_bytes(&status, "VmRSS:").unwrap_or(0),
        })
    }

    /// Fields 14 and 15 of `/proc/PID/stat` (utime, stime), counted after the command
    /// name, which is in parentheses and may itself hold spaces and parentheses.
    pub fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let mut fields = after_name.split_ascii_whitespace().skip(11);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    }

    /// A line such as `VmHWM:  1234 kB` of `/proc/PID/status`, named by `field`, in bytes.
    pub fn status_bytes(status: &str, field: &str) -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(field))?;
        let kib: u64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    }

    fn ticks_per_second() -> f64 {
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 { ticks as f64 } else { 100.0 }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_stat_with_a_tricky_command_name() {
            let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1 0 5 1000 50";
            assert_eq!(cpu_ticks(stat), Some((250, 37)));
        }

        #[test]
        fn parses_peak_and_current_rss() {
            let status = "Name:\tcorepool-w0\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
            assert_eq!(status_bytes(status, "VmHWM:"), Some(2048 * 1024));
            assert_eq!(status_bytes(status, "VmRSS:"), Some(1000 * 1024));
            assert_eq!(status_bytes("Name:\tzombie\n", "VmHWM:"), None);
        }

        #[test]
        fn reaps_exited_children_with_their_usage_and_kills_the_rest() {
            use std::process::Command;
            let quick = Child::from_std(Command::new("true").spawn().expect("true runs"));
            let stuck = Child::from_std(Command::new("sleep").arg("30").spawn().expect("sleep runs"));
            let started = std::time::Instant::now();
            let usages = super::super::reap_all(vec![quick, stuck], Duration::from_millis(100));
            assert!(started.elapsed() < Duration::from_secs(5), "the sleeper was killed, not waited for");
            assert_eq!(usages.len(), 2);
            assert!(usages[0].is_some_and(|usage| usage.peak_rss > 0), "{usages:?}");
            assert!(usages[1].is_some(), "a killed child is reaped too: {usages:?}");
        }

        #[test]
        fn reads_this_process() {
            let usage = process_usage(std::process::id()).expect("this process is alive");
            assert!(usage.peak_rss > 0 && usage.rss > 0 && usage.rss <= usage.peak_rss, "{usage:?}");
        }
    }
}
