//! Control side (rendering, and the tests): metric names, in one place (contract 3.4 of
//! shared/design.md, plus ringway's additions). [`FAMILIES`] lists every family
//! `GET /metrics` exports, with its type; a unit test in `render` keeps it equal to what is
//! rendered, and the Grafana dashboard's test checks its queries against it.

pub const CONNECTIONS_TOTAL: &str = "ringway_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "ringway_connections_active";
pub const BYTES_TOTAL: &str = "ringway_bytes_total";
pub const CONNECT_ERRORS_TOTAL: &str = "ringway_connect_errors_total";
pub const CONNECT_DURATION: &str = "ringway_connect_duration_seconds";
pub const SESSION_DURATION: &str = "ringway_session_duration_seconds";
pub const WORKER_CONNECTIONS_ACTIVE: &str = "ringway_worker_connections_active";
/// ringway addition: connections accepted, per worker (every route summed).
pub const WORKER_CONNECTIONS_TOTAL: &str = "ringway_worker_connections_total";
/// ringway addition: bytes relayed, per worker and direction (every route summed).
pub const WORKER_BYTES_TOTAL: &str = "ringway_worker_bytes_total";
/// ringway addition: backend connect latency, per worker (every route; no route label).
pub const WORKER_CONNECT_DURATION: &str = "ringway_worker_connect_duration_seconds";
/// ringway addition: session durations, per worker (every route; no route label).
pub const WORKER_SESSION_DURATION: &str = "ringway_worker_session_duration_seconds";
/// ringway addition: the worker thread's CPU time (user + system), per worker.
pub const WORKER_CPU_SECONDS_TOTAL: &str = "ringway_worker_cpu_seconds_total";
/// ringway addition: the busiest worker's active sessions over the mean across workers
/// (1 when balanced or idle, up to the number of workers).
pub const WORKER_IMBALANCE: &str = "ringway_worker_imbalance";
/// ringway addition: sessions ended, by outcome (clean, client_reset, backend_reset, ...).
pub const SESSIONS_ENDED_TOTAL: &str = "ringway_sessions_ended_total";
/// ringway addition: connections refused before a backend was tried, per `reason`:
/// `max_connections` (the route's), `backends_full` (every backend at its own
/// `max_connections`, or ejected), `max_connections_per_source`, `runtime_max_connections`
/// (on a shared address before a route took it: `ringway_listen_rejected_total`).
pub const CONNECTIONS_REJECTED_TOTAL: &str = "ringway_connections_rejected_total";
/// ringway addition: sessions open per backend.
pub const BACKEND_CONNECTIONS_ACTIVE: &str = "ringway_backend_connections_active";
/// ringway addition: passive ejections of a backend (`[route.eject]`), every worker summed.
pub const BACKEND_EJECTIONS_TOTAL: &str = "ringway_backend_ejections_total";
/// ringway addition: on how many workers a backend is ejected now (0: in everywhere).
pub const BACKEND_EJECTED: &str = "ringway_backend_ejected";
/// Switches and rollbacks, per route and result (switched, rejected, rolled_back).
pub const SWITCHES_TOTAL: &str = "ringway_switches_total";
/// ringway addition: 1 when the health checks find a backend up, 0 when down (only checked
/// backends appear).
pub const BACKEND_UP: &str = "ringway_backend_up";
/// ringway addition: configuration reloads, per result (ok, failed).
pub const RELOADS_TOTAL: &str = "ringway_reloads_total";
/// ringway addition: when this process started (Unix time, seconds). Counters restart at
/// zero in the new process of a binary upgrade; a change of this gauge marks it.
pub const START_TIME_SECONDS: &str = "ringway_start_time_seconds";
/// ringway addition: binary upgrades this process failed to make (the new binary exited,
/// hung or refused its configuration; this process served on).
pub const UPGRADES_FAILED_TOTAL: &str = "ringway_upgrades_failed_total";
/// ringway addition: failed resolutions of a route's backend name (`name` is the host);
/// the route keeps the name's last good addresses meanwhile.
pub const DNS_FAILURES_TOTAL: &str = "ringway_dns_failures_total";
/// ringway addition: connections still queued on a listener when it was closed (the kernel
/// resets them). Retiring a listener serves its queue first, so this should stay 0.
pub const LISTENER_QUEUE_RESETS_TOTAL: &str = "ringway_listener_queue_resets_total";
/// ringway addition: connections a listener could not hand over, per `kind`: `fd_limit`
/// (`EMFILE`/`ENFILE`, or accepted into ringway's reserve of descriptors and reset at once)
/// or `other`.
pub const ACCEPT_ERRORS_TOTAL: &str = "ringway_accept_errors_total";
/// ringway addition: splice pipes whose size (`runtime.pipe_size`) the kernel refused: over
/// `fs.pipe-max-size` or the user's `fs.pipe-user-pages-soft` budget. Such pipes keep the
/// kernel's default size and bulk throughput drops; tuning/README.md says how to raise them.
pub const PIPE_RESIZE_REFUSED_TOTAL: &str = "ringway_pipe_resize_refused_total";
/// ringway addition: connections on a shared listen address, by the route that took them
/// and how it was chosen (`by`: sni, host, path, source, default).
pub const LISTEN_ROUTED_TOTAL: &str = "ringway_listen_routed_total";
/// ringway addition: connections on a shared listen address reset before any route took
/// them (`reason`: no_match, proxy_untrusted, proxy_malformed).
pub const LISTEN_REJECTED_TOTAL: &str = "ringway_listen_rejected_total";
/// ringway addition: peeks at a shared listen address that could not decide (`reason`:
/// timeout, malformed, too_large, closed); the default route, if any, took the connection.
pub const LISTEN_PEEK_FAILURES_TOTAL: &str = "ringway_listen_peek_failures_total";

