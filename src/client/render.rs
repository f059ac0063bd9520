//! Control side (CLI): the admin API's JSON as text a person reads at a glance — aligned
//! tables, health in words, durations humanised.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// `ringway status`.
pub fn status(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ringway {} · pid {} · up {} · generation {} · {} relay · {} workers",
        s(&v["version"]),
        v["pid"],
        human(Duration::from_secs(
            v["uptime_seconds"].as_u64().unwrap_or(0)
        )),
        v["generation"],
        s(&v["runtime"]["relay"]),
        v["runtime"]["workers"],
    );
    for r in v["routes"].as_array().into_iter().flatten() {
        out.push('\n');
        let _ = writeln!(
            out,
            "route {}  listen {}  {}  active {}{}",
            s(&r["name"]),
            list(&r["listen"]),
            if r["healthy"] == Value::Bool(true) {
                "healthy"
            } else {
                "UNHEALTHY"
            },
            list(&r["active"]),
            if r["switching"] == Value::Bool(true) {
                "  (switching)"
            } else {
                ""
            },
        );
        let mut rows = vec![
            [
                "BACKEND",
                "ROLE",
                "HEALTH",
                "ACTIVE",
                "DRAINING",
                "TOTAL",
                "CONNECT ERRORS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for b in r["backends"].as_array().into_iter().flatten() {
            let e = &b["connect_errors"];
            let errors = e["refused"].as_u64().unwrap_or(0)
                + e["timeout"].as_u64().unwrap_or(0)
                + e["other"].as_u64().unwrap_or(0);
            let mut health = s(&b["health"]).to_string();
            if let Some(why) = b["health_reason"].as_str().filter(|_| health == "down") {
                health = format!("down ({why})");
            }
            rows.push(vec![
                s(&b["addr"]).to_string(),
                s(&b["role"]).to_string(),
                health,
                b["connections_active"].to_string(),
                b["draining"].to_string(),
                b["connections_total"].to_string(),
                errors.to_string(),
            ]);
        }
        table(&mut out, &rows, "  ");
        if let Some(w) = r["rollback_watch"].as_object() {
            let left = w["seconds_left"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "  rollback watch: {} left",
                human(Duration::from_secs_f64(left.max(0.0)))
            );
        }
        for (i, rec) in r["history"].as_array().into_iter().flatten().enumerate() {
            let label = if i == 0 {
                "last switch:"
            } else {
                "            "
            };
            let _ = writeln!(out, "  {label} {}", record(rec));
        }
    }
    out
}

/// `ringway health`.
pub fn health(v: &Value) -> String {
    let mut out = String::new();
    let healthy = v["healthy"] == Value::Bool(true);
    let _ = writeln!(
        out,
        "{}",
        if healthy {
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
    for r in v["routes"].as_array().into_iter().flatten() {
        let backends: Vec<String> = r["active"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| format!("{} {}", s(&b["addr"]), s(&b["health"])))
            .collect();
        rows.push(vec![
            s(&r["name"]).to_string(),
            if r["healthy"] == Value::Bool(true) {
                "healthy"
            } else {
                "UNHEALTHY"
            }
            .to_string(),
            backends.join(", "),
        ]);
    }
    table(&mut out, &rows, "  ");
    out
}

/// `ringway switch` / `ringway rollback`.
pub fn switched(v: &Value) -> String {
    if v["switched"] == Value::Bool(false) {
        return format!("unchanged: {}\n", s(&v["message"]));
    }
    let r = &v["record"];
    format!(
        "{} {}: {} -> {} (#{}, generation {}; acknowledged by every worker)\n",
        match s(&r["reason"]) {
            "switch" => "switched",
            _ => "rolled back",
        },
        s(&r["route"]),
        list(&r["from"]),
        list(&r["to"]),
        r["id"],
        r["generation"],
    )
}

/// One switch record: "#3 2m 5s ago: a -> b (switch)".
fn record(r: &Value) -> String {
    let ago = humantime::parse_rfc3339(s(&r["at"]))
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(|| s(&r["at"]).to_string(), |d| format!("{} ago", human(d)));
    let detail = r["detail"]
        .as_str()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    format!(
        "#{} {ago}: {} -> {} ({}{detail})",
        r["id"],
        list(&r["from"]),
        list(&r["to"]),
        s(&r["reason"]).replace('_', " "),
    )
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

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn list(v: &Value) -> String {
    let items: Vec<&str> = v.as_array().into_iter().flatten().map(s).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
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
        let v = json!({"healthy": false, "routes": [
            {"name": "web", "healthy": true, "active": [{"addr": "127.0.0.1:8081", "health": "up"}]},
            {"name": "api-long", "healthy": false, "active": [{"addr": "127.0.0.1:9000", "health": "down"}]},
        ]});
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
