//! Hot side: a listen address as a worker sees it — the routes on it and which one a new
//! connection takes.
//!
//! Most addresses have one route and nothing to read first: [`Door::direct`] hands that
//! route out and the session starts at once, as before shared addresses existed. Otherwise
//! the session reads the first bytes ([`super::peek`]) and asks [`Door::decide`]; the
//! precedence is documented in `config::matching`.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use ipnet::IpNet;

use super::table::Route;
use crate::access_log::LogTag;
use crate::config::{Keepalive, MatchConfig, NamePattern, canonical};
use crate::metrics::local::{By, ListenMetrics, RouteMetrics, RoutedCounters, WorkerMetrics, bump};

/// One route on a shared address.
#[derive(Debug)]
struct Rule {
    route: Rc<Route>,
    counters: Rc<RoutedCounters>,
}

/// What the peek found out about a connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen<'a> {
    pub sni: Option<&'a str>,
    pub host: Option<&'a str>,
    pub path: Option<&'a str>,
}

/// A listen address on one worker, for one generation.
#[derive(Debug)]
pub struct Door {
    pub addr: SocketAddr,
    /// Set when the address has one route, no match and no PROXY protocol either way.
    direct: Option<Rc<Route>>,
    /// Routes with `[route.match]`.
    rules: Vec<Rule>,
    default: Option<Rule>,
    /// Some route wants the server name / the request head.
    pub needs_tls: bool,
    pub needs_http: bool,
    /// PROXY headers are read from these sources (and required); empty: none is read.
    pub accept_proxy_from: Vec<IpNet>,
    /// The longest `peek_timeout` of the address's routes.
    pub peek_timeout: Duration,
    pub metrics: Option<Rc<ListenMetrics>>,
    /// Where a connection refused before any route took it is logged: once per access log
    /// file of the address's routes, a drop counted on the first route writing that file.
    pub log: Vec<(LogTag, Rc<RouteMetrics>)>,
    /// Keepalive and user timeout set on this address's listener, which every connection
    /// accepted from it inherits: the first route's. A connection that another route on
    /// the address takes, with other settings, gets that route's own.
    pub keepalive: Keepalive,
}

impl Door {
    /// The door of `addr` with `routes` (at least one).
    pub fn build(addr: SocketAddr, routes: &[Rc<Route>], metrics: &WorkerMetrics) -> Door {
        let direct = match routes {
            [r] if r.cfg.sharing.matching.is_none()
                && r.cfg.sharing.proxy_protocol.is_none()
                && r.cfg.sharing.accept_proxy_from.is_empty() =>
            {
                Some(r.clone())
            }
            _ => None,
        };
        let lm = direct.is_none().then(|| metrics.listen(addr));
        let rule = |r: &Rc<Route>| Rule {
            route: r.clone(),
            counters: lm
                .as_ref()
                .map(|m| m.routed(&r.cfg.name))
                .unwrap_or_default(),
        };
        let matched = |r: &&Rc<Route>| r.cfg.sharing.matching.is_some();
        let rules: Vec<Rule> = routes.iter().filter(matched).map(rule).collect();
        let default = routes.iter().find(|r| !matched(r)).map(rule);
        let m = |f: fn(&MatchConfig) -> bool| {
            rules
                .iter()
                .any(|r| r.route.cfg.sharing.matching.as_ref().is_some_and(f))
        };
        let mut log: Vec<(LogTag, Rc<RouteMetrics>)> = Vec::new();
        for r in routes {
            if let Some(l) = r.log.filter(|l| !log.iter().any(|(t, _)| *t == l.unrouted)) {
                log.push((l.unrouted, r.metrics.clone()));
            }
        }
        Door {
            addr,
            log,
            needs_tls: m(MatchConfig::needs_tls),
            needs_http: m(MatchConfig::needs_http),
            accept_proxy_from: routes
                .first()
                .map(|r| r.cfg.sharing.accept_proxy_from.clone())
                .unwrap_or_default(),
            peek_timeout: routes
                .iter()
                .map(|r| r.cfg.sharing.peek_timeout)
                .max()
                .unwrap_or_default(),
            keepalive: routes.first().map(|r| r.cfg.keepalive).unwrap_or_default(),
            direct,
            rules,
            default,
            metrics: lm,
        }
    }

