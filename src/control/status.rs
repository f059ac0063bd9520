//! Control side: the `GET /status` and `GET /health` documents.

use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use super::Control;
use super::routes::RouteState;
use crate::metrics::render::quantiles;
use crate::metrics::snapshot::RouteTotals;

pub(super) fn status(c: &Control) -> Value {
    let totals = c.metrics.routes();
    let active = c.metrics.worker_active();
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| route(r, totals.get(&r.cfg.name)))
        .collect();
    let workers: Vec<Value> = c
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            json!({
                "worker": i,
                "core": w.core,
                "connections_active": active.get(i).copied().unwrap_or(0),
                "generation": c.applied.get(i).copied().unwrap_or(0),
            })
        })
        .collect();
    let rt = &c.config.runtime;
    let last_switch = c
        .routes
        .iter()
        .filter_map(|r| r.last())
        .max_by_key(|s| s.id);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": c.started.elapsed().as_secs(),
        "config_file": c.source.as_ref().map(|p| p.display().to_string()),
        "state_file": c.config.state.file.display().to_string(),
        "generation": c.generation,
        "admin": c.admin_addr.to_string(),
        "runtime": {
            "driver": rt.driver.as_str(),
            "relay": if rt.splice { "splice" } else { "buffered" },
            "workers": c.workers.len(),
        },
        "workers": workers,
        "routes": routes,
        "last_switch": last_switch,
    })
}

fn route(r: &RouteState, t: Option<&RouteTotals>) -> Value {
    let mut addrs = r.checked_backends();
    // Backends that only carry draining sessions (an older set) are shown too.
    if let Some(t) = t {
        for (addr, b) in &t.backends {
            if b.active > 0 && !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
    }
    let backends: Vec<Value> = addrs
        .iter()
        .map(|addr| {
            let b = t.and_then(|t| t.backends.get(addr));
            let is_active = r.active.contains(addr);
            let open = b.map_or(0, |b| b.active);
            let h = r.health.get(addr);
            json!({
                "addr": addr.to_string(),
                "role": if is_active { "active" } else if r.previous.as_ref().is_some_and(|p| p.contains(addr)) { "previous" } else { "standby" },
                "health": r.health_word(addr),
                "health_reason": h.and_then(|h| h.reason.clone()),
                "health_since_seconds": h.map(|h| since(h.since)),
                "connections_active": open,
                "draining": if is_active { 0 } else { open },
                "connections_total": b.map_or(0, |b| b.connections),
                "connect_errors": {
                    "refused": b.map_or(0, |b| b.refused),
                    "timeout": b.map_or(0, |b| b.timeouts),
                    "other": b.map_or(0, |b| b.other_errors),
                },
            })
        })
        .collect();
    let draining: u64 = t.map_or(0, |t| {
        t.backends
            .iter()
            .filter(|(a, _)| !r.active.contains(a))
            .map(|(_, b)| b.active)
            .sum()
    });
    let watch = r.watch.as_ref().map(|w| {
        json!({
            "switch_id": w.switch_id,
            "seconds_left": w.until.saturating_duration_since(Instant::now()).as_secs_f64(),
        })
    });
    json!({
        "name": r.cfg.name,
        "listen": r.cfg.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "active": r.active.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "previous": r.previous.as_ref().map(|p| p.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
        "healthy": r.healthy(),
        "health_check": if r.cfg.health.periodic { r.cfg.health.check_name() } else { "none" },
        "generation": r.generation,
        "switching": r.busy,
        "rollback_watch": watch,
        "backends": backends,
        "connections_active": t.map_or(0, |t| t.counters.active),
        "draining": draining,
        "connections_total": t.map_or(0, |t| t.counters.accepted),
        "bytes_to_backend": t.map_or(0, |t| t.counters.bytes_to_backend),
        "bytes_to_client": t.map_or(0, |t| t.counters.bytes_to_client),
        "connect_duration_seconds": t.map(|t| quantiles(&t.connect_us)),
        "last_switch": r.last(),
        "history": r.history.iter().rev().collect::<Vec<_>>(),
    })
}

/// `GET /health`: healthy when every route has an active backend that is not down.
pub(super) fn health(c: &Control) -> (bool, Value) {
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.cfg.name,
                "healthy": r.healthy(),
                "active": r.active.iter().map(|a| json!({"addr": a.to_string(), "health": r.health_word(a)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let healthy = c.routes.iter().all(RouteState::healthy);
    (healthy, json!({"healthy": healthy, "routes": routes}))
}

fn since(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs())
}
