//! Control side: re-reading the configuration file (`SIGHUP`, `POST /reload`, `ringway
//! reload`, the file watcher).
//!
//! All or nothing: the file is read defensively (`config::read_config_file`) and validated
//! whole; the difference to the running routes is computed per route; addresses are planned
//! (only new ones bound); then one generation carries every change. Any error — in the file,
//! or an address held by another process — leaves everything exactly as it was, and shows in
//! the log, in `/status` (`last_reload`) and in `ringway_reloads_total{result="failed"}`.
//!
//! Per route: an unchanged file route is not touched (its sessions never notice); a changed
//! one takes its new definition (sessions keep their backend; backends it dropped drain); a
//! removed one drains; a route the API had created that the file now defines is adopted by
//! the file. API routes are left alone. Keys outside the routes that only a restart can
//! change are listed in `restart_required`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::commit::Then;
use super::messages::{Answer, Drain};
use super::routes::RouteState;
use super::{Control, ControlError, Reply, notify};
use crate::api::{Origin, ReloadDoc, ReloadStatusDoc, now_rfc3339};
use crate::config::{Config, RouteConfig, read_config_file};

/// When a watcher's reload found a route it changes being switched: retry after this.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Api,
    Signal,
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Signal => "signal",
            Trigger::Watch => "watch",
        }
    }
}

impl Control {
    /// Reloads the configuration file; answers `reply` (when an API call asked) once every
    /// worker has the result, or at once on an error or when nothing changed.
    pub(super) fn reload(&mut self, trigger: Trigger, reply: Option<Reply>) {
        if self.stopping {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::ShuttingDown));
            }
            return;
        }
        // An upgrade hands over the sockets it has: none may change meanwhile (the new
        // process reads the file itself).
        if self.upgrade.is_some() || self.handed_over {
            tracing::warn!(
                trigger = trigger.as_str(),
                "reload refused: an upgrade is under way"
            );
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::Upgrading));
            }
            return;
        }
        let Some(path) = self.source.clone() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::NoConfigFile));
            }
            return;
        };
        let file = path.display().to_string();
        let text = match read_config_file(&path) {
            Ok(t) => t,
            Err(e) => return self.reload_failed(trigger, ControlError::InvalidConfig(e), reply),
        };
        if trigger == Trigger::Watch && self.last_text.as_deref() == Some(text.as_str()) {
            // An editor's swap file, a touch: the file says what it said.
            return;
        }
        notify::reloading();
        tracing::info!(file = %file, trigger = trigger.as_str(), "reloading the configuration");
        let new = match Config::parse(&text, &file) {
            Ok(c) => c,
            Err(e) => {
                // The file's own fault: the watcher waits for the next change of it.
                self.last_text = Some(text);
                return self.reload_failed(trigger, ControlError::InvalidConfig(e), reply);
            }
        };
        let (next, drains, mut doc) = match self.diff(&new) {
            Ok(x) => x,
            Err(e) => {
                if trigger == Trigger::Watch {
                    // A switch of a route it changes is in flight: try again shortly.
                    self.watch_due = Some(std::time::Instant::now() + BUSY_RETRY);
                }
                return self.reload_failed(trigger, e, reply);
            }
        };
        doc.file = file;
        doc.restart_required = restart_required(&self.config, &new);
        // Keys a reload may change live.
        let mut running = self.config.clone();
        running.runtime.shutdown_grace = new.runtime.shutdown_grace;
        running.runtime.watch_config = new.runtime.watch_config;
        running.admin.listen_range = new.admin.listen_range;
        running.routes = new.routes.clone();
        let before = std::mem::replace(&mut self.config, running);
        if doc.is_noop() {
            self.last_text = Some(text);
            self.reload_done(trigger, None, &doc);
            notify::ready();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(Answer::Reload(doc)));
            }
            return;
        }
        let done = match self.install(next, drains) {
            Ok(done) => done,
            Err(e) => {
                self.config = before;
                // The same text may succeed once the address is free: a later event of the
                // watcher reads it again (last_text is not updated).
                return self.reload_failed(trigger, e, reply);
            }
        };
        self.last_text = Some(text);
        for name in doc.changed.iter().chain(&doc.added).chain(&doc.adopted) {
            if let Some(r) = self.routes.iter_mut().find(|r| &r.cfg.name == name) {
                r.generation = done.generation;
            }
        }
        doc.generation = Some(done.generation);
        doc.bound = done.bound;
        doc.released = done.released;
        self.reload_done(trigger, Some(done.generation), &doc);
        self.when_applied(
            done.generation,
            Then::Reload {
                doc,
                reply,
                trigger,
            },
        );
    }

    /// The next route set for configuration `new`, the drains it needs, and the per-route
    /// account of it. Refused while a route it would change is being switched.
    fn diff(
        &mut self,
        new: &Config,
    ) -> Result<(Vec<RouteState>, Vec<Drain>, ReloadDoc), ControlError> {
        let mut doc = ReloadDoc {
            file: String::new(),
            generation: None,
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            unchanged: Vec::new(),
            adopted: Vec::new(),
            api_routes: Vec::new(),
            bound: Vec::new(),
            released: Vec::new(),
            restart_required: Vec::new(),
        };
        let mut next: Vec<RouteState> = Vec::new();
        let mut drains = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        for cfg in &new.routes {
            match self.routes.iter().find(|r| r.cfg.name == cfg.name) {
                Some(r) if r.origin == Origin::File && r.cfg == *cfg => {
                    doc.unchanged.push(cfg.name.clone());
                    next.push(r.clone());
                }
                Some(r) => {
                    let mut r = r.clone();
                    if r.origin == Origin::Api {
                        doc.adopted.push(cfg.name.clone());
                        r.origin = Origin::File;
                    } else {
                        doc.changed.push(cfg.name.clone());
                    }
                    touched.push(cfg.name.clone());
                    let dropped = r.reconfigure(cfg.clone());
                    drains.push(drain(&r, &r.cfg, Some(dropped)));
                    next.push(r);
                }
                None => {
                    doc.added.push(cfg.name.clone());
                    let id = self.new_route_id();
                    next.push(RouteState::new(id, Origin::File, cfg.clone()));
                }
            }
        }
        let names: BTreeSet<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
        for r in &self.routes {
            if names.contains(r.cfg.name.as_str()) {
                continue;
            }
            match r.origin {
                Origin::Api => {
                    doc.api_routes.push(r.cfg.name.clone());
                    next.push(r.clone());
                }
                Origin::File => {
                    doc.removed.push(r.cfg.name.clone());
                    touched.push(r.cfg.name.clone());
                    drains.push(drain(r, &r.cfg, None));
                }
            }
        }
        if let Some(r) = self
            .routes
            .iter()
            .find(|r| r.busy && touched.contains(&r.cfg.name))
        {
            return Err(ControlError::Busy(r.cfg.name.clone()));
        }
        Ok((next, drains, doc))
    }

    fn reload_failed(&mut self, trigger: Trigger, e: ControlError, reply: Option<Reply>) {
        let file = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tracing::error!(file = %file, trigger = trigger.as_str(), error = %e, "reload failed; the running configuration stays in force");
        self.count_reload("failed");
        self.last_reload = Some(ReloadStatusDoc {
            at: now_rfc3339(),
            result: "failed".into(),
            trigger: trigger.as_str().into(),
            error: Some(e.to_string()),
            generation: None,
        });
        notify::ready();
        if let Some(reply) = reply {
            let _ = reply.send(Err(e));
        }
    }

    fn reload_done(&mut self, trigger: Trigger, generation: Option<u64>, doc: &ReloadDoc) {
        self.count_reload("ok");
        self.last_reload = Some(ReloadStatusDoc {
            at: now_rfc3339(),
            result: "ok".into(),
            trigger: trigger.as_str().into(),
            error: None,
            generation,
        });
        tracing::info!(
            added = %doc.added.join(","),
            changed = %doc.changed.join(","),
            removed = %doc.removed.join(","),
            adopted = %doc.adopted.join(","),
            unchanged = doc.unchanged.len(),
            api_routes = doc.api_routes.len(),
            restart_required = %doc.restart_required.join(","),
            "configuration reloaded"
        );
        for key in &doc.restart_required {
            tracing::warn!(key = %key, "changed in the file; takes effect at the next start");
        }
        self.sync_watcher();
    }

    fn count_reload(&mut self, result: &'static str) {
        *self.control_metrics.reloads.entry(result).or_insert(0) += 1;
    }
}

