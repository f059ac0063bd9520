//! The admin API's security and error table, the unix socket, and the CLI against a running
//! ringway. Every refused call must change nothing.

use std::process::Command;
use std::time::Duration;

use crate::apps::HttpBackend;
use crate::support::{Proxy, ProxyBuilder, TOKEN, curl, dead_addr, ringway, ringway_bin};

fn url(p: &Proxy, path: &str) -> String {
    format!("http://{}{}", p.admin, path)
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

/// Each bad call gets its exact status and a JSON error, and changes nothing.
#[test]
fn security_and_error_table() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let pb = ProxyBuilder::new(true).route(&[a.addr], "");
    let p = pb.admin_extra("allow = [\"127.0.0.1/32\"]").start();
    let auth = bearer(TOKEN);
    let switch_body = format!("{{\"to\": [\"{}\"]}}", b.addr);
    let big = format!(
        "{{\"to\": [\"{}\"], \"pad\": \"{}\"}}",
        b.addr,
        "x".repeat(100_000)
    );
    let wrong = bearer("not-the-token-at-all-000");
    let token_in_url = format!("/status?token={TOKEN}");
    let cases: Vec<(&str, Vec<&str>, String, u16, &str)> = vec![
        ("no token", vec![], url(&p, "/status"), 401, "unauthorized"),
        (
            "wrong token",
            vec!["-H", &wrong],
            url(&p, "/status"),
            401,
            "unauthorized",
        ),
        (
            "token in the query string",
            vec![],
            url(&p, &token_in_url),
            401,
            "not accepted",
        ),
        (
            "source outside the allowlist",
            vec!["--interface", "127.0.0.2", "-H", &auth],
            url(&p, "/status"),
            403,
            "forbidden",
        ),
        (
            "outside the allowlist without a token: 403 first",
            vec!["--interface", "127.0.0.2"],
            url(&p, "/status"),
            403,
            "forbidden",
        ),
        (
            "oversized body",
            vec!["-H", &auth, "-X", "POST", "--data-binary", &big],
            url(&p, "/routes/r0/switch"),
            413,
            "too_large",
        ),
        (
            "malformed JSON",
            vec![
                "-H",
                &auth,
                "-X",
                "POST",
                "--data-binary",
                "{\"to\": [\"127.0",
            ],
            url(&p, "/routes/r0/switch"),
            400,
            "malformed_json",
        ),
        (
            "unknown route",
            vec!["-H", &auth, "-X", "POST", "--data-binary", &switch_body],
            url(&p, "/routes/nope/switch"),
            404,
            "no route named nope",
        ),
        (
            "wrong method",
            vec!["-H", &auth, "-X", "POST"],
            url(&p, "/status"),
            405,
            "method_not_allowed",
        ),
        (
            "wrong method on switch",
            vec!["-H", &auth],
            url(&p, "/routes/r0/switch"),
            405,
            "accepts POST",
        ),
        (
            "unknown endpoint",
            vec!["-H", &auth],
            url(&p, "/nothing"),
            404,
            "not_found",
        ),
    ];
    for (what, args, u, status, needle) in cases {
        let (code, body) = curl(&u, &args);
        assert_eq!(code, status, "{what}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: not JSON: {body}"));
        assert!(
            v["error"].is_string() && v["message"].is_string(),
            "{what}: {body}"
        );
        assert!(body.contains(needle), "{what}: {body}");
    }
    // Nothing changed, and the token never reached the log.
    let st = p.status();
    assert_eq!(st["routes"][0]["active"][0], a.addr.to_string());
    assert_eq!(st["routes"][0]["history"].as_array().map(Vec::len), Some(0));
    assert_eq!(b.served(), 0);
    assert!(!p.logs().contains(TOKEN));
    // And the good call works.
    let (code, body) = curl(&url(&p, "/health"), &["-H", &auth]);
    assert_eq!(code, 200, "{body}");
}

