//! Plain functions sent to a worker by address.
//!
//! A worker is a copy of the coordinator's own program, so every function has the same
//! place in both, relative to any symbol of the program: the coordinator sends a
//! monomorphized trampoline's offset from a base function, the worker adds its own base function's
//! address and calls it. That holds only if the worker runs the very same executable file,
//! which it checks against the identity the coordinator sent (see [`program_identity`]);
//! a worker of another program refuses every function.

use std::{os::unix::fs::MetadataExt, panic::AssertUnwindSafe, path::PathBuf};

use corepool_protocol::{FailureKind, TaskFailure, codec};
use serde::{Serialize, de::DeserializeOwned};

use crate::task::Runner;

/// Environment variable holding the identity of the coordinator's program.
pub const IMAGE_ENV: &str = "COREPOOL_WORKER_IMAGE";
/// Environment variable holding the pool's initializer: its trampoline's offset and its
/// encoded arguments, both in hexadecimal, as `offset:arguments`.
pub const INITIALIZER_ENV: &str = "COREPOOL_WORKER_INITIALIZER";

/// Only the wrappers of this module are [`Call`]s: a trampoline makes its call's value out
/// of nothing, which only a function type may allow.
mod sealed {
    pub trait Sealed {}
    impl<F> Sealed for super::Single<F> {}
    impl<F> Sealed for super::Spread<F> {}
}

/// A function a worker can call on one decoded input: what a trampoline runs.
pub trait Call<In>: sealed::Sealed + Copy + 'static {
    /// What the function returns.
    type Out;
    /// Calls the function on `input`.
    fn call(self, input: In) -> Self::Out;
}

/// A function of one argument, called on each item (`map`).
#[derive(Clone, Copy)]
pub struct Single<F>(pub F);

impl<F, A, R> Call<A> for Single<F>
where
    F: Fn(A) -> R + Copy + 'static,
{
    type Out = R;

    fn call(self, input: A) -> R {
        (self.0)(input)
    }
}

/// A function of several arguments, called on each item's fields (`starmap`).
#[derive(Clone, Copy)]
pub struct Spread<F>(pub F);

macro_rules! spread {
    ($($arg:ident),+) => {
        impl<F, R, $($arg),+> Call<($($arg,)+)> for Spread<F>
        where
            F: Fn($($arg),+) -> R + Copy + 'static,
        {
            type Out = R;

            #[allow(non_snake_case)]
            fn call(self, ($($arg,)+): ($($arg,)+)) -> R {
                (self.0)($($arg),+)
            }
        }
    };
}

spread!(A);
spread!(A, B);
spread!(A, B, C);
spread!(A, B, C, D);
spread!(A, B, C, D, E);
spread!(A, B, C, D, E, G);

/// Fails to compile (at `cargo build`, not `cargo check`) unless `F` holds no data: a
/// function item or a closure that captures nothing, the only functions a worker can find
/// again by address. The coordinator checks the very type its trampoline conjures, so a
/// bad function gets this one error.
pub const fn assert_captures_nothing<F>() {
    const {
        assert!(
            size_of::<F>() == 0,
            "corepool: a function sent to workers must be a function item or a closure that \
             captures nothing: not a capturing closure or a fn pointer (pass the fn by its name, \
             not through a `fn(..)` variable; pass what a closure needs in the items, or with \
             PoolBuilder::initializer)"
        )
    };
}

/// The one value of a function type that captures nothing: `F` is a [`Call`] (a wrapper of
/// a function, which only closures and `fn` items are) or an initializer (`Fn`).
fn conjure<F: Copy>() -> F {
    assert_captures_nothing::<F>();
    // SAFETY: `F` is zero-sized and `Copy`, a fn item or a closure without captures: it
    // has exactly one value, made of no bytes.
    unsafe { std::mem::zeroed() }
}

/// The base symbol that function offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    // A body of its own, so that no identical function is folded into it.
    0x636f_7265_706f_6f6c
}

/// The offset of `runner` from this program's base function.
pub fn offset_of(runner: Runner) -> u64 {
    (runner as usize).wrapping_sub(anchor as fn() -> u64 as usize) as u64
}

/// The trampoline that runs `C` over a chunk: decodes the items, calls the function on
/// each (a panic becomes a failure the worker survives), encodes the outputs.
pub fn run_chunk<C: Call<In>, In: DeserializeOwned>(payload: &[u8], out: &mut Vec<u8>) -> Result<(), TaskFailure>
where
    C::Out: Serialize,
{
    let ((), inputs): ((), Vec<In>) = codec::decode(payload).map_err(|e| TaskFailure {
        kind: FailureKind::BadPayload,
        message: format!("{}: {e}", std::any::type_name::<In>()),
        location: None,
    })?;
    let call = conjure::<C>();
    let outputs = std::panic::catch_unwind(AssertUnwindSafe(|| {
        inputs.into_iter().map(|input| call.call(input)).collect::<Vec<_>>()
    }))
    .map_err(crate::panics::failure_from_panic)?;
    codec::encode_into(&outputs, out).map_err(|e| TaskFailure {
        kind: FailureKind::Error,
        message: format!("cannot encode the outputs: {e}"),
        location: None,
    })
}

