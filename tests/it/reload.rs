//! Configuration reload: all or nothing, per-route diff, every way a file can be bad,
//! SIGHUP, the file watcher, systemd notifications, `ringway check` against a live port,
//! `ringway config dump`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{HttpBackend, Load, get, outcome};
use crate::support::*;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

fn routes(p: &Proxy) -> String {
    let (code, body) = p.admin_call("GET", "/routes", None);
    assert_eq!(code, 200, "{body}");
    body
}

fn failed_reloads(p: &Proxy) -> f64 {
    p.metric("ringway_reloads_total{result=\"failed\"}")
        .unwrap_or(-1.0)
}

/// An echo backend that first says its one-letter name.
fn named_echo(name: &'static str) -> Backend {
    Backend::echo_after(name.as_bytes())
}

/// Connects to `addr` and reads the backend's one-letter name.
fn open(addr: SocketAddr) -> (TcpStream, String) {
    let mut c = connect(addr);
    let mut name = [0u8; 1];
    c.read_exact(&mut name).unwrap();
    (c, String::from_utf8_lossy(&name).into_owned())
}

/// Sends `n` pattern bytes on an open echo session and checks they all come back.
fn exchange(c: &mut TcpStream, seed: u64, n: usize) {
    let mut p = Pattern::new(seed);
    let mut out = vec![0u8; n];
    p.fill(&mut out);
    c.write_all(&out).unwrap();
    let mut back = vec![0u8; n];
    c.read_exact(&mut back).unwrap();
    assert!(back == out, "bytes changed on the way");
}

/// Every kind of bad file, each while traffic flows: rejected with the error (file, line,
/// key, fix), the running configuration exactly as it was (`GET /routes` byte-identical),
/// the failure in `/status`, in `ringway_reloads_total{result="failed"}` and in the log;
/// same process throughout; not one failed connection.
#[test]
fn every_bad_file_is_rejected_and_changes_nothing() {
    let a = HttpBackend::start("A");
    let b = ProxyBuilder::new(true)
        .route(&[a.addr], "")
        .route(&[a.addr], "");
    let p = b.start();
    let pid = p.pid();
    let good = std::fs::read_to_string(&p.config).unwrap();
    let load = Load::conn(p.addr("r0"), 200, Duration::from_secs(6));
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = outside.local_addr().unwrap();
    let route = |extra: &str| {
        format!(
            "{good}\n[[route]]\nname = \"new\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [\"{}\"]\n{extra}",
            a.addr
        )
    };
    // Cut inside a quoted address: what an editor leaves half-way through a save.
    let cut = good.rfind("\"127.0.0.1:").unwrap() + 6;
    let mut not_utf8 = good.clone().into_bytes();
    not_utf8.extend_from_slice(b"\n# caf\xe9\n");
    let cases: Vec<(&str, Option<Vec<u8>>, u16, &str)> = vec![
        ("syntax error", Some(format!("{good}\n[[route]\n").into_bytes()), 400, "(syntax)"),
        ("unknown key", Some(route("colour = \"blue\"\n").into_bytes()), 400, "colour"),
        ("wrong type", Some(route("connect_timeout = 5\n").into_bytes()), 400, "(value)"),
        (
            "address held by another process",
            Some(format!("{good}\n[[route]]\nname = \"new\"\nlisten = [\"{held}\"]\nbackends = [\"{}\"]\n", a.addr).into_bytes()),
            409,
            "held by another process",
        ),
        ("half-written file", Some(good.as_bytes()[..cut].to_vec()), 400, "ringway.toml:"),
        ("replaced by a symlink to a device", None, 400, "not a regular file"),
        ("replaced by a dangling symlink", None, 400, "cannot read the file"),
        ("deleted", None, 400, "cannot read the file"),
        ("a 10 MB file", Some(vec![b'#'; 10 << 20]), 400, "over the"),
        ("bytes that are not UTF-8", Some(not_utf8), 400, "not UTF-8"),
    ];
    let mut failures = failed_reloads(&p);
    assert_eq!(failures, 0.0);
    for (what, bytes, status, needle) in cases {
        let before = routes(&p);
        let _ = std::fs::remove_file(&p.config);
        match (what, bytes) {
            (_, Some(bytes)) => {
                if what == "half-written file" {
                    // Written in place, not renamed: a reader sees the partial file.
                    std::fs::write(&p.config, bytes).unwrap();
                } else {
                    p.write_config(&bytes);
                }
            }
            ("replaced by a symlink to a device", None) => {
                std::os::unix::fs::symlink("/dev/zero", &p.config).unwrap()
            }
            ("replaced by a dangling symlink", None) => {
                std::os::unix::fs::symlink(p.dir.path().join("gone.toml"), &p.config).unwrap()
            }
            _ => {}
        }
        let (code, body) = p.reload();
        assert_eq!(code, status, "{what}: {body}");
        let v = json_of(&body);
        let message = v["message"].as_str().unwrap_or("");
        assert!(
            message.contains(needle),
            "{what}: {needle:?} not in {message}"
        );
        if status == 400 {
            assert_eq!(v["error"], "invalid_config", "{what}");
            assert!(
                !v["problems"][0]["fix"].as_str().unwrap_or("").is_empty(),
                "{what}: {body}"
            );
        }
        assert_eq!(routes(&p), before, "{what}: the running routes changed");
        failures += 1.0;
        assert_eq!(failed_reloads(&p), failures, "{what}");
        let last = p.status()["last_reload"].clone();
        assert_eq!(last["result"], "failed", "{what}: {last}");
        assert!(
            last["error"].as_str().unwrap_or("").contains(needle),
            "{what}: {last}"
        );
        assert_eq!(p.pid(), pid);
        let _ = std::fs::remove_file(&p.config);
        p.write_config(good.as_bytes());
    }
    assert!(
        p.logs()
            .contains("reload failed; the running configuration stays in force")
    );
    let report = load.finish();
    assert_eq!(outcome(&report).1, 0, "{report}");
    // The good file again: a reload that changes nothing, and says so.
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["generation"], Value::Null);
    assert_eq!(v["unchanged"], json!(["r0", "r1"]));
}

