//! Both sides: the messages between the control thread and the workers, and between the
//! admin API and the control thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::config::RouteConfig;
use crate::metrics::snapshot::WorkerSnapshot;

/// Control → worker (crossbeam channel, followed by a wake-up byte).
#[derive(Debug)]
pub enum ToWorker {
    /// Switch to route generation `generation`: adopt the listeners in `add` (this worker's
    /// own SO_REUSEPORT sockets) and stop accepting on the addresses in `remove`.
    Apply {
        generation: u64,
        routes: Arc<Vec<RouteConfig>>,
        add: Vec<(SocketAddr, TcpListener)>,
        remove: Vec<SocketAddr>,
    },
    /// Stop accepting, let sessions finish for `grace`, close the rest, stop.
    Shutdown { grace: Duration },
}

/// Worker → control.
#[derive(Debug)]
pub enum FromWorker {
    /// The worker's runtime is up (pinned to `core` when pinning is on).
    Started { worker: usize, core: Option<usize> },
    /// The worker could not build its runtime.
    StartFailed { worker: usize, error: String },
    /// The worker applied (or failed to apply) a generation.
    Applied {
        worker: usize,
        generation: u64,
        error: Option<String>,
    },
    /// Periodic metrics (about once a second, and once more at stop).
    Snapshot(WorkerSnapshot),
    /// The worker's runtime has ended; `forced` sessions were closed at the grace deadline.
    Stopped { worker: usize, forced: usize },
}

/// What the admin API asks the control thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminQuery {
    Metrics { json: bool },
    Status,
}

/// The control thread's answer to an [`AdminQuery`].
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// One admin request with its reply slot.
#[derive(Debug)]
pub struct AdminRequest {
    pub query: AdminQuery,
    pub reply: tokio::sync::oneshot::Sender<AdminReply>,
}