    /// The route every connection takes, when nothing has to be read or written first.
    #[inline]
    pub fn direct(&self) -> Option<&Rc<Route>> {
        self.direct.as_ref()
    }

    /// True when the route depends on bytes the client sends.
    pub fn needs_peek(&self) -> bool {
        self.needs_tls || self.needs_http
    }

    /// True when `source` may send a PROXY header here.
    pub fn trusts(&self, source: IpAddr) -> bool {
        let ip = canonical(source);
        self.accept_proxy_from.iter().any(|n| n.contains(&ip))
    }

    /// The route for a connection from `source` that showed `seen`, and how it was chosen;
    /// counted. `None`: nothing matched and there is no default.
    pub fn decide(&self, source: IpAddr, seen: Seen<'_>) -> Option<(Rc<Route>, By)> {
        let mut best: Option<(&Rule, [u32; 4])> = None;
        for rule in &self.rules {
            let Some(m) = &rule.route.cfg.sharing.matching else {
                continue;
            };
            let Some(rank) = rank(m, source, seen) else {
                continue;
            };
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((rule, rank));
            }
        }
        let (rule, by) = match best {
            Some((rule, [sni, path, host, _])) => {
                let by = if sni > 0 {
                    By::Sni
                } else if path > 0 {
                    By::Path
                } else if host > 0 {
                    By::Host
                } else {
                    By::Source
                };
                (rule, by)
            }
            None => (self.default.as_ref()?, By::Default),
        };
        bump(&rule.counters[by as usize], 1);
        Some((rule.route.clone(), by))
    }
}