/// A file with nine good route changes and one bad one applies none of them.
#[test]
fn nine_good_changes_and_one_bad_apply_none() {
    let a = HttpBackend::start("A");
    let mut b = ProxyBuilder::new(true);
    for _ in 0..10 {
        b = b.route(&[a.addr], "");
    }
    let p = b.start();
    let before = routes(&p);
    let mut changed = ProxyBuilder::new(true);
    for i in 0..10 {
        let extra = if i == 7 {
            "connect_timeout = \"2 fortnights\"\n"
        } else {
            "connect_timeout = \"3s\"\n"
        };
        changed = changed.route(&[a.addr], extra);
    }
    p.rewrite(&changed);
    let (code, body) = p.reload();
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("route[7] (\\\"r7\\\").connect_timeout"),
        "{body}"
    );
    assert_eq!(routes(&p), before);
}

/// A good reload touches only what changed: a changed route's open session drains (closed
/// at its drain deadline) while new sessions go to its new backend; the other route's open
/// session carries bytes intact throughout; a route the API created is left alone; the
/// result lists each route by what happened to it.
#[test]
fn a_reload_touches_only_what_changed() {
    let (x, y, z) = (named_echo("X"), named_echo("Y"), named_echo("Z"));
    let b = ProxyBuilder::new(true)
        .route(&[x.addr], "")
        .route(&[y.addr], "")
        .route(&[x.addr], "");
    let p = b.start();
    let (r0, r1) = (p.addr("r0"), p.addr("r1"));
    let (code, _) = p.admin_call(
        "PUT",
        "/routes/api",
        Some(&json!({"listen": ["127.0.0.1:0"], "backends": [x.addr.to_string()]}).to_string()),
    );
    assert_eq!(code, 201);
    let (mut s0, at0) = open(r0);
    let (mut s1, at1) = open(r1);
    assert_eq!((at0.as_str(), at1.as_str()), ("X", "Y"));
    exchange(&mut s0, 1, 256 << 10);
    exchange(&mut s1, 2, 64 << 10);
    // r1 moves to Z and drains within 2 s; r2 goes; r3 comes; r0 stays as it is.
    let next = ProxyBuilder::new(true)
        .route(&[x.addr], "")
        .route(&[z.addr], "[route.switch]\ndrain = \"2s\"\n")
        .named_route("r3", "127.0.0.1:0".parse().unwrap(), &[x.addr], "");
    p.rewrite(&next);
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["unchanged"], json!(["r0"]), "{v}");
    assert_eq!(v["changed"], json!(["r1"]), "{v}");
    assert_eq!(v["removed"], json!(["r2"]), "{v}");
    assert_eq!(v["added"], json!(["r3"]), "{v}");
    assert_eq!(v["api_routes"], json!(["api"]), "{v}");
    assert!(v["generation"].as_u64().is_some());
    // New sessions of r1 land on Z; the one opened before keeps Y until the drain deadline.
    assert_eq!(open(r1).1, "Z");
    exchange(&mut s1, 3, 16 << 10);
    exchange(&mut s0, 4, 256 << 10);
    s1.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(s1.read(&mut buf), Ok(0) | Err(_)),
        "r1's old session drained"
    );
    assert!(p.eventually(Duration::from_secs(5), |p| {
        p.metric("ringway_sessions_ended_total{route=\"r1\",outcome=\"drained\"}") == Some(1.0)
    }));
    // r0's session never noticed: bytes intact, still open.
    exchange(&mut s0, 5, 1 << 20);
    assert_eq!(
        p.metric("ringway_sessions_ended_total{route=\"r0\",outcome=\"drained\"}"),
        Some(0.0)
    );
    assert_eq!(open(p.addr("r3")).1, "X");
    assert_eq!(get_origin(&p, "api"), "api");
    s0.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_end(&mut s0).is_ok());
}

