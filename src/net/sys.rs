//! Hot side: the few raw system calls the relay needs that neither std, socket2 nor monoio
//! expose on a borrowed fd (linger, shutdown, non-blocking, splice, pipes).
//!
//! This is one of the two modules where `unsafe` is allowed. Every call takes a raw fd that
//! the caller keeps open for the duration of the call (it is borrowed from a live socket or
//! pipe object), passes no pointer that outlives the call, and returns errors as
//! `io::Error` without allocating.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `SO_LINGER {on, 0}`: the next close sends a reset instead of a FIN.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is a socket the caller keeps open; the pointer and length describe a
    // `linger` on our stack that lives for the whole call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `shutdown(2)`; `how` is `libc::SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
pub fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on an fd the caller keeps open; no memory is passed.
    cvt(unsafe { libc::shutdown(fd, how) }).map(drop)
}

/// Sets or clears `O_NONBLOCK` with one `ioctl(FIONBIO)`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let mut value: libc::c_int = on.into();
    // SAFETY: FIONBIO reads one c_int through the pointer, which points at our stack
    // variable for the duration of the call; `fd` is kept open by the caller.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut value) }).map(drop)
}

/// `TCP_NODELAY` on.
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: as in `set_linger_zero`: a live socket fd and a stack value for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Non-blocking `splice(2)` of up to `len` bytes from `from` to `to` (one of them a pipe).
///
/// `Ok(0)` means end of file on `from`; `WouldBlock` means "not now".
#[inline]
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both fds are kept open by the caller for the call; null offsets are valid for
    // pipes and sockets (splice then uses and advances the file position, which sockets and
    // pipes do not have).
    cvt_size(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    })
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: pipe2 writes exactly two c_ints into the array, which lives on our stack.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: on success both descriptors are new and owned by nobody else; wrapping them in
    // OwnedFd makes them close exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Asks for a pipe capacity with `F_SETPIPE_SZ`; returns the capacity the pipe has after the
/// call (the kernel rounds up, and an unprivileged process may be refused above
/// `/proc/sys/fs/pipe-max-size`, in which case the old capacity stays).
pub fn set_pipe_size(pipe: &OwnedFd, size: usize) -> usize {
    let fd = pipe.as_raw_fd();
    let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a pipe fd we own; integer argument only.
    let set = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) };
    if set > 0 {
        return set as usize;
    }
    // SAFETY: as above.
    let get = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    if get > 0 { get as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn linger_zero_close_resets_peer() {
        let (a, mut b) = pair();
        set_linger_zero(a.as_raw_fd()).unwrap();
        drop(a);
        let mut buf = [0u8; 8];
        let err = b.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn shutdown_write_gives_peer_eof() {
        let (a, mut b) = pair();
        shutdown(a.as_raw_fd(), libc::SHUT_WR).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn nonblocking_and_nodelay_apply() {
        let (mut a, _b) = pair();
        set_nonblocking(a.as_raw_fd(), true).unwrap();
        set_nodelay(a.as_raw_fd()).unwrap();
        assert!(a.nodelay().unwrap());
        let mut buf = [0u8; 8];
        assert_eq!(
            a.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// Bytes go socket → pipe → socket intact, and an empty socket says WouldBlock.
    #[test]
    fn splice_round_trip_through_a_pipe() {
        let (mut src_peer, src) = pair();
        let (dst, mut dst_peer) = pair();
        set_nonblocking(src.as_raw_fd(), true).unwrap();
        set_nonblocking(dst.as_raw_fd(), true).unwrap();
        let (r, w) = pipe().unwrap();
        assert!(set_pipe_size(&w, 1 << 16) >= 4096);
        assert_eq!(
            splice(src.as_raw_fd(), w.as_raw_fd(), 4096)
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
        src_peer.write_all(b"hello splice").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = splice(src.as_raw_fd(), w.as_raw_fd(), 4096).unwrap();
        assert_eq!(n, 12);
        assert_eq!(splice(r.as_raw_fd(), dst.as_raw_fd(), n).unwrap(), 12);
        let mut buf = [0u8; 12];
        dst_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello splice");
        drop(src_peer);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(splice(src.as_raw_fd(), w.as_raw_fd(), 4096).unwrap(), 0);
    }
}
