//! Hot side: warnings a worker writes at most once per [`EVERY`] per cause, each saying how
//! many were left out since the previous one. A failing backend or an exhausted resource
//! can fail thousands of connections a second; the log gets one line per cause per worker
//! every few seconds, and the metrics count every one.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::metrics::local::{AcceptErrorKind, ConnectErrorKind};

/// At most one line per cause per worker this often.
pub const EVERY: Duration = Duration::from_secs(5);

/// One cause's limiter.
#[derive(Debug, Default)]
pub struct Limited {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl Limited {
    /// `Some(n)` when a line may be written now (`n` were left out since the last one);
    /// `None` when this one is left out (and counted).
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            self.suppressed.set(self.suppressed.get().saturating_add(1));
            return None;
        }
        self.last.set(Some(now));
        Some(self.suppressed.replace(0))
    }
}

/// A worker's rate-limited warnings.
#[derive(Debug, Default)]
pub struct Warnings {
    connect: [Limited; ConnectErrorKind::COUNT],
    accept: [Limited; AcceptErrorKind::COUNT],
}

impl Warnings {
    pub fn connect(&self, kind: ConnectErrorKind) -> &Limited {
        &self.connect[kind as usize]
    }

    pub fn accept(&self, kind: AcceptErrorKind) -> &Limited {
        &self.accept[kind as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let l = Limited::default();
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        // As if the period had passed.
        l.last.set(Instant::now().checked_sub(EVERY));
        assert_eq!(l.allow(), Some(2));
        assert_eq!(l.allow(), None);
    }
}
