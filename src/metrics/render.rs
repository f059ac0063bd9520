//! Control side: rendering merged metrics as Prometheus text and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::local::{AcceptErrorKind, By, ConnectErrorKind, Limit, Outcome, PeekFailure, Rejected};
use super::names::*;
use super::snapshot::{MetricsStore, WorkerTotals};
use crate::api::Quantiles;

/// Bucket bounds (seconds) of the connect-duration histogram.
const CONNECT_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Bucket bounds (seconds) of the session-duration histogram.
const SESSION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];

/// Prometheus text exposition format 0.0.4: the workers' metrics, merged.
pub fn prometheus(store: &MetricsStore) -> String {
    let routes = &store.routes();
    let mut out = String::with_capacity(4096);
    // Written family by family so every sample of a family is contiguous.
    header(
        &mut out,
        CONNECTIONS_TOTAL,
        "counter",
        "Connections accepted, per route.",
    );
    for (r, t) in routes {
        sample(
            &mut out,
            CONNECTIONS_TOTAL,
            &[("route", r)],
            t.counters.accepted,
        );
    }
    header(
        &mut out,
        CONNECTIONS_ACTIVE,
        "gauge",
        "Sessions open now, per route.",
    );
    for (r, t) in routes {
        sample(
            &mut out,
            CONNECTIONS_ACTIVE,
            &[("route", r)],
            t.counters.active,
        );
    }
    header(
        &mut out,
        BYTES_TOTAL,
        "counter",
        "Bytes relayed, per route and direction.",
    );
    for (r, t) in routes {
        let c = &t.counters;
        sample(
            &mut out,
            BYTES_TOTAL,
            &[("route", r), ("direction", "to_backend")],
            c.bytes_to_backend,
        );
        sample(
            &mut out,
            BYTES_TOTAL,
            &[("route", r), ("direction", "to_client")],
            c.bytes_to_client,
        );
    }
    header(
        &mut out,
        CONNECT_ERRORS_TOTAL,
        "counter",
        "Failed connect attempts, per route, backend and kind (refused, timeout, no_local_port, fd_limit, unreachable, other).",
    );
    for (r, t) in routes {
        for (addr, b) in &t.backends {
            let a = addr.to_string();
            for kind in ConnectErrorKind::ALL {
                sample(
                    &mut out,
                    CONNECT_ERRORS_TOTAL,
                    &[("route", r), ("backend", &a), ("kind", kind.as_str())],
                    b.connect_errors[kind as usize],
                );
            }
        }
    }
    header(
        &mut out,
        BACKEND_CONNECTIONS_ACTIVE,
        "gauge",
        "Sessions open now, per route and backend.",
    );
    for (r, t) in routes {
        for (addr, b) in &t.backends {
            sample(
                &mut out,
                BACKEND_CONNECTIONS_ACTIVE,
                &[("route", r), ("backend", &addr.to_string())],
                b.active,
            );
        }
    }
    header(
        &mut out,
        BACKEND_EJECTIONS_TOTAL,
        "counter",
        "Passive ejections of a backend after failed connects in a row (each worker ejects on its own), per route and backend.",
    );
    for (r, t) in routes {
        for (addr, b) in &t.backends {
            sample(
                &mut out,
                BACKEND_EJECTIONS_TOTAL,
                &[("route", r), ("backend", &addr.to_string())],
                b.ejections,
            );
        }
    }
    header(
        &mut out,
        BACKEND_EJECTED,
        "gauge",
        "On how many workers a backend is ejected now (0: it takes new sessions everywhere), per route and backend.",
    );
    let now = std::time::Instant::now();
    for (r, t) in routes {
        for (addr, b) in &t.backends {
            sample(
                &mut out,
                BACKEND_EJECTED,
                &[("route", r), ("backend", &addr.to_string())],
                b.ejected(now).0 as u64,
            );
        }
    }
    header(
        &mut out,
        CONNECTIONS_REJECTED_TOTAL,
        "counter",
        "Connections reset at accept before a backend was tried, per route and reason (max_connections: the route's; backends_full: every backend at its own max_connections, or ejected; max_connections_per_source; runtime_max_connections).",
    );
    for (r, t) in routes {
        for why in Limit::ALL {
            sample(
                &mut out,
                CONNECTIONS_REJECTED_TOTAL,
                &[("route", r), ("reason", why.as_str())],
                t.counters.rejected[why as usize],
            );
        }
    }
    header(
        &mut out,
        SESSIONS_ENDED_TOTAL,
        "counter",
        "Sessions ended, per route and outcome.",
    );
    for (r, t) in routes {
        for o in Outcome::ALL {
            sample(
                &mut out,
                SESSIONS_ENDED_TOTAL,
                &[("route", r), ("outcome", o.as_str())],
                t.counters.ended[o as usize],
            );
        }
    }
    header(
        &mut out,
        ACCESS_LOG_DROPPED_TOTAL,
        "counter",
        "Access log lines dropped because the worker's queue to the log writer was full, per route.",
    );
    for (r, t) in routes {
        sample(
            &mut out,
            ACCESS_LOG_DROPPED_TOTAL,
            &[("route", r)],
            t.counters.access_log_dropped,
        );
    }
    header(
        &mut out,
        CONNECT_DURATION,
        "histogram",
        "Time to connect to a backend, per route.",
    );
    for (r, t) in routes {
        histogram(
            &mut out,
            CONNECT_DURATION,
            ("route", r),
            &t.connect_us,
            &CONNECT_BUCKETS,
        );
    }
    header(
        &mut out,
        SESSION_DURATION,
        "histogram",
        "Session duration from accept to close, per route.",
    );
    for (r, t) in routes {
        histogram(
            &mut out,
            SESSION_DURATION,
            ("route", r),
            &t.session_us,
            &SESSION_BUCKETS,
        );
    }
    workers(&mut out, &store.workers(), store.imbalance());
    header(
        &mut out,
        LISTENER_QUEUE_RESETS_TOTAL,
        "counter",
        "Connections still queued on a listener when it closed (reset by the kernel); retiring a listener serves its queue first, so this stays 0.",
    );
    sample(
        &mut out,
        LISTENER_QUEUE_RESETS_TOTAL,
        &[],
        store.listener_resets(),
    );
    header(
        &mut out,
        ACCEPT_ERRORS_TOTAL,
        "counter",
        "Connections a listener could not hand over, per kind (fd_limit: out of file descriptors, or reset to keep ringway's reserve; other).",
    );
    let accept_errors = store.accept_errors();
    for kind in AcceptErrorKind::ALL {
        sample(
            &mut out,
            ACCEPT_ERRORS_TOTAL,
            &[("kind", kind.as_str())],
            accept_errors[kind as usize],
        );
    }
    header(
        &mut out,
        PIPE_RESIZE_REFUSED_TOTAL,
        "counter",
        "Splice pipes whose size the kernel refused (fs.pipe-max-size or fs.pipe-user-pages-soft; see tuning/README.md); they keep the default size.",
    );
    sample(
        &mut out,
        PIPE_RESIZE_REFUSED_TOTAL,
        &[],
        store.pipe_resizes_refused(),
    );
    listens(&mut out, store);
    out
}

