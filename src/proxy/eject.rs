//! Hot side: passive ejection — a backend whose connects keep failing gets no new sessions
//! for a while (`[route.eject]`, README "Backend protection").
//!
//! Detection is per worker and lock-free: each worker counts the consecutive failed connects
//! of each backend in that backend's [`Ejection`] (beside its other `Cell` counters in
//! [`crate::metrics::local::BackendMetrics`], so it survives route generations), ejects it
//! on its own after `eject.after` of them, and skips it in its own picks until the time
//! passes. No message, no shared state: what a worker sees is what it tried itself, so a
//! backend that refuses is ejected by each worker after that worker's own `after` failures
//! (which the connect retries hide from clients). The control thread only reads: each
//! snapshot carries the end of the backend's ejection on that worker, and `/status` and
//! `/metrics` show on how many workers it is out.
//!
//! The length doubles with each ejection that follows the previous return within
//! `eject.max_time`, up to `max_time`; a backend that stayed in for `max_time` starts again
//! from `eject.time`. How many of a route's backends may be out at once is decided by the
//! route ([`crate::config::Eject::allowed`]) when a backend would be ejected.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::config::Eject;

/// One backend's ejection state on one worker.
#[derive(Debug, Default)]
pub struct Ejection {
    /// Failed connects since the last success (or the last ejection).
    failures: Cell<u32>,
    /// The end of the current (or last, until a pick notices it is over) ejection.
    until: Cell<Option<Instant>>,
    /// When the last ejection ended (or ends): a new one within `max_time` of it doubles.
    last_end: Cell<Option<Instant>>,
    /// The doubling step of the last ejection (1: `time`, 2: twice it, ...).
    level: Cell<u32>,
    /// Ejections on this worker since start (exported, summed over workers).
    count: Cell<u64>,
}

impl Ejection {
    /// The end of its ejection, if one was set and no pick has yet seen it over (may be in
    /// the past).
    #[inline]
    pub fn until(&self) -> Option<Instant> {
        self.until.get()
    }

    /// True while ejected at `now`.
    #[inline]
    pub fn out(&self, now: Instant) -> bool {
        self.until.get().is_some_and(|u| u > now)
    }

    /// Ejections on this worker so far.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// A connect succeeded: the failures in a row start again from zero.
    #[inline]
    pub fn succeeded(&self) {
        if self.failures.get() != 0 {
            self.failures.set(0);
        }
    }

    /// Forgets an ejection that is over (a pick saw it so); true when there was one.
    #[cold]
    pub fn returned(&self) -> bool {
        self.until.take().is_some()
    }

    /// A connect failed at `now`. Ejects the backend when that makes `cfg.after` in a row
    /// and `room` (the route's `max_percent` allows one more out); returns how long for.
    /// A failure while out (a retry that had nowhere else to go) counts for nothing; one
    /// without room stays counted and ejects at the next failure once there is room.
    #[cold]
    pub fn failed(
        &self,
        now: Instant,
        cfg: &Eject,
        room: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let after = cfg.after?.get();
        if self.out(now) {
            return None;
        }
        let failures = self.failures.get().saturating_add(1);
        self.failures.set(failures);
        if failures < after || !room() {
            return None;
        }
        let level = match self.last_end.get() {
            Some(end) if now.saturating_duration_since(end) < cfg.max_time => {
                self.level.get().saturating_add(1)
            }
            _ => 1,
        };
        let time = cfg
            .time
            .checked_mul(1u32 << (level - 1).min(31))
            .map_or(cfg.max_time, |t| t.min(cfg.max_time));
        let end = now + time;
        self.level.set(level);
        self.until.set(Some(end));
        self.last_end.set(Some(end));
        self.failures.set(0);
        self.count.set(self.count.get().wrapping_add(1));
        Some(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn cfg() -> Eject {
        Eject {
            after: NonZeroU32::new(3),
            time: Duration::from_millis(500),
            max_time: Duration::from_secs(2),
            max_percent: 50,
        }
    }

    /// Fails `n` times at `now`; what the last failure did.
    fn fail(e: &Ejection, n: u32, now: Instant) -> Option<Duration> {
        (0..n)
            .map(|_| e.failed(now, &cfg(), || true))
            .last()
            .flatten()
    }

    #[test]
    fn ejects_after_failures_in_a_row_only() {
        let e = Ejection::default();
        let t0 = Instant::now();
        assert_eq!(fail(&e, 2, t0), None);
        e.succeeded();
        assert_eq!(fail(&e, 2, t0), None, "a success starts the count again");
        assert!(!e.out(t0));
        assert_eq!(fail(&e, 1, t0), Some(Duration::from_millis(500)));
        assert!(e.out(t0));
        assert!(e.out(t0 + Duration::from_millis(499)));
        assert!(!e.out(t0 + Duration::from_millis(500)));
        assert_eq!(e.count(), 1);
        // While out, failures count for nothing: back in, it takes three again.
        assert_eq!(fail(&e, 5, t0 + Duration::from_millis(100)), None);
        assert_eq!(e.count(), 1);
        let back = t0 + Duration::from_millis(500);
        assert_eq!(fail(&e, 2, back), None);
        assert!(fail(&e, 1, back).is_some());
    }

    #[test]
    fn repeated_ejections_double_up_to_the_cap_and_reset_after_a_quiet_max_time() {
        let e = Ejection::default();
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..5 {
            e.succeeded();
            let d = fail(&e, 3, now).expect("ejected");
            lengths.push(d.as_millis());
            // Back when the time is over; fails again at once.
            now += d;
            assert!(!e.out(now));
            assert!(e.returned());
            assert!(!e.returned());
        }
        assert_eq!(lengths, [500, 1000, 2000, 2000, 2000]);
        // In for max_time (2 s) since its return: from the base again.
        now += Duration::from_secs(2);
        assert_eq!(fail(&e, 3, now), Some(Duration::from_millis(500)));
        assert_eq!(e.count(), 6);
    }

    #[test]
    fn no_room_no_ejection_and_off_is_off() {
        let e = Ejection::default();
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(e.failed(now, &cfg(), || false), None);
        }
        assert!(!e.out(now));
        // Room again: the next failure ejects (the count was kept).
        assert!(e.failed(now, &cfg(), || true).is_some());
        let off = Eject {
            after: None,
            ..cfg()
        };
        let e = Ejection::default();
        for _ in 0..100 {
            assert_eq!(e.failed(now, &off, || true), None);
        }
        assert_eq!(e.count(), 0);
    }
}
