//! The per-core view: per-worker counters, latency histograms and CPU time in `/status` and
//! `/metrics`, the imbalance gauge, and the Grafana dashboard in tuning/grafana (every query
//! parses as PromQL, every metric it names is one ringway exports).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Proxy, ProxyBuilder, connect, ringway};

const LIMIT: Duration = Duration::from_secs(10);
/// Bytes each connection sends (and gets back from the echo backend).
const CHUNK: usize = 4096;

/// A connection through `p`'s route `route` that has sent and got back `CHUNK` bytes.
fn exchange(p: &Proxy, route: &str) -> TcpStream {
    let mut s = connect(p.addr(route));
    let data = vec![7u8; CHUNK];
    s.write_all(&data).unwrap();
    let mut back = vec![0u8; CHUNK];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, data);
    s
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn sum(workers: &[Value], key: &str) -> u64 {
    workers.iter().map(|w| u(&w[key])).sum()
}

/// The route's counters equal the sum of the workers' counters, in one `/status` document.
fn check_sums(doc: &Value, open: u64, total: u64) {
    let workers = doc["workers"].as_array().expect("workers");
    let route = &doc["routes"][0];
    assert_eq!(u(&route["connections_active"]), open, "{doc}");
    assert_eq!(sum(workers, "connections_active"), open, "{doc}");
    assert_eq!(u(&route["connections_total"]), total, "{doc}");
    assert_eq!(sum(workers, "connections_total"), total, "{doc}");
    assert_eq!(
        sum(workers, "bytes_to_backend"),
        u(&route["bytes_to_backend"]),
        "{doc}"
    );
    assert_eq!(
        sum(workers, "bytes_to_client"),
        u(&route["bytes_to_client"]),
        "{doc}"
    );
    assert_eq!(u(&route["bytes_to_client"]), total * CHUNK as u64, "{doc}");
    // The imbalance is the busiest worker's open sessions over the mean, 1 when idle.
    let active: Vec<u64> = workers
        .iter()
        .map(|w| u(&w["connections_active"]))
        .collect();
    let imbalance = doc["worker_imbalance"].as_f64().expect("worker_imbalance");
    let expect = match active.iter().sum::<u64>() {
        0 => 1.0,
        t => *active.iter().max().unwrap() as f64 * active.len() as f64 / t as f64,
    };
    assert!((imbalance - expect).abs() < 1e-9, "{imbalance} vs {expect}");
    assert!((1.0..=active.len() as f64).contains(&imbalance), "{doc}");
}

/// Each worker's CPU seconds, which must be present.
fn cpu(doc: &Value) -> Vec<f64> {
    doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["cpu_seconds"]
                .as_f64()
                .unwrap_or_else(|| panic!("no cpu_seconds: {w}"))
        })
        .collect()
}

/// Each worker's CPU time in `after` is at least that in `before`.
fn never_down(before: &[f64], after: &[f64]) {
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(after) {
        assert!(a >= b, "CPU time went down: {before:?} -> {after:?}");
    }
}

