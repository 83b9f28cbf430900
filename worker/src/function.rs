//! Plain functions sent to a worker by address.
//!
//! A worker is a copy of the coordinator's own program, so every function has the same
//! place in both, relative to any symbol of the program: the coordinator sends a
//! monomorphized trampoline's offset from a base function, the worker adds its own base function's
//! address and calls it. That holds only if the worker runs the very same executable file,
//! which it checks against the identity the coordinator sent (see [`program_identity`],
//! and [`content_identity`] for ranks on other hosts); a worker of another program refuses
//! every function.

use std::{os::unix::fs::MetadataExt, panic::AssertUnwindSafe, path::PathBuf, sync::OnceLock};

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

/// The identity of this process's program by its content, the same on every host that
/// runs the same build: `build-id:` and the GNU build-id the linker wrote into the
/// executable (read from the loaded image's notes), or, for an executable without one,
/// `sha256:` and the hash of its file. Worked out once per process.
pub fn content_identity() -> Result<String, String> {
    static IDENTITY: OnceLock<Result<String, String>> = OnceLock::new();
    IDENTITY
        .get_or_init(|| match loaded_build_id() {
            Some(id) => Ok(format!("build-id:{}", encode_hex(&id))),
            None => file_hash().map(|hash| format!("sha256:{hash}")),
        })
        .clone()
}

/// The SHA-256 of this process's executable file, in hexadecimal.
fn file_hash() -> Result<String, String> {
    use sha2::Digest;
    let path = own_program().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(encode_hex(&hasher.finalize()))
}

/// The type of the GNU build-id note (`NT_GNU_BUILD_ID`).
const NT_GNU_BUILD_ID: u32 = 3;

/// The GNU build-id among the ELF notes `notes` (the bytes of one `PT_NOTE` segment, in
/// this machine's byte order, its entries aligned to `align`), if one is there.
pub fn build_id_in_notes(notes: &[u8], align: usize) -> Option<&[u8]> {
    let align = align.max(4);
    let mut rest = notes;
    loop {
        let word = |at: usize| rest.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (name_len, desc_len, kind) = (word(0)?, word(4)?, word(8)?);
        let desc_start = 12usize.checked_add(name_len)?.checked_next_multiple_of(align)?;
        let desc_end = desc_start.checked_add(desc_len)?;
        let name = rest.get(12..12 + name_len)?;
        let desc = rest.get(desc_start..desc_end)?;
        if kind == NT_GNU_BUILD_ID as usize && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        rest = rest.get(desc_end.checked_next_multiple_of(align)?.min(rest.len())..)?;
    }
}

/// The build-id of the executable this process runs, from its notes as loaded in memory
/// (no file is read); `None` if it has none.
#[cfg(target_os = "linux")]
fn loaded_build_id() -> Option<Vec<u8>> {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, found: *mut libc::c_void) -> libc::c_int {
        // SAFETY: the loader passes a valid description of a loaded object, and `found` is
        // the `Option` that `loaded_build_id` lends for this call.
        let (info, found) = unsafe { (&*info, &mut *found.cast::<Option<Vec<u8>>>()) };
        for index in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
            let header = unsafe { &*info.dlpi_phdr.add(index) };
            if header.p_type != libc::PT_NOTE {
                continue;
            }
            let start = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize) as *const u8;
            // SAFETY: a PT_NOTE segment of a loaded object is mapped, readable, for its
            // memory size, at its load address plus its virtual address.
            let notes = unsafe { std::slice::from_raw_parts(start, header.p_memsz as usize) };
            if let Some(id) = build_id_in_notes(notes, header.p_align as usize) {
                *found = Some(id.to_vec());
                break;
            }
        }
        // The first object is the program itself: no need to look further.
        1
    }
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: `visit` only reads what the loader describes, and writes `found`, which
    // outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&raw mut found).cast());
    }
    found
}

#[cfg(not(target_os = "linux"))]
fn loaded_build_id() -> Option<Vec<u8>> {
    None
}

/// What a coordinator tells a worker that joins it over a transport that starts no
/// process (MPI): what a local worker finds in its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JoinSettings {
    /// The coordinator's program by its content ([`content_identity`]), if it could tell.
    pub identity: Option<String>,
    /// The pool's initializer, as [`INITIALIZER_ENV`] holds it, if it has one.
    pub initializer: Option<String>,
    /// The worker's process name, such as `corepool-w0`.
    pub name: String,
}

/// The settings this process was given as it joined (see [`adopt_join_settings`]).
static JOINED: OnceLock<JoinSettings> = OnceLock::new();

/// Takes what the coordinator sent as this worker joined in place of the environment
/// (functions are then checked by [`content_identity`]), and takes its process name.
/// Call before serving; only the first call counts.
pub fn adopt_join_settings(settings: JoinSettings) {
    crate::platform::set_process_name(&settings.name);
    let _ = JOINED.set(settings);
}

