//! Hot side: relaying one session's bytes both ways — the buffered path, and the pieces both
//! paths share (how a relay ends, joining the two directions, the idle watchdog).
//!
//! TCP semantics are kept end to end:
//! - EOF one way shuts down writing the other way (`SHUT_WR`), and the other direction goes
//!   on (half-close);
//! - a reset or a failed write on either side ends both directions at once, and both sockets
//!   are closed with `SO_LINGER {1, 0}`, so the other side sees a reset, never a clean close;
//! - a clean close on both sides never produces a reset.
//!
//! The buffered path reads into an owned buffer taken from the worker's pool and writes it
//! back with io_uring send; the buffer comes back with every completed op and is reused.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use futures_util::TryFutureExt;
use futures_util::future::{Either, select, try_join};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use super::pool::BufferPool;
use crate::metrics::local::bump;
use crate::net::sys;

/// Which side of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
}

/// Why one direction stopped before EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fail {
    /// Reading from or writing to this side failed (reset, broken pipe).
    Peer(Side),
    /// A local resource failed (no pipe could be made).
    Local,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions reached EOF.
    Clean,
    /// Aborted; both sockets were set to reset on close.
    Failed(Fail),
    /// No byte either way for `idle_timeout`.
    Idle,
}

/// Byte counters and the activity clock one relay updates.
pub struct Tally<'a> {
    pub to_backend: &'a Cell<u64>,
    pub to_client: &'a Cell<u64>,
    /// Last time a byte moved; only kept when the route has an idle timeout.
    pub activity: Option<&'a Cell<Instant>>,
}

impl Tally<'_> {
    #[inline]
    pub fn moved(&self, counter: &Cell<u64>, n: usize) {
        #[cfg(feature = "perf-check-slowdown")]
        super::slowdown::burn();
        bump(counter, n as u64);
        if let Some(a) = self.activity {
            a.set(Instant::now());
        }
    }
}

/// Runs both directions; the first failure ends both, a clean EOF waits for the other one.
///
/// A combinator (`try_join`), not an `async fn`: an `async fn` would hold its arguments and a
/// pinned copy of them, doubling the size of every session's future.
pub fn both<A, B>(a: A, b: B) -> impl Future<Output = Result<(), Fail>>
where
    A: Future<Output = Result<(), Fail>>,
    B: Future<Output = Result<(), Fail>>,
{
    try_join(a, b).map_ok(|((), ())| ())
}

/// Races a relay against the idle watchdog (when the route has one). The relay is pinned by
/// the caller, so it is stored once.
pub async fn with_idle_timeout<F>(
    relay: Pin<&mut F>,
    idle: Option<Duration>,
    activity: &Cell<Instant>,
) -> RelayEnd
where
    F: Future<Output = Result<(), Fail>>,
{
    let end = match idle {
        None => relay.await,
        Some(idle) => match select(relay, pin!(watchdog(idle, activity))).await {
            Either::Left((end, _)) => end,
            Either::Right(((), _)) => return RelayEnd::Idle,
        },
    };
    match end {
        Ok(()) => RelayEnd::Clean,
        Err(f) => RelayEnd::Failed(f),
    }
}

async fn watchdog(idle: Duration, activity: &Cell<Instant>) {
    loop {
        let since = activity.get().elapsed();
        if since >= idle {
            return;
        }
        monoio::time::sleep(idle - since).await;
    }
}

/// Makes the next close of both sockets send a reset.
pub fn arm_reset(a: RawFd, b: RawFd) {
    // Errors are ignored: a socket that is already reset has nothing left to tell.
    let _ = sys::set_linger_zero(a);
    let _ = sys::set_linger_zero(b);
}

/// The buffered relay. Consumes both streams; they are closed when it returns.
pub async fn buffered(
    client: TcpStream,
    backend: TcpStream,
    buffers: &BufferPool,
    tally: &Tally<'_>,
    idle: Option<Duration>,
    activity: &Cell<Instant>,
) -> RelayEnd {
    let (cfd, bfd) = (client.as_raw_fd(), backend.as_raw_fd());
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = backend.into_split();
    let end = {
        let relay = pin!(both(
            copy(
                &mut cr,
                &mut bw,
                bfd,
                buffers,
                Side::Client,
                Side::Backend,
                tally.to_backend,
                tally
            ),
            copy(
                &mut br,
                &mut cw,
                cfd,
                buffers,
                Side::Backend,
                Side::Client,
                tally.to_client,
                tally
            ),
        ));
        with_idle_timeout(relay, idle, activity).await
    };
    if matches!(end, RelayEnd::Failed(_)) {
        arm_reset(cfd, bfd);
    }
    // Reuniting drops the halves without the write half's FIN-on-drop; the streams close
    // here (or when a cancelled op completes), sending a reset when armed above.
    drop(cr.reunite(cw));
    drop(br.reunite(bw));
    end
}

/// One direction: read from `from`, write all to `to`, until EOF or failure.
#[allow(clippy::too_many_arguments)]
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    to_fd: RawFd,
    buffers: &BufferPool,
    from_side: Side,
    to_side: Side,
    counter: &Cell<u64>,
    tally: &Tally<'_>,
) -> Result<(), Fail>
where
    R: AsyncReadRent,
    W: AsyncWriteRentExt,
{
    let mut buf = buffers.take();
    loop {
        buf.clear();
        let (res, b) = from.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) => {
                // EOF: pass it on and let the other direction go on.
                let _ = sys::shutdown(to_fd, libc::SHUT_WR);
                buffers.put(buf);
                return Ok(());
            }
            Ok(n) => n,
            Err(_) => return Err(Fail::Peer(from_side)),
        };
        tally.moved(counter, n);
        let (res, b) = to.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return Err(Fail::Peer(to_side));
        }
    }
}
