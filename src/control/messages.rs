//! Both sides: the messages between the control thread and the workers, and between the
//! admin API and the control thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::config::RouteConfig;
use crate::metrics::snapshot::WorkerSnapshot;

/// A route as the workers run it in one generation: its configuration, the backends new
/// sessions go to (the active set, which a switch changes), and which of them the health
/// checks found down (they get no new sessions while another is up).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub cfg: RouteConfig,
    pub active: Vec<SocketAddr>,
    pub down: Vec<SocketAddr>,
}

impl RouteSpec {
    /// A route as configured: its `backends` active, none known down.
    pub fn configured(cfg: &RouteConfig) -> RouteSpec {
        RouteSpec {
            active: cfg.backends.clone(),
            down: Vec::new(),
            cfg: cfg.clone(),
        }
    }
}

/// After a switch: when `after` has passed, sessions of `route` on a backend in `removed`
/// (the set this switch took out) that is still not active then are closed (and counted as
/// drained). A later switch back to their backend keeps them; sessions of other switches
/// are left to their own deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub route: String,
    pub after: Duration,
    pub removed: Vec<SocketAddr>,
}

/// Control → worker (crossbeam channel, followed by a wake-up byte).
#[derive(Debug)]
pub enum ToWorker {
    /// Switch to route generation `generation`: adopt the listeners in `add` (this worker's
    /// own SO_REUSEPORT sockets), stop accepting on the addresses in `remove`, and schedule
    /// `drains`. Acknowledged with [`FromWorker::Applied`].
    Apply {
        generation: u64,
        routes: Arc<Vec<RouteSpec>>,
        add: Vec<(SocketAddr, TcpListener)>,
        remove: Vec<SocketAddr>,
        drains: Vec<Drain>,
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

/// What the admin API asks the control thread (already authenticated and well-formed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminQuery {
    Metrics { json: bool },
    Status,
    Health,
    Switch { route: String, to: Vec<SocketAddr> },
    Rollback { route: String },
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
