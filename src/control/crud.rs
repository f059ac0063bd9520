//! Control side: routes and backends changed through the admin API — create, replace and
//! remove a route, attach and detach a backend, set a backend's drain flag.
//!
//! Ownership (README, "Who owns a route"): a route defined in the configuration file changes
//! only through the file; the API refuses to write it (409 `file_owned`), except for what an
//! operator does to traffic at 3 a.m. on any route: switch, rollback and the drain flag.
//! Routes the API creates live in the state file, survive restarts and reloads, and are
//! never touched by a reload.
//!
//! Every change goes through [`Control::install`] (addresses planned all or nothing, one
//! generation) and is answered once every worker has applied it.

use std::net::SocketAddr;

use super::commit::Then;
use super::messages::{Answer, Drain};
use super::routes::RouteState;
use super::switch::AfterGate;
use super::{Control, ControlError, Installed, Reply};
use crate::api::{ChangeAction, ChangeDoc, Origin};
use crate::config::RouteConfig;

impl Control {
    /// The route named `name`, if the API may change it.
    fn writable(&self, name: &str) -> Result<&RouteState, ControlError> {
        let r = self
            .routes
            .iter()
            .find(|r| r.cfg.name == name)
            .ok_or_else(|| ControlError::NoRoute(name.to_string()))?;
        if r.origin == Origin::File {
            return Err(ControlError::FileOwned {
                route: name.to_string(),
                file: self.source.as_ref().map_or_else(
                    || "the embedded default configuration".to_string(),
                    |p| p.display().to_string(),
                ),
            });
        }
        if r.busy {
            return Err(ControlError::Busy(name.to_string()));
        }
        Ok(r)
    }

    /// `PUT /routes/{name}`: create an API route, or replace one (unless `create_only`).
    pub(super) fn on_put_route(&mut self, cfg: RouteConfig, create_only: bool, reply: Reply) {
        let name = cfg.name.clone();
        let exists = self.routes.iter().any(|r| r.cfg.name == name);
        let result = if exists && create_only {
            Err(ControlError::Exists(name))
        } else if exists {
            self.writable(&name)
                .map(drop)
                .and_then(|()| self.replace(cfg))
        } else {
            self.create(cfg)
        };
        self.answer(result, reply);
    }

    fn create(&mut self, cfg: RouteConfig) -> Result<Change, ControlError> {
        let name = cfg.name.clone();
        let id = self.new_route_id();
        let mut next = self.routes.clone();
        next.push(RouteState::new(id, Origin::Api, cfg));
        let done = self.install(next, Vec::new())?;
        self.mark_changed(&name, done.generation);
        tracing::info!(route = %name, generation = done.generation, "route created through the admin API");
        Ok(Change::new(ChangeAction::Created, &name, done))
    }

    fn replace(&mut self, cfg: RouteConfig) -> Result<Change, ControlError> {
        let name = cfg.name.clone();
        let mut next = self.routes.clone();
        let Some(r) = next.iter_mut().find(|r| r.cfg.name == name) else {
            return Err(ControlError::NoRoute(name));
        };
        let mut wanted = cfg;
        if wanted.listen.is_empty() {
            // Without listen, a replacement keeps the route where it is.
            wanted.listen = r.cfg.listen.clone();
        }
        if wanted == r.cfg {
            return Ok(Change::unchanged(
                &name,
                self.generation,
                "the route is already so",
            ));
        }
        let after = wanted.switch.drain;
        let dropped = r.reconfigure(wanted);
        let drains = vec![Drain {
            route_id: r.id,
            route: name.clone(),
            after,
            backends: Some(dropped),
        }];
        let done = self.install(next, drains)?;
        self.mark_changed(&name, done.generation);
        tracing::info!(route = %name, generation = done.generation, "route replaced through the admin API");
        Ok(Change::new(ChangeAction::Replaced, &name, done))
    }

