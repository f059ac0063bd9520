//! Test harness: a real `ringway` process with a generated configuration, real backends on
//! loopback (threads with std sockets), and helpers to inspect the process from /proc.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Every blocking socket op in tests is bounded by this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn ringway_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringway"))
}

/// An address nobody listens on (for a backend that must refuse): a port the kernel gave a
/// listener that is closed right away.
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr")
}

/// A listener with a deep backlog (std's 128 drops SYNs under 1,000 simultaneous connects).
pub fn listen_backlog(addr: SocketAddr, backlog: i32) -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(backlog).unwrap();
    s.into()
}

/// Connects once `addr` accepts (a process just started), up to `limit`; timeouts set.
pub fn wait_connect(addr: SocketAddr, limit: Duration) -> TcpStream {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            return s;
        }
        assert!(Instant::now() < deadline, "{addr} never accepted");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connects with read/write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to proxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Connects and reads to EOF; a reset during the handshake counts as a reset (the proxy may
/// reset before the client's connect() returns).
pub fn connect_and_read(addr: SocketAddr) -> Result<Vec<u8>, io::ErrorKind> {
    match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
        Ok(mut s) => {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            read_to_end(&mut s)
        }
        Err(e) => Err(e.kind()),
    }
}

/// Reads until EOF; `Err` carries the error kind (e.g. ConnectionReset).
pub fn read_to_end(s: &mut TcpStream) -> Result<Vec<u8>, io::ErrorKind> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.kind()),
        }
    }
}

/// Closes a socket with a reset.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

/// Deterministic pseudo-random bytes (xorshift64*), so a receiver can check every byte.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `total` pattern bytes, then shuts down writing.
pub fn send_pattern(s: &mut TcpStream, seed: u64, total: usize) -> io::Result<()> {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 65536];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        s.write_all(&buf[..n])?;
        left -= n;
    }
    s.shutdown(Shutdown::Write)
}

/// Reads to EOF and checks every byte against the pattern; returns the byte count.
pub fn check_pattern(s: &mut TcpStream, seed: u64) -> io::Result<usize> {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 65536];
    let mut expect = vec![0u8; 65536];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        // The pattern is generated in 64 KiB blocks on the sender side: regenerate per block.
        let mut done = 0;
        while done < n {
            let offset = total % 65536;
            if offset == 0 {
                p.fill(&mut expect);
            }
            let take = (n - done).min(65536 - offset);
            if buf[done..done + take] != expect[offset..offset + take] {
                return Err(io::Error::other(format!(
                    "byte mismatch near offset {total}"
                )));
            }
            done += take;
            total += take;
        }
    }
}

/// A backend: accepts on its own thread and runs `handler` on a thread per connection.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = listen_backlog("127.0.0.1:0".parse().unwrap(), 4096);
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                conn.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let h = handler.clone();
                thread::spawn(move || h(conn));
            }
        });
        Backend {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Echoes every byte; on EOF shuts down writing.
    pub fn echo() -> Backend {
        Backend::echo_after(b"")
    }

    /// Sends `greeting` first (so a client knows where it landed), then echoes.
    pub fn echo_after(greeting: &'static [u8]) -> Backend {
        Backend::start(move |mut s| {
            if s.write_all(greeting).is_err() {
                return;
            }
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener that never accepts and whose queue is full, so new SYNs are dropped.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl BlackHole {
    pub fn new() -> BlackHole {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue (backlog 0 admits one); later SYNs are dropped.
        let mut fillers = Vec::new();
        for _ in 0..3 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(c) => fillers.push(c),
                Err(_) => break,
            }
        }
        BlackHole {
            addr,
            _listener: s,
            _fillers: fillers,
        }
    }
}

/// Builds a configuration and starts `ringway run -c` on it. Every address is port 0 unless
/// a test names one: ringway binds what the kernel gives, and the test learns the addresses
/// from `/status` (over the admin unix socket, with the crate's own client) once ringway has
/// said `READY=1` on a stand-in `NOTIFY_SOCKET`.
#[derive(Clone)]
pub struct ProxyBuilder {
    pub workers: usize,
    /// The relay mode (`runtime.splice`).
    pub relay: Relay,
    pub grace: &'static str,
    pub routes: Vec<String>,
    pub driver: &'static str,
    /// Extra `[admin]` lines (allow, unix, listen_range, ...).
    pub admin_extra: String,
    /// Requests per second per source (high by default: tests poll `/status`).
    pub rate_limit: u32,
    /// The state file; default: one in the proxy's own temporary directory.
    pub state_file: Option<PathBuf>,
    /// Extra `[runtime]` lines.
    pub runtime_extra: String,
    /// The admin unix socket; default: `admin.sock` in the proxy's temporary directory.
    pub admin_socket: Option<PathBuf>,
    /// Start under `prlimit --nofile=N:N` (soft and hard open-files limit).
    pub nofile: Option<u64>,
    /// Longest `start` waits for READY=1 (default [`READY_LIMIT`]).
    pub ready_limit: Duration,
}

/// How long a start waits for READY=1 unless a test says otherwise.
pub const READY_LIMIT: Duration = Duration::from_secs(20);

/// The relay modes of `runtime.splice`; relay tests run on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// `"auto"` (the default): buffered, moving a direction to splice when a read fills the buffer.
    Auto,
    /// `false`: buffered only.
    Buffered,
    /// `true`: splice from the first byte.
    Splice,
}

impl Relay {
    pub const ALL: [Relay; 3] = [Relay::Auto, Relay::Buffered, Relay::Splice];

    /// The value of `runtime.splice` in a configuration file.
    pub fn toml(self) -> &'static str {
        match self {
            Relay::Auto => "\"auto\"",
            Relay::Buffered => "false",
            Relay::Splice => "true",
        }
    }
}

