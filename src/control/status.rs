//! Control side: the `GET /status` document.

use serde_json::{Value, json};

use super::Control;
use crate::metrics::render::quantiles;

pub(super) fn status(c: &Control) -> Value {
    let totals = c.metrics.routes();
    let active = c.metrics.worker_active();
    let routes: Vec<Value> = c
        .config
        .routes
        .iter()
        .map(|r| {
            let t = totals.get(&r.name);
            let backends: Vec<Value> = r
                .backends
                .iter()
                .map(|addr| {
                    let b = t.and_then(|t| t.backends.get(addr));
                    json!({
                        "addr": addr.to_string(),
                        "connections_active": b.map_or(0, |b| b.active),
                        "connections_total": b.map_or(0, |b| b.connections),
                        "connect_errors": {
                            "refused": b.map_or(0, |b| b.refused),
                            "timeout": b.map_or(0, |b| b.timeouts),
                            "other": b.map_or(0, |b| b.other_errors),
                        },
                    })
                })
                .collect();
            json!({
                "name": r.name,
                "listen": r.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "backends": backends,
                "connections_active": t.map_or(0, |t| t.counters.active),
                "connections_total": t.map_or(0, |t| t.counters.accepted),
                "bytes_to_backend": t.map_or(0, |t| t.counters.bytes_to_backend),
                "bytes_to_client": t.map_or(0, |t| t.counters.bytes_to_client),
                "connect_duration_seconds": t.map(|t| quantiles(&t.connect_us)),
            })
        })
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
            })
        })
        .collect();
    let rt = &c.config.runtime;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": c.started.elapsed().as_secs(),
        "config_file": c.source.as_ref().map(|p| p.display().to_string()),
        "generation": c.generation,
        "admin": c.admin_addr.to_string(),
        "runtime": {
            "driver": rt.driver.as_str(),
            "relay": if rt.splice { "splice" } else { "buffered" },
            "workers": c.workers.len(),
        },
        "workers": workers,
        "routes": routes,
    })
}
