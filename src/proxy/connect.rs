//! Hot side: connecting a session to a backend, with retries inside one time budget.
//!
//! The first attempt goes where the route's `balance` picks; a refused (or otherwise
//! failed) attempt moves on to the next backend in the list at once; the whole phase shares `connect_timeout`, so a
//! black-holed backend costs at most that budget, after which the client is reset.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::balance::Source;
use super::table::Route;
use crate::metrics::local::{BackendMetrics, ConnectErrorKind, bump, drop_one};

/// Connects to one of the route's backends, or gives up (`None`) when every attempt failed or
/// the budget is spent. Each failure is counted on its backend. `source`: the client, for
/// `hash_source`.
pub async fn connect(route: &Route, source: Source) -> Option<(TcpStream, Rc<BackendMetrics>)> {
    let start = Instant::now();
    let budget = route.cfg.connect_timeout;
    let mut last = None;
    for _ in 0..route.connect_attempts() {
        let left = budget.checked_sub(start.elapsed())?;
        let (i, backend) = match last {
            None => route.pick(source),
            Some(i) => route.after(i),
        };
        last = Some(i);
        let backend = backend.clone();
        let attempt = Instant::now();
        let counted = Connecting::new(&backend);
        let result = monoio::time::timeout(left, TcpStream::connect_addr(backend.addr)).await;
        drop(counted);
        match result {
            Ok(Ok(stream)) => {
                route
                    .metrics
                    .record_connect_us(attempt.elapsed().as_micros() as u64);
                return Some((stream, backend));
            }
            Ok(Err(e)) => backend.connect_error(kind(&e)),
            Err(_) => {
                backend.connect_error(ConnectErrorKind::Timeout);
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

fn kind(e: &io::Error) -> ConnectErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
        io::ErrorKind::TimedOut => ConnectErrorKind::Timeout,
        _ => ConnectErrorKind::Other,
    }
}
