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
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::Worker;
use super::accept::Retire;
use crate::control::messages::FromWorker;
use crate::proxy::session;
use crate::proxy::table::Route;
use crate::upgrade::child::Arrived;
use crate::upgrade::wire::MovedSession;

/// Old process, at once when the message arrives (before anything else in the inbox, such
/// as a shutdown, could retire the same listeners): lets go of the listeners the new
/// process took (this worker's index below the count it took), retires the others, and
/// pauses the sessions of `routes`. Then [`run`] waits for them on a task of its own.
pub(super) fn begin(
    worker: &Rc<Worker>,
    adopted: &[(SocketAddr, usize)],
    routes: &[String],
) -> Begun {
    let before = worker.handed_over.get();
    let addrs: Vec<SocketAddr> = worker.listeners.borrow().keys().copied().collect();
    let table = worker.table.borrow().clone();
    let retiring = addrs
        .iter()
        .filter_map(|addr| match adopted.iter().find(|(a, _)| a == addr) {
            Some((_, taken)) if worker.id < *taken => worker.let_go(addr),
            _ => worker.retire(addr, table.door(addr).cloned()),
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
    Begun {
        retiring,
        paused,
        before,
    }
}

/// What [`begin`] started, for [`run`].
pub(super) struct Begun {
    retiring: Vec<Rc<Retire>>,
    paused: Vec<Rc<Route>>,
    /// Sessions handed over before this upgrade (a count kept per worker).
    before: u64,
}

/// Waits until no session of `paused` is open here (each moved at its quiet point, or ended)
/// or `upgrade::HANDOVER_BOUND` passed; lets the rest go on here; reports `HandedOver`.
pub(super) async fn run(worker: Rc<Worker>, begun: Begun) {
    let Begun {
        retiring,
        paused,
        before,
    } = begun;
    let until = Instant::now() + crate::upgrade::HANDOVER_BOUND;
    let open = || {
        paused
            .iter()
            .filter(|r| r.metrics.handing_over.get())
            .map(|r| r.metrics.active.get())
            .sum::<u64>()
    };
    while open() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
    super::inbox::wait_retired(&retiring).await;
    keep_sessions(&worker, &paused);
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

/// Lets the sessions of `routes` go on here (paused ones resume).
pub(super) fn keep_sessions(worker: &Worker, routes: &[Rc<Route>]) {
    for r in routes {
        r.metrics.handing_over.set(false);
    }
    worker.sessions.wake_all();
}

/// New process: goes on with a session the old one handed over. A route that is gone by
/// now (changed in between) cannot take it: both sockets are closed (a clean close).
pub(super) fn adopt(worker: &Rc<Worker>, a: Arrived) {
    let route = worker.table.borrow().by_name(&a.session.route).cloned();
    let Some(route) = route else {
        tracing::warn!(route = %a.session.route, "a handed-over session's route is gone; reset");
        crate::upgrade::wire::reset(a.client);
        crate::upgrade::wire::reset(a.backend);
        return;
    };
    let client = TcpStream::from_std(std::net::TcpStream::from(a.client));
    let backend = TcpStream::from_std(std::net::TcpStream::from(a.backend));
    match (client, backend) {
        (Ok(c), Ok(b)) => {
            monoio::spawn(session::adopt(worker.clone(), route, c, b, a.session));
        }
        (c, b) => {
            // The side that was adopted is reset (the other one could not be).
            for s in [c.as_ref().ok(), b.as_ref().ok()].into_iter().flatten() {
                let _ = crate::net::sys::set_linger_zero(s.as_raw_fd());
            }
            let e = c.err().or(b.err());
            tracing::warn!(error = ?e, "cannot adopt a handed-over session; reset");
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
