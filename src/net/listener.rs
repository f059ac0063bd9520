//! Control side: creating the per-worker SO_REUSEPORT listeners for one address.
//!
//! Before the group is bound, a probe socket *without* SO_REUSEPORT is bound to the address:
//! if that fails, another process holds the port (an outside SO_REUSEPORT holder of the same
//! user would otherwise silently share our traffic), and the error names it when /proc says
//! who it is. Then one socket per worker is bound with SO_REUSEPORT, in worker order.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog asked for each listener (the kernel caps it at net.core.somaxconn).
pub const BACKLOG: i32 = 4096;

/// Why a listen address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(
        "{addr} is already in use by another process{}; stop it or choose another port",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    InUse {
        addr: SocketAddr,
        holder: Option<String>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds `count` SO_REUSEPORT listeners on `addr`, after checking nobody else holds it.
pub fn bind_group(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, ListenerError> {
    probe(addr)?;
    (0..count)
        .map(|_| bind_one(addr, true))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| classify(addr, source))
}

/// Binds and drops a socket without SO_REUSEPORT: fails when anyone holds the address.
fn probe(addr: SocketAddr) -> Result<(), ListenerError> {
    bind_one(addr, false)
        .map(drop)
        .map_err(|source| classify(addr, source))
}

fn classify(addr: SocketAddr, source: io::Error) -> ListenerError {
    if source.kind() == io::ErrorKind::AddrInUse {
        ListenerError::InUse {
            addr,
            holder: find_holder(addr.port()),
        }
    } else {
        ListenerError::Bind { addr, source }
    }
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
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
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Finds "pid N (comm)" of a process listening on `port`, from /proc. Best effort.
pub fn find_holder(port: u16) -> Option<String> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
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
            if inodes.iter().any(|i| i == inode) {
                let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} {}", comm.trim()));
            }
        }
    }
    Some("a process this user cannot inspect".to_string())
}

/// Inodes of sockets in LISTEN (or bound) state on `port`, from /proc/net/tcp{,6}.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 0A = LISTEN, 07 = CLOSE (bound, not listening)
            if local_port == Some(port) && (*state == "0A" || *state == "07") && *inode != "0" {
                out.push((*inode).to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_binds_and_shares_the_port() {
        let first = bind_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = first[0].local_addr().unwrap();
        drop(first);
        let group = bind_group(addr, 3).unwrap();
        assert_eq!(group.len(), 3);
        for l in &group {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
    }

    /// An outside SO_REUSEPORT holder is detected, not silently shared, and named.
    #[test]
    fn outside_reuseport_holder_is_refused_and_named() {
        let outside = bind_one("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = outside.local_addr().unwrap();
        match bind_group(addr, 2) {
            Err(ListenerError::InUse { holder, .. }) => {
                let holder = holder.unwrap();
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("expected InUse, got {other:?}"),
        }
    }
}
