//! Routes and backends changed at runtime through the admin API and the CLI: create, attach,
//! detach, drain, remove; who may change what; every refusal changes nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{HttpBackend, Load, get, outcome};
use crate::support::{Proxy, ProxyBuilder, dead_addr, ringway};

/// An admin call with a JSON answer.
fn call(p: &Proxy, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (code, text) = p.admin_call(method, path, body.as_deref());
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({code}): {text}"));
    (code, v)
}

/// The first listen address in a change or route document.
fn listen_of(doc: &Value) -> SocketAddr {
    doc["listen"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {doc}"))
}

/// `GET /routes`, byte for byte.
fn routes(p: &Proxy) -> String {
    let (code, body) = p.admin_call("GET", "/routes", None);
    assert_eq!(code, 200, "{body}");
    body
}

/// A route made through the API with no listen address gets one from admin.listen_range and
/// serves; a backend attached and the first one detached while 200 connections/s run: none
/// fails, the detached backend's open session is closed at the route's drain deadline, new
/// sessions go to the attached one; the route (port, backends) survives a restart.
#[test]
fn api_route_lifecycle_under_load_survives_a_restart() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let start = || {
        ProxyBuilder::new(true)
            .state_file(&state)
            .admin_extra("listen_range = \"127.0.0.1:20100-20199\"")
            .start()
    };
    let mut p = start();
    let (code, doc) = call(
        &p,
        "PUT",
        "/routes/app",
        Some(json!({"backends": [a.addr.to_string()], "switch": {"drain": "1s"}})),
    );
    assert_eq!(code, 201, "{doc}");
    assert_eq!(doc["action"], "created");
    let created = doc["generation"].clone();
    assert_eq!(
        call(&p, "GET", "/routes/app", None).1["generation"],
        created
    );
    let addr = listen_of(&doc);
    assert!((20100..=20199).contains(&addr.port()), "{addr}");
    assert_eq!(get(addr).as_deref(), Ok("A"));

    // A session held open on A: a request head that never ends.
    let mut held = TcpStream::connect(addr).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let on_a = |p: &Proxy| {
        let s = p.status();
        let r = s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "app")
            .cloned();
        r.and_then(|r| {
            r["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["addr"] == a.addr.to_string())
                .map(|x| x["connections_active"].as_u64().unwrap_or(0))
        })
        .unwrap_or(0)
    };
    assert!(p.eventually(Duration::from_secs(5), |p| on_a(p) == 1));

    let load = Load::conn(addr, 200, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(700));
    let (code, doc) = call(
        &p,
        "POST",
        "/routes/app/backends",
        Some(json!({"addr": b.addr.to_string()})),
    );
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["action"], "attached");
    std::thread::sleep(Duration::from_millis(700));
    let (code, doc) = call(
        &p,
        "DELETE",
        &format!("/routes/app/backends/{}", a.addr),
        None,
    );
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["active"], json!([b.addr.to_string()]));
    let report = load.finish();
    let (ok, failed) = outcome(&report);
    assert!(ok > 300 && failed == 0, "{report}");

    // The detached backend's session drains: ringway closes it at the deadline.
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(held.read(&mut buf), Ok(0) | Err(_)));
    assert!(p.eventually(Duration::from_secs(5), |p| {
        p.metric("ringway_sessions_ended_total{route=\"app\",outcome=\"drained\"}") == Some(1.0)
    }));
    for _ in 0..4 {
        assert_eq!(get(addr).as_deref(), Ok("B"));
    }

    p.sigterm();
    assert!(p.wait_exit(Duration::from_secs(15)).is_some());
    drop(p);
    let p = start();
    let (code, view) = call(&p, "GET", "/routes/app", None);
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["origin"], "api");
    assert_eq!(listen_of(&view), addr, "the route keeps its address");
    assert_eq!(view["active"], json!([b.addr.to_string()]));
    assert_eq!(get(addr).as_deref(), Ok("B"));
}