/// With 2 workers and 8 connections held open: in `/status` and in `/metrics` the workers'
/// accepted, active and byte counters add up to the route's, each worker has a thread id, a
/// CPU time that never goes down and latency histograms whose counts add up to the route's,
/// the imbalance gauge is max/mean of the workers' open sessions (1 once all are closed),
/// `ringway status` shows the workers and the exposition passes `promtool check metrics`. A
/// route removed afterwards leaves the workers' totals where they were (counters never go
/// down).
#[test]
fn per_worker_counters_add_up_and_cpu_is_reported() {
    let echo = Backend::echo();
    let p = ProxyBuilder::new(false)
        .workers(2)
        .route(&[echo.addr], "")
        .start();
    let held: Vec<TcpStream> = (0..8).map(|_| exchange(&p, "r0")).collect();
    assert!(
        p.eventually(LIMIT, |p| {
            let doc = p.status();
            doc["routes"][0]["connections_active"] == 8
                && doc["routes"][0]["bytes_to_client"] == 8 * CHUNK as u64
                && doc["workers"][0]["cpu_seconds"].is_number()
                && doc["workers"][1]["cpu_seconds"].is_number()
        }),
        "the snapshots never showed 8 open sessions: {}",
        p.status()
    );
    let doc = p.status();
    check_sums(&doc, 8, 8);
    for w in doc["workers"].as_array().unwrap() {
        assert!(w["tid"].as_u64().is_some_and(|t| t > 0), "{w}");
        assert_eq!(
            u(&w["connect_duration_seconds"]["count"]),
            u(&w["connections_total"]),
            "{w}"
        );
    }
    let cpu0 = cpu(&doc);

    // The same in the Prometheus exposition (each worker label once per family).
    let metric = |series: &str| {
        p.metric(series)
            .unwrap_or_else(|| panic!("no {series} in\n{}", p.admin_get("/metrics")))
    };
    let per_worker = |family: &str, extra: &str| {
        (0..2)
            .map(|w| metric(&format!("{family}{{worker=\"{w}\"{extra}}}")))
            .sum::<f64>()
    };
    assert_eq!(per_worker("ringway_worker_connections_total", ""), 8.0);
    assert_eq!(
        per_worker("ringway_worker_connections_total", ""),
        metric("ringway_connections_total{route=\"r0\"}")
    );
    assert_eq!(per_worker("ringway_worker_connections_active", ""), 8.0);
    for d in ["to_backend", "to_client"] {
        assert_eq!(
            per_worker("ringway_worker_bytes_total", &format!(",direction=\"{d}\"")),
            metric(&format!(
                "ringway_bytes_total{{route=\"r0\",direction=\"{d}\"}}"
            ))
        );
    }
    assert_eq!(
        per_worker("ringway_worker_connect_duration_seconds_count", ""),
        metric("ringway_connect_duration_seconds_count{route=\"r0\"}")
    );
    let imbalance = metric("ringway_worker_imbalance");
    assert!((1.0..=2.0).contains(&imbalance), "{imbalance}");
    for (w, before) in cpu0.iter().enumerate() {
        let c = metric(&format!(
            "ringway_worker_cpu_seconds_total{{worker=\"{w}\"}}"
        ));
        assert!(c >= *before, "worker {w}: {c} < {before}");
    }

    // The exposition with the per-worker families passes promtool's format and naming lint.
    promtool_check_metrics(&p.admin_get("/metrics"));

    let (code, out, err) = ringway(&["status", "-c", p.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workers: imbalance "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("WORKER") && l.contains("CPU")),
        "{out}"
    );

    // All closed: no open session, imbalance back to 1, every session in the histograms.
    drop(held);
    assert!(
        p.eventually(LIMIT, |p| {
            let doc = p.status();
            doc["routes"][0]["connections_active"] == 0
                && doc["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| u(&w["session_duration_seconds"]["count"]))
                    .sum::<u64>()
                    == 8
        }),
        "the sessions never ended: {}",
        p.status()
    );
    let doc = p.status();
    check_sums(&doc, 0, 8);
    assert_eq!(doc["worker_imbalance"], 1.0);
    let cpu1 = cpu(&doc);
    never_down(&cpu0, &cpu1);

    // A route made and removed through the API: its traffic stays in the workers' totals.
    let (code, body) = p.admin_call(
        "PUT",
        "/routes/extra",
        Some(&json!({"listen": ["127.0.0.1:0"], "backends": [echo.addr.to_string()]}).to_string()),
    );
    assert!(code == 200 || code == 201, "{code} {body}");
    drop((0..4).map(|_| exchange(&p, "extra")).collect::<Vec<_>>());
    assert!(p.eventually(LIMIT, |p| sum(
        p.status()["workers"].as_array().unwrap(),
        "connections_total"
    ) == 12));
    let (code, body) = p.admin_call("DELETE", "/routes/extra", None);
    assert_eq!(code, 200, "{body}");
    // Once the workers forget the route (its last session ended), their totals keep it.
    assert!(p.eventually(LIMIT, |p| {
        let m = p.admin_get("/metrics");
        !m.contains("route=\"extra\"")
    }));
    let doc = p.status();
    assert_eq!(
        sum(doc["workers"].as_array().unwrap(), "connections_total"),
        12
    );
    assert_eq!(u(&doc["routes"][0]["connections_total"]), 8);
    let cpu2 = cpu(&doc);
    never_down(&cpu1, &cpu2);
}

// ------------------------------------------------------------------------ the dashboard

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/grafana/ringway.json")
}

/// Every (panel title, query) of a dashboard, rows' nested panels included.
fn queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for t in panel["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// A Grafana query as plain PromQL: the range variables Grafana fills in become durations.
fn promql(expr: &str) -> String {
    let mut e = expr.to_string();
    for var in [
        "${__rate_interval}",
        "$__rate_interval",
        "${__interval}",
        "$__interval",
        "${__range}",
        "$__range",
    ] {
        e = e.replace(var, "5m");
    }
    e
}

/// The metric names in a PromQL expression that start with `ringway_` (string literals,
/// such as label values and template variables, left out).
fn ringway_names(expr: &str) -> Vec<String> {
    let mut code = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                code.push(' ');
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                code.push(' ');
            }
            None => code.push(c),
        }
    }
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("ringway_"))
        .map(str::to_string)
        .collect()
}

