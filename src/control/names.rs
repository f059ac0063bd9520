//! Control side: backends named by DNS. The resolver thread (`crate::dns`) reports each
//! resolution; here the last good answer of every name is kept, a route's names are expanded
//! into addresses (`RouteState::resolved`) before a generation goes out, and a changed answer
//! becomes a new generation like any other change. A failed resolution changes nothing the
//! workers see: the name keeps its last good addresses, and the failure shows in `/status`,
//! in `ringway_dns_failures_total` and in the log.
//!
//! A route of IP literals never reaches this module's resolver: the thread starts with the
//! first name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::Control;
use super::messages::Drain;
use super::routes::RouteState;
use crate::api::NameDoc;
use crate::config::DnsConfig;
use crate::dns::{Dns, Event};

/// What is known of one name.
#[derive(Debug, Default)]
struct NameState {
    /// The last good answer (empty until the first).
    addrs: Vec<IpAddr>,
    /// Why the last resolution failed; `None` after a good one.
    error: Option<String>,
    /// Failed resolutions so far.
    failures: u64,
    resolved_at: Option<Instant>,
    next_at: Option<Instant>,
}

/// The names the routes use, what they resolve to, and the resolver thread.
pub(super) struct Names {
    cfg: DnsConfig,
    cache: BTreeMap<String, NameState>,
    /// Started with the first name.
    dns: Option<Dns>,
    tx: Sender<Event>,
    pub rx: Receiver<Event>,
}

impl Names {
    pub fn new(cfg: DnsConfig) -> Names {
        let (tx, rx) = crossbeam_channel::unbounded();
        Names {
            cfg,
            cache: BTreeMap::new(),
            dns: None,
            tx,
            rx,
        }
    }

    /// Start-up: resolves every name of `routes` now (blocking, within about ten seconds), so
    /// that the first generation has their addresses. A name that fails is logged; its route
    /// starts without it and the resolver thread keeps trying.
    pub fn resolve_first(&mut self, routes: &[RouteState]) {
        let hosts: Vec<String> = wanted(routes).into_iter().collect();
        if hosts.is_empty() {
            return;
        }
        for ev in crate::dns::resolve_now(&self.cfg, &hosts) {
            if let Err(error) = &ev.result {
                tracing::warn!(name = %ev.host, %error, "backend name does not resolve; its routes start without it and it is tried again every dns_min_ttl");
            }
            self.absorb(ev);
        }
    }

    /// Keeps the names of `routes` resolved from now on, and forgets the others.
    pub fn follow(&mut self, routes: &[RouteState]) {
        let names = wanted(routes);
        self.cache.retain(|h, _| names.contains(h));
        if names.is_empty() && self.dns.is_none() {
            return;
        }
        if self.dns.is_none() {
            // Names resolved at start-up are asked again when their answers run out.
            let now = Instant::now();
            let known = self
                .cache
                .iter()
                .filter_map(|(h, s)| Some((h.clone(), s.next_at?.saturating_duration_since(now))))
                .collect();
            match Dns::spawn(self.cfg.clone(), known, self.tx.clone()) {
                Ok(d) => self.dns = Some(d),
                Err(error) => {
                    tracing::error!(%error, "cannot start the resolver thread; backend names keep their addresses");
                    return;
                }
            }
        }
        if let Some(d) = &self.dns {
            d.names(names);
        }
    }

    /// Records one resolution; true when it changed the name's addresses.
    fn absorb(&mut self, ev: Event) -> bool {
        let now = Instant::now();
        let s = self.cache.entry(ev.host).or_default();
        s.next_at = Some(now + ev.next);
        match ev.result {
            Ok(addrs) => {
                s.error = None;
                s.resolved_at = Some(now);
                let changed = s.addrs != addrs;
                s.addrs = addrs;
                changed
            }
            Err(e) => {
                s.error = Some(e);
                s.failures += 1;
                false
            }
        }
    }

