//! Control side: a route's runtime state — its active backend set (which switches change),
//! the set before the last switch (where a rollback goes), health as the checks last saw it,
//! the switch history and the rollback watch.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::messages::RouteSpec;
use crate::config::RouteConfig;

/// Switch records kept per route for `/status`.
pub const HISTORY: usize = 10;

/// Why the active set changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `POST /routes/{name}/switch` (or `ringway switch`), after the health gate.
    Switch,
    /// Automatic: the new set failed its checks (or its connects) in the rollback window.
    Rollback,
    /// `POST /routes/{name}/rollback` (or `ringway rollback`).
    ManualRollback,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Switch => "switch",
            Reason::Rollback => "rollback",
            Reason::ManualRollback => "manual_rollback",
        }
    }
}

/// One committed change of a route's active set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub id: u64,
    pub route: String,
    pub from: Vec<SocketAddr>,
    pub to: Vec<SocketAddr>,
    /// RFC 3339, UTC.
    pub at: String,
    pub reason: Reason,
    /// What triggered a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The route generation that carries the change (acknowledged by every worker).
    pub generation: u64,
}

impl SwitchRecord {
    pub fn now(
        id: u64,
        route: &str,
        from: Vec<SocketAddr>,
        to: Vec<SocketAddr>,
        reason: Reason,
        detail: Option<String>,
    ) -> Self {
        SwitchRecord {
            id,
            route: route.to_string(),
            from,
            to,
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            reason,
            detail,
            generation: 0,
        }
    }
}

/// What the health checks last said of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    pub up: bool,
    pub reason: Option<String>,
    pub since: SystemTime,
}

/// After a switch: the new set is watched until `until`.
#[derive(Debug, Clone)]
pub struct Watch {
    pub switch_id: u64,
    pub until: Instant,
    /// The route's sessions that had failed to connect when the switch committed.
    pub failed_at_switch: u64,
}

/// One route at run time.
#[derive(Debug, Clone)]
pub struct RouteState {
    pub cfg: RouteConfig,
    pub active: Vec<SocketAddr>,
    /// The set before the last change: where a rollback goes.
    pub previous: Option<Vec<SocketAddr>>,
    /// The generation that last changed this route's active set.
    pub generation: u64,
    pub history: VecDeque<SwitchRecord>,
    pub health: HashMap<SocketAddr, BackendHealth>,
    pub watch: Option<Watch>,
    /// A switch or rollback is between its gate and the workers' acknowledgement.
    pub busy: bool,
    /// A rollback that came due while a switch was being checked (why).
    pub pending_rollback: Option<String>,
}

impl RouteState {
    /// A route as configured: its `backends` are the initial active set.
    pub fn new(cfg: RouteConfig) -> Self {
        RouteState {
            active: cfg.backends.clone(),
            cfg,
            previous: None,
            generation: 1,
            history: VecDeque::new(),
            health: HashMap::new(),
            watch: None,
            busy: false,
            pending_rollback: None,
        }
    }

    pub fn last(&self) -> Option<&SwitchRecord> {
        self.history.back()
    }

    pub fn remember(&mut self, record: SwitchRecord) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }

    /// Every backend the health checks cover: configured, active, and the rollback target.
    pub fn checked_backends(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        let prev = self.previous.iter().flatten();
        for a in self.active.iter().chain(&self.cfg.backends).chain(prev) {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        all
    }

    /// True unless the checks found it down (unchecked counts as up).
    pub fn is_up(&self, addr: &SocketAddr) -> bool {
        self.health.get(addr).is_none_or(|h| h.up)
    }

    /// The health word for `/status` and the CLI: "up", "down" or "unchecked".
    pub fn health_word(&self, addr: &SocketAddr) -> &'static str {
        match self.health.get(addr) {
            Some(h) if h.up => "up",
            Some(_) => "down",
            None if self.cfg.health.periodic => "checking",
            None => "unchecked",
        }
    }

    /// True when at least one active backend is not down.
    pub fn healthy(&self) -> bool {
        self.active.iter().any(|a| self.is_up(a))
    }

    /// What the workers get for this route.
    pub fn spec(&self) -> RouteSpec {
        RouteSpec {
            cfg: self.cfg.clone(),
            active: self.active.clone(),
            down: self
                .active
                .iter()
                .filter(|a| !self.is_up(a))
                .copied()
                .collect(),
        }
    }
}
