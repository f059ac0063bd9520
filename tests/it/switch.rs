//! Health-gated switch, drain, rollback and persisted state, against real backends that
//! answer `/health`, under load from `ringway-load`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::apps::{HttpBackend, Load, get, outcome};
use crate::support::{Backend, BlackHole, ProxyBuilder, dead_addr};

/// HTTP checks every 200 ms: one pass makes a backend up, two failures down; the rollback
/// watch checks every 200 ms and switches back after two failed rounds.
const FAST_HTTP: &str = "[route.health]\ncheck = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n[route.switch]\ndrain = \"5s\"\nrollback_window = \"30s\"\nrollback_check = \"200ms\"\nrollback_fail_threshold = 2\n";

/// True once `route r0`'s active set is `want` and the change that put it there has been
/// acknowledged by every worker and recorded (`switching` is false): the active set in
/// /status moves when a change is published, its `last_switch` record when it is applied.
fn settled_on(p: &crate::support::Proxy, want: &[std::net::SocketAddr]) -> bool {
    let want: Vec<String> = want.iter().map(ToString::to_string).collect();
    active(p) == want && p.status()["routes"][0]["switching"] == false
}

fn active(p: &crate::support::Proxy) -> Vec<String> {
    p.status()["routes"][0]["active"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// ~1,000 new connections/s for 10 s, switch at 5 s: no connection fails, and every
/// connection that starts after the switch returns reaches the new backend.
#[test]
fn switch_under_load_loses_no_connection() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let pb = ProxyBuilder::new(true).route(&[a.addr], FAST_HTTP);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    let load = Load::conn(addr, 1000, Duration::from_secs(10));
    thread::sleep(Duration::from_secs(5));
    let (code, body) = proxy.switch("r0", &[b.addr]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["switched"], true);
    assert_eq!(v["record"]["reason"], "switch");
    assert_eq!(v["record"]["to"][0], b.addr.to_string());
    assert!(v["record"]["generation"].as_u64().unwrap() >= 2);
    // Every connection started from now on reaches B.
    for i in 0..100 {
        assert_eq!(
            get(addr).as_deref(),
            Ok("B"),
            "connection {i} after the switch"
        );
    }
    let report = load.finish();
    let (ok, failed) = outcome(&report);
    assert_eq!(failed, 0, "failed connections during the switch: {report}");
    assert!(
        ok > 7_000,
        "the load ran at a fraction of its rate: {report}"
    );
    assert!(
        a.served() > 2_000 && b.served() > 2_000,
        "A {} B {}",
        a.served(),
        b.served()
    );
    assert_eq!(active(&proxy), vec![b.addr.to_string()]);
}

/// A switch to a backend that is down, black-holed or unhealthy answers 409 with the reason
/// within timeout × fall + 1 s; nothing reaches it and load on the old backend never fails.
#[test]
fn health_gate_refuses_bad_targets() {
    let a = HttpBackend::start("A");
    let sick = HttpBackend::start("sick");
    sick.health.store(500, std::sync::atomic::Ordering::SeqCst);
    let hole = BlackHole::new();
    let down = dead_addr();
    let pb = ProxyBuilder::new(true).route(&[a.addr], FAST_HTTP);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    let load = Load::conn(addr, 200, Duration::from_secs(6));
    thread::sleep(Duration::from_millis(300));
    for (target, reason) in [
        (down, "connection refused"),
        (hole.addr, "timed out"),
        (sick.addr, "HTTP 500"),
    ] {
        let t = Instant::now();
        let (code, body) = proxy.switch("r0", &[target]);
        let took = t.elapsed();
        assert_eq!(code, 409, "{target}: {body}");
        assert!(
            body.contains("health_gate_failed") && body.contains(reason),
            "{body}"
        );
        // timeout 200 ms × fall 2 + 1 s.
        assert!(
            took < Duration::from_millis(1400),
            "{target}: 409 took {took:?}"
        );
        assert_eq!(active(&proxy), vec![a.addr.to_string()]);
    }
    let report = load.finish();
    assert_eq!(outcome(&report).1, 0, "{report}");
    assert_eq!(
        sick.served(),
        0,
        "client traffic reached a backend that failed the gate"
    );
    assert_eq!(
        proxy.metric("ringway_switches_total{route=\"r0\",result=\"rejected\"}"),
        Some(3.0)
    );
    assert_eq!(
        proxy.status()["routes"][0]["history"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

/// The new backend passes the gate, then refuses connections: within fall × interval + 1 s
/// traffic is back on the old set, logged and in /status; nothing fails after that.
#[test]
fn auto_rollback_when_the_new_backend_turns_bad() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let pb = ProxyBuilder::new(false).route(&[a.addr], FAST_HTTP);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    let (code, body) = proxy.switch("r0", &[b.addr]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(addr).as_deref(), Ok("B"));
    thread::sleep(Duration::from_secs(2));
    b.refuse();
    let t = Instant::now();
    let back = proxy.eventually(Duration::from_secs(5), |p| settled_on(p, &[a.addr]));
    let took = t.elapsed();
    assert!(back, "no rollback:\n{}", proxy.logs());
    // fall 2 × interval 200 ms + 1 s (the rollback checks run at the same pace).
    assert!(took < Duration::from_millis(1400), "rollback took {took:?}");
    let st = proxy.status();
    let last = &st["routes"][0]["last_switch"];
    assert_eq!(last["reason"], "rollback", "{st}");
    assert!(
        last["detail"].as_str().unwrap().contains("failed"),
        "{last}"
    );
    assert!(proxy.logs().contains("rolling back"));
    for i in 0..50 {
        assert_eq!(
            get(addr).as_deref(),
            Ok("A"),
            "connection {i} after the rollback"
        );
    }
    assert_eq!(
        proxy.metric("ringway_switches_total{route=\"r0\",result=\"rolled_back\"}"),
        Some(1.0)
    );
}

/// Without waiting for a check: a burst of connect failures to the new set seen by the
/// workers rolls back at once.
#[test]
fn connect_failures_roll_back_without_waiting_for_a_check() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    // Checks every 10 s: only the in-band signal can act within the test's time.
    let slow = FAST_HTTP
        .replace("rollback_check = \"200ms\"", "rollback_check = \"10s\"")
        .replace("interval = \"200ms\"", "interval = \"10s\"");
    let pb = ProxyBuilder::new(true).route(&[a.addr], &slow);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    assert_eq!(proxy.switch("r0", &[b.addr]).0, 200);
    b.refuse();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) && !settled_on(&proxy, &[a.addr]) {
        let _ = get(addr);
        thread::sleep(Duration::from_millis(50));
    }
    assert!(settled_on(&proxy, &[a.addr]), "{}", proxy.logs());
    let detail = proxy.status()["routes"][0]["last_switch"]["detail"].clone();
    assert!(
        detail.as_str().unwrap().contains("could not connect"),
        "{detail}"
    );
}

/// 200 long-lived echo streams on the old backend keep flowing after the switch, then are
/// closed at the drain deadline (± 1 s) with every byte intact.
#[test]
fn old_sessions_drain_until_the_deadline() {
    let (a, b) = (Backend::echo(), Backend::echo());
    let pb = ProxyBuilder::new(true).route(&[a.addr], "[route.switch]\ndrain = \"3s\"\n");
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    let mut streams: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let exchange = |s: &mut TcpStream, round: u32| -> bool {
        let msg = format!("round {round:08} ok");
        if s.write_all(msg.as_bytes()).is_err() {
            return false;
        }
        let mut got = vec![0u8; msg.len()];
        match s.read_exact(&mut got) {
            Ok(()) => {
                assert_eq!(got, msg.as_bytes(), "bytes changed in flight");
                true
            }
            Err(_) => false,
        }
    };
    for s in &mut streams {
        assert!(exchange(s, 0));
    }
    let (code, body) = proxy.switch("r0", &[b.addr]);
    assert_eq!(code, 200, "{body}");
    let switched = Instant::now();
    assert!(proxy.eventually(
        Duration::from_secs(2),
        |p| p.status()["routes"][0]["draining"] == 200
    ));
    let mut closed_at: Vec<Option<Duration>> = vec![None; streams.len()];
    let mut round = 1;
    while closed_at.iter().any(Option::is_none) && switched.elapsed() < Duration::from_secs(6) {
        for (i, s) in streams.iter_mut().enumerate() {
            if closed_at[i].is_none() && !exchange(s, round) {
                closed_at[i] = Some(switched.elapsed());
            }
        }
        round += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let times: Vec<Duration> = closed_at
        .iter()
        .map(|c| c.expect("stream never closed"))
        .collect();
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(
        *first >= Duration::from_secs(2) && *last <= Duration::from_secs(4),
        "closed between {first:?} and {last:?} after the switch (drain 3 s)"
    );
    assert!(round > 15, "streams did not keep flowing: {round} rounds");
    assert!(proxy.eventually(Duration::from_secs(3), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"drained\"}") == Some(200.0)
    }));
    // New sessions go to B and are not touched by the deadline.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(exchange(&mut s, 1));
}