impl From<bool> for Relay {
    fn from(splice: bool) -> Relay {
        if splice {
            Relay::Splice
        } else {
            Relay::Buffered
        }
    }
}

/// The admin token the test configurations set.
pub const TOKEN: &str = "test-token-0123456789abcdef";

impl ProxyBuilder {
    /// `relay`: a [`Relay`], or a bool as `runtime.splice` reads it (true = always splice,
    /// false = buffered only).
    pub fn new(relay: impl Into<Relay>) -> Self {
        ProxyBuilder {
            workers: 2,
            relay: relay.into(),
            grace: "5s",
            routes: Vec::new(),
            driver: "io_uring",
            admin_extra: String::new(),
            rate_limit: 100_000,
            state_file: None,
            runtime_extra: String::new(),
            admin_socket: None,
            nofile: None,
            ready_limit: READY_LIMIT,
        }
    }

    /// Waits at most `limit` for READY=1 when started.
    pub fn ready_within(mut self, limit: Duration) -> Self {
        self.ready_limit = limit;
        self
    }

    /// Starts ringway with an open-files limit of `n` (soft and hard: it cannot raise it).
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    pub fn admin_socket(mut self, path: &std::path::Path) -> Self {
        self.admin_socket = Some(path.to_path_buf());
        self
    }

    pub fn admin_extra(mut self, lines: &str) -> Self {
        self.admin_extra.push_str(lines);
        self.admin_extra.push('\n');
        self
    }

    pub fn runtime_extra(mut self, lines: &str) -> Self {
        self.runtime_extra.push_str(lines);
        self.runtime_extra.push('\n');
        self
    }

    pub fn rate_limit(mut self, n: u32) -> Self {
        self.rate_limit = n;
        self
    }

    pub fn state_file(mut self, path: &std::path::Path) -> Self {
        self.state_file = Some(path.to_path_buf());
        self
    }

    /// Adds a route (named r0, r1, ...) on a port the kernel picks; after `start`,
    /// `proxy.addr("r0")` says which.
    pub fn route(self, backends: &[SocketAddr], extra: &str) -> Self {
        self.route_at("127.0.0.1:0".parse().unwrap(), backends, extra)
    }

    /// Adds a route (named r0, r1, ...) listening on `listen`.
    pub fn route_at(self, listen: SocketAddr, backends: &[SocketAddr], extra: &str) -> Self {
        let name = format!("r{}", self.routes.len());
        self.named_route(&name, listen, backends, extra)
    }

