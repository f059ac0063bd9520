//! Hot side: connecting a session to a backend, with retries inside one time budget.
//!
//! The first attempt goes where the route's `balance` picks; a refused (or otherwise
//! failed) attempt moves on to the next backend in the list at once; the whole phase shares
//! `connect_timeout`, so a black-holed backend costs at most that budget, after which the
//! client is reset. Out of file descriptors, no other backend would do better: the phase
//! ends at once.
//!
//! Every failure is counted on its backend by kind, and logged at most once per kind per
//! [`super::warn::EVERY`] on each worker, with the count left out since. Failures in a row
//! eject a backend on this worker (`[route.eject]`, [`super::eject`]); picks and retries
//! pass over ejected backends and those at their own `max_connections` while another
//! backend is usable.

use std::fmt::Display;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::balance::Source;
use super::fds::FdReserve;
use super::table::Route;
use super::warn::Warnings;
use crate::metrics::local::{BackendMetrics, ConnectErrorKind, bump, drop_one};

/// What the connect phase needs from its worker.
pub struct Env<'a> {
    pub warnings: &'a Warnings,
    pub fds: FdReserve,
}

/// Connects to one of the route's backends, or gives up (`None`) when every attempt failed or
/// the budget is spent, or every backend is at its own `max_connections`. Each failure is
/// counted on its backend. On success the backend's `active` is already raised: the caller
/// drops it when the session ends. `source`: the client, for `hash_source`.
pub async fn connect(
    route: &Route,
    env: Env<'_>,
    source: Source,
) -> Option<(TcpStream, Rc<BackendMetrics>)> {
    let start = Instant::now();
    let budget = route.cfg.connect_timeout;
    let mut last = None;
    for _ in 0..route.connect_attempts() {
        let left = budget.checked_sub(start.elapsed())?;
        let (i, backend) = match last {
            None => route.pick(source)?,
            Some(i) => route.after(i)?,
        };
        last = Some(i);
        let backend = backend.clone();
        let attempt = Instant::now();
        let counted = Connecting::new(&backend);
        let result = monoio::time::timeout(left, TcpStream::connect_addr(backend.addr)).await;
        drop(counted);
        match result {
            Ok(Ok(stream)) if env.fds.intrudes(stream.as_raw_fd()) => {
                failed(
                    route,
                    &backend,
                    ConnectErrorKind::FdLimit,
                    &"the socket fell into ringway's reserve of file descriptors",
                    &env,
                );
                return None;
            }
            Ok(Ok(stream)) => {
                backend.eject.succeeded();
                // Open from here (the caller drops it when the session ends), so that the
                // time a prelude takes counts toward `max_connections` and the loads.
                bump(&backend.active, 1);
                route
                    .metrics
                    .record_connect_us(attempt.elapsed().as_micros() as u64);
                return Some((stream, backend));
            }
            Ok(Err(e)) => {
                let kind = ConnectErrorKind::of(&e);
                failed(route, &backend, kind, &e, &env);
                if kind == ConnectErrorKind::FdLimit {
                    return None;
                }
            }
            Err(_) => {
                failed(
                    route,
                    &backend,
                    ConnectErrorKind::Timeout,
                    &"connect_timeout spent",
                    &env,
                );
                return None;
            }
        }
    }
    None
}

/// Counts an attempt under way on its backend (`least_connections` and `p2c` see it) for as
/// long as it lives, however the attempt ends.
struct Connecting<'a>(&'a BackendMetrics);

impl<'a> Connecting<'a> {
    fn new(b: &'a BackendMetrics) -> Self {
        bump(&b.connecting, 1);
        Connecting(b)
    }
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        drop_one(&self.0.connecting);
    }
}

/// Counts a failed attempt and logs it, rate limited.
#[cold]
fn failed(
    route: &Route,
    backend: &BackendMetrics,
    kind: ConnectErrorKind,
    error: &dyn Display,
    env: &Env<'_>,
) {
    backend.connect_error(kind);
    route.connect_failed(backend, kind);
    if let Some(suppressed) = env.warnings.connect(kind).allow() {
        tracing::warn!(
            route = %route.cfg.name,
            backend = %backend.addr,
            kind = kind.as_str(),
            error = %error,
            hint = hint(kind),
            suppressed,
            "connect to backend failed"
        );
    }
}

/// What an operator can do about a kind of failure.
fn hint(kind: ConnectErrorKind) -> &'static str {
    match kind {
        ConnectErrorKind::Refused => "nothing listens on the backend's port: is it up?",
        ConnectErrorKind::Timeout => "the backend did not answer within connect_timeout",
        ConnectErrorKind::NoLocalPort => {
            "no free local port towards this backend: widen net.ipv4.ip_local_port_range, add backend addresses, or reuse connections"
        }
        ConnectErrorKind::FdLimit => {
            "out of file descriptors: raise LimitNOFILE (ulimit -n) or lower max_connections"
        }
        ConnectErrorKind::Unreachable => "no route to the backend's network or host",
        ConnectErrorKind::Other => "see the error",
    }
}
