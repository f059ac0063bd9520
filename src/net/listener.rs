//! Control side: creating the per-worker SO_REUSEPORT listeners for one address.
//!
//! Before the group is bound, a probe socket *without* SO_REUSEPORT is bound to the address:
//! if that fails, something else holds the port (an outside SO_REUSEPORT holder of the same
//! user would otherwise silently share our traffic), and the error says who when /proc
//! tells: a process (named), a process this user cannot see, or no process at all (the local
//! end of a connection, or a socket the kernel is still releasing). Then one socket per
//! worker is bound with SO_REUSEPORT, in worker order.
//!
//! A busy address that no live process explains is tried again for up to [`RELEASE_WAIT`]:
//! the kernel releases a killed io_uring process's listeners some milliseconds after the
//! process is reaped (5–70 ms measured: /proc/net/tcp still shows them in LISTEN, with
//! inodes no process holds), so a restart right after `kill -9` would otherwise fail. A
//! process that holds the address fails the bind at once.
//!
//! Binding and listening are two steps ([`Group::listen`]): a change that binds several new
//! addresses binds them all first and listens only when every bind succeeded, so a change
//! that fails never had a socket in LISTEN state (no client could have been queued on it,
//! and no queued connection is reset when its sockets are dropped). Port 0 asks the kernel
//! for a free port; the group is bound on the port it gave.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog asked for each listener (the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// Longest [`bind_group`] keeps trying an address that no live process holds (a socket the
/// kernel is still releasing) before it reports [`ListenerError::NoListener`].
pub const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Pause between two tries while the kernel releases an address.
const RELEASE_RETRY: Duration = Duration::from_millis(15);

/// Who holds a port that could not be bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A process that /proc shows: "pid 1234 (nginx)".
    Process { pid: u32, comm: String },
    /// A socket listens on the port, no process this user can inspect holds it, and a
    /// process of the socket's owner could not be inspected.
    Hidden,
    /// A socket listens on the port; its process was not found within [`SCAN_BUDGET`].
    Unidentified,
    /// No socket listens on the port: it is the local end of a connection, or a socket the
    /// kernel is still releasing.
    NoListener { states: Vec<&'static str> },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Process { pid, comm } => write!(f, "pid {pid} {comm}"),
            Holder::Hidden => f.write_str("a process this user cannot inspect"),
            Holder::Unidentified => f.write_str("a process not identified in time"),
            Holder::NoListener { states } if states.is_empty() => {
                f.write_str("no listener: a socket the kernel is still releasing")
            }
            Holder::NoListener { states } => write!(
                f,
                "no listener: the local end of a connection ({})",
                states.join(", ")
            ),
        }
    }
}

/// Why a listen address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("{addr} is held by another process ({holder}); stop it or choose another port")]
    HeldByProcess { addr: SocketAddr, holder: Holder },
    #[error(
        "{addr} is held by another process that this user cannot inspect (as root: ss -ltnp 'sport = :{}'); stop it or choose another port",
        addr.port()
    )]
    HeldHidden { addr: SocketAddr },
    #[error(
        "{addr} is held by another process (not identified within {} ms; as root: ss -ltnp 'sport = :{}'); stop it or choose another port",
        SCAN_BUDGET.as_millis(),
        addr.port()
    )]
    HeldUnidentified { addr: SocketAddr },
    #[error(
        "{addr} cannot be bound, yet no process listens on it: it is {}; retry in a moment or choose another port",
        describe_no_listener(states)
    )]
    NoListener {
        addr: SocketAddr,
        states: Vec<&'static str>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

fn describe_no_listener(states: &[&'static str]) -> String {
    if states.is_empty() {
        "a socket the kernel is still releasing (for example just after a killed process)".into()
    } else {
        format!(
            "the local end of an existing connection ({}) or a socket the kernel is still releasing",
            states.join(", ")
        )
    }
}

/// A bound (not yet listening) SO_REUSEPORT group: one socket per worker.
#[derive(Debug)]
pub struct Group {
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    sockets: Vec<Socket>,
}

impl Group {
    /// Puts every socket of the group in LISTEN state, in worker order.
    pub fn listen(self) -> Result<Vec<TcpListener>, ListenerError> {
        let addr = self.addr;
        self.sockets
            .into_iter()
            .map(|s| {
                s.listen(BACKLOG)
                    .map(|()| s.into())
                    .map_err(|source| ListenerError::Bind { addr, source })
            })
            .collect()
    }
}

impl Group {
    /// A group of sockets inherited from the process this one replaces (listening already),
    /// completed with fresh SO_REUSEPORT sockets up to `count` (the old process ran fewer
    /// workers).
    pub fn inherited(
        addr: SocketAddr,
        fds: Vec<std::os::fd::OwnedFd>,
        count: usize,
    ) -> io::Result<Group> {
        let mut sockets: Vec<Socket> = fds.into_iter().map(Socket::from).collect();
        while sockets.len() < count {
            sockets.push(bind_one(addr, true)?);
        }
        Ok(Group { addr, sockets })
    }
}

/// Binds `count` SO_REUSEPORT sockets on `addr` (not yet listening), after checking nobody
/// else holds it. Port 0: on a free port the kernel picks. An address that is busy while no
/// live process holds it is tried again every [`RELEASE_RETRY`] for up to [`RELEASE_WAIT`]
/// (blocking the calling thread: control side only).
pub fn bind_group(addr: SocketAddr, count: usize) -> Result<Group, ListenerError> {
    let deadline = Instant::now() + RELEASE_WAIT;
    let mut retrying = false;
    loop {
        let err = match try_bind_group(addr, count) {
            Ok(group) => {
                if retrying {
                    tracing::info!(addr = %group.addr, "bound once the kernel released the address");
                }
                return Ok(group);
            }
            Err((at, source)) => classify(at, source),
        };
        let now = Instant::now();
        if !matches!(err, ListenerError::NoListener { .. }) || now >= deadline {
            return Err(err);
        }
        if !retrying {
            tracing::warn!(
                %addr,
                wait_ms = RELEASE_WAIT.as_millis() as u64,
                "the address is still being released by the kernel (a process killed a moment ago?); retrying for up to 1s"
            );
            retrying = true;
        }
        std::thread::sleep(RELEASE_RETRY.min(deadline - now));
    }
}

/// [`bind_group`] without looking up who holds a busy port (scanning /proc is slow): for
/// trying the ports of a range one after the other.
pub fn try_bind_group(addr: SocketAddr, count: usize) -> Result<Group, (SocketAddr, io::Error)> {
    let addr = if addr.port() == 0 {
        // The kernel's pick, from a socket without SO_REUSEPORT (never a port shared with
        // another reuseport group); released at once and bound again below.
        let probe = bind_one(addr, false).map_err(|e| (addr, e))?;
        probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| {
                (
                    addr,
                    io::Error::other("the kernel reported no bound address"),
                )
            })?
    } else {
        addr
    };
    // Fails when anyone holds the address. It never listens, so no connection can ever be
    // queued on it.
    bind_one(addr, false).map(drop).map_err(|e| (addr, e))?;
    let sockets = (0..count)
        .map(|_| bind_one(addr, true))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| (addr, e))?;
    Ok(Group { addr, sockets })
}

