//! Hot side: keepalive probes and `TCP_USER_TIMEOUT` on a session's sockets, so that a
//! session whose peer vanished (no FIN, no reset: a black-holed host, a dead network) ends
//! instead of staying open for ever.
//!
//! Cost per connection: the client socket pays nothing — Linux copies a listener's
//! keepalive flag and timings and its user timeout into every connection accepted from it
//! (tested below), so a worker sets them on its listener once per change of the route
//! table ([`set`]). The backend socket is new for every session and gets them after the
//! connect ([`set_new`]): `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and
//! `TCP_USER_TIMEOUT`, one `setsockopt` each (4 calls with the defaults); `TCP_KEEPCNT` only
//! where the user timeout is off (with one set, the kernel gives up by it and ignores the
//! count).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::sys::set_int_option;
use crate::config::Keepalive;

fn secs(d: Duration) -> libc::c_int {
    libc::c_int::try_from(d.as_secs().max(1)).unwrap_or(libc::c_int::MAX)
}

fn millis(d: Option<Duration>) -> libc::c_int {
    // The kernel reads an unsigned int; validation keeps it below u32::MAX ms.
    d.map_or(0, |d| {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX) as libc::c_int
    })
}

/// Sets `k` on a socket fresh from `socket(2)`/`connect(2)` (keepalive off, no user
/// timeout): only what differs from those defaults.
pub fn set_new(fd: RawFd, k: &Keepalive) -> io::Result<()> {
    apply(fd, k, false)
}

/// Sets `k` exactly, turning off what it leaves off: for a listener (which may carry an
/// earlier generation's settings, or another process's after a handover) and for a client
/// socket whose route wants other settings than its listener's.
pub fn set(fd: RawFd, k: &Keepalive) -> io::Result<()> {
    apply(fd, k, true)
}

/// The one sequence of `setsockopt`s behind [`set_new`] and [`set`]; `exact` also writes
/// what equals a fresh socket's default (keepalive off, the count where a user timeout
/// overrides it, no user timeout).
fn apply(fd: RawFd, k: &Keepalive, exact: bool) -> io::Result<()> {
    match &k.probes {
        Some(p) => {
            set_int_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
            set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(p.idle))?;
            set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(p.interval))?;
            if exact || k.user_timeout.is_none() {
                let count = p.count as libc::c_int;
                set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count)?;
            }
        }
        None if exact => set_int_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0)?,
        None => {}
    }
    if exact || k.user_timeout.is_some() {
        let ms = millis(k.user_timeout);
        set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Probes;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn short() -> Keepalive {
        Keepalive {
            probes: Some(Probes {
                idle: Duration::from_secs(7),
                interval: Duration::from_secs(3),
                count: 4,
            }),
            user_timeout: Some(Duration::from_millis(2500)),
        }
    }

    fn read(s: &TcpStream) -> (bool, Duration, Duration, u32, Option<Duration>) {
        let r = socket2::SockRef::from(s);
        (
            r.keepalive().unwrap(),
            r.keepalive_time().unwrap(),
            r.keepalive_interval().unwrap(),
            r.keepalive_retries().unwrap(),
            r.tcp_user_timeout().unwrap(),
        )
    }

    /// Accepted connections inherit the listener's keepalive flag, timings and user
    /// timeout: the client side costs no system call per connection.
    #[test]
    fn accepted_connections_inherit_keepalive_and_user_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set(l.as_raw_fd(), &short()).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(
            read(&accepted),
            (
                true,
                Duration::from_secs(7),
                Duration::from_secs(3),
                4,
                Some(Duration::from_millis(2500))
            )
        );
        // Turned off on the listener: off on what it accepts next.
        set(l.as_raw_fd(), &Keepalive::OFF).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        let (on, _, _, _, user) = read(&accepted);
        assert!(!on);
        assert_eq!(user, None);
    }

    /// A new socket gets the probes and the user timeout; the count only where no user
    /// timeout is set.
    #[test]
    fn a_new_socket_gets_what_differs_from_the_defaults() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let default_count = read(&c).3;
        set_new(c.as_raw_fd(), &short()).unwrap();
        let (on, idle, interval, count, user) = read(&c);
        assert!(on);
        assert_eq!(
            (idle, interval),
            (Duration::from_secs(7), Duration::from_secs(3))
        );
        assert_eq!(count, default_count);
        assert_eq!(user, Some(Duration::from_millis(2500)));
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let no_user = Keepalive {
            user_timeout: None,
            ..short()
        };
        set_new(c.as_raw_fd(), &no_user).unwrap();
        assert_eq!(read(&c).3, 4);
        assert_eq!(read(&c).4, None);
    }
}
