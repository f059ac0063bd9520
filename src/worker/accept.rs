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
use std::time::{Duration, Instant};

use monoio::io::CancelHandle;
use monoio::net::{TcpListener, TcpStream};

use super::Worker;
use crate::net::sys;
use crate::proxy::session;
use crate::proxy::table::Route;

/// How long a retiring listener keeps accepting after new SYNs are dropped: one round trip
/// for the handshakes already under way (loopback: microseconds; LAN: under a millisecond;
/// most WAN paths: well under this).
pub(super) const HANDSHAKE_GRACE: Duration = Duration::from_millis(200);

/// Shared by an accept loop and whoever retires its listener.
#[derive(Debug, Default)]
pub(super) struct Retire {
    requested: Cell<bool>,
    /// The route the retiring address had: queued connections are served by it.
    route: RefCell<Option<Rc<Route>>>,
    done: Cell<bool>,
}

impl Retire {
    pub(super) fn request(&self, route: Option<Rc<Route>>) {
        *self.route.borrow_mut() = route;
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
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, _peer)) => serve(&worker, addr, stream, &retire),
            // Cancelled (retiring), or the listener failed for good: this loop is done.
            Err(_) if retire.requested.get() || worker.stopping.get() => break,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::EINVAL)) => break,
            Err(e) => {
                // Out of fds or memory: back off instead of spinning; warn at most every 5s.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(worker = worker.id, %addr, error = %e, "accept failed");
                    last_warning = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let fd = listener.as_raw_fd();
    let mut served = 0;
    loop {
        match sys::accept_now(fd) {
            Ok(Some(std)) => match TcpStream::from_std(std) {
                Ok(stream) => {
                    serve(&worker, addr, stream, &retire);
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

/// Starts a session for `stream` with the route that owns `addr` (the retiring route while
/// the address is being retired); without one, closes it.
fn serve(worker: &Rc<Worker>, addr: SocketAddr, stream: TcpStream, retire: &Retire) {
    let route = worker
        .table
        .borrow()
        .lookup(&addr)
        .cloned()
        .or_else(|| retire.route.borrow().clone());
    match route {
        Some(route) => {
            monoio::spawn(session::run(worker.clone(), route, stream));
        }
        // Never listened for a route (cannot happen): close it.
        None => drop(stream),
    }
}
