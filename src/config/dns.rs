//! Control side: backends named by DNS (`"name:port"` in `backends`) and the `[runtime]` keys
//! of their resolver (`dns_resolver`, `dns_min_ttl`, `dns_max_ttl`).
//!
//! A named backend stays a name in the configuration; the control thread resolves it
//! (`crate::dns`) and expands it into addresses before a generation goes to the workers, which
//! only ever see `SocketAddr`s. Backends written as IP literals never touch any of this.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::duration::format_duration;
use super::error::Problems;
use super::validate::duration;

/// `runtime.dns_min_ttl` by default: an answer is kept at least this long (and a failed
/// resolution is tried again after it).
pub const DEFAULT_DNS_MIN_TTL: Duration = Duration::from_secs(1);
/// `runtime.dns_max_ttl` by default: an answer is asked again after at most this long.
pub const DEFAULT_DNS_MAX_TTL: Duration = Duration::from_secs(300);
/// The port of a `runtime.dns_resolver` given without one.
const DNS_PORT: u16 = 53;

/// How backend names are resolved (`[runtime]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `dns_resolver`: the one name server to ask (UDP, then TCP for long answers); `None`:
    /// the name servers, search domains and options of `/etc/resolv.conf`. `/etc/hosts` is
    /// read first either way.
    pub resolver: Option<SocketAddr>,
    /// `dns_min_ttl`: the shortest time an answer is kept (a record's TTL below it is raised
    /// to it); also the retry interval after a failed resolution.
    pub min_ttl: Duration,
    /// `dns_max_ttl`: the longest time an answer is kept before it is asked again.
    pub max_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            resolver: None,
            min_ttl: DEFAULT_DNS_MIN_TTL,
            max_ttl: DEFAULT_DNS_MAX_TTL,
        }
    }
}

impl DnsConfig {
    /// A record's TTL, clamped to `[min_ttl, max_ttl]`.
    pub fn clamp(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl)
    }

    pub(super) fn to_toml(&self, out: &mut String) {
        match self.resolver {
            Some(a) => out.push_str(&format!("dns_resolver = \"{a}\"\n")),
            None => out.push_str("# dns_resolver: not set, /etc/resolv.conf\n"),
        }
        out.push_str(&format!(
            "dns_min_ttl = \"{}\"\ndns_max_ttl = \"{}\"\n",
            format_duration(self.min_ttl),
            format_duration(self.max_ttl)
        ));
    }
}

/// A backend given as `"name:port"`: every address the name resolves to, at `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedBackend {
    /// The host name as written (lower-cased; without a trailing dot).
    pub host: String,
    pub port: u16,
    /// The weight of each of its addresses ([`super::DEFAULT_WEIGHT`] unless configured).
    pub weight: u16,
}

impl std::fmt::Display for NamedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// `"name:port"` when `s` is one (a valid DNS name, a non-zero port); `None` for anything
/// else, IP literals included (those are addresses, not names).
pub fn parse_named(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    valid_host(&host).then_some((host, port))
}

