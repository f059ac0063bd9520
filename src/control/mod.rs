//! Control side: the control thread. It owns the configuration and the runtime state, binds
//! listeners, starts the workers, sends them route generations, gathers their metrics and
//! answers the admin API. Start-up is "apply the configuration to an empty state"; every
//! later change of the route set (a reload, a route or backend change through the API) goes
//! through one path, [`Control::install`]: plan the addresses (bind only what is new), publish
//! a generation, and answer once every worker has applied it.

mod commit;
mod crud;
mod error;
mod fdlimit;
pub mod messages;
mod names;
mod notify;
mod persist;
mod ports;
mod reload;
mod routes;
mod startup;
mod status;
mod switch;
mod token;
mod upgrade;
mod watch;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use crate::access_log::AccessLog;
use crate::api::ReloadStatusDoc;
use crate::config::Config;
use crate::health::{self, Health};
use crate::metrics::render::{self, ControlMetrics};
use crate::metrics::snapshot::MetricsStore;
use crate::worker::Waker;
use messages::{
    AdminQuery, AdminReply, AdminRequest, Answer, Drain, FromWorker, RouteSpec, ToWorker,
};
use ports::Ports;
use routes::RouteState;

pub use error::ControlError;
pub use persist::{PersistedRoute, ensure_dir, fingerprint};
pub use ports::PortError;
pub use reload::Trigger;
pub use startup::StartError;
pub use token::read_token_file;

/// Where the control thread's answer to an admin request goes.
type Reply = tokio::sync::oneshot::Sender<AdminReply>;

/// How ringway is asked to stop (SIGTERM/SIGINT set it; tests may set it directly).
pub type StopFlag = Arc<AtomicBool>;

/// What the signal handlers set; the control thread looks at them every tick.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGTERM, SIGINT: stop gracefully.
    pub stop: StopFlag,
    /// SIGHUP: reload the configuration file.
    pub reload: Arc<AtomicBool>,
    /// SIGUSR1: reopen the access log files (after logrotate moved them).
    pub reopen: Arc<AtomicBool>,
    /// SIGUSR2: upgrade to the binary at this process's own path (`ringway upgrade`).
    pub upgrade: Arc<AtomicBool>,
}

/// A worker as the control thread sees it.
struct WorkerHandle {
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    core: Option<usize>,
}

/// The control thread's state.
pub struct Control {
    /// The running configuration: `[runtime]`, `[admin]`, `[state]` as started (or as
    /// reloaded, for the keys a reload may change) and the file's routes.
    config: Config,
    source: Option<PathBuf>,
    generation: u64,
    workers: Vec<WorkerHandle>,
    from_workers: Receiver<FromWorker>,
    admin_rx: Receiver<AdminRequest>,
    /// The admin API's bound address, and its unix socket.
    admin_addr: SocketAddr,
    admin_unix: Option<PathBuf>,
    metrics: MetricsStore,
    control_metrics: ControlMetrics,
    started: Instant,
    /// Every route's runtime state: the file's routes in file order, then the API's.
    routes: Vec<RouteState>,
    /// The addresses ringway listens on, and which routes use them.
    ports: Ports,
    /// The last route id given out.
    next_route_id: u64,
    health: Health,
    health_rx: Receiver<health::Event>,
    /// Events from the configuration file's watcher.
    watch_rx: Receiver<()>,
    watch_tx: crossbeam_channel::Sender<()>,
    /// The configuration file's watcher, while `runtime.watch_config` is on.
    watcher: Option<watch::ConfigWatcher>,
    /// When the watcher's last burst of events has been quiet long enough to reload.
    watch_due: Option<Instant>,
    /// The text of the file as last read by a reload (a watcher event that leaves it
    /// unchanged is not a reload).
    last_text: Option<String>,
    last_reload: Option<ReloadStatusDoc>,
    /// The last generation each worker acknowledged.
    applied: Vec<u64>,
    gates: HashMap<u64, switch::PendingGate>,
    commits: Vec<commit::PendingCommit>,
    /// The last switch record id.
    next_id: u64,
    /// The last health gate id.
    next_gate: u64,
    /// Set once shutdown began: changes are refused from then on.
    stopping: bool,
    /// The access log: tags given to the routes, and the writer thread once a route logs.
    access_log: AccessLog,
    /// Backend names: their last good addresses, and the resolver thread once a route
    /// names one.
    names: names::Names,
    /// The admin token in force (handed to a new binary).
    admin_token: String,
    /// Copies of the admin API's sockets, and the switch that stops its accepting (both
    /// for an upgrade).
    admin_copies: Option<crate::upgrade::parent::AdminFds>,
    admin_handle: Option<crate::admin::AdminHandle>,
    /// The path this process was started from (the default new binary of an upgrade).
    exe: Option<PathBuf>,
    /// An upgrade under way (old process).
    upgrade: Option<upgrade::Upgrading>,
    /// A finished upgrade's thread, still sending the last sessions.
    upgrade_thread: Option<crate::upgrade::parent::Handle>,
    /// Set once a new process took over: this one leaves, saving and telling nothing.
    handed_over: bool,
    /// New process: sessions the old process hands over.
    arrivals: Receiver<crate::upgrade::child::Arrived>,
}

