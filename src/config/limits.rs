//! Control side: the client limits — a route's `max_connections_per_source` and
//! `first_byte_timeout`, and the process-wide `runtime.max_connections` — validated and
//! printed.
//!
//! They defend a route against floods and slow clients (L4 slowloris): one source address
//! (an IPv6 /64) cannot take more than its share of sessions, a client that connects and
//! says nothing is closed without ever reaching a backend, and the whole process stops at a
//! cap that its open-files limit can hold. Each is enforced per worker as an equal share
//! (README, "Client limits", says what that means with `SO_REUSEPORT`).

use std::num::NonZeroU32;
use std::time::Duration;

use toml::Spanned;

use super::error::Problems;
use super::format_duration;
use super::validate::duration;

/// The longest `first_byte_timeout`: beyond it, the key defends nothing.
pub const MAX_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A count from 1 to `u32::MAX` at `key`; a problem otherwise.
pub(super) fn count(
    v: Option<&Spanned<i64>>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<NonZeroU32> {
    let v = v?;
    let n = *v.get_ref();
    let ok = u32::try_from(n).ok().and_then(NonZeroU32::new);
    if ok.is_none() {
        p.add(
            Some(v.span().start),
            key.to_string(),
            format!("{n} is not a valid limit"),
            "use a count from 1 to 4294967295, or leave the key out for no limit",
        );
    }
    ok
}

/// `first_byte_timeout`: off unless set; `"0s"` is off too; at most
/// [`MAX_FIRST_BYTE_TIMEOUT`].
pub(super) fn first_byte_timeout(
    s: Option<&Spanned<String>>,
    label: &str,
    p: &mut Problems<'_>,
) -> Option<Duration> {
    let s = s?;
    let key = format!("{label}first_byte_timeout");
    let d = duration(Some(s), &key, Duration::ZERO, p);
    if d > MAX_FIRST_BYTE_TIMEOUT {
        p.add(
            Some(s.span().start),
            key,
            format!("{} is longer than 1h", format_duration(d)),
            "use a few seconds (e.g. \"5s\": a client that sends nothing within it is reset), or \"0s\" for off",
        );
        return None;
    }
    (!d.is_zero()).then_some(d)
}

/// The route's limits as plain route keys (`ringway check`, `config dump`).
pub(super) fn to_toml(
    per_source: Option<NonZeroU32>,
    first_byte: Option<Duration>,
    out: &mut String,
) {
    match per_source {
        Some(n) => out.push_str(&format!("max_connections_per_source = {n}\n")),
        None => out.push_str("# max_connections_per_source: not set, no limit\n"),
    }
    match first_byte {
        Some(d) => out.push_str(&format!(
            "first_byte_timeout = \"{}\"\n",
            format_duration(d)
        )),
        None => out.push_str(
            "# first_byte_timeout: not set, the backend is connected at accept and a silent client waits\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    fn parse(runtime: &str, route: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!(
                "[runtime]\n{runtime}\n[[route]]\nname = \"r\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\n{route}"
            ),
            "t.toml",
        )
    }

    #[test]
    fn off_by_default_and_round_trips() {
        let c = parse("", "").unwrap();
        let r = &c.routes[0];
        assert_eq!(
            (r.max_connections_per_source, r.first_byte_timeout),
            (None, None)
        );
        assert_eq!(c.runtime.max_connections, None);
        let c = parse(
            "max_connections = 5000",
            "max_connections_per_source = 20\nfirst_byte_timeout = \"3s\"\n",
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.max_connections_per_source.map(|n| n.get()), Some(20));
        assert_eq!(r.first_byte_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.runtime.max_connections.map(|n| n.get()), Some(5000));
        // What `ringway check` prints parses to the same configuration.
        let again = Config::parse(&c.to_toml(), "again.toml").unwrap();
        assert_eq!(again, c);
        let off = parse("", "first_byte_timeout = \"0s\"\n").unwrap();
        assert_eq!(off.routes[0].first_byte_timeout, None);
    }

    #[test]
    fn bad_values_name_key_and_fix() {
        let e = parse(
            "max_connections = 0",
            "max_connections_per_source = -3\nfirst_byte_timeout = \"2h\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "runtime.max_connections",
            "(\"r\").max_connections_per_source",
            "(\"r\").first_byte_timeout",
            "from 1 to 4294967295",
            "longer than 1h",
        ] {
            assert!(e.contains(key), "{key} missing from:\n{e}");
        }
        let e = parse("", "first_byte_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(\"r\").first_byte_timeout"), "{e}");
    }
}
