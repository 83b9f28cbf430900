//! Starting a worker process that dies with the pool, and waiting for it.

use std::{
    ffi::OsString,
    fs::File,
    io,
    os::{fd::OwnedFd, unix::process::ExitStatusExt},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

/// A worker process the pool started: its id, and its exit status once it is reaped.
/// Dropping it neither kills nor reaps it (as with [`std::process::Child`]).
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    exited: Option<ExitStatus>,
}

impl Child {
    /// Takes over a child the standard library started (whose handle neither kills nor
    /// reaps on drop): from here on it is waited for by its pid.
    pub fn from_std(child: std::process::Child) -> Self {
        Self { pid: child.id() as libc::pid_t, exited: None }
    }

    /// The process id, which stays this child's until it is reaped.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends SIGKILL, unless the child is reaped already.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        // SAFETY: kill takes a pid and a signal; the pid is this unreaped child's.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    /// Reaps the child if it has exited; `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits for the child to exit, and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.wait_with(0) {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => continue,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }

    fn wait_with(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.exited {
            return Ok(Some(status));
        }
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        match unsafe { libc::waitpid(self.pid, &mut status, flags) } {
            0 => Ok(None),
            -1 => Err(io::Error::last_os_error()),
            _ => {
                self.exited = Some(ExitStatus::from_raw(status));
                Ok(self.exited)
            }
        }
    }
}

/// Starts `program` as a worker: named `arg0`, this process's environment plus `env`,
/// standard input a pipe whose writing end is returned, standard output `/dev/null`,
/// standard error shared. The child dies with this process, whatever program it runs and
/// whatever that program does: on Linux its parent-death signal (SIGKILL) is set between
/// the child's creation and its `exec`, where no code of the child's can forget or delay
/// it, and a child whose parent died before the signal was set exits there at once.
///
/// On Linux the child is made by `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` makes
/// it, rather than by `fork`: nothing of this process's memory is copied or made
/// copy-on-write for a child that execs at once. Where that is not possible, the standard
/// library's `fork` with the same set-up before `exec` is used.
///
/// The signal comes when the *thread* that spawned the child exits: spawn from a thread
/// that lives as long as the children should.
pub(crate) fn spawn_dying_with_this_process(
    program: &Path,
    arg0: &str,
    env: &[(OsString, OsString)],
) -> io::Result<(Child, File)> {
    #[cfg(target_os = "linux")]
    if let Some(spawned) = linux_spawn::spawn(program, arg0, env) {
        return spawned;
    }
    spawn_by_fork(program, arg0, env)
}

/// [`spawn_dying_with_this_process`] with the standard library's `Command`.
fn spawn_by_fork(program: &Path, arg0: &str, env: &[(OsString, OsString)]) -> io::Result<(Child, File)> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command.arg0(arg0).envs(env.iter().map(|(key, value)| (key, value))).stdin(Stdio::piped()).stdout(Stdio::null());
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child and calls only prctl, getppid and
        // _exit, which are async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::_exit(EXIT_PARENT_GONE);
                }
                Ok(())
            })
        };
    }
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().map(|stdin| File::from(OwnedFd::from(stdin)));
    let stdin = stdin.ok_or_else(|| io::Error::other("the child has no standard input"))?;
    Ok((Child::from_std(child), stdin))
}

/// Exit code of a child whose parent died before it could run its program.
#[cfg(target_os = "linux")]
const EXIT_PARENT_GONE: i32 = 2;

/// Spawning with `clone(CLONE_VM | CLONE_VFORK)`: the child runs on a stack of its own in
/// this process's memory, and this thread waits until it has called `exec` or exited.
#[cfg(target_os = "linux")]
mod linux_spawn {
    use std::{
        ffi::{CString, OsStr, OsString},
        fs::File,
        io,
        os::{
            fd::{AsRawFd, FromRawFd, OwnedFd},
            unix::ffi::{OsStrExt, OsStringExt},
        },
        path::Path,
    };

    use super::{Child, EXIT_PARENT_GONE};

    /// The child's own stack: it makes a few system calls and nothing else.
    const STACK_BYTES: usize = 64 << 10;

    /// Everything the child needs, prepared by the parent, so that the child allocates
    /// nothing and calls only async-signal-safe functions.
    struct Prepared {
        program: CString,
        argv: [*const libc::c_char; 2],
        envp: Vec<*const libc::c_char>,
        stdin: libc::c_int,
        stdout: libc::c_int,
        parent: libc::pid_t,
        /// The highest signal number, whose handlers the child resets.
        last_signal: libc::c_int,
        /// What failed in the child before `exec` (an errno), written by the child, read by
        /// the parent once the child has left this memory.
        error: libc::c_int,
    }

