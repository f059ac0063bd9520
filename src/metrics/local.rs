//! Hot side: a worker's own metrics. Plain `Cell` counters and fixed-bound HdrHistograms,
//! touched only by the worker thread; the control thread gets copies ([`super::snapshot`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;

use hdrhistogram::Histogram;

use crate::proxy::eject::Ejection;

use super::snapshot::{
    BackendCounters, ListenSnapshot, RouteCounters, RouteSnapshot, WorkerSnapshot,
};

/// Histogram bounds, in microseconds: 1 µs .. 1 day, 2 significant digits.
pub const HIST_LOW_US: u64 = 1;
pub const HIST_HIGH_US: u64 = 86_400_000_000;
pub const HIST_SIGFIG: u8 = 2;

/// A new histogram with ringway's fixed bounds.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG) {
        Ok(h) => h,
        // The bounds are constants validated by a unit test.
        Err(e) => panic!("histogram bounds are invalid: {e}"),
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions reached EOF.
    Clean,
    /// The client reset, or a write to it failed.
    ClientReset,
    /// The backend reset, or a write to it failed.
    BackendReset,
    /// `idle_timeout` passed without a byte.
    IdleTimeout,
    /// Closed by ringway at the end of the shutdown grace period.
    Shutdown,
    /// Closed by ringway at a drain deadline: its backend left the route's active set.
    Drained,
    /// No backend could be connected; the client was reset.
    ConnectFailed,
    /// The kernel gave the client up: keepalive probes unanswered, or bytes unacknowledged
    /// past the user timeout (`[route.keepalive]`).
    ClientTimeout,
    /// The kernel gave the backend up (as `ClientTimeout`).
    BackendTimeout,
    /// One side had sent its FIN and the other stayed silent for `half_close_timeout`.
    HalfCloseTimeout,
    /// The client sent nothing within `first_byte_timeout`; it was reset and no backend
    /// was connected.
    FirstByteTimeout,
    /// Handed to a new binary during an upgrade; it goes on there (`crate::upgrade`).
    HandedOver,
}

impl Outcome {
    pub const COUNT: usize = 12;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Clean,
        Outcome::ClientReset,
        Outcome::BackendReset,
        Outcome::IdleTimeout,
        Outcome::Shutdown,
        Outcome::Drained,
        Outcome::ConnectFailed,
        Outcome::ClientTimeout,
        Outcome::BackendTimeout,
        Outcome::HalfCloseTimeout,
        Outcome::FirstByteTimeout,
        Outcome::HandedOver,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::ClientReset => "client_reset",
            Outcome::BackendReset => "backend_reset",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Drained => "drained",
            Outcome::ConnectFailed => "connect_failed",
            Outcome::ClientTimeout => "client_timeout",
            Outcome::BackendTimeout => "backend_timeout",
            Outcome::HalfCloseTimeout => "half_close_timeout",
            Outcome::FirstByteTimeout => "first_byte_timeout",
            Outcome::HandedOver => "handed_over",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a connect attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// `ECONNREFUSED`: nothing listens there (or a firewall rejects).
    Refused,
    /// The connect budget ran out (or `ETIMEDOUT`).
    Timeout,
    /// `EADDRNOTAVAIL`: no free local port towards that backend (ephemeral ports exhausted).
    NoLocalPort,
    /// `EMFILE`/`ENFILE`, or the socket fell into ringway's reserve of descriptors: the
    /// process (or the system) is out of file descriptors.
    FdLimit,
    /// `ENETUNREACH`/`EHOSTUNREACH`: no route to the backend.
    Unreachable,
    Other,
}

impl ConnectErrorKind {
    pub const COUNT: usize = 6;
    pub const ALL: [ConnectErrorKind; ConnectErrorKind::COUNT] = [
        ConnectErrorKind::Refused,
        ConnectErrorKind::Timeout,
        ConnectErrorKind::NoLocalPort,
        ConnectErrorKind::FdLimit,
        ConnectErrorKind::Unreachable,
        ConnectErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectErrorKind::Refused => "refused",
            ConnectErrorKind::Timeout => "timeout",
            ConnectErrorKind::NoLocalPort => "no_local_port",
            ConnectErrorKind::FdLimit => "fd_limit",
            ConnectErrorKind::Unreachable => "unreachable",
            ConnectErrorKind::Other => "other",
        }
    }

    /// The kind of a failed `socket(2)`/`connect(2)`.
    pub fn of(e: &std::io::Error) -> ConnectErrorKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ConnectErrorKind::Refused,
            Some(libc::ETIMEDOUT) => ConnectErrorKind::Timeout,
            Some(libc::EADDRNOTAVAIL) => ConnectErrorKind::NoLocalPort,
            Some(libc::EMFILE | libc::ENFILE) => ConnectErrorKind::FdLimit,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => ConnectErrorKind::Unreachable,
            _ => ConnectErrorKind::Other,
        }
    }
}

