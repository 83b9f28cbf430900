//! The `corepool` program's memory allocator: the C library's (glibc's) in a worker,
//! mimalloc in the coordinator.
//!
//! One program is both (a pool's worker is this program started again), and each side
//! is faster with another allocator, as measured on a 2-core virtual machine where a page
//! fault costs 2-3.5 us (`scripts/bench`, 200,000 x 5, 2 workers):
//! - The coordinator makes many small blocks and frees them on other threads: an
//!   `AsyncResult` and a callback per `apply_async` call, about 170 bytes, all alive at
//!   once. mimalloc hands them out faster, frees across threads without a lock, and backs
//!   its memory with 2 MiB pages (apply_async 104 -> 78 ms; the coordinator's first
//!   200,000-row `map` job faulted 5 times instead of 250).
//! - A worker starts on every pool's critical path, and a process that allocates with
//!   mimalloc starts 0.4-0.6 ms later: its first block faults in a whole 2 MiB page. Even
//!   unused, mimalloc's C constructor set itself up in every process at load (options from
//!   the environment, two files read, its page map): the repository builds it without one
//!   (`.cargo/config.toml`), and [`use_mimalloc`] sets it up in the coordinator alone. A
//!   worker that gives up at its connect then took 0.38-0.43 ms of CPU instead of 0.60-0.66,
//!   and a 2-worker pool started in 1.43-1.54 ms instead of 1.68-1.77 (41 runs in each order).
//!
//! So allocations go to glibc until [`use_mimalloc`] is called, and to mimalloc after;
//! every block is freed (or grown) by the allocator that owns it, which mimalloc can tell
//! by its address.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, Ordering},
};

use mimalloc::MiMalloc;

/// Whether new blocks come from mimalloc.
static MIMALLOC_ON: AtomicBool = AtomicBool::new(false);

/// From now on, new blocks come from mimalloc: for the coordinator, not for a worker.
pub fn use_mimalloc() {
    // mimalloc is built without the constructor that sets it up at load (see
    // `.cargo/config.toml`): this does what it would have done, unless it did (a build with
    // CFLAGS of its own). The constructor's entry point takes the calling thread for the
    // main one, whose heap it binds to it; elsewhere (a test's thread) mimalloc's ordinary
    // set-up serves, which is correct but keeps it in its slower start-up mode.
    // SAFETY: these are mimalloc's own start-up calls, each made where it may be: before
    // any block comes from mimalloc, the first only on the process's main thread.
    unsafe {
        if _mi_preloading() {
            if libc::gettid() == libc::getpid() {
                _mi_auto_process_init();
            } else {
                libmimalloc_sys::mi_process_init();
            }
        }
    }
    MIMALLOC_ON.store(true, Ordering::Relaxed);
}

unsafe extern "C" {
    /// True until mimalloc is set up.
    fn _mi_preloading() -> bool;
    /// What mimalloc's constructor calls: sets up its options, arenas and main heap.
    fn _mi_auto_process_init();
}

/// glibc's allocator, or mimalloc's once [`use_mimalloc`] is called.
pub struct ProcessAllocator;

impl ProcessAllocator {
    /// Whether mimalloc gave out `block`: never before [`use_mimalloc`], so that a worker
    /// pays nothing for asking.
    fn from_mimalloc(block: *mut u8) -> bool {
        // SAFETY: asks mimalloc's page map whether an address is in its memory; any address
        // may be asked, and the map exists once the flag is set (`use_mimalloc` sets
        // mimalloc up first).
        MIMALLOC_ON.load(Ordering::Relaxed) && unsafe { libmimalloc_sys::mi_is_in_heap_region(block.cast()) }
    }
}

// SAFETY: each method hands its arguments to one of two allocators that uphold the
// `GlobalAlloc` contract. A block is allocated by one of them and freed or grown by the
// same one: the one that owns its address.
unsafe impl GlobalAlloc for ProcessAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC_ON.load(Ordering::Relaxed) {
            // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
            unsafe { MiMalloc.alloc(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if MIMALLOC_ON.load(Ordering::Relaxed) {
            // SAFETY: the caller upholds `alloc_zeroed`'s contract, passed on as is.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        } else {
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if Self::from_mimalloc(block) {
            // SAFETY: mimalloc gave out `block`, with `layout` (the caller's contract).
            unsafe { MiMalloc.dealloc(block, layout) }
        } else {
            // SAFETY: glibc gave out `block`, with `layout`.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::from_mimalloc(block) {
            // SAFETY: mimalloc gave out `block`, with `layout`; `new_size` is valid for it.
            unsafe { MiMalloc.realloc(block, layout, new_size) }
        } else {
            // SAFETY: glibc gave out `block`, with `layout`; `new_size` is valid for it.
            unsafe { System.realloc(block, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_made_before_the_switch_stay_with_glibc_and_new_ones_come_from_mimalloc() {
        // This test binary runs with `ProcessAllocator` too, switched off until here.
        let mut before: Vec<u64> = (0..1000).collect();
        use_mimalloc();
        let mut after: Vec<u64> = (0..1000).collect();
        assert!(!ProcessAllocator::from_mimalloc(before.as_mut_ptr().cast()));
        assert!(ProcessAllocator::from_mimalloc(after.as_mut_ptr().cast()));
        // Growing moves each block within its own allocator.
        before.extend(0..100_000);
        after.extend(0..100_000);
        assert!(!ProcessAllocator::from_mimalloc(before.as_mut_ptr().cast()));
        assert!(ProcessAllocator::from_mimalloc(after.as_mut_ptr().cast()));
        assert_eq!(before, after);
    }
}
