//! Test applications for the control-plane tests: an HTTP backend that answers `/health`
//! (with a status the test sets) and names itself in every other answer, and the project's
//! own open-loop load tool (`ringway-load`) run against a proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// An HTTP/1.1 backend: `GET /health` answers the status in `health`; any other path
/// answers 200 with the backend's name as the body (and is counted, with its time).
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub health: Arc<AtomicU16>,
    served: Arc<Mutex<Vec<Instant>>>,
    sock: Arc<Socket>,
    stopped: Arc<AtomicBool>,
}

impl HttpBackend {
    pub fn start(name: &'static str) -> HttpBackend {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        sock.listen(4096).unwrap();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        let b = HttpBackend {
            addr,
            health: Arc::new(AtomicU16::new(200)),
            served: Arc::new(Mutex::new(Vec::new())),
            sock: Arc::new(sock),
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let (sock, health, served, stopped) = (
            b.sock.clone(),
            b.health.clone(),
            b.served.clone(),
            b.stopped.clone(),
        );
        thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((conn, _)) = sock.accept() else { break };
                let conn: TcpStream = conn.into();
                let (health, served) = (health.clone(), served.clone());
                thread::spawn(move || serve(conn, name, &health, &served));
            }
        });
        b
    }

    /// Non-health requests answered so far.
    pub fn served(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    /// Stops listening: new connections are refused from now on.
    pub fn refuse(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(Shutdown::Read);
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.refuse();
    }
}

fn serve(mut c: TcpStream, name: &str, health: &AtomicU16, served: &Mutex<Vec<Instant>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/health" {
        (health.load(Ordering::SeqCst), "health")
    } else {
        served.lock().unwrap().push(Instant::now());
        (200, name)
    };
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.write_all(resp.as_bytes());
    let _ = c.shutdown(Shutdown::Write);
    let _ = c.read(&mut buf);
}

/// One HTTP GET through `addr`; the body, or why it failed.
pub fn get(addr: SocketAddr) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("bad answer: {text:?}")),
    }
}

/// The `ringway-load` binary (built by `cargo test --workspace`; built here if missing).
pub fn load_bin() -> PathBuf {
    let bin = crate::support::ringway_bin().with_file_name("ringway-load");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", "ringway-load"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok && bin.exists(), "cannot build ringway-load");
    }
    bin
}

/// An open-loop load running in the background: new connection per request at `rate`/s.
pub struct Load {
    child: Child,
}

impl Load {
    pub fn conn(target: SocketAddr, rate: u32, duration: Duration) -> Load {
        let child = Command::new(load_bin())
            .args(["--mode", "conn", "--exchange", "http", "--timeout", "3s"])
            .args(["--target", &target.to_string()])
            .args(["--rate", &rate.to_string()])
            .args(["--duration", &format!("{}ms", duration.as_millis())])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ringway-load");
        Load { child }
    }

    /// Waits for the end; returns the JSON report.
    pub fn finish(self) -> serde_json::Value {
        let out = self.child.wait_with_output().expect("ringway-load ran");
        serde_json::from_slice(&out.stdout).expect("ringway-load printed JSON")
    }
}

/// (ok, failed) from a ringway-load report.
pub fn outcome(report: &serde_json::Value) -> (u64, u64) {
    (
        report["outcomes"]["ok"].as_u64().unwrap_or(0),
        report["failed"].as_u64().unwrap_or(u64::MAX),
    )
}