/// Why a listener could not hand over a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptErrorKind {
    /// `EMFILE`/`ENFILE`, or the connection fell into ringway's reserve of descriptors (it
    /// was reset at once).
    FdLimit,
    /// Anything else (`ENOBUFS`, `ENOMEM`, ...).
    Other,
}

impl AcceptErrorKind {
    pub const COUNT: usize = 2;
    pub const ALL: [AcceptErrorKind; AcceptErrorKind::COUNT] =
        [AcceptErrorKind::FdLimit, AcceptErrorKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            AcceptErrorKind::FdLimit => "fd_limit",
            AcceptErrorKind::Other => "other",
        }
    }

    pub fn of(e: &std::io::Error) -> AcceptErrorKind {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => AcceptErrorKind::FdLimit,
            _ => AcceptErrorKind::Other,
        }
    }
}

/// Why a route reset a connection at accept, before any backend was tried
/// (`ringway_connections_rejected_total{route,reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The route held its share of `max_connections` on that worker.
    MaxConnections,
    /// Every backend held its own `max_connections` on that worker (or was ejected).
    BackendsFull,
    /// The client's source held its share of `max_connections_per_source` on that worker.
    MaxConnectionsPerSource,
    /// The worker held its share of `runtime.max_connections`.
    RuntimeMaxConnections,
}

impl Limit {
    pub const COUNT: usize = 4;
    pub const ALL: [Limit; Limit::COUNT] = [
        Limit::MaxConnections,
        Limit::BackendsFull,
        Limit::MaxConnectionsPerSource,
        Limit::RuntimeMaxConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::BackendsFull => "backends_full",
            Limit::MaxConnectionsPerSource => "max_connections_per_source",
            Limit::RuntimeMaxConnections => "runtime_max_connections",
        }
    }
}

/// Per-backend counters of one route on one worker.
#[derive(Debug)]
pub struct BackendMetrics {
    pub addr: SocketAddr,
    pub connections: Cell<u64>,
    pub active: Cell<u64>,
    /// Failed connect attempts, by `ConnectErrorKind as usize`.
    pub connect_errors: [Cell<u64>; ConnectErrorKind::COUNT],
    /// Connect attempts under way (not exported): `least_connections` and `p2c` count them
    /// with `active`, so that a burst of accepts does not all pick the same backend.
    pub connecting: Cell<u64>,
    /// Sessions the other workers held on this backend at their last snapshots (not
    /// exported): the control thread merges the counts about once a second and sends each
    /// worker the others' share ([`crate::control::messages::ToWorker::Loads`]), so that
    /// `least_connections` and `p2c` weigh the whole process's load, a second late.
    pub elsewhere: Cell<u64>,
    /// Passive ejection on this worker (`[route.eject]`): consecutive failures, and until
    /// when it is out.
    pub eject: Ejection,
}

impl BackendMetrics {
    fn new(addr: SocketAddr) -> Self {
        BackendMetrics {
            addr,
            connections: Cell::new(0),
            active: Cell::new(0),
            connect_errors: Default::default(),
            connecting: Cell::new(0),
            elsewhere: Cell::new(0),
            eject: Ejection::default(),
        }
    }

    pub fn connect_error(&self, kind: ConnectErrorKind) {
        bump(&self.connect_errors[kind as usize], 1);
    }
}

/// One route's metrics on one worker. Kept by route name, so they survive route-table
/// generations.
#[derive(Debug)]
pub struct RouteMetrics {
    pub accepted: Cell<u64>,
    pub active: Cell<u64>,
    /// Connections reset at accept, by `Limit as usize`.
    rejected: [Cell<u64>; Limit::COUNT],
    pub bytes_to_backend: Cell<u64>,
    pub bytes_to_client: Cell<u64>,
    /// Access log lines dropped because the worker's queue to the writer was full.
    pub access_log_dropped: Cell<u64>,
    ended: [Cell<u64>; Outcome::COUNT],
    connect_us: RefCell<Histogram<u64>>,
    session_us: RefCell<Histogram<u64>>,
    backends: RefCell<Vec<Rc<BackendMetrics>>>,
    /// An upgrade is moving this route's sessions: their relays pause at the next quiet
    /// point (nothing in flight either way) and hand over (`crate::upgrade`).
    pub handing_over: Cell<bool>,
}

