//! Hot side: connecting a session to a backend, with retries inside one time budget.
//!
//! Attempts go to backends in round-robin order. A refused (or otherwise failed) attempt
//! moves on to the next backend at once; the whole phase shares `connect_timeout`, so a
//! black-holed backend costs at most that budget, after which the client is reset.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::table::Route;
use crate::metrics::local::{BackendMetrics, ConnectErrorKind};

/// Connects to one of the route's backends, or gives up (`None`) when every attempt failed or
/// the budget is spent. Each failure is counted on its backend.
pub async fn connect(route: &Route) -> Option<(TcpStream, Rc<BackendMetrics>)> {
    let start = Instant::now();
    let budget = route.cfg.connect_timeout;
    for _ in 0..route.connect_attempts() {
        let left = budget.checked_sub(start.elapsed())?;
        let backend = route.pick().clone();
        let attempt = Instant::now();
        match monoio::time::timeout(left, TcpStream::connect_addr(backend.addr)).await {
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

fn kind(e: &io::Error) -> ConnectErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
        io::ErrorKind::TimedOut => ConnectErrorKind::Timeout,
        _ => ConnectErrorKind::Other,
    }
}
