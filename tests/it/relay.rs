//! Relay semantics: bytes intact, half-close, resets, clean closes, many connections.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use crate::all_paths;
use crate::support::*;

all_paths!(
    bulk_64mib_each_way_at_once,
    half_close_client_first,
    half_close_backend_first,
    reset_from_backend_reaches_client,
    reset_from_client_reaches_backend,
    no_reset_on_1000_clean_cycles,
    thousand_concurrent_connections_and_fds_back_to_baseline,
    idle_connections_do_not_add_threads,
    idle_timeout_closes_both_sides,
    idle_timeout_with_bytes_undelivered_is_a_reset,
    urgent_data_does_not_stall_a_direction,
);

const MIB64: usize = 64 << 20;

/// 64 MiB each way at the same time: every byte arrives, in order, on both sides.
fn bulk_64mib_each_way_at_once(relay: Relay) {
    let backend = Backend::start(|s| {
        let mut w = s.try_clone().unwrap();
        let sender = thread::spawn(move || send_pattern(&mut w, 2, MIB64).unwrap());
        let mut r = s;
        assert_eq!(check_pattern(&mut r, 1).unwrap(), MIB64, "backend received");
        sender.join().unwrap();
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let client = connect(addr);
    let mut w = client.try_clone().unwrap();
    let sender = thread::spawn(move || send_pattern(&mut w, 1, MIB64).unwrap());
    let mut r = client;
    assert_eq!(check_pattern(&mut r, 2).unwrap(), MIB64, "client received");
    sender.join().unwrap();
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_bytes_total{route=\"r0\",direction=\"to_backend\"}") == Some(MIB64 as f64)
            && p.metric("ringway_bytes_total{route=\"r0\",direction=\"to_client\"}")
                == Some(MIB64 as f64)
    }));
}

/// The client half-closes first: the backend sees EOF, still answers, the client reads it.
fn half_close_client_first(relay: Relay) {
    let backend = Backend::start(|mut s| {
        let got = read_to_end(&mut s).unwrap();
        assert_eq!(got, b"request");
        s.write_all(b"response after your EOF").unwrap();
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let _proxy = b.start();
    let addr = _proxy.addr("r0");
    let mut c = connect(addr);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c).unwrap(), b"response after your EOF");
}

/// The backend half-closes first: the client sees EOF and can still send to the backend.
fn half_close_backend_first(relay: Relay) {
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = Backend::start(move |mut s| {
        s.write_all(b"banner").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        tx.send(read_to_end(&mut s)).unwrap();
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let _proxy = b.start();
    let addr = _proxy.addr("r0");
    let mut c = connect(addr);
    let mut banner = [0u8; 6];
    c.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"banner");
    let mut rest = [0u8; 1];
    assert_eq!(
        c.read(&mut rest).unwrap(),
        0,
        "client sees the backend's EOF"
    );
    c.write_all(b"still talking").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(got.unwrap(), b"still talking");
}

/// A reset by the backend reaches the client as a reset, never as a clean close.
fn reset_from_backend_reaches_client(relay: Relay) {
    let backend = Backend::start(|mut s| {
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"partial").unwrap();
        thread::sleep(Duration::from_millis(50));
        reset(s);
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let mut c = connect(addr);
    c.write_all(b"hello").unwrap();
    let mut got = [0u8; 7];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"partial");
    assert_eq!(
        read_to_end(&mut c),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"backend_reset\"}")
            == Some(1.0)
    }));
}

/// A reset by the client reaches the backend as a reset.
fn reset_from_client_reaches_backend(relay: Relay) {
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = Backend::start(move |mut s| {
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        tx.send(read_to_end(&mut s)).unwrap();
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let _proxy = b.start();
    let addr = _proxy.addr("r0");
    let mut c = connect(addr);
    c.write_all(b"hello").unwrap();
    thread::sleep(Duration::from_millis(100));
    reset(c);
    let got = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(got, Err(std::io::ErrorKind::ConnectionReset));
}

/// 1,000 request/response/close cycles: no side ever sees a reset.
fn no_reset_on_1000_clean_cycles(relay: Relay) {
    let backend = Backend::start(|mut s| {
        let mut req = [0u8; 4];
        if s.read_exact(&mut req).is_ok() {
            let _ = s.write_all(b"pong");
        }
        // The backend closes first, as an HTTP/1.0 server would.
        drop(s);
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..250 {
                    let mut c = connect(addr);
                    c.write_all(b"ping").unwrap();
                    assert_eq!(read_to_end(&mut c), Ok(b"pong".to_vec()));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"clean\"}") == Some(1000.0)
    }));
    for outcome in ["client_reset", "backend_reset"] {
        let series = format!("ringway_sessions_ended_total{{route=\"r0\",outcome=\"{outcome}\"}}");
        assert_eq!(proxy.metric(&series), Some(0.0), "{outcome}");
    }
}

/// 1,000 connections open at once through 2 workers are all served, and the proxy's file
/// descriptors return to their baseline afterwards.
fn thousand_concurrent_connections_and_fds_back_to_baseline(relay: Relay) {
    let backend = Backend::echo();
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let proxy = b.workers(2).start();
    let addr = proxy.addr("r0");
    // Let the admin connection of the readiness probe close before taking the baseline.
    thread::sleep(Duration::from_millis(300));
    let baseline = proxy.fd_count();
    let mut conns: Vec<_> = (0..1000).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("{i:08}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut got = [0u8; 8];
        if let Err(e) = c.read_exact(&mut got) {
            thread::sleep(Duration::from_millis(1100));
            panic!("connection {i}: {e}\n{}", proxy.admin_get("/metrics"));
        }
        assert_eq!(got, *format!("{i:08}").as_bytes());
    }
    let open = proxy.fd_count();
    // 2 per session; one admin socket may still be closing.
    assert!(
        open + 1 >= baseline + 2000,
        "2 fds per session while open: {baseline} then {open}"
    );
    drop(conns);
    assert!(
        proxy.eventually(Duration::from_secs(5), |p| p.fd_count() <= baseline),
        "fds: baseline {baseline}, now {}",
        proxy.fd_count()
    );
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_connections_total{route=\"r0\"}") == Some(1000.0)
            && p.metric("ringway_connections_active{route=\"r0\"}") == Some(0.0)
    }));
}

