//! Process lifecycle: start-up failures, the embedded default, graceful shutdown, drivers.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// SIGTERM with open sessions: no new connections, open ones finish inside the grace period,
/// then the process exits 0.
#[test]
fn sigterm_lets_open_sessions_finish_then_exits_0() {
    let backend = Backend::start(|mut s| {
        let got = read_to_end(&mut s).unwrap();
        s.write_all(&got).unwrap();
    });
    let b = ProxyBuilder::new(true).route(&[backend.addr], "");
    let mut proxy = b.grace("5s").start();
    let addr = proxy.addr("r0");
    let mut open = connect(addr);
    open.write_all(b"first half, ").unwrap();
    thread::sleep(Duration::from_millis(200));
    proxy.sigterm();
    thread::sleep(Duration::from_millis(300));
    // New connections are refused once the listeners are closed.
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    // The open session still works end to end.
    open.write_all(b"second half").unwrap();
    open.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut open).unwrap(), b"first half, second half");
    let status = proxy
        .wait_exit(Duration::from_secs(4))
        .expect("exits after the session ends");
    assert_eq!(status.code(), Some(0), "{}", proxy.logs());
}

/// A session that outlives the grace period is closed at the deadline; exit code still 0.
#[test]
fn sigterm_closes_sessions_left_at_the_grace_deadline() {
    let backend = Backend::start(|mut s| {
        let _ = read_to_end(&mut s);
    });
    let b = ProxyBuilder::new(false).route(&[backend.addr], "");
    let mut proxy = b.grace("1s").start();
    let addr = proxy.addr("r0");
    let mut stuck = connect(addr);
    stuck.write_all(b"x").unwrap();
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    proxy.sigterm();
    assert!(read_to_end(&mut stuck).is_ok(), "closed with EOF");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed before the deadline: {took:?}"
    );
    let status = proxy.wait_exit(Duration::from_secs(5)).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        proxy.logs().contains("closed_at_deadline=1"),
        "{}",
        proxy.logs()
    );
}

/// A port held by another process is refused at start with exit 1, naming the address and
/// the process.
#[test]
fn port_held_by_another_process_fails_start_with_exit_1() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[state]\nfile = \"{}\"\n[[route]]\nname = \"x\"\nlisten = [\"{held}\"]\nbackends = [\"127.0.0.1:9\"]\n",
            dir.path().join("state.json").display()
        ),
    )
    .unwrap();
    let (code, _, err) = ringway(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&held.to_string()), "{err}");
    assert!(
        err.contains("held by another process")
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

/// A restart right after `kill -9` binds the same address and becomes ready, 20 times in a
/// row: the kernel releases the killed process's listeners some milliseconds after it is
/// reaped, and the bind is tried again meanwhile instead of failing with exit 1. A start of
/// ringway may come after that window has passed, so every other round the test binds the
/// address itself first, the way ringway does, at once after the reap: if the address was
/// not free yet, that bind must still succeed within the retry bound.
#[test]
fn restart_right_after_sigkill_binds_the_same_address() {
    let started = Instant::now();
    // A concrete port, the same in every round (freed before the first start).
    let addr = dead_addr();
    let b = ProxyBuilder::new(Relay::Auto)
        .route_at(addr, &[dead_addr()], "")
        .ready_within(Duration::from_secs(5));
    let (mut retried, mut still_held) = (0, 0);
    for round in 0..20 {
        let mut proxy = b
            .clone()
            .try_start()
            .unwrap_or_else(|logs| panic!("round {round}: the restart failed:\n{logs}"));
        assert_eq!(proxy.addr("r0"), addr, "round {round}");
        if proxy.logs().contains("still being released by the kernel") {
            retried += 1;
        }
        let pid = libc::pid_t::try_from(proxy.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on the pid of our own child, which is not reaped yet (so the pid
        // cannot have been reused); no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGKILL) },
            0,
            "round {round}"
        );
        // Blocks until it is reaped (SIGKILL cannot be caught), then goes on at once.
        let status = proxy.child.wait().expect("the killed process is reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        if round % 2 == 1 {
            let busy = std::net::TcpListener::bind(addr).is_err();
            let bind_started = Instant::now();
            let group = ringway::net::listener::bind_group(addr, 2)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                bind_started.elapsed() < ringway::net::listener::RELEASE_WAIT,
                "round {round}: {:?}",
                bind_started.elapsed()
            );
            drop(group);
            if busy {
                still_held += 1;
            }
        }
    }
    eprintln!(
        "{retried} of 20 starts waited for the kernel to release the address; right after the \
         reap it was still held in {still_held} of 10 rounds"
    );
    // Otherwise this test did not meet the window it is about (it is 5-70 ms long where it
    // was measured, and a bind at once after the reap met it in 19 of 20 tries).
    assert!(still_held > 0, "the address was always free at once");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

/// `ringway run` with no file serves the embedded default: 127.0.0.1:3000 → 127.0.0.1:8080,
/// admin on 127.0.0.1:9901 (skipped when those fixed ports are taken on this machine).
#[test]
fn embedded_default_runs_and_relays() {
    let ports = ["127.0.0.1:3000", "127.0.0.1:9901"];
    if ports
        .iter()
        .any(|p| std::net::TcpStream::connect(p).is_ok())
    {
        eprintln!("skipped: a default port is in use");
        return;
    }
    let Ok(backend) = std::net::TcpListener::bind("127.0.0.1:8080") else {
        eprintln!("skipped: 127.0.0.1:8080 is in use");
        return;
    };
    thread::spawn(move || {
        if let Ok((mut s, _)) = backend.accept() {
            let _ = s.write_all(b"default!");
        }
    });
    // The default state file (and generated token) go to $STATE_DIRECTORY when it is set.
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(ringway_bin())
        .arg("run")
        .env("STATE_DIRECTORY", state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = wait_connect("127.0.0.1:3000".parse().unwrap(), Duration::from_secs(10));
    let mut got = [0u8; 8];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"default!");
    let _ = child.kill();
    let _ = child.wait();
}

/// runtime.driver = "epoll" runs every relay mode (auto, buffered, splice) on the epoll driver.
#[test]
fn epoll_driver_relays_on_every_relay_mode() {
    for relay in Relay::ALL {
        let backend = Backend::echo();
        let mut b = ProxyBuilder::new(relay).route(&[backend.addr], "");
        b.driver = "epoll";
        let proxy = b.start();
        let addr = proxy.addr("r0");
        let mut c = connect(addr);
        let w = c.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let mut w = w;
            send_pattern(&mut w, 7, 4 << 20).unwrap()
        });
        assert_eq!(check_pattern(&mut c, 7).unwrap(), 4 << 20);
        sender.join().unwrap();
        assert!(
            proxy.logs().contains("driver=\"epoll\""),
            "{}",
            proxy.logs()
        );
    }
}

