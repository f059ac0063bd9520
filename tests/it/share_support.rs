//! Helpers for the shared-address tests (tests/it/share.rs): a fixed free port several routes
//! can name, labelled metric look-ups, real TLS servers (python3 `ssl`, certificates made by
//! `openssl req`), real ClientHellos captured from `openssl s_client`, recording backends, a
//! backend that parses PROXY headers (HAProxy, or nginx where HAProxy is missing) and raw
//! clients bound to a chosen loopback source address.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Backend, IO_TIMEOUT, Proxy, ProxyBuilder};

/// A loopback address with a port nobody holds right now (a listener the kernel gave a port
/// to, closed at once): several routes can name it, where port 0 would give each its own.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

/// Starts the proxy `build` makes for a shared address from [`free_addr`]; when the port was
/// taken in the meantime (another test got it), tries again with a new one (3 tries).
pub fn start_shared(build: impl Fn(SocketAddr) -> ProxyBuilder) -> (Proxy, SocketAddr) {
    let mut last = String::new();
    for _ in 0..3 {
        let shared = free_addr();
        match build(shared).try_start() {
            Ok(p) => return (p, shared),
            Err(log) if log.contains("in use") || log.contains("another process") => last = log,
            Err(log) => panic!("ringway did not start:\n{log}"),
        }
    }
    panic!("no free port for a shared address after 3 tries:\n{last}")
}

/// One `[[route]]` table: `keys` (route keys, one per line) and, when `matches` is not empty,
/// a `[route.match]` table with those lines. No `[route.match]`: the address's default.
pub fn route(
    name: &str,
    listen: SocketAddr,
    backends: &[SocketAddr],
    keys: &str,
    matches: &str,
) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    let mut t = format!(
        "[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nbackends = [{}]\n{keys}\n",
        list.join(", ")
    );
    if !matches.is_empty() {
        t.push_str(&format!("[route.match]\n{matches}\n"));
    }
    t
}

/// Adds raw `[[route]]` tables to a builder.
pub fn with_routes(mut b: ProxyBuilder, routes: &[String]) -> ProxyBuilder {
    b.routes.extend(routes.iter().cloned());
    b
}

/// The value of the sample of `name` whose labels include every `(key, value)` of `labels`
/// (in any order), from `/metrics`.
pub fn metric_of(p: &Proxy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    find_sample(&p.admin_get("/metrics"), name, labels)
}

fn find_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let has = |k: &str, v: &str| {
            let pair = format!("{k}=\"{v}\"");
            set.starts_with(&pair) || set.contains(&format!(",{pair}"))
        };
        labels
            .iter()
            .all(|(k, v)| has(k, v))
            .then(|| value.trim().parse().ok())?
    })
}

/// Waits (up to 5 s: the metrics are summed from worker snapshots about once a second) for
/// the sample to read `want`; panics with the samples of `name` otherwise.
pub fn expect_metric(p: &Proxy, name: &str, labels: &[(&str, &str)], want: f64) {
    let ok = p.eventually(Duration::from_secs(5), |p| {
        metric_of(p, name, labels) == Some(want)
    });
    if !ok {
        let text = p.admin_get("/metrics");
        let samples: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
        panic!(
            "{name}{labels:?} is not {want}; samples:\n{}",
            samples.join("\n")
        );
    }
}

/// Runs a command with its output captured; killed after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let killer = thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // Past the limit: this test's own child, by its pid.
            // SAFETY: kill(2) on a pid this function spawned and has not reaped yet (the
            // waiting thread below holds the Child until it is reaped after this signal).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t = thread::spawn(move || {
        let _ = se.read_to_end(&mut err);
        err
    });
    let _ = so.read_to_end(&mut out);
    let err = t.join().unwrap();
    let status = child.wait().expect("wait");
    let _ = done_tx.send(());
    killer.join().unwrap();
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

/// A self-signed certificate for `cn` (also its subjectAltName) in `dir`: (cert, key).
pub fn make_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let stem = cn.replace('*', "star");
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let out = run_bounded(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", &format!("subjectAltName=DNS:{cn}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "openssl req (apt-get install openssl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

const TLS_SERVER_PY: &str = r#"
import ssl, sys, http.server
name, cert, key = sys.argv[1:4]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
srv = S(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// An HTTPS server (python3 `ssl` + `http.server`) with its own self-signed certificate for
/// `cn`, answering every GET with its name; killed on drop.
pub struct TlsServer {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub fn start(name: &str, cn: &str) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make_cert(dir.path(), cn);
        let mut child = Command::new("python3")
            .args(["-c", TLS_SERVER_PY, name])
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 (apt-get install python3)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the python3 TLS server {name} did not start: {line:?}");
        };
        TlsServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl -sk --resolve NAME:PORT:IP https://NAME:PORT/`: (HTTP status, body); 0: no answer.
pub fn curl_https(name: &str, addr: SocketAddr) -> (u16, String) {
    let port = addr.port();
    crate::support::curl(
        &format!("https://{name}:{port}/"),
        &[
            "-k",
            "--max-time",
            "10",
            "--resolve",
            &format!("{name}:{port}:{}", addr.ip()),
        ],
    )
}

/// The bytes of a real ClientHello for `sni` (the first TLS record `openssl s_client
/// -servername SNI` sends), captured on a raw listener.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl (apt-get install openssl)");
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match l.accept() {
            Ok((c, _)) => break Some(c),
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    let mut hello = Vec::new();
    if let Some(mut c) = conn {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        while hello.len() < 5
            || hello.len() < 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))
        {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => hello.extend_from_slice(&buf[..n]),
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        hello.len() > 5 && hello[0] == 0x16 && hello[5] == 0x01,
        "no ClientHello from openssl s_client: {hello:?}"
    );
    assert_eq!(
        hello.len(),
        5 + usize::from(u16::from_be_bytes([hello[3], hello[4]])),
        "one whole record"
    );
    hello
}

/// Connects, sends `first` and reads the backend's one-byte greeting
/// ([`Backend::echo_after`] with a one-letter name): which backend the route chose.
pub fn greeting_after(addr: SocketAddr, first: &[u8]) -> Result<char, io::ErrorKind> {
    let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| e.kind())?;
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(first).map_err(|e| e.kind())?;
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof),
        Ok(_) => Ok(b[0] as char),
        Err(e) => Err(e.kind()),
    }
}