/// A burst past the rate limit from one source gets 429 with Retry-After (before the token
/// is even looked at), while another allowed source keeps full success.
#[test]
fn rate_limit_is_per_source() {
    let a = HttpBackend::start("A");
    let pb = ProxyBuilder::new(true).route(&[a.addr], "");
    let p = pb
        .admin_extra("allow = [\"127.0.0.0/8\"]")
        .rate_limit(2)
        .start();
    let auth = bearer(TOKEN);
    let (mut ok, mut limited) = (0, 0);
    let t = std::time::Instant::now();
    for _ in 0..30 {
        let (code, _) = curl(&url(&p, "/health"), &["-H", &auth]);
        match code {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // 2 at once plus 2 per second: the 30 calls took t.
    let allowed = 2 + (t.elapsed().as_secs_f64() * 2.0).ceil() as i32;
    assert!(
        ok >= 2 && ok <= allowed,
        "ok {ok} of at most {allowed}, 429 {limited}"
    );
    assert_eq!(ok + limited, 30);
    // Without a token too (the limit comes first), with Retry-After. A token may have
    // refilled since the burst (one per 500 ms): each request spends one, so one of the
    // next few is limited.
    let heads: Vec<String> = (0..5)
        .map(|_| {
            let out = Command::new("curl")
                .args(["-sS", "-D", "-", "-o", "/dev/null"])
                .arg(url(&p, "/health"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_lowercase()
        })
        .collect();
    assert!(
        heads
            .iter()
            .any(|h| h.contains(" 429") && h.contains("retry-after: 1")),
        "no token, limited: {heads:?}"
    );
    for i in 0..2 {
        let (code, body) = curl(
            &url(&p, "/health"),
            &["--interface", "127.0.0.3", "-H", &auth],
        );
        assert_eq!(code, 200, "other source, request {i}: {body}");
    }
}

/// The unix socket serves the same API, needs the token, and is mode 0600.
#[test]
fn unix_socket_serves_the_same_api() {
    use std::os::unix::fs::PermissionsExt;
    let a = HttpBackend::start("A");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/admin.sock");
    let pb = ProxyBuilder::new(true).route(&[a.addr], "");
    let p = pb.admin_socket(&sock).start();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let s = sock.to_str().unwrap();
    let (code, body) = curl(
        "http://ringway/status",
        &["--unix-socket", s, "-H", &bearer(TOKEN)],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"routes\""));
    let (code, _) = curl("http://ringway/status", &["--unix-socket", s]);
    assert_eq!(code, 401);
    let (code, out, err) = ringway(&["status", "--admin", &format!("unix:{s}"), "--token", TOKEN]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route r0"), "{out}");
    drop(p);
}

/// status, health, metrics, switch and rollback from the command line, human and --json.
#[test]
fn cli_commands_against_a_running_ringway() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let health = "[route.health]\ncheck = \"http\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n";
    let pb = ProxyBuilder::new(true).route(&[a.addr], health);
    let p = pb.start();
    let c = p.config.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-c", &c]);
        ringway(&all)
    };
    assert!(p.eventually(Duration::from_secs(3), |_| run(&["health"]).0 == 0));

    let (code, out, err) = run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route r0") && out.contains("healthy"), "{out}");
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with(&a.addr.to_string()))
        .unwrap();
    assert!(row.contains("active") && row.contains(" up "), "{out}");
    let (code, out, _) = run(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["routes"][0]["backends"][0]["health"], "up");

    let (code, out, _) = run(&["metrics"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!(
        "ringway_backend_up{{route=\"r0\",backend=\"{}\"}} 1",
        a.addr
    )));
    // Route metrics appear with the workers' first snapshot (within a second).
    assert!(p.eventually(Duration::from_secs(3), |_| {
        let (code, out, _) = run(&["metrics", "--json"]);
        code == 0
            && serde_json::from_str::<serde_json::Value>(&out).unwrap()["routes"]["r0"].is_object()
    }));

    let (code, out, err) = run(&["switch", "r0", &b.addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("switched r0:") && out.contains(&b.addr.to_string()),
        "{out}"
    );
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("last switch: #1") && out.contains("(switch)"),
        "{out}"
    );
    let (code, out, err) = run(&["rollback", "r0", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["record"]["reason"], "manual_rollback");

    let dead = dead_addr().to_string();
    let (code, _, err) = run(&["switch", "r0", &dead]);
    assert_eq!(code, 1);
    assert!(
        err.contains("switch refused (409)") && err.contains("connection refused"),
        "{err}"
    );
    let (code, _, err) = run(&["switch", "nope", &dead]);
    assert_eq!(code, 1);
    assert!(
        err.contains("(404)") && err.contains("no route named nope"),
        "{err}"
    );
    let (code, _, err) = run(&["switch", "r0", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(err.contains("(400)"), "{err}");

    // Health in words and exit 1 when the active backend is down.
    a.health.store(500, std::sync::atomic::Ordering::SeqCst);
    assert!(p.eventually(Duration::from_secs(3), |_| run(&["health"]).0 == 1));
    let (_, out, _) = run(&["health"]);
    assert!(
        out.starts_with("UNHEALTHY") && out.contains("down"),
        "{out}"
    );

    // Wrong token: the server's message and a hint.
    let (code, _, err) = ringway(&[
        "status",
        "--admin",
        &p.admin.to_string(),
        "--token",
        "wrong-token-0000000000",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("(401)") && err.contains("--token"), "{err}");
    // Nobody there.
    let (code, _, err) = ringway(&[
        "status",
        "--admin",
        &dead_addr().to_string(),
        "--token",
        TOKEN,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

/// Without a token in the configuration, ringway generates one (mode 0600, beside the state
/// file) and the CLI finds it through the same configuration.
#[test]
fn generated_token_is_found_by_the_cli() {
    let a = HttpBackend::start("A");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("r.toml");
    let state = dir.path().join("st/state.json");
    let sock = dir.path().join("admin.sock");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nunix = \"{}\"\n[state]\nfile = \"{}\"\n[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [\"{}\"]\n",
            sock.display(),
            state.display(),
            a.addr
        ),
    )
    .unwrap();
    // Killed on drop, also when an assertion fails.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Running(
        Command::new(ringway_bin())
            .args(["run", "-c"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The admin sockets are bound first, the token written right after: wait for it.
    let token_file = dir.path().join("st/admin.token");
    let t = std::time::Instant::now();
    while !token_file.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = |json: bool| {
        let c = config.to_str().unwrap();
        let mut args = vec!["status", "-c", c];
        if json {
            args.push("--json");
        }
        ringway(&args)
    };
    let t = std::time::Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, out, err) = status(false);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("route web"), "{out}");
    // Over TCP, at the address /status names: the token is required there too.
    let (_, out, _) = status(true);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let admin = v["admin"].as_str().unwrap().to_string();
    let (code, _) = curl(&format!("http://{admin}/status"), &[]);
    assert_eq!(code, 401);
}

/// A slowloris (connections that never finish their request head) does not starve the API:
/// other sources are served at once, and the slow connections are closed after 5 s.
#[test]
fn slowloris_does_not_starve_the_admin_api() {
    use std::io::{Read, Write};
    let a = HttpBackend::start("A");
    let pb = ProxyBuilder::new(true).route(&[a.addr], "");
    let p = pb
        .admin_extra("allow = [\"127.0.0.1/32\", \"127.0.0.3/32\"]")
        .start();
    let slow = |from: &str, n: usize| -> Vec<std::net::TcpStream> {
        (0..n)
            .filter_map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                let src: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
                s.bind(&src.into()).unwrap();
                s.connect(&p.admin.into()).ok()?;
                let mut s: std::net::TcpStream = s.into();
                s.write_all(b"GET /sta").ok()?;
                Some(s)
            })
            .collect()
    };
    // From an allowed source and from a denied one, more than their caps (64 and 4).
    let created = std::time::Instant::now();
    let mut held = slow("127.0.0.1", 100);
    let denied = slow("127.0.0.2", 50);
    assert!(held.len() >= 100 && denied.len() >= 40);
    // Past its cap, a denied source's connections are closed at once.
    let closed = denied
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut b = [0u8; 64];
            match (&**s).read(&mut b) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert!(
        closed >= denied.len() - 4,
        "{closed} of {} closed",
        denied.len()
    );
    let t = std::time::Instant::now();
    for i in 0..10 {
        let (code, body) = curl(
            &url(&p, "/health"),
            &["--interface", "127.0.0.3", "-H", &bearer(TOKEN)],
        );
        assert_eq!(code, 200, "request {i} during the slowloris: {body}");
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The head timeout closes the slow connections (EOF or reset, not silence); the first
    // one is within the cap, so it is served, slowly, until that timeout.
    let mut s = held.swap_remove(0);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
    let held_for = created.elapsed();
    assert!(
        held_for > Duration::from_secs(3) && held_for < Duration::from_secs(8),
        "slow connection closed after {held_for:?} (head timeout 5 s)"
    );
}
