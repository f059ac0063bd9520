//! Control side (types also read by workers): `[route.match]`, `proxy_protocol`,
//! `accept_proxy_from` and `peek_timeout`, validated; and the rule that routes sharing one
//! listen address must be told apart ([`check_shared`]).
//!
//! Precedence among the routes of one address that match a connection (README, "Several
//! routes on one port"): the most specific server name (exact before wildcard, a longer
//! wildcard suffix first), then the longest `path_prefix`, then the most specific `host`,
//! then the longest matching `source` network. A route without `[route.match]` is the
//! address's default: it takes what nothing else matched.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::admin::cidr;
use super::error::Problems;
use super::file::FileMatch;

/// How long a shared address waits for the bytes that decide a connection's route.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many bytes are read before the route is decided (a ClientHello with large
/// key shares fits; a longer one goes to the default route).
pub const PEEK_LIMIT: usize = 32 * 1024;

/// A server name or host to match: exact, or `*.` plus a suffix (exactly one label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamePattern {
    Exact(String),
    /// The suffix including its leading dot: `*.example.org` → `.example.org`.
    Wildcard(String),
}

impl NamePattern {
    /// Parses a lower-cased name; `None` when it is not a host name.
    pub fn parse(s: &str) -> Option<NamePattern> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(label_ok) {
            return None;
        }
        Some(if wild {
            NamePattern::Wildcard(format!(".{rest}"))
        } else {
            NamePattern::Exact(rest)
        })
    }

    /// True when `name` (lower-case) matches; a wildcard covers exactly one more label.
    #[inline]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// Higher is more specific: any exact name before any wildcard, longer suffixes first.
    pub fn rank(&self) -> u32 {
        match self {
            NamePattern::Exact(_) => 1000,
            NamePattern::Wildcard(s) => 1 + s.len() as u32,
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// `[route.match]`: every field given must match (a list matches when one entry does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchConfig {
    pub sni: Vec<NamePattern>,
    pub host: Vec<NamePattern>,
    pub path_prefix: Vec<String>,
    pub source: Vec<IpNet>,
}

impl MatchConfig {
    /// True when the route needs the TLS ClientHello.
    pub fn needs_tls(&self) -> bool {
        !self.sni.is_empty()
    }

    /// True when the route needs the HTTP request head.
    pub fn needs_http(&self) -> bool {
        !self.host.is_empty() || !self.path_prefix.is_empty()
    }

    /// The rank of the most specific entry matching `ip`, or `None` when the route's
    /// `source` excludes it (0 when the route has no `source`).
    #[inline]
    pub fn source_rank(&self, ip: IpAddr) -> Option<u32> {
        if self.source.is_empty() {
            return Some(0);
        }
        let ip = canonical(ip);
        self.source
            .iter()
            .filter(|n| n.contains(&ip))
            .map(|n| 1 + u32::from(n.prefix_len()))
            .max()
    }

    /// The keys under which this route competes with others on its address (see
    /// [`check_shared`]).
    fn keys(&self) -> Vec<String> {
        if !self.sni.is_empty() {
            return self.sni.iter().map(|s| format!("sni {s}")).collect();
        }
        let hosts: Vec<String> = if self.host.is_empty() {
            vec!["any host".into()]
        } else {
            self.host.iter().map(|h| format!("host {h}")).collect()
        };
        let paths: Vec<String> = if self.path_prefix.is_empty() {
            vec!["any path".into()]
        } else {
            self.path_prefix
                .iter()
                .map(|p| format!("path_prefix {p}"))
                .collect()
        };
        hosts
            .iter()
            .flat_map(|h| paths.iter().map(move |p| format!("{h}, {p}")))
            .collect()
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a dual-stack listener sees them).
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `proxy_protocol`: the PROXY protocol header sent to the route's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

/// The route keys of this module, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// `None`: no `[route.match]`, the default route of its addresses.
    pub matching: Option<MatchConfig>,
    pub proxy_protocol: Option<ProxyProtocol>,
    pub accept_proxy_from: Vec<IpNet>,
    pub peek_timeout: Duration,
}

impl Default for Sharing {
    fn default() -> Self {
        Sharing {
            matching: None,
            proxy_protocol: None,
            accept_proxy_from: Vec::new(),
            peek_timeout: DEFAULT_PEEK_TIMEOUT,
        }
    }
}

/// Validates the keys; problems are added to `p` under `label`.
pub(super) fn sharing(
    m: Option<&Spanned<FileMatch>>,
    proxy_protocol: Option<&Spanned<String>>,
    accept_proxy_from: Option<&Vec<Spanned<String>>>,
    peek_timeout: Option<&Spanned<String>>,
    label: &str,
    p: &mut Problems<'_>,
) -> Sharing {
    let proxy_protocol = proxy_protocol.and_then(|v| match v.get_ref().as_str() {
        "v1" => Some(ProxyProtocol::V1),
        "v2" => Some(ProxyProtocol::V2),
        other => {
            p.add(
                Some(v.span().start),
                format!("{label}proxy_protocol"),
                format!("\"{other}\" is not a PROXY protocol version"),
                "use \"v1\" (text) or \"v2\" (binary), or leave the key out to send none",
            );
            None
        }
    });
    // A set: sorted, each network once (routes sharing an address compare them).
    let mut accept_proxy_from: Vec<IpNet> = accept_proxy_from.map_or_else(Vec::new, |list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| cidr(s, &format!("{label}accept_proxy_from[{i}]"), p))
            .collect()
    });
    accept_proxy_from.sort();
    accept_proxy_from.dedup();
    let peek_key = format!("{label}peek_timeout");
    let peek_timeout = super::validate::duration(peek_timeout, &peek_key, DEFAULT_PEEK_TIMEOUT, p);
    if peek_timeout.is_zero() || peek_timeout > Duration::from_secs(300) {
        p.add(
            None,
            peek_key,
            "the peek timeout must be above zero and at most 5m",
            "use a duration such as \"5s\"",
        );
    }
    let matching = m.map(|m| matching(m, &format!("{label}match."), p));
    Sharing {
        matching,
        proxy_protocol,
        accept_proxy_from,
        peek_timeout,
    }
}

