//! Hot side: one client session, from accept to close.
//!
//! accept → limit checks → first bytes (`first_byte_timeout`) → connect (retries, budget) →
//! relay (copy and/or splice) → metrics.
//! The session holds the `Rc<Route>` of the generation it started in, so later route
//! changes never move it.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use monoio::net::TcpStream;

use super::balance::Source;
use super::connect::{Env, connect};
use super::door::Door;
use super::peek::{self, Prelude};
use super::relay::{self, Fail, RelayEnd, Side, Tally};
use super::table::Route;
use crate::access_log::{LogOutcome, LogTag, Record, Refusal};
use crate::metrics::local::{Limit, Outcome, Rejected, bump, drop_one};
use crate::net::{keepalive, sys};
use crate::worker::Worker;

/// Where a session's client came from and the address it arrived on (for the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// The peer, or the source a trusted PROXY header named.
    pub client: SocketAddr,
    pub listen: SocketAddr,
}

/// What a session that ended tells the access log, besides its addresses.
struct Ended {
    outcome: LogOutcome,
    backend: Option<SocketAddr>,
    moved: [u64; 2],
    duration_us: u64,
    connect_us: Option<u64>,
}

impl Ends {
    fn record(self, tag: LogTag, e: Ended) -> Record {
        Record {
            tag,
            outcome: e.outcome,
            time: SystemTime::now(),
            client: self.client,
            listen: self.listen,
            backend: e.backend,
            to_backend: e.moved[0],
            to_client: e.moved[1],
            duration_us: e.duration_us,
            connect_us: e.connect_us,
        }
    }
}

/// Runs one session to its end. Never panics on anything the network does.
///
/// A plain function returning an `async move` block (not an `async fn`, which would keep its
/// arguments twice in the future, rust-lang/rust#62958): this future is the session's task
/// and lives as long as the connection, so its size is most of an idle connection's memory.
/// The connect phase is boxed (its state is dropped once connected); the relay is not (it
/// lives as long as the task).
///
/// `prelude`: bytes to send to the backend before relaying (a shared address's peek, a
/// PROXY header; see [`super::peek`]). `ends`: for the access log, set when the route has
/// one (boxed: one allocation per session of a logging route, rather than 64 bytes in every
/// session's future).
/// `source`: the client (the PROXY header's where one was received), for
/// `balance = "hash_source"`; 8 bytes, not the whole address.
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn run(
    worker: Rc<Worker>,
    route: Rc<Route>,
    client: TcpStream,
    prelude: Option<Box<Prelude>>,
    ends: Option<Box<Ends>>,
    source: Source,
) -> impl Future<Output = ()> {
    async move {
        let started = Instant::now();
        let m = &route.metrics;
        bump(&m.accepted, 1);
        if let Some(why) = refusal(&worker, &route, source) {
            refuse(&worker, &route, client, ends, why, started);
            return;
        }
        bump(&m.active, 1);
        bump(&worker.metrics.active, 1);
        let key = worker.sessions.open(client.as_raw_fd(), route.id);
        // This session's bytes each way (access log; its backend and connect time are kept
        // in its `sessions` entry).
        let moved: [Cell<u64>; 2] = Default::default();

        let env = Env {
            warnings: &worker.warnings,
            fds: worker.fds,
        };
        // `first_byte_timeout`: the backend is connected only once the client spoke.
        let silent = match route.cfg.first_byte_timeout {
            Some(limit) if !prelude.as_ref().is_some_and(|p| p.heard) => {
                first_byte(&client, limit).await
            }
            _ => None,
        };
        let connected = match silent {
            Some(outcome) => Err(outcome),
            // Every backend filled up while this client was silent: refused as at accept
            // (counted as `backends_full`), the session ends `connect_failed`.
            None if route.cfg.first_byte_timeout.is_some() && route.all_full() => {
                m.reject(Limit::BackendsFull);
                Err(Outcome::ConnectFailed)
            }
            None => Ok(Box::pin(connect(&route, env, source)).await),
        };
        let outcome = match connected {
            Err(outcome) => {
                if matches!(outcome, Outcome::FirstByteTimeout | Outcome::ConnectFailed) {
                    reset(client);
                }
                outcome
            }
            Ok(None) => {
                reset(client);
                Outcome::ConnectFailed
            }
            Ok(Some((backend, b)))
                if prelude_failed(
                    &backend,
                    prelude,
                    [&m.bytes_to_backend, &moved[0]],
                    route.cfg.connect_timeout,
                )
                .await =>
            {
                drop_one(&b.active);
                bump(&b.connections, 1);
                let us = started.elapsed().as_micros() as u64;
                worker
                    .sessions
                    .set_backend(key, backend.as_raw_fd(), b.addr, us);
                reset(client);
                let _ = sys::set_linger_zero(backend.as_raw_fd());
                Outcome::BackendReset
            }
            Ok(Some((backend, b))) => {
                bump(&b.connections, 1);
                let us = started.elapsed().as_micros() as u64;
                worker
                    .sessions
                    .set_backend(key, backend.as_raw_fd(), b.addr, us);
                // The client socket inherited TCP_NODELAY, keepalive and the user timeout
                // from its listener; the backend's is new.
                let _ = sys::set_nodelay(backend.as_raw_fd());
                let _ = keepalive::set_new(backend.as_raw_fd(), &route.cfg.keepalive);
                let outcome =
                    relay_session(&worker, &route, key, client, backend, &moved, &started).await;
                drop_one(&b.active);
                outcome
            }
        };
        if route.per_source_per_worker.is_some() {
            worker.sources.release(route.id, source);
        }
        end_session(&worker, &route, key, outcome, started, &moved, ends);
    }
}

