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
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::HealthConfig;
use crate::side_thread::SideThread;

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
    thread: SideThread<Command>,
}

impl Health {
    /// Starts the health thread; its events go to `events`.
    pub fn spawn(events: Sender<Event>) -> std::io::Result<Health> {
        let thread = SideThread::spawn("ringway-health", move |rx| tasks::run(rx, events))?;
        Ok(Health { thread })
    }

    pub fn send(&self, cmd: Command) {
        self.thread.send(cmd);
    }
}
