//! Hot side (with a control-side handle): how the control thread reaches a worker.
//!
//! Messages go over a crossbeam channel; after each send the control thread writes one byte
//! to a unix socket pair. The worker waits for that byte through its ring (no thread, no
//! timer polling), then drains the channel with `try_recv`.

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use monoio::io::AsyncReadRent;
use monoio::net::{TcpListener, UnixStream};

use super::Worker;
use super::accept::Retire;
use crate::control::messages::{Drain, FromWorker, RouteSpec, ToWorker};
use crate::proxy::table::RouteTable;

/// Longest a worker waits for retiring listeners to close before it acknowledges anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(2);

/// The control thread's handle on one worker's inbox.
#[derive(Debug)]
pub struct Waker {
    tx: Sender<ToWorker>,
    wake: StdUnixStream,
}

impl Waker {
    /// A channel and wake-up pair: the control keeps the `Waker`, the worker gets the rest.
    pub fn pair() -> std::io::Result<(Waker, Receiver<ToWorker>, StdUnixStream)> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ours, theirs) = StdUnixStream::pair()?;
        ours.set_nonblocking(true)?;
        // The epoll driver does its syscalls directly: a blocking fd would stall the worker.
        theirs.set_nonblocking(true)?;
        Ok((Waker { tx, wake: ours }, rx, theirs))
    }

    /// Sends a message and wakes the worker. False when the worker is gone.
    pub fn send(&self, msg: ToWorker) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        // A full socket buffer means wake-ups are already pending: nothing is lost.
        match (&self.wake).write_all(&[1]) {
            Ok(()) => true,
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        }
    }
}

pub(super) async fn run(worker: Rc<Worker>, inbox: Receiver<ToWorker>, mut wake: UnixStream) {
    let mut buf = Vec::with_capacity(64);
    loop {
        loop {
            match inbox.try_recv() {
                Ok(ToWorker::Apply {
                    generation,
                    routes,
                    add,
                    remove,
                    drains,
                }) => {
                    apply(&worker, generation, &routes, add, &remove).await;
                    for d in drains {
                        monoio::spawn(drain(worker.clone(), d));
                    }
                }
                Ok(ToWorker::AccessLog(queue)) => {
                    // Sent once; a second one (never sent) would find the first in place.
                    let _ = worker.access_log.set(queue);
                }
                Ok(ToWorker::Loads { routes }) => {
                    // Only routes this worker runs (one removed meanwhile is skipped).
                    let table = worker.table.borrow();
                    for (name, loads) in routes.iter().filter(|(n, _)| table.has(n)) {
                        worker.metrics.route(name).set_elsewhere(loads);
                    }
                }
                Ok(ToWorker::Shutdown { grace }) => return shutdown(&worker, grace).await,
                Ok(ToWorker::Handover { adopted, routes }) => {
                    let begun = super::handover::begin(&worker, &adopted, &routes);
                    monoio::spawn(super::handover::run(worker.clone(), begun));
                }
                Ok(ToWorker::KeepSessions) => {
                    let table = worker.table.borrow().clone();
                    let all: Vec<_> = table.routes().cloned().collect();
                    super::handover::keep_sessions(&worker, &all);
                }
                Ok(ToWorker::Adopt(arrived)) => super::handover::adopt(&worker, *arrived),
                Err(TryRecvError::Empty) => break,
                // The control thread is gone: stop without waiting.
                Err(TryRecvError::Disconnected) => return shutdown(&worker, Duration::ZERO).await,
            }
        }
        buf.clear();
        let (res, b) = wake.read(buf).await;
        buf = b;
        if matches!(res, Ok(0) | Err(_)) {
            return shutdown(&worker, Duration::ZERO).await;
        }
    }
}