impl RouteMetrics {
    fn new() -> Self {
        RouteMetrics {
            accepted: Cell::new(0),
            active: Cell::new(0),
            rejected: Default::default(),
            bytes_to_backend: Cell::new(0),
            bytes_to_client: Cell::new(0),
            access_log_dropped: Cell::new(0),
            ended: Default::default(),
            connect_us: RefCell::new(new_histogram()),
            session_us: RefCell::new(new_histogram()),
            backends: RefCell::new(Vec::new()),
            handing_over: Cell::new(false),
        }
    }

    /// The counters of `addr` under this route, created on first use (at table build time,
    /// not per connection).
    pub fn backend(&self, addr: SocketAddr) -> Rc<BackendMetrics> {
        let mut list = self.backends.borrow_mut();
        if let Some(b) = list.iter().find(|b| b.addr == addr) {
            return b.clone();
        }
        let b = Rc::new(BackendMetrics::new(addr));
        list.push(b.clone());
        b
    }

    /// Sets each backend's [`BackendMetrics::elsewhere`] from `loads` (0 where not listed).
    pub fn set_elsewhere(&self, loads: &[(SocketAddr, u64)]) {
        for b in self.backends.borrow().iter() {
            let n = loads
                .iter()
                .find(|(a, _)| *a == b.addr)
                .map_or(0, |(_, n)| *n);
            b.elsewhere.set(n);
        }
    }

    /// Counts a connection reset at accept because of `why`.
    pub fn reject(&self, why: Limit) {
        bump(&self.rejected[why as usize], 1);
    }

    pub fn record_connect_us(&self, us: u64) {
        self.connect_us.borrow_mut().saturating_record(us.max(1));
    }

    pub fn record_end(&self, outcome: Outcome, duration_us: u64) {
        bump(&self.ended[outcome.index()], 1);
        self.session_us
            .borrow_mut()
            .saturating_record(duration_us.max(1));
    }

    fn snapshot(&self, name: &str) -> RouteSnapshot {
        let take = |h: &RefCell<Histogram<u64>>| {
            let mut h = h.borrow_mut();
            let copy = h.clone();
            h.reset();
            copy
        };
        RouteSnapshot {
            name: name.to_string(),
            counters: RouteCounters {
                accepted: self.accepted.get(),
                active: self.active.get(),
                rejected: self.rejected.each_ref().map(Cell::get),
                bytes_to_backend: self.bytes_to_backend.get(),
                bytes_to_client: self.bytes_to_client.get(),
                access_log_dropped: self.access_log_dropped.get(),
                ended: std::array::from_fn(|i| self.ended[i].get()),
            },
            connect_us: take(&self.connect_us),
            session_us: take(&self.session_us),
            backends: self
                .backends
                .borrow()
                .iter()
                .map(|b| BackendCounters {
                    addr: b.addr,
                    connections: b.connections.get(),
                    active: b.active.get(),
                    connect_errors: b.connect_errors.each_ref().map(Cell::get),
                    ejections: b.eject.count(),
                    ejected_until: b.eject.until().into_iter().collect(),
                })
                .collect(),
        }
    }
}

/// How a connection on a shared listen address found its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Sni,
    Host,
    Path,
    Source,
    /// Nothing matched (or nothing could be read): the address's route without a match.
    Default,
}

impl By {
    pub const COUNT: usize = 5;
    pub const ALL: [By; By::COUNT] = [By::Sni, By::Host, By::Path, By::Source, By::Default];

    pub fn as_str(self) -> &'static str {
        match self {
            By::Sni => "sni",
            By::Host => "host",
            By::Path => "path",
            By::Source => "source",
            By::Default => "default",
        }
    }
}

/// Why a connection on a shared listen address was reset before any route took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No route matched and the address has no default route.
    NoMatch,
    /// `accept_proxy_from` is set and the connection came from elsewhere.
    ProxyUntrusted,
    /// The PROXY header was missing, malformed or did not arrive in time.
    ProxyMalformed,
    /// The worker held its share of `runtime.max_connections`.
    RuntimeMaxConnections,
    /// The address's routes have no backend to pick yet (their backends are all names that
    /// have not resolved).
    NoBackend,
}

