//! Hot side: a worker's registry of open sessions, so that the worker can close them all at
//! the end of a shutdown grace period (and, later, per backend at a drain deadline).
//!
//! Entries hold the raw fds of live sockets. A session removes its entry before its sockets
//! are dropped, so an fd in the registry always belongs to that session.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;

use slab::Slab;

use crate::net::sys;

#[derive(Debug)]
struct Entry {
    client: RawFd,
    backend: Cell<Option<RawFd>>,
    forced: Cell<bool>,
}

/// Open sessions of one worker.
#[derive(Debug, Default)]
pub struct Sessions {
    slab: RefCell<Slab<Entry>>,
}

impl Sessions {
    /// Registers a session by its client socket; returns its key.
    pub fn open(&self, client: RawFd) -> usize {
        self.slab.borrow_mut().insert(Entry {
            client,
            backend: Cell::new(None),
            forced: Cell::new(false),
        })
    }

    /// Records the session's backend socket once connected.
    pub fn set_backend(&self, key: usize, backend: RawFd) {
        if let Some(e) = self.slab.borrow().get(key) {
            e.backend.set(Some(backend));
        }
    }

    /// Removes a session; true when ringway closed it (shutdown deadline).
    pub fn close(&self, key: usize) -> bool {
        self.slab
            .borrow_mut()
            .try_remove(key)
            .is_some_and(|e| e.forced.get())
    }

    pub fn len(&self) -> usize {
        self.slab.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuts down both sockets of every session: pending reads see EOF and pending writes
    /// fail, so every relay ends promptly. Returns how many sessions were told to close.
    pub fn close_all(&self) -> usize {
        let slab = self.slab.borrow();
        for (_, e) in slab.iter() {
            e.forced.set(true);
            let _ = sys::shutdown(e.client, libc::SHUT_RDWR);
            if let Some(b) = e.backend.get() {
                let _ = sys::shutdown(b, libc::SHUT_RDWR);
            }
        }
        slab.len()
    }
}
