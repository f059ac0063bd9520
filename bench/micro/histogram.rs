//! Latency histograms. `record`: `saturating_record` at ringway's bounds (1 µs .. 1 day) with
//! 2 significant figures (what `metrics::local` uses) against 3 (10x finer buckets, 7x the
//! memory). `merge`: what moving a worker's per-second delta into the control thread's total
//! costs now (`Histogram::add` of a clone, as in `metrics::snapshot`) against a V2
//! serialize + deserialize + add (what a process or network boundary would cost).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use ringway::metrics::local::{HIST_HIGH_US, HIST_LOW_US, HIST_SIGFIG, new_histogram};

/// Recorded values a merge benchmark's worker delta holds (a busy route's second).
const DELTA_VALUES: usize = 10_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    if sigfig == HIST_SIGFIG {
        return new_histogram();
    }
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, sigfig).expect("valid bounds")
}

/// Latencies spread log-uniformly from 10 µs to 10 s, in a fixed pseudo-random order.
fn latencies(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            10f64.powf(1.0 + 6.0 * unit) as u64
        })
        .collect()
}

pub fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("hist_record");
    let values = latencies(4096);
    for sigfig in [2u8, 3] {
        let mut h = histogram(sigfig);
        g.bench_function(BenchmarkId::new("sigfig", sigfig), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % values.len();
                h.saturating_record(black_box(values[i]));
            })
        });
        black_box(h.len());
    }
    g.finish();
}

pub fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("hist_merge");
    g.throughput(Throughput::Elements(1));
    let values = latencies(DELTA_VALUES);
    for sigfig in [2u8, 3] {
        let mut delta = histogram(sigfig);
        for v in &values {
            delta.saturating_record(*v);
        }
        let mut total = histogram(sigfig);
        // Cumulative totals are never empty after the first second: avoid `add`'s memcpy
        // shortcut for an empty destination.
        total.saturating_record(1000);

        let mut wire = Vec::new();
        V2Serializer::new()
            .serialize(&delta, &mut wire)
            .expect("serialize");
        eprintln!(
            "hist_merge sigfig {sigfig}: {} counts = {} KiB in memory, {} bytes as V2",
            delta.distinct_values(),
            delta.distinct_values() * 8 / 1024,
            wire.len()
        );

        g.bench_function(BenchmarkId::new("add_clone", sigfig), |b| {
            b.iter(|| {
                let copy = black_box(&delta).clone();
                total.add(&copy).expect("same bounds");
            })
        });

        let mut ser = V2Serializer::new();
        let mut de = Deserializer::new();
        g.bench_function(BenchmarkId::new("v2_roundtrip_add", sigfig), |b| {
            b.iter(|| {
                wire.clear();
                ser.serialize(black_box(&delta), &mut wire)
                    .expect("serialize");
                let copy: Histogram<u64> = de
                    .deserialize(&mut black_box(wire.as_slice()))
                    .expect("deserialize");
                total.add(&copy).expect("same bounds");
            })
        });
        black_box(total.len());
    }
    g.finish();
}