/// 50 switches in 10 s under load: no connection fails, the last accepted set is active and
/// the process's fds return to their baseline.
#[test]
fn fifty_switches_under_load() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let extra = FAST_HTTP.replace("drain = \"5s\"", "drain = \"1s\"");
    let pb = ProxyBuilder::new(true).route(&[a.addr], &extra);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    thread::sleep(Duration::from_millis(500));
    let baseline = proxy.fd_count();
    let load = Load::conn(addr, 300, Duration::from_secs(11));
    let start = Instant::now();
    let mut last = a.addr;
    for i in 0..50 {
        let to = if i % 2 == 0 { b.addr } else { a.addr };
        let (code, body) = proxy.switch("r0", &[to]);
        assert_eq!(code, 200, "switch {i}: {body}");
        last = to;
        let next = Duration::from_millis(200 * (i + 1));
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(11),
        "{:?}",
        start.elapsed()
    );
    let report = load.finish();
    assert_eq!(outcome(&report).1, 0, "{report}");
    assert_eq!(active(&proxy), vec![last.to_string()]);
    assert_eq!(
        proxy.metric("ringway_switches_total{route=\"r0\",result=\"switched\"}"),
        Some(50.0)
    );
    assert!(
        proxy.eventually(Duration::from_secs(5), |p| p.fd_count() <= baseline + 2),
        "fds {} vs baseline {baseline}",
        proxy.fd_count()
    );
}

