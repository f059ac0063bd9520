//! Hot side: a worker's route table — an immutable snapshot with a generation number.
//!
//! The control thread sends the routes of a generation ([`RouteSpec`]: configuration, active
//! backend set, backends found down); each worker builds its own
//! `RouteTable` (with `Rc`s and `Cell`s, never shared across threads) and swaps it in whole.
//! Sessions keep the `Rc<Route>` they started with, so a new generation never changes the
//! backend of a running session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use super::balance::{Picker, Source};
use super::door::Door;
use super::relay::Timeouts;
use crate::access_log::RouteLog;
use crate::config::RouteConfig;
use crate::control::messages::RouteSpec;
use crate::metrics::local::{BackendMetrics, ConnectErrorKind, RouteMetrics, WorkerMetrics};

/// One route as a worker sees it.
#[derive(Debug)]
pub struct Route {
    /// The route's identity (see [`RouteSpec::id`]): drains find its sessions by it.
    pub id: u64,
    pub cfg: RouteConfig,
    pub metrics: Rc<RouteMetrics>,
    /// The active set: where new sessions go.
    pub active: Vec<SocketAddr>,
    /// Where new sessions go: the active backends that are neither down nor drained; when
    /// every one is down, the ones not drained (better to try than to refuse); when every
    /// one is drained too, all of them (a route always has somewhere to go).
    backends: Vec<Rc<BackendMetrics>>,
    /// Their weights (`cfg.balance` uses them), in the same order.
    weights: Vec<u16>,
    /// How a backend is picked (`cfg.balance`), with its per-worker state.
    picker: Picker,
    /// This worker's share of `max_connections`.
    pub max_per_worker: Option<u64>,
    /// This worker's share of `max_connections_per_source` (per source).
    pub per_source_per_worker: Option<u32>,
    /// This worker's share of each backend's own `max_connections`, in `backends`' order.
    backend_max: Vec<Option<u64>>,
    /// True when any backend has a `max_connections` of its own.
    limited: bool,
    /// Where its access log lines go; `None`: it does not log.
    pub log: Option<RouteLog>,
    /// The relay's timers (`idle_timeout`, `half_close_timeout`), where sessions borrow them.
    pub timeouts: Timeouts,
}

impl Route {
    /// The backend for a new session from `source`, as `cfg.balance` decides among the
    /// usable ones (neither ejected nor at their own `max_connections` on this worker): its
    /// index (for [`Route::after`]) and its counters.
    /// When none is usable the strategy's own choice stands (an ejected backend beats failing
    /// the client), unless it is full: then the next one that is not, and `None` when every
    /// backend is full (the caller resets the client; a session that waited for its first
    /// bytes can find them all full only then).
    #[inline]
    pub fn pick(&self, source: Source) -> Option<(usize, &Rc<BackendMetrics>)> {
        let now = Now::default();
        let i = self
            .picker
            .pick_where(&self.backends, &self.weights, source, |i| {
                self.usable(i, &now)
            });
        let i = if self.full(i) {
            let n = self.backends.len();
            (1..n).map(|k| (i + k) % n).find(|&j| !self.full(j))?
        } else {
            i
        };
        Some((i, self.backend(i)))
    }

    /// The backend to retry after backend `i` failed: the next usable one in the list, so
    /// that `connect_attempts` attempts try each backend once, whatever the strategy; when
    /// none is usable, the next one not at its `max_connections` (an ejected backend is
    /// better than none); `None` when every other backend is full.
    #[inline]
    pub fn after(&self, i: usize) -> Option<(usize, &Rc<BackendMetrics>)> {
        let n = self.backends.len();
        let now = Now::default();
        let others = || (1..n).map(|k| (i + k) % n);
        let j = others()
            .find(|&j| self.usable(j, &now))
            .or_else(|| others().find(|&j| !self.full(j)))
            .or_else(|| (n == 1 && !self.full(0)).then_some(0))?;
        Some((j, self.backend(j)))
    }

    /// Neither ejected nor full. An ejection found over is forgotten here (and logged).
    #[inline]
    fn usable(&self, i: usize, now: &Now) -> bool {
        let Some(b) = self.backends.get(i) else {
            return false;
        };
        if let Some(until) = b.eject.until() {
            if until > now.get() {
                return false;
            }
            self.returned(b);
        }
        !self.full(i)
    }

    /// The counters of backend `addr`, when the route has it (a session handed over by an
    /// upgrade names its backend by address).
    pub fn backend_of(&self, addr: SocketAddr) -> Option<&Rc<BackendMetrics>> {
        self.backends.iter().find(|b| b.addr == addr)
    }

