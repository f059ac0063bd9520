//! Binary upgrades (`ringway upgrade`, `POST /upgrade`, SIGUSR2) with real processes: the
//! listeners and quiet sessions move to the new process, nothing is refused or reset, and a
//! failed upgrade leaves the running process exactly as it was.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apps::{HttpBackend, Load, outcome};
use crate::support::{Backend, Proxy, ProxyBuilder, ringway_bin};

/// One upgrade test at a time: each runs loads or a bulk transfer and counts failures, and
/// two of them at once on a 2-core CI machine would measure the machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The processes an upgrade started (not this test's children): killed at the end.
#[derive(Default)]
struct Successors(Vec<u32>);

impl Drop for Successors {
    fn drop(&mut self) {
        for pid in &self.0 {
            if let Ok(pid) = libc::pid_t::try_from(*pid) {
                // SAFETY: kill(2) with a pid an upgrade in this test started; no memory is
                // passed. A pid already gone makes it fail harmlessly.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The body of an upgrade to this test's own ringway binary.
fn own_binary() -> String {
    format!("{{\"binary\": \"{}\"}}", ringway_bin().display())
}

/// `POST /upgrade` with `body`; returns (status, document).
fn upgrade(p: &Proxy, body: &str) -> (u16, Value) {
    let (code, text) = p.admin_call("POST", "/upgrade", Some(body));
    let doc = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    (code, doc)
}

/// Upgrades to the test's own ringway binary; returns the new pid (checked against
/// `/status`) after the old one is gone (within 2 s).
fn upgrade_ok(p: &Proxy, successors: &mut Successors) -> u32 {
    let old = p.status()["pid"].as_u64().expect("pid") as u32;
    let body = own_binary();
    let (code, doc) = upgrade(p, &body);
    assert_eq!(code, 200, "{doc}\n{}", p.logs());
    let pid = doc["pid"].as_u64().expect("new pid") as u32;
    successors.0.push(pid);
    assert_eq!(doc["old_pid"].as_u64(), Some(u64::from(old)));
    assert_ne!(pid, old);
    assert_eq!(
        p.status()["pid"].as_u64(),
        Some(u64::from(pid)),
        "the new process answers"
    );
    assert!(
        gone_within(old, p, Duration::from_secs(2)),
        "old process {old} still there 2 s after the upgrade\n{}",
        p.logs()
    );
    pid
}

/// True once process `pid` has exited (a zombie of this test counts as exited; the test's own
/// child is reaped here).
fn gone_within(pid: u32, p: &Proxy, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pid == p.pid() {
            // SAFETY: waitpid on this test's own child, WNOHANG; no memory is passed but the
            // status out-parameter, which lives across the call.
            let mut status = 0;
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r == pid as libc::pid_t {
                return true;
            }
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

/// The children of process `pid`, whichever of its threads started them.
fn children_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// 10 upgrades in 20 s while 1,000 new connections/s each make a request and read the
/// answer: none is refused, reset or answered wrong; after each upgrade the new process
/// answers `/status`, the old one is gone within 2 s, and systemd's stand-in heard
/// `MAINPID=` the new pid.
#[test]
fn ten_upgrades_under_load_lose_no_connection() {
    let _serial = one_at_a_time();
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true)
        .workers(2)
        .route(&[a.addr], "")
        .start();
    let mut successors = Successors::default();
    let load = Load::conn(p.addr("r0"), 1000, Duration::from_secs(21));
    thread::sleep(Duration::from_millis(500));
    for _ in 0..10 {
        let started = Instant::now();
        let pid = upgrade_ok(&p, &mut successors);
        assert!(
            p.wait_notified(&format!("MAINPID={pid}"), Duration::from_secs(2)),
            "MAINPID={pid} sent to $NOTIFY_SOCKET; got {:?}",
            p.notified.borrow()
        );
        thread::sleep(Duration::from_millis(2000).saturating_sub(started.elapsed()));
    }
    let report = load.finish();
    let (ok, failed) = outcome(&report);
    eprintln!("{report}");
    assert!(ok > 15_000, "{report}");
    assert_eq!(failed, 0, "{report}");
}

/// One echo stream: 1 KiB every 100 ms, each checked on its way back.
struct Stream {
    s: TcpStream,
    seq: u64,
    last: Instant,
    worst_gap: Duration,
}

impl Stream {
    fn round(&mut self) -> Result<(), String> {
        self.seq += 1;
        let mut msg = [0u8; 1024];
        for (i, b) in msg.iter_mut().enumerate() {
            *b = (self.seq as usize * 31 + i) as u8;
        }
        self.s.write_all(&msg).map_err(|e| e.to_string())?;
        let mut back = [0u8; 1024];
        self.s.read_exact(&mut back).map_err(|e| e.to_string())?;
        if back != msg {
            return Err(format!("bytes differ in message {}", self.seq));
        }
        let now = Instant::now();
        self.worst_gap = self.worst_gap.max(now - self.last);
        self.last = now;
        Ok(())
    }
}

/// 200 long-lived echo streams (1 KiB every 100 ms, checked end to end) across 3 upgrades:
/// none breaks, no stream waits over 500 ms, every session moves to the new process, and
/// each old process is gone within 2 s.
#[test]
fn long_lived_streams_survive_three_upgrades() {
    let _serial = one_at_a_time();
    let echo = Backend::echo();
    let p = ProxyBuilder::new(true)
        .workers(2)
        .route(&[echo.addr], "")
        .start();
    let addr = p.addr("r0");
    let mut successors = Successors::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            let mut streams: Vec<Stream> = (0..50)
                .map(|_| {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    Stream {
                        s,
                        seq: 0,
                        last: Instant::now(),
                        worst_gap: Duration::ZERO,
                    }
                })
                .collect();
            while !stop.load(Ordering::SeqCst) {
                for st in &mut streams {
                    st.round()?;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let worst = streams
                .iter()
                .map(|s| s.worst_gap)
                .max()
                .unwrap_or_default();
            let rounds = streams.iter().map(|s| s.seq).min().unwrap_or(0);
            Ok::<_, String>((worst, rounds))
        }));
    }
    thread::sleep(Duration::from_millis(700));
    let mut moved = 0;
    for _ in 0..3 {
        let before = p.status()["pid"].as_u64();
        let body = own_binary();
        let (code, doc) = upgrade(&p, &body);
        assert_eq!(code, 200, "{doc}");
        successors.0.push(doc["pid"].as_u64().unwrap() as u32);
        assert_ne!(p.status()["pid"].as_u64(), before);
        moved += doc["sessions_moved"].as_u64().unwrap();
        assert_eq!(doc["sessions_left"].as_u64(), Some(0), "{doc}");
        let old = before.unwrap() as u32;
        assert!(
            gone_within(old, &p, Duration::from_secs(2)),
            "{old} lingers"
        );
        thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let (worst, rounds) = t.join().unwrap().expect("every stream intact");
        eprintln!("worst gap {worst:?}, {rounds} rounds");
        assert!(
            worst < Duration::from_millis(500),
            "a stream waited {worst:?}"
        );
        assert!(rounds >= 10, "{rounds} rounds");
    }
    assert_eq!(moved, 600, "200 sessions moved at each of 3 upgrades");
}

/// A 1 GiB transfer in flight during an upgrade (echoed back and checked) arrives intact,
/// whether it moved at a quiet moment or finished in the old process.
#[test]
fn a_gigabyte_in_flight_arrives_intact_across_an_upgrade() {
    let _serial = one_at_a_time();
    const TOTAL: usize = 1 << 30;
    let echo = Backend::echo();
    let p = ProxyBuilder::new(true)
        .workers(2)
        .grace("60s")
        .route(&[echo.addr], "")
        .start();
    let mut successors = Successors::default();
    let client = TcpStream::connect(p.addr("r0")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = client.try_clone().unwrap();
    let check = thread::spawn(move || check_blocks(&mut reader));
    let mut writer = client.try_clone().unwrap();
    let send = thread::spawn(move || {
        send_blocks(&mut writer, TOTAL)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    thread::sleep(Duration::from_millis(300));
    upgrade_ok_allowing_old(&p, &mut successors);
    send.join()
        .unwrap()
        .unwrap_or_else(|e| panic!("send: {e}\n{}", p.logs()));
    let got = check
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("pattern: {e}\n{}", p.logs()));
    assert_eq!(got, TOTAL);
}

/// A block of a prime length (no buffer or pipe size divides it), the stream being that block
/// over and over: a lost, repeated or reordered chunk shows as a mismatch at its offset.
/// Cheap to make and check (slice compares), so a debug build moves 1 GiB quickly.
fn block() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..65_521)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn send_blocks(s: &mut TcpStream, total: usize) -> std::io::Result<()> {
    let b = block();
    let mut sent = 0;
    while sent < total {
        let n = b.len().min(total - sent);
        s.write_all(&b[..n])?;
        sent += n;
    }
    Ok(())
}

/// Reads to EOF, checking every byte against the block stream; returns the count.
fn check_blocks(s: &mut TcpStream) -> std::io::Result<usize> {
    let b = block();
    let mut buf = vec![0u8; 256 << 10];
    let mut at = 0usize;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(at);
        }
        let mut got = &buf[..n];
        while !got.is_empty() {
            let off = at % b.len();
            let k = got.len().min(b.len() - off);
            if got[..k] != b[off..off + k] {
                return Err(std::io::Error::other(format!(
                    "bytes differ near offset {at}"
                )));
            }
            at += k;
            got = &got[k..];
        }
    }
}

/// As [`upgrade_ok`], but the old process may stay (a busy session finishes there).
fn upgrade_ok_allowing_old(p: &Proxy, successors: &mut Successors) {
    let body = own_binary();
    let (code, doc) = upgrade(p, &body);
    assert_eq!(code, 200, "{doc}");
    successors.0.push(doc["pid"].as_u64().unwrap() as u32);
    eprintln!("{doc}");
}

/// Upgrades that fail — a binary that exits 1, one that never reports, a configuration that
/// no longer validates — change nothing: the old process serves on under load with no
/// failure, keeps its pid, and has the same open files after 20 failed attempts; the CLI
/// exits 1 saying why.
#[test]
fn failed_upgrades_leave_the_running_process_as_it_was() {
    let _serial = one_at_a_time();
    let a = HttpBackend::start("A");
    let p = ProxyBuilder::new(true)
        .workers(2)
        .route(&[a.addr], "")
        .start();
    let pid = p.status()["pid"].as_u64();
    let load = Load::conn(p.addr("r0"), 300, Duration::from_secs(8));
    thread::sleep(Duration::from_millis(300));
    let fds = p.fd_count();
    for i in 0..18 {
        let (code, doc) = upgrade(&p, "{\"binary\": \"/bin/false\"}");
        assert_eq!(code, 500, "{doc}");
        assert_eq!(doc["error"], "upgrade_failed");
        if i == 0 {
            let msg = doc["message"].as_str().unwrap();
            assert!(msg.contains("exited before reporting ready"), "{msg}");
        }
    }
    let hang = p.dir.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let started = Instant::now();
    let body = format!(
        "{{\"binary\": \"{}\", \"timeout\": \"1s\"}}",
        hang.display()
    );
    let (code, doc) = upgrade(&p, &body);
    assert_eq!(code, 500, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("did not report ready"),
        "{doc}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A configuration the new binary refuses: the running one keeps its own.
    let good = std::fs::read_to_string(&p.config).unwrap();
    p.write_config(format!("{good}\nbogus = 1\n").as_bytes());
    let out = Command::new(ringway_bin())
        .args(["upgrade", "--admin"])
        .arg(format!("unix:{}", p.admin_sock.display()))
        .args(["--token", crate::support::TOKEN])
        .output()
        .unwrap();
    p.write_config(good.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bogus"), "the child's own error: {stderr}");
    let report = load.finish();
    let (ok, failed) = outcome(&report);
    assert!(ok > 1000 && failed == 0, "{report}");
    assert_eq!(p.status()["pid"].as_u64(), pid, "same process");
    // (an admin connection of the CLI's may take a moment to close)
    let settled = p.eventually(Duration::from_secs(3), |p| p.fd_count() <= fds);
    let open: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(
        settled,
        "no descriptor kept from 20 failed attempts: {fds} before, now {open:?}"
    );
    assert_eq!(p.metric("ringway_upgrades_failed_total"), Some(20.0));
    // Nothing is left of the children (not even a zombie).
    assert_eq!(children_of(p.pid()).trim(), "", "every failed child reaped");
}

/// SIGUSR2 upgrades to the binary at the process's own path; metrics restart and say so
/// with `ringway_start_time_seconds`.
#[test]
fn sigusr2_upgrades_in_place() {
    let echo = Backend::echo();
    let p = ProxyBuilder::new(true).route(&[echo.addr], "").start();
    let mut successors = Successors::default();
    let mut s = TcpStream::connect(p.addr("r0")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    let started = p.metric("ringway_start_time_seconds").expect("start time");
    thread::sleep(Duration::from_millis(1100));
    p.signal(libc::SIGUSR2);
    let old = p.pid();
    assert!(
        p.eventually(Duration::from_secs(10), |p| p.status()["pid"].as_u64()
            != Some(u64::from(old))),
        "{}",
        p.logs()
    );
    successors
        .0
        .push(p.status()["pid"].as_u64().unwrap() as u32);
    assert!(gone_within(old, &p, Duration::from_secs(2)));
    // The session moved with the upgrade and goes on.
    s.write_all(b"after!").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after!");
    let restarted = p.metric("ringway_start_time_seconds").unwrap();
    assert!(restarted > started, "{restarted} > {started}");
    // The new process idles like any other (no thread left spinning on a closed channel).
    let pid = p.status()["pid"].as_u64().unwrap();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields.iter().sum::<u64>()
    };
    let before = cpu();
    thread::sleep(Duration::from_secs(1));
    let ticks = cpu() - before;
    assert!(ticks < 20, "{ticks} clock ticks of CPU in 1 s while idle");
}

/// 1,000 idle sessions move at once, and every one goes on whole in the new process: none
/// was closed on the way (the old process waits for the last one to be sent before it exits).
#[test]
fn a_thousand_idle_sessions_move_at_once() {
    let _serial = one_at_a_time();
    let echo = Backend::echo();
    let p = ProxyBuilder::new(true)
        .workers(2)
        .route(&[echo.addr], "")
        .start();
    let mut successors = Successors::default();
    let addr = p.addr("r0");
    let mut streams: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"a").unwrap();
            let mut one = [0u8; 1];
            s.read_exact(&mut one).unwrap();
            s
        })
        .collect();
    let old = p.pid();
    let body = own_binary();
    let (code, doc) = upgrade(&p, &body);
    assert_eq!(code, 200, "{doc}");
    successors.0.push(doc["pid"].as_u64().unwrap() as u32);
    assert_eq!(doc["sessions_moved"].as_u64(), Some(1000), "{doc}");
    assert!(gone_within(old, &p, Duration::from_secs(5)), "{}", p.logs());
    for (i, s) in streams.iter_mut().enumerate() {
        s.write_all(b"b").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one)
            .unwrap_or_else(|e| panic!("session {i}: {e}\n{}", p.logs()));
        assert_eq!(&one, b"b");
    }
}

