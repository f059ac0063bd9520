//! Both sides: the copies of worker metrics sent to the control thread, and the control
//! thread's merged view ([`MetricsStore`]).
//!
//! Counters travel as cumulative values (the latest per worker wins); histograms travel as
//! deltas since the previous snapshot and are added into the store's cumulative ones.
//!
//! The per-worker view ([`MetricsStore::workers`]) is summed here, on the control side, from
//! the same per-route snapshots: the workers count nothing extra for it. Its CPU time is read
//! from `/proc` when a worker's snapshot arrives ([`super::cpu`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::cpu;
use super::local::{
    AcceptErrorKind, By, ConnectErrorKind, Limit, Outcome, PeekFailure, Rejected, new_histogram,
};

/// Plain counters of one route on one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCounters {
    pub accepted: u64,
    pub active: u64,
    /// Reset at accept, indexed by `Limit as usize`.
    pub rejected: [u64; Limit::COUNT],
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    pub access_log_dropped: u64,
    /// Indexed by `Outcome as usize`.
    pub ended: [u64; Outcome::COUNT],
}

impl RouteCounters {
    fn add(&mut self, o: &RouteCounters) {
        self.accepted += o.accepted;
        self.active += o.active;
        for (a, b) in self.rejected.iter_mut().zip(o.rejected) {
            *a += b;
        }
        self.bytes_to_backend += o.bytes_to_backend;
        self.bytes_to_client += o.bytes_to_client;
        self.access_log_dropped += o.access_log_dropped;
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
    /// Failed connect attempts, by `ConnectErrorKind as usize`.
    pub connect_errors: [u64; ConnectErrorKind::COUNT],
    /// Passive ejections (cumulative).
    pub ejections: u64,
    /// The end of its ejection on each worker that set one (one entry per worker; may be
    /// past: the reader compares with its clock).
    pub ejected_until: Vec<Instant>,
}

impl BackendCounters {
    /// On how many workers it is ejected at `now`, and until when at the latest.
    pub fn ejected(&self, now: Instant) -> (usize, Option<Instant>) {
        let out = self.ejected_until.iter().filter(|u| **u > now);
        (out.clone().count(), out.max().copied())
    }

    fn add(&mut self, o: &BackendCounters) {
        self.connections += o.connections;
        self.active += o.active;
        self.ejections += o.ejections;
        self.ejected_until.extend_from_slice(&o.ejected_until);
        for (a, b) in self.connect_errors.iter_mut().zip(o.connect_errors) {
            *a += b;
        }
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

/// One shared listen address, one worker (cumulative counters).
#[derive(Debug, Clone)]
pub struct ListenSnapshot {
    pub addr: SocketAddr,
    /// Per route: connections taken, by `By` index.
    pub routed: Vec<(String, [u64; By::COUNT])>,
    /// Resets, by `Rejected` index.
    pub rejected: [u64; Rejected::COUNT],
    /// Peeks that could not decide, by `PeekFailure` index.
    pub peek_failed: [u64; PeekFailure::COUNT],
}

impl ListenSnapshot {
    fn add(&mut self, o: &ListenSnapshot) {
        for (name, counts) in &o.routed {
            match self.routed.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => c.iter_mut().zip(counts).for_each(|(a, b)| *a += b),
                None => self.routed.push((name.clone(), *counts)),
            }
        }
        self.rejected
            .iter_mut()
            .zip(&o.rejected)
            .for_each(|(a, b)| *a += b);
        self.peek_failed
            .iter_mut()
            .zip(&o.peek_failed)
            .for_each(|(a, b)| *a += b);
    }
}

/// One worker's report.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub worker: usize,
    /// The worker thread's Linux thread id (`None` where `/proc` could not tell it).
    pub tid: Option<u32>,
    pub active: u64,
    /// Connections reset by a listener's close (cumulative).
    pub listener_resets: u64,
    /// Connections listeners could not hand over, by `AcceptErrorKind` (cumulative).
    pub accept_errors: [u64; AcceptErrorKind::COUNT],
    /// Pipes whose size the kernel refused (cumulative).
    pub pipe_resizes_refused: u64,
    pub routes: Vec<RouteSnapshot>,
    pub listens: Vec<ListenSnapshot>,
}

/// Merged metrics of one route across workers.
#[derive(Debug, Clone)]
pub struct RouteTotals {
    pub counters: RouteCounters,
    pub connect_us: Histogram<u64>,
    pub session_us: Histogram<u64>,
    pub backends: BTreeMap<SocketAddr, BackendCounters>,
}

/// Counters kept per worker (latest snapshot wins), and the worker's own cumulative view.
#[derive(Debug, Clone)]
struct WorkerLatest {
    active: u64,
    listener_resets: u64,
    accept_errors: [u64; AcceptErrorKind::COUNT],
    pipe_resizes_refused: u64,
    routes: BTreeMap<String, (RouteCounters, Vec<BackendCounters>)>,
    listens: Vec<ListenSnapshot>,
    tid: Option<u32>,
    /// utime + stime of the worker thread, seconds, as last read (never goes down).
    cpu_seconds: Option<f64>,
    /// The last counters of routes this worker no longer reports (removed, their last
    /// session ended), so that the worker's totals never go down.
    retired: RouteCounters,
    /// Connect latency and session durations on this worker, every route, µs.
    connect: Histogram<u64>,
    session: Histogram<u64>,
}

impl WorkerLatest {
    fn new() -> Self {
        WorkerLatest {
            active: 0,
            listener_resets: 0,
            accept_errors: [0; AcceptErrorKind::COUNT],
            pipe_resizes_refused: 0,
            routes: BTreeMap::new(),
            listens: Vec::new(),
            tid: None,
            cpu_seconds: None,
            retired: RouteCounters::default(),
            connect: new_histogram(),
            session: new_histogram(),
        }
    }

