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
//! - a clean close on both sides never produces a reset;
//! - once one direction ended, the other may stay silent for at most `half_close_timeout`
//!   (HAProxy's `timeout client-fin`/`server-fin`): then both sockets are closed, with a
//!   reset only if bytes were still held.
//!
//! A reset stays a reset: every system call on a session's sockets is made by this relay,
//! synchronously, and the first failure ends both directions before the other one runs again
//! (`both`). So a failed `send` that consumed a socket's pending reset can never be
//! followed by a read of 0 from that socket taken for a FIN. (With reads and writes in flight
//! in the ring at the same time, as the old buffered path had, exactly that happened: the
//! backend saw a FIN before the reset in ~7 % of a race's runs.)

use std::cell::Cell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
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
    /// The kernel gave this side up: keepalive probes went unanswered, or sent bytes stayed
    /// unacknowledged (or its window shut) past the user timeout (`ETIMEDOUT`; or
    /// `EHOSTUNREACH`/`ENETUNREACH` where an ICMP error came in meanwhile).
    Lost(Side),
}

impl Fail {
    /// The failure a system call's error on `side` means.
    #[inline]
    pub fn of(side: Side, e: &std::io::Error) -> Fail {
        match e.raw_os_error() {
            Some(libc::ETIMEDOUT | libc::EHOSTUNREACH | libc::ENETUNREACH) => Fail::Lost(side),
            _ => Fail::Peer(side),
        }
    }
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
    /// One direction had ended (a FIN) and the other moved no byte for
    /// `half_close_timeout`.
    HalfClose,
    /// An upgrade is moving the route's sessions (`Tally::pause`), and this one reached a
    /// quiet point: both directions open, nothing read and not yet delivered either way,
    /// no read under way. Both sockets are intact, to be handed over.
    Paused,
}

/// The relay's timers (each off when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub half_close: Option<Duration>,
}

/// Byte counters and the activity clock one relay updates, and its timers.
pub struct Tally<'a> {
    /// The relay's timers (the route's).
    pub timeouts: &'a Timeouts,
    /// The route's counters (read by metrics snapshots while the session runs).
    pub to_backend: &'a Cell<u64>,
    pub to_client: &'a Cell<u64>,
    /// This session's own counts, `[to_backend, to_client]` (for the access log).
    pub session: &'a [Cell<u64>; 2],
    /// Last time a byte moved; `None` while no timer needs it (it is kept with an idle
    /// timeout from the start, with a half-close timeout once one direction ended).
    pub activity: &'a Cell<Option<Instant>>,
    /// Set while an upgrade moves the route's sessions: directions stop reading once they
    /// hold nothing, and the relay ends `Paused` at the first quiet point.
    pub pause: &'a Cell<bool>,
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
        if self.activity.get().is_some() {
            self.activity.set(Some(Instant::now()));
        }
    }

    /// Starts keeping the activity clock, from now.
    fn keep_activity(&self) {
        self.activity.set(Some(Instant::now()));
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
    /// Nothing in flight and both directions open: the sockets can change hands.
    pub fn quiet(&self) -> bool {
        self.held.get() == 0 && !self.one_done.get()
    }

    /// One direction reached EOF (the session is half-closed).
    pub fn one_ended(&self) -> bool {
        self.one_done.get()
    }
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

/// Relays until both directions end, one fails, a timeout passes (idle, or half-close), or
/// an upgrade takes the session at a quiet point (`Paused`). The caller closes both streams
/// afterwards: they are set to reset on close when it failed, or when a timeout cut bytes
/// still held.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` keeps
/// its arguments twice in its future (rust-lang/rust#62958), and this future lives as long as
/// the session, idle or not.
#[allow(clippy::manual_async_fn)] // deliberate: see above
pub fn relay<'a>(
    client: &'a TcpStream,
    backend: &'a TcpStream,
    pools: &'a Pools,
    mode: SpliceMode,
    tally: &'a Tally<'a>,
) -> impl Future<Output = RelayEnd> + 'a {
    async move {
        let shared = Shared::default();
        // Forced splice: both sockets go non-blocking up front (where that fails, copy instead).
        let splice_now = mode == SpliceMode::Always && shared.make_nonblocking(client, backend);
        let ctx = Ctx {
            pools,
            tally,
            shared: &shared,
            may_splice: mode != SpliceMode::Never,
            splice_now,
        };
        let end = {
            let to_backend = pin!(flow::direction(
                &ctx,
                Way {
                    from: client,
                    to: backend,
                    from_side: Side::Client,
                    to_side: Side::Backend,
                    try_first: true,
                },
            ));
            let to_client = pin!(flow::direction(
                &ctx,
                Way {
                    from: backend,
                    to: client,
                    from_side: Side::Backend,
                    to_side: Side::Client,
                    try_first: false,
                },
            ));
            let relay = pin!(both(to_backend, to_client, tally, &shared));
            with_idle_timeout(relay, tally.timeouts.idle, tally.activity).await
        };
        // A failure resets both sides; so does a timeout that drops bytes still held (a FIN
        // after a cut stream would tell the peer it got everything).
        let cut = matches!(end, RelayEnd::Idle | RelayEnd::HalfClose) && shared.held.get() > 0;
        if matches!(end, RelayEnd::Failed(_)) || cut {
            arm_reset(client.as_raw_fd(), backend.as_raw_fd());
        }
        end
    }
}

