//! Connecting to backends: retries, budget, resets, limits.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

/// A refusing backend is skipped: every connection is served by the live one.
#[test]
fn refused_backend_is_skipped_for_the_next() {
    let live = Backend::echo();
    let dead = dead_addr();
    let b = ProxyBuilder::new(true).route(&[dead, live.addr], "");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    for i in 0..20 {
        let mut c = connect(addr);
        c.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        c.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric(&format!(
            "ringway_connect_errors_total{{route=\"r0\",backend=\"{dead}\",kind=\"refused\"}}"
        ))
        .is_some_and(|n| n >= 1.0)
    }));
}

/// Every backend down: the client is reset, well within connect_timeout + 100 ms.
#[test]
fn all_backends_down_resets_client_within_timeout() {
    let b =
        ProxyBuilder::new(true).route(&[dead_addr(), dead_addr()], "connect_timeout = \"500ms\"");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let start = Instant::now();
    assert_eq!(connect_and_read(addr), Err(ErrorKind::ConnectionReset));
    let took = start.elapsed();
    assert!(took <= Duration::from_millis(600), "reset after {took:?}");
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"connect_failed\"}")
            == Some(1.0)
    }));
}

/// A black-holed backend (SYNs dropped) is given up at connect_timeout, then the client is
/// reset.
#[test]
fn black_holed_backend_is_given_up_at_connect_timeout() {
    let hole = BlackHole::new();
    let b = ProxyBuilder::new(true).route(&[hole.addr], "connect_timeout = \"700ms\"");
    let proxy = b.start();
    let addr = proxy.addr("r0");
    let mut c = connect(addr);
    let start = Instant::now();
    assert_eq!(read_to_end(&mut c), Err(ErrorKind::ConnectionReset));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(650) && took <= Duration::from_millis(1200),
        "reset after {took:?}"
    );
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric(&format!(
            "ringway_connect_errors_total{{route=\"r0\",backend=\"{}\",kind=\"timeout\"}}",
            hole.addr
        )) == Some(1.0)
    }));
}

/// Past max_connections (this worker's share), new connections are reset and counted.
#[test]
fn max_connections_resets_the_excess() {
    let backend = Backend::start(|mut s| {
        let _ = read_to_end(&mut s);
    });
    let b = ProxyBuilder::new(true).route(&[backend.addr], "max_connections = 3");
    let proxy = b.workers(1).start();
    let addr = proxy.addr("r0");
    let held: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_connections_active{route=\"r0\"}") == Some(3.0)
    }));
    assert_eq!(connect_and_read(addr), Err(ErrorKind::ConnectionReset));
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_connections_rejected_total{route=\"r0\",reason=\"max_connections\"}")
            == Some(1.0)
    }));
    drop(held);
}

/// IPv6 listen and backend addresses work end to end.
#[test]
fn ipv6_loopback_route() {
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
    let backend_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    let proxy = ProxyBuilder::new(true)
        .named_route("v6", "[::1]:0".parse().unwrap(), &[backend_addr], "")
        .start();
    let listen = proxy.addr("v6");
    assert!(listen.is_ipv6() && listen.port() != 0, "{listen}");
    let mut c = connect(listen);
    c.write_all(b"six!").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"six!");
}
