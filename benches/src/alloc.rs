//! Heap bytes live by side of a benchmark that runs brokers and their
//! clients in one process: the system allocator, counting what each
//! allocation adds and each free takes away against the side of the thread
//! doing it. A thread belongs to a side once [`mark_thread`] ran on it (the
//! runtimes' `on_thread_start`); until then it counts as [`Side::Other`].
//!
//! The sides talk only over sockets, so what one allocates the other does
//! not free; the split is exact up to that. A benchmark opts in by making
//! [`Counting`] its global allocator, and counts from [`enable`] on: until
//! then the allocator only reads one flag, so a run that does not count
//! pays nothing for it.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Whose thread allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Side {
    /// Not marked: the main thread, threads of libraries.
    Other = 0,
    /// The brokers' runtime.
    Brokers = 1,
    /// The clients' runtime (verifiers, relays).
    Clients = 2,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: [AtomicI64; 3] = [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)];

thread_local! {
    static SIDE: Cell<u8> = const { Cell::new(0) };
}

/// Count from now on (what was allocated before is not counted, and its
/// frees count as negative).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Count this thread's allocations and frees against `side` from now on.
pub fn mark_thread(side: Side) {
    SIDE.with(|s| s.set(side as u8));
}

/// Bytes allocated and not yet freed by threads of `side` (negative if they
/// freed more than they allocated since counting began).
pub fn live(side: Side) -> i64 {
    LIVE[side as usize].load(Ordering::Relaxed)
}

fn count(delta: i64) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    // During a thread's teardown its locals may be gone: count as Other.
    let side = SIDE.try_with(Cell::get).unwrap_or(0) as usize;
    LIVE[side.min(2)].fetch_add(delta, Ordering::Relaxed);
}

/// The system allocator, counting live bytes by [`Side`].
#[derive(Debug)]
pub struct Counting;

// SAFETY: every call goes to `System` with the caller's arguments
// unchanged; the counting touches only atomics and a const-initialised
// thread-local without destructor, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::alloc`, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::alloc_zeroed`, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `GlobalAlloc::dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `GlobalAlloc::realloc`, passed on.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}
