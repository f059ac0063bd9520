//! Control side: the open-files limit at start-up.
//!
//! Every session holds two descriptors (client and backend; a splicing direction holds a
//! pipe, two more, while bytes are in it), every listener one per worker. Distributions
//! start services with a soft `RLIMIT_NOFILE` of 1024 and a much higher hard limit, which a
//! process may raise itself to: ringway does so at start-up, logs both, and warns when the
//! routes' `max_connections` (or `runtime.max_connections`) cannot fit in what it got.

use crate::config::Config;
use crate::net::sys;
use crate::proxy::fds::reserve_for;

/// Descriptors a worker holds besides sessions and listeners (its ring, its wake-up
/// socket, the runtime's eventfd, slack).
const PER_WORKER: u64 = 4;
/// Descriptors the process holds besides workers (admin sockets, log, state file, health
/// checks, `/proc` reads).
const PROCESS: u64 = 32;

/// What start-up found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit before and after raising it.
    pub was: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both (info). `None` when the
/// limit cannot be read.
pub fn raise() -> Option<NofileLimit> {
    let (was, hard) = match sys::nofile_limit() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            return None;
        }
    };
    let mut soft = was;
    if was < hard {
        match sys::set_nofile_soft(hard) {
            Ok(()) => soft = hard,
            Err(e) => {
                tracing::warn!(soft = was, hard, error = %e, "cannot raise the open-files soft limit to the hard limit")
            }
        }
    }
    tracing::info!(
        soft = shown(soft),
        hard = shown(hard),
        was = shown(was),
        "open-files limit (RLIMIT_NOFILE)"
    );
    Some(NofileLimit { was, soft, hard })
}

fn shown(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// Descriptors the configuration may need at most: the sessions `max_connections` (and
/// `runtime.max_connections`) allow (two each), a listener per worker per address, the workers' and the process's own, and
/// the reserve kept for the admin API. Routes without `max_connections` add only their
/// listeners (their sessions are not limited). Also returns how many such routes there are.
pub fn needed(config: &Config, workers: usize, limit: u64) -> (u64, usize) {
    let workers = workers as u64;
    let mut n = PROCESS + workers * PER_WORKER + reserve_for(limit);
    let mut unlimited = 0;
    let mut sessions: u64 = 0;
    for r in &config.routes {
        n += r.listen.len() as u64 * workers;
        match r.max_connections {
            Some(m) => sessions += u64::from(m.get()),
            None => unlimited += 1,
        }
    }
    // `runtime.max_connections` caps every route together (each worker's share rounded up).
    if let Some(cap) = config.runtime.max_connections {
        let cap = u64::from(cap.get()).div_ceil(workers.max(1)) * workers.max(1);
        sessions = if unlimited > 0 {
            cap
        } else {
            sessions.min(cap)
        };
        unlimited = 0;
    }
    (n + sessions * 2, unlimited)
}

/// Warns when the routes' limits cannot fit in the soft limit.
pub fn check_fit(config: &Config, workers: usize, limit: &NofileLimit) {
    if limit.soft == u64::MAX {
        return;
    }
    let (needed, unlimited) = needed(config, workers, limit.soft);
    if needed > limit.soft {
        tracing::warn!(
            needed,
            soft = limit.soft,
            hard = limit.hard,
            "the sessions max_connections allows (the routes' and runtime.max_connections; 2 descriptors each) and listeners need more file descriptors than the open-files limit allows: sessions beyond it are reset (counted as fd_limit); raise LimitNOFILE (or ulimit -n) or lower max_connections"
        );
    } else if unlimited > 0 {
        let fit = (limit.soft - needed) / 2;
        tracing::info!(
            routes_without_limit = unlimited,
            sessions_that_fit = fit,
            "routes without max_connections share what the open-files limit leaves"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_counts_sessions_listeners_and_reserve() {
        let cfg = Config::parse(
            r#"
            [[route]]
            name = "a"
            listen = ["127.0.0.1:3000", "127.0.0.1:3001"]
            backends = ["127.0.0.1:8080"]
            max_connections = 1000
            [[route]]
            name = "b"
            listen = ["127.0.0.1:3002"]
            backends = ["127.0.0.1:8080"]
            "#,
            "t.toml",
        )
        .unwrap();
        let (n, unlimited) = needed(&cfg, 4, 1024);
        assert_eq!(unlimited, 1);
        assert_eq!(n, PROCESS + 4 * PER_WORKER + 128 + 3 * 4 + 2000);
        // The global cap bounds the routes without a limit, and those with one.
        let mut capped = cfg.clone();
        capped.runtime.max_connections = std::num::NonZeroU32::new(5000);
        let (n, unlimited) = needed(&capped, 4, 1024);
        assert_eq!(unlimited, 0);
        assert_eq!(n, PROCESS + 4 * PER_WORKER + 128 + 3 * 4 + 10_000);
        capped.runtime.max_connections = std::num::NonZeroU32::new(1);
        capped.routes.pop();
        let (n, _) = needed(&capped, 4, 1024);
        assert_eq!(
            n,
            PROCESS + 4 * PER_WORKER + 128 + 2 * 4 + 8,
            "one per worker"
        );
    }

    #[test]
    fn raising_keeps_the_hard_limit() {
        let before = sys::nofile_limit().unwrap();
        let got = raise().unwrap();
        assert_eq!(got.hard, before.1);
        assert_eq!(got.soft, got.hard);
        assert_eq!(sys::nofile_limit().unwrap(), (got.hard, got.hard));
    }
}