/// Runs `promtool check rules` on `file`: `Err(what it said)` when the file does not pass. A
/// missing promtool fails the test with how to get it (it must not pass silently).
fn promtool_check_rules(file: &Path) -> Result<(), String> {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): the dashboard test needs it to parse the panels' \
                 PromQL. Install it (Debian: apt-get install prometheus; scripts/test.sh does)"
            )
        });
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `promtool check metrics` on an exposition (format and naming lint); fails the test on
/// any complaint.
fn promtool_check_metrics(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install it (Debian: apt-get install prometheus; \
                 scripts/test.sh does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tuning/grafana/ringway.json: every panel query parses as PromQL (`promtool check rules` on
/// one recording rule per query, Grafana's `$__rate_interval` and friends replaced by a
/// duration), every `ringway_*` name in a query or template variable is a sample ringway
/// exports (`metrics::names`, kept equal to the exposition by a unit test), and the
/// dashboard covers what it is for: per-route rates, latency quantiles, worker balance and
/// CPU, switches and reloads.
#[test]
fn grafana_dashboard_queries_parse_and_name_real_metrics() {
    let text = std::fs::read_to_string(dashboard_path()).expect("read the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let qs = queries(&dash);
    assert!(qs.len() >= 10, "only {} queries", qs.len());

    let mut rules = String::from("groups:\n  - name: ringway_dashboard\n    rules:\n");
    for (i, (_, expr)) in qs.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&promql(expr)).unwrap();
        rules.push_str(&format!(
            "      - record: ringway_dashboard:panel_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    if let Err(e) = promtool_check_rules(&file) {
        panic!("promtool check rules failed:\n{e}\nrules file:\n{rules}");
    }

    let exported = ringway::metrics::names::sample_names();
    let mut used = Vec::new();
    for (title, expr) in &qs {
        let names = ringway_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} names no ringway metric: {expr}"
        );
        for n in names {
            assert!(
                exported.contains(&n),
                "panel {title:?} uses {n}, which ringway does not export: {expr}"
            );
            used.push(n);
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = var["query"]
            .as_str()
            .or_else(|| var["query"]["query"].as_str())
            .unwrap_or("");
        for n in ringway_names(q) {
            assert!(exported.contains(&n), "variable {}: {n}", var["name"]);
        }
    }
    for needed in [
        "ringway_connections_total",
        "ringway_bytes_total",
        "ringway_connect_duration_seconds_bucket",
        "ringway_session_duration_seconds_bucket",
        "ringway_worker_connections_active",
        "ringway_worker_imbalance",
        "ringway_worker_cpu_seconds_total",
        "ringway_switches_total",
        "ringway_reloads_total",
    ] {
        assert!(used.iter().any(|n| n == needed), "no panel shows {needed}");
    }
    assert!(
        qs.iter()
            .any(|(_, e)| e.contains("histogram_quantile") && e.contains("_bucket")),
        "no latency quantile panel"
    );
}

/// The checker above catches what it should: a query that does not parse, and a metric name
/// ringway does not export.
#[test]
fn dashboard_checks_catch_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "groups:\n  - name: bad\n    rules:\n      - record: bad:x\n        expr: \"sum by (route (rate(ringway_connections_total[5m]))\"\n",
    )
    .unwrap();
    assert!(
        promtool_check_rules(&file).is_err(),
        "promtool accepted an unbalanced parenthesis"
    );
    assert_eq!(
        ringway_names("rate(ringway_conections_total{route=\"ringway_x\"}[$__rate_interval])"),
        vec!["ringway_conections_total".to_string()]
    );
    assert!(!ringway::metrics::names::sample_names().contains(&"ringway_conections_total".into()));
}