fn get_origin(p: &Proxy, route: &str) -> String {
    let (code, body) = p.admin_call("GET", &format!("/routes/{route}"), None);
    assert_eq!(code, 200, "{body}");
    json_of(&body)["origin"].as_str().unwrap().to_string()
}

/// SIGHUP reloads; `runtime.watch_config` reloads when the file changes (a bad save is
/// refused, the next good one applied); systemd hears RELOADING=1 then READY=1 around each,
/// and STOPPING=1 at the end.
#[test]
fn sighup_watch_config_and_notifications() {
    let a = HttpBackend::start("A");
    let base = ProxyBuilder::new(true).route(&[a.addr], "");
    let b = base.clone().runtime_extra("watch_config = true");
    let mut p = b.clone().start();
    assert!(
        p.logs().contains("watching the configuration file"),
        "{}",
        p.logs()
    );
    // Another file changing in the directory, the configuration untouched: no reload.
    std::fs::write(p.dir.path().join("other.txt"), "x").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(p.status()["last_reload"], Value::Null, "{}", p.logs());
    let has = |p: &Proxy, name: &str| routes(p).contains(&format!("\"name\":\"{name}\""));
    let trigger = |p: &Proxy| p.status()["last_reload"]["trigger"].clone();

    // The watcher: a new route appears by itself.
    p.rewrite(&b.clone().route(&[a.addr], ""));
    assert!(
        p.eventually(Duration::from_secs(10), |p| has(p, "r1")),
        "{}",
        p.logs()
    );
    assert_eq!(trigger(&p), "watch");
    assert!(p.wait_notified("RELOADING=1", Duration::from_secs(5)));
    assert!(p.wait_notified("READY=1", Duration::from_secs(5)));
    assert_eq!(get(p.addr("r1")).as_deref(), Ok("A"));
    // A bad save is refused by the watcher's reload too; the routes stay.
    let before = routes(&p);
    p.write_config(b"[[route]\n");
    assert!(p.eventually(Duration::from_secs(10), |p| {
        p.status()["last_reload"]["result"] == "failed"
    }));
    assert_eq!(routes(&p), before);

    // SIGHUP, with the watcher off (the reload turns it off).
    p.rewrite(&base.clone().route(&[a.addr], "").route(&[a.addr], ""));
    assert!(
        p.eventually(Duration::from_secs(10), |p| has(p, "r2")),
        "{}",
        p.logs()
    );
    assert!(
        p.logs()
            .contains("no longer watching the configuration file")
    );
    p.rewrite(&base);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        has(&p, "r2"),
        "not watching any more: no reload without a signal"
    );
    p.signal(libc::SIGHUP);
    assert!(p.eventually(Duration::from_secs(10), |p| !has(p, "r2") && !has(p, "r1")));
    assert_eq!(trigger(&p), "signal");
    assert_eq!(
        p.child.try_wait().unwrap(),
        None,
        "SIGHUP does not stop ringway"
    );
    p.sigterm();
    assert!(p.wait_notified("STOPPING=1", Duration::from_secs(5)));
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