/// A stop (SIGTERM) while a new binary is starting stops that one too: nothing is left of
/// it, and the old process stops as asked.
#[test]
fn a_stop_during_an_upgrade_takes_the_new_binary_along() {
    let echo = Backend::echo();
    let mut p = ProxyBuilder::new(true).route(&[echo.addr], "").start();
    let hang = p.dir.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let target = crate::support::ringway_bin();
    let (sock, path) = (p.admin_sock.clone(), hang.display().to_string());
    let asked = thread::spawn(move || {
        Command::new(target)
            .args(["upgrade", "--timeout", "30s", "--binary", &path, "--admin"])
            .arg(format!("unix:{}", sock.display()))
            .args(["--token", crate::support::TOKEN])
            .output()
            .unwrap()
    });
    // The child runs: find it among the old process's children.
    let children = || children_of(p.pid());
    assert!(p.eventually(Duration::from_secs(5), |_| !children().trim().is_empty()));
    let child: u32 = children()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    p.sigterm();
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", p.logs());
    assert!(
        std::fs::read_to_string(format!("/proc/{child}/stat")).is_err(),
        "the new binary was killed and reaped"
    );
    let out = asked.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `"sessions": false` (`ringway upgrade --no-sessions`): the listeners move, an open session
/// stays and is served by the old process to its end, and the old process exits once it has
/// ended.
#[test]
fn without_session_hand_over_the_old_process_serves_its_sessions_to_the_end() {
    let echo = Backend::echo();
    let p = ProxyBuilder::new(true).route(&[echo.addr], "").start();
    let mut successors = Successors::default();
    let mut s = TcpStream::connect(p.addr("r0")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 5];
    s.write_all(b"first").unwrap();
    s.read_exact(&mut buf).unwrap();
    let body = format!(
        "{{\"binary\": \"{}\", \"sessions\": false}}",
        ringway_bin().display()
    );
    let (code, doc) = upgrade(&p, &body);
    assert_eq!(code, 200, "{doc}");
    successors.0.push(doc["pid"].as_u64().unwrap() as u32);
    assert_eq!(doc["sessions_moved"].as_u64(), Some(0), "{doc}");
    assert_eq!(doc["sessions_left"].as_u64(), Some(1), "{doc}");
    // New connections go to the new process; the open one is still served.
    let mut n = TcpStream::connect(p.addr("r0")).unwrap();
    n.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    n.write_all(b"newer").unwrap();
    n.read_exact(&mut buf).unwrap();
    thread::sleep(Duration::from_millis(300));
    s.write_all(b"still").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still");
    assert!(
        !gone_within(p.pid(), &p, Duration::from_millis(200)),
        "the old process waits for its session"
    );
    drop(s);
    assert!(
        gone_within(p.pid(), &p, Duration::from_secs(2)),
        "{}",
        p.logs()
    );
}

/// What the admin API changed carries over: a route created through the API (on a port from
/// `listen_range`) and a switch (the history, so a rollback works in the new process), and
/// the generated token stays the one the CLI holds.
#[test]
fn runtime_routes_and_switch_history_carry_over() {
    let (a, b) = (HttpBackend::start("A"), HttpBackend::start("B"));
    let p = ProxyBuilder::new(true)
        .admin_extra("listen_range = \"127.0.0.1:20200-20299\"")
        .route(&[a.addr], "")
        .start();
    let mut successors = Successors::default();
    let body = format!("{{\"backends\": [\"{}\"]}}", a.addr);
    let (code, doc) = p.admin_call("PUT", "/routes/app", Some(&body));
    assert_eq!(code, 201, "{doc}");
    let app = p.addr("app");
    let (code, doc) = p.switch("r0", &[b.addr]);
    assert_eq!(code, 200, "{doc}");
    let (code, doc) = upgrade(&p, &own_binary());
    assert_eq!(code, 200, "{doc}");
    successors.0.push(doc["pid"].as_u64().unwrap() as u32);
    assert_eq!(p.addr("app"), app, "the API route keeps its port");
    assert_eq!(crate::apps::get(app).as_deref(), Ok("A"));
    assert_eq!(crate::apps::get(p.addr("r0")).as_deref(), Ok("B"));
    let (code, doc) = p.admin_call("POST", "/routes/r0/rollback", None);
    assert_eq!(code, 200, "the switch history came along: {doc}");
    assert_eq!(crate::apps::get(p.addr("r0")).as_deref(), Ok("A"));
}
