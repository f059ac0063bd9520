//! Control side: start-up — apply the configuration to an empty state.
//!
//! Order matters for clear failures: bind every listen address (so a port held by another
//! process is reported before anything runs), start the workers (so a kernel without
//! io_uring is reported), hand out the listeners as generation 1, then open the admin API.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::messages::{FromWorker, ToWorker};
use super::{Control, WorkerHandle};
use crate::admin;
use crate::config::Config;
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
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Cores this process may run on, in order.
fn allowed_cores() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

pub(super) fn start(config: Config, source: Option<PathBuf>) -> Result<Control, StartError> {
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

    // 3. Generation 1: every worker gets its own listener of each address.
    let routes = Arc::new(config.routes.clone());
    for w in &workers {
        let add = bound
            .iter_mut()
            .filter_map(|(addr, group)| group.pop().map(|l| (*addr, l)))
            .collect();
        w.waker.send(ToWorker::Apply {
            generation: 1,
            routes: routes.clone(),
            add,
            remove: Vec::new(),
        });
    }
    wait_applied(&from_workers, workers.len(), 1)?;

    // 4. Admin API.
    let (admin_tx, admin_rx) = crossbeam_channel::bounded(64);
    let admin_addr = config.admin.listen;
    admin::spawn(admin_addr, admin_tx).map_err(|source| StartError::Admin {
        addr: admin_addr,
        source,
    })?;

    summary(&config, &workers, admin_addr);
    Ok(Control {
        metrics: MetricsStore::new(workers.len()),
        config,
        source,
        generation: 1,
        workers,
        from_workers,
        admin_rx,
        admin_addr,
        started: Instant::now(),
    })
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