/// What an initializer may return: nothing, or a `Result` whose error says what failed.
pub trait InitOutcome {
    /// `Err` with a message if the set-up failed.
    fn into_outcome(self) -> Result<(), String>;
}

impl InitOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> InitOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// The trampoline of an initializer `F` over arguments `A`: decodes them and calls it.
pub fn run_initializer<F, A, O>(payload: &[u8], _out: &mut Vec<u8>) -> Result<(), TaskFailure>
where
    F: Fn(A) -> O + Copy + 'static,
    A: DeserializeOwned,
    O: InitOutcome,
{
    let args: A = codec::decode(payload).map_err(|e| TaskFailure {
        kind: FailureKind::BadPayload,
        message: format!("its arguments: {e}"),
        location: None,
    })?;
    let initializer = conjure::<F>();
    match std::panic::catch_unwind(AssertUnwindSafe(|| initializer(args).into_outcome())) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(TaskFailure { kind: FailureKind::Error, message, location: None }),
        Err(panic) => Err(crate::panics::failure_from_panic(panic)),
    }
}

/// The identity of the executable file this process runs: its device, inode, size and
/// modification time. Two processes with the same identity run the same image, so a
/// function has the same offset in both. On Linux it is read through `/proc/self/exe`,
/// which names the file this process started from even if it was replaced since.
pub fn program_identity() -> std::io::Result<String> {
    let meta = std::fs::metadata(own_program()?)?;
    Ok(format!("{}:{}:{}:{}.{}", meta.dev(), meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// The path that starts this process's program again: `/proc/self/exe` on Linux (the very
/// file this process runs, even if it was rebuilt since), else the current executable.
pub fn own_program() -> std::io::Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_exe.exists() { Ok(proc_exe) } else { std::env::current_exe() }
}

/// Whether this worker may run functions sent by address, and why not.
#[derive(Debug, Clone)]
pub(crate) struct Functions {
    refused: Option<String>,
}

impl Functions {
    /// Compares this program with the coordinator's, whose identity the environment holds.
    pub(crate) fn from_env() -> Self {
        let expected = std::env::var(IMAGE_ENV).ok();
        let own = program_identity();
        let refused = match (expected, own) {
            (Some(expected), Ok(own)) if expected == own => None,
            (None, _) => Some("the coordinator did not say which program it runs".to_owned()),
            (Some(_), Err(e)) => Some(format!("this worker cannot identify its own program: {e}")),
            (Some(_), Ok(_)) => {
                let program =
                    std::env::current_exe().map_or_else(|_| "another program".into(), |p| p.display().to_string());
                Some(format!(
                    "this worker runs {program}, not the coordinator's own program, so a function sent by address \
                     means nothing here (start the pool without worker_program, or run a named Task)"
                ))
            }
        };
        Self { refused }
    }

    /// The trampoline at `offset`, once this program is known to be the coordinator's.
    pub(crate) fn runner(&self, offset: u64) -> Result<Runner, TaskFailure> {
        if let Some(reason) = &self.refused {
            return Err(TaskFailure { kind: FailureKind::ForeignProgram, message: reason.clone(), location: None });
        }
        let address = (anchor as fn() -> u64 as usize).wrapping_add(offset as usize);
        // SAFETY: this process runs the coordinator's own executable file (checked above),
        // so the address is that of the trampoline the coordinator took the offset of, a
        // `Runner` there and here alike.
        Ok(unsafe { std::mem::transmute::<usize, Runner>(address) })
    }

    /// Runs the initializer the environment names, if any.
    pub(crate) fn run_initializer_from_env(&self) -> Result<(), String> {
        let Ok(text) = std::env::var(INITIALIZER_ENV) else { return Ok(()) };
        let (offset, args) = text.split_once(':').ok_or("malformed initializer setting")?;
        let offset = u64::from_str_radix(offset, 16).map_err(|_| "malformed initializer offset")?;
        let args = decode_hex(args).ok_or("malformed initializer arguments")?;
        let runner = self.runner(offset).map_err(|failure| failure.message)?;
        runner(&args, &mut Vec::new()).map_err(|failure| match failure.location {
            Some(location) => format!("{} (at {location})", failure.message),
            None => failure.message,
        })
    }
}

/// `bytes` in hexadecimal, two digits a byte.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: i64) -> i64 {
        x * 2
    }

    fn trampoline_of<F: Fn(i64) -> i64 + Copy + 'static>(_: F) -> Runner {
        run_chunk::<Single<F>, i64>
    }

    #[test]
    fn a_trampoline_is_found_again_by_its_offset_and_runs() {
        let trampoline = trampoline_of(double);
        let functions = Functions { refused: None };
        let runner = functions.runner(offset_of(trampoline)).unwrap();
        assert_eq!(runner as usize, trampoline as usize);
        let payload = codec::encode(&((), vec![1i64, 2, 3])).unwrap();
        let mut out = Vec::new();
        runner(&payload, &mut out).unwrap();
        assert_eq!(codec::decode::<Vec<i64>>(&out).unwrap(), [2, 4, 6]);
    }

    #[test]
    fn a_foreign_program_refuses_functions() {
        let functions = Functions { refused: Some("no".into()) };
        assert_eq!(functions.runner(0).unwrap_err().kind, FailureKind::ForeignProgram);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(decode_hex(&encode_hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert!(decode_hex("abc").is_none());
    }
}