/// Who may change what, and every refusal: the exact status and code, a message that says
/// what to do, and `GET /routes` byte-identical afterwards.
#[test]
fn refusals_change_nothing() {
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true).route(&[a.addr], "").start();
    let r0 = p.addr("r0");
    let (code, _) = call(
        &p,
        "PUT",
        "/routes/api1",
        Some(json!({"listen": ["127.0.0.1:0"], "backends": [a.addr.to_string()]})),
    );
    assert_eq!(code, 201);
    let a2 = dead_addr();
    let body = |v: Value| Some(v);
    // (method, path, body, status, error code, words the message must hold)
    type Case<'a> = (&'a str, String, Option<Value>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        // The file owns r0: writes are refused and say to edit the file.
        (
            "PUT",
            "/routes/r0".into(),
            body(json!({"backends": [a.addr.to_string()]})),
            409,
            "file_owned",
            "run `ringway reload`",
        ),
        (
            "DELETE",
            "/routes/r0".into(),
            None,
            409,
            "file_owned",
            "ringway.toml",
        ),
        (
            "POST",
            "/routes/r0/backends".into(),
            body(json!({"addr": a2.to_string()})),
            409,
            "file_owned",
            "change it there",
        ),
        // Invalid bodies: the file's own key-level messages.
        (
            "PUT",
            "/routes/bad".into(),
            body(json!({"backends": ["nowhere"]})),
            400,
            "invalid_route",
            "backends[0]",
        ),
        (
            "PUT",
            "/routes/bad".into(),
            body(json!({"backends": [a.addr.to_string()], "colour": "blue"})),
            400,
            "invalid_route",
            "colour",
        ),
        (
            "PUT",
            "/routes/bad%20name".into(),
            body(json!({"backends": [a.addr.to_string()]})),
            400,
            "invalid_route",
            "not a valid route name",
        ),
        (
            "PUT",
            "/routes/bad".into(),
            body(json!([1, 2])),
            400,
            "invalid_route",
            "not a JSON object",
        ),
        (
            "PUT",
            "/routes/bad".into(),
            Some(Value::String("{\"backends\": [".into())),
            400,
            "malformed_json",
            "expected",
        ),
        // Conflicts inside ringway name both routes.
        (
            "PUT",
            "/routes/dup".into(),
            body(json!({"listen": [r0.to_string()], "backends": [a.addr.to_string()]})),
            409,
            "listen_conflict",
            "\"r0\"",
        ),
        // No listen and no listen_range.
        (
            "PUT",
            "/routes/auto".into(),
            body(json!({"backends": [a.addr.to_string()]})),
            400,
            "no_listen_range",
            "admin.listen_range",
        ),
        // Create-only on an existing route.
        (
            "PUT-NEW",
            "/routes/api1".into(),
            body(json!({"backends": [a.addr.to_string()]})),
            412,
            "exists",
            "--replace",
        ),
        (
            "DELETE",
            "/routes/nope".into(),
            None,
            404,
            "not_found",
            "no route named nope",
        ),
        (
            "DELETE",
            format!("/routes/api1/backends/{a2}"),
            None,
            404,
            "not_found",
            "has no backend",
        ),
        (
            "DELETE",
            format!("/routes/api1/backends/{}", a.addr),
            None,
            409,
            "last_backend",
            "last active backend",
        ),
        (
            "PATCH",
            format!("/routes/api1/backends/{}", a.addr),
            body(json!({"drain": true})),
            409,
            "last_backend",
            "no backend for new sessions",
        ),
        (
            "POST",
            "/routes/api1/backends".into(),
            body(json!({"addr": a2.to_string()})),
            409,
            "health_gate_failed",
            "refused",
        ),
        (
            "POST",
            "/routes/api1/backends".into(),
            body(json!({"addr": "0.0.0.0:80"})),
            400,
            "bad_request",
            "cannot be connected to",
        ),
        (
            "PATCH",
            "/routes/api1/backends/x".into(),
            body(json!({"drain": true})),
            400,
            "bad_request",
            "not an IP address",
        ),
        (
            "POST",
            "/routes/api1".into(),
            None,
            405,
            "method_not_allowed",
            "PUT",
        ),
    ];
    for (method, path, body, status, code, needle) in cases {
        let before = routes(&p);
        let text = body.map(|b| match b {
            Value::String(s) => s,
            other => other.to_string(),
        });
        let (got, answer) = if method == "PUT-NEW" {
            p.admin_call_with("PUT", &path, text.as_deref(), &[("if-none-match", "*")])
        } else {
            p.admin_call(method, &path, text.as_deref())
        };
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(v["error"], code, "{method} {path}: {answer}");
        let message = v["message"].as_str().unwrap_or("");
        assert!(
            message.contains(needle),
            "{method} {path}: {needle:?} not in {message}"
        );
        assert_eq!(routes(&p), before, "{method} {path} changed /routes");
    }
    // An invalid body lists its problems with key, message and fix.
    let (_, v) = call(
        &p,
        "PUT",
        "/routes/bad",
        Some(json!({"backends": ["nowhere", "127.0.0.1:0"], "connect_timeout": "soon"})),
    );
    let keys: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["backends[0]", "backends[1]", "connect_timeout"],
        "{v}"
    );
    assert!(
        v["problems"][0]["fix"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );

    // The drain flag is allowed on a file route (what an operator does at 3 a.m.).
    let b = HttpBackend::start("B");
    assert_eq!(p.switch("r0", &[a.addr, b.addr]).0, 200);
    let (code, doc) = call(
        &p,
        "PATCH",
        &format!("/routes/r0/backends/{}", a.addr),
        Some(json!({"drain": true})),
    );
    assert_eq!(code, 200, "{doc}");
    for _ in 0..4 {
        assert_eq!(
            get(r0).as_deref(),
            Ok("B"),
            "a drained backend gets no new session"
        );
    }
    let (code, _) = call(
        &p,
        "PATCH",
        &format!("/routes/r0/backends/{}", a.addr),
        Some(json!({"drain": false})),
    );
    assert_eq!(code, 200);
    let bodies: Vec<String> = (0..4).map(|_| get(r0).unwrap()).collect();
    assert!(bodies.contains(&"A".to_string()), "{bodies:?}");
}