    /// The addresses `r`'s names expand to now, each with its name's weight (in the order of
    /// the names; an address given twice keeps its first weight; literals come first anyway).
    fn expansion(&self, r: &RouteState) -> Vec<(SocketAddr, u16)> {
        let mut out: Vec<(SocketAddr, u16)> = Vec::new();
        for n in &r.cfg.names {
            let Some(s) = self.cache.get(&n.host) else {
                continue;
            };
            for ip in &s.addrs {
                let a = SocketAddr::new(*ip, n.port);
                if !r.cfg.backends.contains(&a) && !out.iter().any(|(x, _)| *x == a) {
                    out.push((a, n.weight));
                }
            }
        }
        out
    }

    /// Expands `r`'s names (see [`RouteState::set_resolved`]); a drain for the addresses
    /// it no longer sends sessions to.
    pub fn expand(&self, r: &mut RouteState) -> Option<Drain> {
        if r.cfg.names.is_empty() && r.resolved.is_empty() {
            return None;
        }
        let gone = r.set_resolved(self.expansion(r));
        (!gone.is_empty()).then(|| Drain {
            route_id: r.id,
            route: r.cfg.name.clone(),
            after: r.cfg.switch.drain,
            backends: Some(gone),
        })
    }

    /// `/status`: what `r`'s names resolve to.
    pub fn docs(&self, r: &RouteState) -> Vec<NameDoc> {
        let now = Instant::now();
        r.cfg
            .names
            .iter()
            .map(|n| {
                let s = self.cache.get(&n.host);
                NameDoc {
                    name: n.to_string(),
                    weight: n.weight,
                    addresses: s.map_or_else(Vec::new, |s| {
                        s.addrs
                            .iter()
                            .map(|ip| SocketAddr::new(*ip, n.port))
                            .collect()
                    }),
                    error: s.and_then(|s| s.error.clone()),
                    failures: s.map_or(0, |s| s.failures),
                    resolved_seconds_ago: s
                        .and_then(|s| s.resolved_at)
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    next_resolve_seconds: s
                        .and_then(|s| s.next_at)
                        .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                }
            })
            .collect()
    }
}

/// Every host name the routes use.
fn wanted(routes: &[RouteState]) -> BTreeSet<String> {
    routes
        .iter()
        .flat_map(|r| r.cfg.names.iter().map(|n| n.host.clone()))
        .collect()
}

impl Control {
    /// One resolution from the resolver thread: recorded; a changed answer is published to
    /// the workers as a new generation; a failure is counted and logged.
    pub(super) fn on_dns(&mut self, ev: Event) {
        let host = ev.host.clone();
        let users: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.cfg.names.iter().any(|n| n.host == host))
            .map(|r| r.cfg.name.clone())
            .collect();
        if let Err(error) = &ev.result {
            let first = self
                .names
                .cache
                .get(&host)
                .is_none_or(|s| s.error.is_none());
            let retry = self.config.runtime.dns.min_ttl;
            if first {
                tracing::warn!(name = %host, %error, retry = ?retry, "backend name does not resolve; its last good addresses stay");
            } else {
                tracing::debug!(name = %host, %error, "backend name still does not resolve");
            }
            for route in &users {
                *self
                    .control_metrics
                    .dns_failures
                    .entry((route.clone(), host.clone()))
                    .or_default() += 1;
            }
        } else if self
            .names
            .cache
            .get(&host)
            .is_some_and(|s| s.error.is_some())
        {
            tracing::info!(name = %host, "backend name resolves again");
        }
        if !self.names.absorb(ev) || self.stopping {
            return;
        }
        let mut drains = Vec::new();
        let mut changed = Vec::new();
        for r in self
            .routes
            .iter_mut()
            .filter(|r| users.contains(&r.cfg.name))
        {
            let before = r.active.clone();
            if let Some(d) = self.names.expand(r) {
                drains.push(d);
            }
            if r.active != before {
                changed.push(r.cfg.name.clone());
            }
        }
        if changed.is_empty() {
            return;
        }
        let generation = self.publish(drains);
        for name in &changed {
            if let Some(r) = self.routes.iter_mut().find(|r| &r.cfg.name == name) {
                r.generation = generation;
                let active = super::persist::join(&r.active);
                tracing::info!(route = %name, name = %host, %active, generation, "backend name resolved to new addresses");
            }
            self.send_health_targets(name);
        }
    }

    /// `/status`: what route `r`'s names resolve to.
    pub(super) fn name_docs(&self, r: &RouteState) -> Vec<NameDoc> {
        self.names.docs(r)
    }
}
