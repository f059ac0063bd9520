//! Backend protection: passive ejection (`[route.eject]`) and a backend's own
//! `max_connections`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::*;

/// A backend address that refuses (a socket bound, not listening: the kernel resets SYNs)
/// until [`Refuser::listen`], which keeps the same port (nobody else can take it meanwhile).
struct Refuser {
    addr: SocketAddr,
    sock: Option<socket2::Socket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Refuser {
    fn new() -> Refuser {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        Refuser {
            addr,
            sock: Some(s),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// Starts accepting: each connection gets `greeting`, then is closed.
    fn listen(&mut self, greeting: &'static [u8]) {
        let s = self.sock.take().expect("listens once");
        s.listen(1024).unwrap();
        let listener: TcpListener = s.into();
        let stop = self.stop.clone();
        self.thread = Some(thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(mut c) = conn {
                    let _ = c.write_all(greeting);
                }
            }
        }));
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
    }
}

/// One connection: the backend's greeting byte, or the error.
fn greeting(addr: SocketAddr) -> Result<u8, String> {
    let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(b[0])
}

/// A backend in `/status` (route r0).
fn backend(p: &Proxy, addr: SocketAddr) -> serde_json::Value {
    let status = p.status();
    status["routes"][0]["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|b| b["addr"] == addr.to_string()).cloned())
        .unwrap_or_else(|| panic!("{addr} not in {status}"))
}

/// One of two backends refuses while clients connect at about 1,000 a second for three
/// seconds: the retries hide every refusal from the clients, the backend is ejected (in
/// `/status`, in both metrics and in the log), and once it listens again it takes sessions
/// within its ejection time (capped at 1 s here).
#[test]
fn a_refusing_backend_is_ejected_unseen_by_clients_and_returns() {
    let live = Backend::echo_after(b"L");
    let mut down = Refuser::new();
    let proxy = ProxyBuilder::new(true)
        .route(
            &[down.addr, live.addr],
            "[route.eject]\nafter = 3\ntime = \"500ms\"\nmax_time = \"1s\"",
        )
        .start();
    let addr = proxy.addr("r0");

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let loaders: Vec<JoinHandle<()>> = (0..4u32)
        .map(|_| {
            let (ok, failed) = (ok.clone(), failed.clone());
            thread::spawn(move || {
                // 250 a second per thread, on a schedule (no sleep when behind).
                let mut k = 0u32;
                while start.elapsed() < run_for {
                    let due = start + Duration::from_millis(4) * k;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    k += 1;
                    match greeting(addr) {
                        Ok(b'L') => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(other) => failed.lock().unwrap().push(format!("greeting {other}")),
                        Err(e) => failed.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    // While the load runs, /status shows it out and the gauge counts the workers.
    let seen_out = proxy.eventually(run_for, |p| {
        let b = backend(p, down.addr);
        b["ejected"] == true && b["ejected_workers"].as_u64().is_some_and(|n| n >= 1)
    });
    let gauge = format!(
        "ringway_backend_ejected{{route=\"r0\",backend=\"{}\"}}",
        down.addr
    );
    for l in loaders {
        l.join().unwrap();
    }
    let served = ok.load(Ordering::Relaxed);
    let failed = failed.lock().unwrap().clone();
    println!(
        "served {served} connections in {:?}; failures: {}",
        start.elapsed(),
        failed.len()
    );
    assert!(failed.is_empty(), "client-visible failures: {failed:?}");
    assert!(served > 100, "only {served} connections were made");
    assert!(
        seen_out,
        "never ejected in /status: {}",
        backend(&proxy, down.addr)
    );
    let total = format!(
        "ringway_backend_ejections_total{{route=\"r0\",backend=\"{}\"}}",
        down.addr
    );
    assert!(
        proxy.eventually(Duration::from_secs(3), |p| p
            .metric(&total)
            .is_some_and(|n| n >= 1.0)),
        "{total}: {:?}",
        proxy.metric(&total)
    );
    assert!(proxy.metric(&gauge).is_some(), "{gauge} is exported");
    assert!(backend(&proxy, down.addr)["ejections"].as_u64() >= Some(1));
    assert!(proxy.logs().contains("backend ejected"), "{}", proxy.logs());

    // It recovers: within max_time (1 s) of its last ejection it gets sessions again.
    down.listen(b"D");
    let back = Instant::now();
    let mut landed = false;
    while back.elapsed() < Duration::from_secs(5) {
        if greeting(addr) == Ok(b'D') {
            landed = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    println!("back after {:?}", back.elapsed());
    assert!(landed, "the recovered backend got no session in 5 s");
    assert!(
        proxy.eventually(Duration::from_secs(3), |p| {
            let b = backend(p, down.addr);
            b["ejected"] == false && p.metric(&gauge) == Some(0.0)
        }),
        "still ejected: {}",
        backend(&proxy, down.addr)
    );
    assert!(proxy.logs().contains("back in"), "{}", proxy.logs());
}

/// With both backends refusing, `max_percent` (50 % of two: one) keeps one of them in, and
/// the route still tries the ejected one when the other fails: the clients are reset as
/// before, never left waiting.
#[test]
fn max_percent_never_ejects_the_whole_set() {
    let (a, b) = (Refuser::new(), Refuser::new());
    let proxy = ProxyBuilder::new(true)
        .workers(1)
        .route(
            &[a.addr, b.addr],
            "[route.eject]\nafter = 2\ntime = \"1h\"\nmax_percent = 50",
        )
        .start();
    let addr = proxy.addr("r0");
    for _ in 0..10 {
        assert_eq!(connect_and_read(addr), Err(ErrorKind::ConnectionReset));
    }
    let out = |p: &Proxy| {
        [a.addr, b.addr]
            .map(|x| backend(p, x)["ejected"] == true)
            .iter()
            .filter(|x| **x)
            .count()
    };
    assert!(
        proxy.eventually(Duration::from_secs(3), |p| out(p) == 1),
        "{}",
        proxy.status()["routes"][0]["backends"]
    );
    let refused = |p: &Proxy, x: SocketAddr| {
        p.metric(&format!(
            "ringway_connect_errors_total{{route=\"r0\",backend=\"{x}\",kind=\"refused\"}}"
        ))
        .unwrap_or(0.0)
    };
    // Both keep being tried (the ejected one as the retry of last resort).
    let before = [refused(&proxy, a.addr), refused(&proxy, b.addr)];
    for _ in 0..5 {
        assert_eq!(connect_and_read(addr), Err(ErrorKind::ConnectionReset));
    }
    assert!(
        proxy.eventually(Duration::from_secs(3), |p| {
            refused(p, a.addr) >= before[0] + 5.0 && refused(p, b.addr) >= before[1] + 5.0
        }),
        "before {before:?}, now {} and {}",
        refused(&proxy, a.addr),
        refused(&proxy, b.addr)
    );
    assert_eq!(out(&proxy), 1);
    let gauges: f64 = [a.addr, b.addr]
        .iter()
        .map(|x| {
            proxy
                .metric(&format!(
                    "ringway_backend_ejected{{route=\"r0\",backend=\"{x}\"}}"
                ))
                .unwrap_or(-1.0)
        })
        .sum();
    assert_eq!(gauges, 1.0);
}

/// A backend's own `max_connections`: the excess goes to the other backend; with every
/// backend full, a new connection is reset at once and counted; one closing makes room.
#[test]
fn backend_max_connections_moves_the_excess_then_resets() {
    let (h1, h2) = (HoldBackend::start(), HoldBackend::start());
    let mut b = ProxyBuilder::new(true).workers(1);
    b.routes.push(format!(
        "[[route]]\nname = \"r0\"\nlisten = [\"127.0.0.1:0\"]\nbackends = [{{ addr = \"{}\", max_connections = 2 }}, {{ addr = \"{}\", max_connections = 3 }}]\n",
        h1.addr, h2.addr
    ));
    let proxy = b.start();
    let addr = proxy.addr("r0");
    // Round robin alone would give 3 and 2; the limit of the first sends its third away.
    let mut clients: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    assert!(
        proxy.eventually(Duration::from_secs(5), |_| h1.held() == 2 && h2.held() == 3),
        "held {} and {}",
        h1.held(),
        h2.held()
    );
    assert_eq!(backend(&proxy, h1.addr)["max_connections"], 2);
    // Both full: reset at once, counted.
    assert_eq!(connect_and_read(addr), Err(ErrorKind::ConnectionReset));
    let full = "ringway_connections_rejected_total{route=\"r0\",reason=\"backends_full\"}";
    assert!(
        proxy.eventually(Duration::from_secs(3), |p| p.metric(full) == Some(1.0)),
        "{full}: {:?}",
        proxy.metric(full)
    );
    assert_eq!(h1.held() + h2.held(), 5);
    // One client leaves (a reset ends its session at once): the next one is served.
    reset(clients.remove(0));
    assert!(
        proxy.eventually(Duration::from_secs(5), |p| {
            p.metric("ringway_connections_active{route=\"r0\"}") == Some(4.0)
        }),
        "the session did not end"
    );
    clients.push(connect(addr));
    assert!(
        proxy.eventually(Duration::from_secs(5), |_| h1.held() + h2.held() == 6),
        "held {} and {}",
        h1.held(),
        h2.held()
    );
    assert_eq!(proxy.metric(full), Some(1.0));
}

/// Bad values of the new keys exit 64, naming the key and a fix.
#[test]
fn bad_eject_and_backend_limit_values_exit_64() {
    let route = "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\n";
    let one = "backends = [\"127.0.0.1:8080\"]\n";
    for (toml, key) in [
        (
            format!("{route}{one}[route.eject]\nafter = -2\n"),
            "eject.after",
        ),
        (
            format!("{route}{one}[route.eject]\ntime = \"0s\"\n"),
            "eject.time",
        ),
        (
            format!("{route}{one}[route.eject]\ntime = \"10s\"\nmax_time = \"5s\"\n"),
            "eject.max_time",
        ),
        (
            format!("{route}{one}[route.eject]\nmax_percent = 101\n"),
            "eject.max_percent",
        ),
        (
            format!("{route}{one}[route.eject]\nafter_failures = 3\n"),
            "after_failures",
        ),
        (
            format!("{route}backends = [{{ addr = \"127.0.0.1:8080\", max_connections = 0 }}]\n"),
            "backends[0].max_connections",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &toml).unwrap();
        let (code, _, err) = ringway(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 64, "exit code for:\n{toml}\nstderr: {err}");
        assert!(err.contains(key), "key {key:?} named in: {err}");
        assert!(err.contains("fix:"), "a fix in: {err}");
    }
}

/// `PUT /routes/{name}` takes the new keys, `config dump`-style output shows them, and a
/// bad value is a 400 that changes nothing.
#[test]
fn the_api_takes_and_shows_the_new_keys() {
    let h = HoldBackend::start();
    let proxy = ProxyBuilder::new(true).route(&[h.addr], "").start();
    let body = format!(
        "{{\"listen\": [\"127.0.0.1:0\"], \"backends\": [{{\"addr\": \"{}\", \"max_connections\": 9}}], \"eject\": {{\"after\": 7, \"time\": \"2s\"}}}}",
        h.addr
    );
    let (code, answer) = proxy.admin_call("PUT", "/routes/api", Some(&body));
    assert!(code == 200 || code == 201, "{code}: {answer}");
    let def = &proxy
        .status()
        .get("routes")
        .and_then(|r| r.as_array().cloned())
        .unwrap_or_default();
    assert!(def.iter().any(|r| r["name"] == "api"));
    let view: serde_json::Value = serde_json::from_str(&proxy.admin_get("/routes/api")).unwrap();
    let d = &view["definition"];
    assert_eq!(d["eject"]["after"], 7, "{view}");
    assert_eq!(d["eject"]["time"], "2s", "{view}");
    assert_eq!(d["backends"][0]["max_connections"], 9, "{view}");
    let bad = format!(
        "{{\"listen\": [\"127.0.0.1:0\"], \"backends\": [\"{}\"], \"eject\": {{\"max_percent\": 0}}}}",
        h.addr
    );
    let (code, answer) = proxy.admin_call("PUT", "/routes/api", Some(&bad));
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("eject.max_percent"), "{answer}");
    let again: serde_json::Value = serde_json::from_str(&proxy.admin_get("/routes/api")).unwrap();
    assert_eq!(again["definition"], view["definition"], "unchanged");
}
