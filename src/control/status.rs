//! Control side: the `GET /status`, `GET /routes[/{name}]` and `GET /health` documents, built
//! from the control thread's state and the merged metrics as [`crate::api`] types.

use std::time::{Instant, SystemTime};

use super::Control;
use super::routes::RouteState;
use crate::api::{
    ActiveHealth, BackendDoc, BackendRole, ConnectErrorsDoc, HealthDoc, ListenerDoc, RouteDoc,
    RouteHealthDoc, RouteList, RouteView, RuleDoc, RuntimeDoc, StatusDoc, WatchDoc, WorkerDoc,
};
use crate::config::route_to_json;
use crate::metrics::local::ConnectErrorKind;
use crate::metrics::render::quantiles;
use crate::metrics::snapshot::RouteTotals;

pub(super) fn status(c: &Control) -> StatusDoc {
    let totals = c.metrics.workers();
    let workers = c
        .workers
        .iter()
        .zip(&totals)
        .map(|(w, t)| WorkerDoc {
            worker: t.worker,
            core: w.core,
            tid: t.tid,
            connections_active: t.active,
            connections_total: t.accepted,
            bytes_to_backend: t.bytes_to_backend,
            bytes_to_client: t.bytes_to_client,
            cpu_seconds: t.cpu_seconds,
            connect_duration_seconds: quantiles(t.connect_us),
            session_duration_seconds: quantiles(t.session_us),
            generation: c.applied.get(t.worker).copied().unwrap_or(0),
        })
        .collect();
    let rt = &c.config.runtime;
    let last_switch = c
        .routes
        .iter()
        .filter_map(|r| r.last())
        .max_by_key(|s| s.id)
        .cloned();
    let listeners = c
        .ports
        .list()
        .map(|(addr, configured, routes)| listener_doc(c, addr, configured, routes))
        .collect();
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_seconds: c.started.elapsed().as_secs(),
        config_file: c.source.as_ref().map(|p| p.display().to_string()),
        state_file: c.config.state.file.display().to_string(),
        generation: c.generation,
        admin: c.admin_addr,
        admin_unix: c.admin_unix.as_ref().map(|p| p.display().to_string()),
        runtime: RuntimeDoc {
            driver: rt.driver.as_str().to_string(),
            relay: rt.splice.relay_name().to_string(),
            workers: c.workers.len(),
        },
        workers,
        worker_imbalance: c.metrics.imbalance(),
        routes: {
            let totals = c.metrics.routes();
            c.routes
                .iter()
                .map(|r| {
                    let mut doc = route(r, totals.get(&r.cfg.name));
                    doc.names = c.name_docs(r);
                    doc
                })
                .collect()
        },
        listeners,
        last_switch,
        last_reload: c.last_reload.clone(),
    }
}

/// `GET /routes`: every route, file routes first.
pub(super) fn route_list(c: &Control) -> RouteList {
    RouteList {
        generation: c.generation,
        routes: c.routes.iter().map(view).collect(),
    }
}

/// `GET /routes/{name}`.
pub(super) fn route_view(c: &Control, name: &str) -> Option<RouteView> {
    c.routes.iter().find(|r| r.cfg.name == name).map(view)
}

fn view(r: &RouteState) -> RouteView {
    RouteView {
        name: r.cfg.name.clone(),
        origin: r.origin,
        generation: r.generation,
        listen: r.bound.clone(),
        active: r.active.clone(),
        previous: r.previous.clone(),
        drained: r.drain.iter().copied().collect(),
        definition: route_to_json(&r.cfg),
    }
}

