//! Control side: how a route finds out that a peer vanished — `[route.keepalive]` (TCP
//! keepalive probes and `TCP_USER_TIMEOUT` on both sockets of a session) and
//! `half_close_timeout` (one side sent its FIN, the other stays open and silent).
//!
//! Without these a session whose peer disappears without a FIN or a reset (a black-holed
//! backend, a client whose network died) stays open for as long as ringway runs when the
//! route has no `idle_timeout`. The bound a session ends within is stated in README
//! ("Dead peers").

use std::time::Duration;

use toml::Spanned;

use super::error::Problems;
use super::file::FileKeepalive;
use super::format_duration;
use super::validate::duration;

/// Default `keepalive.idle`: silence before the first probe.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Default `keepalive.interval`: between probes.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default `keepalive.count`: probes unanswered before the peer is given up.
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 6;
/// Default `half_close_timeout`.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The kernel's bounds: `TCP_KEEPIDLE` and `TCP_KEEPINTVL` in whole seconds up to 32767,
/// `TCP_KEEPCNT` up to 127.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
const MAX_KEEPALIVE_COUNT: i64 = 127;

/// `[route.keepalive]`, validated. Set on both sockets of every session of the route: the
/// client's inherits it from its listener, the backend's gets it after the connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Keepalive probes (`SO_KEEPALIVE` with `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`);
    /// `None`: off (`idle = "0s"`).
    pub probes: Option<Probes>,
    /// `TCP_USER_TIMEOUT`: how long sent bytes may stay unacknowledged (or a peer's receive
    /// window stay closed while ringway has bytes for it) before the connection is given up;
    /// with probes on, also when an unanswered probe gives up (the kernel then uses it
    /// instead of `count`). `None`: off (`"0s"`). Default: idle + interval × count, or off
    /// when probes are off.
    pub user_timeout: Option<Duration>,
}

/// Keepalive probe timings (whole seconds, as the kernel takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probes {
    /// Silence on the connection before the first probe.
    pub idle: Duration,
    /// Between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is given up (when `user_timeout` is off).
    pub count: u32,
}

impl Probes {
    /// idle + interval × count: when a silent connection to a vanished peer is given up.
    pub fn give_up_after(&self) -> Duration {
        self.idle + self.interval * self.count
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        let probes = Probes {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            count: DEFAULT_KEEPALIVE_COUNT,
        };
        Keepalive {
            probes: Some(probes),
            user_timeout: Some(probes.give_up_after()),
        }
    }
}

impl Keepalive {
    /// Neither probes nor a user timeout.
    pub const OFF: Keepalive = Keepalive {
        probes: None,
        user_timeout: None,
    };

    /// The longest a session whose peer vanished stays open: while idle, until the probes
    /// give up (the user timeout, checked at each probe, or `count` probes); while bytes are
    /// unacknowledged, the user timeout. `None` when nothing bounds it.
    pub fn bound(&self) -> Option<Duration> {
        match (self.probes, self.user_timeout) {
            (None, None) => None,
            (None, Some(u)) => Some(u),
            (Some(p), None) => Some(p.give_up_after()),
            // The kernel gives up at the first probe at or past the user timeout (and after
            // at least one probe).
            (Some(p), Some(u)) => Some(u.max(p.idle) + p.interval),
        }
    }
}

/// Validates `[route.keepalive]`.
pub(super) fn keepalive(
    k: Option<&Spanned<FileKeepalive>>,
    label: &str,
    p: &mut Problems<'_>,
) -> Keepalive {
    let Some(k) = k else {
        return Keepalive::default();
    };
    let k = k.get_ref();
    let key = |name: &str| format!("{label}keepalive.{name}");
    let secs =
        |s: Option<&Spanned<String>>, name: &str, default: Duration, p: &mut Problems<'_>| {
            let d = duration(s, &key(name), default, p);
            if let Some(s) = s
                && (d.subsec_nanos() != 0 || d.as_secs() > MAX_KEEPALIVE_SECS)
            {
                p.add(
                Some(s.span().start),
                key(name),
                format!("\"{}\" is not a whole number of seconds up to 32767s", s.get_ref()),
                "the kernel takes keepalive timings in whole seconds: use e.g. \"60s\" or \"2m\"",
            );
                return default;
            }
            d
        };
    let idle = secs(k.idle.as_ref(), "idle", DEFAULT_KEEPALIVE_IDLE, p);
    let interval = secs(
        k.interval.as_ref(),
        "interval",
        DEFAULT_KEEPALIVE_INTERVAL,
        p,
    );
    if interval.is_zero()
        && let Some(s) = &k.interval
    {
        p.add(
            Some(s.span().start),
            key("interval"),
            "a zero interval between probes is not possible",
            "use a duration such as \"10s\" (to turn probes off, set idle = \"0s\")",
        );
    }
    let count = match &k.count {
        None => DEFAULT_KEEPALIVE_COUNT,
        Some(v) => match *v.get_ref() {
            n @ 1..=MAX_KEEPALIVE_COUNT => n as u32,
            n => {
                p.add(
                    Some(v.span().start),
                    key("count"),
                    format!("{n} is out of range"),
                    "use a count from 1 to 127 (to turn probes off, set idle = \"0s\")",
                );
                DEFAULT_KEEPALIVE_COUNT
            }
        },
    };
    let probes = (!idle.is_zero()).then_some(Probes {
        idle,
        interval: if interval.is_zero() {
            DEFAULT_KEEPALIVE_INTERVAL
        } else {
            interval
        },
        count,
    });
    let user_timeout = match &k.user_timeout {
        None => probes.map(|p| p.give_up_after()),
        Some(s) => {
            let d = duration(Some(s), &key("user_timeout"), Duration::ZERO, p);
            if d.as_millis() > u128::from(u32::MAX) {
                p.add(
                    Some(s.span().start),
                    key("user_timeout"),
                    format!("\"{}\" is too long", s.get_ref()),
                    "use at most \"1193h\" (the kernel counts milliseconds in 32 bits), or \"0s\" for off",
                );
            }
            (!d.is_zero()).then_some(d.max(Duration::from_millis(1)))
        }
    };
    Keepalive {
        probes,
        user_timeout,
    }
}