/// A restart resumes the switched-to backend from the state file; a changed route
/// configuration wins over the file; a corrupt file is reported and start-up goes on.
#[test]
fn restart_resumes_from_the_state_file() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    // Port 0 each time: the route is the same route wherever it listens.
    let start = |extra: &str| {
        ProxyBuilder::new(true)
            .state_file(&state)
            .route(&[a.addr], extra)
            .start()
    };
    let mut p = start("");
    assert_eq!(p.switch("r0", &[b.addr]).0, 200);
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
    drop(p);

    let mut p = start("");
    assert_eq!(active(&p), vec![b.addr.to_string()], "{}", p.logs());
    assert_eq!(get(p.addr("r0")).as_deref(), Ok("B"));
    assert_eq!(
        p.status()["routes"][0]["last_switch"]["to"][0],
        b.addr.to_string()
    );
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
    drop(p);

    // The route's configuration changed: its configured backends win.
    let mut p = start("connect_timeout = \"2s\"\n");
    assert_eq!(active(&p), vec![a.addr.to_string()]);
    assert!(p.logs().contains("configuration changed"), "{}", p.logs());
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
    drop(p);

    std::fs::write(&state, "{ this is not json").unwrap();
    let p = start("");
    assert_eq!(active(&p), vec![a.addr.to_string()]);
    assert!(p.logs().contains("state file is unusable"), "{}", p.logs());
    assert_eq!(get(p.addr("r0")).as_deref(), Ok("A"));
}

/// A manual rollback returns to the previous set; with nothing to roll back to it is a 409.
#[test]
fn manual_rollback() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let pb = ProxyBuilder::new(true).route(&[a.addr], FAST_HTTP);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    let (code, body) = proxy.admin_call("POST", "/routes/r0/rollback", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("nothing_to_roll_back"));
    assert_eq!(proxy.switch("r0", &[b.addr]).0, 200);
    let (code, body) = proxy.admin_call("POST", "/routes/r0/rollback", Some("{}"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("manual_rollback"));
    assert_eq!(get(addr).as_deref(), Ok("A"));
    let _: SocketAddr = a.addr;
}

/// A rollback that comes due while another switch's gate is running is decided by that gate:
/// the gate fails, so the route rolls back to the set before the broken one.
#[test]
fn rollback_due_during_a_gate_happens_when_the_gate_fails() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let hole = BlackHole::new();
    // Gate to the black hole: 3 probes × 1 s; the watch on B: 2 failed rounds × 200 ms.
    let cfg = "[route.health]\ncheck = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 3\n[route.switch]\nrollback_window = \"30s\"\nrollback_check = \"200ms\"\nrollback_fail_threshold = 2\nrollback_connect_errors = 0\n";
    let pb = ProxyBuilder::new(true).route(&[a.addr], cfg);
    let proxy = pb.start();
    let addr = proxy.addr("r0");
    assert_eq!(proxy.switch("r0", &[b.addr]).0, 200);
    b.refuse();
    let (code, body) = proxy.switch("r0", &[hole.addr]);
    assert_eq!(code, 409, "{body}");
    assert!(proxy.logs().contains("rollback due"), "{}", proxy.logs());
    assert!(
        proxy.eventually(Duration::from_secs(2), |p| settled_on(p, &[a.addr])),
        "{}",
        proxy.logs()
    );
    let last = proxy.status()["routes"][0]["last_switch"].clone();
    assert_eq!(last["reason"], "rollback", "{last}");
    assert_eq!(get(addr).as_deref(), Ok("A"));
}