/// Whether this worker may run functions sent by address, and why not.
#[derive(Debug, Clone)]
pub(crate) struct Functions {
    refused: Option<String>,
}

impl Functions {
    /// Compares this program with the coordinator's, whose identity the environment holds
    /// (or the settings sent as this worker joined, see [`adopt_join_settings`]).
    pub(crate) fn from_env() -> Self {
        if let Some(joined) = JOINED.get() {
            return Self::by_content(joined.identity.as_deref(), content_identity());
        }
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

    /// Compares this program's content identity `own` with the coordinator's, `expected`.
    fn by_content(expected: Option<&str>, own: Result<String, String>) -> Self {
        let refused = match (expected, own) {
            (Some(expected), Ok(own)) if expected == own => None,
            (None, _) => Some("the coordinator could not say which program it runs".to_owned()),
            (Some(_), Err(e)) => Some(format!("this worker cannot identify its own program: {e}")),
            (Some(expected), Ok(own)) => {
                let program =
                    std::env::current_exe().map_or_else(|_| "another program".into(), |p| p.display().to_string());
                Some(format!(
                    "this worker runs {program} ({own}), not the coordinator's own program ({expected}), so a \
                     function sent by address means nothing here (run the same build on every rank, or a named Task)"
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

    /// Runs the initializer the environment (or the settings sent at joining) names, if any.
    pub(crate) fn run_initializer_from_env(&self) -> Result<(), String> {
        let setting = match JOINED.get() {
            Some(joined) => joined.initializer.clone(),
            None => std::env::var(INITIALIZER_ENV).ok(),
        };
        let Some(text) = setting else { return Ok(()) };
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

    /// One ELF note: its header, its name and its description, each padded to `align`.
    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [name.len() as u32, desc.len() as u32, kind] {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len().next_multiple_of(align), 0);
        bytes.extend_from_slice(desc);
        bytes.resize(bytes.len().next_multiple_of(align), 0);
        bytes
    }

    #[test]
    fn the_build_id_is_found_among_other_notes() {
        let id = [0xc0, 0x40, 0x90, 0x7a, 0xd5, 0x3c, 0x06, 0x5c, 0x5c, 0x02];
        let mut notes = note(b"GNU\0", 5, &[1, 2, 3, 4, 5, 6, 7, 8], 4);
        notes.extend(note(b"stapsdt\0", 3, &[9; 5], 4));
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &id, 4));
        assert_eq!(build_id_in_notes(&notes, 4), Some(&id[..]));
        let aligned = [note(b"GNU\0", 5, &[7; 12], 8), note(b"GNU\0", NT_GNU_BUILD_ID, &id, 8)].concat();
        assert_eq!(build_id_in_notes(&aligned, 8), Some(&id[..]));
    }

    #[test]
    fn notes_without_a_build_id_or_cut_short_give_none() {
        let other = note(b"GNU\0", 1, &[0; 16], 4);
        assert_eq!(build_id_in_notes(&other, 4), None);
        assert_eq!(build_id_in_notes(&[], 4), None);
        let whole = note(b"GNU\0", NT_GNU_BUILD_ID, &[1; 20], 4);
        for cut in [3, 11, 15, 20, whole.len() - 1] {
            assert_eq!(build_id_in_notes(&whole[..cut], 4), None, "cut at {cut}");
        }
        let huge = [u32::MAX.to_ne_bytes(), 4u32.to_ne_bytes(), 3u32.to_ne_bytes()].concat();
        assert_eq!(build_id_in_notes(&huge, 4), None);
    }

    #[test]
    fn this_test_binary_has_the_build_id_its_file_holds() {
        let identity = content_identity().unwrap();
        let id = identity.strip_prefix("build-id:").expect("rustc links with a build-id here");
        let file = std::fs::read(own_program().unwrap()).unwrap();
        let id = decode_hex(id).unwrap();
        assert!(file.windows(id.len()).any(|window| window == id), "the build-id is in the file");
        assert_eq!(content_identity().unwrap(), identity, "the same each time");
    }

    #[test]
    fn the_fallback_hashes_the_whole_executable_file() {
        use sha2::Digest;
        let file = std::fs::read(own_program().unwrap()).unwrap();
        let hash = file_hash().unwrap();
        assert_eq!(hash, encode_hex(&sha2::Sha256::digest(&file)));
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn a_rank_of_another_build_refuses_functions_and_names_both() {
        let same = Functions::by_content(Some("build-id:ab"), Ok("build-id:ab".into()));
        assert!(same.refused.is_none());
        let other = Functions::by_content(Some("build-id:ab"), Ok("build-id:cd".into()));
        let failure = other.runner(0).unwrap_err();
        assert_eq!(failure.kind, FailureKind::ForeignProgram);
        assert!(failure.message.contains("(build-id:cd), not the coordinator's own program (build-id:ab)"));
        assert!(Functions::by_content(None, Ok("build-id:ab".into())).refused.is_some());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(decode_hex(&encode_hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert!(decode_hex("abc").is_none());
    }
}
