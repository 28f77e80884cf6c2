//! A global allocator that refuses any single allocation above a bound, so
//! a length read from a corrupt file cannot make the reader ask for
//! gigabytes unnoticed: the request is reported on stderr and the process
//! aborts, which the supervisor records as a finding with the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation allowed (bytes); `usize::MAX` until set.
static BOUND: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets the bound for every later allocation.
pub fn set_bound(bytes: usize) {
    BOUND.store(bytes, Ordering::SeqCst);
}

pub struct Capped;

/// Writes `prefix` and `n` in decimal to stderr without allocating.
fn report(size: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = size;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"dqm-fuzz: ALLOCATION BEYOND BOUND: ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(b" bytes requested\n");
}

fn check(size: usize) {
    if size > BOUND.load(Ordering::Relaxed) {
        report(size);
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// check only aborts before forwarding.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