/// The per-worker families: one series per worker (no route label, so their number grows
/// with the cores, not with the routes).
fn workers(out: &mut String, workers: &[WorkerTotals<'_>], imbalance: f64) {
    let ids: Vec<String> = workers.iter().map(|w| w.worker.to_string()).collect();
    let each = || workers.iter().zip(ids.iter().map(String::as_str));
    header(
        out,
        WORKER_CONNECTIONS_ACTIVE,
        "gauge",
        "Sessions open now, per worker.",
    );
    for (w, id) in each() {
        sample(out, WORKER_CONNECTIONS_ACTIVE, &[("worker", id)], w.active);
    }
    header(
        out,
        WORKER_CONNECTIONS_TOTAL,
        "counter",
        "Connections accepted, per worker (every route, removed ones included).",
    );
    for (w, id) in each() {
        sample(out, WORKER_CONNECTIONS_TOTAL, &[("worker", id)], w.accepted);
    }
    header(
        out,
        WORKER_BYTES_TOTAL,
        "counter",
        "Bytes relayed, per worker and direction (every route).",
    );
    for (w, id) in each() {
        for (direction, n) in [
            ("to_backend", w.bytes_to_backend),
            ("to_client", w.bytes_to_client),
        ] {
            sample(
                out,
                WORKER_BYTES_TOTAL,
                &[("worker", id), ("direction", direction)],
                n,
            );
        }
    }
    header(
        out,
        WORKER_CONNECT_DURATION,
        "histogram",
        "Time to connect to a backend, per worker (every route).",
    );
    for (w, id) in each() {
        histogram(
            out,
            WORKER_CONNECT_DURATION,
            ("worker", id),
            w.connect_us,
            &CONNECT_BUCKETS,
        );
    }
    header(
        out,
        WORKER_SESSION_DURATION,
        "histogram",
        "Session duration from accept to close, per worker (every route).",
    );
    for (w, id) in each() {
        histogram(
            out,
            WORKER_SESSION_DURATION,
            ("worker", id),
            w.session_us,
            &SESSION_BUCKETS,
        );
    }
    header(
        out,
        WORKER_CPU_SECONDS_TOTAL,
        "counter",
        "CPU time (user + system) of the worker's thread, from /proc/self/task/TID/stat, read when its snapshot arrives (each second).",
    );
    for (w, id) in each() {
        if let Some(cpu) = w.cpu_seconds {
            sample_f64(out, WORKER_CPU_SECONDS_TOTAL, &[("worker", id)], cpu);
        }
    }
    header(
        out,
        WORKER_IMBALANCE,
        "gauge",
        "The busiest worker's open sessions over the mean across workers: 1 when balanced or idle, up to the number of workers.",
    );
    sample_f64(out, WORKER_IMBALANCE, &[], imbalance);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn labels(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn sample(out: &mut String, name: &str, l: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !l.is_empty() {
        labels(out, l);
    }
    let _ = writeln!(out, " {value}");
}

fn sample_f64(out: &mut String, name: &str, l: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !l.is_empty() {
        labels(out, l);
    }
    let _ = writeln!(out, " {value}");
}

/// One histogram series; `label` tells it apart from the others of its family (its route,
/// or its worker).
fn histogram(
    out: &mut String,
    name: &str,
    label: (&str, &str),
    h: &Histogram<u64>,
    bounds: &[f64],
) {
    let bucket = format!("{name}_bucket");
    for b in bounds {
        let us = (b * 1e6) as u64;
        let count = h.count_between(0, us);
        let le = format!("{b}");
        sample(out, &bucket, &[label, ("le", &le)], count);
    }
    sample(out, &bucket, &[label, ("le", "+Inf")], h.len());
    let sum_s = h.mean() * h.len() as f64 / 1e6;
    sample_f64(out, &format!("{name}_sum"), &[label], sum_s);
    sample(out, &format!("{name}_count"), &[label], h.len());
}

/// Quantiles of a µs histogram, in seconds.
pub fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let s = |us: u64| us as f64 / 1e6;
    Quantiles {
        count: h.len(),
        p50: s(h.value_at_quantile(0.5)),
        p90: s(h.value_at_quantile(0.9)),
        p99: s(h.value_at_quantile(0.99)),
        max: s(h.max()),
    }
}

/// The same metrics as JSON (`GET /metrics?format=json`).
pub fn json(store: &MetricsStore) -> Value {
    let routes: serde_json::Map<String, Value> = store
        .routes()
        .iter()
        .map(|(name, t)| {
            let c = &t.counters;
            let ended: serde_json::Map<String, Value> = Outcome::ALL
                .iter()
                .map(|o| (o.as_str().to_string(), json!(c.ended[*o as usize])))
                .collect();
            let backends: Vec<Value> = t
                .backends
                .values()
                .map(|b| {
                    json!({
                        "addr": b.addr.to_string(),
                        "connections": b.connections,
                        "active": b.active,
                        "connect_errors": ConnectErrorKind::ALL
                            .iter()
                            .map(|k| (k.as_str().to_string(), json!(b.connect_errors[*k as usize])))
                            .collect::<serde_json::Map<String, Value>>(),
                        "ejections": b.ejections,
                        "ejected_workers": b.ejected(std::time::Instant::now()).0,
                    })
                })
                .collect();
            (
                name.clone(),
                json!({
                    "connections_total": c.accepted,
                    "connections_active": c.active,
                    "connections_rejected": c.rejected.iter().sum::<u64>(),
                    "connections_rejected_by_reason": Limit::ALL
                        .iter()
                        .map(|w| (w.as_str().to_string(), json!(c.rejected[*w as usize])))
                        .collect::<serde_json::Map<String, Value>>(),
                    "connections_rejected_backends_full": c.rejected[Limit::BackendsFull as usize],
                    "bytes_to_backend": c.bytes_to_backend,
                    "bytes_to_client": c.bytes_to_client,
                    "sessions_ended": ended,
                    "access_log_dropped": c.access_log_dropped,
                    "connect_duration_seconds": quantiles(&t.connect_us),
                    "session_duration_seconds": quantiles(&t.session_us),
                    "backends": backends,
                }),
            )
        })
        .collect();
    let workers: Vec<Value> = store
        .workers()
        .iter()
        .map(|w| {
            json!({
                "worker": w.worker,
                "tid": w.tid,
                "connections_active": w.active,
                "connections_total": w.accepted,
                "bytes_to_backend": w.bytes_to_backend,
                "bytes_to_client": w.bytes_to_client,
                "cpu_seconds": w.cpu_seconds,
                "connect_duration_seconds": quantiles(w.connect_us),
                "session_duration_seconds": quantiles(w.session_us),
            })
        })
        .collect();
    json!({
        "routes": routes,
        "workers": workers,
        "worker_imbalance": store.imbalance(),
        "listener_queue_resets": store.listener_resets(),
        "accept_errors": AcceptErrorKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), json!(store.accept_errors()[*k as usize])))
            .collect::<serde_json::Map<String, Value>>(),
        "pipe_resize_refused": store.pipe_resizes_refused(),
        "listens": store.listens().iter().map(|(addr, l)| {
            let routed: serde_json::Map<String, Value> = l.routed.iter().map(|(route, c)| {
                let by: serde_json::Map<String, Value> =
                    By::ALL.iter().map(|b| (b.as_str().to_string(), json!(c[*b as usize]))).collect();
                (route.clone(), Value::Object(by))
            }).collect();
            let rejected: serde_json::Map<String, Value> = Rejected::ALL.iter()
                .map(|r| (r.as_str().to_string(), json!(l.rejected[*r as usize]))).collect();
            let peek: serde_json::Map<String, Value> = PeekFailure::ALL.iter()
                .map(|r| (r.as_str().to_string(), json!(l.peek_failed[*r as usize]))).collect();
            (addr.to_string(), json!({"routed": routed, "rejected": rejected, "peek_failures": peek}))
        }).collect::<serde_json::Map<String, Value>>(),
    })
}

