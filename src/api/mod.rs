//! Both sides (control and CLI): the admin API's wire types, in one module.
//!
//! The control thread builds these documents, the admin server serialises them, and the CLI
//! deserialises the very same types: a renamed field fails to compile instead of printing
//! "-" (linkerd2-proxy and sozu keep their command protocol in one typed module the same
//! way). Nothing here does I/O or holds state.

mod change;
mod status;

pub use change::{
    ChangeAction, ChangeDoc, ErrorDoc, ProblemDoc, ReloadDoc, SwitchDoc, UpgradeBody, UpgradeDoc,
};
pub use status::{
    ActiveHealth, BackendDoc, BackendRole, ConnectErrorsDoc, HealthDoc, HealthWord, ListenerDoc,
    NameDoc, Quantiles, ReloadStatusDoc, RouteDoc, RouteHealthDoc, RouteList, RouteView, RuleDoc,
    RuntimeDoc, StatusDoc, WatchDoc, WorkerDoc,
};

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Who owns a route: the configuration file, or the runtime API.
///
/// File routes change only through the file (`ringway reload`); API routes only through the
/// API, live in the state file and survive restarts and reloads. Switch, rollback and a
/// backend's drain flag are allowed on both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    File,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Api => "api",
        }
    }
}

/// Why a route's active set changed.
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

/// One committed change of a route's active set (kept in the state file and in `/status`).
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
            at: now_rfc3339(),
            reason,
            detail,
            generation: 0,
        }
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `POST /routes/{name}/backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    pub addr: String,
    /// Run the route's health gate on the new backend first (default true).
    #[serde(default = "yes")]
    pub check: bool,
    /// The backend's weight in the route (1..=256; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
}

/// `PATCH /routes/{name}/backends/{addr}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPatch {
    /// true: no new sessions (open ones stay); false: back in rotation.
    pub drain: bool,
}

/// `POST /routes/{name}/switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    pub to: Vec<String>,
}

fn yes() -> bool {
    true
}
