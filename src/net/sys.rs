//! Hot side: the few raw system calls the relay needs that neither std, socket2 nor monoio
//! expose on a borrowed fd (non-blocking recv and send, linger, shutdown, non-blocking,
//! splice, pipes, integer socket options such as keepalive's), the open-files limit, and the
//! three a worker uses to retire a listener without resetting a queued connection (a SYN filter, a
//! non-blocking accept, the accept queue's length), and the three a binary upgrade needs
//! (a copy of a session's socket, a descriptor inherited across exec, and keeping one open
//! across exec).
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

/// `setsockopt` of one `c_int` option (`level`/`name` as in `setsockopt(2)`, e.g.
/// `libc::IPPROTO_TCP`/`libc::TCP_KEEPIDLE`).
pub fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: as in `set_linger_zero`: a live socket fd and a stack value for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The process's `RLIMIT_NOFILE`: (soft, hard); `u64::MAX` stands for unlimited.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into our stack variable.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets `RLIMIT_NOFILE`'s soft limit (the hard limit stays).
pub fn set_nofile_soft(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from our stack variable.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }).map(drop)
}

/// `recv(2)` with `MSG_DONTWAIT`: whatever is queued, up to `buf.len()`, without waiting,
/// whether or not the socket is in non-blocking mode (so no `ioctl(FIONBIO)` is needed).
///
/// `Ok(0)` means end of file (for a non-empty `buf`); `WouldBlock` means nothing is queued.
#[inline]
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `fd` is a socket the caller keeps open; the kernel writes at most `buf.len()`
    // bytes into `buf`, which is borrowed mutably for the whole call.
    cvt_size(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// Whether the client has sent anything, without taking it: `recv(2)` of one byte with
/// `MSG_PEEK | MSG_DONTWAIT`. `Ok(1)`: bytes are queued (and stay queued for the relay);
/// `Ok(0)`: end of file; `WouldBlock`: nothing yet.
#[inline]
pub fn peek_byte(fd: RawFd) -> io::Result<usize> {
    let mut one = [0u8; 1];
    // SAFETY: `fd` is a socket the caller keeps open; the kernel writes at most one byte
    // into `one`, a local array that outlives the call.
    cvt_size(unsafe {
        libc::recv(
            fd,
            one.as_mut_ptr().cast(),
            one.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    })
}

/// `send(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL`: as much of `buf` as fits in the socket's
/// send buffer now; a closed peer is an error (`EPIPE`), never a `SIGPIPE`.
#[inline]
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `fd` is a socket the caller keeps open; the kernel reads at most `buf.len()`
    // bytes from `buf`, which is borrowed for the whole call.
    cvt_size(unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

/// The system's memory page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
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
pub fn set_pipe_size(pipe: &OwnedFd, size: usize) -> PipeSize {
    let fd = pipe.as_raw_fd();
    let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a pipe fd we own; integer argument only.
    let set = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) };
    if set > 0 {
        return PipeSize {
            capacity: set as usize,
            refused: false,
        };
    }
    // SAFETY: as above.
    let get = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    PipeSize {
        capacity: if get > 0 { get as usize } else { 4096 },
        refused: true,
    }
}

/// What `set_pipe_size` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeSize {
    /// The pipe's capacity now.
    pub capacity: usize,
    /// The kernel refused the size asked for (over `fs.pipe-max-size` or the user's pipe
    /// budget): the pipe kept its default.
    pub refused: bool,
}

/// `SO_ATTACH_FILTER` (asm-generic value, as on x86-64 and arm64).
const SO_ATTACH_FILTER: libc::c_int = 26;

/// Attaches a classic BPF socket filter to a listening socket that drops every segment with
/// SYN set and ACK clear (a new connection attempt) and passes everything else: handshakes
/// already under way still complete into the accept queue, but no new one starts. A client
/// whose SYN is dropped retries it about a second later, and by then the listener is closed
/// (a refused connection, not a reset one). The filter runs on the TCP header (`skb->data`
/// points there when a TCP socket's filter runs); byte 13 holds the flags.
pub fn drop_new_connections(fd: RawFd) -> io::Result<()> {
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut program = [
        // A = tcp flags
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 13),
        // A &= SYN|ACK
        op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, SYN | ACK),
        // A == SYN ? drop : pass
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, SYN),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fd` is a socket the caller keeps open; `fprog` and the program it points to
    // live on our stack for the whole call (the kernel copies the program in).
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// One `accept4` on a non-blocking listening socket (ringway's listeners all are):
/// `Ok(None)` when its queue is empty. The new socket is non-blocking and close-on-exec.
pub fn accept_now(fd: RawFd) -> io::Result<Option<std::net::TcpStream>> {
    // SAFETY: `fd` is a listening socket the caller keeps open; null address pointers are
    // allowed (we do not need the peer's address here).
    let ret = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    match cvt(ret) {
        // SAFETY: on success `ret` is a new socket descriptor owned by nobody else.
        Ok(new) => Ok(Some(unsafe { std::net::TcpStream::from_raw_fd(new) })),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Connections waiting in a listening socket's accept queue (`tcpi_unacked` of TCP_INFO,
/// which holds the accept backlog for a socket in LISTEN state).
pub fn accept_queue_len(fd: RawFd) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which lives on our stack
    // for the call, and updates `len`; `fd` is kept open by the caller.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    Ok(info.tcpi_unacked)
}

/// Test support: clears CAP_SYS_RESOURCE and CAP_SYS_ADMIN from the calling thread's
/// effective capabilities (capabilities are per thread on Linux), so that a test running as
/// root meets the limits an unprivileged ringway meets (the pipe budget).
#[cfg(test)]
pub(crate) fn drop_resource_caps_for_this_thread() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs (version 3), which live on our
    // stack for the whole call.
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } as libc::c_int)?;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    data[0].effective &= !(1 << CAP_SYS_RESOURCE | 1 << CAP_SYS_ADMIN);
    // SAFETY: capset reads the same structs; pid 0 is the calling thread.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } as libc::c_int)
        .map(drop)
}

/// A copy of `fd` (close-on-exec): the socket stays open after the original is closed.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads `fd` (the caller keeps it open) and returns a new
    // descriptor, owned from here on.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` was just created by the kernel for this process and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Takes ownership of descriptor `fd`, inherited across exec and named by the environment;