/// ringway addition: access log lines dropped because a worker's queue to the log writer was
/// full (the writer, or its disk, could not keep up), per route.
pub const ACCESS_LOG_DROPPED_TOTAL: &str = "ringway_access_log_dropped_total";

/// A family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Exported as `NAME_bucket{le}`, `NAME_sum` and `NAME_count`.
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Every family of `GET /metrics`, in the order rendered.
pub const FAMILIES: &[(&str, Kind)] = &[
    (CONNECTIONS_TOTAL, Kind::Counter),
    (CONNECTIONS_ACTIVE, Kind::Gauge),
    (BYTES_TOTAL, Kind::Counter),
    (CONNECT_ERRORS_TOTAL, Kind::Counter),
    (BACKEND_CONNECTIONS_ACTIVE, Kind::Gauge),
    (BACKEND_EJECTIONS_TOTAL, Kind::Counter),
    (BACKEND_EJECTED, Kind::Gauge),
    (CONNECTIONS_REJECTED_TOTAL, Kind::Counter),
    (SESSIONS_ENDED_TOTAL, Kind::Counter),
    (ACCESS_LOG_DROPPED_TOTAL, Kind::Counter),
    (CONNECT_DURATION, Kind::Histogram),
    (SESSION_DURATION, Kind::Histogram),
    (WORKER_CONNECTIONS_ACTIVE, Kind::Gauge),
    (WORKER_CONNECTIONS_TOTAL, Kind::Counter),
    (WORKER_BYTES_TOTAL, Kind::Counter),
    (WORKER_CONNECT_DURATION, Kind::Histogram),
    (WORKER_SESSION_DURATION, Kind::Histogram),
    (WORKER_CPU_SECONDS_TOTAL, Kind::Counter),
    (WORKER_IMBALANCE, Kind::Gauge),
    (LISTENER_QUEUE_RESETS_TOTAL, Kind::Counter),
    (ACCEPT_ERRORS_TOTAL, Kind::Counter),
    (PIPE_RESIZE_REFUSED_TOTAL, Kind::Counter),
    (LISTEN_ROUTED_TOTAL, Kind::Counter),
    (LISTEN_REJECTED_TOTAL, Kind::Counter),
    (LISTEN_PEEK_FAILURES_TOTAL, Kind::Counter),
    (SWITCHES_TOTAL, Kind::Counter),
    (BACKEND_UP, Kind::Gauge),
    (RELOADS_TOTAL, Kind::Counter),
    (DNS_FAILURES_TOTAL, Kind::Counter),
    (START_TIME_SECONDS, Kind::Gauge),
    (UPGRADES_FAILED_TOTAL, Kind::Counter),
];

/// Every sample name `GET /metrics` can export: the families, with `_bucket`, `_sum` and
/// `_count` for histograms.
pub fn sample_names() -> Vec<String> {
    let mut out = Vec::new();
    for (name, kind) in FAMILIES {
        if *kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.push(format!("{name}{suffix}"));
            }
        } else {
            out.push(name.to_string());
        }
    }
    out
}
