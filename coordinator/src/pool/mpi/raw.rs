//! Thin wrappers over the few MPI calls rsmpi's safe API cannot express with owned buffers
//! (a request that outlives the borrow of its buffer, a matched non-blocking receive).

use std::{
    ffi::{c_int, c_void},
    mem::MaybeUninit,
    ptr,
};

use mpi::ffi;

use super::MpiError;

/// Turns an MPI return code into a result naming the call.
pub(super) fn check(call: &'static str, code: c_int) -> Result<(), MpiError> {
    if code == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    let mut text = vec![0u8; ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING bytes, as MPI_Error_string requires.
    unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr().cast(), &mut len) };
    text.truncate(len.max(0) as usize);
    Err(MpiError::Call { call, code, text: String::from_utf8_lossy(&text).into_owned() })
}

/// `MPI_COMM_WORLD`.
pub(super) fn world() -> ffi::MPI_Comm {
    // SAFETY: a constant that rsmpi's C shim sets once.
    unsafe { ffi::RSMPI_COMM_WORLD }
}

fn bytes_type() -> ffi::MPI_Datatype {
    // SAFETY: as for `world`.
    unsafe { ffi::RSMPI_UINT8_T }
}

/// Makes MPI calls on the world communicator return errors instead of aborting the job.
pub(super) fn errors_return() -> Result<(), MpiError> {
    // SAFETY: both handles are MPI's own constants.
    check("MPI_Comm_set_errhandler", unsafe { ffi::MPI_Comm_set_errhandler(world(), ffi::RSMPI_ERRORS_RETURN) })
}

/// A request that has been started and not yet completed.
pub(super) struct Request(ffi::MPI_Request);

impl Request {
    /// Whether the operation has completed (the request is then spent).
    pub(super) fn test(&mut self) -> Result<bool, MpiError> {
        let mut done: c_int = 0;
        // SAFETY: the request came from an MPI call and is completed at most once.
        check("MPI_Test", unsafe { ffi::MPI_Test(&mut self.0, &mut done, ffi::RSMPI_STATUS_IGNORE) })?;
        Ok(done != 0)
    }
}

/// Starts sending `pieces` (in order, as one message) to `rank` with `tag`.
///
/// # Safety
/// The pieces' bytes must stay where they are, unchanged, until the request completes.
pub(super) unsafe fn start_send(pieces: &[&[u8]], rank: usize, tag: c_int) -> Result<Request, MpiError> {
    let total: usize = pieces.iter().map(|piece| piece.len()).sum();
    let len = c_int::try_from(total).map_err(|_| MpiError::TooLong { len: total })?;
    let filled: Vec<&[u8]> = pieces.iter().copied().filter(|piece| !piece.is_empty()).collect();
    let rank = rank as c_int;
    let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
    if filled.len() <= 1 {
        let start = filled.first().map_or(ptr::NonNull::<u8>::dangling().as_ptr().cast_const(), |p| p.as_ptr());
        // SAFETY: `start` holds `len` bytes that the caller keeps in place until completion.
        check("MPI_Isend", unsafe {
            ffi::MPI_Isend(start.cast::<c_void>(), len, bytes_type(), rank, tag, world(), request.as_mut_ptr())
        })?;
    } else {
        // Several pieces go out as one message without a copy: one datatype over their
        // absolute addresses, sent from MPI_BOTTOM.
        let lens: Vec<c_int> = filled.iter().map(|piece| piece.len() as c_int).collect();
        let places: Vec<ffi::MPI_Aint> = filled.iter().map(|piece| piece.as_ptr() as ffi::MPI_Aint).collect();
        let mut datatype = MaybeUninit::<ffi::MPI_Datatype>::uninit();
        // SAFETY: the arrays hold `filled.len()` entries each; the new type is committed,
        // used once, and freed (MPI frees it once the send no longer needs it).
        unsafe {
            check(
                "MPI_Type_create_hindexed",
                ffi::MPI_Type_create_hindexed(
                    filled.len() as c_int,
                    lens.as_ptr(),
                    places.as_ptr(),
                    bytes_type(),
                    datatype.as_mut_ptr(),
                ),
            )?;
            let mut datatype = datatype.assume_init();
            check("MPI_Type_commit", ffi::MPI_Type_commit(&mut datatype))?;
            // MPI_BOTTOM is address 0 in Open MPI and MPICH alike.
            let sent = ffi::MPI_Isend(ptr::null(), 1, datatype, rank, tag, world(), request.as_mut_ptr());
            check("MPI_Type_free", ffi::MPI_Type_free(&mut datatype))?;
            check("MPI_Isend", sent)?;
        }
    }
    // SAFETY: MPI_Isend succeeded, so it wrote the request.
    Ok(Request(unsafe { request.assume_init() }))
}

/// A message found by a probe and matched to this process: only a receive can take it now.
pub(super) struct Matched {
    message: ffi::MPI_Message,
    /// Who sent it.
    pub(super) rank: usize,
    /// Its tag.
    pub(super) tag: c_int,
    /// Its length in bytes.
    pub(super) len: usize,
}

/// Looks, without waiting, for a message from any rank with any tag, and matches it.
pub(super) fn matched_probe() -> Result<Option<Matched>, MpiError> {
    let mut found: c_int = 0;
    let mut message = MaybeUninit::<ffi::MPI_Message>::uninit();
    let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
    // SAFETY: out-pointers to memory of the right types; constants are MPI's own.
    check("MPI_Improbe", unsafe {
        ffi::MPI_Improbe(
            ffi::RSMPI_ANY_SOURCE,
            ffi::RSMPI_ANY_TAG,
            world(),
            &mut found,
            message.as_mut_ptr(),
            status.as_mut_ptr(),
        )
    })?;
    if found == 0 {
        return Ok(None);
    }
    // SAFETY: a message was found, so MPI wrote both.
    let (message, status) = unsafe { (message.assume_init(), status.assume_init()) };
    let mut len: c_int = 0;
    // SAFETY: the status of the probe just made.
    check("MPI_Get_count", unsafe { ffi::MPI_Get_count(&status, bytes_type(), &mut len) })?;
    Ok(Some(Matched { message, rank: status.MPI_SOURCE as usize, tag: status.MPI_TAG, len: len.max(0) as usize }))
}

impl Matched {
    /// Starts receiving the message into `into`'s spare room, which must hold `self.len`
    /// bytes.
    ///
    /// # Safety
    /// `into` must not be touched (moved, grown, read) until the request completes; its
    /// length may then be set to `self.len`.
    pub(super) unsafe fn start_receive(mut self, into: &mut Vec<u8>) -> Result<Request, MpiError> {
        assert!(into.capacity() - into.len() >= self.len, "the buffer has room for the message");
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: the spare room holds `len` bytes and stays put, as the caller promises.
        check("MPI_Imrecv", unsafe {
            ffi::MPI_Imrecv(
                into.spare_capacity_mut().as_mut_ptr().cast(),
                self.len as c_int,
                bytes_type(),
                &mut self.message,
                request.as_mut_ptr(),
            )
        })?;
        // SAFETY: MPI_Imrecv succeeded, so it wrote the request.
        Ok(Request(unsafe { request.assume_init() }))
    }
}

/// Ends the whole job: every rank on every host, with `code`.
pub(super) fn abort(code: c_int) -> ! {
    // SAFETY: MPI is running; MPI_Abort does not return when it works.
    unsafe { ffi::MPI_Abort(world(), code) };
    std::process::exit(code)
}
