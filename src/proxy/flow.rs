//! Hot side: one direction of a relay — wait for bytes, move them, pass EOF on.
//!
//! A direction holds nothing while it waits: readiness comes through the ring as a poll op
//! (no buffer, no pipe; io_uring's own recv or splice ops would hold a buffer, or park a
//! kernel io-wq thread, per pending operation). Once readable it moves what is queued in one
//! of two ways:
//! - **copy**: `recv` into the worker's copy buffer, `send` it on at once; both calls use
//!   `MSG_DONTWAIT`, so the sockets stay in blocking mode and need no `ioctl`. What the other
//!   side cannot take now goes into a backlog buffer from the pool, held only until it is
//!   sent. Small request/response traffic costs two system calls per message;
//! - **splice**: socket → pipe → socket, zero-copy; the pipe comes from the pool while bytes
//!   are in it. Bulk traffic costs a third of the copy's CPU per byte.
//!
//! `auto` starts copying and moves a direction to splice the first time a read fills the
//! copy buffer (more was queued than one buffer holds: bulk). Readiness is asked with
//! `relaxed = false`, which the epoll driver needs for I/O done outside monoio.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;

use super::pool::{BufferPool, Pipe, Pools};
use super::relay::{Fail, Shared, Side, Tally};
use crate::net::sys;

/// What both directions of a session use.
pub struct Ctx<'a> {
    pub pools: &'a Pools,
    pub tally: &'a Tally<'a>,
    pub shared: &'a Shared,
    /// A direction may move to splice (modes `auto` and `always`).
    pub may_splice: bool,
    /// Splice from the first byte (mode `always`, sockets already non-blocking).
    pub splice_now: bool,
}

/// One direction: where bytes come from and go, and what counts them.
pub struct Way<'a> {
    pub from: &'a TcpStream,
    pub to: &'a TcpStream,
    pub from_side: Side,
    pub to_side: Side,
    /// Read before waiting for readiness: true for the client, whose first bytes are usually
    /// queued by the time the session starts; false for a backend just connected, which has
    /// sent nothing yet (a read would be a wasted system call).
    pub try_first: bool,
}

/// Bytes read from `from` that `to` has not taken yet.
enum Held {
    Nothing,
    /// Copied bytes in a backlog buffer, sent up to `sent`.
    Backlog {
        buf: Vec<u8>,
        sent: usize,
    },
    /// Spliced bytes still in a pipe.
    Pipe(Pipe),
}

/// What a read step found.
enum Read {
    /// Bytes moved; `full`: the read filled the buffer or pipe (more is probably queued);
    /// `held`: what `to` could not take yet.
    Moved {
        full: bool,
        held: Held,
    },
    NothingQueued,
    Eof,
    /// Splice: no pipe could be made (fds or the user's pipe budget exhausted).
    NoPipe,
}

/// Reads in a row a direction makes without waiting before it lets other tasks run: 16 × the
/// 64 KiB copy buffer = 1 MiB.
const BURST: u32 = 16;

/// Runs one direction until EOF (passed on) or a failure.
///
/// An explicit state machine with a single await: the future holds one readiness wait and
/// what is in flight (`Held`), about a hundred bytes, so an idle session stays small.
pub async fn direction(ctx: &Ctx<'_>, way: Way<'_>) -> Result<(), Fail> {
    let (from_fd, to_fd) = (way.from.as_raw_fd(), way.to.as_raw_fd());
    let mut splicing = ctx.splice_now;
    let mut ready = way.try_first;
    let mut held = Held::Nothing;
    // Reads in a row without a wait.
    let mut burst = 0u32;
    loop {
        // An upgrade is taking the route's sessions: read nothing more (what is held is still
        // delivered) until the relay ends `Paused`, or the upgrade lets the session stay. A
        // half-closed session is never taken, and keeps reading.
        if matches!(held, Held::Nothing) && ctx.tally.pause.get() && !ctx.shared.one_ended() {
            super::relay::Resume(ctx.tally.pause).await;
            ready = true;
            continue;
        }
        // Wait: for room on `to` while bytes are held, else for bytes on `from` (at once when
        // more is probably queued, but at least every BURST reads, so that one bulk session
        // never keeps the worker from its other sessions: monoio has no task budget).
        let wait = match held {
            Held::Nothing if ready && burst < BURST => None,
            Held::Nothing => Some((way.from, true, way.from_side)),
            _ => Some((way.to, false, way.to_side)),
        };
        // The wait just done said `from` is readable.
        let mut woke = false;
        if let Some((stream, read, side)) = wait {
            burst = 0;
            let r = if read {
                stream.readable(false).await
            } else {
                stream.writable(false).await
            };
            r.map_err(|_| Fail::Peer(side))?;
            woke = read;
        }
        let was_held = !matches!(held, Held::Nothing);
        held = match held {
            Held::Nothing => {
                burst += 1;
                let mut step = if splicing {
                    splice_in(ctx, &way, from_fd, to_fd)?
                } else {
                    copy(ctx, &way, from_fd, to_fd)?
                };
                let confirm = match step {
                    Read::NoPipe | Read::Eof => true,
                    Read::NothingQueued => woke,
                    Read::Moved { .. } => false,
                };
                if splicing && confirm {
                    // No pipe to be had (fds or the pipe budget exhausted): copy instead.
                    // Or splice saw nothing (or "EOF") where there may be bytes: splice never
                    // reads past TCP urgent data, and returns EAGAIN in front of it (while
                    // readiness reports it forever) or 0 once the peer has also sent its FIN.
                    // A copy step reads past it (the urgent byte itself is dropped, as recv(2)
                    // without SO_OOBINLINE does) or confirms the EOF; splicing then goes on.
                    if matches!(step, Read::NoPipe) {
                        splicing = false;
                    }
                    step = copy(ctx, &way, from_fd, to_fd)?;
                }
                match step {
                    Read::Moved { full, held } => {
                        ctx.pools.pulse.beat();
                        ready = full;
                        if full && !splicing && ctx.may_splice {
                            // A read filled the copy buffer: bulk. Splice from now on
                            // (where the sockets can be made non-blocking).
                            splicing = ctx.shared.make_nonblocking(way.from, way.to);
                        }
                        held
                    }
                    Read::NothingQueued | Read::NoPipe => {
                        ready = false;
                        Held::Nothing
                    }
                    Read::Eof => return end(ctx, to_fd),
                }
            }
            Held::Backlog { buf, sent } => send_backlog(ctx, &way, to_fd, buf, sent)?,
            Held::Pipe(pipe) => drain_pipe(ctx, &way, to_fd, pipe)?,
        };
        let holds = !matches!(held, Held::Nothing);
        if holds != was_held {
            ctx.shared.holding(holds);
        }
    }
}

