//! Control side: start-up — apply the configuration to an empty state.
//!
//! Order matters for clear failures: raise the open-files limit (`fdlimit`), read the state file (routes the admin API created come
//! back from it; each route resumes its persisted active set where its configuration is
//! unchanged), resolve backend names (so the first generation has their addresses; a name
//! that fails does not stop the start), bind every listen address and the admin sockets (so a port held by another
//! process is reported before anything runs or any file is written), write the admin token,
//! start the workers (so a kernel without io_uring is reported), hand out the listeners as
//! the first generation, start the health checks, serve the admin API, then tell systemd
//! `READY=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::messages::{FromWorker, ToWorker};
use super::names::Names;
use super::ports::{PortError, Ports, Want};
use super::routes::RouteState;
use super::token::{self, TokenError};
use super::{Control, WorkerHandle, deal, fdlimit, notify, persist, worker_specs};
use crate::access_log::AccessLog;
use crate::admin::{self, AdminSettings, AdminSockets};
use crate::api::Origin;
use crate::config::{Config, SpliceMode, parse_route_toml};
use crate::health::Health;
use crate::metrics::render::ControlMetrics;
use crate::metrics::snapshot::MetricsStore;
use crate::upgrade::child::Inherited;
use crate::worker::{self, Waker, WorkerSpec};

/// How long workers get to start and to apply the first generation.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why ringway could not start (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Port(#[from] PortError),
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