    /// True when this worker holds its share of backend `i`'s own `max_connections`.
    #[inline]
    fn full(&self, i: usize) -> bool {
        match (self.backends.get(i), self.backend_max.get(i)) {
            (Some(b), Some(Some(max))) => b.active.get() + b.connecting.get() >= *max,
            _ => false,
        }
    }

    /// True when no backend can take a new session because each one is at its own
    /// `max_connections` on this worker, or ejected (and at least one is full): the
    /// session is reset and counted (`backends_full`).
    #[inline]
    pub fn all_full(&self) -> bool {
        if !self.limited {
            return false;
        }
        let now = Now::default();
        let mut any_full = false;
        for i in 0..self.backends.len() {
            if self.full(i) {
                any_full = true;
            } else if !self.backends[i].eject.out(now.get()) {
                return false;
            }
        }
        any_full
    }

    /// A connect to `b` failed with `kind`: counts it towards `b`'s ejection (failures of
    /// ringway's own, out of file descriptors, do not count) and ejects it when due.
    #[cold]
    pub fn connect_failed(&self, b: &BackendMetrics, kind: ConnectErrorKind) {
        if kind == ConnectErrorKind::FdLimit {
            return;
        }
        let now = Instant::now();
        let eject = &self.cfg.eject;
        let room = || {
            let out = self.backends.iter().filter(|x| x.eject.out(now)).count();
            out < eject.allowed(self.backends.len())
        };
        if let Some(time) = b.eject.failed(now, eject, room) {
            tracing::warn!(
                route = %self.cfg.name,
                backend = %b.addr,
                failures = eject.after.map_or(0, |n| n.get()),
                seconds = time.as_secs_f64(),
                ejections = b.eject.count(),
                "backend ejected: its connects keep failing; no new sessions to it on this worker for a while"
            );
        }
    }

    /// An ejection that is over: the backend takes new sessions again.
    #[cold]
    fn returned(&self, b: &BackendMetrics) {
        if b.eject.returned() {
            tracing::info!(
                route = %self.cfg.name,
                backend = %b.addr,
                "ejected backend back in: its ejection time passed"
            );
        }
    }

    #[inline]
    fn backend(&self, i: usize) -> &Rc<BackendMetrics> {
        // `backends` is never empty: `build` leaves out a route without backends.
        self.backends.get(i).unwrap_or(&self.backends[0])
    }

    /// The pickable backends with their weights.
    pub fn weighted(&self) -> impl Iterator<Item = (SocketAddr, u16)> + '_ {
        self.backends
            .iter()
            .zip(&self.weights)
            .map(|(b, w)| (b.addr, *w))
    }

    /// Connect attempts per session.
    #[inline]
    pub fn connect_attempts(&self) -> usize {
        self.cfg.connect_attempts(self.backends.len())
    }

    /// True when this worker already holds its share of `max_connections`.
    #[inline]
    pub fn at_limit(&self) -> bool {
        self.max_per_worker
            .is_some_and(|max| self.metrics.active.get() >= max)
    }
}

/// All routes of one generation, indexed by listen address.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub generation: u64,
    by_listen: HashMap<SocketAddr, Rc<Door>>,
    by_name: HashMap<String, Rc<Route>>,
}