    /// Reads the worker thread's CPU time; keeps the last value when it cannot.
    fn read_cpu(&mut self) {
        let Some(tid) = self.tid else { return };
        if let Ok(now) = cpu::thread_cpu_seconds(tid) {
            self.cpu_seconds = Some(self.cpu_seconds.map_or(now, |was| was.max(now)));
        }
    }
}

/// One worker's totals over every route it served, as the control side sums them.
#[derive(Debug, Clone)]
pub struct WorkerTotals<'a> {
    pub worker: usize,
    pub tid: Option<u32>,
    /// Sessions open now.
    pub active: u64,
    /// Connections accepted (every route, removed ones included).
    pub accepted: u64,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// The worker thread's CPU time (user + system), seconds; `None` until first read.
    pub cpu_seconds: Option<f64>,
    pub connect_us: &'a Histogram<u64>,
    pub session_us: &'a Histogram<u64>,
}

/// The busiest worker's active sessions over the mean across workers: 1.0 when balanced
/// (and when nothing is open), up to the number of workers when one carries everything.
pub fn imbalance(active: &[u64]) -> f64 {
    let total: u64 = active.iter().sum();
    let max = active.iter().copied().max().unwrap_or(0);
    if total == 0 {
        return 1.0;
    }
    max as f64 * active.len() as f64 / total as f64
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
            workers: (0..workers).map(|_| WorkerLatest::new()).collect(),
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
        latest.accept_errors = snap.accept_errors;
        latest.pipe_resizes_refused = snap.pipe_resizes_refused;
        latest.listens = snap.listens;
        latest.tid = snap.tid;
        latest.read_cpu();
        for (name, (counters, _)) in &latest.routes {
            if !snap.routes.iter().any(|r| &r.name == name) {
                latest.retired.add(counters);
            }
        }
        latest.routes.clear();
        for r in snap.routes {
            merge_hist(&mut self.connect, &r.name, &r.connect_us);
            merge_hist(&mut self.session, &r.name, &r.session_us);
            // Same bounds everywhere, so `add` cannot fail (a failure would lose one delta).
            let _ = latest.connect.add(&r.connect_us);
            let _ = latest.session.add(&r.session_us);
            latest.routes.insert(r.name, (r.counters, r.backends));
        }
        let workers = &self.workers;
        let reported = |name: &String| workers.iter().any(|w| w.routes.contains_key(name));
        self.connect.retain(|name, _| reported(name));
        self.session.retain(|name, _| reported(name));
    }

    /// For route `name`, per worker (by index): the sessions the *other* workers held on
    /// each backend at their last snapshots.
    pub fn elsewhere(&self, name: &str) -> Vec<Vec<(SocketAddr, u64)>> {
        let mut total: BTreeMap<SocketAddr, u64> = BTreeMap::new();
        for w in &self.workers {
            for b in w.routes.get(name).map_or(&[][..], |(_, b)| b.as_slice()) {
                *total.entry(b.addr).or_default() += b.active;
            }
        }
        self.workers
            .iter()
            .map(|w| {
                let own = w.routes.get(name).map_or(&[][..], |(_, b)| b.as_slice());
                total
                    .iter()
                    .map(|(addr, t)| {
                        let mine = own.iter().find(|b| b.addr == *addr).map_or(0, |b| b.active);
                        (*addr, t.saturating_sub(mine))
                    })
                    .collect()
            })
            .collect()
    }

    /// Connections reset by listener closes, summed over workers.
    /// Connections listeners could not hand over, every worker, by `AcceptErrorKind`.
    pub fn accept_errors(&self) -> [u64; AcceptErrorKind::COUNT] {
        let mut out = [0; AcceptErrorKind::COUNT];
        for w in &self.workers {
            for (a, b) in out.iter_mut().zip(w.accept_errors) {
                *a += b;
            }
        }
        out
    }

    pub fn listener_resets(&self) -> u64 {
        self.workers.iter().map(|w| w.listener_resets).sum()
    }

    /// Shared listen addresses' counters, summed over workers, by address.
    pub fn listens(&self) -> BTreeMap<SocketAddr, ListenSnapshot> {
        let mut out: BTreeMap<SocketAddr, ListenSnapshot> = BTreeMap::new();
        for l in self.workers.iter().flat_map(|w| &w.listens) {
            match out.get_mut(&l.addr) {
                Some(sum) => sum.add(l),
                None => {
                    out.insert(l.addr, l.clone());
                }
            }
        }
        for sum in out.values_mut() {
            sum.routed.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }

    /// Pipes whose size the kernel refused, summed over workers.
    pub fn pipe_resizes_refused(&self) -> u64 {
        self.workers.iter().map(|w| w.pipe_resizes_refused).sum()
    }

    /// Active sessions per worker.
    pub fn worker_active(&self) -> Vec<u64> {
        self.workers.iter().map(|w| w.active).collect()
    }

    /// Each worker's totals over its routes, by worker index.
    pub fn workers(&self) -> Vec<WorkerTotals<'_>> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut sum = w.retired.clone();
                for (c, _) in w.routes.values() {
                    sum.add(c);
                }
                WorkerTotals {
                    worker: i,
                    tid: w.tid,
                    active: w.active,
                    accepted: sum.accepted,
                    bytes_to_backend: sum.bytes_to_backend,
                    bytes_to_client: sum.bytes_to_client,
                    cpu_seconds: w.cpu_seconds,
                    connect_us: &w.connect,
                    session_us: &w.session,
                }
            })
            .collect()
    }

    /// [`imbalance`] of the workers' active sessions now.
    pub fn imbalance(&self) -> f64 {
        imbalance(&self.worker_active())
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
        let workers = store.workers();
        assert_eq!(workers.len(), 2);
        for w in &workers {
            assert_eq!(w.accepted, 10);
            assert_eq!(w.connect_us.len(), 1);
            assert_eq!(w.session_us.len(), 1);
        }
    }

    /// Each worker learns what the others hold on each backend, never its own sessions.
    #[test]
    fn elsewhere_is_the_other_workers_sessions() {
        let mut store = MetricsStore::new(3);
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        for (worker, on_a, on_b) in [(0, 5, 0), (1, 1, 2), (2, 0, 0)] {
            let w = WorkerMetrics::default();
            let r = w.route("web");
            r.backend(a).active.set(on_a);
            r.backend(b).active.set(on_b);
            store.absorb(w.snapshot(worker));
        }
        let e = store.elsewhere("web");
        assert_eq!(e[0], vec![(a, 1), (b, 2)]);
        assert_eq!(e[1], vec![(a, 5), (b, 0)]);
        assert_eq!(e[2], vec![(a, 6), (b, 2)]);
        assert!(store.elsewhere("nope").iter().all(Vec::is_empty));
    }

    #[test]
    fn worker_totals_sum_routes_and_never_go_down() {
        let mut store = MetricsStore::new(1);
        let w = WorkerMetrics::on_current_thread();
        for (name, n) in [("web", 3), ("api", 4)] {
            let r = w.route(name);
            bump(&r.accepted, n);
            bump(&r.bytes_to_backend, 100 * n);
            bump(&r.bytes_to_client, 1000 * n);
            r.record_connect_us(50);
        }
        store.absorb(w.snapshot(0));
        let t = &store.workers()[0];
        assert_eq!(
            (t.accepted, t.bytes_to_backend, t.bytes_to_client),
            (7, 700, 7000)
        );
        assert_eq!(t.connect_us.len(), 2);
        assert!(t.tid.is_some(), "the snapshot carries the thread id");
        let cpu = t.cpu_seconds.expect("this thread's CPU time is read");
        // "api" is removed and pruned: its counts stay in the worker's totals.
        w.prune(|name| name == "web");
        bump(&w.route("web").accepted, 1);
        store.absorb(w.snapshot(0));
        let t = &store.workers()[0];
        assert_eq!(
            (t.accepted, t.bytes_to_backend, t.bytes_to_client),
            (8, 700, 7000)
        );
        assert!(t.cpu_seconds.is_some_and(|c| c >= cpu));
        assert_eq!(t.connect_us.len(), 2, "histograms are cumulative");
        assert!(!store.routes().contains_key("api"));
    }

    #[test]
    fn imbalance_is_busiest_over_mean() {
        assert_eq!(imbalance(&[]), 1.0);
        assert_eq!(imbalance(&[0, 0]), 1.0);
        assert_eq!(imbalance(&[5, 5]), 1.0);
        assert_eq!(imbalance(&[3, 1]), 1.5);
        assert_eq!(imbalance(&[4, 0, 0, 0]), 4.0);
    }
}