/// Validates `half_close_timeout`: default [`DEFAULT_HALF_CLOSE_TIMEOUT`], `"0s"` for off.
pub(super) fn half_close_timeout(
    s: Option<&Spanned<String>>,
    label: &str,
    p: &mut Problems<'_>,
) -> Option<Duration> {
    let d = duration(
        s,
        &format!("{label}half_close_timeout"),
        DEFAULT_HALF_CLOSE_TIMEOUT,
        p,
    );
    (!d.is_zero()).then_some(d)
}

/// `half_close_timeout` as a plain route key (before any sub-table).
pub(super) fn half_close_to_toml(d: Option<Duration>, out: &mut String) {
    match d {
        Some(d) => out.push_str(&format!(
            "half_close_timeout = \"{}\"\n",
            format_duration(d)
        )),
        None => out.push_str("half_close_timeout = \"0s\" # off\n"),
    }
}

/// `[route.keepalive]` as `ringway check` prints it.
pub(super) fn keepalive_to_toml(k: &Keepalive, out: &mut String) {
    out.push_str("[route.keepalive]\n");
    match k.probes {
        Some(p) => {
            out.push_str(&format!("idle = \"{}\"\n", format_duration(p.idle)));
            out.push_str(&format!("interval = \"{}\"\n", format_duration(p.interval)));
            out.push_str(&format!("count = {}\n", p.count));
        }
        None => out.push_str("idle = \"0s\" # no keepalive probes\n"),
    }
    match k.user_timeout {
        Some(d) => out.push_str(&format!("user_timeout = \"{}\"\n", format_duration(d))),
        None => out.push_str("user_timeout = \"0s\" # off\n"),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Keepalive, Probes};
    use std::time::Duration;

    fn route(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!(
                "[[route]]\nname = \"r\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\n{extra}"
            ),
            "t.toml",
        )
    }

    #[test]
    fn defaults_are_on_and_bounded() {
        let r = &route("").unwrap().routes[0];
        assert_eq!(r.keepalive, Keepalive::default());
        assert_eq!(r.keepalive.user_timeout, Some(Duration::from_secs(120)));
        assert_eq!(r.keepalive.bound(), Some(Duration::from_secs(130)));
        assert_eq!(r.half_close_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn timings_and_off_switches() {
        let r = &route(
            "half_close_timeout = \"0s\"\n[route.keepalive]\nidle = \"1s\"\ninterval = \"1s\"\ncount = 2\n",
        )
        .unwrap()
        .routes[0];
        let probes = Probes {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            count: 2,
        };
        assert_eq!(r.keepalive.probes, Some(probes));
        // Derived from the probes.
        assert_eq!(r.keepalive.user_timeout, Some(Duration::from_secs(3)));
        assert_eq!(r.half_close_timeout, None);
        let r = &route("[route.keepalive]\nidle = \"0s\"\n").unwrap().routes[0];
        assert_eq!(r.keepalive, Keepalive::OFF);
        assert_eq!(r.keepalive.bound(), None);
        let r = &route("[route.keepalive]\nidle = \"0s\"\nuser_timeout = \"20s\"\n")
            .unwrap()
            .routes[0];
        assert_eq!(r.keepalive.probes, None);
        assert_eq!(r.keepalive.user_timeout, Some(Duration::from_secs(20)));
    }

    #[test]
    fn bad_values_name_key_and_fix() {
        let e = route(
            "half_close_timeout = \"soon\"\n[route.keepalive]\nidle = \"1500ms\"\ninterval = \"0s\"\ncount = 0\nuser_timeout = \"2000h\"\nprobe = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `probe`"), "{e}");
        let e = route(
            "half_close_timeout = \"soon\"\n[route.keepalive]\nidle = \"1500ms\"\ninterval = \"0s\"\ncount = 0\nuser_timeout = \"2000h\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "(\"r\").half_close_timeout",
            "(\"r\").keepalive.idle",
            "(\"r\").keepalive.interval",
            "(\"r\").keepalive.count",
            "(\"r\").keepalive.user_timeout",
        ] {
            assert!(e.contains(key), "{key} missing from:\n{e}");
        }
    }
}