/// EOF on `from`: pass it on, unless the other direction already ended (then the close that
/// follows sends the FIN).
fn end(ctx: &Ctx<'_>, to_fd: RawFd) -> Result<(), Fail> {
    if !ctx.shared.end_one() {
        let _ = sys::shutdown(to_fd, libc::SHUT_WR);
    }
    Ok(())
}

/// Reads what is queued into the copy buffer and sends it on, with no await in between (the
/// copy buffer is the worker's, shared by all its sessions).
#[inline]
fn copy(ctx: &Ctx<'_>, way: &Way<'_>, from_fd: RawFd, to_fd: RawFd) -> Result<Read, Fail> {
    let mut scratch = ctx.pools.scratch.borrow_mut();
    let n = match sys::recv(from_fd, &mut scratch) {
        Ok(0) => return Ok(Read::Eof),
        Ok(n) => n,
        Err(e) if is_not_now(e.kind()) => return Ok(Read::NothingQueued),
        Err(e) => return Err(Fail::of(way.from_side, &e)),
    };
    ctx.tally.moved(way.from_side, n);
    let full = n == scratch.len();
    let sent = match sys::send(to_fd, &scratch[..n]) {
        Ok(m) => m,
        Err(e) if is_not_now(e.kind()) => 0,
        Err(e) => return Err(Fail::of(way.to_side, &e)),
    };
    let held = if sent == n {
        Held::Nothing
    } else {
        Held::Backlog {
            buf: backlog(&ctx.pools.buffers, &scratch[sent..n]),
            sent: 0,
        }
    };
    Ok(Read::Moved { full, held })
}

fn backlog(buffers: &BufferPool, bytes: &[u8]) -> Vec<u8> {
    let mut rest = buffers.take();
    rest.extend_from_slice(bytes);
    rest
}

/// Sends more of a backlog; the buffer goes back to the pool once empty.
fn send_backlog(
    ctx: &Ctx<'_>,
    way: &Way<'_>,
    to_fd: RawFd,
    buf: Vec<u8>,
    mut sent: usize,
) -> Result<Held, Fail> {
    match sys::send(to_fd, &buf[sent..]) {
        Ok(m) => {
            sent += m;
            ctx.tally.active();
        }
        Err(e) if is_not_now(e.kind()) => {}
        Err(e) => return Err(Fail::of(way.to_side, &e)),
    }
    if sent < buf.len() {
        return Ok(Held::Backlog { buf, sent });
    }
    ctx.pools.buffers.put(buf);
    Ok(Held::Nothing)
}

/// Splices what is queued into a pooled pipe, and on to `to` as far as it takes it.
fn splice_in(ctx: &Ctx<'_>, way: &Way<'_>, from_fd: RawFd, to_fd: RawFd) -> Result<Read, Fail> {
    let pipes = &ctx.pools.pipes;
    let Ok(mut pipe) = pipes.take() else {
        return Ok(Read::NoPipe);
    };
    let n = match pipe.fill_from(from_fd) {
        Ok(0) => {
            pipes.put(pipe);
            return Ok(Read::Eof);
        }
        Ok(n) => n,
        Err(e) if is_not_now(e.kind()) => {
            pipes.put(pipe);
            return Ok(Read::NothingQueued);
        }
        Err(e) => {
            pipes.put(pipe);
            return Err(Fail::of(way.from_side, &e));
        }
    };
    // A full pipe means more is probably waiting: go again before polling.
    let full = n == pipe.capacity();
    ctx.tally.moved(way.from_side, n);
    let held = drain_pipe(ctx, way, to_fd, pipe)?;
    Ok(Read::Moved { full, held })
}

/// Splices a pipe's bytes out to `to` until it is empty (the pipe goes back to the pool) or
/// `to` takes no more now.
fn drain_pipe(ctx: &Ctx<'_>, way: &Way<'_>, to_fd: RawFd, mut pipe: Pipe) -> Result<Held, Fail> {
    while pipe.pending() > 0 {
        match pipe.drain_to(to_fd) {
            Ok(0) => return Err(Fail::Peer(way.to_side)),
            Ok(_) => ctx.tally.active(),
            Err(e) if is_not_now(e.kind()) => return Ok(Held::Pipe(pipe)),
            // The pipe still holds bytes: dropping it closes it (never reused).
            Err(e) => return Err(Fail::of(way.to_side, &e)),
        }
    }
    ctx.pools.pipes.put(pipe);
    Ok(Held::Nothing)
}

/// "Not now": nothing queued or no room (`EAGAIN`), or a signal arrived (`EINTR`: the next
/// readiness wait returns at once and the call is made again).
#[inline]
fn is_not_now(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
