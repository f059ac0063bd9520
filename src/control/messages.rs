//! Both sides: the messages between the control thread and the workers, and between the
//! admin API and the control thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use super::error::ControlError;
use crate::access_log::{Queue, RouteLog};
use crate::api::{
    ChangeDoc, HealthDoc, ReloadDoc, RouteList, RouteView, StatusDoc, SwitchDoc, UpgradeDoc,
};
use crate::config::RouteConfig;
use crate::metrics::snapshot::WorkerSnapshot;

/// A route as the workers run it in one generation: its configuration, the addresses it
/// listens on, the backends new sessions go to (the active set, which a switch changes), and
/// which of them get no new sessions (found down by the health checks, or drained).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// This route's identity for as long as it exists (a route removed and created again
    /// under the same name is another route: drains of the old one never touch the new one).
    pub id: u64,
    pub cfg: RouteConfig,
    /// The bound listen addresses (the real ports where the configuration asks for 0).
    pub listen: Vec<SocketAddr>,
    pub active: Vec<SocketAddr>,
    pub down: Vec<SocketAddr>,
    pub drain: Vec<SocketAddr>,
    /// The route's access log tags (set by the control thread's `AccessLog`); `None`: it
    /// does not log.
    pub log: Option<RouteLog>,
}

impl RouteSpec {
    /// A route as configured: its `backends` active, listening where configured.
    pub fn configured(id: u64, cfg: &RouteConfig) -> RouteSpec {
        RouteSpec {
            id,
            listen: cfg.listen.clone(),
            active: cfg.backends.clone(),
            down: Vec::new(),
            drain: Vec::new(),
            log: None,
            cfg: cfg.clone(),
        }
    }
}

/// After `after`, closes the sessions of route `route_id` on `backends` (`None`: on any
/// backend) unless their backend is active again in that route by then. Scheduled by a
/// switch (the set it took out), a detach (that backend), a reconfiguration (the backends it
/// dropped) and a removal (all of the route's sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub route_id: u64,
    /// For logs.
    pub route: String,
    pub after: Duration,
    pub backends: Option<Vec<SocketAddr>>,
}

/// A route (by name) and, per backend, the sessions the other workers hold on it.
pub type RouteLoads = (String, Vec<(SocketAddr, u64)>);

/// Control → worker (crossbeam channel, followed by a wake-up byte).
#[derive(Debug)]
pub enum ToWorker {
    /// Switch to route generation `generation`: adopt the listeners in `add` (this worker's
    /// own SO_REUSEPORT sockets), retire the addresses in `remove` (stop new connections,
    /// serve what is already queued, close), and schedule `drains`. Acknowledged with
    /// [`FromWorker::Applied`] once the retired listeners are closed.
    Apply {
        generation: u64,
        routes: Arc<Vec<RouteSpec>>,
        add: Vec<(SocketAddr, TcpListener)>,
        remove: Vec<SocketAddr>,
        drains: Vec<Drain>,
    },
    /// This worker's queue to the access log writer (sent once, before the first generation
    /// with a route that logs).
    AccessLog(Queue),
    /// For `least_connections` and `p2c` routes (by name): the sessions the other workers
    /// held on each backend at their last snapshots. Sent about once a second (when worker
    /// 0's snapshot arrives) where there is more than one worker.
    Loads { routes: Vec<RouteLoads> },
    /// Stop accepting, let sessions finish for `grace`, close the rest, stop.
    Shutdown { grace: Duration },
    /// A new binary serves (`crate::upgrade`): stop accepting on `adopted` (it accepts on
    /// the same sockets now; nothing is closed under a queued connection), retire the other
    /// addresses, and hand over the sessions of `routes` (those it has) as they reach a quiet
    /// point, for at most `upgrade::HANDOVER_BOUND`. Answered with
    /// [`FromWorker::HandedOver`].
    Handover {
        /// Each address the new process took, with how many of its sockets: workers with a
        /// lower index let theirs go, the others retire theirs (the new process closed its
        /// copies of those).
        adopted: Arc<Vec<(SocketAddr, usize)>>,
        routes: Arc<Vec<String>>,
    },
    /// The new process stopped taking sessions: let every session go on here.
    KeepSessions,
    /// A session the old process handed over: go on with it.
    Adopt(Box<crate::upgrade::child::Arrived>),
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
    /// A session reached its quiet point during an upgrade: its sockets (copies; the
    /// worker closed its own), for the new process.
    Moved {
        session: crate::upgrade::wire::MovedSession,
        client: std::os::fd::OwnedFd,
        backend: std::os::fd::OwnedFd,
    },
    /// The upgrade's session hand-over is over on this worker: `moved` went, `left` stay
    /// (half-closed, busy past the bound, or of a route the new process does not have).
    HandedOver {
        worker: usize,
        moved: u64,
        left: usize,
    },
}

/// What the admin API asks the control thread (already authenticated and well-formed;
/// route bodies already validated).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminQuery {
    Metrics {
        json: bool,
    },
    Status,
    Health,
    Routes,
    Route {
        name: String,
    },
    /// The effective configuration as TOML.
    Config,
    Switch {
        route: String,
        to: Vec<SocketAddr>,
    },
    Rollback {
        route: String,
    },
    /// Create or replace an API route (`cfg.listen` empty: an address from the range);
    /// `create_only` (`If-None-Match: *`): refuse when the route exists.
    PutRoute {
        cfg: Box<RouteConfig>,
        create_only: bool,
    },
    DeleteRoute {
        name: String,
    },
    Attach {
        route: String,
        addr: SocketAddr,
        check: bool,
        /// Its weight in the route (1..=256).
        weight: u16,
    },
    Detach {
        route: String,
        addr: SocketAddr,
    },
    /// Add a backend name to a route (its addresses join as it resolves), or change its
    /// weight.
    AttachName {
        route: String,
        name: crate::config::NamedBackend,
    },
    /// Remove a backend name (`"host:port"`) from a route; its addresses drain.
    DetachName {
        route: String,
        name: String,
    },
    Drain {
        route: String,
        addr: SocketAddr,
        drain: bool,
    },
    Reload,
    /// Start `binary` (default: this process's own path) and hand everything over; it gets
    /// `timeout` (default `upgrade::DEFAULT_DEADLINE`) to report ready.
    Upgrade {
        binary: Option<std::path::PathBuf>,
        timeout: Option<Duration>,
        /// Hand over open sessions too (else they finish here).
        sessions: bool,
    },
}

/// The control thread's answer: a typed document, or why not.
#[derive(Debug)]
pub enum Answer {
    /// Prometheus text.
    Metrics(String),
    MetricsJson(serde_json::Value),
    Status(Box<StatusDoc>),
    Health(HealthDoc),
    Routes(RouteList),
    Route(Box<RouteView>),
    /// TOML.
    Config(String),
    Switch(SwitchDoc),
    Change(ChangeDoc),
    Reload(ReloadDoc),
    Upgrade(UpgradeDoc),
}

pub type AdminReply = Result<Answer, ControlError>;

/// One admin request with its reply slot.
#[derive(Debug)]
pub struct AdminRequest {
    pub query: AdminQuery,
    pub reply: tokio::sync::oneshot::Sender<AdminReply>,
}
