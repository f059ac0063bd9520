//! Control side: the control thread. It owns the configuration and the runtime state, binds
//! listeners, starts the workers, sends them route generations, gathers their metrics and
//! answers the admin API. Start-up is "apply the configuration to an empty state".

pub mod messages;
mod persist;
mod routes;
mod startup;
mod status;
mod switch;
mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use serde_json::json;

use crate::config::Config;
use crate::health::{self, Health};
use crate::metrics::render::{self, ControlMetrics};
use crate::metrics::snapshot::MetricsStore;
use crate::worker::Waker;
use messages::{AdminQuery, AdminReply, AdminRequest, Drain, FromWorker, ToWorker};
use routes::RouteState;

pub use persist::{PersistedRoute, ensure_dir, fingerprint};
pub use startup::StartError;
pub use token::read_token_file;

/// Where the control thread's answer to an admin request goes.
type Reply = tokio::sync::oneshot::Sender<AdminReply>;

/// How ringway is asked to stop (SIGTERM/SIGINT set it; tests may set it directly).
pub type StopFlag = Arc<AtomicBool>;

/// A worker as the control thread sees it.
struct WorkerHandle {
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    core: Option<usize>,
}

/// The control thread's state.
pub struct Control {
    config: Config,
    source: Option<PathBuf>,
    generation: u64,
    workers: Vec<WorkerHandle>,
    from_workers: Receiver<FromWorker>,
    admin_rx: Receiver<AdminRequest>,
    admin_addr: std::net::SocketAddr,
    metrics: MetricsStore,
    control_metrics: ControlMetrics,
    started: Instant,
    /// Every route's runtime state (active set, health, history), in configuration order.
    routes: Vec<RouteState>,
    health: Health,
    health_rx: Receiver<health::Event>,
    /// The last generation each worker acknowledged.
    applied: Vec<u64>,
    gates: HashMap<u64, switch::PendingGate>,
    commits: Vec<switch::PendingCommit>,
    /// The last switch record id.
    next_id: u64,
    /// The last health gate id.
    next_gate: u64,
    /// Set once shutdown began: switches and rollbacks are refused from then on.
    stopping: bool,
}

/// Runs ringway until `stop` is set: binds, starts workers and the admin API, serves, then
/// shuts down gracefully. Errors are start-up failures (exit code 1).
pub fn run(config: Config, source: Option<PathBuf>, stop: StopFlag) -> Result<(), StartError> {
    let mut control = startup::start(config, source)?;
    control.serve(&stop);
    control.shutdown();
    Ok(())
}

impl Control {
    fn serve(&mut self, stop: &StopFlag) {
        while !stop.load(Ordering::Relaxed) {
            select! {
                recv(self.from_workers) -> msg => if let Ok(msg) = msg { self.on_worker(msg) },
                recv(self.admin_rx) -> req => if let Ok(req) = req { self.on_admin(req) },
                recv(self.health_rx) -> ev => if let Ok(ev) = ev { self.on_health(ev) },
                default(Duration::from_millis(100)) => {}
            }
            if !self.commits.is_empty() {
                self.settle();
            }
            if !self.gates.is_empty() {
                self.expire_gates();
            }
        }
    }

    fn on_health(&mut self, ev: health::Event) {
        match ev {
            health::Event::Changed {
                route,
                backend,
                up,
                reason,
            } => self.on_health_changed(&route, backend, up, reason),
            health::Event::Gate { id, result } => self.on_gate(id, result),
            health::Event::WatchFailed {
                route,
                switch_id,
                reason,
            } => self.on_watch_failed(&route, switch_id, reason),
        }
    }

    fn on_worker(&mut self, msg: FromWorker) {
        match msg {
            FromWorker::Snapshot(s) => {
                self.metrics.absorb(s);
                if self.routes.iter().any(|r| r.watch.is_some()) {
                    self.check_connect_failures();
                }
            }
            FromWorker::Applied {
                worker,
                generation,
                error,
            } => {
                if let Some(error) = error {
                    tracing::error!(worker, generation, %error, "worker failed to apply a generation");
                }
                self.acknowledged(worker, generation);
            }
            FromWorker::Stopped { worker, .. } => {
                tracing::error!(worker, "worker stopped unexpectedly");
                // It will acknowledge nothing more: leave it out of the commit quorum.
                self.acknowledged(worker, u64::MAX);
            }
            FromWorker::StartFailed { worker, error } => {
                tracing::error!(worker, %error, "worker failed");
            }
            FromWorker::Started { .. } => {}
        }
    }

