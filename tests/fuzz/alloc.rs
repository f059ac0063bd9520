//! A counting global allocator for the fuzz binary: the system allocator, plus the bytes
//! live now and at most, and a hard stop on any single request over [`LIMIT`] (a parser that
//! trusts a length field would ask for that much). The stop writes the input being checked to
//! a crash file, says so on stderr, and refuses the request, which aborts the process.
//!
//! Nothing here may allocate: the allocator would call itself.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest single allocation a parser may ask for.
pub const LIMIT: usize = 256 * 1024 * 1024;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The System allocator, counted.
pub struct Counting;

thread_local! {
    /// The input this thread is checking now, and a NUL-terminated path to write it to if
    /// it asks for too much ([`Checking`] sets both).
    static CURRENT: Cell<(*const u8, usize, *const u8)> =
        const { Cell::new((std::ptr::null(), 0, std::ptr::null())) };
}

/// Marks `input` as the one this thread checks until the guard drops; `oom_path` is a
/// NUL-terminated file name to write it to if an allocation is refused.
pub struct Checking;

impl Checking {
    pub fn new(input: &[u8], oom_path: &[u8]) -> Checking {
        debug_assert_eq!(oom_path.last(), Some(&0));
        CURRENT.with(|c| c.set((input.as_ptr(), input.len(), oom_path.as_ptr())));
        Checking
    }
}

impl Drop for Checking {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set((std::ptr::null(), 0, std::ptr::null())));
    }
}

/// Bytes allocated and not yet freed, in the whole process.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Most bytes live at once so far, in the whole process.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn too_big(size: usize) {
    let say = |s: &[u8]| {
        // SAFETY: `s` is a valid slice for the duration of the call; fd 2 is stderr.
        unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
    };
    say(b"\nfuzz: an allocation over 256 MiB was requested (");
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    say(&digits[i..]);
    say(b" bytes); aborting\n");
    let (ptr, len, path) =
        CURRENT
            .try_with(Cell::get)
            .unwrap_or((std::ptr::null(), 0, std::ptr::null()));
    if ptr.is_null() || path.is_null() {
        return;
    }
    // SAFETY: `path` points at a NUL-terminated byte string that the live `Checking` guard's
    // caller keeps alive; `ptr..ptr+len` is the input slice that guard was given, alive
    // for as long as the guard is (we are inside the check it guards).
    unsafe {
        let fd = libc::open(
            path.cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        if fd >= 0 {
            libc::write(fd, ptr.cast(), len);
            libc::close(fd);
            say(b"fuzz: the input is in ");
            say(std::ffi::CStr::from_ptr(path.cast()).to_bytes());
            say(b"\n");
        }
    }
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`; the bookkeeping only touches atomics
// and a thread-local `Cell`, and never allocates. A request over `LIMIT` returns null, which
// the contract allows (the caller then reports an allocation failure).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            too_big(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is (see the impl's comment).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > LIMIT {
            too_big(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > LIMIT {
            too_big(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}
