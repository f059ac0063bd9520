//! Route lookup by listen address (once per accepted connection): `RouteTable`'s HashMap
//! against a linear scan of a Vec of `(listen, route)` pairs.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion};
use ringway::config::RouteConfig;
use ringway::control::messages::RouteSpec;
use ringway::metrics::local::WorkerMetrics;
use ringway::proxy::table::{Route, RouteTable};

/// Lookups cycle through this many precomputed queries, spread over all routes.
const QUERIES: usize = 1024;

/// `n` routes, each with one listen address on its own port and one backend.
fn routes(n: usize) -> Vec<RouteConfig> {
    (0..n)
        .map(|i| {
            RouteConfig::with_defaults(
                format!("r{i}"),
                vec![SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    10_000 + i as u16,
                )],
                vec![SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
                    8000 + i as u16,
                )],
            )
        })
        .collect()
}

/// Listen addresses in a fixed pseudo-random order, so neither variant sees one hot key.
fn queries(routes: &[RouteConfig]) -> Vec<SocketAddr> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..QUERIES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            routes[(x % routes.len() as u64) as usize].listen[0]
        })
        .collect()
}

pub fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [1usize, 4, 16, 64] {
        let cfg = routes(n);
        let metrics = WorkerMetrics::default();
        let table = RouteTable::build(
            1,
            &cfg.iter()
                .enumerate()
                .map(|(i, c)| RouteSpec::configured(i as u64, c))
                .collect::<Vec<_>>(),
            &metrics,
            1,
        );
        let scan: Vec<(SocketAddr, Rc<Route>)> = cfg
            .iter()
            .filter_map(|r| {
                table
                    .door(&r.listen[0])
                    .and_then(|d| d.direct())
                    .map(|rt| (r.listen[0], rt.clone()))
            })
            .collect();
        let qs = queries(&cfg);

        g.bench_with_input(BenchmarkId::new("hashmap", n), &qs, |b, qs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % QUERIES;
                black_box(table.door(black_box(&qs[i])).is_some())
            })
        });
        g.bench_with_input(BenchmarkId::new("vec_scan", n), &qs, |b, qs| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % QUERIES;
                let want = black_box(&qs[i]);
                black_box(scan.iter().find(|(a, _)| a == want).is_some())
            })
        });
    }
    g.finish();
}