    /// `DELETE /routes/{name}`: its addresses are released (unless another route uses them),
    /// its open sessions drain under its drain rules.
    pub(super) fn on_delete_route(&mut self, name: String, reply: Reply) {
        let result = self.writable(&name).map(|r| (r.id, r.cfg.switch.drain));
        let result = result.and_then(|(id, after)| {
            let next: Vec<RouteState> =
                self.routes.iter().filter(|r| r.id != id).cloned().collect();
            let drains = vec![Drain {
                route_id: id,
                route: name.clone(),
                after,
                backends: None,
            }];
            let done = self.install(next, drains)?;
            tracing::info!(route = %name, generation = done.generation, "route removed through the admin API");
            Ok(Change::new(ChangeAction::Removed, &name, done))
        });
        self.answer(result, reply);
    }

    /// `POST /routes/{name}/backends`: the backend joins the route's backends and its active
    /// set with `weight`, after the route's health gate when `check` is set. Attaching a
    /// backend already there with another weight changes its weight (no gate: it is in).
    pub(super) fn on_attach(
        &mut self,
        route: String,
        addr: SocketAddr,
        check: bool,
        weight: u16,
        reply: Reply,
    ) {
        let r = match self.writable(&route) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if r.cfg.backends.contains(&addr) && r.active.contains(&addr) {
            if r.cfg.weight(&addr) != weight {
                return self.attach_now(&route, addr, weight, reply);
            }
            let doc = Change::unchanged(&route, self.generation, "already attached").doc(self);
            let _ = reply.send(Ok(Answer::Change(doc)));
            return;
        }
        if check {
            tracing::info!(route = %route, backend = %addr, "attach requested: checking the backend");
            self.gate(route, vec![addr], AfterGate::Attach { addr, weight }, reply);
        } else {
            self.attach_now(&route, addr, weight, reply);
        }
    }

    /// Attaches `addr` to `route` with `weight` (its gate, if any, passed).
    pub(super) fn attach_now(&mut self, route: &str, addr: SocketAddr, weight: u16, reply: Reply) {
        let result = self.writable(route).map(drop).and_then(|()| {
            let mut next = self.routes.clone();
            if let Some(r) = next.iter_mut().find(|r| r.cfg.name == route) {
                if !r.cfg.backends.contains(&addr) {
                    r.cfg.backends.push(addr);
                }
                if !r.active.contains(&addr) {
                    r.active.push(addr);
                }
                if weight == crate::config::DEFAULT_WEIGHT {
                    r.cfg.weights.remove(&addr);
                } else {
                    r.cfg.weights.insert(addr, weight);
                }
            }
            let done = self.install(next, Vec::new())?;
            self.mark_changed(route, done.generation);
            tracing::info!(route = %route, backend = %addr, weight, generation = done.generation, "backend attached");
            Ok(Change::new(ChangeAction::Attached, route, done))
        });
        self.answer(result, reply);
    }

    /// `DELETE /routes/{name}/backends/{addr}`: no new sessions go to it; its open sessions
    /// drain under the route's drain rules (closed after `switch.drain`).
    pub(super) fn on_detach(&mut self, route: String, addr: SocketAddr, reply: Reply) {
        let result = self.writable(&route).map(drop).and_then(|()| {
            let mut next = self.routes.clone();
            let Some(r) = next.iter_mut().find(|r| r.cfg.name == route) else {
                return Err(ControlError::NoRoute(route.clone()));
            };
            if !r.cfg.backends.contains(&addr) && !r.active.contains(&addr) {
                return Err(ControlError::NoBackend {
                    route: route.clone(),
                    addr,
                });
            }
            // An address a name resolved to follows the name: detaching it alone would leave
            // the route "switched" away from its names, and DNS changes ignored.
            if !r.cfg.backends.contains(&addr) && r.resolved.iter().any(|(a, _)| *a == addr) {
                return Err(ControlError::FromName {
                    route: route.clone(),
                    addr,
                });
            }
            if r.active.iter().all(|a| *a == addr) {
                return Err(ControlError::LastBackend {
                    route: route.clone(),
                    addr,
                });
            }
            r.cfg.backends.retain(|a| *a != addr);
            r.cfg.weights.remove(&addr);
            r.cfg.backend_limits.remove(&addr);
            r.active.retain(|a| *a != addr);
            if let Some(prev) = &mut r.previous {
                prev.retain(|a| *a != addr);
                if prev.is_empty() {
                    r.previous = None;
                }
            }
            r.drain.remove(&addr);
            r.health.remove(&addr);
            let drains = vec![Drain {
                route_id: r.id,
                route: route.clone(),
                after: r.cfg.switch.drain,
                backends: Some(vec![addr]),
            }];
            let done = self.install(next, drains)?;
            self.mark_changed(&route, done.generation);
            self.rewatch(&route);
            tracing::info!(route = %route, backend = %addr, generation = done.generation, "backend detached; its sessions drain");
            Ok(Change::new(ChangeAction::Detached, &route, done))
        });
        self.answer(result, reply);
    }

