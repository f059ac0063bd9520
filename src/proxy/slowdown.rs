//! Hot side, test-only: a deliberate slowdown for verifying `scripts/perf-check`.
//!
//! Built only with `--features perf-check-slowdown`: every relayed chunk then burns
//! [`SPIN`] of CPU, which makes a small keep-alive request (two chunks, ~13 µs of proxy CPU on
//! the reference machine) about 25 % more expensive. The regression check must fail on such a
//! build; `bench/README.md` shows how to run that self-test. Never enabled by default.

use std::time::{Duration, Instant};

/// CPU burned per relayed chunk.
pub const SPIN: Duration = Duration::from_nanos(1_700);

/// Spins for [`SPIN`].
#[inline(never)]
pub fn burn() {
    let start = Instant::now();
    while start.elapsed() < SPIN {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn burns_at_least_the_spin() {
        let t = std::time::Instant::now();
        super::burn();
        assert!(t.elapsed() >= super::SPIN);
    }
}
