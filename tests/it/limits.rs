//! Client limits: `first_byte_timeout` keeps silent clients off the backends and closes
//! them, `max_connections_per_source` caps one source address, `runtime.max_connections`
//! caps the process; each refusal is a reset at accept, counted by reason. And the issue's
//! flood: 3,000 slow connections from 30 addresses while a client from another address is
//! served every time and the admin API answers throughout.
//!
//! Sources other than 127.0.0.1 are loopback addresses too (the whole 127/8 is local on
//! Linux): a client socket bound to 127.0.1.N before it connects comes from there.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::all_paths;
use crate::apps::{HttpBackend, get};
use crate::support::*;

/// Generous upper bound for anything that should take a few seconds.
const LONG: Duration = Duration::from_secs(30);

/// A connection to `to` from `src` (any port), with read and write timeouts.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src.into(), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// A connection from `src`, or `None` when the proxy reset it so fast that `connect`
/// itself reports the reset (a refusal at accept can beat the connecting thread).
fn attempt(src: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    match connect_from(src, to) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("connect from {src} to {to}: {e}"),
    }
}

/// True when a new connection from `src` is served (a byte comes back from an echo
/// backend); false when it is reset. Served connections are kept in `held`.
fn served_from(src: Ipv4Addr, to: SocketAddr, held: &mut Vec<TcpStream>) -> bool {
    let Some(mut s) = attempt(src, to) else {
        return false;
    };
    let served = echoes(&mut s);
    if served {
        held.push(s);
    }
    served
}

/// True when a byte sent on `s` comes back from an echo backend (a session is up); false
/// when the proxy reset the connection.
fn echoes(s: &mut TcpStream) -> bool {
    let mut one = [0u8; 1];
    s.write_all(b"x").is_ok() && matches!(s.read(&mut one), Ok(1))
}

/// An echo backend that counts the connections it accepted.
fn counting_echo() -> (Backend, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let backend = Backend::start(move |mut s| {
        count.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
    });
    (backend, accepted)
}

fn rejected(p: &Proxy, route: &str, reason: &str) -> f64 {
    p.metric(&format!(
        "ringway_connections_rejected_total{{route=\"{route}\",reason=\"{reason}\"}}"
    ))
    .unwrap_or(0.0)
}