fn classify(addr: SocketAddr, source: io::Error) -> ListenerError {
    if source.kind() != io::ErrorKind::AddrInUse {
        return ListenerError::Bind { addr, source };
    }
    match find_holder(addr.port()) {
        h @ Holder::Process { .. } => ListenerError::HeldByProcess { addr, holder: h },
        Holder::Hidden => ListenerError::HeldHidden { addr },
        Holder::Unidentified => ListenerError::HeldUnidentified { addr },
        Holder::NoListener { states } => ListenerError::NoListener { addr, states },
    }
}

/// A bound socket with SO_REUSEADDR (and SO_REUSEPORT when asked), non-blocking, IPv6-only
/// for IPv6 addresses, and TCP_NODELAY, which every connection accepted from it inherits
/// (Linux copies the listener's Nagle setting into the child socket): one `setsockopt` per
/// listener instead of one per connection. Not listening.
fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // "[::]:p" means IPv6 only; list "0.0.0.0:p" too for IPv4. Predictable, and lets the
        // two coexist.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Longest the search for a port's holder through every process's fds may take: it runs on
/// the control thread, and a box with hundreds of thousands of open fds would otherwise
/// stall it for seconds.
pub const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

/// Who holds `port`, from /proc: the process owning a listening socket on it, or why none
/// can be named. Best effort, read-only, bounded by [`SCAN_BUDGET`].
pub fn find_holder(port: u16) -> Holder {
    let sockets = port_sockets(port);
    let listening: Vec<&str> = sockets
        .iter()
        .filter(|s| s.listening && s.inode != "0")
        .map(|s| s.inode.as_str())
        .collect();
    // Whose processes could hold them: a process this user cannot inspect only hides a
    // listener when it runs as the listener's owner.
    let owners: Vec<u32> = sockets
        .iter()
        .filter(|s| s.listening && s.inode != "0")
        .map(|s| s.uid)
        .collect();
    if listening.is_empty() {
        let mut states: Vec<&'static str> = sockets.iter().map(|s| s.state).collect();
        states.sort_unstable();
        states.dedup();
        return Holder::NoListener { states };
    }
    let mut unreadable = false;
    let started = std::time::Instant::now();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Holder::Hidden;
    };
    for entry in procs.flatten() {
        if started.elapsed() > SCAN_BUDGET {
            return Holder::Unidentified;
        }
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fds = match fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            // Exited since /proc was listed (common on a busy box): it holds nothing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                // /proc/<pid> belongs to the process's effective uid; a process of another
                // user than the listeners' owners does not hide them. Gone: holds nothing.
                if let Ok(meta) = fs::metadata(entry.path())
                    && owners.contains(&meta.uid())
                {
                    unreadable = true;
                }
                continue;
            }
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            else {
                continue;
            };
            if listening.contains(&inode) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Holder::Process {
                    pid,
                    comm: comm.trim().to_string(),
                };
            }
        }
    }
    if unreadable {
        Holder::Hidden
    } else {
        // Every process that could hold it was inspected and none does: a listener whose
        // owner is gone (an io_uring process's sockets outlive it for a moment).
        Holder::NoListener { states: Vec::new() }
    }
}