fn matching(m: &Spanned<FileMatch>, label: &str, p: &mut Problems<'_>) -> MatchConfig {
    let at = m.span().start;
    let m = m.get_ref();
    let names = |list: &Option<Vec<Spanned<String>>>, key: &str, p: &mut Problems<'_>| {
        let mut out = Vec::new();
        for (i, s) in list.iter().flatten().enumerate() {
            match NamePattern::parse(s.get_ref()) {
                Some(n) if out.contains(&n) => p.add(
                    Some(s.span().start),
                    format!("{label}{key}[{i}]"),
                    format!("\"{n}\" is listed twice"),
                    "list each name once",
                ),
                Some(n) => out.push(n),
                None => p.add(
                    Some(s.span().start),
                    format!("{label}{key}[{i}]"),
                    format!("\"{}\" is not a host name", s.get_ref()),
                    "write a name such as \"api.example.com\", or \"*.example.com\" for every name one label below it",
                ),
            }
        }
        out
    };
    let sni = names(&m.sni, "sni", p);
    let host = names(&m.host, "host", p);
    let mut path_prefix: Vec<String> = Vec::new();
    for (i, s) in m.path_prefix.iter().flatten().enumerate() {
        let v = s.get_ref();
        if !v.starts_with('/') || v.len() > 1024 || v.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                Some(s.span().start),
                format!("{label}path_prefix[{i}]"),
                format!("\"{v}\" is not a request path prefix"),
                "write a path starting with '/', such as \"/.well-known/acme-challenge/\" (no spaces)",
            );
        } else if path_prefix.contains(v) {
            p.add(
                Some(s.span().start),
                format!("{label}path_prefix[{i}]"),
                format!("\"{v}\" is listed twice"),
                "list each prefix once",
            );
        } else {
            path_prefix.push(v.clone());
        }
    }
    let source: Vec<IpNet> = m
        .source
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| cidr(s, &format!("{label}source[{i}]"), p))
        .collect();
    let out = MatchConfig {
        sni,
        host,
        path_prefix,
        source,
    };
    if out.needs_tls() && out.needs_http() {
        p.add(
            Some(at),
            format!("{label}sni"),
            "sni cannot be combined with host or path_prefix: a connection is either TLS (sni) or plain HTTP (host, path_prefix)",
            "split it into two routes, one matching sni and one matching host/path_prefix",
        );
    }
    let lists = [
        m.sni.as_ref(),
        m.host.as_ref(),
        m.path_prefix.as_ref(),
        m.source.as_ref(),
    ];
    if lists.iter().all(|l| l.is_none_or(Vec::is_empty)) {
        p.add(
            Some(at),
            label.trim_end_matches('.').to_string(),
            "[route.match] matches nothing: it is empty",
            "give it sni, host, path_prefix or source, or remove [route.match] to make the route its address's default",
        );
    }
    out
}

