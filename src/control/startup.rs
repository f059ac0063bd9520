//! Control side: start-up — apply the configuration to an empty state.
//!
//! Order matters for clear failures: read the state file (each route resumes its persisted
//! active set where its configuration is unchanged), bind every listen address and the admin
//! sockets (so a port held by another process is reported before anything runs or any file
//! is written), write the admin token, start the workers (so a kernel without io_uring is
//! reported), hand out the listeners as the first generation, start the health checks, then
//! serve the admin API.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::messages::{FromWorker, ToWorker};
use super::routes::RouteState;
use super::token::{self, TokenError};
use super::{Control, WorkerHandle, persist};
use crate::admin::{self, AdminSettings, AdminSockets};
use crate::config::Config;
use crate::health::Health;
use crate::metrics::render::ControlMetrics;
use crate::metrics::snapshot::MetricsStore;
use crate::net::listener::{ListenerError, bind_group};
use crate::worker::{self, Waker, WorkerSpec};

/// How long workers get to start and to apply the first generation.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why ringway could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("worker {worker}: {error}")]
    Worker { worker: usize, error: String },
    #[error("admin API: cannot listen on {addr}: {source}")]
    Admin {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Cores this process may run on, in order.
fn allowed_cores() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

pub(super) fn start(config: Config, source: Option<PathBuf>) -> Result<Control, StartError> {
    let mut routes: Vec<RouteState> = config.routes.iter().cloned().map(RouteState::new).collect();
    let state_file = &config.state.file;
    let first_generation = match persist::load(state_file) {
        Ok(Some(saved)) => persist::resume(&mut routes, saved, state_file).max(1),
        Ok(None) => 1,
        Err(why) => {
            // Kept aside, not overwritten: it is evidence, or a newer version's file.
            let aside = persist::set_aside(state_file);
            tracing::error!(file = %state_file.display(), problem = %why, kept_as = %aside, "the state file is unusable; starting from the configuration");
            1
        }
    };
    let cores = allowed_cores();
    let count = config
        .runtime
        .workers
        .map(|n| n.get())
        .unwrap_or(cores.len().max(1));

    // 1. Listeners: one SO_REUSEPORT socket per worker per address, bound synchronously.
    let mut bound: BTreeMap<SocketAddr, Vec<TcpListener>> = BTreeMap::new();
    for route in &config.routes {
        for addr in &route.listen {
            bound.insert(*addr, bind_group(*addr, count)?);
        }
    }
    let admin_addr = config.admin.listen;
    let admin_sockets = AdminSockets::bind(admin_addr, config.admin.unix.as_deref())
        .map_err(|(addr, source)| StartError::Admin { addr, source })?;
    // Only now, with every socket ours, may the token file be (re)written: a second
    // `ringway run` that fails on a busy port must not replace the running one's token.
    let (admin_token, token_file) = token::resolve(&config)?;

    // 2. Workers.
    let (to_control, from_workers) = crossbeam_channel::unbounded();
    let mut workers = Vec::with_capacity(count);
    for id in 0..count {
        let (waker, inbox, wake) = Waker::pair().map_err(StartError::Thread)?;
        let core = if config.runtime.pin && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let thread = worker::spawn(WorkerSpec {
            id,
            workers: count,
            core,
            runtime: config.runtime.clone(),
            inbox,
            wake,
            to_control: to_control.clone(),
        })
        .map_err(StartError::Thread)?;
        workers.push(WorkerHandle {
            waker,
            thread: Some(thread),
            core: None,
        });
    }
    drop(to_control);
    wait_started(&from_workers, &mut workers)?;

    // 3. The first generation: every worker gets its own listener of each address.
    let specs = Arc::new(routes.iter().map(RouteState::spec).collect::<Vec<_>>());
    for w in &workers {
        let add = bound
            .iter_mut()
            .filter_map(|(addr, group)| group.pop().map(|l| (*addr, l)))
            .collect();
        w.waker.send(ToWorker::Apply {
            generation: first_generation,
            routes: specs.clone(),
            add,
            remove: Vec::new(),
            drains: Vec::new(),
        });
    }
    wait_applied(&from_workers, workers.len(), first_generation)?;

    // 4. Health checks.
    let (health_tx, health_rx) = crossbeam_channel::unbounded();
    let health = Health::spawn(health_tx).map_err(StartError::Thread)?;

    // 5. Admin API.
    let (admin_tx, admin_rx) = crossbeam_channel::bounded(64);
    let settings = AdminSettings {
        token: admin_token,
        allow: config.admin.allow.clone(),
        rate_limit: config.admin.rate_limit,
    };
    admin::spawn(admin_sockets, settings, admin_tx).map_err(StartError::Thread)?;

    summary(&config, &workers, admin_addr);
    if let Some(path) = token_file {
        tracing::info!(file = %path.display(), "admin token generated (the CLI reads it from there)");
    }
    let count = workers.len();
    let next_id = routes
        .iter()
        .flat_map(|r| r.history.iter().map(|s| s.id))
        .max()
        .unwrap_or(0);
    let control = Control {
        metrics: MetricsStore::new(count),
        control_metrics: ControlMetrics::default(),
        config,
        source,
        generation: first_generation,
        workers,
        from_workers,
        admin_rx,
        admin_addr,
        started: Instant::now(),
        routes,
        health,
        health_rx,
        applied: vec![first_generation; count],
        gates: Default::default(),
        commits: Vec::new(),
        next_id,
        next_gate: 0,
        stopping: false,
    };
    let names: Vec<String> = control.routes.iter().map(|r| r.cfg.name.clone()).collect();
    for name in &names {
        control.send_health_targets(name);
    }
    control.persist();
    Ok(control)
}

fn wait_started(rx: &Receiver<FromWorker>, workers: &mut [WorkerHandle]) -> Result<(), StartError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut started = 0;
    while started < workers.len() {
        match rx.recv_deadline(deadline) {
            Ok(FromWorker::Started { worker, core }) => {
                if let Some(w) = workers.get_mut(worker) {
                    w.core = core;
                }
                started += 1;
            }
            Ok(FromWorker::StartFailed { worker, error }) => {
                return Err(StartError::Worker { worker, error });
            }
            Ok(_) => {}
            Err(_) => {
                return Err(StartError::Worker {
                    worker: started,
                    error: "did not start within 10s".into(),
                });
            }
        }
    }
    Ok(())
}

