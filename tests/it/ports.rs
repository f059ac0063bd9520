//! Listen addresses at runtime: bound only when new, never twice, released when their last
//! route goes, and released without resetting a connection the kernel already queued.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{HttpBackend, Load, get, outcome};
use crate::support::{Proxy, ProxyBuilder};

fn put(p: &Proxy, name: &str, body: Value) -> Value {
    let (code, text) = p.admin_call("PUT", &format!("/routes/{name}"), Some(&body.to_string()));
    assert!(code == 200 || code == 201, "PUT {name} ({code}): {text}");
    serde_json::from_str(&text).unwrap()
}

fn delete(p: &Proxy, name: &str) -> Value {
    let (code, text) = p.admin_call("DELETE", &format!("/routes/{name}"), None);
    assert_eq!(code, 200, "DELETE {name}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn listen_of(doc: &Value) -> SocketAddr {
    doc["listen"][0].as_str().unwrap().parse().unwrap()
}

/// Connections queued on a retired listener that the kernel reset when it closed.
fn queue_resets(p: &Proxy) -> Option<f64> {
    p.metric("ringway_listener_queue_resets_total")
}

/// Inodes of the sockets in LISTEN state on `port` (from /proc/net/tcp).
fn listening_inodes(port: u16) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut out: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(c.get(1)?.rsplit(':').next()?, 16).ok()?;
            (p == port && *c.get(3)? == "0A").then(|| c.get(9).map(|s| s.to_string()))?
        })
        .collect();
    out.sort();
    out
}

/// Addresses added and removed five times while 1,000 new connections/s run on another
/// address: none of those fails; a new address serves as soon as the call returns (no retry);
/// a removed one refuses connections as soon as its call returns (refused, not left hanging);
/// no queued connection was reset.
#[test]
fn addresses_come_and_go_under_load_elsewhere() {
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true).route(&[a.addr], "").start();
    let load = Load::conn(p.addr("r0"), 1000, Duration::from_secs(4));
    std::thread::sleep(Duration::from_millis(300));
    let mut removed: Vec<SocketAddr> = Vec::new();
    for i in 0..5 {
        let name = format!("x{i}");
        let doc = put(
            &p,
            &name,
            json!({"listen": ["127.0.0.1:0"], "backends": [a.addr.to_string()]}),
        );
        let addr = listen_of(&doc);
        assert_eq!(doc["bound"], json!([addr.to_string()]));
        assert_eq!(get(addr).as_deref(), Ok("A"), "{addr} serves at once");
        let doc = delete(&p, &name);
        assert_eq!(doc["released"], json!([addr.to_string()]));
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
        assert_eq!(
            refused.map(drop).unwrap_err().kind(),
            ErrorKind::ConnectionRefused
        );
        removed.push(addr);
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = load.finish();
    let (ok, failed) = outcome(&report);
    assert!(ok > 1000 && failed == 0, "{report}");
    assert_eq!(removed.len(), 5);
    // Workers report once a second.
    std::thread::sleep(Duration::from_millis(1100));
    let resets = queue_resets(&p);
    eprintln!("ringway_listener_queue_resets_total = {resets:?}");
    assert_eq!(resets, Some(0.0));
}

/// An address removed while 1,000 new connections/s arrive on it: connections accepted
/// before the removal are served to the end, later ones are refused; none is reset, none
/// hangs; nothing was left queued at the close.
#[test]
fn removing_a_busy_address_resets_no_queued_connection() {
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true).start();
    let doc = put(
        &p,
        "busy",
        json!({"listen": ["127.0.0.1:0"], "backends": [a.addr.to_string()]}),
    );
    let addr = listen_of(&doc);
    let load = Load::conn(addr, 1000, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1500));
    delete(&p, "busy");
    let report = load.finish();
    let o = &report["outcomes"];
    eprintln!("load on the removed address {addr}: {o}");
    assert!(o["ok"].as_u64().unwrap() > 200, "{report}");
    assert!(o["refused"].as_u64().unwrap() > 200, "{report}");
    for kind in ["reset", "timeout", "wrong_bytes", "error"] {
        assert_eq!(o[kind], 0, "{kind}: {report}");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let resets = queue_resets(&p);
    eprintln!("ringway_listener_queue_resets_total = {resets:?}");
    assert_eq!(resets, Some(0.0));
}

/// An address ringway holds is never bound again: replacing the route that uses it, a
/// reload that leaves it alone, and a second route asking for it keep the very same sockets
/// (the same inodes in /proc, one per worker).
#[test]
fn an_address_is_bound_once() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let p = ProxyBuilder::new(true)
        .workers(2)
        .route(&[a.addr], "")
        .start();
    let doc = put(
        &p,
        "api",
        json!({"listen": ["127.0.0.1:0"], "backends": [a.addr.to_string()]}),
    );
    let addr = listen_of(&doc);
    let inodes = listening_inodes(addr.port());
    assert_eq!(inodes.len(), 2, "one listener per worker");
    // Replace the route (other backends, same address): no bind.
    let doc = put(
        &p,
        "api",
        json!({"listen": [addr.to_string()], "backends": [b.addr.to_string()]}),
    );
    assert_eq!(doc["action"], "replaced");
    assert_eq!(doc["bound"], json!([]));
    assert_eq!(listening_inodes(addr.port()), inodes);
    assert_eq!(get(addr).as_deref(), Ok("B"));
    // A reload of an unchanged file: no bind either, anywhere.
    let r0 = p.addr("r0");
    let before = listening_inodes(r0.port());
    let (code, text) = p.admin_call("POST", "/reload", None);
    assert_eq!(code, 200, "{text}");
    assert_eq!(listening_inodes(r0.port()), before);
    assert_eq!(listening_inodes(addr.port()), inodes);
    // Another route on the same address is refused (until routes can be told apart).
    let (code, text) = p.admin_call(
        "PUT",
        "/routes/second",
        Some(&json!({"listen": [addr.to_string()], "backends": [a.addr.to_string()]}).to_string()),
    );
    assert_eq!(code, 409, "{text}");
    assert!(
        text.contains("\\\"api\\\"") && text.contains("\\\"second\\\""),
        "{text}"
    );
    assert_eq!(listening_inodes(addr.port()), inodes);
}