impl Rejected {
    pub const COUNT: usize = 5;
    pub const ALL: [Rejected; Rejected::COUNT] = [
        Rejected::NoMatch,
        Rejected::ProxyUntrusted,
        Rejected::ProxyMalformed,
        Rejected::RuntimeMaxConnections,
        Rejected::NoBackend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::NoMatch => "no_match",
            Rejected::ProxyUntrusted => "proxy_untrusted",
            Rejected::ProxyMalformed => "proxy_malformed",
            Rejected::RuntimeMaxConnections => "runtime_max_connections",
            Rejected::NoBackend => "no_backend",
        }
    }
}

/// Why the bytes that decide a route could not be read (the default route, if any, then
/// takes the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekFailure {
    /// `peek_timeout` passed first.
    Timeout,
    /// Not a ClientHello / request head that parses.
    Malformed,
    /// Over `PEEK_LIMIT` bytes without a decision.
    TooLarge,
    /// The client closed or reset first.
    Closed,
}

impl PeekFailure {
    pub const COUNT: usize = 4;
    pub const ALL: [PeekFailure; PeekFailure::COUNT] = [
        PeekFailure::Timeout,
        PeekFailure::Malformed,
        PeekFailure::TooLarge,
        PeekFailure::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeekFailure::Timeout => "timeout",
            PeekFailure::Malformed => "malformed",
            PeekFailure::TooLarge => "too_large",
            PeekFailure::Closed => "closed",
        }
    }
}

/// Counters of one shared listen address on one worker (cumulative, never pruned: an
/// address's series stay while ringway runs).
#[derive(Debug, Default)]
pub struct ListenMetrics {
    routed: RefCell<BTreeMap<String, Rc<RoutedCounters>>>,
    rejected: [Cell<u64>; Rejected::COUNT],
    peek_failed: [Cell<u64>; PeekFailure::COUNT],
}

/// Connections one route took on one address, by how it was chosen.
pub type RoutedCounters = [Cell<u64>; By::COUNT];

impl ListenMetrics {
    /// The counters of `route` on this address, created on first use (table build time).
    pub fn routed(&self, route: &str) -> Rc<RoutedCounters> {
        self.routed
            .borrow_mut()
            .entry(route.to_string())
            .or_default()
            .clone()
    }

    #[inline]
    pub fn reject(&self, why: Rejected) {
        bump(&self.rejected[why as usize], 1);
    }

    #[inline]
    pub fn peek_failed(&self, why: PeekFailure) {
        bump(&self.peek_failed[why as usize], 1);
    }

    fn snapshot(&self, addr: SocketAddr) -> ListenSnapshot {
        ListenSnapshot {
            addr,
            routed: self
                .routed
                .borrow()
                .iter()
                .map(|(name, c)| (name.clone(), c.each_ref().map(Cell::get)))
                .collect(),
            rejected: self.rejected.each_ref().map(Cell::get),
            peek_failed: self.peek_failed.each_ref().map(Cell::get),
        }
    }
}

/// All metrics of one worker.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    routes: RefCell<HashMap<String, Rc<RouteMetrics>>>,
    /// Shared listen addresses (those whose connections are matched to a route).
    listens: RefCell<HashMap<SocketAddr, Rc<ListenMetrics>>>,
    pub active: Cell<u64>,
    /// Connections still queued when a listener closed (touched only when one retires).
    listener_resets: Cell<u64>,
    /// Connections a listener could not hand over, by `AcceptErrorKind as usize`.
    accept_errors: [Cell<u64>; AcceptErrorKind::COUNT],
    /// Pipes whose size the kernel refused (the pool's count, copied at each snapshot).
    pipe_resizes_refused: Cell<u64>,
    /// The worker thread's Linux thread id, sent with every snapshot so that the control
    /// thread can read the thread's CPU time ([`super::cpu`]).
    tid: Option<u32>,
}

impl WorkerMetrics {
    /// The metrics of the calling thread's worker: as `default()`, plus the thread's id
    /// (read once, here, on the worker thread).
    pub fn on_current_thread() -> Self {
        WorkerMetrics {
            tid: super::cpu::current_tid(),
            ..WorkerMetrics::default()
        }
    }

    /// The metrics of route `name`, created on first use (at table build time).
    pub fn route(&self, name: &str) -> Rc<RouteMetrics> {
        self.routes
            .borrow_mut()
            .entry(name.to_string())
            .or_insert_with(|| Rc::new(RouteMetrics::new()))
            .clone()
    }

