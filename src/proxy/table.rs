//! Hot side: a worker's route table — an immutable snapshot with a generation number.
//!
//! The control thread sends the validated route configurations; each worker builds its own
//! `RouteTable` (with `Rc`s and `Cell`s, never shared across threads) and swaps it in whole.
//! Sessions keep the `Rc<Route>` they started with, so a new generation never changes the
//! backend of a running session.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::config::RouteConfig;
use crate::metrics::local::{BackendMetrics, RouteMetrics, WorkerMetrics};

/// One route as a worker sees it.
#[derive(Debug)]
pub struct Route {
    pub cfg: RouteConfig,
    pub metrics: Rc<RouteMetrics>,
    backends: Vec<Rc<BackendMetrics>>,
    /// Round-robin cursor (per worker).
    next: Cell<usize>,
    /// This worker's share of `max_connections`.
    pub max_per_worker: Option<u64>,
}

impl Route {
    /// The next backend in round-robin order.
    #[inline]
    pub fn pick(&self) -> &Rc<BackendMetrics> {
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        // `backends` is never empty: validation requires at least one.
        &self.backends[i % self.backends.len()]
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
    by_listen: HashMap<SocketAddr, Rc<Route>>,
}

impl RouteTable {
    /// Builds the worker-local table; metrics are found (or created) by route name.
    pub fn build(
        generation: u64,
        routes: &[RouteConfig],
        metrics: &WorkerMetrics,
        workers: usize,
    ) -> RouteTable {
        let mut by_listen = HashMap::new();
        for cfg in routes {
            let m = metrics.route(&cfg.name);
            let backends = cfg.backends.iter().map(|a| m.backend(*a)).collect();
            let max_per_worker = cfg
                .max_connections
                .map(|n| u64::from(n.get()).div_ceil(workers.max(1) as u64));
            let route = Rc::new(Route {
                cfg: cfg.clone(),
                metrics: m,
                backends,
                next: Cell::new(0),
                max_per_worker,
            });
            for addr in &cfg.listen {
                by_listen.insert(*addr, route.clone());
            }
        }
        RouteTable {
            generation,
            by_listen,
        }
    }

    /// The route that owns listen address `addr`.
    #[inline]
    pub fn lookup(&self, addr: &SocketAddr) -> Option<&Rc<Route>> {
        self.by_listen.get(addr)
    }
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
        let table = RouteTable::build(1, &cfg.routes, &metrics, 2);
        let route = table.lookup(&"127.0.0.1:3000".parse().unwrap()).unwrap();
        let picks: Vec<u16> = (0..4).map(|_| route.pick().addr.port()).collect();
        assert_eq!(picks, [8080, 8081, 8080, 8081]);
        assert_eq!(route.max_per_worker, Some(3));
        assert!(table.lookup(&"127.0.0.1:3001".parse().unwrap()).is_none());
    }
}