pub(super) fn start(
    config: Config,
    source: Option<PathBuf>,
    inherited: &mut Option<Inherited>,
) -> Result<Control, StartError> {
    // The default new binary of a later upgrade: read now, while the path still names the
    // file this process runs (a package upgrade replaces it).
    let exe = std::env::current_exe().ok();
    let mut next_route_id = 0;
    let mut routes: Vec<RouteState> = Vec::new();
    for cfg in &config.routes {
        next_route_id += 1;
        routes.push(RouteState::new(next_route_id, Origin::File, cfg.clone()));
    }
    let state_file = &config.state.file;
    let saved = match persist::load(state_file) {
        Ok(saved) => saved,
        Err(why) => {
            // Kept aside, not overwritten: it is evidence, or a newer version's file.
            let aside = persist::set_aside(state_file);
            tracing::error!(file = %state_file.display(), problem = %why, kept_as = %aside, "the state file is unusable; starting from the configuration");
            None
        }
    };
    if let Some(saved) = &saved {
        for (name, p) in saved.iter().filter(|(_, p)| p.origin == Origin::Api) {
            if routes.iter().any(|r| &r.cfg.name == name) {
                tracing::info!(route = %name, "the configuration file defines route {name}, which the admin API had created: the file owns it from now on");
                continue;
            }
            let def = p.definition.as_deref().unwrap_or("");
            match parse_route_toml(def, &format!("{} (route {name})", state_file.display())) {
                Ok(cfg) if cfg.name == *name => {
                    next_route_id += 1;
                    routes.push(RouteState::new(next_route_id, Origin::Api, cfg));
                }
                Ok(_) | Err(_) => {
                    drop_api_route(state_file, name, def, "its definition does not validate")
                }
            }
        }
    }
    // Backend names resolve before anything binds: the first generation has their addresses
    // (and a drained one among them stays drained).
    let mut names = Names::new(config.runtime.dns.clone());
    names.resolve_first(&routes);
    for r in &mut routes {
        names.expand(r);
    }
    let first_generation = match saved {
        Some(saved) => persist::resume(&mut routes, saved, state_file).max(1),
        None => 1,
    };
    let cores = allowed_cores();
    let count = config
        .runtime
        .workers
        .map(|n| n.get())
        .unwrap_or(cores.len().max(1));
    // 0. Open files: raised before anything is opened, and checked against the routes.
    if let Some(limit) = fdlimit::raise() {
        fdlimit::check_fit(&config, count, &limit);
    }

    // 1. Listeners: one SO_REUSEPORT socket per worker per address, bound synchronously. An
    //    API route that can no longer listen where it did is left out (and logged whole)
    //    rather than keeping the file's routes down.
    let mut ports = Ports::default();
    // Started by an upgrade: the old process's sockets stand in for binding the same
    // addresses (nothing queued on them is lost).
    let handed: Vec<(SocketAddr, usize)> = match inherited.as_mut() {
        Some(i) => {
            // A route on port 0 keeps the port it had (same route, same configured list).
            for (name, bound) in &i.bound {
                if let Some(r) = routes.iter_mut().find(|r| &r.cfg.name == name)
                    && r.cfg.listen.len() == bound.len()
                {
                    r.bound = bound.clone();
                }
            }
            let listeners = std::mem::take(&mut i.listeners);
            let addrs = listeners
                .iter()
                .map(|(a, fds)| (*a, fds.len().min(count)))
                .collect();
            ports.inherit(listeners);
            addrs
        }
        None => Vec::new(),
    };
    let reserved = [(config.admin.listen, "the admin API's address")];
    let plan = loop {
        let wants: Vec<Want> = routes.iter().map(RouteState::want).collect();
        match ports.plan(&wants, count, config.admin.listen_range.as_ref(), &reserved) {
            Ok(plan) => break plan,
            Err(e) => {
                let culprit = routes.iter().position(|r| {
                    r.origin == Origin::Api && e.routes().contains(&r.cfg.name.as_str())
                });
                let Some(i) = culprit else {
                    return Err(e.into());
                };
                let r = routes.remove(i);
                drop_api_route(state_file, &r.cfg.name, &r.cfg.to_toml(), &e.to_string());
            }
        }
    };
    for (r, pairs) in routes.iter_mut().zip(&plan.bound) {
        r.place(pairs);
    }
    ports.commit(&plan, first_generation);
    ports.keep_copies(&plan.add);
    // What this process did not take (its configuration no longer listens there) is closed
    // now; the old process retires those addresses itself.
    let unused = ports.drop_inherited();
    let adopted: Vec<(SocketAddr, usize)> = handed
        .into_iter()
        .filter(|(a, _)| !unused.contains(a))
        .collect();
    let admin_sockets = match inherited.as_mut().and_then(|i| i.admin.take()) {
        Some(from) => {
            AdminSockets::inherit(from, config.admin.listen, config.admin.unix.as_deref())
        }
        None => AdminSockets::bind(config.admin.listen, config.admin.unix.as_deref()),
    }
    .map_err(|(addr, source)| StartError::Admin { addr, source })?;
    let admin_addr = admin_sockets
        .local_addr()
        .map_err(|source| StartError::Admin {
            addr: config.admin.listen.to_string(),
            source,
        })?;
    // Only now, with every socket ours, may the token file be (re)written: a second
    // `ringway run` that fails on a busy port must not replace the running one's token.
    // After an upgrade a generated token carries over (the CLI's file stays valid).
    let (admin_token, token_file) = match inherited.as_ref() {
        Some(i) if config.admin.token == crate::config::TokenSource::Generated => {
            token::keep(&config, &i.token)?
        }
        _ => token::resolve(&config)?,
    };
    let admin_copies = match admin_sockets.copies() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep copies of the admin sockets: upgrades will be refused");
            None
        }
    };

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
    wait_started(&from_workers, &mut workers).map_err(|e| bail(inherited, e))?;

    // 3. The first generation: every worker gets its own listener of each address.
    let mut access_log = AccessLog::new(count, config.runtime.access_log_queue);
    let specs = worker_specs(&mut access_log, &workers, &routes);
    for (w, add) in workers.iter().zip(deal(plan.add, count)) {
        w.waker.send(ToWorker::Apply {
            generation: first_generation,
            routes: specs.clone(),
            add,
            remove: Vec::new(),
            drains: Vec::new(),
        });
    }
    wait_applied(&from_workers, workers.len(), first_generation).map_err(|e| bail(inherited, e))?;

    // 4. Health checks.
    let (health_tx, health_rx) = crossbeam_channel::unbounded();
    let health = Health::spawn(health_tx)
        .map_err(StartError::Thread)
        .map_err(|e| bail(inherited, e))?;

    // 5. Admin API.
    let (admin_tx, admin_rx) = crossbeam_channel::bounded(64);
    let settings = AdminSettings {
        token: admin_token.clone(),
        allow: config.admin.allow.clone(),
        rate_limit: config.admin.rate_limit,
    };
    let (_, admin_handle) = admin::spawn(admin_sockets, settings, admin_tx)
        .map_err(StartError::Thread)
        .map_err(|e| bail(inherited, e))?;

    summary(&config, &routes, &workers, admin_addr);
    if let Some(path) = token_file {
        tracing::info!(file = %path.display(), "admin token generated (the CLI reads it from there)");
    }
    let count = workers.len();
    let next_id = routes
        .iter()
        .flat_map(|r| r.history.iter().map(|s| s.id))
        .max()
        .unwrap_or(0);
    let admin_unix = config.admin.unix.clone();
    // What the file said at start, for the watcher (an event that leaves it so is no
    // reload); a reload that turns the watcher on records it itself.
    let last_text = source
        .as_deref()
        .filter(|_| config.runtime.watch_config)
        .and_then(|p| crate::config::read_config_file(p).ok());
    // Bounded: a burst of file events needs one reload, not one each.
    let (watch_tx, watch_rx) = crossbeam_channel::bounded(1);
    let mut control = Control {
        metrics: MetricsStore::new(count),
        control_metrics: ControlMetrics {
            start_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ..ControlMetrics::default()
        },
        config,
        source,
        generation: first_generation,
        workers,
        from_workers,
        admin_rx,
        admin_addr,
        admin_unix,
        started: Instant::now(),
        routes,
        ports,
        next_route_id,
        health,
        health_rx,
        watch_rx,
        watch_tx,
        watcher: None,
        watch_due: None,
        last_text,
        last_reload: None,
        applied: vec![first_generation; count],
        gates: Default::default(),
        commits: Vec::new(),
        next_id,
        next_gate: 0,
        stopping: false,
        access_log,
        names,
        admin_token,
        admin_copies,
        admin_handle: Some(admin_handle),
        exe,
        upgrade: None,
        upgrade_thread: None,
        handed_over: false,
        arrivals: crossbeam_channel::never(),
    };
    let names: Vec<String> = control.routes.iter().map(|r| r.cfg.name.clone()).collect();
    for name in &names {
        control.send_health_targets(name);
    }
    control.names.follow(&control.routes);
    control.sync_watcher();
    match inherited.take() {
        // The old process tells systemd (MAINPID) once it has let go; the state file is
        // written only once this process serves (the old one no longer writes it then).
        Some(from) => {
            let parent = from.parent;
            let routes = control.routes.iter().map(|r| r.cfg.name.clone()).collect();
            match from.ready(adopted, routes) {
                Ok(arrivals) => control.arrivals = arrivals,
                Err(e) => {
                    // The old process serves on (it kills this one at its deadline); leave
                    // at once, touching none of the sockets it shares.
                    tracing::error!(error = %e, parent, "cannot report ready to the old process; exiting");
                    std::process::exit(1);
                }
            }
            control.persist();
            tracing::info!(parent, "upgrade: serving in place of the old process");
        }
        None => {
            control.persist();
            notify::ready();
        }
    }
    Ok(control)
}

