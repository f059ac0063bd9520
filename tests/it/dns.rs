//! Backends named by DNS, with a real ringway, real backends and a small name server of the
//! test's own on 127.0.0.1 (never the outside network): a changed answer moves new sessions
//! to the new address, a name server that stops answering leaves the last good address in
//! service (and the failure in `/status`, the metric and the log), and `ringway check`
//! resolves names without binding anything.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::support::{IO_TIMEOUT, Proxy, ProxyBuilder, Relay, connect, ringway};

/// The name the tests resolve (not in /etc/hosts; only the test's name server knows it).
const NAME: &str = "app.ringway.test";

/// What the name server answers to an A query.
#[derive(Clone)]
enum Answer {
    /// These addresses, with this TTL in seconds.
    A(Vec<Ipv4Addr>, u32),
    /// NXDOMAIN.
    NoSuchName,
    /// Nothing at all (the query is dropped).
    Silent,
}

/// A name server on 127.0.0.1 (UDP) answering every A query with the current [`Answer`]
/// (and AAAA queries with no record).
struct NameServer {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NameServer {
    fn start(answer: Answer) -> NameServer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answer.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let current = a.lock().unwrap().clone();
                if let Some(reply) = reply(&buf[..n], &current) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        NameServer {
            addr,
            answer,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query, packed by hand (RFC 1035 §4.1): the query's id and question, and
/// an A record per address (the name as a pointer to the question's). `None`: no reply.
fn reply(query: &[u8], answer: &Answer) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: the name's labels up to the zero byte, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let question = query.get(12..end + 5)?;
    let (rcode, records): (u8, Vec<Ipv4Addr>) = match answer {
        Answer::Silent => return None,
        Answer::NoSuchName => (3, Vec::new()),
        Answer::A(ips, _) if qtype == 1 => (0, ips.clone()),
        Answer::A(..) => (0, Vec::new()),
    };
    let ttl = match answer {
        Answer::A(_, ttl) => *ttl,
        _ => 0,
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[0..2]);
    // QR, the query's RD, RA; the rcode.
    out.push(0x80 | (query[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for ip in records {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// A backend on `addr` that answers every connection with its one-byte `tag`, then closes.
struct Tagged {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tagged {
    fn start(listener: TcpListener, tag: u8) -> Tagged {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut c) = conn {
                    let _ = c.write_all(&[tag]);
                }
            }
        });
        Tagged {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Tagged {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two tagged backends on one port, on 127.0.0.2 (`A`) and 127.0.0.3 (`B`): an A record
/// carries no port, so the name's port reaches either.
fn two_backends() -> (Tagged, Tagged) {
    for _ in 0..20 {
        let a = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        let Ok(b) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 3], port))) else {
            continue;
        };
        return (Tagged::start(a, b'A'), Tagged::start(b, b'B'));
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// One session through `addr`: the tag of the backend it reached (`None`: reset/closed).
fn tag_of(addr: SocketAddr) -> Option<u8> {
    let mut s = connect(addr);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// ringway with route r0 on `NAME:port`, asking `ns`, answers kept at least 1 s.
fn proxy(ns: &NameServer, port: u16) -> Proxy {
    let mut b = ProxyBuilder::new(Relay::Auto)
        .workers(2)
        .runtime_extra(&format!(
            "dns_resolver = \"{}\"\ndns_min_ttl = \"1s\"\ndns_max_ttl = \"1m\"",
            ns.addr
        ));
    b.routes.push(format!(
        "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [\"{NAME}:{port}\"]\n"
    ));
    b.start()
}

/// True once every worker acknowledged the generation last published (a generation a DNS
/// answer makes is published without waiting for the workers, unlike an API change).
fn applied(p: &Proxy) -> bool {
    let s = p.status();
    let g = s["generation"].as_u64().unwrap_or(u64::MAX);
    s["workers"]
        .as_array()
        .is_some_and(|w| w.iter().all(|w| w["generation"].as_u64() >= Some(g)))
}

/// The route's entry for the name in `/status`.
fn name_doc(p: &Proxy) -> serde_json::Value {
    p.status()["routes"][0]["names"][0].clone()
}

/// A changed answer becomes a new generation: new sessions go to the new address, `/status`
/// shows it as the name's address and the route's active set.
#[test]
fn a_changed_answer_moves_new_sessions() {
    let (a, b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)], 1));
    let p = proxy(&ns, port);
    let listen = p.addr("r0");
    // The first generation already has the name's address (resolved at start-up).
    assert_eq!(tag_of(listen), Some(b'A'), "{}", p.logs());
    let doc = name_doc(&p);
    assert_eq!(doc["name"], format!("{NAME}:{port}"));
    assert_eq!(doc["addresses"][0], a.addr.to_string());
    assert!(doc["error"].is_null(), "{doc}");

    ns.set(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 3)], 1));
    assert!(
        p.eventually(Duration::from_secs(15), |_| tag_of(listen) == Some(b'B')),
        "sessions never moved to the new address: {}\n{}",
        p.status(),
        p.logs()
    );
    // Every new session, once every worker has the new generation: the old address is out
    // of the active set.
    assert!(
        p.eventually(Duration::from_secs(10), |p| applied(p)
            && p.status()["routes"][0]["active"] == serde_json::json!([b.addr])),
        "{}",
        p.status()
    );
    for _ in 0..20 {
        assert_eq!(tag_of(listen), Some(b'B'));
    }
    let status = p.status();
    assert_eq!(status["routes"][0]["active"], serde_json::json!([b.addr]));
    assert_eq!(
        status["routes"][0]["names"][0]["addresses"],
        serde_json::json!([b.addr])
    );
    assert!(p.logs().contains("backend name resolved to new addresses"));
}

/// A name server that stops answering: the name keeps its last good address (sessions still
/// reach it), and the failure shows in `/status`, `ringway_dns_failures_total` and the log.
#[test]
fn a_silent_resolver_keeps_the_last_good_address() {
    let (a, _b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)], 1));
    let p = proxy(&ns, port);
    let listen = p.addr("r0");
    assert_eq!(tag_of(listen), Some(b'A'), "{}", p.logs());

    ns.set(Answer::Silent);
    let series = format!("ringway_dns_failures_total{{route=\"r0\",name=\"{NAME}\"}}");
    // A query times out after 2 s and is sent twice.
    assert!(
        p.eventually(Duration::from_secs(20), |p| {
            !name_doc(p)["error"].is_null() && p.metric(&series).is_some_and(|n| n >= 1.0)
        }),
        "no failure reported: {}\n{}",
        p.status(),
        p.logs()
    );
    let doc = name_doc(&p);
    assert_eq!(doc["addresses"], serde_json::json!([a.addr]), "{doc}");
    assert!(doc["failures"].as_u64().unwrap_or(0) >= 1, "{doc}");
    assert!(doc["next_resolve_seconds"].as_f64().is_some(), "{doc}");
    for _ in 0..10 {
        assert_eq!(tag_of(listen), Some(b'A'), "{}", p.logs());
    }
    assert_eq!(
        p.status()["routes"][0]["active"],
        serde_json::json!([a.addr])
    );
    assert!(
        p.logs().contains("backend name does not resolve"),
        "{}",
        p.logs()
    );

    // Answering again: the name is resolved again and the error cleared.
    ns.set(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)], 1));
    assert!(
        p.eventually(Duration::from_secs(20), |p| name_doc(p)["error"].is_null()),
        "{}",
        p.status()
    );
}

