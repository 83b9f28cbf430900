//! The payloads of [`ToWorker::Batch`](crate::ToWorker::Batch) and of its answer: many
//! small, independent tasks in one frame each way, so that a burst of one-item calls
//! (`apply_async` per row) costs one message, not one per call.
//!
//! A batch holds, per task: its [`TaskRef`]: a name's length (`u32` little-endian, below
//! [`FUNCTION_MARK`]) and the name, or [`FUNCTION_MARK`] and a function's offset (`u64`);
//! then the payload's length (`u32`), the payload. Its answer holds, per task in the same order: a
//! status byte (0 done, 1 failed), a length (`u32`), then the outputs (done) or the encoded
//! [`TaskFailure`] (failed).

use crate::{TaskFailure, TaskRef, codec};

/// Where a name's length would be: the entry refers to a function by its offset.
pub const FUNCTION_MARK: u32 = u32::MAX;

/// Appends one task to a batch's payload.
pub fn push_task(out: &mut Vec<u8>, task: TaskRef<&str>, payload: &[u8]) {
    match task {
        TaskRef::Named(name) => {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        TaskRef::Function(offset) => {
            out.extend_from_slice(&FUNCTION_MARK.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a batch or its answer could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed batch: {0}")]
pub struct BatchError(&'static str);

fn take<'a>(bytes: &mut &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], BatchError> {
    if bytes.len() < len {
        return Err(BatchError(what));
    }
    let (head, tail) = bytes.split_at(len);
    *bytes = tail;
    Ok(head)
}

fn take_len(bytes: &mut &[u8], what: &'static str) -> Result<usize, BatchError> {
    let raw = take(bytes, 4, what)?;
    Ok(u32::from_le_bytes(raw.try_into().expect("four bytes")) as usize)
}

/// The tasks of a batch's payload, in order: `(task reference, payload)`.
pub fn tasks(mut bytes: &[u8]) -> impl Iterator<Item = Result<(TaskRef<&str>, &[u8]), BatchError>> {
    // The previous task's name: a batch's calls mostly name one task, checked once.
    let mut last = "";
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let entry = (|| {
            let name_len = take_len(&mut bytes, "task name length")?;
            let task = if name_len == FUNCTION_MARK as usize {
                let raw = take(&mut bytes, 8, "function offset")?;
                TaskRef::Function(u64::from_le_bytes(raw.try_into().expect("eight bytes")))
            } else {
                let raw = take(&mut bytes, name_len, "task name")?;
                let name = if raw == last.as_bytes() {
                    last
                } else {
                    std::str::from_utf8(raw).map_err(|_| BatchError("task name is not UTF-8"))?
                };
                last = name;
                TaskRef::Named(name)
            };
            let payload_len = take_len(&mut bytes, "payload length")?;
            Ok((task, take(&mut bytes, payload_len, "payload")?))
        })();
        if entry.is_err() {
            bytes = &[];
        }
        Some(entry)
    })
}

/// Appends one task's answer to a batch answer: `run` appends the outputs to the buffer it
/// is given, or returns the failure.
pub fn push_answer(
    out: &mut Vec<u8>,
    run: impl FnOnce(&mut Vec<u8>) -> Result<(), TaskFailure>,
) -> Result<(), codec::CodecError> {
    let start = out.len();
    out.push(0);
    out.extend_from_slice(&[0; 4]);
    if let Err(failure) = run(out) {
        out.truncate(start);
        out.push(1);
        out.extend_from_slice(&[0; 4]);
        codec::encode_into(&failure, out)?;
    }
    let len = (out.len() - start - 5) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The answers of a batch answer, in order: the outputs, or the failure.
pub fn answers(mut bytes: &[u8]) -> impl Iterator<Item = Result<Result<&[u8], TaskFailure>, BatchError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let entry = (|| {
            let status = take(&mut bytes, 1, "status")?[0];
            let len = take_len(&mut bytes, "answer length")?;
            let body = take(&mut bytes, len, "answer")?;
            match status {
                0 => Ok(Ok(body)),
                1 => codec::decode::<TaskFailure>(body).map(Err).map_err(|_| BatchError("undecodable failure")),
                _ => Err(BatchError("unknown status")),
            }
        })();
        if entry.is_err() {
            bytes = &[];
        }
        Some(entry)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;
    use proptest::prelude::*;

    #[test]
    fn tasks_and_answers_round_trip() {
        let mut batch = Vec::new();
        push_task(&mut batch, TaskRef::Named("a"), b"one");
        push_task(&mut batch, TaskRef::Named("bb"), b"");
        push_task(&mut batch, TaskRef::Function(0xdead_beef_0000), b"two");
        push_task(&mut batch, TaskRef::Named("a"), b"three");
        let read: Vec<_> = tasks(&batch).map(Result::unwrap).collect();
        assert_eq!(
            read,
            [
                (TaskRef::Named("a"), &b"one"[..]),
                (TaskRef::Named("bb"), &b""[..]),
                (TaskRef::Function(0xdead_beef_0000), &b"two"[..]),
                (TaskRef::Named("a"), &b"three"[..])
            ]
        );

        // A name is checked whenever it differs from the one before.
        let mut bad = Vec::new();
        push_task(&mut bad, TaskRef::Named("a"), b"");
        bad.extend_from_slice(&1u32.to_le_bytes());
        bad.push(0xff);
        bad.extend_from_slice(&0u32.to_le_bytes());
        let read: Vec<_> = tasks(&bad).collect();
        assert!(read[0].is_ok() && read[1].is_err(), "{read:?}");

        let failure = TaskFailure { kind: FailureKind::Panic, message: "no".into(), location: None };
        let mut answer = Vec::new();
        push_answer(&mut answer, |out| {
            out.extend_from_slice(b"ok");
            Ok(())
        })
        .unwrap();
        push_answer(&mut answer, |out| {
            out.extend_from_slice(b"partial");
            Err(failure.clone())
        })
        .unwrap();
        let read: Vec<_> = answers(&answer).map(Result::unwrap).collect();
        assert_eq!(read, [Ok(&b"ok"[..]), Err(failure)]);
    }

    proptest! {
        #[test]
        fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = tasks(&bytes).count();
            let _ = answers(&bytes).count();
        }
    }
}
