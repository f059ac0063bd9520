//! Criterion micro-benchmarks of the hot-path pieces behind ringway's design choices. Each
//! group puts the current implementation next to an alternative; see bench/README.md
//! ("Micro-benchmarks") for what each comparison decides and the last measured results.
//!
//! `cargo bench --bench hot_path` measures; `cargo test --benches` runs each benchmark once.

use criterion::{criterion_group, criterion_main};

mod histogram;
mod pick;
mod pools;
mod route;

/// The binary's allocator, so allocation costs are the ones the proxy pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

criterion_group!(
    hot_path,
    route::lookup,
    pick::backend_pick,
    histogram::record,
    histogram::merge,
    pools::buffers,
    pools::pipes
);
criterion_main!(hot_path);
