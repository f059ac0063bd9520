//! Hot side: a worker's pulse — a count of relay steps that moved bytes, which the optional
//! busy poller (`runtime.busy_poll`, `worker::busy`) watches to keep spinning while traffic
//! flows and to wake up when it starts again. Worker-local (`Cell`s): no atomics.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Pulse {
    count: Cell<u64>,
    /// The busy poller, asleep until the next beat.
    parked: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Pulse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulse")
            .field("count", &self.count.get())
            .finish()
    }
}

impl Pulse {
    /// A relay step moved bytes.
    #[inline]
    pub fn beat(&self) {
        self.count.set(self.count.get().wrapping_add(1));
        if let Some(w) = self.parked.take() {
            w.wake();
        }
    }

    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// Completes at the first beat after the count was `seen`.
    pub fn after(&self, seen: u64) -> impl Future<Output = ()> + '_ {
        After { pulse: self, seen }
    }
}

struct After<'a> {
    pulse: &'a Pulse,
    seen: u64,
}

impl Future for After<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pulse.count.get() != self.seen {
            return Poll::Ready(());
        }
        self.pulse.parked.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn after_waits_for_the_next_beat_and_is_woken_by_it() {
        let pulse = Pulse::default();
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let seen = pulse.count();
        let mut f = Box::pin(pulse.after(seen));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        pulse.beat();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert!(f.as_mut().poll(&mut cx).is_ready());
        // A beat with nobody parked wakes nobody; a count already moved is ready at once.
        pulse.beat();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert!(
            Box::pin(pulse.after(seen))
                .as_mut()
                .poll(&mut cx)
                .is_ready()
        );
    }
}