/// Relays a connected session to its end. When an upgrade takes the route's sessions
/// (`RouteMetrics::handing_over`), the relay stops at the first quiet point and the session
/// is handed over (its sockets closed here, open in the new process); one that cannot be
/// waits until the upgrade lets it stay, and relays on.
#[allow(clippy::manual_async_fn, clippy::too_many_arguments)] // as `run`
fn relay_session<'a>(
    worker: &'a Worker,
    route: &'a Route,
    key: usize,
    client: TcpStream,
    backend: TcpStream,
    moved: &'a [Cell<u64>; 2],
    started: &'a Instant,
) -> impl Future<Output = Outcome> + 'a {
    async move {
        let m = &route.metrics;
        // The worker wakes the session through its registry when an upgrade starts.
        let waker = std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
        worker.sessions.set_waker(key, waker);
        let activity = Cell::new(route.timeouts.idle.map(|_| Instant::now()));
        let tally = Tally {
            timeouts: &route.timeouts,
            to_backend: &m.bytes_to_backend,
            to_client: &m.bytes_to_client,
            session: moved,
            activity: &activity,
            pause: &m.handing_over,
        };
        loop {
            let end = relay::relay(&client, &backend, &worker.pools, worker.splice, &tally).await;
            return match end {
                RelayEnd::Paused => {
                    let held = [moved[0].get(), moved[1].get()];
                    if worker.hand_over(route, &client, &backend, held, *started) {
                        Outcome::HandedOver
                    } else {
                        relay::Resume(&m.handing_over).await;
                        continue;
                    }
                }
                RelayEnd::Clean => Outcome::Clean,
                RelayEnd::Idle => Outcome::IdleTimeout,
                RelayEnd::HalfClose => Outcome::HalfCloseTimeout,
                RelayEnd::Failed(Fail::Peer(Side::Client)) => Outcome::ClientReset,
                RelayEnd::Failed(Fail::Peer(Side::Backend)) => Outcome::BackendReset,
                RelayEnd::Failed(Fail::Lost(Side::Client)) => Outcome::ClientTimeout,
                RelayEnd::Failed(Fail::Lost(Side::Backend)) => Outcome::BackendTimeout,
            };
        }
    }
}

/// A session's end: its registry entry goes, and it is counted and logged.
fn end_session(
    worker: &Worker,
    route: &Route,
    key: usize,
    outcome: Outcome,
    started: Instant,
    moved: &[Cell<u64>; 2],
    ends: Option<Box<Ends>>,
) {
    let m = &route.metrics;
    // Closed by ringway (shutdown or drain deadline): that is the outcome that counts.
    let closed = worker.sessions.close(key);
    let outcome = closed.by.unwrap_or(outcome);
    drop_one(&m.active);
    drop_one(&worker.metrics.active);
    let duration_us = started.elapsed().as_micros() as u64;
    m.record_end(outcome, duration_us);
    if let (Some(log), Some(ends)) = (route.log, ends) {
        let ended = Ended {
            outcome: LogOutcome::Ended(outcome),
            backend: closed.backend,
            moved: [moved[0].get(), moved[1].get()],
            duration_us,
            connect_us: closed.connect_us,
        };
        worker.log(ends.record(log.route, ended), &m.access_log_dropped);
    }
    tracing::debug!(route = %route.cfg.name, outcome = outcome.as_str(), "session ended");
}

