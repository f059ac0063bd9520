//! Both sides: `GET /status`, `GET /routes`, `GET /health` documents.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Origin, SwitchRecord};

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The configuration file ringway runs with; `None`: the embedded default.
    pub config_file: Option<String>,
    pub state_file: String,
    /// The route generation last published to the workers.
    pub generation: u64,
    /// The admin API's bound TCP address (the real port when `admin.listen` asks for 0).
    pub admin: SocketAddr,
    /// The admin unix socket, when configured.
    pub admin_unix: Option<String>,
    pub runtime: RuntimeDoc,
    pub workers: Vec<WorkerDoc>,
    /// The busiest worker's open sessions over the mean across workers: 1.0 when balanced
    /// (and when nothing is open), up to the number of workers when one carries everything.
    pub worker_imbalance: f64,
    pub routes: Vec<RouteDoc>,
    /// Every address ringway listens on, and the routes that use it.
    pub listeners: Vec<ListenerDoc>,
    pub last_switch: Option<SwitchRecord>,
    pub last_reload: Option<ReloadStatusDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeDoc {
    pub driver: String,
    pub relay: String,
    pub workers: usize,
}

/// One worker. Its totals cover every route it served (removed ones too), summed by the
/// control thread from the worker's snapshots (about once a second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerDoc {
    pub worker: usize,
    pub core: Option<usize>,
    /// The worker thread's Linux thread id (`None` where `/proc` could not tell it).
    pub tid: Option<u32>,
    pub connections_active: u64,
    /// Connections accepted.
    pub connections_total: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// CPU time (user + system) of the worker's thread, seconds (`None` until read).
    pub cpu_seconds: Option<f64>,
    pub connect_duration_seconds: Quantiles,
    pub session_duration_seconds: Quantiles,
    /// The last generation this worker acknowledged.
    pub generation: u64,
}

/// One bound listen address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerDoc {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// As configured (differs when the configuration asks for port 0).
    pub configured: SocketAddr,
    /// The routes on it (several when `[route.match]` tells them apart).
    pub routes: Vec<String>,
    /// How a connection picks among `routes`, most specific first; the default last.
    #[serde(default)]
    pub rules: Vec<RuleDoc>,
    /// Sources whose PROXY header is read (and required) here; empty: none.
    #[serde(default)]
    pub accept_proxy_from: Vec<String>,
    /// How long the first bytes are awaited when the route depends on them.
    #[serde(default)]
    pub peek_timeout: String,
}

/// One route on a listen address and what it matches (`[route.match]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleDoc {
    pub route: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefix: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
    /// Takes what no other route matched.
    pub default: bool,
    /// The PROXY protocol version sent to its backends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
}

/// The last configuration reload, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatusDoc {
    /// RFC 3339, UTC.
    pub at: String,
    /// "ok" or "failed".
    pub result: String,
    /// What triggered it: "api", "signal", "watch".
    pub trigger: String,
    /// Why it failed (the configuration errors, or the bind failure).
    pub error: Option<String>,
    /// The generation it published (none when it failed or changed nothing).
    pub generation: Option<u64>,
}

/// One route (`GET /routes/{name}`, and each entry of `/status` and `GET /routes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDoc {
    pub name: String,
    pub origin: Origin,
    /// The addresses clients connect to (bound; real ports where port 0 was asked for).
    pub listen: Vec<SocketAddr>,
    /// The listen addresses as the route's definition writes them.
    pub listen_configured: Vec<SocketAddr>,
    /// How new sessions are spread (`balance`: "round_robin", "least_connections", "p2c",
    /// "hash_source").
    #[serde(default)]
    pub balance: String,
    /// Where new sessions go.
    pub active: Vec<SocketAddr>,
    /// Where a rollback would go.
    pub previous: Option<Vec<SocketAddr>>,
    pub healthy: bool,
    /// "tcp", "http" or "none" (no periodic checks).
    pub health_check: String,
    /// The generation that last changed this route.
    pub generation: u64,
    /// A switch or change is between its gate and every worker's acknowledgement.
    pub switching: bool,
    pub rollback_watch: Option<WatchDoc>,
    pub backends: Vec<BackendDoc>,
    /// The backends written `"name:port"`, as last resolved (absent for a route of IP
    /// literals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameDoc>,
    pub connections_active: u64,
    /// Sessions on backends that are no longer active (they drain).
    pub draining: u64,
    pub connections_total: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    pub connect_duration_seconds: Option<Quantiles>,
    pub last_switch: Option<SwitchRecord>,
    /// Newest first.
    pub history: Vec<SwitchRecord>,
}