/// `runtime.busy_poll`: every relay mode still relays (bytes intact both ways, on and off the
/// spin), and the ring is set up without DEFER_TASKRUN, which would hide completions from the
/// spinning worker.
#[test]
fn busy_poll_relays_on_every_relay_mode() {
    for relay in Relay::ALL {
        let backend = Backend::echo();
        let proxy = ProxyBuilder::new(relay)
            .runtime_extra("busy_poll = \"50us\"")
            .route(&[backend.addr], "")
            .start();
        let addr = proxy.addr("r0");
        // A few small exchanges with pauses (the worker parks between them), then bulk.
        let mut c = connect(addr);
        for i in 0..5u8 {
            c.write_all(&[i; 100]).unwrap();
            let mut back = [0u8; 100];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, [i; 100]);
            thread::sleep(Duration::from_millis(20));
        }
        let w = c.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let mut w = w;
            send_pattern(&mut w, 9, 4 << 20).unwrap()
        });
        assert_eq!(check_pattern(&mut c, 9).unwrap(), 4 << 20);
        sender.join().unwrap();
        let logs = proxy.logs();
        assert!(
            logs.contains("task_run=\"cooperative\"") || logs.contains("task_run=\"plain\""),
            "{logs}"
        );
    }
}

/// Where io_uring is refused (here by a seccomp filter, as under a container's default
/// profile), start-up fails with exit 1, says so, and names the explicit epoll choice; with
/// `driver = "epoll"` the same process starts and relays.
#[test]
fn io_uring_refused_fails_start_and_names_the_epoll_choice() {
    let backend = Backend::echo();
    for (driver, expect_start) in [("io_uring", false), ("epoll", true)] {
        let mut b = ProxyBuilder::new(true);
        b.driver = driver;
        let b = b.route(&[backend.addr], "");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, b.toml(dir.path(), &dir.path().join("state.json"))).unwrap();
        let mut cmd = Command::new(ringway_bin());
        cmd.args(["run", "-c"]).arg(&path);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        seccomp::deny_io_uring(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        if expect_start {
            let status = wait_status(&dir.path().join("admin.sock"), Duration::from_secs(10));
            let addr = status["routes"][0]["listen"][0]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("the route's bound address");
            let mut c = wait_connect(addr, Duration::from_secs(10));
            c.write_all(b"ok?").unwrap();
            let mut got = [0u8; 3];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ok?");
            let _ = child.kill();
            let _ = child.wait();
        } else {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("io_uring is unavailable"), "{err}");
            assert!(err.contains("runtime.driver = \"epoll\""), "{err}");
        }
    }
}

/// A seccomp filter that makes `io_uring_setup` fail with EPERM in a child process.
mod seccomp {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    pub fn deny_io_uring(cmd: &mut Command) {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let filter = [
            // A = seccomp_data.nr (offset 0)
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
            // if A == io_uring_setup: next; else skip one
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: libc::SYS_io_uring_setup as u32,
            },
            stmt(
                libc::BPF_RET | libc::BPF_K,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            ),
            stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe; `filter` is moved into the closure and outlives both
        // calls; the program pointer and length describe that array exactly.
        unsafe {
            cmd.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &prog as *const libc::sock_fprog,
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