/// Whether `ip` can be bound here (127.0.0.2 and up are loopback on Linux, not everywhere).
pub fn can_bind(ip: IpAddr) -> bool {
    TcpListener::bind((ip, 0)).is_ok()
}

/// A TCP connection to `to` from source address `from` (port from the kernel); timeouts set.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), IO_TIMEOUT)?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

/// A raw HTTP/1.1 exchange from `from`: `prefix` (a PROXY header, say), then `GET path` with
/// `Host: host`, `Connection: close`; (status, body) of the answer, or the error kind of a
/// connection that was reset or closed without an answer (`UnexpectedEof`).
pub fn http_from(
    from: IpAddr,
    to: SocketAddr,
    prefix: &[u8],
    host: &str,
    path: &str,
) -> Result<(u16, String), io::ErrorKind> {
    let mut c = connect_from(from, to).map_err(|e| e.kind())?;
    let mut req = prefix.to_vec();
    req.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    // A write into a connection the proxy already reset may fail: the read tells.
    let _ = c.write_all(&req);
    let got = crate::support::read_to_end(&mut c)?;
    if got.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Sends `bytes` and reads to the end: `true` when the proxy reset the connection or closed
/// it without a byte (what a rejected client sees).
pub fn rejected(c: &mut TcpStream, bytes: &[u8]) -> bool {
    // A proxy that holds the connection instead fails this in 5 s, not in IO_TIMEOUT.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(bytes);
    match crate::support::read_to_end(c) {
        Err(io::ErrorKind::ConnectionReset) => true,
        Ok(v) => v.is_empty(),
        Err(_) => false,
    }
}

/// A PROXY v2 header (PROXY command, TCP over IPv4).
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

/// A backend that records, per connection, every byte it received until EOF (it sends
/// `greeting` first).
pub struct Recorder {
    pub backend: Backend,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    pub fn start(greeting: &'static [u8]) -> Recorder {
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        let backend = Backend::start(move |mut s| {
            let _ = s.write_all(greeting);
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            keep.lock().unwrap().push(all);
            let _ = s.shutdown(Shutdown::Write);
        });
        Recorder { backend, got }
    }

    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// What each finished connection carried, in order of completion.
    pub fn sessions(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }
}

/// An HTTP backend that answers every request with its name and records the bytes before
/// the end of each request head (to see what the proxy sent in front of it).
pub struct HeadBackend {
    pub backend: Backend,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl HeadBackend {
    pub fn start(name: &'static str) -> HeadBackend {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let keep = heads.clone();
        let backend = Backend::start(move |mut s| {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if head.is_empty() {
                return;
            }
            keep.lock().unwrap().push(head);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = s.write_all(resp.as_bytes());
            let _ = s.shutdown(Shutdown::Write);
            let _ = s.read(&mut buf);
        });
        HeadBackend { backend, heads }
    }

    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    pub fn heads(&self) -> Vec<Vec<u8>> {
        self.heads.lock().unwrap().clone()
    }
}

/// An HTTP server behind a PROXY-protocol listener (HAProxy `bind ... accept-proxy`, or nginx
/// `listen ... proxy_protocol` where HAProxy is not installed) answering every request with
/// the client address the PROXY header carried; stopped on drop.
pub struct SourceEcho {
    pub addr: SocketAddr,
    pub tool: &'static str,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where `tool` is installed (sbin included: not on every user's PATH).
fn installed(tool: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join(tool))
    .find(|p| p.exists())
}

impl SourceEcho {
    pub fn start() -> SourceEcho {
        let (tool, bin) = match (installed("haproxy"), installed("nginx")) {
            (Some(bin), _) => ("haproxy", bin),
            (None, Some(bin)) => ("nginx", bin),
            (None, None) => {
                panic!("neither haproxy nor nginx is installed (apt-get install haproxy)")
            }
        };
        let mut last = String::new();
        for _ in 0..3 {
            match SourceEcho::try_start(tool, &bin) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("{tool} did not start:\n{last}");
    }

    fn try_start(tool: &'static str, bin: &Path) -> Result<SourceEcho, String> {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let log = dir.path().join("server.log");
        let mut cmd;
        if tool == "haproxy" {
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 256\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\nfrontend f\n  bind {addr} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"%[src]\"\n"
                ),
            )
            .unwrap();
            cmd = Command::new(bin);
            cmd.arg("-db").arg("-f").arg(&cfg);
        } else {
            let cfg = dir.path().join("nginx.conf");
            let d = dir.path().display();
            std::fs::write(
                &cfg,
                format!(
                    "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  server {{\n    listen {addr} proxy_protocol;\n    default_type text/plain;\n    return 200 \"$proxy_protocol_addr\";\n  }}\n}}\n"
                ),
            )
            .unwrap();
            cmd = Command::new(bin);
            cmd.arg("-p").arg(dir.path()).arg("-c").arg(&cfg);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("spawn {tool}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "{tool} exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(SourceEcho {
                    addr,
                    tool,
                    child,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{tool} never listened on {addr}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SourceEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A duration as the configuration writes it ("1s", "250ms", "1.5s", "2m"), in milliseconds.
pub fn duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some((n * scale).round() as u64)
}
