//! Turning a caught panic into a [`TaskFailure`] that names where it happened.

use std::{any::Any, cell::RefCell};

use corepool_protocol::{FailureKind, TaskFailure};

thread_local! {
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that records where a panic happened instead of
/// printing it: the failure travels back to the coordinator, which reports it.
pub fn record_panic_locations() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        LAST_LOCATION.with(|last| *last.borrow_mut() = location);
    }));
}

/// The failure for a panic caught by `catch_unwind`.
pub fn failure_from_panic(panic: Box<dyn Any + Send>) -> TaskFailure {
    let message = if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_owned()
    };
    let location = LAST_LOCATION.with(|last| last.borrow_mut().take());
    TaskFailure { kind: FailureKind::Panic, message, location }
}