impl RouteTable {
    /// Builds the worker-local table; metrics are found (or created) by route name.
    pub fn build(
        generation: u64,
        routes: &[RouteSpec],
        metrics: &WorkerMetrics,
        workers: usize,
    ) -> RouteTable {
        let mut on: HashMap<SocketAddr, Vec<Rc<Route>>> = HashMap::new();
        let mut by_name = HashMap::new();
        for spec in routes {
            let cfg = &spec.cfg;
            if spec.active.is_empty() {
                // Only a route whose backends are all names not resolved yet has none; it
                // has nothing to pick (its listeners then reset new connections, counted
                // as `no_backend`; the control side logs the names' failures).
                tracing::debug!(route = %cfg.name, "route has no active backend; left out");
                continue;
            }
            let m = metrics.route(&cfg.name);
            let pick = |skip_down: bool| -> Vec<SocketAddr> {
                spec.active
                    .iter()
                    .filter(|a| !(spec.drain.contains(a) || skip_down && spec.down.contains(a)))
                    .copied()
                    .collect()
            };
            let mut pickable = pick(true);
            if pickable.is_empty() {
                pickable = pick(false);
            }
            if pickable.is_empty() {
                pickable = spec.active.clone();
            }
            let backends = pickable.iter().map(|a| m.backend(*a)).collect();
            let weights: Vec<u16> = pickable.iter().map(|a| cfg.weight(a)).collect();
            let picker = Picker::build(cfg.balance, &pickable, &weights, seed(spec.id));
            let share =
                |n: std::num::NonZeroU32| u64::from(n.get()).div_ceil(workers.max(1) as u64);
            let max_per_worker = cfg.max_connections.map(share);
            let backend_max: Vec<Option<u64>> = pickable
                .iter()
                .map(|a| cfg.backend_limits.get(a).copied().map(share))
                .collect();
            let per_source_per_worker = cfg
                .max_connections_per_source
                .map(|n| n.get().div_ceil(workers.clamp(1, u32::MAX as usize) as u32));
            let route = Rc::new(Route {
                id: spec.id,
                cfg: cfg.clone(),
                metrics: m,
                active: spec.active.clone(),
                backends,
                weights,
                picker,
                max_per_worker,
                per_source_per_worker,
                limited: backend_max.iter().any(Option::is_some),
                backend_max,
                log: spec.log,
                timeouts: Timeouts {
                    idle: cfg.idle_timeout,
                    half_close: cfg.half_close_timeout,
                },
            });
            for addr in &spec.listen {
                on.entry(*addr).or_default().push(route.clone());
            }
            by_name.insert(cfg.name.clone(), route);
        }
        let by_listen = on
            .into_iter()
            .map(|(addr, routes)| (addr, Rc::new(Door::build(addr, &routes, metrics))))
            .collect();
        RouteTable {
            generation,
            by_listen,
            by_name,
        }
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Rc<Route>> {
        self.by_name.get(name)
    }

    /// Every route of the table.
    pub fn routes(&self) -> impl Iterator<Item = &Rc<Route>> {
        self.by_name.values()
    }

    /// True when route `name` is in this table.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The listen address `addr`: its routes, and how a connection picks one.
    #[inline]
    pub fn door(&self, addr: &SocketAddr) -> Option<&Rc<Door>> {
        self.by_listen.get(addr)
    }
}

/// The clock, read once on first use (a pick reads it only when a backend has an ejection
/// set).
#[derive(Default)]
struct Now(std::cell::Cell<Option<Instant>>);

impl Now {
    #[inline]
    fn get(&self) -> Instant {
        match self.0.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.0.set(Some(t));
                t
            }
        }
    }
}

