//! What the kernel says about a process, behind one small face: Linux answers from
//! `/proc`; elsewhere nothing is known, and reports say zero.

use std::time::Duration;

/// CPU time and peak memory of one process, as the kernel counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcessUsage {
    /// CPU time in user mode.
    pub cpu_user: Duration,
    /// CPU time in the kernel on the process's behalf.
    pub cpu_system: Duration,
    /// Peak resident set size in bytes (`VmHWM`); 0 once the process has exited.
    pub peak_rss: u64,
}

impl ProcessUsage {
    /// Usage of two processes that ran one after the other in the same slot: CPU times
    /// add up, the peak is the higher one.
    pub fn then(self, later: Self) -> Self {
        Self {
            cpu_user: self.cpu_user + later.cpu_user,
            cpu_system: self.cpu_system + later.cpu_system,
            peak_rss: self.peak_rss.max(later.peak_rss),
        }
    }

    /// The later of two readings of the same process: counters only grow, so the larger
    /// one is the newer (a zombie's reading has CPU times but no memory).
    pub fn latest(self, other: Self) -> Self {
        Self {
            cpu_user: self.cpu_user.max(other.cpu_user),
            cpu_system: self.cpu_system.max(other.cpu_system),
            peak_rss: self.peak_rss.max(other.peak_rss),
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

/// Columns of the terminal on file descriptor `fd`, if it is one.
pub(crate) fn terminal_width(fd: i32) -> Option<u16> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which is valid for it.
    let done = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (done == 0 && size.ws_col > 0).then_some(size.ws_col)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::time::Duration;

    use super::ProcessUsage;

    pub fn process_usage(pid: u32) -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (utime, stime) = cpu_ticks(&stat)?;
        // A zombie has no memory map, hence no VmHWM: its peak is then unknown (0).
        let peak_rss = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| peak_rss(&s));
        let tick = ticks_per_second();
        Some(ProcessUsage {
            cpu_user: Duration::from_secs_f64(utime as f64 / tick),
            cpu_system: Duration::from_secs_f64(stime as f64 / tick),
            peak_rss: peak_rss.unwrap_or(0),
        })
    }

    /// Fields 14 and 15 of `/proc/PID/stat` (utime, stime), counted after the command
    /// name, which is in parentheses and may itself hold spaces and parentheses.
    pub fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        let mut fields = after_name.split_ascii_whitespace().skip(11);
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    }

    /// `VmHWM:  1234 kB` in `/proc/PID/status`, in bytes.
    pub fn peak_rss(status: &str) -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
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
        fn parses_peak_rss() {
            let status = "Name:\tcorepool-w0\nVmPeak:\t  10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
            assert_eq!(peak_rss(status), Some(2048 * 1024));
            assert_eq!(peak_rss("Name:\tzombie\n"), None);
        }

        #[test]
        fn reads_this_process() {
            let usage = process_usage(std::process::id()).expect("this process is alive");
            assert!(usage.peak_rss > 0);
        }
    }
}