fn ended(p: &Proxy, route: &str, outcome: &str) -> f64 {
    p.metric(&format!(
        "ringway_sessions_ended_total{{route=\"{route}\",outcome=\"{outcome}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Raises this test process's open-files soft limit to its hard limit (thousands of client
/// sockets).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into our stack variable.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one rlimit from our stack variable.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// With `first_byte_timeout`, clients that connect and say nothing never cause a backend
/// connection, and each is reset once the timeout has passed (not before); they end as
/// `first_byte_timeout`.
#[test]
fn silent_clients_never_reach_the_backend_and_are_reset_after_the_timeout() {
    let (backend, accepted) = counting_echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .route(&[backend.addr], "first_byte_timeout = \"1s\"\n")
        .start();
    let addr = p.addr("r0");
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for s in &mut silent {
        let mut buf = [0u8; 1];
        let got = s.read(&mut buf);
        assert_eq!(
            got.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "a silent client is reset\n{}",
            p.logs()
        );
    }
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= Duration::from_millis(950),
        "reset before the timeout, after {closed_after:?}"
    );
    assert!(
        p.eventually(LONG, |p| ended(p, "r0", "first_byte_timeout") == 20.0),
        "{}",
        p.admin_get("/metrics")
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "the backend saw nobody");
    assert_eq!(
        p.metric("ringway_connections_active{route=\"r0\"}"),
        Some(0.0)
    );
    // A client that closes without a word does not reach the backend either.
    drop(connect(addr));
    assert!(p.eventually(LONG, |p| ended(p, "r0", "clean") == 1.0));
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    eprintln!("20 silent clients reset {closed_after:?} after they connected");
}

all_paths!(a_client_that_speaks_within_the_timeout_gets_its_bytes_through);

/// With `first_byte_timeout`, a client that speaks (late, but within the timeout) is
/// connected then, and every byte goes through intact both ways on every relay path: the
/// first bytes wait in the socket for the relay, they are not read early.
fn a_client_that_speaks_within_the_timeout_gets_its_bytes_through(relay: Relay) {
    let (backend, accepted) = counting_echo();
    let p = ProxyBuilder::new(relay)
        .route(&[backend.addr], "first_byte_timeout = \"2s\"\n")
        .start();
    let addr = p.addr("r0");
    let mut c = connect(addr);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "not connected before");
    let total = 3 << 20;
    let mut w = c.try_clone().unwrap();
    let sender = thread::spawn(move || {
        send_pattern(&mut w, 7, total).unwrap();
    });
    let got = check_pattern(&mut c, 7).unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    sender.join().unwrap();
    assert_eq!(got, total);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert!(p.eventually(LONG, |p| ended(p, "r0", "clean") == 1.0));
}

/// The wait for the first bytes works on the epoll driver too: a silent client is reset,
/// one that speaks is relayed.
#[test]
fn first_byte_timeout_on_the_epoll_driver() {
    let (backend, accepted) = counting_echo();
    let mut b =
        ProxyBuilder::new(Relay::Auto).route(&[backend.addr], "first_byte_timeout = \"500ms\"\n");
    b.driver = "epoll";
    let p = b.start();
    let addr = p.addr("r0");
    let mut silent = connect(addr);
    let mut speaks = connect(addr);
    assert!(echoes(&mut speaks), "{}", p.logs());
    let got = silent.read(&mut [0u8; 1]).map_err(|e| e.kind());
    assert_eq!(got, Err(io::ErrorKind::ConnectionReset));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// `max_connections_per_source`: with one worker, exactly N sessions per IPv4 address; the
/// next is reset at accept and counted; another address has its own N; a place is given
/// back when a session ends. With two workers each allows its share (N / 2): one address
/// gets between one share and N.
#[test]
fn max_connections_per_source_caps_each_address() {
    let backend = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .workers(1)
        .route(&[backend.addr], "max_connections_per_source = 3\n")
        .start();
    let addr = p.addr("r0");
    let a = Ipv4Addr::new(127, 0, 1, 1);
    let b = Ipv4Addr::new(127, 0, 1, 2);
    let mut held = Vec::new();
    for _ in 0..3 {
        assert!(served_from(a, addr, &mut held), "{}", p.logs());
    }
    assert!(!served_from(a, addr, &mut held), "the 4th is reset");
    assert!(
        served_from(b, addr, &mut held),
        "another address has its own limit"
    );
    assert!(p.eventually(LONG, |p| {
        rejected(p, "r0", "max_connections_per_source") == 1.0
    }));
    assert_eq!(rejected(&p, "r0", "max_connections"), 0.0);
    // One session ends: its place is taken again.
    drop(held.remove(0));
    assert!(
        p.eventually(LONG, |_| served_from(a, addr, &mut held)),
        "a freed place is never given again\n{}",
        p.logs()
    );
    drop(p);

    let p = ProxyBuilder::new(Relay::Auto)
        .workers(2)
        .route(&[backend.addr], "max_connections_per_source = 4\n")
        .start();
    let addr = p.addr("r0");
    let src = Ipv4Addr::new(127, 0, 1, 3);
    // All ten are opened before any is checked: the refused ones were refused while the
    // others were held.
    let mut conns: Vec<TcpStream> = (0..10).filter_map(|_| attempt(src, addr)).collect();
    let served = conns.iter_mut().map(echoes).filter(|ok| *ok).count();
    assert!((2..=4).contains(&served), "{served} served of 10");
    assert!(p.eventually(LONG, |p| {
        rejected(p, "r0", "max_connections_per_source") == (10 - served) as f64
    }));
    eprintln!("two workers, limit 4: {served} of 10 from one address served");
}

/// `runtime.max_connections` caps the sessions of every route together (one worker: the
/// whole cap); the excess is reset at accept and counted per route as
/// `runtime_max_connections`; a place is given back when a session ends.
#[test]
fn the_global_cap_spans_routes() {
    let backend = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .workers(1)
        .runtime_extra("max_connections = 3")
        .route(&[backend.addr], "")
        .route(&[backend.addr], "")
        .start();
    let (r0, r1) = (p.addr("r0"), p.addr("r1"));
    let me = Ipv4Addr::LOCALHOST;
    let mut held = Vec::new();
    for to in [r0, r0, r1] {
        assert!(served_from(me, to, &mut held), "{}", p.logs());
    }
    assert!(!served_from(me, r1, &mut held), "the cap is for all routes");
    assert!(!served_from(me, r0, &mut held));
    assert!(p.eventually(LONG, |p| {
        rejected(p, "r0", "runtime_max_connections") == 1.0
            && rejected(p, "r1", "runtime_max_connections") == 1.0
    }));
    drop(held.remove(0));
    assert!(
        p.eventually(LONG, |_| served_from(me, r1, &mut held)),
        "{}",
        p.logs()
    );
}

/// The new keys are validated like every other: exit 64, naming the file, the key and a fix.
#[test]
fn bad_limits_exit_64_naming_the_key() {
    let route = "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\n";
    let cases = [
        (
            format!("{route}max_connections_per_source = 0\n"),
            "(\"web\").max_connections_per_source",
        ),
        (
            format!("{route}first_byte_timeout = \"soon\"\n"),
            "(\"web\").first_byte_timeout",
        ),
        (
            format!("{route}first_byte_timeout = \"2h\"\n"),
            "(\"web\").first_byte_timeout",
        ),
        (
            format!("[runtime]\nmax_connections = -1\n{route}"),
            "runtime.max_connections",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &toml).unwrap();
        let (code, out, err) = ringway(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 64, "exit code for:\n{toml}\nstderr: {err}");
        assert!(out.is_empty());
        assert!(err.contains("bad.toml"), "file named in: {err}");
        assert!(err.contains(key), "key {key:?} named in: {err}");
        assert!(err.contains("fix:"), "a fix in: {err}");
    }
}

/// The issue's flood: 3,000 connections from 30 addresses (127.0.1.1-30), half silent, half
/// sending one byte and then nothing for 10 s, while a client from 127.0.0.1 makes about
/// 200 requests a second through an HTTP backend. The attackers are limited (20 per
/// address: the rest reset at accept and counted) and closed on time (the silent ones by
/// `first_byte_timeout`, without a backend connection; the others by `idle_timeout`); the
/// client gets every answer; the proxy's memory grows by less than 30 MB; the admin API
/// answers throughout.
#[test]
fn a_slow_flood_from_30_sources_is_limited_while_a_client_is_served() {
    raise_nofile();
    const SOURCES: usize = 30;
    const FLOOD: usize = 3000;
    const PER_SOURCE: usize = 20;
    let first_byte = Duration::from_secs(2);
    let app = HttpBackend::start("app");
    let p = ProxyBuilder::new(Relay::Auto)
        .workers(2)
        .route(
            &[app.addr],
            "max_connections_per_source = 20\nfirst_byte_timeout = \"2s\"\nidle_timeout = \"3s\"\n",
        )
        .start();
    let addr = p.addr("r0");
    for _ in 0..20 {
        assert_eq!(get(addr).as_deref(), Ok("app"));
    }
    let rss_before = p.rss_kib();
    let served_before = app.served();

    // The client: two threads, 100 requests a second each (open loop, paced).
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                let period = Duration::from_millis(10);
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    match get(addr) {
                        Ok(body) if body == "app" => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let started = Instant::now();

    // The flood, from its own thread.
    let flood = thread::spawn(move || {
        let t = Instant::now();
        let (mut socks, mut early, mut errors) = (Vec::with_capacity(FLOOD), 0usize, 0usize);
        for i in 0..FLOOD {
            let src = Ipv4Addr::new(127, 0, 1, (i % SOURCES + 1) as u8);
            match connect_from(src, addr) {
                Ok(mut s) => {
                    if (i / SOURCES) % 2 == 1 {
                        // A trickler: one byte now, the next 10 s later (by then it has
                        // been closed).
                        let _ = s.write_all(b"G");
                    }
                    socks.push(s);
                }
                // Reset at accept before `connect` returned.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => early += 1,
                Err(_) => errors += 1,
            }
        }
        (socks, early, errors, t.elapsed())
    });

    // Meanwhile: the admin API answers, and the memory is sampled.
    let mut rss_max = rss_before;
    let mut admin_calls = 0;
    let mut admin_slowest = Duration::ZERO;
    let mut poll = |p: &Proxy| {
        let t = Instant::now();
        let (code, _) = p.admin_call("GET", "/status", None);
        assert_eq!(code, 200, "the admin API answers during the flood");
        admin_slowest = admin_slowest.max(t.elapsed());
        admin_calls += 1;
        rss_max = rss_max.max(p.rss_kib());
    };
    while !flood.is_finished() {
        poll(&p);
        thread::sleep(Duration::from_millis(100));
    }
    let (mut socks, reset_early, connect_errors, flood_took) = flood.join().unwrap();
    let attackers = (FLOOD - connect_errors) as f64;
    // Every attacker ends: reset at accept, or closed by a timeout.
    let settled = p.eventually(LONG, |p| {
        poll(p);
        let r = rejected(p, "r0", "max_connections_per_source");
        r + ended(p, "r0", "first_byte_timeout") + ended(p, "r0", "idle_timeout") >= attackers
    });
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut ok = 0;
    let mut failed = Vec::new();
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    let refused = rejected(&p, "r0", "max_connections_per_source");
    let silent_closed = ended(&p, "r0", "first_byte_timeout");
    let idle_closed = ended(&p, "r0", "idle_timeout");
    eprintln!(
        "flood: {} connections open, {reset_early} reset before connect returned, {connect_errors} connect errors, in {flood_took:?}; {refused} reset at accept, {silent_closed} closed by first_byte_timeout, {idle_closed} by idle_timeout; client: {ok} ok, {} failed in {took:?} ({:.0}/s); RSS {rss_before} KiB -> max {rss_max} KiB; admin: {admin_calls} calls, slowest {admin_slowest:?}",
        socks.len(),
        failed.len(),
        ok as f64 / took.as_secs_f64()
    );
    assert!(settled, "attackers still open\n{}", p.admin_get("/metrics"));
    assert_eq!(connect_errors, 0, "every attacker reached the proxy");
    assert!(failed.is_empty(), "client failures: {failed:?}");
    assert!(ok > 0);
    // Limited: at most 20 per address at a time, and a place frees only when a session
    // ends (after 2 s at the earliest), so at most this many were ever accepted.
    let windows = 1 + (flood_took.as_secs_f64() / first_byte.as_secs_f64()).floor() as usize;
    let most_accepted = (SOURCES * PER_SOURCE * windows) as f64;
    assert!(
        refused >= attackers - most_accepted,
        "{refused} refused of {attackers} (at most {most_accepted} could be accepted)"
    );
    assert!(refused > 0.0 && silent_closed > 0.0 && idle_closed > 0.0);
    // The backend answered the client's requests, and nothing else.
    assert_eq!(app.served() - served_before, ok);
    // Closed, from the attackers' side too.
    for s in &mut socks {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let r = s.read(&mut buf);
        assert!(
            !matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "an attacker is still open"
        );
    }
    let grown_mib = rss_max.saturating_sub(rss_before) as f64 / 1024.0;
    assert!(grown_mib < 30.0, "RSS grew by {grown_mib:.1} MiB");
}

/// Refusals and silent clients are written to the access log with their reason; on a shared
/// address the global cap resets a connection before any route takes it (a connection
/// still being read to choose its route holds a place too), counted per address as
/// `runtime_max_connections` and logged with route `-`.
#[test]
fn refusals_are_logged_and_a_shared_address_counts_the_global_cap() {
    use crate::share_support::{expect_metric, route, start_shared, with_routes};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let backend = Backend::echo();
    let b = [backend.addr];
    let keys = format!("access_log = \"{}\"\npeek_timeout = \"30s\"", log.display());
    let (p, shared) = start_shared(|shared| {
        let builder = ProxyBuilder::new(Relay::Auto)
            .workers(1)
            .runtime_extra("max_connections = 2");
        with_routes(
            builder,
            &[
                route("site", shared, &b, &keys, "host = [\"a.test\"]"),
                route("rest", shared, &b, &keys, ""),
            ],
        )
        .named_route(
            "r",
            "127.0.0.1:0".parse().unwrap(),
            &b,
            &format!(
                "access_log = \"{}\"\nfirst_byte_timeout = \"300ms\"\nmax_connections_per_source = 1\n",
                log.display()
            ),
        )
    });
    let r = p.addr("r");
    let me = Ipv4Addr::LOCALHOST;
    let lines = |want: &str| -> bool {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.ends_with(want))
    };
    let wait_line = |route: &str, outcome: &str| {
        let want = format!(" {outcome}");
        let found = p.eventually(LONG, |_| {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(2) == Some(route) && l.ends_with(&want))
        });
        assert!(
            found,
            "no {outcome} line for {route}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    // Silent: reset after the timeout, logged.
    let mut silent = connect(r);
    assert!(silent.read(&mut [0u8; 1]).is_err(), "reset");
    wait_line("r", "first_byte_timeout");
    // One session per source: the second is refused, logged.
    let mut held = Vec::new();
    assert!(served_from(me, r, &mut held));
    assert!(!served_from(me, r, &mut held));
    wait_line("r", "rejected:max_connections_per_source");
    // A client still being read on the shared address takes the second place of the cap.
    let mut peeking = connect(shared);
    peeking.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // Now both places are taken: refused on the shared address before any route took it,
    // and on the plain route. (Until the worker has registered the peeking client, an
    // attempt may get in: it is closed at once, which gives its place back.)
    let refused_here = |to: SocketAddr| match attempt(me, to) {
        None => true,
        Some(mut s) => {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut one = [0u8; 1];
            matches!(s.read(&mut one), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
        }
    };
    assert!(p.eventually(LONG, |_| refused_here(shared)), "{}", p.logs());
    let l = shared.to_string();
    expect_metric(
        &p,
        "ringway_listen_rejected_total",
        &[("listen", &l), ("reason", "runtime_max_connections")],
        1.0,
    );
    wait_line("-", "rejected:runtime_max_connections");
    assert!(refused_here(r));
    wait_line("r", "rejected:runtime_max_connections");
    assert!(p.eventually(LONG, |p| rejected(p, "r", "runtime_max_connections") == 1.0));
    assert!(!lines("rejected:max_connections"));
    drop(peeking);
}

/// The limits are route keys of the admin API too: a bad value is a 400 naming the key
/// (nothing created), a good one is applied and shown back.
#[test]
fn the_admin_api_takes_and_checks_the_limits() {
    let backend = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .route(&[backend.addr], "")
        .start();
    let b = backend.addr.to_string();
    let bad = format!(
        r#"{{"listen": ["127.0.0.1:0"], "backends": ["{b}"], "max_connections_per_source": 0, "first_byte_timeout": "2h"}}"#
    );
    let (code, body) = p.admin_call("PUT", "/routes/api", Some(&bad));
    assert_eq!(code, 400, "{body}");
    for key in ["max_connections_per_source", "first_byte_timeout"] {
        assert!(body.contains(key), "{key} not named in {body}");
    }
    assert_eq!(p.admin_call("GET", "/routes/api", None).0, 404);
    let good = format!(
        r#"{{"listen": ["127.0.0.1:0"], "backends": ["{b}"], "max_connections_per_source": 1, "first_byte_timeout": "1s"}}"#
    );
    let (code, body) = p.admin_call("PUT", "/routes/api", Some(&good));
    assert_eq!(code, 201, "{body}");
    let (_, shown) = p.admin_call("GET", "/routes/api", None);
    assert!(
        shown.contains("\"max_connections_per_source\":1")
            && shown.contains("\"first_byte_timeout\":\"1s\""),
        "{shown}"
    );
    // Applied: a silent client is reset without reaching the backend.
    let api = p.addr("api");
    let mut silent = connect(api);
    let got = silent.read(&mut [0u8; 1]).map_err(|e| e.kind());
    assert_eq!(got, Err(io::ErrorKind::ConnectionReset));
    assert!(p.eventually(LONG, |p| ended(p, "api", "first_byte_timeout") == 1.0));
}

/// With `first_byte_timeout`, a client is admitted while its backend has room but connected
/// only when it speaks: if every backend filled up meanwhile (with another client that
/// spoke first), it is reset then, counted as `backends_full`, and the backend's own
/// `max_connections` is never exceeded.
#[test]
fn a_backend_full_by_the_time_a_silent_client_speaks_is_not_exceeded() {
    let (backend, accepted) = counting_echo();
    let mut b = ProxyBuilder::new(Relay::Auto).workers(1);
    b.routes.push(format!(
        "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [{{ addr = \"{}\", max_connections = 1 }}]\nfirst_byte_timeout = \"10s\"\n",
        backend.addr
    ));
    let p = b.start();
    let addr = p.addr("r0");
    // Both admitted: nobody holds the backend yet.
    let mut first = connect(addr);
    let mut second = connect(addr);
    assert!(
        p.eventually(LONG, |p| p
            .metric("ringway_connections_active{route=\"r0\"}")
            == Some(2.0)),
        "{}",
        p.admin_get("/metrics")
    );
    assert!(echoes(&mut first), "the first to speak is served");
    // The second speaks now that the backend is full: reset, counted, never connected.
    let _ = second.write_all(b"x");
    let mut one = [0u8; 1];
    assert_eq!(
        second.read(&mut one).map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "{}",
        p.logs()
    );
    assert!(
        p.eventually(LONG, |p| rejected(p, "r0", "backends_full") == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one backend connection only"
    );
    assert!(echoes(&mut first), "the first session is untouched");
}
