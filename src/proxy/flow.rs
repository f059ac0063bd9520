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

use std::cell::Cell;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;

use super::pool::{BufferPool, Pools};
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
    pub counter: &'a Cell<u64>,
    /// Read before waiting for readiness: true for the client, whose first bytes are usually
    /// queued by the time the session starts; false for a backend just connected, which has
    /// sent nothing yet (a read would be a wasted system call).
    pub try_first: bool,
}

/// What one copy step did.
enum Copied {
    /// Sent on in full; `full`: the read filled the copy buffer.
    Sent {
        full: bool,
    },
    /// The other side took only part: the rest is in this backlog buffer.
    Backlog {
        rest: Vec<u8>,
        full: bool,
    },
    NothingQueued,
    Eof,
    Failed(Side),
}

/// What one splice step did.
enum Spliced {
    /// Moved in full; `full`: the read filled the pipe.
    Sent {
        full: bool,
    },
    NothingQueued,
    Eof,
}

/// Runs one direction until EOF (passed on) or a failure.
pub async fn direction(ctx: &Ctx<'_>, way: Way<'_>) -> Result<(), Fail> {
    let (from_fd, to_fd) = (way.from.as_raw_fd(), way.to.as_raw_fd());
    let mut splicing = ctx.splice_now;
    let mut ready = way.try_first;
    loop {
        if !ready {
            way.from
                .readable(false)
                .await
                .map_err(|_| Fail::Peer(way.from_side))?;
        }
        if splicing {
            match splice_step(ctx, &way, from_fd, to_fd).await? {
                Spliced::Sent { full } => ready = full,
                Spliced::NothingQueued => ready = false,
                Spliced::Eof => return end(ctx, to_fd),
            }
            continue;
        }
        match copy_step(ctx, &way, from_fd, to_fd) {
            Copied::Sent { full } => ready = full,
            Copied::Backlog { mut rest, full } => {
                flush(&way, to_fd, &rest).await?;
                rest.clear();
                ctx.pools.buffers.put(rest);
                ready = full;
            }
            Copied::NothingQueued => ready = false,
            Copied::Eof => return end(ctx, to_fd),
            Copied::Failed(side) => return Err(Fail::Peer(side)),
        }
        if ready && ctx.may_splice {
            // A read filled the copy buffer: bulk. Splice from now on (where the sockets
            // can be made non-blocking).
            splicing = ctx.shared.make_nonblocking(way.from, way.to);
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
fn copy_step(ctx: &Ctx<'_>, way: &Way<'_>, from_fd: RawFd, to_fd: RawFd) -> Copied {
    let mut scratch = ctx.pools.scratch.borrow_mut();
    let n = match sys::recv(from_fd, &mut scratch) {
        Ok(0) => return Copied::Eof,
        Ok(n) => n,
        Err(e) if is_not_now(e.kind()) => return Copied::NothingQueued,
        Err(_) => return Copied::Failed(way.from_side),
    };
    ctx.tally.moved(way.counter, n);
    let full = n == scratch.len();
    let sent = match sys::send(to_fd, &scratch[..n]) {
        Ok(m) => m,
        Err(e) if is_not_now(e.kind()) => 0,
        Err(_) => return Copied::Failed(way.to_side),
    };
    if sent == n {
        Copied::Sent { full }
    } else {
        Copied::Backlog {
            rest: backlog(&ctx.pools.buffers, &scratch[sent..n]),
            full,
        }
    }
}

fn backlog(buffers: &BufferPool, bytes: &[u8]) -> Vec<u8> {
    let mut rest = buffers.take();
    rest.extend_from_slice(bytes);
    rest
}

/// Sends a backlog, waiting for room each time the socket's send buffer is full.
async fn flush(way: &Way<'_>, to_fd: RawFd, rest: &[u8]) -> Result<(), Fail> {
    let mut off = 0;
    while off < rest.len() {
        way.to
            .writable(false)
            .await
            .map_err(|_| Fail::Peer(way.to_side))?;
        match sys::send(to_fd, &rest[off..]) {
            Ok(m) => off += m,
            Err(e) if is_not_now(e.kind()) => {}
            Err(_) => return Err(Fail::Peer(way.to_side)),
        }
    }
    Ok(())
}

/// Splices what is queued into a pooled pipe and out to the other side.
async fn splice_step(
    ctx: &Ctx<'_>,
    way: &Way<'_>,
    from_fd: RawFd,
    to_fd: RawFd,
) -> Result<Spliced, Fail> {
    let pipes = &ctx.pools.pipes;
    let mut pipe = pipes.take().map_err(|_| Fail::Local)?;
    let n = match pipe.fill_from(from_fd) {
        Ok(0) => {
            pipes.put(pipe);
            return Ok(Spliced::Eof);
        }
        Ok(n) => n,
        Err(e) if is_not_now(e.kind()) => {
            pipes.put(pipe);
            return Ok(Spliced::NothingQueued);
        }
        Err(_) => {
            pipes.put(pipe);
            return Err(Fail::Peer(way.from_side));
        }
    };
    // A full pipe means more is probably waiting: go again before polling.
    let full = n == pipe.capacity();
    ctx.tally.moved(way.counter, n);
    while pipe.pending() > 0 {
        match pipe.drain_to(to_fd) {
            Ok(0) => return Err(Fail::Peer(way.to_side)),
            Ok(_) => {}
            Err(e) if is_not_now(e.kind()) => {
                way.to
                    .writable(false)
                    .await
                    .map_err(|_| Fail::Peer(way.to_side))?;
            }
            // The pipe still holds bytes: dropping it closes it (never reused).
            Err(_) => return Err(Fail::Peer(way.to_side)),
        }
    }
    pipes.put(pipe);
    Ok(Spliced::Sent { full })
}

/// "Not now": nothing queued or no room (`EAGAIN`), or a signal arrived (`EINTR`: the next
/// readiness wait returns at once and the call is made again).
#[inline]
fn is_not_now(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::Interrupted)
}
