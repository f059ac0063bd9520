//! Per-session resources. Buffers: `BufferPool` take/put against a fresh 64 KiB `Vec` per
//! session (with mimalloc, as in the binary). Pipes: `PipePool` take/put against pipe2 +
//! F_SETPIPE_SZ (1 MiB) + two closes per use. Each is measured for one session at a time and
//! for a burst of 64 sessions open at once (all taken, then all returned).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringway::net::sys;
use ringway::proxy::pool::{BufferPool, PipePool};

const BUFFER_SIZE: usize = 64 * 1024;
const PIPE_SIZE: usize = 1024 * 1024;
/// As `worker::POOL_MAX_IDLE`.
const MAX_IDLE: usize = 256;
const PAGE: usize = 4096;
const SESSIONS: [usize; 2] = [1, 64];

/// Writes one byte per page, as a first read into the buffer would fault its pages in.
fn touch(buf: &mut Vec<u8>) {
    for slot in buf.spare_capacity_mut().iter_mut().step_by(PAGE) {
        slot.write(1);
    }
}

pub fn buffers(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer_64k");
    for k in SESSIONS {
        g.throughput(Throughput::Elements(k as u64));
        let pool = BufferPool::new(BUFFER_SIZE, MAX_IDLE);
        let mut held = Vec::with_capacity(k);
        g.bench_function(BenchmarkId::new("pool_take_put", k), |b| {
            b.iter(|| {
                for _ in 0..k {
                    let mut buf = pool.take();
                    touch(&mut buf);
                    held.push(buf);
                }
                for buf in held.drain(..) {
                    pool.put(black_box(buf));
                }
            })
        });
        g.bench_function(BenchmarkId::new("fresh_vec", k), |b| {
            b.iter(|| {
                for _ in 0..k {
                    let mut buf = Vec::<u8>::with_capacity(BUFFER_SIZE);
                    touch(&mut buf);
                    held.push(buf);
                }
                for buf in held.drain(..) {
                    drop(black_box(buf));
                }
            })
        });
    }
    g.finish();
}

pub fn pipes(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_1m");
    for k in SESSIONS {
        g.throughput(Throughput::Elements(k as u64));
        let pool = PipePool::new(PIPE_SIZE, MAX_IDLE);
        let mut held = Vec::with_capacity(k);
        g.bench_function(BenchmarkId::new("pool_take_put", k), |b| {
            b.iter(|| {
                for _ in 0..k {
                    held.push(pool.take().expect("pipe"));
                }
                for p in held.drain(..) {
                    pool.put(black_box(p));
                }
            })
        });
        let mut fresh = Vec::with_capacity(k);
        g.bench_function(BenchmarkId::new("pipe2_setsz_close", k), |b| {
            b.iter(|| {
                for _ in 0..k {
                    let (r, w) = sys::pipe().expect("pipe");
                    black_box(sys::set_pipe_size(&w, PIPE_SIZE));
                    fresh.push((r, w));
                }
                // Dropping the OwnedFds closes both ends.
                fresh.clear();
            })
        });
    }
    g.finish();
}
