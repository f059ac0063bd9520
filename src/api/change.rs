//! Both sides: the answers to changes — switch, route and backend changes, reload — and the
//! error document every refusal carries.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::SwitchRecord;
use crate::config::ConfigError;

/// `POST /routes/{name}/switch` and `/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchDoc {
    /// False when the asked-for set was already active (nothing was published).
    pub switched: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<Vec<SocketAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<SwitchRecord>,
}

/// What a route or backend change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    Created,
    Replaced,
    Removed,
    Attached,
    Detached,
    Drained,
    Undrained,
    /// The request asked for what already is: nothing was published.
    Unchanged,
}

impl ChangeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeAction::Created => "created",
            ChangeAction::Replaced => "replaced",
            ChangeAction::Removed => "removed",
            ChangeAction::Attached => "attached",
            ChangeAction::Detached => "detached",
            ChangeAction::Drained => "drained",
            ChangeAction::Undrained => "undrained",
            ChangeAction::Unchanged => "unchanged",
        }
    }
}

/// `PUT`/`DELETE /routes/{name}`, `POST`/`DELETE`/`PATCH` on its backends. Sent once every
/// worker has applied the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDoc {
    pub action: ChangeAction,
    pub route: String,
    /// The generation that carries the change (the current one when unchanged).
    pub generation: u64,
    /// The route's listen addresses after the change (bound: a port picked from
    /// `admin.listen_range` shows here); empty once removed.
    pub listen: Vec<SocketAddr>,
    /// The route's active set after the change; empty once removed.
    pub active: Vec<SocketAddr>,
    /// Addresses this change started listening on, and stopped listening on.
    pub bound: Vec<SocketAddr>,
    pub released: Vec<SocketAddr>,
    pub message: String,
}

/// `POST /upgrade` (and `ringway upgrade`): the new process serves; what moved to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeDoc {
    /// The process that answered (it exits once its last session ends).
    pub old_pid: u32,
    /// The process serving from now on.
    pub pid: u32,
    pub binary: String,
    /// Listen addresses whose sockets the new process took over.
    pub listeners: Vec<SocketAddr>,
    /// Sessions handed over, and those left to finish here (half-closed, busy past the
    /// bound, or of a route the new configuration does not have).
    pub sessions_moved: u64,
    pub sessions_left: u64,
    /// From the request to the last session handed over, ms.
    pub took_ms: u64,
}

/// The body of `POST /upgrade` (every key optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    /// The new binary (default: the path this process was started from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// How long it gets to report ready (`"30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `false`: hand over the listeners only; open sessions finish in the old process
    /// (under `runtime.shutdown_grace`). Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<bool>,
}

/// `POST /reload` (and `ringway reload`): what a reload did, route by route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadDoc {
    pub file: String,
    /// The generation it published; `None` when nothing changed.
    pub generation: Option<u64>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// File routes the file left as they were (their sessions never noticed).
    pub unchanged: Vec<String>,
    /// Routes the API had created that the file now defines: the file owns them from now on.
    pub adopted: Vec<String>,
    /// Routes owned by the API, which a reload never touches.
    pub api_routes: Vec<String>,
    pub bound: Vec<SocketAddr>,
    pub released: Vec<SocketAddr>,
    /// Keys that changed in the file but take effect only at the next start.
    pub restart_required: Vec<String>,
}

impl ReloadDoc {
    /// True when the reload changed no route.
    pub fn is_noop(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.adopted.is_empty()
    }
}

/// Every refusal: `{"error": code, "message": text}`, plus the configuration problems when
/// a route body or the configuration file was invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ProblemDoc>,
}

/// One problem of an invalid route body or configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl ProblemDoc {
    /// Every problem of a configuration error.
    pub fn all(e: &ConfigError) -> Vec<ProblemDoc> {
        e.problems
            .iter()
            .map(|p| ProblemDoc {
                line: p.line,
                key: p.key.clone(),
                message: p.message.clone(),
                fix: p.fix.clone(),
            })
            .collect()
    }
}
