//! Control side: backend protection as configured — `[route.eject]` (passive ejection of a
//! backend whose connects keep failing) and a backend's own `max_connections` (the long form
//! `{ addr = "…", max_connections = N }`). The workers apply both (`proxy::eject`, README
//! "Backend protection").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use toml::Spanned;

use super::error::Problems;
use super::file::{FileBackend, FileEject};
use super::format_duration;
use super::validate::duration;

/// Default `eject.after`: consecutive failed connects that eject a backend.
pub const DEFAULT_EJECT_AFTER: u32 = 5;
/// Default `eject.time`: the first ejection's length (each repeated one doubles it).
pub const DEFAULT_EJECT_TIME: Duration = Duration::from_secs(10);
/// Default `eject.max_time`: the cap on an ejection's length.
pub const DEFAULT_EJECT_MAX_TIME: Duration = Duration::from_secs(300);
/// Default `eject.max_percent`: the share of a route's backends that may be out at once.
pub const DEFAULT_EJECT_MAX_PERCENT: u8 = 50;
/// The longest `eject.time` / `eject.max_time` accepted.
const MAX_EJECT_TIME: Duration = Duration::from_secs(24 * 3600);

/// `[route.eject]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eject {
    /// Consecutive failed connects (on one worker) that eject a backend; `None`: ejection
    /// is off (`after = 0`).
    pub after: Option<NonZeroU32>,
    /// How long the first ejection lasts; a backend ejected again within `max_time` of its
    /// return stays out twice as long as the previous time.
    pub time: Duration,
    /// The longest an ejection lasts (≥ `time`).
    pub max_time: Duration,
    /// At most this share (1..=100 %) of the route's pickable backends is out at once on a
    /// worker; one may always be (with two or more), never all of them.
    pub max_percent: u8,
}

impl Default for Eject {
    fn default() -> Self {
        Eject {
            after: NonZeroU32::new(DEFAULT_EJECT_AFTER),
            time: DEFAULT_EJECT_TIME,
            max_time: DEFAULT_EJECT_MAX_TIME,
            max_percent: DEFAULT_EJECT_MAX_PERCENT,
        }
    }
}

impl Eject {
    /// How many of `n` pickable backends may be ejected at once: `n × max_percent / 100`
    /// rounded down, at least 1, at most `n - 1` (0 with a single backend: it has nowhere
    /// else to send its sessions).
    pub fn allowed(&self, n: usize) -> usize {
        (n * usize::from(self.max_percent) / 100)
            .max(1)
            .min(n.saturating_sub(1))
    }
}

/// Validates `[route.eject]`.
pub(super) fn eject(e: Option<&Spanned<FileEject>>, label: &str, p: &mut Problems<'_>) -> Eject {
    let Some(e) = e else {
        return Eject::default();
    };
    let at = e.span().start;
    let e = e.get_ref();
    let key = |name: &str| format!("{label}eject.{name}");
    let mut out = Eject::default();
    if let Some(v) = &e.after {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n <= 1_000_000 => out.after = NonZeroU32::new(n),
            _ => p.add(
                Some(v.span().start),
                key("after"),
                format!("{} is out of range", v.get_ref()),
                "use a count of consecutive failed connects from 1 to 1000000 (default 5), or 0 to turn ejection off",
            ),
        }
    }
    let mut time = |s: Option<&Spanned<String>>, name: &str, default: Duration| {
        let d = duration(s, &key(name), default, p);
        match s {
            Some(s) if d.is_zero() || d > MAX_EJECT_TIME => {
                p.add(
                    Some(s.span().start),
                    key(name),
                    format!("\"{}\" is out of range", s.get_ref()),
                    "use a duration from \"1ms\" to \"24h\", e.g. \"10s\" (to turn ejection off, set after = 0)",
                );
                default
            }
            _ => d,
        }
    };
    out.time = time(e.time.as_ref(), "time", DEFAULT_EJECT_TIME);
    out.max_time = time(e.max_time.as_ref(), "max_time", DEFAULT_EJECT_MAX_TIME);
    if out.max_time < out.time {
        if e.max_time.is_some() {
            p.add(
                e.max_time
                    .as_ref()
                    .map_or(Some(at), |s| Some(s.span().start)),
                key("max_time"),
                format!(
                    "max_time {} is shorter than time {}",
                    format_duration(out.max_time),
                    format_duration(out.time)
                ),
                "make max_time at least as long as time (the first ejection's length)",
            );
        } else {
            // Only `time` was set, above the default cap: the cap follows it.
            out.max_time = out.time;
        }
    }
    if let Some(v) = &e.max_percent {
        match u8::try_from(*v.get_ref()) {
            Ok(n @ 1..=100) => out.max_percent = n,
            _ => p.add(
                Some(v.span().start),
                key("max_percent"),
                format!("{} is out of range", v.get_ref()),
                "use a percentage from 1 to 100 (one backend may always be ejected, never all); to turn ejection off, set after = 0",
            ),
        }
    }
    out
}