/// an error when no such descriptor is open. Call once per descriptor.
pub fn inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd <= 2 {
        return Err(io::Error::other(
            "descriptors 0-2 are not inherited sockets",
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; EBADF when it is not open.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: it is open (checked above), it was passed to this process for the caller alone
    // (the environment names it), and the caller takes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor above 2 but `keep`: what a process started by an upgrade
/// inherited without meaning to (io_uring's accept makes sockets without close-on-exec, so
/// the old process's connections would otherwise stay open here, and a session ended in the
/// new process would never send its FIN).
pub fn close_all_but(keep: RawFd) -> io::Result<()> {
    let ranges = [(3, keep - 1), (keep + 1, libc::c_int::MAX)];
    for (first, last) in ranges.into_iter().filter(|(a, b)| a <= b) {
        // SAFETY: close_range takes two integers and a flag; it closes descriptors only,
        // and the caller owns none of them but `keep` (it runs first thing at start-up).
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                last as libc::c_uint,
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `fd` (close-on-exec in this process) survive the exec of `cmd` only.
pub fn keep_across_exec(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; `fcntl` is async-signal-safe
    // and it touches nothing but the integer `fd` (no allocation, no lock).
    unsafe {
        cmd.pre_exec(move || cvt(libc::fcntl(fd, libc::F_SETFD, 0)).map(drop));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dup_keeps_the_socket_open_and_inherited_checks_the_number() {
        use std::io::{Read, Write};
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let copy = super::dup(b.as_raw_fd()).unwrap();
        drop(b);
        a.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        std::os::unix::net::UnixStream::from(copy)
            .read_exact(&mut got)
            .unwrap();
        assert_eq!(&got, b"x");
        assert!(super::inherited(2).is_err(), "stdio is never taken");
        assert!(super::inherited(1 << 20).is_err(), "a number not open");
    }

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

    /// peek_byte says whether bytes are queued without taking them, never waits, and sees
    /// the end of file.
    #[test]
    fn peek_byte_leaves_the_bytes_queued() {
        let (mut a, mut b) = pair();
        let fd = b.as_raw_fd();
        assert_eq!(peek_byte(fd).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hi").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peek_byte(fd).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(peek_byte(fd).unwrap(), 1);
        let mut buf = [0u8; 2];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi", "the peeked byte is still read");
        drop(a);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while peek_byte(fd).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(peek_byte(fd).unwrap(), 0);
    }

    /// recv and send never wait, on a blocking socket too; EOF is 0; a reset peer is an
    /// error on send, not a signal.
    #[test]
    fn recv_and_send_do_not_block() {
        let (a, mut b) = pair();
        let mut buf = [0u8; 16];
        let fd = a.as_raw_fd();
        assert_eq!(
            recv(fd, &mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        b.write_all(b"ping").unwrap();
        let t = std::time::Instant::now();
        let n = loop {
            match recv(fd, &mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(t.elapsed() < std::time::Duration::from_secs(5));
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(send(fd, b"pong").unwrap(), 4);
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        // A full send buffer: a huge send takes part and then would block, never waits.
        let big = vec![0u8; 8 << 20];
        let mut sent = 0;
        let err = loop {
            match send(fd, &big) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert!(sent > 0);
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The peer resets: send reports it (no SIGPIPE kills the test).
        set_linger_zero(b.as_raw_fd()).unwrap();
        drop(b);
        let t = std::time::Instant::now();
        let err = loop {
            match send(fd, b"x") {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => break e,
                _ => {
                    assert!(t.elapsed() < std::time::Duration::from_secs(5));
                    std::thread::yield_now();
                }
            }
        };
        assert!(matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ));
        drop(a);
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

    /// The SYN filter stops new connections but not established ones; the queue is counted
    /// and drained with non-blocking accepts.
    #[test]
    fn syn_filter_queue_length_and_drain() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (mut c, mut s) = (TcpStream::connect(addr).unwrap(), l.accept().unwrap().0);
        l.set_nonblocking(true).unwrap();
        let queued: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let fd = l.as_raw_fd();
        assert_eq!(accept_queue_len(fd).unwrap(), 3);
        drop_new_connections(fd).unwrap();
        let refused = TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300));
        assert_eq!(refused.unwrap_err().kind(), io::ErrorKind::TimedOut);
        c.write_all(b"still here").unwrap();
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still here");
        let mut drained = 0;
        while let Some(conn) = accept_now(fd).unwrap() {
            assert_eq!(conn.local_addr().unwrap(), addr);
            drained += 1;
        }
        assert_eq!(drained, 3);
        assert_eq!(accept_queue_len(fd).unwrap(), 0);
        drop(queued);
    }

    /// Bytes go socket → pipe → socket intact, and an empty socket says WouldBlock.
    #[test]
    fn splice_round_trip_through_a_pipe() {
        let (mut src_peer, src) = pair();
        let (dst, mut dst_peer) = pair();
        set_nonblocking(src.as_raw_fd(), true).unwrap();
        set_nonblocking(dst.as_raw_fd(), true).unwrap();
        let (r, w) = pipe().unwrap();
        assert!(set_pipe_size(&w, 1 << 16).capacity >= 4096);
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