/// An address another process holds: refused with "held by another process" and its pid,
/// nothing applied, and after 100 such attempts the process has exactly the fds it had.
#[test]
fn an_address_held_elsewhere_is_refused_and_leaks_nothing() {
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true).route(&[a.addr], "").start();
    // A free address that sorts before the held one: it is bound (not listening) first, then
    // the held one fails, and the change is undone whole. The free one is chosen first and the
    // held one above it, so the order never depends on where the kernel's ephemeral pick lands.
    let free = (0..200)
        .map(|_| dead_addr())
        .find(|a| a.port() < 60_000)
        .expect("a free port below 60000");
    let outside = (free.port() + 1..=u16::MAX)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .expect("a port above the free one to hold");
    let held = outside.local_addr().unwrap();
    let put = || {
        let listen = [free.to_string(), held.to_string(), "127.0.0.1:0".into()];
        let body = json!({"listen": listen, "backends": [a.addr.to_string()]});
        call(&p, "PUT", "/routes/x", Some(body))
    };
    let before = routes(&p);
    let (code, v) = put();
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["error"], "address_in_use");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("held by another process")
            && message.contains(&format!("pid {}", std::process::id()))
            && message.contains(&held.to_string()),
        "{message}"
    );
    // Counted once the admin connection of the call above is closed on both ends.
    std::thread::sleep(Duration::from_millis(300));
    let fds = p.fd_count();
    for _ in 0..100 {
        assert_eq!(put().0, 409);
    }
    assert!(
        p.eventually(Duration::from_secs(5), |p| p.fd_count() <= fds),
        "fds after 100 refused changes: {} (before: {fds})",
        p.fd_count()
    );
    assert_eq!(routes(&p), before);
    // The free address was never left bound (nor listening): it can be bound now.
    drop(std::net::TcpListener::bind(free).expect("the free address is free"));
}