/// A drain for route `r` (as it was), under `cfg`'s drain rules: `backends` (`None`: all).
fn drain(r: &RouteState, cfg: &RouteConfig, backends: Option<Vec<std::net::SocketAddr>>) -> Drain {
    Drain {
        route_id: r.id,
        route: r.cfg.name.clone(),
        after: cfg.switch.drain,
        backends,
    }
}

/// The keys outside the routes that differ and that only a restart applies.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (&old.runtime, &new.runtime);
    let (x, y) = (&old.admin, &new.admin);
    let checks = [
        ("runtime.workers", a.workers != b.workers),
        ("runtime.pin", a.pin != b.pin),
        ("runtime.splice", a.splice != b.splice),
        ("runtime.driver", a.driver != b.driver),
        ("runtime.buffer_size", a.buffer_size != b.buffer_size),
        ("runtime.pipe_size", a.pipe_size != b.pipe_size),
        ("runtime.busy_poll", a.busy_poll != b.busy_poll),
        (
            "runtime.access_log_queue",
            a.access_log_queue != b.access_log_queue,
        ),
        (
            "runtime.max_connections",
            a.max_connections != b.max_connections,
        ),
        ("runtime.dns_resolver", a.dns.resolver != b.dns.resolver),
        ("runtime.dns_min_ttl", a.dns.min_ttl != b.dns.min_ttl),
        ("runtime.dns_max_ttl", a.dns.max_ttl != b.dns.max_ttl),
        ("admin.listen", x.listen != y.listen),
        ("admin.token", x.token != y.token),
        ("admin.allow", x.allow != y.allow),
        ("admin.rate_limit", x.rate_limit != y.rate_limit),
        ("admin.unix", x.unix != y.unix),
        ("state.file", old.state != new.state),
    ];
    checks
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(k, _)| (*k).to_string())
        .collect()
}
