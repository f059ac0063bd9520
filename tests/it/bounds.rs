//! Bounds under stress (issue 10): a client's reset stays a reset however busy the session
//! is, threads stay bounded with slow peers, and memory comes back after a peak.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::all_paths;
use crate::support::*;

all_paths!(
    client_reset_while_busy_stays_a_reset,
    threads_bounded_with_slow_readers,
    threads_bounded_with_slow_writers,
    memory_returns_after_a_peak,
);

/// The heavy tests (thousands of sockets, hundreds of MiB) of the three relay modes take
/// this in turn, so their peaks do not stack up in one test process (file descriptors).
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------------------------
// 1. A reset must stay a reset.

/// Races of "client resets a busy session" per relay mode.
const RESET_RUNS: usize = 300;
/// Races run at once (each takes ~100 ms).
const RESET_PARALLEL: usize = 10;
/// Each side sends this much every [`CHAT_EVERY`].
const CHAT_CHUNK: usize = 4096;
const CHAT_EVERY: Duration = Duration::from_millis(2);
/// How long the client talks before it resets.
const CHAT_FOR: Duration = Duration::from_millis(100);
/// How long the backend waits for the end of its connection.
const BACKEND_LIMIT: Duration = Duration::from_secs(10);

/// What one side of a chatting connection saw first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Seen {
    /// Still open when the time given ran out.
    Open,
    /// A read returned 0: a FIN.
    Fin,
    /// ECONNRESET on a read or a write, or EPIPE on a write.
    Reset,
    /// Any other error.
    Error(ErrorKind),
}

/// Sends [`CHAT_CHUNK`] bytes every [`CHAT_EVERY`] and reads whatever arrives, until the
/// socket reports its end, or `open_for` has passed and something was received, or `limit`
/// has passed. Returns what it saw and the bytes received.
///
/// One thread on purpose: after a reset the kernel reports ECONNRESET once, to whichever
/// call comes first, and later reads return 0; with a writer on another thread, the writer
/// could take the error and leave the reader a 0 that looks like a FIN.
fn chatter(s: &mut TcpStream, open_for: Duration, limit: Duration) -> (Seen, usize) {
    s.set_read_timeout(Some(CHAT_EVERY)).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(1))).unwrap();
    let out = [0x5a_u8; CHAT_CHUNK];
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut next_write = start;
    let mut received = 0;
    loop {
        let now = Instant::now();
        let elapsed = now - start;
        if (received > 0 && elapsed >= open_for) || elapsed >= limit {
            return (Seen::Open, received);
        }
        if now >= next_write {
            next_write = now + CHAT_EVERY;
            match s.write(&out) {
                Ok(_) => {}
                Err(e) if transient(e.kind()) => {}
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
                {
                    return (Seen::Reset, received);
                }
                Err(e) => return (Seen::Error(e.kind()), received),
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return (Seen::Fin, received),
            Ok(n) => received += n,
            Err(e) if transient(e.kind()) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (Seen::Reset, received),
            Err(e) => return (Seen::Error(e.kind()), received),
        }
    }
}

