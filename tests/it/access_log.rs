//! The access log: a line per finished session for each outcome, in text and JSON, with the
//! client, backend and byte counts as they really were; reopened on SIGUSR1; and a writer
//! that cannot write (a FIFO nobody reads) costs lines, counted, never relay throughput.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::share_support::{route, start_shared, with_routes};
use crate::support::*;

/// Waits (up to 20 s) until `path` holds at least `n` lines; returns them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_string).collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, waited for {n}:\n{text}",
            path.display(),
            got.len()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// One text line's ten fields.
#[derive(Debug)]
struct Line {
    client: String,
    route: String,
    listen: String,
    backend: String,
    to_backend: u64,
    to_client: u64,
    duration_ms: f64,
    connect_ms: Option<f64>,
    outcome: String,
}

fn parse(line: &str) -> Line {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 10, "ten fields: {line}");
    // RFC 3339, UTC, milliseconds: 2026-11-29T18:02:03.456Z
    assert!(
        f[0].len() == 24 && f[0].ends_with('Z') && f[0].as_bytes()[19] == b'.',
        "time: {line}"
    );
    Line {
        client: f[1].into(),
        route: f[2].into(),
        listen: f[3].into(),
        backend: f[4].into(),
        to_backend: f[5].parse().unwrap(),
        to_client: f[6].parse().unwrap(),
        duration_ms: f[7].parse().unwrap(),
        connect_ms: (f[8] != "-").then(|| f[8].parse().unwrap()),
        outcome: f[9].into(),
    }
}

/// The one line of `route` with `outcome` (waiting for it).
fn line_of(path: &Path, route: &str, outcome: &str) -> Line {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<Line> = text
            .lines()
            .map(parse)
            .filter(|l| l.route == route && l.outcome == outcome)
            .collect();
        if let Some(l) = found.into_iter().next() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {outcome} line for {route} in:\n{text}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `n` bytes, half-closes, reads everything back (an echo backend): a clean session.
fn clean_exchange(addr: SocketAddr, n: usize) -> SocketAddr {
    let mut s = connect(addr);
    let me = s.local_addr().unwrap();
    s.write_all(&vec![b'x'; n]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap().len(), n);
    me
}

/// A line per outcome: clean (client, listen, backend and both byte counts exact),
/// connect_failed (refused backend), client_reset, backend_reset, idle_timeout,
/// rejected at max_connections, drained; several routes writing one file.
#[test]
fn a_text_line_for_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let keys = format!("access_log = \"{}\"\n", log.display());
    let echo = Backend::echo();
    let other = Backend::echo();
    let resetter = Backend::start(|mut s| {
        let mut buf = [0u8; 5];
        let _ = s.read_exact(&mut buf);
        reset(s);
    });
    let dead = dead_addr();
    let p = ProxyBuilder::new(Relay::Auto)
        .workers(1)
        .route(&[echo.addr], &keys)
        .route(&[dead], &keys)
        .route(&[resetter.addr], &keys)
        .route(&[echo.addr], &format!("{keys}idle_timeout = \"300ms\"\n"))
        .route(&[echo.addr], &format!("{keys}max_connections = 1\n"))
        .route(
            &[echo.addr],
            &format!("{keys}[route.switch]\ndrain = \"300ms\"\n"),
        )
        .start();

    // clean
    let me = clean_exchange(p.addr("r0"), 1000);
    let l = line_of(&log, "r0", "clean");
    assert_eq!(l.client, me.to_string());
    assert_eq!(l.listen, p.addr("r0").to_string());
    assert_eq!(l.backend, echo.addr.to_string());
    assert_eq!((l.to_backend, l.to_client), (1000, 1000));
    assert!(l.connect_ms.is_some_and(|c| c <= l.duration_ms), "{l:?}");

    // connect_failed: the backend refuses
    assert!(connect_and_read(p.addr("r1")).is_err());
    let l = line_of(&log, "r1", "connect_failed");
    assert_eq!((l.backend.as_str(), l.connect_ms), ("-", None));

    // client_reset: connected (an echo came back), then the client resets
    let mut s = connect(p.addr("r0"));
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    reset(s);
    let l = line_of(&log, "r0", "client_reset");
    assert_eq!(l.to_backend, 5);

    // backend_reset
    let mut s = connect(p.addr("r2"));
    s.write_all(b"hello").unwrap();
    assert!(
        read_to_end(&mut s).is_err(),
        "the backend's reset reaches the client"
    );
    let l = line_of(&log, "r2", "backend_reset");
    assert_eq!((l.backend, l.to_backend), (resetter.addr.to_string(), 5));

    // idle_timeout
    let mut s = connect(p.addr("r3"));
    s.write_all(b"ping").unwrap();
    let _ = read_to_end(&mut s);
    let l = line_of(&log, "r3", "idle_timeout");
    assert!(l.duration_ms >= 300.0, "{l:?}");

    // rejected at max_connections (one worker: its share is the whole limit)
    let mut held = connect(p.addr("r4"));
    held.write_all(b"hold").unwrap();
    held.read_exact(&mut [0u8; 4]).unwrap();
    let refused = connect_and_read(p.addr("r4"));
    assert!(refused.is_err(), "over the limit: reset");
    let l = line_of(&log, "r4", "rejected:max_connections");
    assert_eq!((l.backend.as_str(), l.to_backend), ("-", 0));
    drop(held);

    // drained: a session on the old backend outlives the drain after a switch
    let mut s = connect(p.addr("r5"));
    s.write_all(b"old").unwrap();
    s.read_exact(&mut [0u8; 3]).unwrap();
    let (code, body) = p.switch("r5", &[other.addr]);
    assert_eq!(code, 200, "{body}");
    let _ = read_to_end(&mut s);
    let l = line_of(&log, "r5", "drained");
    assert_eq!((l.backend, l.to_backend), (echo.addr.to_string(), 3));
}

