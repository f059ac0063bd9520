//! Control side: the control thread. It owns the configuration and the runtime state, binds
//! listeners, starts the workers, sends them route generations, gathers their metrics and
//! answers the admin API. Start-up is "apply the configuration to an empty state".

pub mod messages;
mod startup;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use crate::config::Config;
use crate::metrics::render;
use crate::metrics::snapshot::MetricsStore;
use crate::worker::Waker;
use messages::{AdminQuery, AdminReply, AdminRequest, FromWorker, ToWorker};

pub use startup::StartError;

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
    started: Instant,
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
                default(Duration::from_millis(100)) => {}
            }
        }
    }

    fn on_worker(&mut self, msg: FromWorker) {
        match msg {
            FromWorker::Snapshot(s) => self.metrics.absorb(s),
            FromWorker::Applied {
                worker,
                generation,
                error: Some(error),
            } => {
                tracing::error!(worker, generation, %error, "worker failed to apply a generation");
            }
            FromWorker::Stopped { worker, .. } => {
                tracing::error!(worker, "worker stopped unexpectedly");
            }
            FromWorker::StartFailed { worker, error } => {
                tracing::error!(worker, %error, "worker failed");
            }
            FromWorker::Started { .. } | FromWorker::Applied { .. } => {}
        }
    }

    fn on_admin(&mut self, req: AdminRequest) {
        let reply = match req.query {
            AdminQuery::Metrics { json: false } => AdminReply {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: render::prometheus(&self.metrics.routes(), &self.metrics.worker_active()),
            },
            AdminQuery::Metrics { json: true } => json_reply(render::json(
                &self.metrics.routes(),
                &self.metrics.worker_active(),
            )),
            AdminQuery::Status => json_reply(status::status(self)),
        };
        let _ = req.reply.send(reply);
    }

    /// Graceful stop: workers stop accepting, sessions get `shutdown_grace`, the rest are
    /// closed, metrics are gathered one last time, threads are joined.
    fn shutdown(mut self) {
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
                Ok(FromWorker::Stopped { forced, .. }) => {
                    running -= 1;
                    forced_total += forced;
                }
                Ok(FromWorker::Snapshot(s)) => self.metrics.absorb(s),
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

fn json_reply(v: serde_json::Value) -> AdminReply {
    AdminReply {
        status: 200,
        content_type: "application/json",
        body: v.to_string(),
    }
}
