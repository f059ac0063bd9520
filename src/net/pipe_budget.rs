//! Control side: does the kernel's pipe budget hold the pipes the splice relay will use?
//!
//! An unprivileged process may not ask for a pipe larger than `fs.pipe-max-size`, and once
//! all of its user's pipes together hold `fs.pipe-user-pages-soft` pages, `F_SETPIPE_SZ` is
//! refused and new pipes keep the kernel's smallest size: splice then moves 8 KiB at a time
//! and bulk throughput drops 15–30 %, silently. ringway checks at start-up and warns (the
//! refusals are also counted in `ringway_pipe_resize_refused_total`). tuning/README.md says
//! how to raise the limits.

use std::path::Path;

/// Sessions per worker the budget should let splice both ways at once before warning: a
/// worker moving more bulk sessions than this at the same moment is a bulk box, whose
/// operator should size the limit (tuning/README.md).
pub const SPLICING_SESSIONS_PER_WORKER: usize = 16;

/// The kernel's limits and whether they apply to this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `fs.pipe-max-size`, bytes.
    pub max_size: usize,
    /// `fs.pipe-user-pages-soft`, pages (0: no limit).
    pub user_pages_soft: usize,
    pub page_size: usize,
    /// CAP_SYS_RESOURCE or CAP_SYS_ADMIN: the limits do not apply.
    pub privileged: bool,
}

impl Limits {
    /// Reads the limits of this host and process; `None` when /proc does not tell.
    pub fn read() -> Option<Limits> {
        let num = |p: &str| -> Option<usize> {
            std::fs::read_to_string(Path::new(p))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        Some(Limits {
            max_size: num("/proc/sys/fs/pipe-max-size")?,
            user_pages_soft: num("/proc/sys/fs/pipe-user-pages-soft")?,
            page_size: super::sys::page_size(),
            privileged: privileged(),
        })
    }
}

/// Why the budget falls short for `workers` workers with pipes of `pipe_size` bytes, with
/// what to do; `None` when it holds (or does not apply).
pub fn shortfall(limits: &Limits, workers: usize, pipe_size: usize) -> Option<String> {
    if limits.privileged {
        return None;
    }
    if pipe_size > limits.max_size {
        return Some(format!(
            "runtime.pipe_size ({pipe_size} bytes) is above fs.pipe-max-size ({} bytes): every \
             pipe stays at the kernel's default size. Raise fs.pipe-max-size (tuning/sysctl) or \
             lower runtime.pipe_size",
            limits.max_size
        ));
    }
    if limits.user_pages_soft == 0 {
        return None;
    }
    let budget = limits.user_pages_soft.saturating_mul(limits.page_size);
    let pipes = workers.saturating_mul(2 * SPLICING_SESSIONS_PER_WORKER);
    let want = pipes.saturating_mul(pipe_size);
    if want <= budget {
        return None;
    }
    let pages = want.div_ceil(limits.page_size.max(1));
    Some(format!(
        "fs.pipe-user-pages-soft ({} pages, {} MiB) holds {} pipes of runtime.pipe_size, fewer \
         than the {pipes} that {workers} worker(s) splicing {SPLICING_SESSIONS_PER_WORKER} \
         sessions each use; past it pipes shrink to 8 KiB and bulk throughput drops. Set \
         fs.pipe-user-pages-soft >= {pages} (tuning/sysctl/90-ringway.conf), run with \
         CAP_SYS_RESOURCE, or lower runtime.pipe_size",
        limits.user_pages_soft,
        budget >> 20,
        budget / pipe_size.max(1),
    ))
}

/// True when this process has CAP_SYS_RESOURCE (24) or CAP_SYS_ADMIN (21) in effect.
fn privileged() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24 | 1 << 21) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(privileged: bool) -> Limits {
        Limits {
            max_size: 1 << 20,
            user_pages_soft: 16384,
            page_size: 4096,
            privileged,
        }
    }

    #[test]
    fn default_limits_hold_two_workers_of_1mib_pipes_but_not_four() {
        let l = limits(false);
        assert_eq!(shortfall(&l, 2, 1 << 20), None);
        let msg = shortfall(&l, 4, 1 << 20).unwrap();
        assert!(msg.contains("fs.pipe-user-pages-soft >= 32768"), "{msg}");
        assert!(msg.contains("64 pipes"), "{msg}");
    }

    #[test]
    fn oversized_pipe_and_privilege() {
        let l = limits(false);
        let msg = shortfall(&l, 1, 4 << 20).unwrap();
        assert!(msg.contains("fs.pipe-max-size"), "{msg}");
        assert_eq!(shortfall(&limits(true), 64, 4 << 20), None);
        let unlimited = Limits {
            user_pages_soft: 0,
            ..l
        };
        assert_eq!(shortfall(&unlimited, 64, 1 << 20), None);
    }

    #[test]
    fn reads_this_host() {
        let l = Limits::read().expect("/proc/sys/fs is readable on Linux");
        assert!(l.max_size >= 4096 && l.page_size >= 4096);
    }
}
