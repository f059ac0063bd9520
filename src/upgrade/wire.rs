//! Control side: the hand-over channel between a running ringway and the binary replacing it.
//!
//! A `SOCK_SEQPACKET` unix socket pair: message boundaries are kept (one JSON document per
//! message, its descriptors attached with `SCM_RIGHTS`), and a peer that exits reads as EOF
//! on the other end. The old process keeps one end; the new one inherits the other as the
//! descriptor named in `RINGWAY_UPGRADE_FD`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

/// Descriptors one message may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;
/// Largest message received. A unix SEQPACKET message is bounded by the sender's socket
/// buffer (`net.core.wmem_default`, 208 KiB by default): a `Ready` naming about 2,000 routes.
const MAX_MESSAGE: usize = 256 << 10;

/// What the old process sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToNew {
    /// The listening sockets of one address, in worker order (attached).
    Listeners { addr: SocketAddr },
    /// The admin API's sockets: TCP, then the unix socket when `unix` is set (attached).
    Admin {
        tcp: SocketAddr,
        unix: Option<PathBuf>,
    },
    /// Every socket is sent: start, with the admin token in force. `bound`: where each
    /// route listens, per configured address (a port-0 address keeps its port).
    Start {
        token: String,
        parent: u32,
        #[serde(default)]
        bound: Vec<(String, Vec<SocketAddr>)>,
    },
    /// One established session: client and backend sockets (attached, in that order).
    Session(MovedSession),
    /// No more sessions come.
    Done,
}

/// An established session as it moves between processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedSession {
    pub route: String,
    pub backend: SocketAddr,
    /// The worker that ran it (the new process uses the same index, modulo its count).
    pub worker: usize,
    /// Bytes relayed so far, to the backend and to the client.
    pub moved: [u64; 2],
    /// How long it had been open, ms.
    pub age_ms: u64,
}

/// What the new process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToOld {
    /// Serving: every worker runs, the listeners of `adopted` are in use, the admin API is
    /// up. `routes`: the routes it has (sessions of others stay with the old process).
    Ready {
        pid: u32,
        /// Each address taken over, with how many of its sockets (the old process's first
        /// workers'; it retires the others itself).
        adopted: Vec<(SocketAddr, usize)>,
        routes: Vec<String>,
    },
    /// It cannot start, and says why; it exits next.
    Failed { message: String },
}

/// One end of the hand-over channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair; both ends close on exec (the child's end is made inheritable in the
    /// child only, between fork and exec).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Takes over an inherited descriptor (marked close-on-exec again).
    pub fn adopt(fd: OwnedFd) -> io::Result<Channel> {
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(Channel { fd })
    }

    /// Waits at most `limit` in [`Channel::recv`] (`None`: forever). A limit under a
    /// millisecond counts as one (a zero timeval would mean forever).
    pub fn set_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        let limit = limit.map(|l| l.max(Duration::from_millis(1)));
        socket2::SockRef::from(&self.fd).set_read_timeout(limit)
    }

    /// Waits at most `limit` in [`Channel::send`] for room (a peer that does not read).
    pub fn set_send_timeout(&self, limit: Duration) -> io::Result<()> {
        let limit = limit.max(Duration::from_millis(1));
        socket2::SockRef::from(&self.fd).set_write_timeout(Some(limit))
    }

    /// Sends `msg` with `fds` attached (at most [`MAX_FDS`]).
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other(format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            )));
        }
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other(
                "descriptors do not fit the control buffer",
            ));
        }
        let sent = rustix::net::sendmsg(
            &self.fd,
            &[IoSlice::new(&bytes)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        )?;
        if sent != bytes.len() {
            return Err(io::Error::other("message cut short"));
        }
        Ok(())
    }

    /// The next message and its descriptors; `None` when the other end is closed. A read
    /// timeout ([`Channel::set_timeout`]) is `ErrorKind::WouldBlock`/`TimedOut`.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        self.recv_with(&mut Vec::new())
    }

    /// [`Channel::recv`] into `buf` (kept between calls: one allocation for many messages).
    /// A truncated message (its descriptors cut by the open-files limit) is an error of kind
    /// `InvalidData`; the descriptors that did arrive are reset and closed.
    pub fn recv_with<T: for<'de> Deserialize<'de>>(
        &self,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        buf.resize(MAX_MESSAGE, 0);
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(buf)],
                &mut cmsg,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if got.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        if got.flags.contains(rustix::net::ReturnFlags::CTRUNC)
            || got.flags.contains(rustix::net::ReturnFlags::TRUNC)
        {
            fds.into_iter().for_each(reset);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a hand-over message was truncated (out of descriptors?)",
            ));
        }
        let msg = serde_json::from_slice(&buf[..got.bytes])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((msg, fds)))
    }
}

/// Closes a socket that could not be handed over with a reset: its stream was cut
/// mid-way, and a clean close would tell the peer it got everything.
pub fn reset(fd: OwnedFd) {
    use std::os::fd::AsRawFd;
    let _ = crate::net::sys::set_linger_zero(fd.as_raw_fd());
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn messages_carry_working_descriptors_and_eof_is_none() {
        let (a, b) = Channel::pair().unwrap();
        let (mut x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let msg = ToNew::Session(MovedSession {
            route: "web".into(),
            backend: "127.0.0.1:8080".parse().unwrap(),
            worker: 1,
            moved: [3, 4],
            age_ms: 5,
        });
        a.send(&msg, &[y.as_fd(), x.as_fd()]).unwrap();
        drop(y);
        let (got, fds) = b.recv::<ToNew>().unwrap().unwrap();
        assert_eq!(got, msg);
        assert_eq!(fds.len(), 2);
        // The received descriptor is the same socket: bytes written to its peer arrive.
        let mut y2 = std::os::unix::net::UnixStream::from(fds.into_iter().next().unwrap());
        x.write_all(b"hi").unwrap();
        let mut two = [0u8; 2];
        y2.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"hi");
        drop(a);
        assert!(
            b.recv::<ToNew>().unwrap().is_none(),
            "EOF once the peer closed"
        );
    }

    #[test]
    fn a_read_timeout_ends_the_wait() {
        let (_a, b) = Channel::pair().unwrap();
        b.set_timeout(Some(Duration::from_millis(20))).unwrap();
        let e = b.recv::<ToOld>().unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }
}
