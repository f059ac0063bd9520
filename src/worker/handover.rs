//! Hot side (cold path): a worker's part in a binary upgrade (`crate::upgrade`).
//!
//! Old process: stop accepting where the new process took the sockets over, retire the
//! rest, then pause the sessions of the routes the new process has; each relay that reaches
//! a quiet point hands its two sockets over (`Worker::hand_over`). After
//! `upgrade::HANDOVER_BOUND`, or once no such session is left, the others are let go on here.
//! New process: a handed-over session is adopted on this worker with its route.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::Worker;
use super::accept::Retire;
use crate::control::messages::FromWorker;
use crate::proxy::session;
use crate::proxy::table::Route;
use crate::upgrade::child::Arrived;
use crate::upgrade::wire::MovedSession;

/// Runs the old process's side on this worker; reports `HandedOver`.
pub(super) async fn run(
    worker: Rc<Worker>,
    adopted: Arc<Vec<SocketAddr>>,
    routes: Arc<Vec<String>>,
) {
    let addrs: Vec<SocketAddr> = worker.listeners.borrow().keys().copied().collect();
    let table = worker.table.borrow().clone();
    let retiring: Vec<Rc<Retire>> = addrs
        .iter()
        .filter_map(|addr| {
            if adopted.contains(addr) {
                worker.let_go(addr)
            } else {
                worker.retire(addr, table.door(addr).cloned())
            }
        })
        .collect();
    let paused: Vec<Rc<Route>> = routes
        .iter()
        .filter_map(|name| table.by_name(name).cloned())
        .collect();
    for r in &paused {
        r.metrics.handing_over.set(true);
    }
    worker.sessions.wake_all();
    let before = worker.handed_over.get();
    let until = Instant::now() + crate::upgrade::HANDOVER_BOUND;
    let open = || paused.iter().map(|r| r.metrics.active.get()).sum::<u64>();
    while open() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    super::inbox::wait_retired(&retiring).await;
    for r in &paused {
        r.metrics.handing_over.set(false);
    }
    worker.sessions.wake_all();
    let moved = worker.handed_over.get() - before;
    let left = worker.sessions.len();
    tracing::info!(
        worker = worker.id,
        moved,
        left,
        "sessions handed to the new process"
    );
    let _ = worker.to_control.send(FromWorker::HandedOver {
        worker: worker.id,
        moved,
        left,
    });
}

/// New process: goes on with a session the old one handed over. A route that is gone by
/// now (changed in between) cannot take it: both sockets are closed (a clean close).
pub(super) fn adopt(worker: &Rc<Worker>, a: Arrived) {
    let route = worker.table.borrow().by_name(&a.session.route).cloned();
    let Some(route) = route else {
        tracing::warn!(route = %a.session.route, "a handed-over session's route is gone; closed");
        return;
    };
    let client = TcpStream::from_std(std::net::TcpStream::from(a.client));
    let backend = TcpStream::from_std(std::net::TcpStream::from(a.backend));
    match (client, backend) {
        (Ok(c), Ok(b)) => {
            monoio::spawn(session::adopt(worker.clone(), route, c, b, a.session));
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot adopt a handed-over session; closed")
        }
    }
}

impl Worker {
    /// Stops accepting on `addr` without closing the socket under anyone: the new process
    /// holds it too and accepts what is queued. A connection this worker's accept already
    /// took is still served (and handed over).
    fn let_go(&self, addr: &SocketAddr) -> Option<Rc<Retire>> {
        let h = self.listeners.borrow_mut().remove(addr)?;
        if h.retire.is_done() {
            return None;
        }
        h.retire.hand_over();
        h.canceller.cancel();
        Some(h.retire)
    }

    /// Sends a paused session's sockets (copies) to the control thread, for the new
    /// process; the caller closes its own. False when the copies cannot be made (out of
    /// descriptors): the session stays here.
    pub fn hand_over(
        &self,
        route: &Route,
        client: &TcpStream,
        backend: &TcpStream,
        moved: [u64; 2],
        started: Instant,
    ) -> bool {
        // Read here, not kept in every session's future (a cold path).
        let Ok(backend_addr) = backend.peer_addr() else {
            return false;
        };
        let copy = |s: &TcpStream| crate::net::sys::dup(s.as_raw_fd());
        let (Ok(client), Ok(backend)) = (copy(client), copy(backend)) else {
            return false;
        };
        let session = MovedSession {
            route: route.cfg.name.clone(),
            backend: backend_addr,
            worker: self.id,
            moved,
            age_ms: started.elapsed().as_millis() as u64,
        };
        let sent = self
            .to_control
            .send(FromWorker::Moved {
                session,
                client,
                backend,
            })
            .is_ok();
        if sent {
            self.handed_over.set(self.handed_over.get() + 1);
        }
        sent
    }
}