fn route(r: &RouteState, t: Option<&RouteTotals>) -> RouteDoc {
    let mut addrs = r.checked_backends();
    // Backends that only carry draining sessions (an older set, a detached one) are shown too.
    if let Some(t) = t {
        for (addr, b) in &t.backends {
            if b.active > 0 && !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
    }
    let known = r.checked_backends();
    let now = Instant::now();
    let backends = addrs
        .iter()
        .map(|addr| {
            let b = t.and_then(|t| t.backends.get(addr));
            let is_active = r.active.contains(addr);
            let open = b.map_or(0, |b| b.active);
            let h = r.health.get(addr);
            let (out, until) = b.map_or((0, None), |b| b.ejected(now));
            let role = if is_active {
                BackendRole::Active
            } else if r.previous.as_ref().is_some_and(|p| p.contains(addr)) {
                BackendRole::Previous
            } else if known.contains(addr) {
                BackendRole::Standby
            } else {
                BackendRole::Detached
            };
            BackendDoc {
                addr: *addr,
                role,
                health: r.health_word(addr),
                health_reason: h.and_then(|h| h.reason.clone()),
                health_since_seconds: h.map(|h| since(h.since)),
                drain: r.drain.contains(addr),
                weight: r.weight(addr),
                connections_active: open,
                draining: if is_active { 0 } else { open },
                connections_total: b.map_or(0, |b| b.connections),
                connect_errors: {
                    let n = |k: ConnectErrorKind| b.map_or(0, |b| b.connect_errors[k as usize]);
                    ConnectErrorsDoc {
                        refused: n(ConnectErrorKind::Refused),
                        timeout: n(ConnectErrorKind::Timeout),
                        no_local_port: n(ConnectErrorKind::NoLocalPort),
                        fd_limit: n(ConnectErrorKind::FdLimit),
                        unreachable: n(ConnectErrorKind::Unreachable),
                        other: n(ConnectErrorKind::Other),
                    }
                },
                max_connections: r.cfg.backend_limits.get(addr).map(|n| n.get()),
                ejected: out > 0,
                ejected_workers: out,
                ejected_ms_left: until.map(|u| u.saturating_duration_since(now).as_millis() as u64),
                ejections: b.map_or(0, |b| b.ejections),
            }
        })
        .collect();
    let draining: u64 = t.map_or(0, |t| {
        t.backends
            .iter()
            .filter(|(a, _)| !r.active.contains(a))
            .map(|(_, b)| b.active)
            .sum()
    });
    let watch = r.watch.as_ref().map(|w| WatchDoc {
        switch_id: w.switch_id,
        seconds_left: w
            .until
            .saturating_duration_since(Instant::now())
            .as_secs_f64(),
    });
    RouteDoc {
        name: r.cfg.name.clone(),
        origin: r.origin,
        listen: r.bound.clone(),
        listen_configured: r.cfg.listen.clone(),
        balance: r.cfg.balance.as_str().to_string(),
        active: r.active.clone(),
        previous: r.previous.clone(),
        healthy: r.healthy(),
        health_check: if r.cfg.health.periodic {
            r.cfg.health.check_name()
        } else {
            "none"
        }
        .to_string(),
        generation: r.generation,
        switching: r.busy,
        rollback_watch: watch,
        backends,
        // Filled in by `status` (the resolver's cache is the control thread's).
        names: Vec::new(),
        connections_active: t.map_or(0, |t| t.counters.active),
        draining,
        connections_total: t.map_or(0, |t| t.counters.accepted),
        bytes_to_backend: t.map_or(0, |t| t.counters.bytes_to_backend),
        bytes_to_client: t.map_or(0, |t| t.counters.bytes_to_client),
        connect_duration_seconds: t.map(|t| quantiles(&t.connect_us)),
        last_switch: r.last().cloned(),
        history: r.history.iter().rev().cloned().collect(),
    }
}

/// `GET /health`: healthy when every route has an active backend that is not down.
pub(super) fn health(c: &Control) -> HealthDoc {
    let routes = c
        .routes
        .iter()
        .map(|r| RouteHealthDoc {
            name: r.cfg.name.clone(),
            healthy: r.healthy(),
            active: r
                .active
                .iter()
                .map(|a| ActiveHealth {
                    addr: *a,
                    health: r.health_word(a),
                })
                .collect(),
        })
        .collect();
    HealthDoc {
        healthy: c.routes.iter().all(RouteState::healthy),
        routes,
    }
}

fn since(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs())
}

fn strings<T: std::fmt::Display>(v: &[T]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

/// A listen address: its routes, most specific rule first (`config::matching`).
fn listener_doc(
    c: &Control,
    addr: std::net::SocketAddr,
    configured: std::net::SocketAddr,
    routes: &[String],
) -> ListenerDoc {
    let on: Vec<&crate::config::RouteConfig> = routes
        .iter()
        .filter_map(|n| c.routes.iter().find(|r| &r.cfg.name == n).map(|r| &r.cfg))
        .collect();
    let mut rules: Vec<(std::cmp::Reverse<[u32; 4]>, RuleDoc)> = on
        .iter()
        .map(|r| {
            let s = &r.sharing;
            let m = s.matching.clone().unwrap_or_default();
            let top = |v: Vec<u32>| v.into_iter().max().unwrap_or(0);
            let key = [
                top(m.sni.iter().map(crate::config::NamePattern::rank).collect()),
                top(m.path_prefix.iter().map(|p| 1 + p.len() as u32).collect()),
                top(m
                    .host
                    .iter()
                    .map(crate::config::NamePattern::rank)
                    .collect()),
                top(m
                    .source
                    .iter()
                    .map(|n| 1 + u32::from(n.prefix_len()))
                    .collect()),
            ];
            let doc = RuleDoc {
                route: r.name.clone(),
                sni: strings(&m.sni),
                host: strings(&m.host),
                path_prefix: m.path_prefix.clone(),
                source: strings(&m.source),
                default: s.matching.is_none(),
                proxy_protocol: s.proxy_protocol.map(|v| v.as_str().to_string()),
            };
            (std::cmp::Reverse(key), doc)
        })
        .collect();
    rules.sort_by(|a, b| a.1.default.cmp(&b.1.default).then(a.0.cmp(&b.0)));
    let first = on.first().map(|r| &r.sharing);
    ListenerDoc {
        addr,
        configured,
        routes: routes.to_vec(),
        rules: rules.into_iter().map(|(_, d)| d).collect(),
        accept_proxy_from: first
            .map(|s| strings(&s.accept_proxy_from))
            .unwrap_or_default(),
        peek_timeout: on
            .iter()
            .map(|r| r.sharing.peek_timeout)
            .max()
            .map(crate::config::format_duration)
            .unwrap_or_default(),
    }
}
