//! Backend pick (once per connect attempt): `Route::pick` for each `balance` strategy, with
//! uneven weights and uneven session counts — round robin (an index into a precomputed
//! smooth schedule), least connections (a scan of every backend's count), p2c (a xorshift
//! and two loads), hash_source (a hash of the client and a Maglev table lookup).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{BenchmarkId, Criterion};
use ringway::config::{Balance, RouteConfig};
use ringway::control::messages::RouteSpec;
use ringway::metrics::local::WorkerMetrics;
use ringway::proxy::balance::Source;
use ringway::proxy::table::RouteTable;

fn route(backends: usize, balance: Balance) -> RouteConfig {
    let mut cfg = RouteConfig::with_defaults(
        "web".into(),
        vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3000)],
        (0..backends)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 8000 + i as u16))
            .collect(),
    );
    cfg.balance = balance;
    // Every other backend weighs 3.
    cfg.weights = cfg.backends.iter().step_by(2).map(|a| (*a, 3)).collect();
    cfg
}

pub fn backend_pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("backend_pick");
    for n in [2usize, 16] {
        for balance in Balance::ALL {
            let cfg = route(n, balance);
            let metrics = WorkerMetrics::default();
            let table = RouteTable::build(1, &[RouteSpec::configured(1, &cfg)], &metrics, 1);
            let Some(route) = table.door(&cfg.listen[0]).and_then(|d| d.direct()) else {
                panic!("route not found");
            };
            let route_metrics = metrics.route(&cfg.name);
            for (i, a) in cfg.backends.iter().enumerate() {
                route_metrics.backend(*a).active.set((i as u64 * 7) % 5);
            }
            let mut client = 0u32;
            g.bench_function(BenchmarkId::new(balance.as_str(), n), |b| {
                b.iter(|| {
                    client = client.wrapping_add(1);
                    let source = Source::of(IpAddr::V4(Ipv4Addr::from(client)));
                    black_box(black_box(route).pick(black_box(source)).map(|p| p.0))
                })
            });
        }
    }
    g.finish();
}
