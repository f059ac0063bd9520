//! Both sides: the copies of worker metrics sent to the control thread, and the control
//! thread's merged view ([`MetricsStore`]).
//!
//! Counters travel as cumulative values (the latest per worker wins); histograms travel as
//! deltas since the previous snapshot and are added into the store's cumulative ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hdrhistogram::Histogram;

use super::local::{Outcome, new_histogram};

/// Plain counters of one route on one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCounters {
    pub accepted: u64,
    pub active: u64,
    pub rejected: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// Indexed by `Outcome as usize`.
    pub ended: [u64; Outcome::COUNT],
}

impl RouteCounters {
    fn add(&mut self, o: &RouteCounters) {
        self.accepted += o.accepted;
        self.active += o.active;
        self.rejected += o.rejected;
        self.bytes_to_backend += o.bytes_to_backend;
        self.bytes_to_client += o.bytes_to_client;
        for (a, b) in self.ended.iter_mut().zip(o.ended) {
            *a += b;
        }
    }
}

/// Counters of one backend of one route on one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCounters {
    pub addr: SocketAddr,
    pub connections: u64,
    pub active: u64,
    pub refused: u64,
    pub timeouts: u64,
    pub other_errors: u64,
}

impl BackendCounters {
    fn add(&mut self, o: &BackendCounters) {
        self.connections += o.connections;
        self.active += o.active;
        self.refused += o.refused;
        self.timeouts += o.timeouts;
        self.other_errors += o.other_errors;
    }
}

/// One route, one worker.
#[derive(Debug, Clone)]
pub struct RouteSnapshot {
    pub name: String,
    pub counters: RouteCounters,
    /// Connect latency recorded since the previous snapshot, µs.
    pub connect_us: Histogram<u64>,
    /// Session durations recorded since the previous snapshot, µs.
    pub session_us: Histogram<u64>,
    pub backends: Vec<BackendCounters>,
}

/// One worker's report.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub worker: usize,
    pub active: u64,
    /// Connections reset by a listener's close (cumulative).
    pub listener_resets: u64,
    pub routes: Vec<RouteSnapshot>,
}

/// Merged metrics of one route across workers.
#[derive(Debug, Clone)]
pub struct RouteTotals {
    pub counters: RouteCounters,
    pub connect_us: Histogram<u64>,
    pub session_us: Histogram<u64>,
    pub backends: BTreeMap<SocketAddr, BackendCounters>,
}

/// Counters kept per worker (latest snapshot wins).
#[derive(Debug, Clone, Default)]
struct WorkerLatest {
    active: u64,
    listener_resets: u64,
    routes: BTreeMap<String, (RouteCounters, Vec<BackendCounters>)>,
}

/// The control thread's view of every worker's metrics.
#[derive(Debug)]
pub struct MetricsStore {
    workers: Vec<WorkerLatest>,
    connect: BTreeMap<String, Histogram<u64>>,
    session: BTreeMap<String, Histogram<u64>>,
}

impl MetricsStore {
    pub fn new(workers: usize) -> Self {
        MetricsStore {
            workers: vec![WorkerLatest::default(); workers],
            connect: BTreeMap::new(),
            session: BTreeMap::new(),
        }
    }

    /// Takes in one worker's snapshot. A route the worker no longer reports (removed, its
    /// last session ended) leaves the worker's counters; its histograms go once no worker
    /// reports it.
    pub fn absorb(&mut self, snap: WorkerSnapshot) {
        let Some(latest) = self.workers.get_mut(snap.worker) else {
            return;
        };
        latest.active = snap.active;
        latest.listener_resets = snap.listener_resets;
        latest.routes.clear();
        for r in snap.routes {
            merge_hist(&mut self.connect, &r.name, &r.connect_us);
            merge_hist(&mut self.session, &r.name, &r.session_us);
            latest.routes.insert(r.name, (r.counters, r.backends));
        }
        let workers = &self.workers;
        let reported = |name: &String| workers.iter().any(|w| w.routes.contains_key(name));
        self.connect.retain(|name, _| reported(name));
        self.session.retain(|name, _| reported(name));
    }

    /// Connections reset by listener closes, summed over workers.
    pub fn listener_resets(&self) -> u64 {
        self.workers.iter().map(|w| w.listener_resets).sum()
    }

    /// Active sessions per worker.
    pub fn worker_active(&self) -> Vec<u64> {
        self.workers.iter().map(|w| w.active).collect()
    }

    /// One route's counters summed over workers (no histogram work).
    pub fn route_counters(&self, route: &str) -> RouteCounters {
        let mut out = RouteCounters::default();
        for w in &self.workers {
            if let Some((c, _)) = w.routes.get(route) {
                out.add(c);
            }
        }
        out
    }

    /// Totals per route, by name.
    pub fn routes(&self) -> BTreeMap<String, RouteTotals> {
        let mut out: BTreeMap<String, RouteTotals> = BTreeMap::new();
        for w in &self.workers {
            for (name, (counters, backends)) in &w.routes {
                let t = out.entry(name.clone()).or_insert_with(|| RouteTotals {
                    counters: RouteCounters::default(),
                    connect_us: self
                        .connect
                        .get(name)
                        .cloned()
                        .unwrap_or_else(new_histogram),
                    session_us: self
                        .session
                        .get(name)
                        .cloned()
                        .unwrap_or_else(new_histogram),
                    backends: BTreeMap::new(),
                });
                t.counters.add(counters);
                for b in backends {
                    t.backends
                        .entry(b.addr)
                        .and_modify(|x| x.add(b))
                        .or_insert_with(|| b.clone());
                }
            }
        }
        out
    }
}

fn merge_hist(map: &mut BTreeMap<String, Histogram<u64>>, name: &str, delta: &Histogram<u64>) {
    if delta.is_empty() && map.contains_key(name) {
        return;
    }
    let h = map.entry(name.to_string()).or_insert_with(new_histogram);
    // Same bounds on both sides, so `add` cannot fail; a failure would only lose this delta.
    let _ = h.add(delta);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::local::{Outcome, WorkerMetrics, bump};

    #[test]
    fn store_sums_workers_and_accumulates_histograms() {
        let mut store = MetricsStore::new(2);
        for worker in 0..2 {
            let w = WorkerMetrics::default();
            let r = w.route("web");
            bump(&r.accepted, 10);
            r.record_connect_us(100);
            r.record_end(Outcome::Clean, 1000);
            store.absorb(w.snapshot(worker));
            // a second, empty snapshot must not lose the first histogram
            store.absorb(w.snapshot(worker));
        }
        let routes = store.routes();
        let web = &routes["web"];
        assert_eq!(web.counters.accepted, 20);
        assert_eq!(web.connect_us.len(), 2);
        assert_eq!(web.session_us.len(), 2);
        assert_eq!(web.counters.ended[Outcome::Clean as usize], 2);
    }
}