    /// `POST /routes/{name}/backends` with `"host:port"`: the name joins the route's names
    /// (or takes the new weight), without a health gate: its addresses join the active set as
    /// they resolve (at once when the name is known already).
    pub(super) fn on_attach_name(
        &mut self,
        route: String,
        name: crate::config::NamedBackend,
        reply: Reply,
    ) {
        if self
            .writable(&route)
            .is_ok_and(|r| r.cfg.names.contains(&name))
        {
            let doc = Change::unchanged(&route, self.generation, "already attached").doc(self);
            let _ = reply.send(Ok(Answer::Change(doc)));
            return;
        }
        let result = self.writable(&route).map(drop).and_then(|()| {
            let mut next = self.routes.clone();
            let Some(r) = next.iter_mut().find(|r| r.cfg.name == route) else {
                return Err(ControlError::NoRoute(route.clone()));
            };
            match r
                .cfg
                .names
                .iter_mut()
                .find(|n| n.host == name.host && n.port == name.port)
            {
                Some(n) => n.weight = name.weight,
                None => r.cfg.names.push(name.clone()),
            }
            // `install` expands the names again: its addresses join, or take the new weight.
            let done = self.install(next, Vec::new())?;
            self.mark_changed(&route, done.generation);
            tracing::info!(route = %route, name = %name, weight = name.weight, generation = done.generation, "backend name attached");
            Ok(Change::new(ChangeAction::Attached, &route, done))
        });
        self.answer(result, reply);
    }

    /// `DELETE /routes/{name}/backends/{host:port}`: the name leaves the route; sessions on
    /// its addresses drain as after a detach.
    pub(super) fn on_detach_name(&mut self, route: String, name: String, reply: Reply) {
        let result = self.writable(&route).map(drop).and_then(|()| {
            let mut next = self.routes.clone();
            let Some(r) = next.iter_mut().find(|r| r.cfg.name == route) else {
                return Err(ControlError::NoRoute(route.clone()));
            };
            let Some(i) = r.cfg.names.iter().position(|n| n.to_string() == name) else {
                return Err(ControlError::NoName {
                    route: route.clone(),
                    name,
                });
            };
            if r.cfg.backends.is_empty() && r.cfg.names.len() == 1 {
                return Err(ControlError::LastName {
                    route: route.clone(),
                    name,
                });
            }
            r.cfg.names.remove(i);
            let done = self.install(next, Vec::new())?;
            self.mark_changed(&route, done.generation);
            self.rewatch(&route);
            tracing::info!(route = %route, name = %name, generation = done.generation, "backend name detached; its sessions drain");
            Ok(Change::new(ChangeAction::Detached, &route, done))
        });
        self.answer(result, reply);
    }