/// Why routes cannot share an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedError {
    #[error(
        "routes \"{a}\" and \"{b}\" both listen on {addr} and nothing tells them apart ({why})"
    )]
    Ambiguous {
        addr: std::net::SocketAddr,
        a: String,
        b: String,
        why: String,
    },
    #[error(
        "routes \"{a}\" and \"{b}\" both listen on {addr} but their accept_proxy_from lists differ (the PROXY header is read before the route is known)"
    )]
    ProxyTrust {
        addr: std::net::SocketAddr,
        a: String,
        b: String,
    },
}

impl SharedError {
    /// The two routes it is about.
    pub fn routes(&self) -> [&str; 2] {
        match self {
            SharedError::Ambiguous { a, b, .. } | SharedError::ProxyTrust { a, b, .. } => [a, b],
        }
    }

    /// How to fix it.
    pub fn fix(&self) -> &'static str {
        match self {
            SharedError::Ambiguous { .. } => {
                "give one of them [route.match] values (sni, host, path_prefix, source) the other does not have; at most one route per address may have no [route.match] (the default)"
            }
            SharedError::ProxyTrust { .. } => {
                "give every route on the address the same accept_proxy_from list"
            }
        }
    }
}

/// Checks that the routes listening on `addr` (name, keys) can share it: the same
/// `accept_proxy_from`, and no two that every connection could match alike (two defaults,
/// or the same name/host/path key with no `source`, or with a `source` network in both).
pub fn check_shared(
    addr: std::net::SocketAddr,
    routes: &[(&str, &Sharing)],
) -> Result<(), SharedError> {
    for (i, (a, sa)) in routes.iter().enumerate() {
        for (b, sb) in &routes[..i] {
            if sa.accept_proxy_from != sb.accept_proxy_from {
                return Err(SharedError::ProxyTrust {
                    addr,
                    a: (*b).to_string(),
                    b: (*a).to_string(),
                });
            }
            let why = match (&sa.matching, &sb.matching) {
                (None, None) => Some("neither has [route.match]".to_string()),
                (Some(ma), Some(mb)) => {
                    let kb = mb.keys();
                    let same = ma.keys().into_iter().find(|k| kb.contains(k));
                    let sources_overlap = match (ma.source.is_empty(), mb.source.is_empty()) {
                        (true, true) => true,
                        // Nested networks are told apart (the longest match wins); only
                        // the same network in both ties.
                        (false, false) => ma.source.iter().any(|x| mb.source.contains(x)),
                        _ => false,
                    };
                    same.filter(|_| sources_overlap).map(|k| {
                        if ma.source.is_empty() {
                            format!("both match {k}")
                        } else {
                            format!("both match {k} from the same source network")
                        }
                    })
                }
                _ => None,
            };
            if let Some(why) = why {
                return Err(SharedError::Ambiguous {
                    addr,
                    a: (*b).to_string(),
                    b: (*a).to_string(),
                    why,
                });
            }
        }
    }
    Ok(())
}