/// A start-up failure once workers run. Started by an upgrade, their listeners are the old
/// process's sockets too: a worker told to stop would retire them (a filter that drops SYNs,
/// on the shared socket). So the old process is told why, and this one exits at once,
/// leaving the sockets as they are. Otherwise the error is returned.
fn bail(inherited: &mut Option<Inherited>, e: StartError) -> StartError {
    if let Some(i) = inherited.take() {
        tracing::error!(error = %e, "ringway could not start");
        i.fail(&e.to_string());
        eprintln!("ringway: {e}");
        std::process::exit(1);
    }
    e
}

/// An API route from the state file that cannot come back: logged whole (so it can be
/// created again) and the state file copied aside before it is rewritten without it.
fn drop_api_route(state_file: &Path, name: &str, definition: &str, why: &str) {
    let copy = persist::keep_copy(state_file);
    tracing::error!(
        route = %name,
        reason = %why,
        state_file_copy = %copy,
        definition = %definition,
        "a route created through the admin API cannot be restored; it is left out"
    );
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
fn summary(config: &Config, routes: &[RouteState], workers: &[WorkerHandle], admin: SocketAddr) {
    let rt = &config.runtime;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        workers = workers.len(),
        driver = rt.driver.as_str(),
        relay = rt.splice.relay_name(),
        routes = routes.len(),
        "ringway started"
    );
    if rt.splice != SpliceMode::Never
        && let Some(why) = crate::net::pipe_budget::Limits::read()
            .and_then(|l| crate::net::pipe_budget::shortfall(&l, workers.len(), rt.pipe_size))
    {
        tracing::warn!("pipe budget too small for splice: {why}");
    }
    for (id, w) in workers.iter().enumerate() {
        match w.core {
            Some(core) => tracing::info!(worker = id, core, "worker pinned"),
            None => tracing::info!(worker = id, "worker running unpinned"),
        }
    }
    for route in routes {
        for addr in &route.bound {
            let backends: Vec<String> = route.active.iter().map(|b| b.to_string()).collect();
            tracing::info!(
                route = %route.cfg.name,
                origin = route.origin.as_str(),
                listen = %addr,
                backends = %backends.join(","),
                "listening"
            );
        }
    }
    tracing::info!(listen = %admin, "admin API listening");
}
