//! Dead peers and visible causes: keepalive and the user timeout end a session whose peer
//! vanished, `half_close_timeout` ends a half-closed one whose other side stays silent, and
//! running out of file descriptors neither spins nor silences the admin API.
//!
//! A peer "vanishes" here by a socket filter that drops every segment arriving on its
//! socket (`SO_ATTACH_FILTER`, unprivileged): its kernel neither answers probes nor
//! acknowledges data, exactly as a host that lost power or a firewall that black-holes it.
//! (A SIGSTOPped process would not do: its kernel keeps answering keepalive probes.)

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::all_paths;
use crate::support::*;

/// Generous upper bound for anything that should take a few seconds.
const LONG: Duration = Duration::from_secs(30);

/// Makes `s`'s kernel drop every segment that arrives for it: the peer vanished.
fn black_hole(s: &TcpStream) {
    let drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    socket2::SockRef::from(s).attach_filter(&drop_all).unwrap();
}

/// A backend that answers "ping" with "pong", then vanishes (black hole: says so on the
/// returned receiver) and holds the socket until told (or `LONG`).
fn vanishing_backend() -> (Backend, mpsc::Sender<()>, mpsc::Receiver<()>) {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    let (gone_tx, gone_rx) = mpsc::channel::<()>();
    let gone_tx = std::sync::Mutex::new(gone_tx);
    let backend = Backend::start(move |mut s| {
        let mut buf = [0u8; 4];
        if s.read_exact(&mut buf).is_err() || s.write_all(b"pong").is_err() {
            return;
        }
        // Once "pong" is acknowledged (loopback: at once): a host that still retransmits
        // something is not gone, and ringway would rightly keep it.
        thread::sleep(Duration::from_millis(300));
        black_hole(&s);
        let _ = gone_tx.lock().unwrap().send(());
        let _ = done_rx.lock().unwrap().recv_timeout(LONG);
        drop(s);
    });
    (backend, done_tx, gone_rx)
}

