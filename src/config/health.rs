//! Control side: `[route.health]` (active health checks) and `[route.switch]` (draining and
//! automatic rollback after a switch), validated.

use std::time::Duration;

use toml::Spanned;

use super::error::Problems;
use super::file::{FileHealth, FileSwitch};
use super::validate::duration;

pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_ROLLBACK_CHECK: Duration = Duration::from_secs(5);
pub const DEFAULT_ROLLBACK_FAIL_THRESHOLD: u32 = 3;
pub const DEFAULT_ROLLBACK_CONNECT_ERRORS: u32 = 5;
/// Longest a switch gate may take at worst (every probe timing out).
const MAX_GATE: Duration = Duration::from_secs(120);

/// How a backend is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connect that completes within the timeout.
    Tcp,
    /// `GET path` answered with a 2xx status within the timeout.
    Http { path: String },
}

/// `[route.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Periodic checks run only where `[route.health]` is present; the switch gate and the
    /// rollback checks always use these settings (the defaults: TCP connect).
    pub periodic: bool,
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that make a backend healthy.
    pub rise: u32,
    /// Consecutive failures that make it unhealthy.
    pub fall: u32,
}

impl HealthConfig {
    /// "tcp" or "http".
    pub fn check_name(&self) -> &'static str {
        match self.check {
            Check::Tcp => "tcp",
            Check::Http { .. } => "http",
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            periodic: false,
            check: Check::Tcp,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        }
    }
}

/// `[route.switch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// How long sessions on the old set may go on after a switch before they are closed.
    pub drain: Duration,
    /// How long after a switch the new set is watched for a rollback.
    pub rollback_window: Duration,
    /// How often the new set is checked during the window.
    pub rollback_check: Duration,
    /// Consecutive failed checks of the new set that switch back.
    pub rollback_fail_threshold: u32,
    /// Sessions that could not connect to the new set (every attempt failed: what clients
    /// saw), counted by the workers within the window, that switch back without waiting for
    /// a check; 0 turns this off.
    pub rollback_connect_errors: u32,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            drain: DEFAULT_DRAIN,
            rollback_window: DEFAULT_ROLLBACK_WINDOW,
            rollback_check: DEFAULT_ROLLBACK_CHECK,
            rollback_fail_threshold: DEFAULT_ROLLBACK_FAIL_THRESHOLD,
            rollback_connect_errors: DEFAULT_ROLLBACK_CONNECT_ERRORS,
        }
    }
}

pub(super) fn health(
    h: Option<&Spanned<FileHealth>>,
    label: &str,
    p: &mut Problems<'_>,
) -> HealthConfig {
    let Some(h) = h else {
        return HealthConfig::default();
    };
    let at = h.span().start;
    let h = h.get_ref();
    let key = |k: &str| format!("{label}health.{k}");
    let check = match h.check.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("tcp") => {
            if let Some(path) = &h.path {
                p.add(
                    Some(path.span().start),
                    key("path"),
                    "path is only used by HTTP checks",
                    "set check = \"http\", or remove path",
                );
            }
            Check::Tcp
        }
        Some("http") => {
            let path = h
                .path
                .as_ref()
                .map_or("/health", |s| s.get_ref().as_str())
                .to_string();
            let valid = path.starts_with('/')
                && path.len() <= 1024
                && path.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                p.add(
                    h.path.as_ref().map(|s| s.span().start),
                    key("path"),
                    format!("\"{path}\" is not a request path"),
                    "write a path starting with '/', without spaces, e.g. \"/health\"",
                );
            }
            Check::Http { path }
        }
        Some(other) => {
            p.add(
                h.check.as_ref().map(|c| c.span().start),
                key("check"),
                format!("unknown check \"{other}\""),
                "use \"tcp\" (connect) or \"http\" (GET path, expecting 2xx)",
            );
            Check::Tcp
        }
    };
    let interval = positive(
        h.interval.as_ref(),
        &key("interval"),
        DEFAULT_HEALTH_INTERVAL,
        p,
    );
    let timeout = positive(
        h.timeout.as_ref(),
        &key("timeout"),
        DEFAULT_HEALTH_TIMEOUT,
        p,
    );
    if timeout > interval {
        p.add(
            Some(at),
            key("timeout"),
            "the timeout is longer than the interval",
            "make timeout at most interval (e.g. interval = \"2s\", timeout = \"1s\")",
        );
    }
    let rise = count(h.rise.as_ref(), &key("rise"), DEFAULT_RISE, 1, p);
    let fall = count(h.fall.as_ref(), &key("fall"), DEFAULT_FALL, 1, p);
    // A switch gate probes up to rise + fall times: keep its worst case well inside the admin
    // API's answer time.
    if timeout * (rise + fall) > MAX_GATE {
        p.add(
            Some(at),
            key("timeout"),
            format!(
                "timeout × (rise + fall) is {}s: a switch gate could take that long",
                (timeout * (rise + fall)).as_secs()
            ),
            "keep timeout × (rise + fall) at most 120s (e.g. timeout = \"1s\", rise = 2, fall = 3)",
        );
    }
    HealthConfig {
        periodic: true,
        check,
        interval,
        timeout,
        rise,
        fall,
    }
}

pub(super) fn switch(s: Option<&FileSwitch>, label: &str, p: &mut Problems<'_>) -> SwitchConfig {
    let Some(s) = s else {
        return SwitchConfig::default();
    };
    let key = |k: &str| format!("{label}switch.{k}");
    SwitchConfig {
        drain: duration(s.drain.as_ref(), &key("drain"), DEFAULT_DRAIN, p),
        rollback_window: duration(
            s.rollback_window.as_ref(),
            &key("rollback_window"),
            DEFAULT_ROLLBACK_WINDOW,
            p,
        ),
        rollback_check: positive(
            s.rollback_check.as_ref(),
            &key("rollback_check"),
            DEFAULT_ROLLBACK_CHECK,
            p,
        ),
        rollback_fail_threshold: count(
            s.rollback_fail_threshold.as_ref(),
            &key("rollback_fail_threshold"),
            DEFAULT_ROLLBACK_FAIL_THRESHOLD,
            1,
            p,
        ),
        rollback_connect_errors: count(
            s.rollback_connect_errors.as_ref(),
            &key("rollback_connect_errors"),
            DEFAULT_ROLLBACK_CONNECT_ERRORS,
            0,
            p,
        ),
    }
}

fn positive(
    s: Option<&Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems<'_>,
) -> Duration {
    let d = duration(s, key, default, p);
    if d < Duration::from_millis(10) {
        p.add(
            s.map(|s| s.span().start),
            key,
            "shorter than 10ms",
            "use a duration of at least \"10ms\"",
        );
    }
    d
}

fn count(v: Option<&Spanned<i64>>, key: &str, default: u32, min: u32, p: &mut Problems<'_>) -> u32 {
    let Some(v) = v else { return default };
    match u32::try_from(*v.get_ref()) {
        Ok(n) if n >= min && n <= 1000 => n,
        _ => {
            p.add(
                Some(v.span().start),
                key,
                format!("{} is out of range", v.get_ref()),
                format!("use a count from {min} to 1000"),
            );
            default
        }
    }
}
