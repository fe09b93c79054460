//! Heap accounting per thread, so that a Rhai run is held to its `memory_bytes` as a whole.
//!
//! Rhai checks the size of one value when an operation produces it, but not what a script holds
//! altogether: a map grown one key at a time by index assignment (`m[k] = v`), or many values
//! each under the limit, were bounded only by time and fuel. Wasm has no such gap (its linear
//! memory is the limit), and Rhai offers no hook at allocation, so the process allocator counts
//! the bytes each thread holds, and a Rhai run compares that count with its limit at every
//! operation (see `sandbox::rhai`).
//!
//! It also counts the blocks a thread holds. A value nested in another needs a heap block of its
//! own, so a cap on blocks caps how deep a script's values can nest, and with it how much stack
//! Rhai's recursive walks over them (drop, clone, formatting, size checks) can take: a Rhai
//! value nested 20,000 deep and printed would otherwise overflow the vessel thread's stack and
//! abort the process.
//!
//! The wrapper adds one thread-local add to each allocation and free of the process, on top of
//! the system allocator, and takes no lock. A thread's count is what it allocated minus what it
//! freed, so memory freed by another thread stays on the allocating thread's count; a Rhai run
//! therefore leaves what belongs to its output (log lines sent to live followers, variables,
//! rows — bounded by `output_bytes` instead) out of the count with [`uncounted`].

// The allocator is the one place wharf needs `unsafe`: `GlobalAlloc` is an unsafe trait. Every
// call passes its arguments on to the system allocator unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting what each thread holds.
pub struct CountingAlloc;

/// One thread's count; `const`-initialised and without a destructor, so reading it never
/// allocates and works at any point of a thread's life.
struct Heap {
    /// Bytes held.
    live: Cell<i64>,
    /// Blocks held: every nested value needs one, so this bounds how deep values can nest.
    blocks: Cell<i64>,
    counting: Cell<bool>,
}

thread_local! {
    /// Set when this thread's stack may hold pages a deep walk touched; see [`retire_thread`].
    static RETIRE: Cell<bool> = const { Cell::new(false) };
    static HEAP: Heap = const {
        Heap {
            live: Cell::new(0),
            blocks: Cell::new(0),
            counting: Cell::new(true),
        }
    };
}

#[inline]
fn count(bytes: i64, blocks: i64) {
    let _ = HEAP.try_with(|h| {
        if h.counting.get() {
            h.live.set(h.live.get().wrapping_add(bytes));
            h.blocks.set(h.blocks.get().wrapping_add(blocks));
        }
    });
}

// SAFETY: every method hands its arguments to `System` unchanged and returns what it returns;
// the counting around it touches only a thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System::alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64, 1);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64, 1);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64), -1);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and `new_size` is the caller's, per `GlobalAlloc::realloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as i64 - layout.size() as i64, 0);
        }
        new
    }
}

/// What one thread holds on the heap, as counted so far. Only the difference between two
/// readings on one thread means anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Bytes allocated and not freed.
    pub bytes: i64,
    /// Blocks allocated and not freed.
    pub blocks: i64,
}

impl Held {
    /// What was taken on since `base`, an earlier reading on the same thread.
    pub fn since(self, base: Held) -> Held {
        Held {
            bytes: self.bytes - base.bytes,
            blocks: self.blocks - base.blocks,
        }
    }
}

/// What this thread holds now (one thread-local read, cheap enough for every Rhai operation).
#[inline]
pub fn held() -> Held {
    HEAP.try_with(|h| Held {
        bytes: h.live.get(),
        blocks: h.blocks.get(),
    })
    .unwrap_or_default()
}

/// Asks that this thread end once its job is done: a run on it held so many values that Rhai's
/// walks over them may have touched a large part of the stack, and a thread keeps the stack
/// pages it touched until it ends. The vessel pool honours it with [`take_retire`].
pub fn retire_thread() {
    RETIRE.set(true);
}

/// Whether this thread was asked to end (see [`retire_thread`]); clears the request.
pub fn take_retire() -> bool {
    RETIRE.replace(false)
}

/// Runs `f` without counting what it allocates or frees on this thread.
pub fn uncounted<T>(f: impl FnOnce() -> T) -> T {
    /// Puts the previous setting back, also when `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = HEAP.try_with(|h| h.counting.set(self.0));
        }
    }
    let _restore = Restore(HEAP.try_with(|h| h.counting.replace(false)).unwrap_or(true));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_counts_what_it_holds_and_not_what_is_uncounted() {
        let before = held();
        let kept = vec![0u8; 1 << 20];
        let during = held().since(before);
        assert_eq!(during.blocks, 1);
        assert!(
            (1 << 20..(1 << 20) + 4096).contains(&during.bytes),
            "{during:?}"
        );
        drop(kept);
        assert!(held().since(before).bytes < 4096);

        let kept = uncounted(|| vec![1u8; 1 << 20]);
        assert!(held().since(before).bytes < 4096, "an uncounted allocation");
        drop(kept);
        // Its free is counted: what leaves uncounted memory lowers the count, never raises it.
        assert!(held().since(before).bytes < -(1 << 19));
    }

    #[test]
    fn another_threads_allocations_are_its_own() {
        let before = held();
        let handle = std::thread::spawn(|| vec![0u8; 1 << 20]);
        let theirs = handle.join().unwrap();
        assert!(held().since(before).bytes < 4096);
        drop(theirs);
    }
}