/// JSON lines parse back with the same fields; on a shared address the peeked bytes count
/// to the backend, and a connection no route takes is logged with route null and its reason.
#[test]
fn json_lines_parse_back_and_shared_address_refusals_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let keys = format!(
        "access_log = {{ path = \"{}\", format = \"json\" }}",
        log.display()
    );
    let echo = Backend::echo();
    let (_p, shared) = start_shared(|addr| {
        let routes = [
            route(
                "site",
                addr,
                &[echo.addr],
                &keys,
                "host = [\"example.com\"]",
            ),
            route(
                "api",
                addr,
                &[echo.addr],
                &keys,
                "host = [\"api.example.com\"]",
            ),
        ];
        with_routes(ProxyBuilder::new(Relay::Auto).workers(1), &routes)
    });
    let head = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\nand a body";
    let mut s = connect(shared);
    let me = s.local_addr().unwrap();
    s.write_all(head).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), head);

    let mut s = connect(shared);
    let stranger = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: other.org\r\n\r\n")
        .unwrap();
    assert!(read_to_end(&mut s).is_err(), "no route: reset");

    let got = lines(&log, 2);
    let docs: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let clean = docs
        .iter()
        .find(|d| d["outcome"] == "clean")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(clean["client"], me.to_string());
    assert_eq!(clean["route"], "site");
    assert_eq!(clean["listen"], shared.to_string());
    assert_eq!(clean["backend"], echo.addr.to_string());
    assert_eq!(clean["bytes_to_backend"], head.len());
    assert_eq!(clean["bytes_to_client"], head.len());
    assert!(clean["duration_ms"].as_f64().is_some());
    assert!(clean["connect_ms"].as_f64().is_some());
    assert!(clean["reason"].is_null());
    assert!(clean["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let refused = docs
        .iter()
        .find(|d| d["outcome"] == "rejected")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(refused["reason"], "no_match");
    assert_eq!(refused["client"], stranger.to_string());
    assert!(refused["route"].is_null() && refused["backend"].is_null());
    // Two routes write the file: the refusal is logged once.
    assert_eq!(
        docs.iter().filter(|d| d["outcome"] == "rejected").count(),
        1
    );
}

/// logrotate: after the file is renamed and SIGUSR1 sent, the next lines go to a new file
/// at the configured path; the renamed one keeps what it had.
#[test]
fn sigusr1_reopens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    let echo = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .route(
            &[echo.addr],
            &format!("access_log = \"{}\"\n", log.display()),
        )
        .start();
    clean_exchange(p.addr("r0"), 10);
    assert_eq!(lines(&log, 1).len(), 1);
    let rotated = dir.path().join("web.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    p.signal(libc::SIGUSR1);
    // The writer says so once it has closed the file.
    assert!(
        p.eventually(Duration::from_secs(10), |p| p
            .logs()
            .contains("access log files reopened")),
        "{}",
        p.logs()
    );
    clean_exchange(p.addr("r0"), 20);
    let now = lines(&log, 1);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(parse(&now[0]).to_backend, 20);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert_eq!(parse(old.trim_end()).to_backend, 10);
    // SIGUSR1 did not end the process: it still answers.
    assert!(p.status()["routes"].is_array());
}

/// A FIFO nobody reads, with a small pipe.
fn stuck_fifo(path: &Path) -> std::fs::File {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Opened for reading without blocking (so ringway's open for writing succeeds), then
    // never read until the end.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) F_SETPIPE_SZ on an fd this function owns; no memory is passed.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    reader
}

/// 20 MiB through the proxy, both ways checked; how long it took.
fn transfer_20mib(addr: SocketAddr) -> Duration {
    const N: usize = 20 << 20;
    let t = Instant::now();
    let client = connect(addr);
    let mut w = client.try_clone().unwrap();
    let sender = thread::spawn(move || send_pattern(&mut w, 7, N).unwrap());
    let mut r = client;
    assert_eq!(check_pattern(&mut r, 7).unwrap(), N);
    sender.join().unwrap();
    t.elapsed()
}

/// A writer that cannot write (its file is a FIFO nobody reads): the workers' queues fill,
/// lines are dropped and counted, sessions and a 20 MiB transfer go on as before; once the
/// FIFO is read, every session is either a line or a drop.
#[test]
fn a_stuck_writer_drops_and_counts_lines_and_never_slows_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let mut reader = stuck_fifo(&fifo);
    let echo = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .workers(1)
        .runtime_extra("access_log_queue = 4")
        .route(
            &[echo.addr],
            &format!("access_log = \"{}\"\n", fifo.display()),
        )
        .start();
    let addr = p.addr("r0");
    let before = transfer_20mib(addr);
    let dropped = "ringway_access_log_dropped_total{route=\"r0\"}";
    let mut sessions = 1;
    // The pipe (4 KiB) and the writer's buffer (64 KiB) hold ~600 lines; then it blocks.
    while sessions < 3000 {
        clean_exchange(addr, 1);
        sessions += 1;
        if sessions % 500 == 0 && p.metric(dropped).is_some_and(|d| d > 0.0) {
            break;
        }
    }
    assert!(
        p.eventually(Duration::from_secs(5), |p| p
            .metric(dropped)
            .is_some_and(|d| d > 0.0)),
        "no drop counted after {sessions} sessions"
    );
    let during = transfer_20mib(addr);
    sessions += 1;
    eprintln!("20 MiB: {before:?} with the writer free, {during:?} with it stuck");
    assert!(
        during < Duration::from_secs(30),
        "a stuck access log slowed the relay: {during:?} (before: {before:?})"
    );
    // Unblock: read the FIFO; every session is now a line or a drop.
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut buf = [0u8; 65536];
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => text.extend_from_slice(&buf[..n]),
            _ => thread::sleep(Duration::from_millis(10)),
        }
        let lines = text.iter().filter(|b| **b == b'\n').count();
        let d = p.metric(dropped).unwrap_or(0.0) as usize;
        if lines + d == sessions {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lines} lines + {d} dropped != {sessions} sessions"
        );
    }
    let text = String::from_utf8(text).unwrap();
    for l in text.lines() {
        assert_eq!(parse(l).outcome, "clean");
    }
    eprintln!(
        "{sessions} sessions: {} lines written, {} dropped",
        text.lines().count(),
        sessions - text.lines().count()
    );
}

/// A reload may add an access log to a route (the writer starts then) and move it to
/// another file and format; the route's next sessions follow, the old file keeps its lines.
#[test]
fn a_reload_adds_and_moves_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let (text_log, json_log) = (dir.path().join("a.log"), dir.path().join("b.json"));
    let echo = Backend::echo();
    let build = |keys: &str| ProxyBuilder::new(Relay::Auto).route(&[echo.addr], keys);
    let p = build("").start();
    let addr = p.addr("r0");
    clean_exchange(addr, 1);

    p.rewrite(&build(&format!(
        "access_log = \"{}\"\n",
        text_log.display()
    )));
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    clean_exchange(addr, 2);
    let got = lines(&text_log, 1);
    assert_eq!(parse(&got[0]).to_backend, 2);

    p.rewrite(&build(&format!(
        "access_log = {{ path = \"{}\", format = \"json\" }}\n",
        json_log.display()
    )));
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    clean_exchange(addr, 3);
    let got = lines(&json_log, 1);
    let doc: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(
        (doc["route"].as_str(), doc["bytes_to_backend"].as_u64()),
        (Some("r0"), Some(3))
    );
    assert_eq!(
        std::fs::read_to_string(&text_log).unwrap().lines().count(),
        1
    );
}
