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

use super::balance::{Picker, Source};
use super::door::Door;
use super::relay::Timeouts;
use crate::access_log::RouteLog;
use crate::config::RouteConfig;
use crate::control::messages::RouteSpec;
use crate::metrics::local::{BackendMetrics, RouteMetrics, WorkerMetrics};

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
    /// Where its access log lines go; `None`: it does not log.
    pub log: Option<RouteLog>,
    /// The relay's timers (`idle_timeout`, `half_close_timeout`), where sessions borrow them.
    pub timeouts: Timeouts,
}

impl Route {
    /// The backend for a new session from `source`, as `cfg.balance` decides: its index
    /// (for [`Route::after`]) and its counters.
    #[inline]
    pub fn pick(&self, source: Source) -> (usize, &Rc<BackendMetrics>) {
        let i = self.picker.pick(&self.backends, &self.weights, source);
        (i, self.backend(i))
    }

    /// The backend to retry after backend `i` failed: the next one in the list, so that
    /// `connect_attempts` attempts try each backend once, whatever the strategy.
    #[inline]
    pub fn after(&self, i: usize) -> (usize, &Rc<BackendMetrics>) {
        let j = if i + 1 >= self.backends.len() {
            0
        } else {
            i + 1
        };
        (j, self.backend(j))
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
                // has nothing to pick (its listeners then reset new connections).
                tracing::warn!(route = %cfg.name, "route has no active backend; left out");
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
            let max_per_worker = cfg
                .max_connections
                .map(|n| u64::from(n.get()).div_ceil(workers.max(1) as u64));
            let route = Rc::new(Route {
                id: spec.id,
                cfg: cfg.clone(),
                metrics: m,
                active: spec.active.clone(),
                backends,
                weights,
                picker,
                max_per_worker,
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
            .map(|_| route.pick(Source::default()).1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8081, 8080, 8081]);
        assert_eq!(route.max_per_worker, Some(3));
        assert!(table.door(&"127.0.0.1:3001".parse().unwrap()).is_none());
        assert!(table.by_name("web").is_some());

        // A backend that is down gets no new sessions while another is up ...
        let table = RouteTable::build(2, &[spec(&["127.0.0.1:8080"])], &metrics, 2);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..3)
            .map(|_| route.pick(Source::default()).1.addr.port())
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
            .map(|_| route.pick(Source::default()).1.addr.port())
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
            .map(|_| route.pick(Source::default()).1.addr.port())
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
            .map(|_| route.pick(Source::default()).1.addr.port())
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
            .map(|_| route.pick(Source::default()).1.addr.port())
            .collect();
        assert_eq!(picks, [8081, 8080, 8081, 8082, 8081]);
        // A retry goes to the next backend in the list.
        assert_eq!(route.after(2).1.addr.port(), 8080);
        spec.drain = vec!["127.0.0.1:8081".parse().unwrap()];
        let table = RouteTable::build(2, &[spec], &metrics, 1);
        let route = table.by_name("web").unwrap();
        let picks: Vec<u16> = (0..4)
            .map(|_| route.pick(Source::default()).1.addr.port())
            .collect();
        assert_eq!(picks, [8080, 8082, 8080, 8082]);
    }
}