/// What [`Control::install`] did.
#[derive(Debug, Clone)]
pub(crate) struct Installed {
    generation: u64,
    bound: Vec<SocketAddr>,
    released: Vec<SocketAddr>,
}

/// Deals the listeners of each address out to `workers` workers: worker i gets the i-th.
fn deal(
    add: Vec<(SocketAddr, Vec<TcpListener>)>,
    workers: usize,
) -> Vec<Vec<(SocketAddr, TcpListener)>> {
    let mut per_worker: Vec<Vec<(SocketAddr, TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (addr, listeners) in add {
        for (slot, l) in per_worker.iter_mut().zip(listeners) {
            slot.push((addr, l));
        }
    }
    per_worker
}

/// The routes as the workers get them, with their access log tags. When the access log
/// writer has just started, each worker's queue to it goes out first (a worker's messages
/// are taken in order, so it has its queue before any route of the generation logs).
fn worker_specs(
    access_log: &mut AccessLog,
    workers: &[WorkerHandle],
    routes: &[RouteState],
) -> Arc<Vec<RouteSpec>> {
    let mut specs: Vec<RouteSpec> = routes.iter().map(RouteState::spec).collect();
    if let Some(queues) = access_log.tag(&mut specs) {
        for (w, q) in workers.iter().zip(queues) {
            w.waker.send(ToWorker::AccessLog(q));
        }
    }
    Arc::new(specs)
}

/// Runs ringway until `signals.stop` is set: binds, starts workers and the admin API, serves,
/// then shuts down gracefully. Errors are start-up failures (exit code 1). Reloads come from
/// `signals.reload` (SIGHUP), the admin API and, when configured, the file watcher.
/// Runs ringway until it is stopped (or, after an upgrade, until its last session ended).
/// `inherited`: what the old process handed over, when this one was started by an upgrade;
/// it is taken at the ready report (left in place when the start fails, to say why).
pub fn run(
    config: Config,
    source: Option<PathBuf>,
    signals: Signals,
    inherited: &mut Option<crate::upgrade::child::Inherited>,
) -> Result<(), StartError> {
    let mut control = startup::start(config, source, inherited)?;
    control.serve(&signals);
    control.shutdown();
    Ok(())
}

impl Control {
    fn serve(&mut self, signals: &Signals) {
        while !signals.stop.load(Ordering::Relaxed) && !self.handed_over {
            let upgrade_events = self
                .upgrade
                .as_ref()
                .map_or_else(crossbeam_channel::never, |u| u.events());
            select! {
                recv(self.from_workers) -> msg => if let Ok(msg) = msg { self.on_worker(msg) },
                recv(upgrade_events) -> ev => if let Ok(ev) = ev { self.on_upgrade_event(ev) },
                recv(self.arrivals) -> a => match a {
                    Ok(a) => self.on_arrived(a),
                    // The old process sent its last session: a closed channel would be
                    // ready at every turn.
                    Err(_) => self.arrivals = crossbeam_channel::never(),
                },
                recv(self.admin_rx) -> req => if let Ok(req) = req { self.on_admin(req) },
                recv(self.health_rx) -> ev => if let Ok(ev) = ev { self.on_health(ev) },
                recv(self.names.rx) -> ev => if let Ok(ev) = ev { self.on_dns(ev) },
                // (an event queued just before the watcher was stopped is not a change)
                recv(self.watch_rx) -> ev => if ev.is_ok() && self.watcher.is_some() {
                    self.watch_due = Some(Instant::now() + watch::QUIET);
                },
                default(Duration::from_millis(100)) => {}
            }
            if signals.reload.swap(false, Ordering::Relaxed) {
                self.reload(Trigger::Signal, None);
            }
            if signals.reopen.swap(false, Ordering::Relaxed) {
                self.access_log.reopen();
            }
            if signals.upgrade.swap(false, Ordering::Relaxed) {
                self.on_upgrade(None, None, true, None);
            }
            if self.watch_due.is_some_and(|t| Instant::now() >= t) {
                self.watch_due = None;
                self.reload(Trigger::Watch, None);
            }
            if !self.commits.is_empty() {
                self.settle();
            }
            if !self.gates.is_empty() {
                self.expire_gates();
            }
            if self.upgrade.is_some() {
                self.expire_upgrade();
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
                let round = s.worker == 0;
                self.metrics.absorb(s);
                if round {
                    self.send_loads();
                }
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
            FromWorker::Moved {
                session,
                client,
                backend,
            } => self.on_moved(session, client, backend),
            FromWorker::HandedOver { moved, left, .. } => self.on_handed_over(moved, left),
        }
    }

    fn on_admin(&mut self, req: AdminRequest) {
        let changes = !matches!(
            req.query,
            AdminQuery::Metrics { .. }
                | AdminQuery::Status
                | AdminQuery::Health
                | AdminQuery::Routes
                | AdminQuery::Route { .. }
                | AdminQuery::Config
        );
        if changes && self.stopping {
            let _ = req.reply.send(Err(ControlError::ShuttingDown));
            return;
        }
        if changes && (self.upgrade.is_some() || self.handed_over) {
            let _ = req.reply.send(Err(ControlError::Upgrading));
            return;
        }
        let reply = req.reply;
        let answer = match req.query {
            AdminQuery::Metrics { json: false } => {
                self.refresh_control_metrics();
                let mut body = render::prometheus(&self.metrics);
                render::prometheus_control(&mut body, &self.control_metrics);
                Ok(Answer::Metrics(body))
            }
            AdminQuery::Metrics { json: true } => {
                self.refresh_control_metrics();
                let mut v = render::json(&self.metrics);
                v["control"] = render::json_control(&self.control_metrics);
                Ok(Answer::MetricsJson(v))
            }
            AdminQuery::Status => Ok(Answer::Status(Box::new(status::status(self)))),
            AdminQuery::Health => Ok(Answer::Health(status::health(self))),
            AdminQuery::Routes => Ok(Answer::Routes(status::route_list(self))),
            AdminQuery::Route { name } => status::route_view(self, &name)
                .map(|d| Answer::Route(Box::new(d)))
                .ok_or(ControlError::NoRoute(name)),
            AdminQuery::Config => Ok(Answer::Config(self.effective_toml())),
            AdminQuery::Switch { route, to } => return self.on_switch(route, to, reply),
            AdminQuery::Rollback { route } => return self.on_rollback(route, reply),
            AdminQuery::PutRoute { cfg, create_only } => {
                return self.on_put_route(*cfg, create_only, reply);
            }
            AdminQuery::DeleteRoute { name } => return self.on_delete_route(name, reply),
            AdminQuery::Attach {
                route,
                addr,
                check,
                weight,
            } => {
                return self.on_attach(route, addr, check, weight, reply);
            }
            AdminQuery::Detach { route, addr } => return self.on_detach(route, addr, reply),
            AdminQuery::AttachName { route, name } => {
                return self.on_attach_name(route, name, reply);
            }
            AdminQuery::DetachName { route, name } => {
                return self.on_detach_name(route, name, reply);
            }
            AdminQuery::Drain { route, addr, drain } => {
                return self.on_drain_flag(route, addr, drain, reply);
            }
            AdminQuery::Reload => return self.reload(Trigger::Api, Some(reply)),
            AdminQuery::Upgrade {
                binary,
                timeout,
                sessions,
            } => {
                return self.on_upgrade(binary, timeout, sessions, Some(reply));
            }
        };
        let _ = reply.send(answer);
    }

    /// `worker` has applied `generation` (`u64::MAX`: it stopped and will acknowledge
    /// nothing more); completes the changes every worker now has.
    fn acknowledged(&mut self, worker: usize, generation: u64) {
        if let Some(a) = self.applied.get_mut(worker) {
            *a = (*a).max(generation);
        }
        let everywhere = self.applied.iter().copied().min().unwrap_or(0);
        self.ports.settled(everywhere);
        self.settle();
    }

    /// Sends every worker the current routes as a new generation (with `drains` to schedule,
    /// no listener change). Returns the generation.
    fn publish(&mut self, drains: Vec<Drain>) -> u64 {
        self.publish_with(Vec::new(), Vec::new(), drains)
    }

    /// Sends each worker the sessions the other workers hold on the backends of its
    /// `least_connections` and `p2c` routes ([`ToWorker::Loads`]): once per round of
    /// snapshots, with more than one worker.
    fn send_loads(&self) {
        if self.workers.len() < 2 {
            return;
        }
        let mut per_worker: Vec<Vec<messages::RouteLoads>> = vec![Vec::new(); self.workers.len()];
        for r in &self.routes {
            if !matches!(
                r.cfg.balance,
                crate::config::Balance::LeastConnections | crate::config::Balance::P2c
            ) {
                continue;
            }
            for (w, loads) in self.metrics.elsewhere(&r.cfg.name).into_iter().enumerate() {
                if let Some(list) = per_worker.get_mut(w) {
                    list.push((r.cfg.name.clone(), loads));
                }
            }
        }
        if per_worker.iter().all(Vec::is_empty) {
            return;
        }
        for (w, routes) in self.workers.iter().zip(per_worker) {
            w.waker.send(ToWorker::Loads { routes });
        }
    }

    /// Sends every worker the current routes as a new generation: its own listener of each
    /// address in `add`, the addresses in `remove` to retire, and `drains`.
    fn publish_with(
        &mut self,
        add: Vec<(SocketAddr, Vec<TcpListener>)>,
        remove: Vec<SocketAddr>,
        drains: Vec<Drain>,
    ) -> u64 {
        self.generation += 1;
        let routes = worker_specs(&mut self.access_log, &self.workers, &self.routes);
        for (w, add) in self.workers.iter().zip(deal(add, self.workers.len())) {
            w.waker.send(ToWorker::Apply {
                generation: self.generation,
                routes: routes.clone(),
                add,
                remove: remove.clone(),
                drains: drains.clone(),
            });
        }
        self.generation
    }

    /// Makes `next` the route set: binds the addresses that are new to ringway (all or
    /// nothing), publishes a generation that hands out their listeners, retires the
    /// addresses no route uses any more and schedules `drains`. On an error nothing changed.
    fn install(
        &mut self,
        mut next: Vec<RouteState>,
        mut drains: Vec<Drain>,
    ) -> Result<Installed, ControlError> {
        // Backend names expand into the addresses known now; new ones follow as they resolve.
        drains.extend(next.iter_mut().filter_map(|r| self.names.expand(r)));
        let wants: Vec<ports::Want> = next.iter().map(RouteState::want).collect();
        let reserved = [(self.admin_addr, "the admin API's address")];
        let plan = self.ports.plan(
            &wants,
            self.workers.len(),
            self.config.admin.listen_range.as_ref(),
            &reserved,
        )?;
        for (r, pairs) in next.iter_mut().zip(&plan.bound) {
            r.place(pairs);
        }
        let mut plan = plan;
        self.ports.keep_copies(&plan.add);
        let add = std::mem::take(&mut plan.add);
        let bound: Vec<SocketAddr> = add.iter().map(|(a, _)| *a).collect();
        let released = plan.release.clone();
        let gone: Vec<String> = self
            .routes
            .iter()
            .filter(|r| !next.iter().any(|n| n.id == r.id))
            .map(|r| r.cfg.name.clone())
            .collect();
        self.routes = next;
        let generation = self.publish_with(add, released.clone(), drains);
        self.ports.commit(&plan, generation);
        for name in gone {
            if !self.routes.iter().any(|r| r.cfg.name == name) {
                // Its switch counters go with it (as its traffic series do).
                self.control_metrics.switches.retain(|(r, _), _| *r != name);
                self.health.send(health::Command::Targets {
                    route: name.clone(),
                    cfg: Default::default(),
                    backends: Vec::new(),
                });
                self.health.send(health::Command::Unwatch { route: name });
            }
        }
        self.names.follow(&self.routes);
        let names: Vec<String> = self.routes.iter().map(|r| r.cfg.name.clone()).collect();
        for name in &names {
            self.send_health_targets(name);
        }
        for addr in &bound {
            tracing::info!(listen = %addr, generation, "listening");
        }
        for addr in &released {
            tracing::info!(listen = %addr, generation, "no longer listening");
        }
        Ok(Installed {
            generation,
            bound,
            released,
        })
    }

    /// A fresh route id.
    fn new_route_id(&mut self) -> u64 {
        self.next_route_id += 1;
        self.next_route_id
    }

    /// Tells the health thread which backends of `route` to check (periodic checks only).
    fn send_health_targets(&self, route: &str) {
        let Some(r) = self.routes.iter().find(|r| r.cfg.name == route) else {
            return;
        };
        self.health.send(health::Command::Targets {
            route: route.to_string(),
            cfg: r.cfg.health.clone(),
            backends: if r.cfg.health.periodic {
                r.checked_backends()
            } else {
                Vec::new()
            },
        });
    }

    fn refresh_control_metrics(&mut self) {
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

    /// The effective configuration: as running, the file's routes and the API's, as TOML
    /// that `ringway check` accepts.
    fn effective_toml(&self) -> String {
        let mut cfg = self.config.clone();
        cfg.routes = self.routes.iter().map(|r| r.cfg.clone()).collect();
        let mut out = format!(
            "# ringway effective configuration (generation {}), from {}.\n# Routes marked \"origin: api\" were created through the admin API and live in the\n# state file; copy them into the configuration file and reload to have the file own them.\n\n",
            self.generation,
            self.source.as_ref().map_or_else(
                || crate::config::EMBEDDED_NAME.to_string(),
                |p| p.display().to_string()
            )
        );
        let text = cfg.to_toml();
        // Mark each API route just above its table.
        let mut api = self
            .routes
            .iter()
            .map(|r| r.origin == crate::api::Origin::Api);
        for line in text.lines() {
            if line == "[[route]]" && api.next() == Some(true) {
                out.push_str("# origin: api\n");
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Graceful stop: workers stop accepting, sessions get `shutdown_grace`, the rest are
    /// closed, metrics are gathered one last time, threads are joined.
    fn shutdown(mut self) {
        self.stopping = true;
        self.end_upgrade();
        // After an upgrade the new process is the service: nothing is said for this one.
        if !self.handed_over {
            notify::stopping();
        }
        self.watcher = None;
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
        // The workers' last lines (sessions closed at the deadline) are queued by now.
        self.access_log.stop();
        tracing::info!(closed_at_deadline = forced_total, "stopped");
    }
}