/// RFC 1123 host names (letters, digits, '-', and '_' for service-style labels), at most 253
/// characters; a last label of digits only is an IP address gone wrong, not a name.
fn valid_host(h: &str) -> bool {
    if h.is_empty() || h.len() > 253 || h.parse::<IpAddr>().is_ok() {
        return false;
    }
    let labels: Vec<&str> = h.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// `runtime.dns_resolver`, `runtime.dns_min_ttl`, `runtime.dns_max_ttl`.
pub(super) fn dns(
    resolver: Option<&Spanned<String>>,
    min_ttl: Option<&Spanned<String>>,
    max_ttl: Option<&Spanned<String>>,
    p: &mut Problems<'_>,
) -> DnsConfig {
    let resolver = resolver.and_then(|s| {
        let text = s.get_ref().trim();
        let parsed = text
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(|ip| (ip, DNS_PORT).into()));
        match parsed {
            Some(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
            _ => {
                p.add(
                    Some(s.span().start),
                    "runtime.dns_resolver",
                    format!("\"{text}\" is not a name server address"),
                    "write the name server's IP address, with a port where it is not 53 \
                     (e.g. \"10.0.0.2\" or \"127.0.0.1:5353\"), or leave the key out to use /etc/resolv.conf",
                );
                None
            }
        }
    });
    let min = duration(min_ttl, "runtime.dns_min_ttl", DEFAULT_DNS_MIN_TTL, p);
    let max = duration(max_ttl, "runtime.dns_max_ttl", DEFAULT_DNS_MAX_TTL, p);
    if min.is_zero() {
        p.add(
            min_ttl.map(|s| s.span().start),
            "runtime.dns_min_ttl",
            "a zero minimum would ask the name server again in a loop",
            "use a duration such as \"1s\" (default)",
        );
    }
    if min > max {
        p.add(
            max_ttl.or(min_ttl).map(|s| s.span().start),
            "runtime.dns_max_ttl",
            format!(
                "dns_max_ttl ({}) is shorter than dns_min_ttl ({})",
                format_duration(max),
                format_duration(min)
            ),
            "make dns_max_ttl at least dns_min_ttl (defaults \"5m\" and \"1s\")",
        );
    }
    DnsConfig {
        resolver,
        min_ttl: min,
        max_ttl: max,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    /// Names are told from addresses; a bad name, a zero port and an IP typo are not names.
    #[test]
    fn names_parse() {
        assert_eq!(
            parse_named("db.internal:5432"),
            Some(("db.internal".into(), 5432))
        );
        assert_eq!(
            parse_named("Web-1.Example.COM.:80"),
            Some(("web-1.example.com".into(), 80))
        );
        assert_eq!(
            parse_named("localhost:8080"),
            Some(("localhost".into(), 8080))
        );
        for bad in [
            "127.0.0.1:80",
            "db:0",
            "db",
            "1.2.3:80",
            "a..b:80",
            "-a:80",
            "a b:80",
            ":80",
        ] {
            assert_eq!(parse_named(bad), None, "{bad}");
        }
    }

    /// The runtime keys: defaults, a resolver with and without a port, the bounds checked.
    #[test]
    fn runtime_keys() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.runtime.dns, DnsConfig::default());
        let c = Config::parse(
            "[runtime]\ndns_resolver = \"10.0.0.2\"\ndns_min_ttl = \"5s\"\ndns_max_ttl = \"1m\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.runtime.dns.resolver, Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            c.runtime.dns.clamp(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.runtime.dns.clamp(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        let again = Config::parse(&c.to_toml(), "t.toml").unwrap();
        assert_eq!(again.runtime.dns, c.runtime.dns);
        for (text, key) in [
            ("dns_resolver = \"ns.example\"", "runtime.dns_resolver"),
            ("dns_min_ttl = \"0s\"", "runtime.dns_min_ttl"),
            ("dns_min_ttl = \"10m\"", "runtime.dns_max_ttl"),
        ] {
            let e = Config::parse(&format!("[runtime]\n{text}\n"), "t.toml").unwrap_err();
            assert_eq!(e.problems[0].key, key, "{e}");
        }
    }

    /// Named backends are kept as names, with their weights, and written back as they read.
    #[test]
    fn named_backends_parse_and_round_trip() {
        let c = Config::parse(
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\n\
             backends = [\"127.0.0.1:8080\", \"app.internal:8080\", { addr = \"b.internal:81\", weight = 3 }]\n",
            "t.toml",
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.backends, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(
            r.names,
            vec![
                NamedBackend {
                    host: "app.internal".into(),
                    port: 8080,
                    weight: 1
                },
                NamedBackend {
                    host: "b.internal".into(),
                    port: 81,
                    weight: 3
                },
            ]
        );
        assert_eq!(Config::parse(&c.to_toml(), "t.toml").unwrap(), c);
        // Only names: still a route with backends.
        let c = Config::parse(
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"app.internal:80\"]\n",
            "t.toml",
        )
        .unwrap();
        assert!(c.routes[0].backends.is_empty());
        let e = Config::parse(
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"app:80\", \"APP:80\"]\n",
            "t.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }
}
