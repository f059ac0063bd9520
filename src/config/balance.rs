//! Control side: a route's `balance` strategy and its backends' weights, as configured.
//!
//! The active set stays a list of addresses everywhere (switches, the state file, the admin
//! API); a weight is a property of an address within a route, kept beside it in
//! [`super::RouteConfig::weights`]. An address without an entry (one a switch or an attach
//! brought in) weighs [`DEFAULT_WEIGHT`]. The workers read both from the route's
//! configuration when they build their table (`proxy::balance`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use toml::Spanned;

use super::error::Problems;
use super::file::FileBackend;
use super::toml_string;

/// The weight of a backend that names none.
pub const DEFAULT_WEIGHT: u16 = 1;
/// The largest weight (a backend with it gets 256 times the sessions of one weighing 1).
pub const MAX_WEIGHT: u16 = 256;

/// `balance`: how a worker spreads a route's new sessions over its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn, each backend as often as its weight (smooth: 1:3 gives B A B B, not A B B B).
    #[default]
    RoundRobin,
    /// The backend with the fewest open sessions (on this worker) per unit of weight.
    LeastConnections,
    /// Two backends drawn at random (in proportion to their weights); the less loaded one.
    P2c,
    /// The client's address (IPv4, or the /64 of IPv6) decides: the same client goes to the
    /// same backend while the set is stable (Maglev consistent hashing).
    HashSource,
}