/// A backend's own `max_connections` (`None`: none set, or a problem already reported).
pub(super) fn backend_limit(
    b: &Spanned<FileBackend>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<NonZeroU32> {
    let n = b.get_ref().max_connections?;
    let limit = u32::try_from(n).ok().and_then(NonZeroU32::new);
    if limit.is_none() {
        p.add(
            Some(b.span().start),
            format!("{key}.max_connections"),
            format!("{n} is not a valid limit"),
            "use a count from 1 to 4294967295, or leave the key out for no limit on this backend",
        );
    }
    limit
}

/// `[route.eject]` as `ringway check` prints it.
pub(super) fn eject_to_toml(e: &Eject, out: &mut String) {
    out.push_str("[route.eject]\n");
    match e.after {
        Some(n) => out.push_str(&format!("after = {n}\n")),
        None => out.push_str("after = 0 # passive ejection off\n"),
    }
    out.push_str(&format!("time = \"{}\"\n", format_duration(e.time)));
    out.push_str(&format!("max_time = \"{}\"\n", format_duration(e.max_time)));
    out.push_str(&format!("max_percent = {}\n", e.max_percent));
}

/// The per-backend limits of `backends` that are set, by address.
pub(super) fn limits_of(
    backends: &[(usize, SocketAddr)],
    file: &[Spanned<FileBackend>],
    label: &str,
    p: &mut Problems<'_>,
) -> BTreeMap<SocketAddr, NonZeroU32> {
    let mut out = BTreeMap::new();
    for (i, a) in backends {
        let key = format!("{label}backends[{i}]");
        if let Some(n) = file.get(*i).and_then(|b| backend_limit(b, &key, p)) {
            out.insert(*a, n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route(extra: &str, backends: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!(
                "[[route]]\nname = \"r\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = {backends}\n{extra}"
            ),
            "t.toml",
        )
    }

    const TWO: &str = "[\"127.0.0.1:8080\", \"127.0.0.1:8081\"]";

    #[test]
    fn defaults_and_settings() {
        let r = &route("", TWO).unwrap().routes[0];
        assert_eq!(r.eject, Eject::default());
        assert_eq!(r.eject.after.map(|n| n.get()), Some(5));
        assert!(r.backend_limits.is_empty());
        let r = &route(
            "[route.eject]\nafter = 3\ntime = \"500ms\"\nmax_time = \"2s\"\nmax_percent = 100\n",
            "[{ addr = \"127.0.0.1:8080\", max_connections = 7, weight = 2 }, \"127.0.0.1:8081\"]",
        )
        .unwrap()
        .routes[0];
        assert_eq!(
            r.eject,
            Eject {
                after: NonZeroU32::new(3),
                time: Duration::from_millis(500),
                max_time: Duration::from_secs(2),
                max_percent: 100,
            }
        );
        let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(r.backend_limits.get(&a).map(|n| n.get()), Some(7));
        assert_eq!(r.weight(&a), 2);
        // Off; and a base above the default cap raises the cap.
        let r = &route("[route.eject]\nafter = 0\ntime = \"10m\"\n", TWO)
            .unwrap()
            .routes[0];
        assert_eq!(r.eject.after, None);
        assert_eq!(r.eject.max_time, Duration::from_secs(600));
    }

    /// `ringway check` / `config dump` print the keys, and what they print reads back the
    /// same, as TOML and as the JSON body of `PUT /routes/{name}`.
    #[test]
    fn round_trips_through_toml_and_json() {
        let r = &route(
            "[route.eject]\nafter = 0\ntime = \"750ms\"\n",
            "[{ addr = \"127.0.0.1:8080\", max_connections = 7 }, { addr = \"127.0.0.1:8081\", weight = 2, max_connections = 1 }, \"127.0.0.1:8082\"]",
        )
        .unwrap()
        .routes[0];
        let text = r.to_toml();
        assert!(text.contains("after = 0 # passive ejection off"), "{text}");
        assert!(
            text.contains("{ addr = \"127.0.0.1:8081\", weight = 2, max_connections = 1 }"),
            "{text}"
        );
        assert_eq!(&crate::config::parse_route_toml(&text, "t").unwrap(), r);
        let json = crate::config::route_to_json(r);
        assert_eq!(&crate::config::parse_route_json("r", &json).unwrap(), r);
    }

    #[test]
    fn how_many_may_be_out() {
        let e = Eject::default();
        assert_eq!(
            [1, 2, 3, 4, 10].map(|n| e.allowed(n)),
            [0, 1, 1, 2, 5],
            "50 %: at least one, never all"
        );
        let all = Eject {
            max_percent: 100,
            ..e
        };
        assert_eq!([1, 2, 5].map(|n| all.allowed(n)), [0, 1, 4]);
        let few = Eject {
            max_percent: 10,
            ..e
        };
        assert_eq!([2, 10, 30].map(|n| few.allowed(n)), [1, 1, 3]);
    }

    #[test]
    fn bad_values_name_key_and_fix() {
        let e = route(
            "[route.eject]\nafter = -1\ntime = \"0s\"\nmax_time = \"soon\"\nmax_percent = 0\n",
            "[{ addr = \"127.0.0.1:8080\", max_connections = 0 }]",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "(\"r\").eject.after",
            "(\"r\").eject.time",
            "(\"r\").eject.max_time",
            "(\"r\").eject.max_percent",
            "(\"r\").backends[0].max_connections",
        ] {
            assert!(e.contains(key), "{key} missing from:\n{e}");
        }
        let e = route("[route.eject]\ntime = \"1m\"\nmax_time = \"30s\"\n", TWO)
            .unwrap_err()
            .to_string();
        assert!(e.contains("eject.max_time") && e.contains("shorter"), "{e}");
        let e = route("[route.eject]\nafterwards = 1\n", TWO)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `afterwards`"), "{e}");
        let e = route("", "[{ addr = \"127.0.0.1:8080\", max_conns = 1 }]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conns"), "{e}");
    }
}