    /// Adds a route named `name` listening on `listen`.
    pub fn named_route(
        mut self,
        name: &str,
        listen: SocketAddr,
        backends: &[SocketAddr],
        extra: &str,
    ) -> Self {
        self.routes.push(route_toml(name, listen, backends, extra));
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    pub fn grace(mut self, g: &'static str) -> Self {
        self.grace = g;
        self
    }

    fn admin_sock(&self, dir: &std::path::Path) -> PathBuf {
        self.admin_socket
            .clone()
            .unwrap_or_else(|| dir.join("admin.sock"))
    }

    /// The configuration file's text; the admin API listens on a port the kernel picks and
    /// on a unix socket (`admin.sock` in `dir` unless set).
    pub fn toml(&self, dir: &std::path::Path, state: &std::path::Path) -> String {
        format!(
            "[runtime]\nworkers = {}\npin = false\nsplice = {}\ndriver = \"{}\"\nshutdown_grace = \"{}\"\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\nunix = \"{}\"\ntoken = \"{TOKEN}\"\nrate_limit = {}\n{}\n[state]\nfile = \"{}\"\n\n{}",
            self.workers,
            self.relay.toml(),
            self.driver,
            self.grace,
            self.runtime_extra,
            self.admin_sock(dir).display(),
            self.rate_limit,
            self.admin_extra,
            state.display(),
            self.routes.join("\n")
        )
    }

    pub fn start(self) -> Proxy {
        self.try_start()
            .unwrap_or_else(|logs| panic!("ringway did not start:\n{logs}"))
    }

    /// Starts ringway; `Err(log)` when it exits before it is ready.
    pub fn try_start(self) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ringway.toml");
        let state = self
            .state_file
            .clone()
            .unwrap_or_else(|| dir.path().join("state.json"));
        std::fs::write(&config, self.toml(dir.path(), &state)).unwrap();
        let sock = self.admin_sock(dir.path());
        let mut p = Proxy::spawn_limited(
            dir,
            config,
            sock,
            self.workers,
            self.nofile,
            self.ready_limit,
        )?;
        p.state = state;
        Ok(p)
    }
}

