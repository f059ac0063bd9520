//! Metric names, in one place (contract 3.4 of shared/design.md, plus ringway's additions).

pub const CONNECTIONS_TOTAL: &str = "ringway_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "ringway_connections_active";
pub const BYTES_TOTAL: &str = "ringway_bytes_total";
pub const CONNECT_ERRORS_TOTAL: &str = "ringway_connect_errors_total";
pub const CONNECT_DURATION: &str = "ringway_connect_duration_seconds";
pub const SESSION_DURATION: &str = "ringway_session_duration_seconds";
pub const WORKER_CONNECTIONS_ACTIVE: &str = "ringway_worker_connections_active";
/// ringway addition: sessions ended, by outcome (clean, client_reset, backend_reset, ...).
pub const SESSIONS_ENDED_TOTAL: &str = "ringway_sessions_ended_total";
/// ringway addition: connections refused before a backend was tried (max_connections).
pub const CONNECTIONS_REJECTED_TOTAL: &str = "ringway_connections_rejected_total";
/// ringway addition: sessions open per backend.
pub const BACKEND_CONNECTIONS_ACTIVE: &str = "ringway_backend_connections_active";
/// Switches and rollbacks, per route and result (switched, rejected, rolled_back).
pub const SWITCHES_TOTAL: &str = "ringway_switches_total";
/// ringway addition: 1 when the health checks find a backend up, 0 when down (only checked
/// backends appear).
pub const BACKEND_UP: &str = "ringway_backend_up";
/// ringway addition: configuration reloads, per result (ok, failed).
pub const RELOADS_TOTAL: &str = "ringway_reloads_total";
/// ringway addition: connections still queued on a listener when it was closed (the kernel
/// resets them). Retiring a listener serves its queue first, so this should stay 0.
pub const LISTENER_QUEUE_RESETS_TOTAL: &str = "ringway_listener_queue_resets_total";