/// `ringway check` resolves the names: one the name server does not know fails the check
/// (exit 64, the route, the name and why); one it knows passes. Neither binds anything: the
/// route's listen address is held by the test all along.
#[test]
fn check_resolves_names_without_binding() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap();
    let ns = NameServer::start(Answer::NoSuchName);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringway.toml");
    let config = format!(
        "[runtime]\ndns_resolver = \"{}\"\n\n[[route]]\nname = \"web\"\nlisten = [\"{listen}\"]\nbackends = [\"127.0.0.1:9\", \"{NAME}:8080\"]\n",
        ns.addr
    );
    std::fs::write(&file, &config).unwrap();
    let path = file.to_str().unwrap();
    let (code, _out, err) = ringway(&["check", "-c", path]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("route[0] (\"web\").backends") && err.contains(NAME),
        "{err}"
    );
    assert!(err.contains("does not resolve"), "{err}");

    ns.set(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)], 30));
    let (code, out, err) = ringway(&["check", "-c", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"{NAME}:8080\"")), "{out}");

    // /etc/hosts is read before the name server (which knows nothing now).
    ns.set(Answer::NoSuchName);
    std::fs::write(&file, config.replace(NAME, "localhost")).unwrap();
    let (code, _out, err) = ringway(&["check", "-c", path]);
    assert_eq!(code, 0, "{err}");
    drop(held);
}

