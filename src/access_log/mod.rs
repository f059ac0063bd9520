//! The access log: one line per finished session, for routes with `access_log`.
//!
//! Hot side (this module's types, and `Worker::log`): when a session of a logging route ends,
//! its worker fills a fixed-size [`Record`] (`Copy`: addresses, counters, durations, the
//! outcome, a [`LogTag`] naming route, file and format) and offers it to its own bounded queue
//! with `try_send`. Nothing is formatted, allocated or written on the worker, and it never
//! waits: a full queue drops the line and counts it in
//! `ringway_access_log_dropped_total{route}`. The queue is a crossbeam bounded channel, one
//! per worker, shared with the writer thread alone: a `try_send` is a few atomic operations
//! once per *session* (never per packet), the same mechanism the workers already use for
//! their control messages. The writer never blocks on these queues (it polls them), so a
//! `try_send` never has a sleeping receiver to wake: no system call.
//!
//! Control side ([`AccessLog`], [`format`]): the control thread gives each distinct
//! (route, file, format) a tag before it publishes a generation that uses it, and starts the
//! writer thread with the workers' queues when a route first logs. The writer drains every
//! queue every 10 ms (100 ms once idle), formats (text or JSON, `serde_json`), writes through
//! a `BufWriter` per file (one per path, whatever the number of routes writing it) and flushes
//! after each round that wrote, so a line is on disk within about 10 ms and never later than
//! a second. SIGUSR1 makes it close every file; each is opened again (created if missing) at
//! its next line: logrotate's `postrotate`. A slow or stuck disk stalls the writer only; the
//! workers go on and count what they drop.

pub mod format;
mod writer;

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::metrics::local::{Limit, Outcome, Rejected};

pub use writer::AccessLog;

/// A (route, file, format) the writer knows, by index. Tags are never reused, so a record
/// still queued when its route changes is written as it was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogTag(pub u32);

/// A route's access log on the workers: its own lines, and the lines of connections its
/// listen address refused before any route took them (route `-`, same file and format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLog {
    pub route: LogTag,
    pub unrouted: LogTag,
}

/// Why a connection was refused before a session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The route held `max_connections` (its share on that worker).
    MaxConnections,
    /// The client's source held its share of the route's `max_connections_per_source`.
    MaxConnectionsPerSource,
    /// The worker held its share of `runtime.max_connections`.
    RuntimeMaxConnections,
    /// Every backend held its own `max_connections` on that worker (or was ejected).
    BackendsFull,
    /// A shared address refused it before any route took it.
    Door(Rejected),
}

impl From<Limit> for Refusal {
    fn from(l: Limit) -> Refusal {
        match l {
            Limit::MaxConnections => Refusal::MaxConnections,
            Limit::BackendsFull => Refusal::BackendsFull,
            Limit::MaxConnectionsPerSource => Refusal::MaxConnectionsPerSource,
            Limit::RuntimeMaxConnections => Refusal::RuntimeMaxConnections,
        }
    }
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerSource => "max_connections_per_source",
            Refusal::RuntimeMaxConnections => "runtime_max_connections",
            Refusal::BackendsFull => "backends_full",
            Refusal::Door(r) => r.as_str(),
        }
    }
}

/// How a logged connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutcome {
    Ended(Outcome),
    Rejected(Refusal),
}

impl LogOutcome {
    /// The outcome word: an [`Outcome`]'s, or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogOutcome::Ended(o) => o.as_str(),
            LogOutcome::Rejected(_) => "rejected",
        }
    }

    /// Why it was rejected; `None` for a session that ran.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            LogOutcome::Ended(_) => None,
            LogOutcome::Rejected(r) => Some(r.as_str()),
        }
    }
}

/// One finished (or refused) connection, as a worker hands it to the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub tag: LogTag,
    pub outcome: LogOutcome,
    /// When it ended (wall clock).
    pub time: SystemTime,
    /// The client: the peer, or the source a trusted PROXY header named.
    pub client: SocketAddr,
    /// The listen address it arrived on (as the route lists it).
    pub listen: SocketAddr,
    /// The backend it was connected to; `None` when none was.
    pub backend: Option<SocketAddr>,
    pub to_backend: u64,
    pub to_client: u64,
    /// From the start of the session (after the route was chosen) to its end, µs.
    pub duration_us: u64,
    /// From the start of the session to the backend connection, µs; `None` when none was made.
    pub connect_us: Option<u64>,
}

/// A worker's end of its queue to the writer.
pub type Queue = crossbeam_channel::Sender<Record>;
