//! Hot side, once a second: handing the memory a worker freed back to the OS.
//!
//! The allocator keeps what a thread frees in that thread's heap: empty pages wait there for
//! reuse, and are returned to the OS (purged) only when that same thread next allocates or
//! frees enough to look at them. A worker that goes quiet after a peak would hold its peak
//! for as long as it stays quiet. So, once a second after the pools' trim, the worker asks
//! the allocator to collect its own heap: a normal collection while sessions are open (pages
//! that are wholly free go back; cheap), a forced one (every page visited, every pending
//! purge done now) once it has had no session for [`QUIET_TICKS`] ticks, when the pools
//! have freed their spares too.
//!
//! Which allocator runs is the binary's choice (`#[global_allocator]` in `main.rs`), so the
//! binary installs the collection with [`set_release`]; with none installed (the library's
//! own tests) nothing is done.

use std::sync::OnceLock;

/// Ticks without a session before a forced collection: the pools free the spares that went
/// unused for a whole tick, so after two such ticks they hold none.
pub const QUIET_TICKS: u32 = 2;

static RELEASE: OnceLock<fn(bool)> = OnceLock::new();

/// Installs `release(force)`, which collects the calling thread's allocator heap and returns
/// freed memory to the OS (`force`: all of it, now). Call once, before the workers start;
/// a second call changes nothing and returns false.
pub fn set_release(release: fn(force: bool)) -> bool {
    RELEASE.set(release).is_ok()
}

/// Counts a worker's quiet ticks and collects its heap once per tick.
#[derive(Debug, Default)]
pub struct Release {
    quiet: u32,
}

impl Release {
    /// One tick (after the pools' trim); `idle`: the worker holds no session now.
    pub fn tick(&mut self, idle: bool) {
        self.quiet = if idle {
            self.quiet.saturating_add(1)
        } else {
            0
        };
        if let Some(release) = RELEASE.get() {
            release(self.quiet >= QUIET_TICKS);
        }
    }
}