/// The admin API takes names: a route created with one (`PUT`), a name attached
/// (`POST /routes/{name}/backends`, no gate) joins the active set once resolved, and a name
/// detached (`DELETE /routes/{name}/backends/{host:port}`) leaves it; an unknown name is a
/// 404 and the route is unchanged.
#[test]
fn names_through_the_admin_api() {
    let (a, b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 3)], 30));
    let p = proxy(&ns, port);
    let body = format!(
        "{{\"listen\": [\"127.0.0.1:0\"], \"backends\": [\"{}\"]}}",
        a.addr
    );
    let (code, out) = p.admin_call("PUT", "/routes/app", Some(&body));
    assert!(code == 200 || code == 201, "{code} {out}");
    let listen = p.addr("app");
    assert_eq!(tag_of(listen), Some(b'A'));

    let attach = format!("{{\"addr\": \"{NAME}:{port}\", \"weight\": 2}}");
    let (code, out) = p.admin_call("POST", "/routes/app/backends", Some(&attach));
    assert_eq!(code, 200, "{out}");
    let app = |p: &Proxy| {
        p.status()["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "app").cloned())
            .unwrap_or_default()
    };
    assert!(
        p.eventually(Duration::from_secs(10), |p| applied(p)
            && app(p)["active"] == serde_json::json!([a.addr, b.addr])),
        "{}",
        app(&p)
    );
    let doc = &app(&p)["names"][0];
    assert_eq!(doc["name"], format!("{NAME}:{port}"));
    assert_eq!(doc["weight"], 2);
    let backend_b = app(&p)["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["addr"] == b.addr.to_string()).cloned())
        .unwrap_or_default();
    assert_eq!(backend_b["weight"], 2, "{backend_b}");
    // Round robin, 1:2: B is reached.
    let tags: Vec<Option<u8>> = (0..6).map(|_| tag_of(listen)).collect();
    assert!(
        tags.contains(&Some(b'B')) && tags.contains(&Some(b'A')),
        "{tags:?}"
    );

    let (code, _) = p.admin_call("DELETE", "/routes/app/backends/nowhere.test:80", None);
    assert_eq!(code, 404);
    // An address the name resolved to follows the name: it cannot be detached alone.
    let (code, out) = p.admin_call("DELETE", &format!("/routes/app/backends/{}", b.addr), None);
    assert_eq!(code, 409, "{out}");
    assert!(out.contains("from_name"), "{out}");
    assert_eq!(app(&p)["active"], serde_json::json!([a.addr, b.addr]));
    let path = format!("/routes/app/backends/{NAME}:{port}");
    let (code, out) = p.admin_call("DELETE", &path, None);
    assert_eq!(code, 200, "{out}");
    let status = app(&p);
    assert_eq!(status["active"], serde_json::json!([a.addr]), "{status}");
    assert!(status.get("names").is_none(), "{status}");
    for _ in 0..5 {
        assert_eq!(tag_of(listen), Some(b'A'));
    }
}

/// A name that does not resolve at start-up does not stop the start: the route serves with
/// its IP backend, `/status` shows the name unresolved with its error, and the name's
/// address joins the active set once the name server knows it.
#[test]
fn a_name_unresolved_at_start_joins_later() {
    let (a, b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::NoSuchName);
    let mut builder = ProxyBuilder::new(Relay::Auto)
        .workers(2)
        .runtime_extra(&format!(
            "dns_resolver = \"{}\"\ndns_min_ttl = \"1s\"",
            ns.addr
        ));
    builder.routes.push(format!(
        "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [\"{}\", \"{NAME}:{port}\"]\n",
        a.addr
    ));
    let p = builder.start();
    let listen = p.addr("r0");
    let doc = name_doc(&p);
    assert_eq!(doc["addresses"], serde_json::json!([]), "{doc}");
    assert!(!doc["error"].is_null(), "{doc}");
    assert_eq!(
        p.status()["routes"][0]["active"],
        serde_json::json!([a.addr])
    );
    assert_eq!(tag_of(listen), Some(b'A'));

    ns.set(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 3)], 30));
    assert!(
        p.eventually(Duration::from_secs(15), |p| applied(p)
            && p.status()["routes"][0]["active"]
                == serde_json::json!([a.addr, b.addr])),
        "{}\n{}",
        p.status(),
        p.logs()
    );
    assert!(name_doc(&p)["error"].is_null());
    let tags: Vec<Option<u8>> = (0..4).map(|_| tag_of(listen)).collect();
    assert!(tags.contains(&Some(b'B')), "{tags:?}");
}