    /// The metrics of shared listen address `addr`, created on first use.
    pub fn listen(&self, addr: SocketAddr) -> Rc<ListenMetrics> {
        self.listens.borrow_mut().entry(addr).or_default().clone()
    }

    /// Counts `n` connections reset by the close of a listener.
    pub fn listener_reset(&self, n: u64) {
        bump(&self.listener_resets, n);
    }

    /// Counts a connection a listener could not hand over.
    pub fn accept_error(&self, kind: AcceptErrorKind) {
        bump(&self.accept_errors[kind as usize], 1);
    }

    /// Records the pool's count of refused pipe sizes (cumulative).
    pub fn set_pipe_resizes_refused(&self, n: u64) {
        self.pipe_resizes_refused.set(n);
    }

    /// Forgets the metrics of routes for which `keep` is false and that no session holds
    /// (a removed route's counters stay until its last session ends).
    pub fn prune(&self, keep: impl Fn(&str) -> bool) {
        self.routes
            .borrow_mut()
            .retain(|name, m| keep(name) || Rc::strong_count(m) > 1);
    }

    /// Copies counters and takes (moves out) the histograms recorded since the last call.
    pub fn snapshot(&self, worker: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            worker,
            tid: self.tid,
            active: self.active.get(),
            listener_resets: self.listener_resets.get(),
            accept_errors: self.accept_errors.each_ref().map(Cell::get),
            pipe_resizes_refused: self.pipe_resizes_refused.get(),
            routes: self
                .routes
                .borrow()
                .iter()
                .map(|(name, m)| m.snapshot(name))
                .collect(),
            listens: self
                .listens
                .borrow()
                .iter()
                .map(|(addr, m)| m.snapshot(*addr))
                .collect(),
        }
    }
}

/// `+= n` on a Cell counter, wrapping (a u64 of bytes wraps after 16 EiB).
#[inline]
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// `-= 1` on a gauge, never below zero.
#[inline]
pub fn drop_one(c: &Cell<u64>) {
    c.set(c.get().saturating_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_valid_and_saturate() {
        let mut h = new_histogram();
        h.saturating_record(u64::MAX);
        h.saturating_record(0);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn connect_and_accept_errors_are_told_apart() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        let kinds: Vec<&str> = [
            libc::ECONNREFUSED,
            libc::ETIMEDOUT,
            libc::EADDRNOTAVAIL,
            libc::EMFILE,
            libc::ENFILE,
            libc::ENETUNREACH,
            libc::EHOSTUNREACH,
            libc::ENOBUFS,
        ]
        .into_iter()
        .map(|n| ConnectErrorKind::of(&e(n)).as_str())
        .collect();
        assert_eq!(
            kinds,
            [
                "refused",
                "timeout",
                "no_local_port",
                "fd_limit",
                "fd_limit",
                "unreachable",
                "unreachable",
                "other"
            ]
        );
        assert_eq!(
            AcceptErrorKind::of(&e(libc::EMFILE)),
            AcceptErrorKind::FdLimit
        );
        assert_eq!(
            AcceptErrorKind::of(&e(libc::ENFILE)),
            AcceptErrorKind::FdLimit
        );
        assert_eq!(
            AcceptErrorKind::of(&e(libc::ENOBUFS)),
            AcceptErrorKind::Other
        );
        // Every kind has its own counter.
        let b = BackendMetrics::new("127.0.0.1:1".parse().unwrap());
        for k in ConnectErrorKind::ALL {
            b.connect_error(k);
        }
        assert!(b.connect_errors.iter().all(|c| c.get() == 1));
    }

    #[test]
    fn snapshot_moves_histograms_and_keeps_counters() {
        let w = WorkerMetrics::default();
        let r = w.route("web");
        bump(&r.accepted, 3);
        r.record_connect_us(120);
        r.record_end(Outcome::Clean, 5000);
        let s1 = w.snapshot(0);
        assert_eq!(s1.routes[0].counters.accepted, 3);
        assert_eq!(s1.routes[0].connect_us.len(), 1);
        assert_eq!(s1.routes[0].counters.ended[0], 1);
        let s2 = w.snapshot(0);
        assert_eq!(s2.routes[0].counters.accepted, 3);
        assert_eq!(s2.routes[0].connect_us.len(), 0);
    }
}
