//! Hot side: relaying one session's bytes both ways — how a relay starts and ends, joining
//! the two directions, the idle watchdog. One direction's work is in [`super::flow`].
//!
//! One relay serves every `runtime.splice` mode. Each direction waits for readiness through
//! the ring (a poll op: no buffer, no pipe, no kernel thread held while a connection is idle),
//! then moves what is queued with non-blocking system calls: `recv` into the worker's copy
//! buffer and `send` straight on (two calls per message, nothing held afterwards), or, for
//! bulk, `splice` socket → pipe → socket. In `auto` mode a direction copies until one read
//! fills the copy buffer, then splices for the rest of the session.
//!
//! TCP semantics are kept end to end:
//! - EOF one way shuts down writing the other way (`SHUT_WR`), and the other direction goes
//!   on (half-close); when the other direction already ended, the close that follows sends
//!   the FIN and the `shutdown` call is saved;
//! - a reset or a failed write on either side ends both directions at once, and both sockets
//!   are closed with `SO_LINGER {1, 0}`, so the other side sees a reset, never a clean close;
//! - a clean close on both sides never produces a reset.
//!
//! A reset stays a reset: every system call on a session's sockets is made by this relay,
//! synchronously, and the first failure ends both directions before the other one runs again
//! (`try_join`). So a failed `send` that consumed a socket's pending reset can never be
//! followed by a read of 0 from that socket taken for a FIN. (With reads and writes in flight
//! in the ring at the same time, as the old buffered path had, exactly that happened: the
//! backend saw a FIN before the reset in ~7 % of a race's runs.)

use std::cell::Cell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use futures_util::TryFutureExt;
use futures_util::future::{Either, select, try_join};
use monoio::net::TcpStream;

use super::flow::{self, Ctx, Way};
use super::pool::Pools;
use crate::config::SpliceMode;
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
    /// The route's counters (read by metrics snapshots while the session runs).
    pub to_backend: &'a Cell<u64>,
    pub to_client: &'a Cell<u64>,
    /// This session's own counts, `[to_backend, to_client]` (for the access log).
    pub session: &'a [Cell<u64>; 2],
    /// Last time a byte moved; only kept when the route has an idle timeout.
    pub activity: Option<&'a Cell<Instant>>,
}

impl Tally<'_> {
    /// `n` bytes read from side `from` (and sent, or held, for the other side).
    #[inline]
    pub fn moved(&self, from: Side, n: usize) {
        #[cfg(feature = "perf-check-slowdown")]
        super::slowdown::burn();
        let (route, session) = match from {
            Side::Client => (self.to_backend, &self.session[0]),
            Side::Backend => (self.to_client, &self.session[1]),
        };
        bump(route, n as u64);
        bump(session, n as u64);
        self.active();
    }

    /// Bytes moved out (a backlog or pipe drained): the session is not idle.
    #[inline]
    pub fn active(&self) {
        if let Some(a) = self.activity {
            a.set(Instant::now());
        }
    }
}

/// What the two directions of one session share.
#[derive(Debug, Default)]
pub struct Shared {
    /// One direction reached EOF.
    one_done: Cell<bool>,
    /// Both sockets are in non-blocking mode (splice needs it; copying does not).
    nonblocking: Cell<bool>,
    /// Directions holding bytes read but not yet delivered (a backlog or a pipe).
    held: Cell<u8>,
}

impl Shared {
    /// Records that a direction reached EOF; true when the other one had already.
    pub fn end_one(&self) -> bool {
        self.one_done.replace(true)
    }

    /// A direction started (true) or stopped (false) holding undelivered bytes.
    pub fn holding(&self, on: bool) {
        let n = self.held.get();
        self.held.set(if on { n + 1 } else { n.saturating_sub(1) });
    }

    /// Puts both sockets in non-blocking mode once (two `ioctl`s, only for a session that
    /// splices). False when the kernel refused: the caller keeps copying.
    pub fn make_nonblocking(&self, a: &TcpStream, b: &TcpStream) -> bool {
        if !self.nonblocking.get() {
            let ok = sys::set_nonblocking(a.as_raw_fd(), true).is_ok()
                && sys::set_nonblocking(b.as_raw_fd(), true).is_ok();
            self.nonblocking.set(ok);
        }
        self.nonblocking.get()
    }
}

/// Relays until both directions end, one fails, or the idle timeout passes. Consumes both
/// streams; they are closed when it returns (with a reset when it failed).
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` keeps
/// its arguments twice in its future (rust-lang/rust#62958), and this future lives as long as
/// the session, idle or not.
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn relay<'a>(
    client: TcpStream,
    backend: TcpStream,
    pools: &'a Pools,
    mode: SpliceMode,
    tally: &'a Tally<'a>,
    idle: Option<Duration>,
    activity: &'a Cell<Instant>,
) -> impl Future<Output = RelayEnd> + 'a {
    async move {
        let shared = Shared::default();
        // Forced splice: both sockets go non-blocking up front (where that fails, copy instead).
        let splice_now = mode == SpliceMode::Always && shared.make_nonblocking(&client, &backend);
        let ctx = Ctx {
            pools,
            tally,
            shared: &shared,
            may_splice: mode != SpliceMode::Never,
            splice_now,
        };
        let end = {
            let relay = pin!(both(
                flow::direction(
                    &ctx,
                    Way {
                        from: &client,
                        to: &backend,
                        from_side: Side::Client,
                        to_side: Side::Backend,
                        try_first: true,
                    },
                ),
                flow::direction(
                    &ctx,
                    Way {
                        from: &backend,
                        to: &client,
                        from_side: Side::Backend,
                        to_side: Side::Client,
                        try_first: false,
                    },
                ),
            ));
            with_idle_timeout(relay, idle, activity).await
        };
        // A failure resets both sides; so does an idle timeout that drops bytes still held
        // (a FIN after a cut stream would tell the peer it got everything).
        if matches!(end, RelayEnd::Failed(_)) || end == RelayEnd::Idle && shared.held.get() > 0 {
            arm_reset(client.as_raw_fd(), backend.as_raw_fd());
        }
        end
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
        // Boxed: a timer future is ~700 bytes, which every session would otherwise carry
        // whether or not its route has an idle timeout.
        Some(idle) => match select(relay, Box::pin(watchdog(idle, activity))).await {
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
pub fn arm_reset(a: std::os::fd::RawFd, b: std::os::fd::RawFd) {
    // Errors are ignored: a socket that is already reset has nothing left to tell.
    let _ = sys::set_linger_zero(a);
    let _ = sys::set_linger_zero(b);
}