    /// `None` where this way cannot be taken (a program found through `PATH`, a string
    /// with a NUL), for the caller to fall back to `fork`.
    pub fn spawn(program: &Path, arg0: &str, env: &[(OsString, OsString)]) -> Option<io::Result<(Child, File)>> {
        // `Command` searches `PATH` for a bare name; this way execs a path as it is.
        if !program.as_os_str().as_bytes().contains(&b'/') {
            return None;
        }
        let program = CString::new(program.as_os_str().as_bytes()).ok()?;
        let arg0 = CString::new(arg0).ok()?;
        let environment = environment(env)?;
        spawn_prepared(program, arg0, environment)
    }

    /// This process's environment with `env` set over it, as `KEY=VALUE` strings.
    fn environment(env: &[(OsString, OsString)]) -> Option<Vec<CString>> {
        let overridden = |key: &OsStr| env.iter().any(|(set, _)| set == key);
        let inherited = std::env::vars_os().filter(|(key, _)| !overridden(key));
        // As with `Command::env`, the last value given for a key wins.
        let set = env.iter().enumerate().filter(|&(at, (key, _))| !env[at + 1..].iter().any(|(later, _)| later == key));
        let pairs = inherited.chain(set.map(|(_, pair)| pair.clone()));
        pairs
            .map(|(key, value)| {
                let mut entry = key.into_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                CString::new(entry).ok()
            })
            .collect()
    }