/// The keys as TOML lines (for `ringway check` and `config dump`).
pub(super) fn to_toml(s: &Sharing, out: &mut String) {
    use super::toml_string;
    let list = |v: Vec<String>| -> String {
        let items: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
        format!("[{}]", items.join(", "))
    };
    if let Some(v) = s.proxy_protocol {
        out.push_str(&format!("proxy_protocol = \"{}\"\n", v.as_str()));
    }
    if !s.accept_proxy_from.is_empty() {
        out.push_str(&format!(
            "accept_proxy_from = {}\n",
            list(
                s.accept_proxy_from
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            )
        ));
    }
    out.push_str(&format!(
        "peek_timeout = \"{}\"\n",
        super::format_duration(s.peek_timeout)
    ));
    let Some(m) = &s.matching else {
        return;
    };
    out.push_str("[route.match]\n");
    let names = |v: &[NamePattern]| list(v.iter().map(ToString::to_string).collect());
    if !m.sni.is_empty() {
        out.push_str(&format!("sni = {}\n", names(&m.sni)));
    }
    if !m.host.is_empty() {
        out.push_str(&format!("host = {}\n", names(&m.host)));
    }
    if !m.path_prefix.is_empty() {
        out.push_str(&format!("path_prefix = {}\n", list(m.path_prefix.clone())));
    }
    if !m.source.is_empty() {
        out.push_str(&format!(
            "source = {}\n",
            list(m.source.iter().map(ToString::to_string).collect())
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_case_insensitively_with_one_wildcard_label() {
        let exact = NamePattern::parse("API.Example.com.").unwrap();
        assert_eq!(exact, NamePattern::Exact("api.example.com".into()));
        assert!(exact.matches("api.example.com"));
        let wild = NamePattern::parse("*.example.org").unwrap();
        assert!(wild.matches("a.example.org"));
        assert!(!wild.matches("example.org"));
        assert!(!wild.matches("a.b.example.org"));
        assert!(!wild.matches("aexample.org"));
        assert!(exact.rank() > wild.rank());
        assert!(
            NamePattern::parse("*.a.example.org").unwrap().rank() > wild.rank(),
            "a longer suffix is more specific"
        );
        for bad in ["", "*.", "a..b", "a b", "*.*.x", "x/y", "é.com"] {
            assert_eq!(NamePattern::parse(bad), None, "{bad}");
        }
    }

    fn sharing(m: Option<MatchConfig>) -> Sharing {
        Sharing {
            matching: m,
            ..Sharing::default()
        }
    }

    fn sni(names: &[&str]) -> MatchConfig {
        MatchConfig {
            sni: names
                .iter()
                .map(|n| NamePattern::parse(n).unwrap())
                .collect(),
            ..MatchConfig::default()
        }
    }

    #[test]
    fn shared_addresses_need_routes_told_apart() {
        let addr = "127.0.0.1:443".parse().unwrap();
        let d = sharing(None);
        let a = sharing(Some(sni(&["a.test"])));
        let b = sharing(Some(sni(&["b.test", "*.test"])));
        assert_eq!(
            check_shared(addr, &[("a", &a), ("b", &b), ("d", &d)]),
            Ok(())
        );
        let e = check_shared(addr, &[("d", &d), ("d2", &d)]).unwrap_err();
        assert_eq!(e.routes(), ["d", "d2"]);
        let e = check_shared(addr, &[("a", &a), ("b", &b), ("a2", &a)]).unwrap_err();
        assert!(e.to_string().contains("sni a.test"), "{e}");
        assert_eq!(e.routes(), ["a", "a2"]);
        // The same name, told apart by source networks that do not overlap; or one with a
        // source and one without (the one with a source is more specific).
        let src = |n: &str| MatchConfig {
            source: vec![n.parse().unwrap()],
            ..sni(&["a.test"])
        };
        let s1 = sharing(Some(src("10.0.0.0/8")));
        let s2 = sharing(Some(src("192.168.0.0/16")));
        let s3 = sharing(Some(src("10.1.0.0/16")));
        assert_eq!(
            check_shared(addr, &[("a", &a), ("s1", &s1), ("s2", &s2)]),
            Ok(())
        );
        // Nested networks: the longer one wins for its addresses.
        assert_eq!(check_shared(addr, &[("s1", &s1), ("s3", &s3)]), Ok(()));
        assert!(check_shared(addr, &[("s1", &s1), ("s1b", &s1)]).is_err());
        // Host and path keys combine.
        let hp = |h: &[&str], p: &[&str]| {
            sharing(Some(MatchConfig {
                host: h.iter().map(|n| NamePattern::parse(n).unwrap()).collect(),
                path_prefix: p.iter().map(|s| s.to_string()).collect(),
                ..MatchConfig::default()
            }))
        };
        let site = hp(&["example.com"], &[]);
        let acme = hp(&[], &["/.well-known/acme-challenge/"]);
        let api = hp(&["example.com"], &["/api/"]);
        assert_eq!(
            check_shared(addr, &[("site", &site), ("acme", &acme), ("api", &api)]),
            Ok(())
        );
        assert!(
            check_shared(
                addr,
                &[("site", &site), ("x", &hp(&["example.com", "b"], &[]))]
            )
            .is_err()
        );
        let trusting = Sharing {
            accept_proxy_from: vec!["10.0.0.0/8".parse().unwrap()],
            ..sharing(Some(sni(&["c.test"])))
        };
        assert!(matches!(
            check_shared(addr, &[("a", &a), ("t", &trusting)]),
            Err(SharedError::ProxyTrust { .. })
        ));
    }

    #[test]
    fn source_rank_prefers_the_longest_network() {
        let m = MatchConfig {
            source: vec![
                "10.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            ..MatchConfig::default()
        };
        assert_eq!(m.source_rank("10.1.2.3".parse().unwrap()), Some(17));
        assert_eq!(m.source_rank("10.2.2.3".parse().unwrap()), Some(9));
        assert_eq!(m.source_rank("::ffff:10.2.2.3".parse().unwrap()), Some(9));
        assert_eq!(m.source_rank("11.0.0.1".parse().unwrap()), None);
        assert_eq!(
            MatchConfig::default().source_rank("11.0.0.1".parse().unwrap()),
            Some(0)
        );
    }
}
