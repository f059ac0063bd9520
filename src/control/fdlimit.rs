//! Control side: the open-files limit at start-up.
//!
//! Every session holds two descriptors (client and backend; a splicing direction holds a
//! pipe, two more, while bytes are in it), every listener one per worker. Distributions
//! start services with a soft `RLIMIT_NOFILE` of 1024 and a much higher hard limit, which a
//! process may raise itself to: ringway does so at start-up, logs both, and warns when the
//! routes' `max_connections` cannot fit in what it got.

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

/// Descriptors the configuration may need at most: the sessions `max_connections` allows
/// (two each), a listener per worker per address, the workers' and the process's own, and
/// the reserve kept for the admin API. Routes without `max_connections` add only their
/// listeners (their sessions are not limited). Also returns how many such routes there are.
pub fn needed(config: &Config, workers: usize, limit: u64) -> (u64, usize) {
    let workers = workers as u64;
    let mut n = PROCESS + workers * PER_WORKER + reserve_for(limit);
    let mut unlimited = 0;
    for r in &config.routes {
        n += r.listen.len() as u64 * workers;
        match r.max_connections {
            Some(m) => n += u64::from(m.get()) * 2,
            None => unlimited += 1,
        }
    }
    (n, unlimited)
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
            "the routes' max_connections (2 descriptors per session) and listeners need more file descriptors than the open-files limit allows: sessions beyond it are reset (counted as fd_limit); raise LimitNOFILE (or ulimit -n) or lower max_connections"
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