fn wait_applied(
    rx: &Receiver<FromWorker>,
    count: usize,
    generation: u64,
) -> Result<(), StartError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut applied = 0;
    while applied < count {
        match rx.recv_deadline(deadline) {
            Ok(FromWorker::Applied {
                worker,
                generation: g,
                error,
            }) if g == generation => {
                if let Some(error) = error {
                    return Err(StartError::Worker { worker, error });
                }
                applied += 1;
            }
            Ok(FromWorker::StartFailed { worker, error }) => {
                return Err(StartError::Worker { worker, error });
            }
            Ok(_) => {}
            Err(_) => {
                return Err(StartError::Worker {
                    worker: applied,
                    error: format!("did not apply generation {generation} within 10s"),
                });
            }
        }
    }
    Ok(())
}

/// The start-up summary: one line per listener, per worker→core, and the admin address.
fn summary(config: &Config, workers: &[WorkerHandle], admin: SocketAddr) {
    let rt = &config.runtime;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = workers.len(),
        driver = rt.driver.as_str(),
        relay = if rt.splice { "splice" } else { "buffered" },
        routes = config.routes.len(),
        "ringway started"
    );
    for (id, w) in workers.iter().enumerate() {
        match w.core {
            Some(core) => tracing::info!(worker = id, core, "worker pinned"),
            None => tracing::info!(worker = id, "worker running unpinned"),
        }
    }
    for route in &config.routes {
        for addr in &route.listen {
            let backends: Vec<String> = route.backends.iter().map(|b| b.to_string()).collect();
            tracing::info!(
                route = %route.name,
                listen = %addr,
                backends = %backends.join(","),
                "listening"
            );
        }
    }
    tracing::info!(listen = %admin, "admin API listening");
}