fn ping(c: &mut TcpStream) {
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

/// Reads until the session ends (EOF, reset or another error); how long that took.
fn wait_end(c: &mut TcpStream) -> Duration {
    c.set_read_timeout(Some(LONG)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

fn ended(p: &Proxy, outcome: &str) -> f64 {
    p.metric(&format!(
        "ringway_sessions_ended_total{{route=\"r0\",outcome=\"{outcome}\"}}"
    ))
    .unwrap_or(0.0)
}

/// A backend that vanishes while the session is idle: keepalive (idle 1 s, interval 1 s,
/// count 2; user timeout derived: 3 s) gives it up within the stated bound (4 s; asserted
/// with a wide margin), the client is reset, and the outcome is `backend_timeout`.
#[test]
fn an_idle_session_to_a_vanished_backend_ends_by_keepalive() {
    let (backend, done, gone) = vanishing_backend();
    let p = ProxyBuilder::new(Relay::Auto)
        .route(
            &[backend.addr],
            "[route.keepalive]\nidle = \"1s\"\ninterval = \"1s\"\ncount = 2\n",
        )
        .start();
    let mut c = connect(p.addr("r0"));
    ping(&mut c);
    gone.recv_timeout(LONG).unwrap();
    let took = wait_end(&mut c);
    eprintln!("the session ended {took:?} after the backend vanished");
    assert!(
        took >= Duration::from_millis(500) && took < LONG,
        "the session ended after {took:?}\n{}",
        p.logs()
    );
    assert!(
        p.eventually(Duration::from_secs(5), |p| ended(p, "backend_timeout")
            == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
    let _ = done.send(());
}

/// A backend that vanishes while ringway has bytes for it, with probes off and
/// `user_timeout = "2s"`: the unacknowledged bytes give it up (`backend_timeout`).
#[test]
fn unacknowledged_bytes_to_a_vanished_backend_end_by_user_timeout() {
    let (backend, done, gone) = vanishing_backend();
    let p = ProxyBuilder::new(Relay::Auto)
        .route(
            &[backend.addr],
            "[route.keepalive]\nidle = \"0s\"\nuser_timeout = \"2s\"\n",
        )
        .start();
    let mut c = connect(p.addr("r0"));
    ping(&mut c);
    // Sent after the backend vanished: nobody acknowledges these bytes.
    gone.recv_timeout(LONG).unwrap();
    c.write_all(&[7u8; 64 * 1024]).unwrap();
    let took = wait_end(&mut c);
    eprintln!("the session ended {took:?} after the backend vanished");
    assert!(
        took < LONG,
        "the session ended after {took:?}\n{}",
        p.logs()
    );
    assert!(
        p.eventually(Duration::from_secs(5), |p| ended(p, "backend_timeout")
            == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
    let _ = done.send(());
}

/// A client that vanishes: the client socket inherited keepalive from its listener (no
/// system call per connection), so the session ends (`client_timeout`) and the backend
/// sees it close.
#[test]
fn a_vanished_client_ends_the_session_through_the_listeners_keepalive() {
    let (seen_tx, seen_rx) = mpsc::channel::<Duration>();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    let backend = Backend::start(move |mut s| {
        let mut buf = [0u8; 4];
        if s.read_exact(&mut buf).is_err() || s.write_all(b"pong").is_err() {
            return;
        }
        let took = wait_end(&mut s);
        let _ = seen_tx.lock().unwrap().send(took);
    });
    let p = ProxyBuilder::new(Relay::Auto)
        .route(
            &[backend.addr],
            "[route.keepalive]\nidle = \"1s\"\ninterval = \"1s\"\ncount = 2\n",
        )
        .start();
    let mut c = connect(p.addr("r0"));
    ping(&mut c);
    thread::sleep(Duration::from_millis(300));
    black_hole(&c);
    let took = seen_rx
        .recv_timeout(LONG + Duration::from_secs(5))
        .expect("the backend's session never ended");
    assert!(took < LONG, "ended after {took:?}");
    assert!(
        p.eventually(Duration::from_secs(5), |p| ended(p, "client_timeout")
            == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
}

/// The client sends 4 MiB and its FIN; the backend reads everything, then stays open and
/// silent. After `half_close_timeout` (1 s) ringway closes the session — with a FIN, since
/// nothing was held — and counts `half_close_timeout`; every byte reached the backend.
fn a_silent_half_closed_session_is_closed_after_half_close_timeout(relay: Relay) {
    const TOTAL: usize = 4 << 20;
    let (got_tx, got_rx) = mpsc::channel::<std::io::Result<usize>>();
    let got_tx = std::sync::Mutex::new(got_tx);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let done_rx = std::sync::Mutex::new(done_rx);
    let backend = Backend::start(move |mut s| {
        let got = check_pattern(&mut s, 42);
        let _ = got_tx.lock().unwrap().send(got);
        // Open and silent until the test ends (bounded).
        let _ = done_rx.lock().unwrap().recv_timeout(LONG);
        drop(s);
    });
    let p = ProxyBuilder::new(relay)
        .route(&[backend.addr], "half_close_timeout = \"1s\"\n")
        .start();
    let mut c = connect(p.addr("r0"));
    send_pattern(&mut c, 42, TOTAL).unwrap();
    let got = got_rx.recv_timeout(LONG).expect("the backend saw no EOF");
    assert_eq!(got.unwrap(), TOTAL, "bytes lost before the FIN");
    // The session ends (EOF: a clean close, nothing was cut) well after the FIN.
    c.set_read_timeout(Some(LONG)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(matches!(r, Ok(0)), "{r:?}");
    assert!(start.elapsed() < LONG);
    assert!(
        p.eventually(Duration::from_secs(5), |p| ended(p, "half_close_timeout")
            == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
    let _ = done_tx.send(());
}

all_paths!(a_silent_half_closed_session_is_closed_after_half_close_timeout);

/// The other way round: the backend answers and sends its FIN; the client reads the answer
/// but keeps its side open and silent. The session is closed after the timeout; the client
/// got every byte, then EOF.
#[test]
fn a_silent_client_after_the_backends_fin_is_closed_too() {
    let backend = Backend::start(|mut s| {
        let _ = s.write_all(b"answer");
        let _ = s.shutdown(Shutdown::Write);
        let _ = wait_end(&mut s);
    });
    let p = ProxyBuilder::new(Relay::Auto)
        .route(&[backend.addr], "half_close_timeout = \"1s\"\n")
        .start();
    let mut c = connect(p.addr("r0"));
    let got = read_to_end(&mut c).expect("EOF after the answer");
    assert_eq!(got, b"answer");
    assert!(
        p.eventually(Duration::from_secs(5), |p| ended(p, "half_close_timeout")
            == 1.0),
        "{}",
        p.admin_get("/metrics")
    );
}

/// `half_close_timeout = "0s"`: a half-closed session stays open while the other side is
/// silent (here: past three times what the test above needed).
#[test]
fn half_close_timeout_off_keeps_the_session() {
    let backend = Backend::start(|mut s| {
        let mut buf = [0u8; 4];
        let _ = s.read_exact(&mut buf);
        // EOF comes next; then stay silent a while and answer.
        let _ = s.read(&mut buf);
        thread::sleep(Duration::from_secs(3));
        let _ = s.write_all(b"late");
    });
    let p = ProxyBuilder::new(Relay::Auto)
        .route(&[backend.addr], "half_close_timeout = \"0s\"\n")
        .start();
    let mut c = connect(p.addr("r0"));
    c.write_all(b"req!").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c).unwrap(), b"late");
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Started with 96 file descriptors (soft and hard) and flooded with more clients than fit:
/// no panic, no accept spin (the process stays under half a core), the excess is reset and
/// counted as `fd_limit`, warnings are rate limited, the admin API answers throughout, and
/// once the clients close, new connections are served again.
#[test]
fn out_of_file_descriptors_is_survived_and_visible() {
    let backend = Backend::echo();
    let p = ProxyBuilder::new(Relay::Auto)
        .nofile(96)
        .route(&[backend.addr], "")
        .start();
    let addr = p.addr("r0");
    let started = Instant::now();
    assert!(p.logs().contains("open-files limit"), "{}", p.logs());
    let mut clients = Vec::new();
    for _ in 0..120 {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            clients.push(c);
        }
    }
    // Each client either is served (echo) or was reset.
    let mut served = 0;
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        if c.write_all(b"x").is_ok() && matches!(c.read(&mut buf), Ok(1)) {
            served += 1;
        }
    }
    assert!(served > 0, "nothing was served\n{}", p.logs());
    assert!(
        served < clients.len(),
        "everything fit: raise the client count"
    );
    // Saturated now: no spin, and the admin API answers.
    let before = cpu_seconds(p.pid());
    thread::sleep(Duration::from_secs(2));
    let busy = (cpu_seconds(p.pid()) - before) / 2.0;
    assert!(
        busy < 0.5,
        "ringway used {busy:.2} of a core while saturated"
    );
    assert!(p.status()["routes"].is_array());
    let refused = p
        .metric("ringway_accept_errors_total{kind=\"fd_limit\"}")
        .unwrap_or(0.0);
    assert!(refused > 0.0, "{}", p.admin_get("/metrics"));
    // Rate limited: at most one line per kind per worker per 5 s (a few, not one per client).
    let lines = p
        .logs()
        .lines()
        .filter(|l| l.contains("out of file descriptors") || l.contains("accept failed"))
        .count();
    let periods = started.elapsed().as_secs() as usize / 5 + 1;
    let allowed = p.workers * 2 * periods;
    assert!(
        lines <= allowed,
        "{lines} warnings (at most {allowed}):\n{}",
        p.logs()
    );
    eprintln!(
        "fd limit 96: {served} of {} clients served, {refused} reset at accept, {lines} warning lines, {busy:.3} of a core while saturated",
        clients.len()
    );
    // The clients leave: new connections are served again.
    drop(clients);
    let left = Instant::now();
    let deadline = left + LONG;
    loop {
        let mut c = connect(addr);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        if c.write_all(b"y").is_ok() && matches!(c.read(&mut buf), Ok(1)) {
            eprintln!("served again {:?} after the clients closed", left.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again\n{}",
            p.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!p.logs().contains("panicked"), "{}", p.logs());
}
