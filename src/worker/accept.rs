//! Hot side: the accept loop of one listener on one worker.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::CancelHandle;
use monoio::net::TcpListener;

use super::Worker;
use crate::proxy::session;

/// Accepts until cancelled; each connection becomes a session task on this worker.
pub(super) async fn run(
    worker: Rc<Worker>,
    listener: TcpListener,
    addr: SocketAddr,
    cancel: CancelHandle,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.cancelable_accept(cancel.clone()).await {
            Ok((stream, _peer)) => {
                let route = worker.table.borrow().lookup(&addr).cloned();
                match route {
                    Some(route) => {
                        monoio::spawn(session::run(worker.clone(), route, stream));
                    }
                    // The address left the table in a generation applied after this
                    // connection was queued: close it.
                    None => drop(stream),
                }
            }
            // Cancelled, or the listener was shut down (EINVAL): this loop is done.
            Err(_) if worker.stopping.get() || !worker.listeners.borrow().contains_key(&addr) => {
                break;
            }
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
    drop(listener);
    worker
        .accepting
        .set(worker.accepting.get().saturating_sub(1));
    tracing::debug!(worker = worker.id, %addr, "accept loop stopped");
}
