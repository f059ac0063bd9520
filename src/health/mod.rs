//! Control side: health checking, on a thread of its own (a tokio current-thread runtime),
//! never on a worker.
//!
//! The control thread tells it what to check ([`Command`]) and hears back over a crossbeam
//! channel ([`Event`]): backend health changes from the periodic checks, the verdict of a
//! switch's health gate, and a failed rollback watch. The health thread holds no state that
//! matters: the control thread decides what a result means.

mod probe;
mod tasks;

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::config::HealthConfig;

pub use probe::probe;

/// Control → health thread.
#[derive(Debug)]
pub enum Command {
    /// Check these backends of `route` every `cfg.interval` (replaces the route's set; an
    /// empty set stops its checks).
    Targets {
        route: String,
        cfg: HealthConfig,
        backends: Vec<SocketAddr>,
    },
    /// Run the switch gate for `targets`: each must pass `rise` checks in a row before `fall`
    /// failures; answered with [`Event::Gate`].
    Gate {
        id: u64,
        cfg: HealthConfig,
        targets: Vec<SocketAddr>,
    },
    /// After switch `switch_id`, check `targets` every `every` for `window`; after
    /// `threshold` failed rounds in a row answer [`Event::WatchFailed`]. Replaces the route's
    /// earlier watch.
    Watch {
        route: String,
        switch_id: u64,
        cfg: HealthConfig,
        every: Duration,
        window: Duration,
        threshold: u32,
        targets: Vec<SocketAddr>,
    },
    /// Stop watching `route` (a rollback or a later switch made the watch moot).
    Unwatch { route: String },
}

/// Health thread → control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A backend's health was first determined or changed.
    Changed {
        route: String,
        backend: SocketAddr,
        up: bool,
        /// Why the last check failed (when `up` is false).
        reason: Option<String>,
    },
    /// The verdict of gate `id`: `Err` names the failing backend and why.
    Gate { id: u64, result: Result<(), String> },
    /// A rollback watch saw `threshold` failed rounds in a row.
    WatchFailed {
        route: String,
        switch_id: u64,
        reason: String,
    },
}

/// The control thread's handle on the health thread. Dropping it stops the thread.
pub struct Health {
    tx: UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Health {
    /// Starts the health thread; its events go to `events`.
    pub fn spawn(events: Sender<Event>) -> std::io::Result<Health> {
        let (tx, rx) = unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("ringway-health".into())
            .spawn(move || runtime.block_on(tasks::run(rx, events)))?;
        Ok(Health {
            tx,
            thread: Some(thread),
        })
    }

    pub fn send(&self, cmd: Command) {
        // The thread ends only when this handle is dropped.
        let _ = self.tx.send(cmd);
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; its tasks are dropped with the runtime.
        let (tx, _) = unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