impl Balance {
    pub const ALL: [Balance; 4] = [
        Balance::RoundRobin,
        Balance::LeastConnections,
        Balance::P2c,
        Balance::HashSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConnections => "least_connections",
            Balance::P2c => "p2c",
            Balance::HashSource => "hash_source",
        }
    }

    pub fn parse(s: &str) -> Option<Balance> {
        Balance::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl std::fmt::Display for Balance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `balance`, defaulting to round robin.
pub(super) fn balance(s: Option<&Spanned<String>>, label: &str, p: &mut Problems<'_>) -> Balance {
    let Some(s) = s else {
        return Balance::default();
    };
    Balance::parse(s.get_ref()).unwrap_or_else(|| {
        p.add(
            Some(s.span().start),
            format!("{label}balance"),
            format!("unknown balance strategy \"{}\"", s.get_ref()),
            "use \"round_robin\" (default), \"least_connections\", \"p2c\" or \"hash_source\"",
        );
        Balance::default()
    })
}

/// The weight of `backends[i]` (`None`: the default, or a problem already reported).
pub(super) fn weight(b: &Spanned<FileBackend>, key: &str, p: &mut Problems<'_>) -> Option<u16> {
    let w = b.get_ref().weight?;
    match u16::try_from(w) {
        Ok(w) if (1..=MAX_WEIGHT).contains(&w) => (w != DEFAULT_WEIGHT).then_some(w),
        _ if w == 0 => {
            p.add(
                Some(b.span().start),
                format!("{key}.weight"),
                "weight 0 would send this backend nothing",
                "to take a backend out of rotation, drain it (`ringway backend drain ROUTE ADDR`) \
                 or remove it from backends; weights run from 1 to 256",
            );
            None
        }
        _ => {
            p.add(
                Some(b.span().start),
                format!("{key}.weight"),
                format!("weight {w} is out of range"),
                "use a weight from 1 (default) to 256",
            );
            None
        }
    }
}

/// `backends = [...]` as `ringway check` prints it: the short form where the weight is the
/// default. Names follow the addresses.
pub(super) fn backends_toml(
    backends: &[SocketAddr],
    weights: &BTreeMap<SocketAddr, u16>,
    limits: &BTreeMap<SocketAddr, NonZeroU32>,
    names: &[super::NamedBackend],
) -> String {
    let entry = |a: String, w: Option<u16>, m: Option<NonZeroU32>| match (w, m) {
        (None, None) => format!("\"{a}\""),
        (w, m) => {
            let mut s = format!("{{ addr = {}", toml_string(&a));
            if let Some(w) = w {
                s.push_str(&format!(", weight = {w}"));
            }
            if let Some(m) = m {
                s.push_str(&format!(", max_connections = {m}"));
            }
            s + " }"
        }
    };
    let items: Vec<String> = backends
        .iter()
        .map(|a| {
            entry(
                a.to_string(),
                weights.get(a).copied(),
                limits.get(a).copied(),
            )
        })
        .chain(names.iter().map(|n| {
            entry(
                n.to_string(),
                (n.weight != DEFAULT_WEIGHT).then_some(n.weight),
                None,
            )
        }))
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::{Config, parse_route_json, parse_route_toml};
    use super::*;

    fn route(extra: &str, backends: &str) -> Result<Config, String> {
        Config::parse(
            &format!(
                "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = {backends}\n{extra}"
            ),
            "t.toml",
        )
        .map_err(|e| e.to_string())
    }

    /// Both backend forms, the weights kept apart from the address list, and every strategy.
    #[test]
    fn weights_and_strategies_parse() {
        let c = route(
            "balance = \"least_connections\"\n",
            r#"["127.0.0.1:8080", { addr = "127.0.0.1:8081", weight = 3 }, { addr = "127.0.0.1:8082", weight = 1 }]"#,
        )
        .unwrap();
        let r = &c.routes[0];
        assert_eq!(r.balance, Balance::LeastConnections);
        assert_eq!(r.backends.len(), 3);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(r.weight(&a("127.0.0.1:8080")), 1);
        assert_eq!(r.weight(&a("127.0.0.1:8081")), 3);
        // A weight of 1 is the default: not kept.
        assert_eq!(r.weights.len(), 1);
        // An address the route does not list (a switch brought it in) weighs 1.
        assert_eq!(r.weight(&a("127.0.0.1:9999")), 1);
        for b in Balance::ALL {
            let c = route(&format!("balance = \"{b}\"\n"), "[\"127.0.0.1:8080\"]").unwrap();
            assert_eq!(c.routes[0].balance, b);
        }
        assert_eq!(
            route("", "[\"127.0.0.1:8080\"]").unwrap().routes[0].balance,
            Balance::RoundRobin
        );
    }

    #[test]
    fn bad_strategies_and_weights_are_named_with_a_fix() {
        for (extra, backends, key, needle, fix) in [
            (
                "balance = \"random\"\n",
                r#"["127.0.0.1:8080"]"#,
                "route[0] (\"web\").balance",
                "unknown balance strategy \"random\"",
                "least_connections",
            ),
            (
                "",
                r#"[{ addr = "127.0.0.1:8080", weight = 0 }]"#,
                "route[0] (\"web\").backends[0].weight",
                "weight 0",
                "drain it",
            ),
            (
                "",
                r#"["127.0.0.1:8081", { addr = "127.0.0.1:8080", weight = 257 }]"#,
                "route[0] (\"web\").backends[1].weight",
                "out of range",
                "1 (default) to 256",
            ),
            (
                "",
                r#"[{ addr = "127.0.0.1:8080", weight = -3 }]"#,
                "route[0] (\"web\").backends[0].weight",
                "out of range",
                "256",
            ),
            (
                "",
                r#"[{ addr = "127.0.0.1:8080", colour = "red" }]"#,
                "colour",
                "unknown field",
                "addr",
            ),
            (
                "",
                r#"[{ weight = 2 }]"#,
                "(syntax)",
                "missing field `addr`",
                "",
            ),
            (
                "",
                r#"[{ addr = "nowhere", weight = 2 }]"#,
                "route[0] (\"web\").backends[0]",
                "not an address",
                "",
            ),
        ] {
            let err = route(extra, backends).unwrap_err();
            assert!(err.contains(key), "{backends}: {err}");
            assert!(err.contains(needle), "{backends}: {err}");
            assert!(err.contains(fix), "{backends}: {err}");
        }
    }

    /// `ringway check` prints `balance` and the weights; what it prints reads back the same,
    /// through the file, the state file's copy and the API's JSON.
    #[test]
    fn balance_and_weights_round_trip() {
        let c = route(
            "balance = \"hash_source\"\n",
            r#"[{ addr = "127.0.0.1:8081", weight = 3 }, "[::1]:8080"]"#,
        )
        .unwrap();
        let text = c.to_toml();
        assert!(text.contains("balance = \"hash_source\""), "{text}");
        assert!(
            text.contains(r#"backends = [{ addr = "127.0.0.1:8081", weight = 3 }, "[::1]:8080"]"#),
            "{text}"
        );
        assert_eq!(Config::parse(&text, "again").unwrap(), c);
        let r = &c.routes[0];
        assert_eq!(&parse_route_toml(&r.to_toml(), "state").unwrap(), r);
        let json = super::super::route_to_json(r);
        assert_eq!(&parse_route_json("web", &json).unwrap(), r);
        let body = serde_json::json!({
            "backends": [{"addr": "127.0.0.1:8081", "weight": 0}],
        });
        let err = parse_route_json("web", &body).unwrap_err();
        assert_eq!(err.problems[0].key, "backends[0].weight");
        // Every backend weighted (a TOML writer may turn the list into [[route.backends]]).
        let all = route(
            "",
            r#"[{ addr = "127.0.0.1:8081", weight = 3 }, { addr = "127.0.0.1:8082", weight = 2 }]"#,
        )
        .unwrap();
        let r = &all.routes[0];
        assert_eq!(&parse_route_toml(&r.to_toml(), "state").unwrap(), r);
        let json = super::super::route_to_json(r);
        assert_eq!(&parse_route_json("web", &json).unwrap(), r);
        // The default is written out too.
        let plain = route("", "[\"127.0.0.1:8080\"]").unwrap().to_toml();
        assert!(plain.contains("balance = \"round_robin\""), "{plain}");
    }
}