/// A reload that adds a name to a route's backends: the name's address joins the active
/// set (resolved after the reload, then a generation of its own); a reload that removes it
/// takes the address out again.
#[test]
fn a_reload_adds_and_removes_a_name() {
    let (a, b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 3)], 30));
    let builder = |backends: &str| {
        let mut bld = ProxyBuilder::new(Relay::Auto)
            .workers(2)
            .runtime_extra(&format!(
                "dns_resolver = \"{}\"\ndns_min_ttl = \"1s\"",
                ns.addr
            ));
        bld.routes.push(format!(
            "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [{backends}]\n"
        ));
        bld
    };
    let only_a = format!("\"{}\"", a.addr);
    let with_name = format!("\"{}\", \"{NAME}:{port}\"", a.addr);
    let p = builder(&only_a).start();
    let active = |p: &Proxy| p.status()["routes"][0]["active"].clone();
    assert_eq!(active(&p), serde_json::json!([a.addr]));

    p.rewrite(&builder(&with_name));
    let (code, out) = p.reload();
    assert_eq!(code, 200, "{out}");
    assert!(
        p.eventually(Duration::from_secs(10), |p| active(p)
            == serde_json::json!([a.addr, b.addr])),
        "{}",
        p.status()
    );
    p.rewrite(&builder(&only_a));
    let (code, out) = p.reload();
    assert_eq!(code, 200, "{out}");
    assert_eq!(active(&p), serde_json::json!([a.addr]));
    assert!(p.status()["routes"][0].get("names").is_none());
}

/// A restart does not resume a named route's saved set: the state file holds the answer of
/// the last run, and the name resolves afresh.
#[test]
fn a_restart_resolves_names_afresh() {
    let (a, b) = two_backends();
    let port = a.addr.port();
    let ns = NameServer::start(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 2)], 30));
    let state = tempfile::tempdir().unwrap();
    let state_file = state.path().join("state.json");
    let builder = || {
        let mut bld = ProxyBuilder::new(Relay::Auto)
            .workers(1)
            .state_file(&state_file)
            .runtime_extra(&format!("dns_resolver = \"{}\"", ns.addr));
        bld.routes.push(format!(
            "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [\"{NAME}:{port}\"]\n"
        ));
        bld
    };
    let mut p = builder().start();
    assert_eq!(tag_of(p.addr("r0")), Some(b'A'));
    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
    assert!(state_file.exists());

    ns.set(Answer::A(vec![Ipv4Addr::new(127, 0, 0, 3)], 30));
    let p = builder().start();
    assert_eq!(
        p.status()["routes"][0]["active"],
        serde_json::json!([b.addr]),
        "{}",
        p.logs()
    );
    assert_eq!(tag_of(p.addr("r0")), Some(b'B'));
}