/// How specifically `m` matches: (server name, path prefix, host, source), higher is more
/// specific, compared in that order; `None` when it does not match.
#[inline]
fn rank(m: &MatchConfig, source: IpAddr, seen: Seen<'_>) -> Option<[u32; 4]> {
    let src = m.source_rank(source)?;
    let names = |list: &[NamePattern], name: Option<&str>| -> Option<u32> {
        if list.is_empty() {
            return Some(0);
        }
        let name = name?;
        list.iter()
            .filter(|p| p.matches(name))
            .map(NamePattern::rank)
            .max()
    };
    let sni = names(&m.sni, seen.sni)?;
    let host = names(&m.host, seen.host)?;
    let path = if m.path_prefix.is_empty() {
        0
    } else {
        let path = seen.path?;
        m.path_prefix
            .iter()
            .filter(|p| path.starts_with(p.as_str()))
            .map(|p| 1 + p.len() as u32)
            .max()?
    };
    Some([sni, path, host, src])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::messages::RouteSpec;
    use crate::proxy::table::RouteTable;

    fn door(toml: &str) -> (RouteTable, WorkerMetrics) {
        let cfg = Config::parse(toml, "t.toml").unwrap();
        let specs: Vec<RouteSpec> = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteSpec::configured(i as u64 + 1, r))
            .collect();
        let metrics = WorkerMetrics::default();
        (RouteTable::build(1, &specs, &metrics, 1), metrics)
    }

    const SHARED: &str = r#"
        [[route]]
        name = "site"
        listen = ["127.0.0.1:80"]
        backends = ["127.0.0.1:8001"]
        [route.match]
        host = ["example.com", "*.example.com"]
        [[route]]
        name = "acme"
        listen = ["127.0.0.1:80"]
        backends = ["127.0.0.1:8002"]
        [route.match]
        path_prefix = ["/.well-known/acme-challenge/"]
        [[route]]
        name = "api"
        listen = ["127.0.0.1:80"]
        backends = ["127.0.0.1:8003"]
        [route.match]
        host = ["api.example.com"]
        [[route]]
        name = "office"
        listen = ["127.0.0.1:80"]
        backends = ["127.0.0.1:8004"]
        [route.match]
        host = ["example.com"]
        source = ["10.0.0.0/8"]
        [[route]]
        name = "fallback"
        listen = ["127.0.0.1:80"]
        backends = ["127.0.0.1:8005"]
        [[route]]
        name = "tls"
        listen = ["127.0.0.1:443"]
        backends = ["127.0.0.1:8006"]
        [route.match]
        sni = ["*.example.org"]
        [[route]]
        name = "tls-a"
        listen = ["127.0.0.1:443"]
        backends = ["127.0.0.1:8007"]
        [route.match]
        sni = ["a.example.org"]
        [[route]]
        name = "plain"
        listen = ["127.0.0.1:8080"]
        backends = ["127.0.0.1:8008"]
    "#;

    fn pick(d: &Door, ip: &str, seen: Seen<'_>) -> Option<(String, By)> {
        d.decide(ip.parse().unwrap(), seen)
            .map(|(r, by)| (r.cfg.name.clone(), by))
    }

    #[test]
    fn precedence_exact_wildcard_path_source_default() {
        let (table, metrics) = door(SHARED);
        let web = table.door(&"127.0.0.1:80".parse().unwrap()).unwrap();
        assert!(web.direct().is_none() && web.needs_http && !web.needs_tls);
        let http = |host, path| Seen {
            host: Some(host),
            path: Some(path),
            sni: None,
        };
        let name = |r: Option<(String, By)>| r.map(|(n, _)| n);
        assert_eq!(
            name(pick(web, "1.2.3.4", http("example.com", "/"))).as_deref(),
            Some("site")
        );
        assert_eq!(
            name(pick(web, "1.2.3.4", http("www.example.com", "/"))).as_deref(),
            Some("site")
        );
        assert_eq!(
            name(pick(web, "1.2.3.4", http("api.example.com", "/"))).as_deref(),
            Some("api")
        );
        // The ACME path wins over any host, exact ones included.
        assert_eq!(
            pick(
                web,
                "1.2.3.4",
                http("api.example.com", "/.well-known/acme-challenge/t")
            ),
            Some(("acme".into(), By::Path))
        );
        // A source network makes a route more specific than the same host without one.
        assert_eq!(
            pick(web, "10.9.8.7", http("example.com", "/")),
            Some(("office".into(), By::Host))
        );
        assert_eq!(
            pick(web, "1.2.3.4", http("other.org", "/")),
            Some(("fallback".into(), By::Default))
        );
        assert_eq!(
            pick(web, "1.2.3.4", Seen::default()),
            Some(("fallback".into(), By::Default))
        );
        let tls = table.door(&"127.0.0.1:443".parse().unwrap()).unwrap();
        let sni = |n| Seen {
            sni: Some(n),
            ..Seen::default()
        };
        assert!(tls.needs_tls && !tls.needs_http);
        assert_eq!(
            pick(tls, "1.2.3.4", sni("a.example.org")),
            Some(("tls-a".into(), By::Sni))
        );
        assert_eq!(
            pick(tls, "1.2.3.4", sni("b.example.org")),
            Some(("tls".into(), By::Sni))
        );
        // No default on this address: nothing else is taken.
        assert_eq!(pick(tls, "1.2.3.4", sni("example.org")), None);
        assert_eq!(pick(tls, "1.2.3.4", Seen::default()), None);
        // A single plain route is served without reading anything.
        let plain = table.door(&"127.0.0.1:8080".parse().unwrap()).unwrap();
        assert_eq!(plain.direct().map(|r| r.cfg.name.as_str()), Some("plain"));
        assert!(plain.metrics.is_none());
        // Counted per address, route and how.
        let snap = metrics.snapshot(0);
        let web = snap.listens.iter().find(|l| l.addr.port() == 80).unwrap();
        let count = |route: &str, by: By| {
            web.routed
                .iter()
                .find(|(n, _)| n == route)
                .map_or(0, |(_, c)| c[by as usize])
        };
        assert_eq!(count("site", By::Host), 2);
        assert_eq!(count("fallback", By::Default), 2);
        assert_eq!(count("acme", By::Path), 1);
    }
}