    /// `None` if `clone` itself failed (a sandbox may forbid it), for the caller to fall back.
    fn spawn_prepared(program: CString, arg0: CString, environment: Vec<CString>) -> Option<io::Result<(Child, File)>> {
        let descriptors = pipe().and_then(|(read_end, write_end)| {
            let null = File::options().write(true).open("/dev/null")?;
            // Descriptors 0-2 are the ones the child replaces: its sources must lie above them.
            Ok((above_stdio(read_end)?, write_end, above_stdio(OwnedFd::from(null))?))
        });
        let (stdin, write_end, stdout) = match descriptors {
            Ok(descriptors) => descriptors,
            Err(error) => return Some(Err(error)),
        };
        let mut envp: Vec<*const libc::c_char> = environment.iter().map(|entry| entry.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut prepared = Prepared {
            argv: [arg0.as_ptr(), std::ptr::null()],
            program,
            envp,
            stdin: stdin.as_raw_fd(),
            stdout: stdout.as_raw_fd(),
            parent: std::process::id() as libc::pid_t,
            last_signal: libc::SIGRTMAX(),
            error: 0,
        };
        let mut stack = vec![0u8; STACK_BYTES];
        // The stack grows down on every architecture Linux and Rust share here; aligned to 16.
        let top = ((stack.as_mut_ptr() as usize + STACK_BYTES) & !15) as *mut libc::c_void;
        // SAFETY: sigset_t is plain data; the calls fill `all` and read the old mask into `old`.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old = all;
        // SAFETY: as above.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // No signal handler of this process may run in the child, which shares its memory:
        // signals stay blocked until the child has reset the handlers.
        // SAFETY: `child_main` gets `prepared`, which outlives the child's use of it (with
        // CLONE_VFORK this thread resumes only after the child's exec or exit), and a stack
        // of STACK_BYTES that nothing else uses meanwhile.
        let pid = unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut prepared).cast::<libc::c_void>(),
            )
        };
        // SAFETY: restores the mask read above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return None;
        }
        let mut child = Child { pid, exited: None };
        // SAFETY: the child has exec'd or exited; it writes nothing here any more.
        let error = unsafe { std::ptr::read_volatile(&raw const prepared.error) };
        if error != 0 {
            let _ = child.wait();
            return Some(Err(io::Error::from_raw_os_error(error)));
        }
        Some(Ok((child, File::from(write_end))))
    }

    /// The child, from `clone` to `exec`: async-signal-safe calls only, no allocation,
    /// no unwinding.
    extern "C" fn child_main(prepared: *mut libc::c_void) -> libc::c_int {
        // SAFETY: the parent passes its `Prepared`, alive and untouched until this child
        // execs or exits; every call below is an async-signal-safe system call wrapper.
        unsafe {
            let prepared = &mut *prepared.cast::<Prepared>();
            let fail = |prepared: &mut Prepared| -> ! {
                std::ptr::write_volatile(&raw mut prepared.error, *libc::__errno_location());
                libc::_exit(127)
            };
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                fail(prepared);
            }
            // The parent died before the signal was set: it will never come.
            if libc::getppid() != prepared.parent {
                libc::_exit(EXIT_PARENT_GONE);
            }
            // Handlers are the parent's code: default them before signals are let in. Ignored
            // signals stay ignored across exec, except SIGPIPE, which the Rust runtime ignores
            // for itself (as the standard library's spawn does).
            for signal in 1..=prepared.last_signal {
                let mut action: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                    continue;
                }
                let ignored = action.sa_sigaction == libc::SIG_IGN && signal != libc::SIGPIPE;
                if action.sa_sigaction != libc::SIG_DFL && !ignored {
                    let mut default: libc::sigaction = std::mem::zeroed();
                    default.sa_sigaction = libc::SIG_DFL;
                    libc::sigaction(signal, &default, std::ptr::null_mut());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::dup2(prepared.stdin, 0) < 0 || libc::dup2(prepared.stdout, 1) < 0 {
                fail(prepared);
            }
            libc::execve(prepared.program.as_ptr(), prepared.argv.as_ptr(), prepared.envp.as_ptr());
            fail(prepared)
        }
    }

    /// A pipe, both ends closed on exec.
    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both are new descriptors that nothing else owns.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// `fd`, moved to a number above 2 if it is one of 0-2 (closed on exec either way).
    fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor of an open one.
        let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(moved) })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        os::unix::process::ExitStatusExt,
        time::{Duration, Instant},
    };

    use super::*;

    /// `sh`, which reads its commands from the pipe (it gets no arguments but its name).
    fn shell(env: &[(&str, &str)]) -> io::Result<(Child, File)> {
        let env: Vec<(OsString, OsString)> = env.iter().map(|(key, value)| (key.into(), value.into())).collect();
        spawn_dying_with_this_process(Path::new("/bin/sh"), "sh", &env)
    }

    /// Waits at most 10 s for `child` to exit.
    fn wait_bounded(child: &mut Child) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("waitpid") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child did not exit within 10 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_child_reads_the_pipe_and_sees_the_environment_given() {
        let (mut child, mut stdin) =
            shell(&[("COREPOOL_SPAWN_TEST", "first"), ("COREPOOL_SPAWN_TEST", "last")]).expect("sh starts");
        stdin
            .write_all(b"test \"$COREPOOL_SPAWN_TEST\" = last && test -n \"$PATH\" && exit 7; exit 1\n")
            .expect("the pipe takes the line");
        drop(stdin);
        assert_eq!(wait_bounded(&mut child).code(), Some(7));
        assert_eq!(child.wait().expect("a reaped child answers again").code(), Some(7));
        child.kill().expect("killing a reaped child does nothing");
    }

    #[test]
    fn a_missing_program_is_an_error_and_leaves_no_child() {
        let error = spawn_dying_with_this_process(Path::new("/nonexistent/corepool-worker"), "w", &[])
            .expect_err("nothing to exec");
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
    }

    #[test]
    fn a_program_named_without_a_path_is_found_through_path() {
        let (mut child, stdin) = spawn_dying_with_this_process(Path::new("true"), "true", &[]).expect("true starts");
        drop(stdin);
        assert_eq!(wait_bounded(&mut child).code(), Some(0));
    }

    /// The child's program never asks for the signal: it was set before its `exec`.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_child_dies_when_the_thread_that_started_it_ends() {
        let spawner = std::thread::spawn(|| shell(&[]).expect("sh starts"));
        let (mut child, mut stdin) = spawner.join().expect("the spawning thread ends");
        // Were it alive, it would sleep for a minute.
        let _ = stdin.write_all(b"sleep 60\n");
        let status = wait_bounded(&mut child);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    /// A signal blocked in the spawning thread is not blocked in the child.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_child_starts_with_no_signal_blocked() {
        // SAFETY: sigset_t is plain data; this changes only this test thread's mask.
        let spawned = unsafe {
            let mut term: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut term);
            libc::sigaddset(&mut term, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &term, std::ptr::null_mut());
            let spawned = shell(&[]);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
            spawned
        };
        let (mut child, mut stdin) = spawned.expect("sh starts");
        stdin.write_all(b"kill -TERM $$; exit 0\n").expect("the pipe takes the line");
        drop(stdin);
        assert_eq!(wait_bounded(&mut child).signal(), Some(libc::SIGTERM));
    }
}
