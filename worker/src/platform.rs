//! The few calls that differ by operating system, behind one small face.

/// Asks the kernel to kill this process when the process that started it dies, then
/// checks that it has not died already (the request only covers deaths after it).
/// Returns `false` if the parent is already gone.
pub fn die_with_parent(expected_parent: Option<u32>) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
    }
    !expected_parent.is_some_and(parent_is_gone)
}

/// Whether the process that started this one, `expected_parent`, has exited (this
/// process then has another parent).
pub fn parent_is_gone(expected_parent: u32) -> bool {
    std::os::unix::process::parent_id() != expected_parent
}

/// Sets the name that `top`, `htop` and `ps -o comm` show (at most 15 bytes on Linux).
pub fn set_process_name(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes = [0u8; 16];
        let len = name.len().min(15);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which
        // `bytes` is for the duration of the call.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Leaves interrupts from the terminal to the coordinator: a Ctrl-C reaches the whole
/// foreground process group, and it is the coordinator's to decide what happens to the
/// work in flight.
pub fn ignore_terminal_interrupts() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Tunes the C allocator for a process that moves large buffers over and over: big blocks
/// come from the heap rather than fresh `mmap`s, and freed memory is kept for reuse rather
/// than given back at once. Without this, glibc maps and unmaps each multi-megabyte chunk
/// buffer, and the kernel zeroes every page of it again, which costs more than the
/// work on the chunk. For a worker program; a library does not change its host's allocator.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called at start-up, before any
    // other thread exists.
    unsafe {
        // The largest value glibc accepts for the mmap threshold (32 MiB on 64-bit).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Touches `bytes` of fresh heap memory and frees it again, so that the buffers of the
/// first tasks come from pages already mapped, sparing a worker's first task its page
/// faults (docs/performance.md). Worth
/// it only with [`keep_freed_memory_for_reuse`], which keeps the freed memory in the heap,
/// and only while the worker would otherwise wait for its first task.
pub fn warm_heap(bytes: usize) {
    // Not zeros: the allocator knows fresh memory is zero already, and would not touch it.
    std::hint::black_box(vec![1u8; bytes]);
}

/// Ends this worker process with `code` once its standard output is flushed, without the
/// C library's exit handlers and the shared libraries' destructors: a worker that has sent
/// its last answer has nothing left to do, and its coordinator waits for it to be gone.
pub fn exit_at_once(code: i32) -> ! {
    use std::io::Write;
    // What `std::process::exit` would flush: output a task printed without a newline.
    let _ = std::io::stdout().lock().flush();
    #[cfg(unix)]
    // SAFETY: _exit ends the process; it touches no memory of this one.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// What this process has used so far: CPU times and peak memory from `getrusage`, and its
/// resident memory now from `/proc/self/statm` (0 where the platform cannot say).
pub fn own_usage() -> corepool_protocol::ResourceUsage {
    let micros = |time: libc::timeval| (time.tv_sec.max(0) as u64) * 1_000_000 + time.tv_usec.max(0) as u64;
    // SAFETY: getrusage writes one `rusage` into the zeroed value it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    corepool_protocol::ResourceUsage {
        cpu_user_micros: micros(usage.ru_utime),
        cpu_system_micros: micros(usage.ru_stime),
        rss_bytes: resident_bytes().unwrap_or(0),
        // Linux counts it in KiB.
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
    }
}

/// Resident memory now: the second field of `/proc/self/statm`, in pages.
fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        // Opened once: a worker reads it with every answer it sends.
        static STATM: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
        let file = STATM.get_or_init(|| std::fs::File::open("/proc/self/statm").ok()).as_ref()?;
        let mut text = [0u8; 128];
        let len = file.read_at(&mut text, 0).ok()?;
        let statm = std::str::from_utf8(&text[..len]).ok()?;
        let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf reads a system constant.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page_size).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    None
}
