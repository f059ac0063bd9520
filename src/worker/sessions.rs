//! Hot side: a worker's registry of open sessions, so that the worker can close them all at
//! the end of a shutdown grace period, and those of one route on backends no longer active at
//! a drain deadline.
//!
//! Entries hold the raw fds of live sockets. A session removes its entry before its sockets
//! are dropped, so an fd in the registry always belongs to that session.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::task::Waker;

use slab::Slab;

use crate::metrics::local::Outcome;
use crate::net::sys;

#[derive(Debug)]
struct Entry {
    client: RawFd,
    /// The route's id (see `RouteSpec::id`).
    route: u64,
    backend: Cell<Option<(RawFd, SocketAddr)>>,
    /// From the session's start to the backend connection, µs (access log).
    connect_us: Cell<Option<u64>>,
    /// Set when ringway closes the session: `Shutdown` or `Drained`.
    closed_by: Cell<Option<Outcome>>,
    /// The session's task, once it relays: an upgrade wakes it to take it.
    waker: RefCell<Option<Waker>>,
}

/// What a session's entry says when it is removed. Kept here rather than in the session's
/// future, whose size is most of an idle connection's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed {
    /// `Some` when ringway closed it (shutdown or drain).
    pub by: Option<Outcome>,
    /// The backend it was connected to.
    pub backend: Option<SocketAddr>,
    /// From the session's start to the backend connection, µs.
    pub connect_us: Option<u64>,
}

impl Entry {
    fn force(&self, why: Outcome) {
        self.closed_by.set(Some(why));
        let _ = sys::shutdown(self.client, libc::SHUT_RDWR);
        if let Some((b, _)) = self.backend.get() {
            let _ = sys::shutdown(b, libc::SHUT_RDWR);
        }
    }
}

/// Open sessions of one worker.
#[derive(Debug, Default)]
pub struct Sessions {
    slab: RefCell<Slab<Entry>>,
}

impl Sessions {
    /// Registers a session of route `route` (its id) by its client socket; returns its key.
    pub fn open(&self, client: RawFd, route: u64) -> usize {
        self.slab.borrow_mut().insert(Entry {
            client,
            route,
            backend: Cell::new(None),
            connect_us: Cell::new(None),
            closed_by: Cell::new(None),
            waker: RefCell::new(None),
        })
    }

    /// Records the session's backend socket and address once connected, `connect_us` after
    /// its start.
    pub fn set_backend(&self, key: usize, backend: RawFd, addr: SocketAddr, connect_us: u64) {
        if let Some(e) = self.slab.borrow().get(key) {
            e.backend.set(Some((backend, addr)));
            e.connect_us.set(Some(connect_us));
        }
    }

    /// Records the task of a session that relays (woken by [`Sessions::wake_all`]).
    pub fn set_waker(&self, key: usize, waker: Waker) {
        if let Some(e) = self.slab.borrow().get(key) {
            *e.waker.borrow_mut() = Some(waker);
        }
    }

    /// Wakes every relaying session (an upgrade paused or released their routes).
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .slab
            .borrow()
            .iter()
            .filter_map(|(_, e)| e.waker.borrow().clone())
            .collect();
        // Woken outside the borrow: a task may run (and touch the registry) at once.
        for w in wakers {
            w.wake();
        }
    }

    /// Removes a session: whether ringway closed it (shutdown or drain), and its backend.
    pub fn close(&self, key: usize) -> Closed {
        match self.slab.borrow_mut().try_remove(key) {
            Some(e) => Closed {
                by: e.closed_by.get(),
                backend: e.backend.get().map(|(_, a)| a),
                connect_us: e.connect_us.get(),
            },
            None => Closed::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.slab.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees the table's memory once no session is left (after a peak of thousands of
    /// sessions it would otherwise stay at its high-water mark; called about once a second).
    pub fn shrink_when_empty(&self) {
        let mut slab = self.slab.borrow_mut();
        if slab.is_empty() && slab.capacity() > 0 {
            *slab = Slab::new();
        }
    }

    /// Shuts down both sockets of every session: pending reads see EOF and pending writes
    /// fail, so every relay ends promptly. Returns how many sessions were told to close.
    pub fn close_all(&self) -> usize {
        let slab = self.slab.borrow();
        for (_, e) in slab.iter() {
            e.force(Outcome::Shutdown);
        }
        slab.len()
    }

    /// A drain deadline of route `route` (its id): closes its sessions connected to a
    /// backend for which `stale` is true (still connecting: not yet; they drain with the
    /// next deadline or end by themselves). Returns how many were closed.
    pub fn close_drained(&self, route: u64, stale: impl Fn(SocketAddr) -> bool) -> usize {
        let slab = self.slab.borrow();
        let mut n = 0;
        for (_, e) in slab.iter() {
            let stale = matches!(e.backend.get(), Some((_, addr)) if stale(addr));
            if stale && e.route == route && e.closed_by.get().is_none() {
                e.force(Outcome::Drained);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn drain_closes_only_stale_sessions_of_its_route() {
        let pair = || std::os::unix::net::UnixStream::pair().unwrap();
        let (web, api) = (1, 2);
        let old: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let new: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let s = Sessions::default();
        let (a, a2) = pair();
        let (b, b2) = pair();
        let (c, c2) = pair();
        let on_old = s.open(a.as_raw_fd(), web);
        s.set_backend(on_old, a2.as_raw_fd(), old, 1);
        let on_new = s.open(b.as_raw_fd(), web);
        s.set_backend(on_new, b2.as_raw_fd(), new, 1);
        let other_route = s.open(c.as_raw_fd(), api);
        s.set_backend(other_route, c2.as_raw_fd(), old, 1);
        assert_eq!(s.close_drained(web, |_| false), 0);
        assert_eq!(s.close_drained(web, |a| a == old), 1);
        assert_eq!(s.close(on_old).by, Some(Outcome::Drained));
        assert_eq!(s.close(on_old), Closed::default(), "removed once");
        assert_eq!(s.close(on_new).backend, Some(new));
        assert_eq!(s.close(other_route).by, None);
        assert!(s.is_empty());
        s.shrink_when_empty();
        assert_eq!(s.slab.borrow().capacity(), 0);
        let again = s.open(a.as_raw_fd(), web);
        assert_eq!(s.close(again), Closed::default());
    }
}
