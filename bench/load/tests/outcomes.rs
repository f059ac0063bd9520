//! ringway-load against real servers on 127.0.0.1 that behave well and badly: every outcome
//! must be counted as what it is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;

/// Starts a server whose every connection is handled by `f` on its own thread.
fn server(f: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || f(s));
        }
    });
    addr
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Echoes every byte plus one: the answer is always wrong.
fn bad_echo(mut s: TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        buf[0] = buf[0].wrapping_add(1);
        if s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Reads the request, then resets the connection.
fn resetter(mut s: TcpStream) {
    let mut buf = [0u8; 1024];
    let _ = s.read(&mut buf);
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

/// Minimal HTTP server (requests end at the blank line; GET only): `/` answers 200 "ok",
/// anything else 500.
fn http(mut s: TcpStream) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..end]).into_owned();
            req.drain(..end + 4);
            let close = head.to_ascii_lowercase().contains("connection: close");
            let resp: &[u8] = if head.starts_with("GET / ") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            } else {
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
            };
            if s.write_all(resp).is_err() || close {
                return;
            }
        }
    }
}

/// Accepts and closes at once.
fn closer(s: TcpStream) {
    drop(s);
}

fn load(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args(args)
        .output()
        .expect("run ringway-load");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}); exit {code}; stderr: {stderr}"));
    (code, v)
}

fn n(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn keepalive_echo_closed_loop_all_ok() {
    let t = server(echo).to_string();
    let (code, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-x",
        "echo",
        "--size",
        "1000",
        "-c",
        "4",
        "-d",
        "500ms",
        "--fail-on-error",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    assert!(n(&v, "outcomes.ok") > 50, "{v}");
    assert_eq!(n(&v, "connections_opened"), 4, "{v}");
    assert_eq!(n(&v, "latency_us.count"), n(&v, "outcomes.ok"), "{v}");
}

#[test]
fn keepalive_open_loop_http_keeps_to_the_rate() {
    let t = server(http).to_string();
    let (code, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-c",
        "2",
        "-r",
        "200",
        "-d",
        "1s",
        "--expect-body",
        "ok",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    // The schedule admits at most rate × duration exchanges (+1 per connection for the edge).
    let ok = n(&v, "outcomes.ok");
    assert!(ok > 0 && ok <= 202, "{v}");
}

#[test]
fn conn_mode_new_connection_per_exchange() {
    let t = server(http).to_string();
    let (code, v) = load(&[
        "-t",
        &t,
        "-m",
        "conn",
        "-r",
        "300",
        "-d",
        "500ms",
        "--threads",
        "2",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    let ok = n(&v, "outcomes.ok");
    assert!(ok > 0 && ok <= 152, "{v}");
    assert_eq!(n(&v, "connections_opened"), ok, "{v}");
}

#[test]
fn http_error_status_and_wrong_body_are_wrong_bytes() {
    let t = server(http).to_string();
    let (code, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-c",
        "1",
        "-d",
        "200ms",
        "--path",
        "/x",
        "--fail-on-error",
    ]);
    assert_eq!(code, 1, "{v}");
    assert!(
        n(&v, "outcomes.wrong_bytes") > 0 && n(&v, "outcomes.ok") == 0,
        "{v}"
    );
    let (_, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-c",
        "1",
        "-d",
        "200ms",
        "--expect-body",
        "no",
    ]);
    assert!(
        n(&v, "outcomes.wrong_bytes") > 0 && n(&v, "outcomes.ok") == 0,
        "{v}"
    );
}

#[test]
fn bad_echo_is_wrong_bytes() {
    let t = server(bad_echo).to_string();
    let (_, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-x",
        "echo",
        "-c",
        "1",
        "-d",
        "200ms",
    ]);
    assert!(
        n(&v, "outcomes.wrong_bytes") > 0 && n(&v, "outcomes.ok") == 0,
        "{v}"
    );
}

#[test]
fn refused_is_counted() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let t = addr.to_string();
    let (code, v) = load(&[
        "-t",
        &t,
        "-m",
        "conn",
        "-r",
        "100",
        "-d",
        "200ms",
        "--fail-on-error",
    ]);
    assert_eq!(code, 1, "{v}");
    assert!(n(&v, "outcomes.refused") > 0, "{v}");
    assert_eq!(n(&v, "outcomes.refused"), n(&v, "exchanges"), "{v}");
}

#[test]
fn reset_is_counted() {
    let t = server(resetter).to_string();
    let (_, v) = load(&["-t", &t, "-m", "conn", "-r", "100", "-d", "200ms"]);
    assert!(n(&v, "outcomes.reset") > 0, "{v}");
    assert_eq!(n(&v, "outcomes.ok"), 0, "{v}");
}

#[test]
fn black_hole_times_out() {
    // A listener nobody accepts from: connects complete from the backlog, nothing answers.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let t = l.local_addr().expect("addr").to_string();
    let (_, v) = load(&[
        "-t",
        &t,
        "-m",
        "keepalive",
        "-c",
        "2",
        "-d",
        "300ms",
        "--timeout",
        "100ms",
    ]);
    assert!(n(&v, "outcomes.timeout") >= 2, "{v}");
    assert_eq!(n(&v, "outcomes.ok"), 0, "{v}");
    drop(l);
}

#[test]
fn idle_holds_connections_and_sees_closes() {
    let t = server(echo).to_string();
    let (_, v) = load(&["-t", &t, "-m", "idle", "-c", "20", "-d", "300ms"]);
    assert_eq!(n(&v, "held"), 20, "{v}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    let t = server(closer).to_string();
    let (_, v) = load(&["-t", &t, "-m", "idle", "-c", "5", "-d", "300ms"]);
    assert_eq!(n(&v, "held"), 0, "{v}");
    assert_eq!(n(&v, "outcomes.wrong_bytes"), 5, "{v}");
}

#[test]
fn bad_arguments_exit_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args(["-t", "127.0.0.1:1", "-m", "conn"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}
