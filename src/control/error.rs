//! Control side: why the control thread refused or could not finish a request.
//!
//! The control thread knows nothing of HTTP: it answers with these, and the admin server
//! alone maps each to a status code (`admin::status_of`). Each has a stable machine-readable
//! [`ControlError::code`]; the `Display` text is the message an operator reads, saying what
//! to do next.

use std::net::SocketAddr;

use super::ports::PortError;
use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named {0}")]
    NoRoute(String),
    #[error(
        "route {0} already exists: replace it with `ringway route add --replace` (PUT without If-None-Match: *)"
    )]
    Exists(String),
    #[error("route {route} has no backend {addr}")]
    NoBackend { route: String, addr: SocketAddr },
    #[error("route {route} has no backend name {name}")]
    NoName { route: String, name: String },
    #[error(
        "{name} is the last backend of route {route}: attach another first, or remove the route"
    )]
    LastName { route: String, name: String },
    #[error(
        "{addr} of route {route} comes from a backend name: detach the name (`ringway backend remove {route} NAME:PORT`), or drain the address (`ringway backend drain {route} {addr}`)"
    )]
    FromName { route: String, addr: SocketAddr },
    #[error("route {0} is already being switched; retry when that has finished")]
    Busy(String),
    #[error(
        "route {route} is defined in {file}: change it there and run `ringway reload` (switch, rollback and backend drain stay allowed through the API)"
    )]
    FileOwned { route: String, file: String },
    /// A `PUT /routes/{name}` body that does not validate.
    #[error("{0}")]
    InvalidRoute(ConfigError),
    /// A configuration file (reload) that does not validate.
    #[error("{0}")]
    InvalidConfig(ConfigError),
    #[error("{0}")]
    Port(#[from] PortError),
    #[error("the health gate failed, nothing was changed: {0}")]
    GateFailed(String),
    #[error("route {0} has not been switched: there is no previous set")]
    NothingToRollBack(String),
    #[error(
        "{addr} is the last active backend of route {route}: attach another first, or remove the route"
    )]
    LastBackend { route: String, addr: SocketAddr },
    #[error(
        "draining {addr} would leave route {route} no backend for new sessions: attach another or undrain one first"
    )]
    WouldDrainAll { route: String, addr: SocketAddr },
    #[error("no backend to switch to")]
    EmptySet,
    #[error(
        "ringway runs on the embedded default configuration: there is no file to reload (start it with -c FILE)"
    )]
    NoConfigFile,
    #[error("ringway is shutting down; nothing was changed")]
    ShuttingDown,
    #[error(
        "an upgrade is under way; nothing was changed (retry against the new process once `ringway upgrade` returns)"
    )]
    Upgrading,
    #[error("the upgrade failed; this process serves on unchanged: {0}")]
    UpgradeFailed(String),
    #[error(
        "a change is still being applied (or a switch waits for its health gate); upgrade once it has finished"
    )]
    ChangePending,
    #[error(
        "the change was published as generation {generation} and saved, but not every worker acknowledged it within {seconds}s (see the log)"
    )]
    NotAcknowledged { generation: u64, seconds: u64 },
}

impl ControlError {
    /// The stable code in `{"error": code}`.
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::NoRoute(_)
            | ControlError::NoBackend { .. }
            | ControlError::NoName { .. } => "not_found",
            ControlError::Exists(_) => "exists",
            ControlError::Busy(_) => "switch_in_progress",
            ControlError::FileOwned { .. } => "file_owned",
            ControlError::InvalidRoute(_) => "invalid_route",
            ControlError::InvalidConfig(_) => "invalid_config",
            ControlError::Port(e) => e.code(),
            ControlError::GateFailed(_) => "health_gate_failed",
            ControlError::NothingToRollBack(_) => "nothing_to_roll_back",
            ControlError::LastBackend { .. }
            | ControlError::LastName { .. }
            | ControlError::WouldDrainAll { .. } => "last_backend",
            ControlError::EmptySet => "empty_set",
            ControlError::FromName { .. } => "from_name",
            ControlError::NoConfigFile => "no_config_file",
            ControlError::ShuttingDown => "shutting_down",
            ControlError::Upgrading => "upgrade_in_progress",
            ControlError::UpgradeFailed(_) => "upgrade_failed",
            ControlError::ChangePending => "change_in_progress",
            ControlError::NotAcknowledged { .. } => "not_acknowledged",
        }
    }

    /// The configuration problems behind an invalid route or file, if that is the cause.
    pub fn problems(&self) -> Option<&ConfigError> {
        match self {
            ControlError::InvalidRoute(e) | ControlError::InvalidConfig(e) => Some(e),
            _ => None,
        }
    }
}