struct PortSocket {
    inode: String,
    state: &'static str,
    listening: bool,
    /// The socket's owner (the uid that created it).
    uid: u32,
}

/// Sockets whose local port is `port`, from /proc/net/tcp{,6}. These tables list every
/// socket (tens of thousands of TIME_WAIT on a busy box): lines are read without allocating,
/// and only those on `port` are looked at.
fn port_sockets(port: u16) -> Vec<PortSocket> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let mut cols = line.split_ascii_whitespace();
            let (Some(local), Some(state)) = (cols.nth(1), cols.nth(1)) else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            let (Some(uid), Some(inode)) = (cols.nth(3), cols.nth(1)) else {
                continue;
            };
            let Ok(uid) = uid.parse::<u32>() else {
                continue;
            };
            let state = state_name(state);
            out.push(PortSocket {
                inode: inode.to_string(),
                uid,
                // LISTEN, or CLOSE: bound and not listening (another bind-only holder)
                listening: matches!(state, "LISTEN" | "CLOSE"),
                state,
            });
        }
    }
    out
}

fn state_name(hex: &str) -> &'static str {
    match hex {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_binds_on_the_port_the_kernel_picks_and_shares_it() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = group.addr;
        assert_ne!(addr.port(), 0);
        let listeners = group.listen().unwrap();
        assert_eq!(listeners.len(), 3);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
        // Once listening, a client connects.
        std::net::TcpStream::connect(addr).unwrap();
    }

    /// Accepted connections inherit TCP_NODELAY from the listener (the relay relies on it
    /// and sets it only on the backend side).
    #[test]
    fn accepted_connections_inherit_nodelay() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = group.addr;
        let listeners = group.listen().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let std_listener = listeners.into_iter().next().unwrap();
        std_listener.set_nonblocking(false).unwrap();
        let (accepted, _) = std_listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// A bound group that never listened refuses connections, and dropping it frees the port.
    #[test]
    fn bound_but_not_listening_refuses_and_frees_on_drop() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = group.addr;
        assert_eq!(
            std::net::TcpStream::connect(addr).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        drop(group);
        bind_group(addr, 2).unwrap();
    }

    /// An outside SO_REUSEPORT holder is detected, not silently shared, and named.
    #[test]
    fn outside_reuseport_holder_is_refused_and_named() {
        let outside = bind_one("127.0.0.1:0".parse().unwrap(), true).unwrap();
        outside.listen(16).unwrap();
        let addr = outside.local_addr().unwrap().as_socket().unwrap();
        let err = bind_group(addr, 2).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("held by another process")
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }

    /// A port used only as the local end of a connection is told apart from a listener.
    #[test]
    fn a_connections_local_end_is_not_called_a_process() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap();
        let started = Instant::now();
        let err = bind_group(local, 1).unwrap_err();
        // Nothing that lives explains it, so it was tried again until the bound.
        assert!(started.elapsed() >= RELEASE_WAIT, "{:?}", started.elapsed());
        match &err {
            ListenerError::NoListener { states, .. } => {
                assert!(states.contains(&"ESTABLISHED"), "{err}")
            }
            other => panic!("expected NoListener, got {other}"),
        }
        assert!(
            err.to_string().contains("no process listens on it"),
            "{err}"
        );
    }

    /// A live outside listener without SO_REUSEPORT fails the bind at once (no retry): the
    /// error names the process well within the retry bound.
    #[test]
    fn a_live_holder_fails_at_once_without_retry() {
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = outside.local_addr().unwrap();
        let started = Instant::now();
        let err = bind_group(addr, 2).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, ListenerError::HeldByProcess { .. }),
            "expected HeldByProcess, got {err}"
        );
        assert!(took < RELEASE_WAIT / 2, "took {took:?}");
    }

    /// An address busy with nothing live listening on it is tried again, and bound as soon
    /// as it is free (here the local end of a connection, reset 100 ms later).
    #[test]
    fn a_busy_address_without_listener_is_bound_once_it_is_free() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let local = client.local_addr().unwrap();
        let (accepted, _) = server.accept().unwrap();
        // Linger 0: close sends a reset and frees the port at once (no TIME_WAIT).
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(client);
        });
        let started = Instant::now();
        let group = bind_group(local, 2).unwrap();
        let took = started.elapsed();
        closer.join().unwrap();
        drop(accepted);
        assert_eq!(group.addr, local);
        assert!(
            took >= Duration::from_millis(100) && took < RELEASE_WAIT,
            "took {took:?}"
        );
    }
}
