//! Hot side: one client session, from accept to close.
//!
//! accept → limit check → connect (retries, budget) → relay (copy and/or splice) → metrics.
//! The session holds the `Rc<Route>` of the generation it started in, so later route
//! changes never move it.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use std::net::SocketAddr;

use super::balance::Source;
use super::connect::connect;
use super::door::Door;
use super::peek::{self, Prelude};
use super::relay::{self, Fail, RelayEnd, Side, Tally};
use super::table::Route;
use crate::metrics::local::{Outcome, bump, drop_one};
use crate::net::sys;
use crate::worker::Worker;

/// Runs one session to its end. Never panics on anything the network does.
///
/// A plain function returning an `async move` block (not an `async fn`, which would keep its
/// arguments twice in the future, rust-lang/rust#62958): this future is the session's task
/// and lives as long as the connection, so its size is most of an idle connection's memory.
/// The connect phase is boxed (its state is dropped once connected); the relay is not (it
/// lives as long as the task).
///
/// `prelude`: bytes to send to the backend before relaying (a shared address's peek, a
/// PROXY header; see [`super::peek`]). `source`: the client (the PROXY header's where one
/// was received), for `balance = "hash_source"`; 8 bytes, not the whole address.
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn run(
    worker: Rc<Worker>,
    route: Rc<Route>,
    client: TcpStream,
    prelude: Option<Box<Prelude>>,
    source: Source,
) -> impl Future<Output = ()> {
    async move {
        let started = Instant::now();
        let m = &route.metrics;
        bump(&m.accepted, 1);
        if route.at_limit() {
            bump(&m.rejected, 1);
            reset(client);
            return;
        }
        bump(&m.active, 1);
        bump(&worker.metrics.active, 1);
        let key = worker.sessions.open(client.as_raw_fd(), route.id);

        let outcome = match Box::pin(connect(&route, source)).await {
            None => {
                reset(client);
                Outcome::ConnectFailed
            }
            Some((backend, b)) if prelude_failed(&backend, prelude).await => {
                bump(&b.connections, 1);
                reset(client);
                let _ = sys::set_linger_zero(backend.as_raw_fd());
                Outcome::BackendReset
            }
            Some((backend, b)) => {
                bump(&b.connections, 1);
                bump(&b.active, 1);
                worker
                    .sessions
                    .set_backend(key, backend.as_raw_fd(), b.addr);
                // The client socket inherited TCP_NODELAY from its listener; the backend's
                // is new.
                let _ = sys::set_nodelay(backend.as_raw_fd());
                let activity = Cell::new(Instant::now());
                let idle = route.cfg.idle_timeout;
                let tally = Tally {
                    to_backend: &m.bytes_to_backend,
                    to_client: &m.bytes_to_client,
                    activity: idle.map(|_| &activity),
                };
                let end = relay::relay(
                    client,
                    backend,
                    &worker.pools,
                    worker.splice,
                    &tally,
                    idle,
                    &activity,
                )
                .await;
                drop_one(&b.active);
                match end {
                    RelayEnd::Clean => Outcome::Clean,
                    RelayEnd::Idle => Outcome::IdleTimeout,
                    RelayEnd::Failed(Fail::Peer(Side::Client)) => Outcome::ClientReset,
                    RelayEnd::Failed(Fail::Peer(Side::Backend)) => Outcome::BackendReset,
                }
            }
        };
        // Closed by ringway (shutdown or drain deadline): that is the outcome that counts.
        let outcome = worker.sessions.close(key).unwrap_or(outcome);
        drop_one(&m.active);
        drop_one(&worker.metrics.active);
        m.record_end(outcome, started.elapsed().as_micros() as u64);
        tracing::debug!(route = %route.cfg.name, outcome = outcome.as_str(), "session ended");
    }
}

/// A connection accepted on an address whose route depends on what the client sends first
/// (or that speaks the PROXY protocol): decides the route ([`peek::admit`]), then runs the
/// session. The peek's state is boxed and gone before the relay starts.
#[allow(clippy::manual_async_fn)] // as `run`
pub fn run_door(
    worker: Rc<Worker>,
    door: Rc<Door>,
    client: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    async move {
        let admitted = Box::pin(peek::admit(&door, &client, peer)).await;
        drop(door);
        if let Some((route, prelude, source)) = admitted {
            run(worker, route, client, prelude, source).await;
        }
    }
}

/// Sends the prelude, if any; true when that failed (the backend is gone).
async fn prelude_failed(backend: &TcpStream, prelude: Option<Box<Prelude>>) -> bool {
    match prelude {
        None => false,
        Some(p) => Box::pin(peek::send_prelude(backend, &p.bytes))
            .await
            .is_err(),
    }
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
        F: FnOnce(Rc<Worker>, Rc<Route>, TcpStream, Option<Box<Prelude>>, Source) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The session's task is most of what an idle connection costs in user space (bench D:
    /// ~1.5 KB per idle connection, HAProxy ~3.4 KB). It was 2.7 KB in two allocations before
    /// the relay became one state machine with one wait point, the idle timer was boxed and
    /// `async fn`s that kept their arguments twice became `async` blocks. A change that makes it
    /// grow past this bound should be a deliberate one.
    #[test]
    fn an_idle_session_stays_small() {
        let size = future_size(run);
        assert!(size <= 1200, "a session's future is {size} bytes");
    }
}