/// Runs both directions; the first failure ends both, a clean EOF waits for the other one
/// — for at most `timeouts.half_close` of silence in it, when set.
///
/// A small hand-written future, not an `async fn`: the directions are pinned by the caller
/// (stored once, in the relay's future) and this holds two pointers to them, the tally, and
/// — only once one direction ended with a half-close timeout set — a boxed timer (most
/// sessions end both ways within a round trip; a timer inline would cost every session
/// ~700 bytes, and an `async fn` would keep its arguments twice).
pub fn both<'p, 't, A, B>(
    a: Pin<&'p mut A>,
    b: Pin<&'p mut B>,
    tally: &'p Tally<'t>,
    shared: &'p Shared,
) -> Both<'p, 't, A, B>
where
    A: Future<Output = Result<(), Fail>>,
    B: Future<Output = Result<(), Fail>>,
{
    Both {
        a: Some(a),
        b: Some(b),
        tally,
        shared,
        timer: None,
    }
}

/// See [`both`].
pub struct Both<'p, 't, A, B> {
    /// `None` once that direction reached EOF.
    a: Option<Pin<&'p mut A>>,
    b: Option<Pin<&'p mut B>>,
    tally: &'p Tally<'t>,
    shared: &'p Shared,
    /// The half-close watchdog, once one direction ended.
    timer: Option<Pin<Box<dyn Future<Output = ()> + 'p>>>,
}

impl<'p, 't, A, B> Future for Both<'p, 't, A, B>
where
    A: Future<Output = Result<(), Fail>>,
    B: Future<Output = Result<(), Fail>>,
{
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        // Every field is Unpin (pointers and an Option of them).
        let this = self.get_mut();
        if let Some(a) = this.a.as_mut() {
            match a.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => this.a = None,
                Poll::Ready(Err(f)) => return Poll::Ready(RelayEnd::Failed(f)),
                Poll::Pending => {}
            }
        }
        if let Some(b) = this.b.as_mut() {
            match b.as_mut().poll(cx) {
                Poll::Ready(Ok(())) => this.b = None,
                Poll::Ready(Err(f)) => return Poll::Ready(RelayEnd::Failed(f)),
                Poll::Pending => {}
            }
        }
        if this.a.is_none() && this.b.is_none() {
            return Poll::Ready(RelayEnd::Clean);
        }
        // Both directions wait (for readiness, or paused): nothing is under way, and with
        // nothing held the sockets can change hands.
        if this.tally.pause.get() && this.shared.quiet() {
            return Poll::Ready(RelayEnd::Paused);
        }
        if this.a.is_none() || this.b.is_none() {
            let tally: &'p Tally<'t> = this.tally;
            if this.timer.is_none()
                && let Some(limit) = tally.timeouts.half_close
            {
                tally.keep_activity();
                this.timer = Some(Box::pin(watchdog(limit, tally.activity)));
            }
            if let Some(timer) = this.timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(RelayEnd::HalfClose);
            }
        }
        Poll::Pending
    }
}

/// Races a relay against the idle watchdog (when the route has one). The relay is pinned by
/// the caller, so it is stored once.
pub async fn with_idle_timeout<F>(
    relay: Pin<&mut F>,
    idle: Option<Duration>,
    activity: &Cell<Option<Instant>>,
) -> RelayEnd
where
    F: Future<Output = RelayEnd>,
{
    match idle {
        None => relay.await,
        // Boxed: a timer future is ~700 bytes, which every session would otherwise carry
        // whether or not its route has an idle timeout.
        Some(idle) => match select(relay, Box::pin(watchdog(idle, activity))).await {
            Either::Left((end, _)) => end,
            Either::Right(((), _)) => RelayEnd::Idle,
        },
    }
}

/// Ends once `activity` is `idle` old (a clock not kept counts as just now).
async fn watchdog(idle: Duration, activity: &Cell<Option<Instant>>) {
    loop {
        let since = activity.get().map_or(Duration::ZERO, |t| t.elapsed());
        if since >= idle {
            return;
        }
        monoio::time::sleep(idle - since).await;
    }
}

/// Pending while the flag is set: a paused direction, or a session an upgrade could not
/// take, waits here (the worker wakes every session when it clears the flag).
pub struct Resume<'a>(pub &'a Cell<bool>);

impl Future for Resume<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.get() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// Makes the next close of both sockets send a reset.
pub fn arm_reset(a: std::os::fd::RawFd, b: std::os::fd::RawFd) {
    // Errors are ignored: a socket that is already reset has nothing left to tell.
    let _ = sys::set_linger_zero(a);
    let _ = sys::set_linger_zero(b);
}