/// Goes on with a session an upgrade handed over from the old process: its route (by
/// name) and backend, its byte counts and age. Counted as active here, not as accepted.
#[allow(clippy::manual_async_fn)] // as `run`
pub fn adopt(
    worker: Rc<Worker>,
    route: Rc<Route>,
    client: TcpStream,
    backend: TcpStream,
    session: crate::upgrade::wire::MovedSession,
) -> impl Future<Output = ()> {
    async move {
        let m = &route.metrics;
        let started = Instant::now()
            .checked_sub(Duration::from_millis(session.age_ms))
            .unwrap_or_else(Instant::now);
        bump(&m.active, 1);
        bump(&worker.metrics.active, 1);
        let key = worker.sessions.open(client.as_raw_fd(), route.id);
        worker
            .sessions
            .set_backend(key, backend.as_raw_fd(), session.backend, 0);
        let b = route.backend_of(session.backend).cloned();
        if let Some(b) = &b {
            bump(&b.active, 1);
        }
        let moved = [Cell::new(session.moved[0]), Cell::new(session.moved[1])];
        let ends = route.log.and_then(|_| {
            Some(Box::new(Ends {
                client: client.peer_addr().ok()?,
                listen: client.local_addr().ok()?,
            }))
        });
        let outcome = relay_session(&worker, &route, key, client, backend, &moved, &started).await;
        if let Some(b) = &b {
            drop_one(&b.active);
        }
        end_session(&worker, &route, key, outcome, started, &moved, ends);
    }
}

/// A connection accepted on an address whose route depends on what the client sends first
/// (or that speaks the PROXY protocol): decides the route ([`peek::admit`]), then runs the
/// session. The peek's state is boxed and gone before the relay starts. A refusal is logged
/// in the access logs of the address's routes (route `-`).
#[allow(clippy::manual_async_fn)] // as `run`
pub fn run_door(
    worker: Rc<Worker>,
    door: Rc<Door>,
    client: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    async move {
        let started = Instant::now();
        let admitted = if worker.at_capacity() {
            // The worker holds its share of `runtime.max_connections`: reset, before any
            // byte is read.
            if let Some(m) = &door.metrics {
                m.reject(Rejected::RuntimeMaxConnections);
            }
            let _ = sys::set_linger_zero(client.as_raw_fd());
            Err(Some(Rejected::RuntimeMaxConnections))
        } else {
            // Registered while it peeks (route id 0: no route yet), so that a shutdown
            // waits for it and, at the end of its grace, closes it.
            let key = worker.sessions.open(client.as_raw_fd(), 0);
            let latest = || worker.table.borrow().door(&door.addr).cloned();
            let admitted = Box::pin(peek::admit(&door, latest, &client, peer)).await;
            worker.sessions.close(key);
            admitted
        };
        let listen = door.addr;
        match admitted {
            Ok(a) => {
                // The client socket has its listener's settings (the address's first
                // route's); another route with other settings gets its own.
                if a.route.cfg.keepalive != door.keepalive {
                    let _ = keepalive::set(client.as_raw_fd(), &a.route.cfg.keepalive);
                }
                drop(door);
                let ends = a.route.log.map(|_| {
                    Box::new(Ends {
                        client: a.source,
                        listen,
                    })
                });
                let source = Source::of(a.source.ip());
                run(worker, a.route, client, a.prelude, ends, source).await;
            }
            Err(Some(why)) => {
                // Set to reset by `admit`; closed here.
                drop(client);
                let ends = Ends {
                    client: peer,
                    listen,
                };
                for (tag, m) in &door.log {
                    let ended = Ended {
                        outcome: LogOutcome::Rejected(Refusal::Door(why)),
                        backend: None,
                        moved: [0, 0],
                        duration_us: started.elapsed().as_micros() as u64,
                        connect_us: None,
                    };
                    worker.log(ends.record(*tag, ended), &m.access_log_dropped);
                }
            }
            Err(None) => {}
        }
    }
}

