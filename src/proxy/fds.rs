//! Hot side: ringway's reserve of file descriptors.
//!
//! When the process runs out of descriptors every `accept`, `socket` and `open` fails,
//! including the admin API's: an operator could not even ask what is wrong. So a worker
//! keeps the top of `RLIMIT_NOFILE` free: a session socket numbered in the reserve (the
//! kernel hands out the lowest free number, so one lands there only when every number below
//! is taken) is closed at once and counted as `fd_limit`. The admin API, `/proc` reads and
//! the state file still find a descriptor, and new clients are reset instead of waiting on a
//! listener that cannot serve them.

use std::os::fd::RawFd;

/// Descriptors kept free: an eighth of the limit, at least 8, at most 256.
pub fn reserve_for(limit: u64) -> u64 {
    (limit / 8).clamp(8, 256)
}

/// The descriptor numbers a session may hold: below `ceiling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdReserve {
    ceiling: RawFd,
}

impl FdReserve {
    /// The reserve under the process's soft `RLIMIT_NOFILE` (read once, at worker start;
    /// start-up raised it first). Without a limit to read, no reserve.
    pub fn from_limit(soft: Option<u64>) -> FdReserve {
        let ceiling = match soft {
            Some(limit) if limit < RawFd::MAX as u64 => {
                limit.saturating_sub(reserve_for(limit)) as RawFd
            }
            _ => RawFd::MAX,
        };
        FdReserve { ceiling }
    }

    /// True when `fd` lies in the reserve: the session must give it back.
    #[inline]
    pub fn intrudes(&self, fd: RawFd) -> bool {
        fd >= self.ceiling
    }
}

impl Default for FdReserve {
    fn default() -> Self {
        FdReserve {
            ceiling: RawFd::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_eighth_is_kept_between_8_and_256() {
        assert!(FdReserve::from_limit(Some(64)).intrudes(56));
        assert!(!FdReserve::from_limit(Some(64)).intrudes(55));
        assert!(!FdReserve::from_limit(Some(1 << 20)).intrudes((1 << 20) - 257));
        assert!(FdReserve::from_limit(Some(1 << 20)).intrudes((1 << 20) - 256));
        assert!(!FdReserve::from_limit(None).intrudes(1 << 30));
    }
}