/// Swaps in the generation's table, starts accepting on the new addresses, retires the
/// removed ones (their queued connections are served by the route they had), and
/// acknowledges once those listeners are closed: when the control thread answers a change,
/// a removed address already refuses connections.
async fn apply(
    worker: &Rc<Worker>,
    generation: u64,
    routes: &Arc<Vec<RouteSpec>>,
    add: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
    remove: &[std::net::SocketAddr],
) {
    let table = RouteTable::build(generation, routes, &worker.metrics, worker.workers);
    let old = std::mem::replace(&mut *worker.table.borrow_mut(), Rc::new(table));
    let mut error = None;
    let mut added = Vec::with_capacity(add.len());
    for (addr, std_listener) in add {
        match TcpListener::from_std(std_listener) {
            Ok(listener) => {
                worker.listen(addr, listener);
                added.push(addr);
            }
            Err(e) => error = Some(format!("cannot adopt the listener for {addr}: {e}")),
        }
    }
    keepalive_on_listeners(worker, &old, &added);
    let retiring: Vec<Rc<Retire>> = remove
        .iter()
        .filter_map(|addr| worker.retire(addr, old.door(addr).cloned()))
        .collect();
    wait_retired(&retiring).await;
    let _ = worker.to_control.send(FromWorker::Applied {
        worker: worker.id,
        generation,
        error,
    });
}

/// Sets each listener's keepalive and user timeout (which its connections inherit) where
/// the new table changed them, and on every listener just added.
fn keepalive_on_listeners(worker: &Worker, old: &RouteTable, added: &[std::net::SocketAddr]) {
    let table = worker.table.borrow();
    for (addr, h) in worker.listeners.borrow().iter() {
        let Some(door) = table.door(addr) else {
            continue;
        };
        let was = old.door(addr).map(|d| d.keepalive);
        if was == Some(door.keepalive) && !added.contains(addr) {
            continue;
        }
        if let Err(e) = crate::net::keepalive::set(h.fd, &door.keepalive) {
            tracing::warn!(worker = worker.id, %addr, error = %e, "cannot set keepalive on the listener; its connections keep the previous settings");
        }
    }
}

/// Waits (bounded) until every listener in `retiring` is closed.
pub(super) async fn wait_retired(retiring: &[Rc<Retire>]) {
    let until = Instant::now() + RETIRE_WAIT;
    while retiring.iter().any(|r| !r.is_done()) && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A drain deadline: after `d.after`, closes the route's sessions on the backends the change
/// took out (all, for a removed route) that are still outside its active set *then* (a later
/// switch back keeps them).
async fn drain(worker: Rc<Worker>, d: Drain) {
    monoio::time::sleep(d.after).await;
    if worker.stopping.get() {
        return;
    }
    let table = worker.table.borrow().clone();
    // A route that is gone (or was made again: another id) keeps no backend active.
    let active = table
        .by_name(&d.route)
        .filter(|r| r.id == d.route_id)
        .map(|r| r.active.as_slice())
        .unwrap_or(&[]);
    let listed = |a: std::net::SocketAddr| d.backends.as_ref().is_none_or(|b| b.contains(&a));
    let closed = worker
        .sessions
        .close_drained(d.route_id, |a| listed(a) && !active.contains(&a));
    if closed > 0 {
        tracing::info!(
            worker = worker.id,
            route = %d.route,
            closed,
            "drain deadline: closed sessions on backends no longer active"
        );
    }
}

/// Stops accepting (each listener retired: what is queued is served, nothing is reset),
/// waits for sessions up to `grace`, closes the rest, reports `Stopped`.
async fn shutdown(worker: &Rc<Worker>, grace: Duration) {
    worker.stopping.set(true);
    let addrs: Vec<_> = worker.listeners.borrow().keys().copied().collect();
    let table = worker.table.borrow().clone();
    let retiring: Vec<Rc<Retire>> = addrs
        .iter()
        .filter_map(|addr| worker.retire(addr, table.door(addr).cloned()))
        .collect();
    // The listeners' closes reach the kernel before this runtime can go away (an op still
    // in flight at runtime drop would keep its fd open).
    wait_retired(&retiring).await;
    monoio::time::sleep(Duration::from_millis(1)).await;
    let deadline = Instant::now() + grace;
    while !worker.sessions.is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        monoio::time::sleep(left.min(Duration::from_millis(20))).await;
    }
    let forced = worker.sessions.close_all();
    // Closed sessions unwind within a few loop turns; bound the wait anyway.
    let unwind = Instant::now() + Duration::from_secs(1);
    while !worker.sessions.is_empty() && Instant::now() < unwind {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.send_snapshot();
    let _ = worker.to_control.send(FromWorker::Stopped {
        worker: worker.id,
        forced,
    });
}