/// The client resets (SO_LINGER {1, 0}) a session while both directions are busy (4 KiB
/// every 2 ms each way). The backend must see that reset (ECONNRESET, or EPIPE on a write),
/// never a clean EOF first: a FIN before the RST tells the backend the client finished
/// normally. Run [`RESET_RUNS`] times; the buffered relay before the adaptive one (751b3ee)
/// sent a FIN first in 7-12 % of runs (its reader took a 0 after its writer had taken the
/// ECONNRESET, and passed the 0 on as an EOF).
fn client_reset_while_busy_stays_a_reset(relay: Relay) {
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut s| {
        let (seen, _) = chatter(&mut s, BACKEND_LIMIT, BACKEND_LIMIT);
        let _ = tx.send(seen);
    });
    let proxy = ProxyBuilder::new(relay).route(&[backend.addr], "").start();
    let addr = proxy.addr("r0");
    let clients: Vec<_> = (0..RESET_PARALLEL)
        .map(|_| {
            thread::spawn(move || {
                let mut odd = Vec::new();
                for _ in 0..RESET_RUNS / RESET_PARALLEL {
                    let mut c = connect(addr);
                    // Until the backend's bytes arrive (so the session reached it) and for
                    // CHAT_FOR at least.
                    let (seen, received) = chatter(&mut c, CHAT_FOR, Duration::from_secs(5));
                    if seen != Seen::Open || received == 0 {
                        odd.push((seen, received));
                    }
                    reset(c);
                }
                odd
            })
        })
        .collect();
    let client_odd: Vec<_> = clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let mut counts: HashMap<Seen, usize> = HashMap::new();
    for i in 0..RESET_RUNS {
        match rx.recv_timeout(BACKEND_LIMIT + Duration::from_secs(5)) {
            Ok(seen) => *counts.entry(seen).or_default() += 1,
            Err(_) => panic!("only {i} of {RESET_RUNS} backend connections ended: {counts:?}"),
        }
    }
    eprintln!("{relay:?}: the backend saw {counts:?} in {RESET_RUNS} client resets");
    assert!(
        client_odd.is_empty(),
        "clients saw (what, bytes received) before resetting: {client_odd:?}"
    );
    let fin = counts.get(&Seen::Fin).copied().unwrap_or(0);
    assert_eq!(
        fin, 0,
        "FIN before RST at the backend in {fin} of {RESET_RUNS} client resets: {counts:?}"
    );
    assert_eq!(
        counts.get(&Seen::Reset).copied().unwrap_or(0),
        RESET_RUNS,
        "every backend connection ends with a reset: {counts:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Threads stay bounded with slow peers.

/// Slow clients at once.
const SLOW_CLIENTS: usize = 60;
/// What the backend pushes to each slow reader (more than arrives in [`SLOW_FOR`]).
const PUSH: usize = 8 << 20;
/// How long the slow peers run while the proxy's threads are sampled.
const SLOW_FOR: Duration = Duration::from_secs(6);

/// Samples the proxy's thread count for `span`; returns the most seen and the thread names
/// at that moment.
fn max_threads(proxy: &Proxy, span: Duration) -> (usize, Vec<String>) {
    let deadline = Instant::now() + span;
    let (mut max, mut names) = (0, Vec::new());
    while Instant::now() < deadline {
        let n = proxy.thread_count();
        if n > max {
            max = n;
            names = thread_names(proxy.pid());
        }
        thread::sleep(Duration::from_millis(10));
    }
    (max, names)
}

/// Threads the proxy may have: one per worker, plus main/control, admin, health and one
/// to spare. io_uring's `iou-wrk-*` kernel workers count as threads of the process: a relay
/// that hands blocking work to io-wq grows one per stuck operation.
fn thread_bound(proxy: &Proxy) -> usize {
    proxy.workers + 4
}

/// 60 clients read slowly (4 KiB, then 1 ms of sleep) while the backend pushes 8 MiB to
/// each: the proxy's threads never exceed workers + 4.
fn threads_bounded_with_slow_readers(relay: Relay) {
    let backend = Backend::start(|mut s| {
        let chunk = vec![0x33_u8; 65536];
        for _ in 0..PUSH / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_to_end(&mut s);
    });
    let proxy = ProxyBuilder::new(relay).route(&[backend.addr], "").start();
    let addr = proxy.addr("r0");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<Result<usize, String>>> = (0..SLOW_CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut c = connect(addr);
                c.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 4096];
                let mut got = 0;
                while !stop.load(Ordering::SeqCst) {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if transient(e.kind()) => continue,
                        Err(e) => return Err(format!("slow reader after {got} bytes: {e}")),
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(got)
            })
        })
        .collect();
    let (max, names) = max_threads(&proxy, SLOW_FOR);
    stop.store(true, Ordering::SeqCst);
    eprintln!("{relay:?}: at most {max} threads with {SLOW_CLIENTS} slow readers: {names:?}");
    let got: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        max <= thread_bound(&proxy),
        "{max} threads with {SLOW_CLIENTS} slow readers (bound {}): {names:?}",
        thread_bound(&proxy)
    );
    assert!(
        got.iter().all(|g| matches!(g, Ok(n) if *n > 0)),
        "every slow reader got bytes: {got:?}"
    );
}