/// One `[[route]]` table.
pub fn route_toml(name: &str, listen: SocketAddr, backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[[route]]\nname = \"{name}\"\nlisten = [\"{listen}\"]\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// A running ringway process (killed on drop if still running).
pub struct Proxy {
    pub child: Child,
    /// The admin API's TCP address (as `/status` reports it).
    pub admin: SocketAddr,
    pub admin_sock: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    /// The state file.
    pub state: PathBuf,
    pub workers: usize,
    /// The stand-in for systemd's notify socket.
    notify: std::os::unix::net::UnixDatagram,
    /// Notifications received so far (READY=1, RELOADING=1, ...), one datagram each.
    pub notified: std::cell::RefCell<Vec<String>>,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `ringway run -c config` and waits for READY=1 (or its exit).
    pub fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        admin_sock: PathBuf,
        workers: usize,
    ) -> Result<Proxy, String> {
        Proxy::spawn_limited(dir, config, admin_sock, workers, None, READY_LIMIT)
    }

    /// [`Proxy::spawn`], under `prlimit --nofile=N:N` when `nofile` is set (prlimit execs
    /// ringway: same pid), waiting at most `ready_limit` for READY=1.
    pub fn spawn_limited(
        dir: tempfile::TempDir,
        config: PathBuf,
        admin_sock: PathBuf,
        workers: usize,
        nofile: Option<u64>,
        ready_limit: Duration,
    ) -> Result<Proxy, String> {
        let log = dir.path().join("ringway.log");
        let notify_path = dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut command = match nofile {
            None => Command::new(ringway_bin()),
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(ringway_bin());
                c
            }
        };
        let child = command
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ringway");
        let mut p = Proxy {
            child,
            admin: "127.0.0.1:0".parse().unwrap(),
            admin_sock,
            log,
            state: dir.path().join("state.json"),
            config,
            workers,
            notify,
            notified: Default::default(),
            dir,
        };
        p.wait_ready(ready_limit)?;
        let status = p.status();
        p.admin = status["admin"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("/status names the admin address");
        Ok(p)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.wait_notified("READY=1", Duration::from_millis(100)) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited ({status}):\n{}", self.logs()));
            }
        }
        Err(format!("no READY=1 within {limit:?}:\n{}", self.logs()))
    }

    /// Waits up to `limit` for a notification containing `what` that was not seen yet;
    /// consumes it.
    pub fn wait_notified(&self, what: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut seen = self.notified.borrow_mut();
                if let Some(i) = seen.iter().position(|m| m.contains(what)) {
                    seen.remove(i);
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.notified.borrow_mut().push(msg);
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the configuration file with what `b` writes (same admin socket and state
    /// file), as an editor saves: a temporary file renamed over it.
    pub fn rewrite(&self, b: &ProxyBuilder) {
        self.write_config(b.toml(self.dir.path(), &self.state).as_bytes());
    }

    /// Replaces the configuration file with `bytes` (temporary file, rename).
    pub fn write_config(&self, bytes: &[u8]) {
        let tmp = self.dir.path().join(".ringway.toml.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// `POST /reload`; returns (status, body).
    pub fn reload(&self) -> (u16, String) {
        self.admin_call("POST", "/reload", None)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first listen address of route `name`, as bound.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let status = self.status();
        let routes = status["routes"].as_array().expect("routes");
        let route = routes
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name} in {status}"));
        route["listen"][0]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("route {name} has no listen address: {route}"))
    }

    /// Open file descriptors of the process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Threads of the process (kernel io-wq threads included).
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `GET` on the admin API; returns the body.
    pub fn admin_get(&self, path: &str) -> String {
        self.admin_call("GET", path, None).1
    }

    /// An authenticated admin call over the unix socket, with the crate's own client;
    /// returns (status, body).
    pub fn admin_call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.admin_call_with(method, path, body, &[])
    }

    /// [`Proxy::admin_call`] with extra headers.
    pub fn admin_call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let target = ringway::client::Target::Unix(self.admin_sock.clone());
        let method = hyper::Method::from_bytes(method.as_bytes()).expect("a method");
        let a = ringway::client::http::request(
            &target,
            TOKEN,
            method,
            path,
            body.map(str::to_string),
            headers,
        )
        .unwrap_or_else(|e| panic!("admin API: {e}\n{}", self.logs()));
        (a.status, a.body)
    }

    /// `POST /routes/{route}/switch {"to": [...]}`; returns (status, body).
    pub fn switch(&self, route: &str, to: &[SocketAddr]) -> (u16, String) {
        let list: Vec<String> = to.iter().map(|a| format!("\"{a}\"")).collect();
        let body = format!("{{\"to\": [{}]}}", list.join(","));
        self.admin_call("POST", &format!("/routes/{route}/switch"), Some(&body))
    }

    /// The `/status` document.
    pub fn status(&self) -> serde_json::Value {
        let body = self.admin_get("/status");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("status is JSON: {body}"))
    }

    /// The value of one Prometheus sample line (exact name+labels), after a fresh snapshot.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.admin_get("/metrics").lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Polls until `f` holds (up to `limit`).
    pub fn eventually(&self, limit: Duration, mut f: impl FnMut(&Proxy) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (libc::kill, no shell).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill(2) with a pid this test spawned (and has not reaped: `child` is
        // still held) and a valid signal number; no memory is passed.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for exit up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `/status` from a ringway started outside [`Proxy`], over its admin unix socket, once it
/// answers (up to `limit`).
pub fn wait_status(sock: &std::path::Path, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let target = ringway::client::Target::Unix(sock.to_path_buf());
        let answer = ringway::client::http::request(
            &target,
            TOKEN,
            hyper::Method::GET,
            "/status",
            None,
            &[],
        );
        if let Some(a) = answer.ok().filter(|a| a.status == 200) {
            return serde_json::from_str(&a.body).expect("status is JSON");
        }
        assert!(
            Instant::now() < deadline,
            "no /status on {}",
            sock.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `ringway` with arguments; returns (exit code, stdout, stderr).
pub fn ringway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ringway_bin())
        .args(args)
        .output()
        .expect("run ringway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl with extra arguments; returns (HTTP status, body). Status 0: no answer. For what
/// only a separate client can do (another source address, raw headers).
pub fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Resident memory of process `pid` in KiB (`VmRSS` in /proc/PID/status); `None` once it is
/// gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The names of the threads of process `pid` (`comm`: `ringway-w0`, `iou-wrk-1234`, ...),
/// for messages about thread counts.
pub fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

impl Proxy {
    /// The proxy's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).unwrap_or_else(|| panic!("no VmRSS for ringway\n{}", self.logs()))
    }
}

/// A backend that accepts and holds every connection, with no thread per connection (for
/// thousands of idle sessions); [`HoldBackend::close_all`] closes what it holds.
pub struct HoldBackend {
    pub addr: SocketAddr,
    held: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HoldBackend {
    pub fn start() -> HoldBackend {
        let listener = listen_backlog("127.0.0.1:0".parse().unwrap(), 4096);
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (keep, flag) = (held.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    keep.lock().unwrap().push(conn);
                }
            }
        });
        HoldBackend {
            addr,
            held,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted and still held.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// Closes every connection held (a clean close: nothing was read or written).
    pub fn close_all(&self) {
        self.held.lock().unwrap().clear();
    }
}

impl Drop for HoldBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.close_all();
    }
}
