//! Control side (CLI): the admin API's JSON as text a person reads at a glance — aligned
//! tables, health in words, durations humanised.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::api::{
    ChangeAction, ChangeDoc, HealthDoc, ReloadDoc, RouteDoc, RouteList, RouteView, StatusDoc,
    SwitchDoc, SwitchRecord,
};

/// `ringway status`.
pub fn status(v: &StatusDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringway {} · pid {} · up {} · generation {} · {} relay · {} workers · admin {}",
        v.version,
        v.pid,
        human(Duration::from_secs(v.uptime_seconds)),
        v.generation,
        v.runtime.relay,
        v.runtime.workers,
        v.admin,
    );
    if let Some(r) = &v.last_reload {
        let _ = writeln!(
            out,
            "last reload {} ({}): {}{}",
            ago(&r.at),
            r.trigger,
            r.result,
            r.error
                .as_deref()
                .map(|e| format!(": {}", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        );
    }
    out.push_str(&workers(v));
    out.push_str(&shared(v));
    for r in &v.routes {
        out.push('\n');
        out.push_str(&route(r));
    }
    out
}

/// The addresses of `ringway status` whose routes are told apart (or that speak PROXY
/// protocol): each route and what it takes, most specific first.
fn shared(v: &StatusDoc) -> String {
    let mut out = String::new();
    for l in &v.listeners {
        let proxied = l.rules.iter().any(|r| r.proxy_protocol.is_some());
        if l.rules.len() < 2 && l.accept_proxy_from.is_empty() && !proxied {
            continue;
        }
        let trust = if l.accept_proxy_from.is_empty() {
            String::new()
        } else {
            format!("; PROXY header from {}", l.accept_proxy_from.join(", "))
        };
        let _ = writeln!(out, "\nlisten {} (peek {}{trust}):", l.addr, l.peek_timeout);
        let mut rows = Vec::new();
        for r in &l.rules {
            let mut what: Vec<String> = Vec::new();
            for (key, values) in [
                ("sni", &r.sni),
                ("host", &r.host),
                ("path_prefix", &r.path_prefix),
                ("source", &r.source),
            ] {
                if !values.is_empty() {
                    what.push(format!("{key} {}", values.join(", ")));
                }
            }
            if r.default {
                what.push("default (what nothing else matched)".into());
            }
            if let Some(v) = &r.proxy_protocol {
                what.push(format!("sends PROXY {v}"));
            }
            rows.push(vec![r.route.clone(), what.join("; ")]);
        }
        table(&mut out, &rows, "  ");
    }
    out
}

/// The workers of `ringway status`: where sessions, bytes and CPU time go.
fn workers(v: &StatusDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workers: imbalance {:.2} (busiest / mean open sessions; 1.00 = even)",
        v.worker_imbalance
    );
    let mut rows = vec![
        [
            "WORKER",
            "CORE",
            "TID",
            "ACTIVE",
            "TOTAL",
            "TO BACKEND",
            "TO CLIENT",
            "CPU",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
    for w in &v.workers {
        rows.push(vec![
            w.worker.to_string(),
            opt(w.core.map(|c| c.to_string())),
            opt(w.tid.map(|t| t.to_string())),
            w.connections_active.to_string(),
            w.connections_total.to_string(),
            w.bytes_to_backend.to_string(),
            w.bytes_to_client.to_string(),
            opt(w.cpu_seconds.map(|c| format!("{c:.2}s"))),
        ]);
    }
    table(&mut out, &rows, "  ");
    out
}

/// Each route of `ringway status`.
pub fn route(r: &RouteDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {} ({})  listen {}  {}  active {}  balance {}{}",
        r.name,
        r.origin.as_str(),
        list(&r.listen),
        if r.healthy { "healthy" } else { "UNHEALTHY" },
        list(&r.active),
        if r.balance.is_empty() {
            "round_robin"
        } else {
            &r.balance
        },
        if r.switching { "  (switching)" } else { "" },
    );
    let mut rows = vec![
        [
            "BACKEND",
            "ROLE",
            "WEIGHT",
            "HEALTH",
            "ACTIVE",
            "DRAINING",
            "TOTAL",
            "CONNECT ERRORS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for b in &r.backends {
        let mut health = b.health.as_str().to_string();
        if let Some(why) = b.health_reason.as_deref().filter(|_| health == "down") {
            health = format!("down ({why})");
        }
        let mut role = b.role.as_str().to_string();
        if b.drain {
            role.push_str(", drained");
        }
        if b.ejected {
            role.push_str(", ejected");
        }
        rows.push(vec![
            b.addr.to_string(),
            role,
            b.weight.to_string(),
            health,
            b.connections_active.to_string(),
            b.draining.to_string(),
            b.connections_total.to_string(),
            b.connect_errors.total().to_string(),
        ]);
    }
    table(&mut out, &rows, "  ");
    for n in &r.names {
        let addrs: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
        let addrs = if addrs.is_empty() {
            "(not resolved yet)".to_string()
        } else {
            addrs.join(", ")
        };
        let _ = write!(out, "  name {} -> {addrs}", n.name);
        if let Some(e) = &n.error {
            let _ = write!(out, "; failing ({} so far): {e}", n.failures);
        }
        let _ = writeln!(out);
    }
    if let Some(w) = &r.rollback_watch {
        let _ = writeln!(
            out,
            "  rollback watch: {} left",
            human(Duration::from_secs_f64(w.seconds_left.max(0.0)))
        );
    }
    for (i, rec) in r.history.iter().enumerate() {
        let label = if i == 0 {
            "last switch:"
        } else {
            "            "
        };
        let _ = writeln!(out, "  {label} {}", record(rec));
    }
    out
}

/// `ringway route list`.
pub fn routes(v: &RouteList) -> String {
    let mut out = String::new();
    let mut rows = vec![
        [
            "ROUTE",
            "ORIGIN",
            "LISTEN",
            "ACTIVE",
            "DRAINED",
            "GENERATION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &v.routes {
        rows.push(vec![
            r.name.clone(),
            r.origin.as_str().to_string(),
            list(&r.listen),
            list(&r.active),
            list(&r.drained),
            r.generation.to_string(),
        ]);
    }
    table(&mut out, &rows, "");
    out
}

/// `ringway route show NAME`: where it listens and sends traffic, then its definition as a
/// `[[route]]` table (what to paste into the configuration file to have the file own it).
pub fn view(r: &RouteView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {} ({}, generation {})\n  listen   {}\n  active   {}",
        r.name,
        r.origin.as_str(),
        r.generation,
        list(&r.listen),
        list(&r.active),
    );
    if let Some(p) = &r.previous {
        let _ = writeln!(out, "  previous {}", list(p));
    }
    if !r.drained.is_empty() {
        let _ = writeln!(out, "  drained  {}", list(&r.drained));
    }
    let mut def = serde_json::Map::new();
    def.insert("name".into(), serde_json::Value::String(r.name.clone()));
    if let serde_json::Value::Object(m) = &r.definition {
        def.extend(m.clone());
    }
    let mut doc = toml::Table::new();
    if let Ok(t) = serde_json::from_value::<toml::Value>(serde_json::Value::Object(def)) {
        doc.insert("route".into(), toml::Value::Array(vec![t]));
    }
    let _ = writeln!(
        out,
        "\n{}",
        toml::to_string(&doc).unwrap_or_default().trim_end()
    );
    out
}

/// A route or backend change.
pub fn change(d: &ChangeDoc) -> String {
    let mut out = String::new();
    if d.action == ChangeAction::Unchanged {
        let _ = writeln!(out, "unchanged: route {}: {}", d.route, d.message);
        return out;
    }
    let _ = writeln!(
        out,
        "{} (generation {}; applied by every worker)",
        d.message, d.generation
    );
    if d.action != ChangeAction::Removed {
        let _ = writeln!(
            out,
            "  route {}: {} -> {}",
            d.route,
            list(&d.listen),
            list(&d.active)
        );
    }
    if !d.bound.is_empty() {
        let _ = writeln!(out, "  now listening on {}", list(&d.bound));
    }
    if !d.released.is_empty() {
        let _ = writeln!(out, "  no longer listening on {}", list(&d.released));
    }
    out
}

/// `ringway reload`.
pub fn upgraded(d: &crate::api::UpgradeDoc) -> String {
    let mut out = format!(
        "upgraded: pid {} ({}) serves; pid {} hands over and exits\n",
        d.pid, d.binary, d.old_pid
    );
    let _ = writeln!(
        out,
        "listeners taken over: {}; sessions moved: {}, left to finish in the old process: {}; {} ms",
        d.listeners.len(),
        d.sessions_moved,
        d.sessions_left,
        d.took_ms
    );
    out
}

pub fn reload(d: &ReloadDoc) -> String {
    let mut out = String::new();
    match d.generation {
        Some(g) => {
            let _ = writeln!(
                out,
                "reloaded {} (generation {g}; applied by every worker)",
                d.file
            );
        }
        None => {
            let _ = writeln!(out, "reloaded {}: no route changed", d.file);
        }
    }
    let names = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    for (label, v) in [
        ("added", &d.added),
        ("changed", &d.changed),
        ("removed", &d.removed),
        ("unchanged", &d.unchanged),
        ("adopted from the API", &d.adopted),
        ("API routes (left alone)", &d.api_routes),
    ] {
        if !v.is_empty() || matches!(label, "added" | "changed" | "removed") {
            let _ = writeln!(out, "  {label:<24} {}", names(v));
        }
    }
    if !d.bound.is_empty() {
        let _ = writeln!(out, "  now listening on {}", list(&d.bound));
    }
    if !d.released.is_empty() {
        let _ = writeln!(out, "  no longer listening on {}", list(&d.released));
    }
    if !d.restart_required.is_empty() {
        let _ = writeln!(
            out,
            "  changed, takes effect at the next start: {}",
            d.restart_required.join(", ")
        );
    }
    out
}

/// `ringway health`.
pub fn health(v: &HealthDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        if v.healthy {
            "healthy: every route has a healthy active backend"
        } else {
            "UNHEALTHY: a route has no healthy active backend"
        }
    );
    let mut rows = vec![
        ["ROUTE", "STATE", "ACTIVE BACKENDS"]
            .map(String::from)
            .to_vec(),
    ];
    for r in &v.routes {
        let backends: Vec<String> = r
            .active
            .iter()
            .map(|b| format!("{} {}", b.addr, b.health.as_str()))
            .collect();
        rows.push(vec![
            r.name.clone(),
            if r.healthy { "healthy" } else { "UNHEALTHY" }.to_string(),
            backends.join(", "),
        ]);
    }
    table(&mut out, &rows, "  ");
    out
}

/// `ringway switch` / `ringway rollback`.
pub fn switched(v: &SwitchDoc) -> String {
    let Some(r) = v.record.as_ref().filter(|_| v.switched) else {
        return format!("unchanged: {}\n", v.message.as_deref().unwrap_or(""));
    };
    format!(
        "{} {}: {} -> {} (#{}, generation {}; acknowledged by every worker)\n",
        match r.reason.as_str() {
            "switch" => "switched",
            _ => "rolled back",
        },
        r.route,
        list(&r.from),
        list(&r.to),
        r.id,
        r.generation,
    )
}

/// One switch record: "#3 2m 5s ago: a -> b (switch)".
fn record(r: &SwitchRecord) -> String {
    let detail = r
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!(
        "#{} {}: {} -> {} ({}{detail})",
        r.id,
        ago(&r.at),
        list(&r.from),
        list(&r.to),
        r.reason.as_str().replace('_', " "),
    )
}

/// "2m 5s ago", or the timestamp as given when it cannot be read.
fn ago(at: &str) -> String {
    humantime::parse_rfc3339(at)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| at.to_string(), |d| format!("{} ago", human(d)))
}

