//! Hot side: the accept loop of one listener on one worker, and the listener's retirement.
//!
//! Retiring a listener (its address left the route table, or ringway stops) must not reset
//! a connection the kernel already accepted into its queue: closing a listening socket
//! resets everything queued on it. So the worker first stops new connections with a socket
//! filter that drops SYNs (`sys::drop_new_connections`), then keeps accepting through the
//! ring for [`HANDSHAKE_GRACE`]: handshakes under way when the filter went on (a SYN-ACK
//! sent, the client's last ACK still on its way, one round trip) complete into the queue
//! and are served, with the route the address had. Then it cancels the accept (a connection
//! it already took is still delivered), takes what is left in the queue without blocking,
//! and closes. Whatever is still queued at the close is counted in
//! `ringway_listener_queue_resets_total`. A handshake whose last ACK comes later than the
//! grace (a round trip over 200 ms) finds no listener and is reset; the kernel does not
//! show half-open handshakes to count them.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::CancelHandle;
use monoio::net::{TcpListener, TcpStream};

use super::Worker;
use crate::metrics::local::{AcceptErrorKind, Rejected};
use crate::net::sys;
use crate::proxy::balance::Source;
use crate::proxy::door::Door;
use crate::proxy::session;

/// How long a retiring listener keeps accepting after new SYNs are dropped: one round trip
/// for the handshakes already under way (loopback: microseconds; LAN: under a millisecond;
/// most WAN paths: well under this).
pub(super) const HANDSHAKE_GRACE: Duration = Duration::from_millis(200);

/// How long an accept loop waits after a failed accept (out of fds or memory) before it
/// tries again: no spin, and a freed descriptor is used within this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Shared by an accept loop and whoever retires its listener.
#[derive(Debug, Default)]
pub(super) struct Retire {
    requested: Cell<bool>,
    /// The routes the retiring address had: queued connections are served by them.
    door: RefCell<Option<Rc<Door>>>,
    done: Cell<bool>,
    /// An upgrade: the new process accepts on this socket now. The loop stops without
    /// taking what is queued (it is the new process's) and closes only its own descriptor.
    handed_over: Cell<bool>,
}

impl Retire {
    pub(super) fn request(&self, door: Option<Rc<Door>>) {
        *self.door.borrow_mut() = door;
        self.requested.set(true);
    }

    pub(super) fn hand_over(&self) {
        self.handed_over.set(true);
        self.requested.set(true);
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.get()
    }
}

/// Accepts until retired; each connection becomes a session task on this worker.
pub(super) async fn run(
    worker: Rc<Worker>,
    listener: TcpListener,
    addr: SocketAddr,
    cancel: CancelHandle,
    retire: Rc<Retire>,
) {
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, peer)) => serve(&worker, addr, stream, peer, &retire),
            // Cancelled (retiring), or the listener failed for good: this loop is done.
            Err(_) if retire.requested.get() || worker.stopping.get() => break,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::EINVAL)) => break,
            Err(e) => {
                // Out of fds or memory: the connection stays queued. Back off instead of
                // spinning; counted, and logged at most once per kind every 5 s.
                let kind = AcceptErrorKind::of(&e);
                worker.metrics.accept_error(kind);
                if let Some(suppressed) = worker.warnings.accept(kind).allow() {
                    tracing::warn!(worker = worker.id, %addr, kind = kind.as_str(), error = %e, suppressed, "accept failed; retrying every 10 ms");
                }
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    if retire.handed_over.get() {
        drop(listener);
        retire.done.set(true);
        worker.forget_listener(&addr, &retire);
        tracing::debug!(worker = worker.id, %addr, "listener handed to the new process");
        return;
    }
    let fd = listener.as_raw_fd();
    let mut served = 0;
    loop {
        match sys::accept_now(fd) {
            Ok(Some(std)) => match std
                .peer_addr()
                .and_then(|peer| Ok((TcpStream::from_std(std)?, peer)))
            {
                Ok((stream, peer)) => {
                    serve(&worker, addr, stream, peer, &retire);
                    served += 1;
                }
                Err(e) => {
                    tracing::warn!(worker = worker.id, %addr, error = %e, "cannot adopt a queued connection")
                }
            },
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(worker = worker.id, %addr, error = %e, "draining the accept queue failed");
                break;
            }
        }
    }
    let residue = u64::from(sys::accept_queue_len(fd).unwrap_or(0));
    worker.metrics.listener_reset(residue);
    drop(listener);
    // Done before any other task runs: nobody can use this fd number (now free) as ours.
    retire.done.set(true);
    worker.forget_listener(&addr, &retire);
    if residue > 0 {
        tracing::warn!(worker = worker.id, %addr, residue, "listener closed with connections still queued (reset)");
    }
    tracing::debug!(worker = worker.id, %addr, served, residue, "listener retired");
}

/// Starts a session for `stream` (from `peer`) with the routes of `addr` (those the address
/// had, while it is being retired); without any, closes it.
fn serve(
    worker: &Rc<Worker>,
    addr: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
    retire: &Retire,
) {
    if worker.fds.intrudes(stream.as_raw_fd()) {
        refuse_at_fd_limit(worker, addr, stream);
        return;
    }
    let door = worker
        .table
        .borrow()
        .door(&addr)
        .cloned()
        .or_else(|| retire.door.borrow().clone());
    match door {
        Some(door) => match door.direct() {
            Some(route) => {
                // Only a route that logs needs them (one small allocation per session).
                let ends = route.log.map(|_| {
                    Box::new(session::Ends {
                        client: peer,
                        listen: addr,
                    })
                });
                monoio::spawn(session::run(
                    worker.clone(),
                    route.clone(),
                    stream,
                    None,
                    ends,
                    Source::of(peer.ip()),
                ));
            }
            None => {
                monoio::spawn(session::run_door(worker.clone(), door, stream, peer));
            }
        },
        // The address's routes have nothing to pick yet (backends that are names not
        // resolved so far): reset, counted.
        None => refuse_without_backend(worker, addr, stream),
    }
}

/// A connection on an address whose routes the table left out (no backend to pick yet):
/// reset at once and counted in `ringway_listen_rejected_total{reason="no_backend"}`.
#[cold]
fn refuse_without_backend(worker: &Worker, addr: SocketAddr, stream: TcpStream) {
    let _ = sys::set_linger_zero(stream.as_raw_fd());
    drop(stream);
    worker.metrics.listen(addr).reject(Rejected::NoBackend);
}

/// A connection whose socket fell into the reserve of descriptors (`proxy::fds`): reset at
/// once, counted and logged (rate limited).
#[cold]
fn refuse_at_fd_limit(worker: &Worker, addr: SocketAddr, stream: TcpStream) {
    let _ = sys::set_linger_zero(stream.as_raw_fd());
    drop(stream);
    worker.metrics.accept_error(AcceptErrorKind::FdLimit);
    if let Some(suppressed) = worker.warnings.accept(AcceptErrorKind::FdLimit).allow() {
        tracing::warn!(
            worker = worker.id,
            %addr,
            kind = "fd_limit",
            suppressed,
            "out of file descriptors (ringway keeps the last ones for its admin API): new connections are reset; raise LimitNOFILE (ulimit -n) or lower max_connections"
        );
    }
}