    fn on_admin(&mut self, req: AdminRequest) {
        let reply = match req.query {
            AdminQuery::Metrics { json: false } => {
                self.refresh_backend_up();
                let mut body =
                    render::prometheus(&self.metrics.routes(), &self.metrics.worker_active());
                render::prometheus_control(&mut body, &self.control_metrics);
                AdminReply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body,
                }
            }
            AdminQuery::Metrics { json: true } => {
                self.refresh_backend_up();
                let mut v = render::json(&self.metrics.routes(), &self.metrics.worker_active());
                v["control"] = render::json_control(&self.control_metrics);
                json_reply(200, v)
            }
            AdminQuery::Status => json_reply(200, status::status(self)),
            AdminQuery::Health => {
                let (healthy, doc) = status::health(self);
                json_reply(if healthy { 200 } else { 503 }, doc)
            }
            AdminQuery::Switch { .. } | AdminQuery::Rollback { .. } if self.stopping => {
                error_reply(
                    503,
                    "shutting_down",
                    "ringway is shutting down; nothing was changed",
                )
            }
            AdminQuery::Switch { route, to } => return self.on_switch(route, to, req.reply),
            AdminQuery::Rollback { route } => return self.on_rollback(route, req.reply),
        };
        let _ = req.reply.send(reply);
    }

    /// `worker` has applied `generation` (`u64::MAX`: it stopped and will acknowledge
    /// nothing more); completes the changes every worker now has.
    fn acknowledged(&mut self, worker: usize, generation: u64) {
        if let Some(a) = self.applied.get_mut(worker) {
            *a = (*a).max(generation);
        }
        self.settle();
    }

    /// Sends every worker the current routes as a new generation (with `drains` to schedule).
    /// Returns the generation.
    fn publish(&mut self, drains: Vec<Drain>) -> u64 {
        self.generation += 1;
        let routes = Arc::new(self.routes.iter().map(RouteState::spec).collect::<Vec<_>>());
        for w in &self.workers {
            w.waker.send(ToWorker::Apply {
                generation: self.generation,
                routes: routes.clone(),
                add: Vec::new(),
                remove: Vec::new(),
                drains: drains.clone(),
            });
        }
        self.generation
    }

    /// Tells the health thread which backends of `route` to check (periodic checks only).
    fn send_health_targets(&self, route: &str) {
        let Some(r) = self.routes.iter().find(|r| r.cfg.name == route) else {
            return;
        };
        if r.cfg.health.periodic {
            self.health.send(health::Command::Targets {
                route: route.to_string(),
                cfg: r.cfg.health.clone(),
                backends: r.checked_backends(),
            });
        }
    }

    fn refresh_backend_up(&mut self) {
        self.control_metrics.backend_up = self
            .routes
            .iter()
            .flat_map(|r| {
                r.health
                    .iter()
                    .map(|(addr, h)| (r.cfg.name.clone(), addr.to_string(), h.up))
            })
            .collect();
        self.control_metrics.backend_up.sort();
    }

    /// Graceful stop: workers stop accepting, sessions get `shutdown_grace`, the rest are
    /// closed, metrics are gathered one last time, threads are joined.
    fn shutdown(mut self) {
        self.stopping = true;
        let grace = self.config.runtime.shutdown_grace;
        let open: u64 = self.metrics.worker_active().iter().sum();
        tracing::info!(grace = ?grace, open_sessions = open, "shutting down: no longer accepting");
        let mut running = 0;
        for w in &self.workers {
            if w.waker.send(ToWorker::Shutdown { grace }) {
                running += 1;
            }
        }
        let deadline = Instant::now() + grace + Duration::from_secs(5);
        let mut forced_total = 0;
        while running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(workers = running, "workers did not stop in time");
                break;
            }
            match self
                .from_workers
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(FromWorker::Stopped { worker, forced }) => {
                    running -= 1;
                    forced_total += forced;
                    self.acknowledged(worker, u64::MAX);
                }
                Ok(FromWorker::Snapshot(s)) => self.metrics.absorb(s),
                // A change committed just before the stop still completes (and is saved).
                Ok(FromWorker::Applied {
                    worker, generation, ..
                }) => {
                    self.acknowledged(worker, generation);
                }
                Ok(_) => {}
                Err(_) => {}
            }
            // Keep answering the admin API while draining.
            while let Ok(req) = self.admin_rx.try_recv() {
                self.on_admin(req);
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        tracing::info!(closed_at_deadline = forced_total, "stopped");
    }
}

fn json_reply(status: u16, v: serde_json::Value) -> AdminReply {
    AdminReply {
        status,
        content_type: "application/json",
        body: v.to_string(),
    }
}

/// A JSON error `{"error", "message"}`.
fn error_reply(status: u16, code: &str, message: &str) -> AdminReply {
    json_reply(status, json!({"error": code, "message": message}))
}
