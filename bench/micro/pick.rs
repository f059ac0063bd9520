//! Backend pick (once per connect attempt): `Route::pick`'s round robin (a wrapping counter
//! taken modulo the backend count) against a compare-and-wrap counter (no division) and
//! power-of-two-choices on active sessions (a better spread under uneven sessions, at the cost
//! of a random number and two loads).

use std::cell::Cell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion};
use ringway::config::RouteConfig;
use ringway::control::messages::RouteSpec;
use ringway::metrics::local::{BackendMetrics, WorkerMetrics};
use ringway::proxy::table::RouteTable;

fn route(backends: usize) -> RouteConfig {
    RouteConfig::with_defaults(
        "web".into(),
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3000)],
        (0..backends)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 8000 + i as u16))
            .collect(),
    )
}

/// Round robin with a cursor that is compared and reset instead of divided.
struct WrapRoundRobin {
    backends: Vec<Rc<BackendMetrics>>,
    next: Cell<usize>,
}

impl WrapRoundRobin {
    #[inline]
    fn pick(&self) -> Option<&Rc<BackendMetrics>> {
        let i = self.next.get();
        let n = i + 1;
        self.next.set(if n >= self.backends.len() { 0 } else { n });
        self.backends.get(i)
    }
}

/// Power of two choices: two random backends, the one with fewer active sessions wins.
struct TwoChoices {
    backends: Vec<Rc<BackendMetrics>>,
    rng: Cell<u64>,
}

impl TwoChoices {
    #[inline]
    fn pick(&self) -> Option<&Rc<BackendMetrics>> {
        // xorshift64: per-worker state, no syscall, good enough to spread load.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        let n = self.backends.len() as u64;
        // Multiply-shift maps each 32-bit half onto 0..n without a division.
        let a = (((x & 0xffff_ffff) * n) >> 32) as usize;
        let b = (((x >> 32) * n) >> 32) as usize;
        let (ba, bb) = (self.backends.get(a)?, self.backends.get(b)?);
        Some(if bb.active.get() < ba.active.get() {
            bb
        } else {
            ba
        })
    }
}

pub fn backend_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("backend_pick");
    for n in [2usize, 16] {
        let cfg = route(n);
        let metrics = WorkerMetrics::default();
        let table = RouteTable::build(1, &[RouteSpec::configured(1, &cfg)], &metrics, 1);
        let Some(current) = table.door(&cfg.listen[0]).and_then(|d| d.direct()) else {
            panic!("route not found");
        };
        // The same BackendMetrics the route holds, found by address.
        let route_metrics = metrics.route(&cfg.name);
        let backends: Vec<Rc<BackendMetrics>> = cfg
            .backends
            .iter()
            .map(|a| route_metrics.backend(*a))
            .collect();
        for (i, b) in backends.iter().enumerate() {
            b.active.set((i as u64 * 7) % 5);
        }
        let wrap = WrapRoundRobin {
            backends: backends.clone(),
            next: Cell::new(0),
        };
        let p2c = TwoChoices {
            backends,
            rng: Cell::new(0x2545_f491_4f6c_dd1d),
        };

        g.bench_function(BenchmarkId::new("rr_modulo", n), |b| {
            b.iter(|| black_box(black_box(current).pick()))
        });
        g.bench_function(BenchmarkId::new("rr_wrap", n), |b| {
            b.iter(|| black_box(black_box(&wrap).pick()))
        });
        g.bench_function(BenchmarkId::new("p2c_active", n), |b| {
            b.iter(|| black_box(black_box(&p2c).pick()))
        });
    }
    g.finish();
}