/// 1,000 idle sessions add no threads: threads stay within workers + 4.
fn idle_connections_do_not_add_threads(relay: Relay) {
    let backend = Backend::start(|mut s| {
        let _ = read_to_end(&mut s);
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "");
    let proxy = b.workers(2).start();
    let addr = proxy.addr("r0");
    let conns: Vec<_> = (0..1000).map(|_| connect(addr)).collect();
    assert!(proxy.eventually(Duration::from_secs(5), |p| {
        p.metric("ringway_connections_active{route=\"r0\"}") == Some(1000.0)
    }));
    thread::sleep(Duration::from_millis(300));
    let threads = proxy.thread_count();
    assert!(
        threads <= 2 + 4,
        "{threads} threads with 1000 idle sessions"
    );
    drop(conns);
}

/// With `idle_timeout`, a silent session is closed on both sides.
fn idle_timeout_closes_both_sides(relay: Relay) {
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = Backend::start(move |mut s| {
        s.write_all(b"hi").unwrap();
        tx.send(read_to_end(&mut s)).unwrap();
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "idle_timeout = \"400ms\"");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let mut c = connect(addr);
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(read_to_end(&mut c), Ok(Vec::new()), "client sees EOF");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed too early: {waited:?}"
    );
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        Ok(Vec::new()),
        "backend sees EOF"
    );
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"idle_timeout\"}") == Some(1.0)
    }));
}

/// An idle timeout that drops bytes still held for a peer that stopped reading ends with a
/// reset, not a FIN: a FIN after a cut stream would say the stream was complete.
fn idle_timeout_with_bytes_undelivered_is_a_reset(relay: Relay) {
    let backend = Backend::start(|mut s| {
        // Far more than the client's and ringway's socket buffers hold.
        let _ = send_pattern(&mut s, 3, 64 << 20);
    });
    let b = ProxyBuilder::new(relay).route(&[backend.addr], "idle_timeout = \"500ms\"");
    let proxy = b.start();
    let mut c = connect(proxy.addr("r0"));
    // Read a little, then stop reading: ringway is left holding bytes it cannot deliver.
    let mut first = [0u8; 1024];
    c.read_exact(&mut first).unwrap();
    assert!(proxy.eventually(Duration::from_secs(5), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"idle_timeout\"}") == Some(1.0)
    }));
    // What was queued before the reset may still be read; then the reset shows.
    assert_eq!(
        read_to_end(&mut c),
        Err(std::io::ErrorKind::ConnectionReset),
        "client sees a reset, not EOF"
    );
}

/// TCP urgent data (MSG_OOB) in the middle of a transfer: splice never reads past an urgent
/// byte, so a splicing direction must not stall (or spin) on it. Every ordinary byte arrives;
/// the urgent byte itself is dropped, as recv(2) does without SO_OOBINLINE.
fn urgent_data_does_not_stall_a_direction(relay: Relay) {
    use std::os::fd::AsRawFd;
    let (tx, rx) = std::sync::mpsc::channel();
    let backend = Backend::start(move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut total = 0usize;
        let mut buf = vec![0u8; 65536];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(total),
                Ok(n) => total += n,
                Err(e) => break Err((e.kind(), total)),
            }
        };
        tx.send(end).unwrap();
    });
    let proxy = ProxyBuilder::new(relay).route(&[backend.addr], "").start();
    let mut c = connect(proxy.addr("r0"));
    let chunk = vec![7u8; 256 << 10];
    c.write_all(&chunk).unwrap();
    thread::sleep(Duration::from_millis(50));
    // SAFETY: a live socket and a one-byte buffer on the stack.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::send(c.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1);
    c.write_all(&chunk).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(got, Ok(2 * chunk.len()), "backend received");
}