/// The shared listen addresses' families (headers even when none is shared).
fn listens(out: &mut String, store: &MetricsStore) {
    let listens = store.listens();
    header(
        out,
        LISTEN_ROUTED_TOTAL,
        "counter",
        "Connections on a shared listen address, by the route that took them and how it was chosen.",
    );
    for (addr, l) in &listens {
        let listen = addr.to_string();
        for (route, counts) in &l.routed {
            for by in By::ALL {
                let labels = [
                    ("listen", listen.as_str()),
                    ("route", route),
                    ("by", by.as_str()),
                ];
                sample(out, LISTEN_ROUTED_TOTAL, &labels, counts[by as usize]);
            }
        }
    }
    header(
        out,
        LISTEN_REJECTED_TOTAL,
        "counter",
        "Connections on a shared listen address (or one whose routes have no backend yet) reset before any route took them.",
    );
    for (addr, l) in &listens {
        let listen = addr.to_string();
        for why in Rejected::ALL {
            let labels = [("listen", listen.as_str()), ("reason", why.as_str())];
            sample(
                out,
                LISTEN_REJECTED_TOTAL,
                &labels,
                l.rejected[why as usize],
            );
        }
    }
    header(
        out,
        LISTEN_PEEK_FAILURES_TOTAL,
        "counter",
        "Peeks at a shared listen address that could not decide (the default route, if any, took the connection; a missing or broken PROXY header counts in ringway_listen_rejected_total instead).",
    );
    for (addr, l) in &listens {
        let listen = addr.to_string();
        for why in PeekFailure::ALL {
            let labels = [("listen", listen.as_str()), ("reason", why.as_str())];
            sample(
                out,
                LISTEN_PEEK_FAILURES_TOTAL,
                &labels,
                l.peek_failed[why as usize],
            );
        }
    }
}