/// A backend name of a route and what it resolves to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameDoc {
    /// As configured: `"name:port"`.
    pub name: String,
    pub weight: u16,
    /// The last good answer, at the name's port (kept when a later resolution fails);
    /// empty until the name first resolves.
    pub addresses: Vec<SocketAddr>,
    /// Why the last resolution failed; `None` when it succeeded (or none has finished yet).
    pub error: Option<String>,
    /// Resolutions that failed since start-up.
    pub failures: u64,
    /// Seconds since the last good answer; `None`: never resolved.
    pub resolved_seconds_ago: Option<f64>,
    /// Seconds until the name is resolved again; `None`: not scheduled yet.
    pub next_resolve_seconds: Option<f64>,
}

/// `GET /routes`: every route's definition and routing state; no traffic counters (those
/// are in `/status`), so the document changes only when a route does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteList {
    pub generation: u64,
    pub routes: Vec<RouteView>,
}

/// `GET /routes/{name}`: a route's definition, in the shape `PUT /routes/{name}` takes, and
/// where its traffic goes now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub name: String,
    pub origin: Origin,
    /// The generation that last changed this route.
    pub generation: u64,
    /// The addresses clients connect to (bound).
    pub listen: Vec<SocketAddr>,
    /// Where new sessions go (a switch changes it).
    pub active: Vec<SocketAddr>,
    pub previous: Option<Vec<SocketAddr>>,
    /// Backends with the drain flag.
    pub drained: Vec<SocketAddr>,
    /// Every key of the route, defaults written out: a valid `PUT /routes/{name}` body.
    pub definition: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchDoc {
    pub switch_id: u64,
    pub seconds_left: f64,
}

/// One backend of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendDoc {
    pub addr: SocketAddr,
    pub role: BackendRole,
    pub health: HealthWord,
    pub health_reason: Option<String>,
    pub health_since_seconds: Option<u64>,
    /// The drain flag (`ringway backend drain`): no new sessions, open ones stay.
    pub drain: bool,
    /// Its weight in the route (1..=256; 1 where none is configured, e.g. an address a
    /// switch brought in).
    #[serde(default = "one")]
    pub weight: u16,
    pub connections_active: u64,
    /// Open sessions on it while it is not active (they drain).
    pub draining: u64,
    pub connections_total: u64,
    pub connect_errors: ConnectErrorsDoc,
    /// Its own `max_connections` (each worker takes an equal share); `None`: no limit of
    /// its own.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Passive ejection (`[route.eject]`): true while it is out on any worker.
    #[serde(default)]
    pub ejected: bool,
    /// On how many workers it is out now (each worker ejects on its own failures).
    #[serde(default)]
    pub ejected_workers: usize,
    /// Milliseconds until its latest ejection ends; `None`: not ejected.
    #[serde(default)]
    pub ejected_ms_left: Option<u64>,
    /// Ejections since start, every worker summed.
    #[serde(default)]
    pub ejections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendRole {
    /// In the active set: new sessions go here (unless down or drained).
    Active,
    /// The set a rollback would go to.
    Previous,
    /// Configured or checked, not active.
    Standby,
    /// No longer part of the route; only its open sessions remain.
    Detached,
}

impl BackendRole {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendRole::Active => "active",
            BackendRole::Previous => "previous",
            BackendRole::Standby => "standby",
            BackendRole::Detached => "detached",
        }
    }
}

/// What the health checks say of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthWord {
    Up,
    Down,
    /// Periodic checks run but have not decided yet.
    Checking,
    /// The route has no periodic checks.
    Unchecked,
}

impl HealthWord {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthWord::Up => "up",
            HealthWord::Down => "down",
            HealthWord::Checking => "checking",
            HealthWord::Unchecked => "unchecked",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectErrorsDoc {
    pub refused: u64,
    pub timeout: u64,
    /// `EADDRNOTAVAIL`: no free local port (ephemeral ports exhausted).
    #[serde(default)]
    pub no_local_port: u64,
    /// Out of file descriptors.
    #[serde(default)]
    pub fd_limit: u64,
    /// No route to the backend.
    #[serde(default)]
    pub unreachable: u64,
    pub other: u64,
}

impl ConnectErrorsDoc {
    pub fn total(&self) -> u64 {
        self.refused
            + self.timeout
            + self.no_local_port
            + self.fd_limit
            + self.unreachable
            + self.other
    }
}

/// Quantiles of a latency histogram, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDoc {
    pub healthy: bool,
    pub routes: Vec<RouteHealthDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHealthDoc {
    pub name: String,
    pub healthy: bool,
    pub active: Vec<ActiveHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveHealth {
    pub addr: SocketAddr,
    pub health: HealthWord,
}

fn one() -> u16 {
    1
}
