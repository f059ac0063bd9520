//! Hot side: optional busy polling (`runtime.busy_poll`), as HAProxy's `busy-polling`.
//!
//! A worker normally sleeps in `io_uring_enter` when it has nothing to run, and a packet then
//! costs a wake-up of the thread (on a VM, the exit from an idle vCPU as well). With busy
//! polling, a task keeps the worker awake for `busy_poll` after the last step that moved bytes:
//! it yields over and over, and each time the runtime finds its run queue non-empty it submits
//! and reaps the ring without waiting, so a completion that arrives meanwhile is seen at once.
//! When nothing moved for that long, the task parks on the worker's [`Pulse`] and the worker
//! sleeps as usual until traffic starts again.
//!
//! The ring must run task work on any kernel entry for this to see completions: with
//! `IORING_SETUP_DEFER_TASKRUN` completions are only posted by a waiting `io_uring_enter`, so a
//! busy-polling worker sets its ring up with `COOP_TASKRUN` instead (`ring::build`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Worker;
use crate::proxy::pulse::Pulse;

/// Spins for `budget` after every burst of relay activity until the worker stops.
pub(super) async fn spin(worker: Rc<Worker>, budget: Duration) {
    let pulse: &Pulse = &worker.pools.pulse;
    let mut seen = pulse.count();
    while !worker.stopping.get() {
        pulse.after(seen).await;
        seen = pulse.count();
        let mut until = Instant::now() + budget;
        while Instant::now() < until && !worker.stopping.get() {
            YieldNow(false).await;
            let now = pulse.count();
            if now != seen {
                seen = now;
                until = Instant::now() + budget;
            }
        }
    }
}

/// Pending once, woken at once: the task goes to the back of the run queue, and the runtime
/// submits and reaps the ring (without waiting) before it runs it again.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