/// A backend detached, or drained, after a switch is going away on purpose: the rollback
/// watch stops checking it, so stopping it does not roll the route back.
#[test]
fn detach_and_drain_during_a_rollback_watch_do_not_roll_back() {
    let (a, b, c, d) = (
        HttpBackend::start("A"),
        HttpBackend::start("B"),
        HttpBackend::start("C"),
        HttpBackend::start("D"),
    );
    let p = ProxyBuilder::new(true).start();
    let body = json!({"listen": ["127.0.0.1:0"], "backends": [a.addr.to_string()],
        "switch": {"rollback_window": "30s", "rollback_check": "200ms", "rollback_fail_threshold": 2, "rollback_connect_errors": 0}});
    assert_eq!(call(&p, "PUT", "/routes/app", Some(body)).0, 201);
    let to = [b.addr, c.addr, d.addr];
    let (code, text) = p.switch("app", &to);
    assert_eq!(code, 200, "{text}");
    // C leaves, D is drained, and both stop answering.
    let (code, v) = call(
        &p,
        "DELETE",
        &format!("/routes/app/backends/{}", c.addr),
        None,
    );
    assert_eq!(code, 200, "{v}");
    let drain = Some(json!({"drain": true}));
    let (code, v) = call(
        &p,
        "PATCH",
        &format!("/routes/app/backends/{}", d.addr),
        drain,
    );
    assert_eq!(code, 200, "{v}");
    c.refuse();
    d.refuse();
    // Ten check rounds later: still on B, no rollback recorded.
    std::thread::sleep(Duration::from_secs(2));
    let (_, view) = call(&p, "GET", "/routes/app", None);
    assert_eq!(
        view["active"],
        json!([b.addr.to_string(), d.addr.to_string()]),
        "{view}"
    );
    assert!(!p.logs().contains("rolling back"), "{}", p.logs());
    assert_eq!(get(p.addr("app")).as_deref(), Ok("B"));
    // The watch still guards what is left: B failing now does roll back to A.
    b.refuse();
    assert!(
        p.eventually(Duration::from_secs(5), |p| {
            call(p, "GET", "/routes/app", None).1["active"] == json!([a.addr.to_string()])
        }),
        "{}",
        p.logs()
    );
}

/// The CLI: route add (address from the range), list, show (as a [[route]] table), backend
/// add / drain / undrain / remove, route remove; human output and --json; exit 0 on success,
/// 1 when refused, 64 on bad usage.
#[test]
fn cli_route_and_backend_commands() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let p = ProxyBuilder::new(true)
        .admin_extra("listen_range = \"127.0.0.1:20200-20299\"")
        .route(&[a.addr], "")
        .start();
    let c = p.config.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-c", &c]);
        ringway(&all)
    };
    let (code, out, err) = run(&["route", "add", "web", "--backend", &a.addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("route web created"), "{out}");
    let (code, out, _) = run(&["route", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    let web = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["origin"], "api");
    let addr = listen_of(&web);
    assert!((20200..=20299).contains(&addr.port()));
    assert_eq!(get(addr).as_deref(), Ok("A"));
    let (code, out, _) = run(&["route", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains(" api ")),
        "{out}"
    );
    let (code, out, _) = run(&["route", "show", "web"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("[[route]]") && out.contains("name = \"web\""),
        "{out}"
    );
    let (code, _, err) = run(&["route", "add", "web", "--backend", &a.addr.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("(412)") && err.contains("--replace"), "{err}");
    let (code, out, err) = run(&["backend", "add", "web", &b.addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("backend attached"), "{out}");
    let (code, _, err) = run(&["backend", "drain", "web", &a.addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(get(addr).as_deref(), Ok("B"));
    let (code, _, err) = run(&["backend", "undrain", "web", &a.addr.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["backend", "remove", "web", &a.addr.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["action"], "detached");
    assert_eq!(v["active"], json!([b.addr.to_string()]));
    // Refused: a file route; bad usage: an unreadable --from file.
    let (code, _, err) = run(&["backend", "add", "r0", &b.addr.to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("(409)") && err.contains("ringway reload"),
        "{err}"
    );
    let (code, _, _) = run(&["route", "add", "x", "--from", "/nonexistent.toml"]);
    assert_eq!(code, 64);
    // A route from a --from file with other keys.
    let from = p.dir.path().join("route.toml");
    std::fs::write(
        &from,
        format!(
            "backends = [\"{}\"]\nconnect_timeout = \"2s\"\n[switch]\ndrain = \"5s\"\n",
            b.addr
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["route", "add", "other", "--from", from.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}: {out}");
    let (_, out, _) = run(&["route", "show", "other", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["definition"]["connect_timeout"], "2s");
    assert_eq!(v["definition"]["switch"]["drain"], "5s");
    let (code, out, err) = run(&["route", "remove", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no longer listening on"), "{out}");
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}