/// 60 clients send slowly (4 KiB, then 1 ms of sleep) to a backend that reads as fast as
/// it can: the proxy's threads never exceed workers + 4.
fn threads_bounded_with_slow_writers(relay: Relay) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let backend = Backend::start(move |mut s| {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let proxy = ProxyBuilder::new(relay).route(&[backend.addr], "").start();
    let addr = proxy.addr("r0");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<JoinHandle<Result<(), String>>> = (0..SLOW_CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut c = connect(addr);
                let chunk = [0x44_u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    c.write_all(&chunk)
                        .map_err(|e| format!("slow writer: {e}"))?;
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            })
        })
        .collect();
    let (max, names) = max_threads(&proxy, SLOW_FOR);
    stop.store(true, Ordering::SeqCst);
    eprintln!("{relay:?}: at most {max} threads with {SLOW_CLIENTS} slow writers: {names:?}");
    let ends: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        max <= thread_bound(&proxy),
        "{max} threads with {SLOW_CLIENTS} slow writers (bound {}): {names:?}",
        thread_bound(&proxy)
    );
    assert!(ends.iter().all(Result::is_ok), "slow writers: {ends:?}");
    assert!(
        received.load(Ordering::Relaxed) > 0,
        "the backend got bytes"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Memory comes back after a peak.

/// Bulk sessions at the peak, each moving [`BULK`] bytes backend -> client.
const PEAK_BULK: usize = 100;
const BULK: usize = 8 << 20;
/// Idle sessions held open during the peak (4 fds each across test and proxy).
const PEAK_IDLE: usize = 2000;
/// How long RSS may take to come back once everything is closed.
const SETTLE: Duration = Duration::from_secs(10);

/// `n` sessions at once through `addr`, each receiving [`BULK`] bytes from the backend.
fn bulk_transfers(addr: SocketAddr, n: usize) {
    let clients: Vec<_> = (0..n)
        .map(|_| {
            thread::spawn(move || {
                let mut c = connect(addr);
                c.write_all(b"go").unwrap();
                let mut buf = vec![0u8; 65536];
                let mut got = 0;
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => panic!("bulk client after {got} bytes: {e}"),
                    }
                }
                assert_eq!(got, BULK, "bulk client received");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// A backend that waits for 2 bytes, sends [`BULK`] bytes, half-closes and reads to EOF.
fn bulk_backend() -> Backend {
    Backend::start(|mut s| {
        let mut go = [0u8; 2];
        if s.read_exact(&mut go).is_err() {
            return;
        }
        let chunk = vec![0x77_u8; 65536];
        for _ in 0..BULK / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = read_to_end(&mut s);
    })
}

fn active(proxy: &Proxy, route: &str) -> Option<f64> {
    proxy.metric(&format!("ringway_connections_active{{route=\"{route}\"}}"))
}

/// RSS at a baseline (after a warm-up), a peak of 100 sessions x 8 MiB with 2,000 idle
/// sessions open, and after everything closed: within [`SETTLE`] it is back within 5 % +
/// 1 MiB of the baseline.
fn memory_returns_after_a_peak(relay: Relay) {
    let _heavy = heavy();
    let bulk = bulk_backend();
    let idle = HoldBackend::start();
    let proxy = ProxyBuilder::new(relay)
        .route(&[bulk.addr], "")
        .route(&[idle.addr], "")
        .start();
    let (bulk_addr, idle_addr) = (proxy.addr("r0"), proxy.addr("r1"));

    // Warm-up: every path a session takes, a few times, so that what is allocated once
    // (per-thread allocator state, the ring's buffers, the metrics of both routes) is in
    // the baseline.
    bulk_transfers(bulk_addr, 4);
    let warm: Vec<_> = (0..8).map(|_| connect(idle_addr)).collect();
    assert!(proxy.eventually(Duration::from_secs(10), |p| {
        active(p, "r1") == Some(8.0) && idle.held() == 8
    }));
    drop(warm);
    idle.close_all();
    assert!(proxy.eventually(Duration::from_secs(10), |p| {
        active(p, "r0") == Some(0.0) && active(p, "r1") == Some(0.0)
    }));
    // Two pool trims (one a second) and whatever the allocator does when quiet.
    thread::sleep(Duration::from_millis(2500));
    let baseline = proxy.rss_kib();

    // The peak: idle sessions first, then the bulk ones while they are open.
    let idles: Vec<_> = (0..PEAK_IDLE).map(|_| connect(idle_addr)).collect();
    assert!(
        proxy.eventually(Duration::from_secs(20), |p| {
            active(p, "r1") == Some(PEAK_IDLE as f64) && idle.held() == PEAK_IDLE
        }),
        "{PEAK_IDLE} idle sessions: {:?} active",
        active(&proxy, "r1")
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), proxy.pid());
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    bulk_transfers(bulk_addr, PEAK_BULK);
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap().max(proxy.rss_kib());

    // Close everything; the sessions end, then memory should follow.
    drop(idles);
    idle.close_all();
    let closed = Instant::now();
    // 5 % for what stays by design: capacity the peak grew and nothing shrinks (each
    // worker's session registry and the runtime's table of operations in flight, ~150 B per
    // peak session) and allocator pages still partly in use. 1 MiB absolute because RSS
    // moves by a few hundred KiB from one sample to the next whatever the relay does: the
    // admin thread serves the /metrics and /status this test polls throughout, and hyper's
    // buffers come and go; at the ~20 MiB baseline of a debug build that is most of the 5 %.
    let limit = baseline + baseline / 20 + 1024;
    let back = proxy.eventually(SETTLE, |p| {
        active(p, "r0") == Some(0.0) && active(p, "r1") == Some(0.0) && p.rss_kib() <= limit
    });
    let after = proxy.rss_kib();
    eprintln!(
        "{relay:?}: RSS baseline {baseline} KiB, peak {peak} KiB, {after} KiB {:.1} s after \
         the close ({:+.1} % of baseline)",
        closed.elapsed().as_secs_f64(),
        (after as f64 - baseline as f64) * 100.0 / baseline as f64
    );
    assert!(
        back,
        "RSS {after} KiB {SETTLE:?} after a peak of {peak} KiB, baseline {baseline} KiB (limit \
         {limit} KiB); sessions active: r0 {:?}, r1 {:?}",
        active(&proxy, "r0"),
        active(&proxy, "r1")
    );
}