/// "3h 12m", "2m 5s", "4s": two units at most.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, h, m, sec) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{days}d {h}h"),
    }
}

fn list(v: &[SocketAddr]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Left-aligned text columns, numbers right-aligned.
fn table(out: &mut String, rows: &[Vec<String>], indent: &str) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            let numeric = i > 0 && !cell.is_empty() && cell.chars().all(|ch| ch.is_ascii_digit());
            let w = widths[c];
            if numeric {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(Duration::from_secs(4)), "4s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 12 * 60 + 9)), "3h 12m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
    }

    #[test]
    fn health_table_is_aligned_and_in_words() {
        let v: HealthDoc = serde_json::from_value(json!({"healthy": false, "routes": [
            {"name": "web", "healthy": true, "active": [{"addr": "127.0.0.1:8081", "health": "up"}]},
            {"name": "api-long", "healthy": false, "active": [{"addr": "127.0.0.1:9000", "health": "down"}]},
        ]}))
        .unwrap();
        let text = health(&v);
        assert!(text.starts_with("UNHEALTHY"));
        assert!(
            text.contains("  web       healthy    127.0.0.1:8081 up\n"),
            "{text}"
        );
        assert!(
            text.contains("  api-long  UNHEALTHY  127.0.0.1:9000 down\n"),
            "{text}"
        );
    }
}