    /// `PATCH /routes/{name}/backends/{addr}` `{"drain": bool}`: allowed on every route.
    pub(super) fn on_drain_flag(
        &mut self,
        route: String,
        addr: SocketAddr,
        drain: bool,
        reply: Reply,
    ) {
        let result = (|| {
            let r = self
                .routes
                .iter_mut()
                .find(|r| r.cfg.name == route)
                .ok_or_else(|| ControlError::NoRoute(route.clone()))?;
            if !r.checked_backends().contains(&addr) {
                return Err(ControlError::NoBackend {
                    route: route.clone(),
                    addr,
                });
            }
            if r.drain.contains(&addr) == drain {
                let why = if drain {
                    "already drained"
                } else {
                    "not drained"
                };
                return Ok(Change::unchanged(&route, self.generation, why));
            }
            if drain
                && r.active.contains(&addr)
                && r.active.iter().all(|a| *a == addr || r.drain.contains(a))
            {
                return Err(ControlError::WouldDrainAll {
                    route: route.clone(),
                    addr,
                });
            }
            if drain {
                r.drain.insert(addr);
            } else {
                r.drain.remove(&addr);
            }
            let generation = self.publish(Vec::new());
            self.mark_changed(&route, generation);
            self.rewatch(&route);
            tracing::info!(route = %route, backend = %addr, drain, generation, "backend drain flag set");
            let action = if drain {
                ChangeAction::Drained
            } else {
                ChangeAction::Undrained
            };
            Ok(Change {
                action,
                route: route.clone(),
                installed: Installed {
                    generation,
                    bound: Vec::new(),
                    released: Vec::new(),
                },
                message: if drain {
                    format!("{addr} gets no new sessions; its open sessions stay")
                } else {
                    format!("{addr} gets new sessions again")
                },
            })
        })();
        self.answer(result, reply);
    }

    /// Records that the generation changed `route`.
    fn mark_changed(&mut self, route: &str, generation: u64) {
        if let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) {
            r.generation = generation;
        }
    }

    /// Answers at once (an error or nothing to wait for), or once every worker applied it.
    fn answer(&mut self, result: Result<Change, ControlError>, reply: Reply) {
        match result {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(c) if c.action == ChangeAction::Unchanged => {
                let _ = reply.send(Ok(Answer::Change(c.doc(self))));
            }
            Ok(c) => {
                let generation = c.installed.generation;
                let doc = c.doc(self);
                self.when_applied(
                    generation,
                    Then::Change {
                        doc,
                        reply: Some(reply),
                    },
                );
            }
        }
    }
}

/// A change made, before its answer is written.
struct Change {
    action: ChangeAction,
    route: String,
    installed: Installed,
    message: String,
}

impl Change {
    fn new(action: ChangeAction, route: &str, installed: Installed) -> Change {
        let message = match action {
            ChangeAction::Created => format!("route {route} created"),
            ChangeAction::Replaced => format!("route {route} replaced"),
            ChangeAction::Removed => {
                format!("route {route} removed; its open sessions drain")
            }
            ChangeAction::Attached => format!("backend attached to route {route}"),
            ChangeAction::Detached => {
                format!("backend detached from route {route}; its open sessions drain")
            }
            _ => String::new(),
        };
        Change {
            action,
            route: route.to_string(),
            installed,
            message,
        }
    }

    fn unchanged(route: &str, generation: u64, why: &str) -> Change {
        Change {
            action: ChangeAction::Unchanged,
            route: route.to_string(),
            installed: Installed {
                generation,
                bound: Vec::new(),
                released: Vec::new(),
            },
            message: format!("nothing to do: {why}"),
        }
    }

    fn doc(self, c: &Control) -> ChangeDoc {
        let r = c.routes.iter().find(|r| r.cfg.name == self.route);
        ChangeDoc {
            action: self.action,
            generation: self.installed.generation,
            listen: r.map(|r| r.bound.clone()).unwrap_or_default(),
            active: r.map(|r| r.active.clone()).unwrap_or_default(),
            bound: self.installed.bound,
            released: self.installed.released,
            message: self.message,
            route: self.route,
        }
    }
}