/// Why a new session of `route` from `source` is reset at accept, if it is: the worker's
/// share of `runtime.max_connections`, the route's of `max_connections`, every backend at
/// its own `max_connections` (or ejected), the source's of
/// `max_connections_per_source` (checked last: it takes the source's place, which the
/// session gives back when it ends).
#[inline]
fn refusal(worker: &Worker, route: &Route, source: Source) -> Option<Limit> {
    if worker.at_capacity() {
        Some(Limit::RuntimeMaxConnections)
    } else if route.at_limit() {
        Some(Limit::MaxConnections)
    } else if route.all_full() {
        Some(Limit::BackendsFull)
    } else if let Some(max) = route.per_source_per_worker
        && !worker.sources.take(route.id, source, max)
    {
        Some(Limit::MaxConnectionsPerSource)
    } else {
        None
    }
}

/// Resets a connection refused at accept (`why`): counted, and logged where the route logs.
#[cold]
fn refuse(
    worker: &Worker,
    route: &Route,
    client: TcpStream,
    ends: Option<Box<Ends>>,
    why: Limit,
    started: Instant,
) {
    let m = &route.metrics;
    m.reject(why);
    reset(client);
    if let (Some(log), Some(ends)) = (route.log, ends) {
        let ended = Ended {
            outcome: LogOutcome::Rejected(Refusal::from(why)),
            backend: None,
            moved: [0, 0],
            duration_us: started.elapsed().as_micros() as u64,
            connect_us: None,
        };
        worker.log(ends.record(log.route, ended), &m.access_log_dropped);
    }
    tracing::debug!(route = %route.cfg.name, reason = why.as_str(), "connection refused at accept");
}

/// Waits until the client has sent something, up to `limit`, without reading it (the relay
/// takes it, splice included). `None`: bytes are queued; otherwise how the session ends
/// without a backend: `FirstByteTimeout` (nothing within `limit`), `Clean` (the client
/// closed first) or `ClientReset`.
async fn first_byte(client: &TcpStream, limit: Duration) -> Option<Outcome> {
    let fd = client.as_raw_fd();
    let deadline = Instant::now() + limit;
    loop {
        match sys::peek_byte(fd) {
            Ok(0) => return Some(Outcome::Clean),
            Ok(_) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                match monoio::time::timeout(left, client.readable(false)).await {
                    Err(_) => return Some(Outcome::FirstByteTimeout),
                    Ok(Err(_)) => return Some(Outcome::ClientReset),
                    Ok(Ok(())) => {}
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Outcome::ClientReset),
        }
    }
}

/// Sends the prelude, if any, counting it on `tally` (the route's and the session's bytes
/// to the backend); true when that failed (the backend is gone, or did not take it within
/// `limit`).
async fn prelude_failed(
    backend: &TcpStream,
    prelude: Option<Box<Prelude>>,
    tally: [&Cell<u64>; 2],
    limit: std::time::Duration,
) -> bool {
    let Some(p) = prelude else {
        return false;
    };
    let send = Box::pin(peek::send_prelude(backend, &p.bytes));
    if !matches!(monoio::time::timeout(limit, send).await, Ok(Ok(()))) {
        return true;
    }
    for c in tally {
        bump(c, p.bytes.len() as u64);
    }
    false
}

/// Closes a client with a reset (SO_LINGER 0).
fn reset(client: TcpStream) {
    let _ = sys::set_linger_zero(client.as_raw_fd());
    drop(client);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F, Fut>(_f: F) -> usize
    where
        F: FnOnce(
            Rc<Worker>,
            Rc<Route>,
            TcpStream,
            Option<Box<Prelude>>,
            Option<Box<Ends>>,
            Source,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The session's task is most of what an idle connection costs in user space (bench D:
    /// ~1.5 KB per idle connection, HAProxy ~3.4 KB). It was 2.7 KB in two allocations before
    /// the relay became one state machine with one wait point, the idle timer was boxed and
    /// `async fn`s that kept their arguments twice became `async` blocks (1,128 B). Issue 12
    /// added, deliberately, the session's own byte counts for the access log (16 B), the
    /// half-close timer's clock and the connect environment (~40 B) and the client's source
    /// key for hash balancing (8 B). A change that makes it grow past this bound should be a
    /// deliberate one.
    #[test]
    fn an_idle_session_stays_small() {
        let size = future_size(run);
        eprintln!("a session's future: {size} bytes");
        assert!(size <= 1320, "a session's future is {size} bytes");
    }
}