/// `ringway check` run 100 times against the live configuration file while 1,000
/// connections/s hit its port: it validates without opening a socket on that port, so not
/// one connection is reset or refused.
#[test]
fn check_against_the_live_configuration_touches_no_port() {
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true).route(&[a.addr], "").start();
    // The live file names the bound port, as an operator's file would.
    let r0 = p.addr("r0");
    let live = std::fs::read_to_string(&p.config).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"{r0}\"]"),
    );
    p.write_config(live.as_bytes());
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    assert_eq!(p.addr("r0"), r0);
    let load = Load::conn(r0, 1000, Duration::from_secs(5));
    let config = p.config.to_str().unwrap().to_string();
    for i in 0..100 {
        let (code, _, err) = ringway(&["check", "-c", &config]);
        assert_eq!(code, 0, "check {i}: {err}");
    }
    let report = load.finish();
    let o = &report["outcomes"];
    assert_eq!(
        (o["reset"].as_u64(), o["refused"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(outcome(&report).1, 0, "{report}");
}

/// `ringway config dump` prints the effective configuration, API routes included, as TOML
/// that `ringway check` accepts; put into the file and reloaded, the API route is adopted by
/// the file (same address, same backends, its sessions untouched) and the API can no longer
/// write it.
#[test]
fn config_dump_moves_api_routes_into_the_file() {
    let x = named_echo("X");
    let p = ProxyBuilder::new(true).route(&[x.addr], "").start();
    let (code, body) = p.admin_call(
        "PUT",
        "/routes/api",
        Some(&json!({"listen": ["127.0.0.1:0"], "backends": [x.addr.to_string()]}).to_string()),
    );
    assert_eq!(code, 201, "{body}");
    let api = p.addr("api");
    let (mut s, at) = open(api);
    assert_eq!(at, "X");
    let (code, dump, err) = ringway(&["config", "dump", "-c", p.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        dump.contains("# origin: api\n[[route]]\nname = \"api\""),
        "{dump}"
    );
    let file = p.dir.path().join("dump.toml");
    std::fs::write(&file, &dump).unwrap();
    let (code, normalized, err) = ringway(&["check", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}\n{dump}");
    assert!(normalized.contains("name = \"api\""));
    // The dump hides the inline token; keep the harness's one for this file.
    let dump = dump.replace(
        "# token: set in the file (not shown)",
        &format!("token = \"{TOKEN}\""),
    );
    p.write_config(dump.as_bytes());
    let (code, body) = p.reload();
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["adopted"], json!(["api"]), "{v}");
    assert_eq!(v["bound"], json!([]), "no address was bound again: {v}");
    assert_eq!(get_origin(&p, "api"), "file");
    assert_eq!(p.addr("api"), api);
    exchange(&mut s, 9, 64 << 10);
    let (code, body) = p.admin_call("DELETE", "/routes/api", None);
    assert_eq!(code, 409, "{body}");
}