/// Metrics the control thread itself owns: switch results, backend health, reloads.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// (route, result) → count.
    pub switches: BTreeMap<(String, &'static str), u64>,
    /// (route, backend, up) for every backend the checks have judged.
    pub backend_up: Vec<(String, String, bool)>,
    /// Configuration reloads by result ("ok", "failed").
    pub reloads: BTreeMap<&'static str, u64>,
    /// (route, host) → failed resolutions of that backend name.
    pub dns_failures: BTreeMap<(String, String), u64>,
    /// When this process started, Unix seconds.
    pub start_time: u64,
    /// Binary upgrades that failed (this process served on).
    pub upgrades_failed: u64,
}

/// Appends the control thread's metrics to a Prometheus exposition.
pub fn prometheus_control(out: &mut String, c: &ControlMetrics) {
    header(
        out,
        SWITCHES_TOTAL,
        "counter",
        "Switches of a route's active set, per route and result (switched, rejected, rolled_back).",
    );
    for ((route, result), n) in &c.switches {
        sample(
            out,
            SWITCHES_TOTAL,
            &[("route", route), ("result", result)],
            *n,
        );
    }
    header(
        out,
        BACKEND_UP,
        "gauge",
        "1 when the health checks find the backend up, 0 when down.",
    );
    for (route, backend, up) in &c.backend_up {
        sample(
            out,
            BACKEND_UP,
            &[("route", route), ("backend", backend)],
            u64::from(*up),
        );
    }
    header(
        out,
        RELOADS_TOTAL,
        "counter",
        "Configuration reloads, per result (ok, failed).",
    );
    for result in ["ok", "failed"] {
        let n = c.reloads.get(result).copied().unwrap_or(0);
        sample(out, RELOADS_TOTAL, &[("result", result)], n);
    }
    header(
        out,
        DNS_FAILURES_TOTAL,
        "counter",
        "Failed resolutions of a backend name, per route and name (the last good addresses stay).",
    );
    for ((route, name), n) in &c.dns_failures {
        sample(
            out,
            DNS_FAILURES_TOTAL,
            &[("route", route), ("name", name)],
            *n,
        );
    }
    header(
        out,
        START_TIME_SECONDS,
        "gauge",
        "When this process started, Unix time in seconds (counters restart after a binary upgrade).",
    );
    sample(out, START_TIME_SECONDS, &[], c.start_time);
    header(
        out,
        UPGRADES_FAILED_TOTAL,
        "counter",
        "Binary upgrades that failed; this process served on.",
    );
    sample(out, UPGRADES_FAILED_TOTAL, &[], c.upgrades_failed);
}