/// A seed for a route's random picks on this worker (p2c): different per worker and per
/// build, from std's per-thread random hash keys; never used for anything lasting.
fn seed(route_id: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(route_id);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::local::bump;

    #[test]
    fn round_robin_and_limit_share() {
        let cfg = Config::parse(
            r#"
            [[route]]
            name = "web"
            listen = ["127.0.0.1:3000"]
            backends = ["127.0.0.1:8080", "127.0.0.1:8081"]
            max_connections = 5
            "#,
            "t.toml",
        )
        .unwrap();
        let metrics = WorkerMetrics::default();
        let spec = |down: &[&str]| RouteSpec {
            down: down.iter().map(|a| a.parse().unwrap()).collect(),
            ..RouteSpec::configured(1, &cfg.routes[0])
        };
        let table = RouteTable::build(1, &[spec(&[])], &metrics, 2);
        let route = table
            .door(&"127.0.0.1:3000".parse().unwrap())
            .and_then(|d| d.direct())
            .unwrap();
        let picks: Vec<u16> = (0..4)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8081, 8080, 8081]);
        assert_eq!(route.max_per_worker, Some(3));
        assert!(table.door(&"127.0.0.1:3001".parse().unwrap()).is_none());
        assert!(table.by_name("web").is_some());

        // A backend that is down gets no new sessions while another is up ...
        let table = RouteTable::build(2, &[spec(&["127.0.0.1:8080"])], &metrics, 2);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..3)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8081, 8081, 8081]);
        assert_eq!(route.connect_attempts(), 1);
        // ... and when all are down, all are tried.
        let table = RouteTable::build(
            3,
            &[spec(&["127.0.0.1:8080", "127.0.0.1:8081"])],
            &metrics,
            2,
        );
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..2)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8081]);

        // A drained backend gets no new sessions, even when the other one is down ...
        let drained = RouteSpec {
            drain: vec!["127.0.0.1:8081".parse().unwrap()],
            ..spec(&["127.0.0.1:8080"])
        };
        let table = RouteTable::build(4, std::slice::from_ref(&drained), &metrics, 2);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..2)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8080]);
        // ... unless every backend is drained.
        let all = RouteSpec {
            drain: drained.active.clone(),
            ..drained
        };
        let table = RouteTable::build(5, &[all], &metrics, 2);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..2)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8081]);
    }

    /// Weights reach the worker's table from the route's configuration (1 for an address a
    /// switch brought in), and the picks follow them; a drained backend is left out of the
    /// schedule.
    #[test]
    fn weights_and_balance_reach_the_table() {
        let cfg = Config::parse(
            r#"
            [[route]]
            name = "web"
            listen = ["127.0.0.1:3000"]
            backends = ["127.0.0.1:8080", { addr = "127.0.0.1:8081", weight = 3 }]
            "#,
            "t.toml",
        )
        .unwrap();
        let metrics = WorkerMetrics::default();
        let mut spec = RouteSpec::configured(1, &cfg.routes[0]);
        spec.active.push("127.0.0.1:8082".parse().unwrap());
        let table = RouteTable::build(1, std::slice::from_ref(&spec), &metrics, 1);
        let route = table.by_name("web").unwrap();
        let w: Vec<(u16, u16)> = route.weighted().map(|(a, w)| (a.port(), w)).collect();
        assert_eq!(w, [(8080, 1), (8081, 3), (8082, 1)]);
        let picks: Vec<u16> = (0..5)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8081, 8080, 8081, 8082, 8081]);
        // A retry goes to the next backend in the list.
        assert_eq!(route.after(2).unwrap().1.addr.port(), 8080);
        spec.drain = vec!["127.0.0.1:8081".parse().unwrap()];
        let table = RouteTable::build(2, &[spec], &metrics, 1);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..4)
            .map(|_| route.pick(Source::default()).unwrap().1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8082, 8080, 8082]);
    }

    /// A backend's own `max_connections` (this worker's share) sends the excess to the
    /// others and, when every one is full, makes the route refuse; an ejected backend gets
    /// no new sessions, and a retry passes over it unless nothing else is left.
    #[test]
    fn backend_limits_and_ejections_steer_picks() {
        let cfg = Config::parse(
            r#"
            [[route]]
            name = "web"
            listen = ["127.0.0.1:3000"]
            backends = [{ addr = "127.0.0.1:8080", max_connections = 3 }, { addr = "127.0.0.1:8081", max_connections = 1 }, "127.0.0.1:8082"]
            [route.eject]
            after = 2
            time = "1h"
            "#,
            "t.toml",
        )
        .unwrap();
        let metrics = WorkerMetrics::default();
        let spec = RouteSpec::configured(1, &cfg.routes[0]);
        // Two workers: shares of 2 and 1.
        let table = RouteTable::build(1, std::slice::from_ref(&spec), &metrics, 2);
        let route = table.by_name("web").unwrap();
        let port = |r: &Route| r.pick(Source::default()).unwrap().1.addr.port();
        let open = |r: &Route, p: u16| {
            let b = r.weighted().position(|(a, _)| a.port() == p).unwrap();
            bump(&r.backends[b].active, 1);
        };
        open(route, 8080);
        open(route, 8080);
        let picks: Vec<u16> = (0..4).map(|_| port(route)).collect();
        assert!(!picks.contains(&8080), "{picks:?}");
        open(route, 8081);
        let picks: Vec<u16> = (0..4).map(|_| port(route)).collect();
        assert_eq!(picks, [8082; 4]);
        assert!(!route.all_full(), "8082 has no limit");
        // A retry after 8082 fails: the others are full.
        assert!(route.after(2).is_none());
        // 8082 refuses twice: ejected; every other one is full, so the route refuses.
        for _ in 0..2 {
            route.connect_failed(&route.backends[2], ConnectErrorKind::Refused);
        }
        assert_eq!(route.backends[2].eject.count(), 1);
        assert!(route.all_full());
        // Out of descriptors is ringway's own trouble: never an ejection.
        for _ in 0..5 {
            route.connect_failed(&route.backends[1], ConnectErrorKind::FdLimit);
        }
        assert_eq!(route.backends[1].eject.count(), 0);

        // Without limits: the ejected backend is skipped, but a retry falls back on it when
        // nothing else is left; max_percent (50 % of 3: one) keeps the others in.
        let table = RouteTable::build(2, &[spec], &WorkerMetrics::default(), 1);
        let route = table.by_name("web").unwrap();
        for _ in 0..2 {
            route.connect_failed(&route.backends[0], ConnectErrorKind::Refused);
        }
        let picks: Vec<u16> = (0..4).map(|_| port(route)).collect();
        assert_eq!(picks, [8081, 8082, 8081, 8082]);
        assert_eq!(route.after(2).unwrap().1.addr.port(), 8081);
        for _ in 0..4 {
            route.connect_failed(&route.backends[1], ConnectErrorKind::Timeout);
        }
        assert_eq!(
            route.backends[1].eject.count(),
            0,
            "one of three may be out"
        );
        assert_eq!(route.after(2).unwrap().1.addr.port(), 8081);
    }
}