/// The control thread's metrics as JSON.
pub fn json_control(c: &ControlMetrics) -> Value {
    let switches: Vec<Value> = c
        .switches
        .iter()
        .map(|((route, result), n)| json!({"route": route, "result": result, "count": n}))
        .collect();
    let up: Vec<Value> = c
        .backend_up
        .iter()
        .map(|(route, backend, up)| json!({"route": route, "backend": backend, "up": up}))
        .collect();
    let reloads: serde_json::Map<String, Value> = ["ok", "failed"]
        .iter()
        .map(|r| (r.to_string(), json!(c.reloads.get(r).copied().unwrap_or(0))))
        .collect();
    let dns: Vec<Value> = c
        .dns_failures
        .iter()
        .map(|((route, name), n)| json!({"route": route, "name": name, "failures": n}))
        .collect();
    json!({
        "switches": switches,
        "backend_up": up,
        "reloads": reloads,
        "dns_failures": dns,
        "start_time_seconds": c.start_time,
        "upgrades_failed": c.upgrades_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::local::{WorkerMetrics, bump};

    fn store() -> MetricsStore {
        let mut store = MetricsStore::new(2);
        for (worker, sessions) in [(0, 3), (1, 1)] {
            let w = WorkerMetrics::default();
            let r = w.route("web");
            bump(&r.accepted, sessions);
            bump(&r.active, sessions);
            bump(&w.active, sessions);
            bump(&r.bytes_to_client, 10);
            r.record_connect_us(300);
            r.record_end(Outcome::Clean, 2_000_000);
            store.absorb(w.snapshot(worker));
        }
        store
    }

    /// Every family rendered is in `names::FAMILIES` with the same type, and every family
    /// there is rendered: the list the dashboard test checks against is the real one.
    #[test]
    fn families_match_the_names_table() {
        let mut text = prometheus(&store());
        prometheus_control(&mut text, &ControlMetrics::default());
        let rendered: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect();
        let table: Vec<(String, String)> = FAMILIES
            .iter()
            .map(|(n, k)| (n.to_string(), k.as_str().to_string()))
            .collect();
        assert_eq!(rendered, table);
        // Every sample line's name is one of the table's sample names.
        let names = sample_names();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(names.iter().any(|n| n == name), "unlisted sample {line}");
        }
    }

    #[test]
    fn per_worker_series() {
        let text = prometheus(&store());
        for line in [
            "ringway_worker_connections_total{worker=\"0\"} 3",
            "ringway_worker_connections_total{worker=\"1\"} 1",
            "ringway_worker_connections_active{worker=\"0\"} 3",
            "ringway_worker_bytes_total{worker=\"1\",direction=\"to_client\"} 10",
            "ringway_worker_connect_duration_seconds_bucket{worker=\"0\",le=\"0.0005\"} 1",
            "ringway_worker_session_duration_seconds_count{worker=\"1\"} 1",
            "ringway_worker_imbalance 1.5",
            "ringway_connect_duration_seconds_bucket{route=\"web\",le=\"+Inf\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        // No thread id in these snapshots: no CPU sample rather than a made-up one.
        assert!(!text.contains("ringway_worker_cpu_seconds_total{"));
        let v = json(&store());
        assert_eq!(v["worker_imbalance"], 1.5);
        assert_eq!(v["workers"][0]["connections_total"], 3);
    }
}
