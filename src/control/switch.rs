//! Control side: the switch state machine.
//!
//! ```text
//! POST switch ──▶ gate (health thread: `rise` passes before `fall` failures per target)
//!                   │ fails: 409 with the reason, nothing published
//!                   ▼ passes
//!                commit: new generation to every worker (+ drain deadline for the old set)
//!                   ▼ every worker acknowledged
//!                record kept, state file written, 200 with the record,
//!                rollback watch for `rollback_window` (checks + in-band connect failures)
//!                   ▼ `rollback_fail_threshold` failed checks, or a burst of connect failures
//!                commit back to the previous set (reason "rollback")
//! ```
//! A route has at most one gated change in flight (`busy`); a second one gets 409. The same
//! gate also precedes attaching a backend (`crud.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::commit::Then;
use super::messages::{Answer, Drain};
use super::persist::{self, join};
use super::routes::{BackendHealth, Reason, SwitchRecord, Watch};
use super::{Control, ControlError, Reply};
use crate::api::SwitchDoc;
use crate::health::Command;
use crate::metrics::local::Outcome;

/// A change whose health gate is running.
pub(super) struct PendingGate {
    route: String,
    then: AfterGate,
    reply: Reply,
    /// Past this the gate counts as failed even if the health thread never answers.
    deadline: Instant,
}

/// What a gate that passes lets happen.
pub(super) enum AfterGate {
    /// Switch the active set to `to`.
    Switch { to: Vec<SocketAddr> },
    /// Attach `addr` to the route.
    Attach { addr: SocketAddr, weight: u16 },
}

impl Control {
    pub(super) fn on_switch(&mut self, route: String, to: Vec<SocketAddr>, reply: Reply) {
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            let _ = reply.send(Err(ControlError::NoRoute(route)));
            return;
        };
        if r.busy {
            let _ = reply.send(Err(ControlError::Busy(route)));
            return;
        }
        if r.active == to {
            let _ = reply.send(Ok(Answer::Switch(SwitchDoc {
                switched: false,
                message: Some(format!(
                    "{} is already the active set of route {route}",
                    join(&to)
                )),
                active: Some(to),
                record: None,
            })));
            return;
        }
        tracing::info!(route = %route, to = %join(&to), "switch requested: checking the new backends");
        self.gate(route, to.clone(), AfterGate::Switch { to }, reply);
    }

    /// Runs the route's health gate on `targets`; when it passes, does `then`.
    pub(super) fn gate(
        &mut self,
        route: String,
        targets: Vec<SocketAddr>,
        then: AfterGate,
        reply: Reply,
    ) {
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            let _ = reply.send(Err(ControlError::NoRoute(route)));
            return;
        };
        r.busy = true;
        let cfg = r.cfg.health.clone();
        // The gate's own worst case (every probe timing out) plus a margin.
        let worst = cfg.timeout * (cfg.rise + cfg.fall) + Duration::from_secs(5);
        self.next_gate += 1;
        let id = self.next_gate;
        self.health.send(Command::Gate { id, cfg, targets });
        self.gates.insert(
            id,
            PendingGate {
                route,
                then,
                reply,
                deadline: Instant::now() + worst,
            },
        );
    }

    /// Fails the gates the health thread has not answered in time (it never should).
    pub(super) fn expire_gates(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .gates
            .iter()
            .filter(|(_, g)| now > g.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.on_gate(id, Err("the health checks did not answer in time".into()));
        }
    }

    pub(super) fn on_gate(&mut self, id: u64, result: Result<(), String>) {
        let Some(g) = self.gates.remove(&id) else {
            return;
        };
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == g.route) else {
            let _ = g.reply.send(Err(ControlError::NoRoute(g.route)));
            return;
        };
        let pending = r.pending_rollback.take();
        match (result, g.then) {
            (Err(why), then) => {
                r.busy = false;
                let what = match then {
                    AfterGate::Switch { to } => {
                        self.count(&g.route, "rejected");
                        format!("switch to {}", join(&to))
                    }
                    AfterGate::Attach { addr, .. } => format!("attaching {addr}"),
                };
                tracing::info!(route = %g.route, change = %what, reason = %why, "change refused: the health gate failed");
                let _ = g.reply.send(Err(ControlError::GateFailed(why)));
                // The current set failed its rollback watch while the gate ran: act on it now.
                if let Some(why) = pending {
                    self.auto_rollback(&g.route, why);
                }
            }
            (Ok(()), AfterGate::Switch { to }) => {
                if let Some(why) = pending {
                    tracing::warn!(route = %g.route, reason = %why, "the current set failed its rollback watch during a switch; the switch moves the route away from it instead");
                }
                self.commit(&g.route, to, Reason::Switch, None, Some(g.reply))
            }
            (Ok(()), AfterGate::Attach { addr, weight }) => {
                r.busy = false;
                r.pending_rollback = pending;
                self.attach_now(&g.route, addr, weight, g.reply);
                // A rollback due meanwhile acts on the set as it is now.
                let due = self
                    .routes
                    .iter_mut()
                    .find(|r| r.cfg.name == g.route)
                    .and_then(|r| r.pending_rollback.take());
                if let Some(why) = due {
                    self.auto_rollback(&g.route, why);
                }
            }
        }
    }

    pub(super) fn on_rollback(&mut self, route: String, reply: Reply) {
        let Some(r) = self.routes.iter().find(|r| r.cfg.name == route) else {
            let _ = reply.send(Err(ControlError::NoRoute(route)));
            return;
        };
        if r.busy {
            let _ = reply.send(Err(ControlError::Busy(route)));
            return;
        }
        let Some(prev) = r.previous.clone() else {
            let _ = reply.send(Err(ControlError::NothingToRollBack(route)));
            return;
        };
        self.commit(&route, prev, Reason::ManualRollback, None, Some(reply));
    }

    /// Changes the active set, publishes the generation (with a drain deadline for the old
    /// set) and waits for the workers' acknowledgements ([`Control::settle`]).
    fn commit(
        &mut self,
        route: &str,
        to: Vec<SocketAddr>,
        reason: Reason,
        detail: Option<String>,
        reply: Option<Reply>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            return;
        };
        if to.is_empty() {
            // Never reached (the API and the state file refuse empty sets); never publish one.
            r.busy = false;
            if let Some(reply) = reply {
                let _ = reply.send(Err(ControlError::EmptySet));
            }
            return;
        }
        r.busy = true;
        r.watch = None;
        let from = std::mem::replace(&mut r.active, to.clone());
        r.previous = Some(from.clone());
        let drain = r.cfg.switch.drain;
        let route_id = r.id;
        let mut record = SwitchRecord::now(id, route, from, to, reason, detail);
        self.health.send(Command::Unwatch {
            route: route.to_string(),
        });
        let removed: Vec<SocketAddr> = record
            .from
            .iter()
            .filter(|a| !record.to.contains(a))
            .copied()
            .collect();
        let generation = self.publish(vec![Drain {
            route_id,
            route: route.to_string(),
            after: drain,
            backends: Some(removed),
        }]);
        record.generation = generation;
        if let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) {
            r.generation = generation;
        }
        self.send_health_targets(route);
        self.when_applied(generation, Then::Switch { record, reply });
    }

    pub(super) fn finish_switch(
        &mut self,
        record: SwitchRecord,
        reply: Option<Reply>,
        complete: bool,
    ) {
        let route = record.route.clone();
        let failed_now = self.connect_failed_sessions(&route);
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            return;
        };
        r.busy = false;
        // A rollback that was due for the set this change replaced is moot now.
        r.pending_rollback = None;
        r.remember(record.clone());
        let sw = r.cfg.switch.clone();
        let health = r.cfg.health.clone();
        if record.reason == Reason::Switch && !sw.rollback_window.is_zero() {
            r.watch = Some(Watch {
                switch_id: record.id,
                until: Instant::now() + sw.rollback_window,
                failed_at_switch: failed_now,
            });
            self.health.send(Command::Watch {
                route: route.clone(),
                switch_id: record.id,
                cfg: health,
                every: sw.rollback_check,
                window: sw.rollback_window,
                threshold: sw.rollback_fail_threshold,
                targets: record.to.clone(),
            });
        }
        let result = match record.reason {
            Reason::Switch => "switched",
            Reason::Rollback | Reason::ManualRollback => "rolled_back",
        };
        self.count(&route, result);
        self.persist();
        tracing::info!(
            route = %route,
            id = record.id,
            reason = record.reason.as_str(),
            from = %join(&record.from),
            to = %join(&record.to),
            generation = record.generation,
            detail = record.detail.as_deref().unwrap_or(""),
            "active set changed"
        );
        let Some(reply) = reply else { return };
        let answer = if complete {
            Ok(Answer::Switch(SwitchDoc {
                switched: true,
                message: None,
                active: None,
                record: Some(record),
            }))
        } else {
            Err(ControlError::NotAcknowledged {
                generation: record.generation,
                seconds: super::commit::ACK_TIMEOUT.as_secs(),
            })
        };
        let _ = reply.send(answer);
    }

    /// Points a running rollback watch of `route` at its active backends that are not
    /// drained, for what is left of its window: a backend detached or drained after the
    /// switch is going away on purpose, and its failing checks must not roll the route back.
    /// With none left to watch, the watch ends.
    pub(super) fn rewatch(&mut self, route: &str) {
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            return;
        };
        let Some(w) = r.watch.as_ref() else { return };
        let left = w.until.saturating_duration_since(Instant::now());
        let targets: Vec<SocketAddr> = r
            .active
            .iter()
            .filter(|a| !r.drain.contains(a))
            .copied()
            .collect();
        if targets.is_empty() || left.is_zero() {
            r.watch = None;
            self.health.send(Command::Unwatch {
                route: route.to_string(),
            });
            return;
        }
        let sw = &r.cfg.switch;
        self.health.send(Command::Watch {
            route: route.to_string(),
            switch_id: w.switch_id,
            cfg: r.cfg.health.clone(),
            every: sw.rollback_check,
            window: left,
            threshold: sw.rollback_fail_threshold,
            targets,
        });
    }

    /// The rollback watch saw its threshold of failed checks.
    pub(super) fn on_watch_failed(&mut self, route: &str, switch_id: u64, reason: String) {
        let current = self
            .routes
            .iter()
            .find(|r| r.cfg.name == route)
            .and_then(|r| r.watch.as_ref())
            .is_some_and(|w| w.switch_id == switch_id);
        if current {
            self.auto_rollback(route, reason);
        }
    }

    /// In-band signal: after a snapshot, sessions of a watched route that failed to connect
    /// (every attempt to the new set failed: what clients saw) since the switch.
    pub(super) fn check_connect_failures(&mut self) {
        let now = Instant::now();
        let mut trip = Vec::new();
        for r in &mut self.routes {
            if r.watch.as_ref().is_some_and(|w| now >= w.until) {
                r.watch = None;
            }
        }
        let watched: Vec<(String, u64, u32)> = self
            .routes
            .iter()
            .filter_map(|r| {
                let w = r.watch.as_ref()?;
                let limit = r.cfg.switch.rollback_connect_errors;
                (limit > 0).then(|| (r.cfg.name.clone(), w.failed_at_switch, limit))
            })
            .collect();
        for (name, base, limit) in watched {
            let seen = self.connect_failed_sessions(&name).saturating_sub(base);
            if seen >= u64::from(limit) {
                trip.push((name, seen));
            }
        }
        for (name, seen) in trip {
            self.auto_rollback(
                &name,
                format!("{seen} sessions could not connect to the new set"),
            );
        }
    }

    fn auto_rollback(&mut self, route: &str, why: String) {
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            return;
        };
        let Some(prev) = r.previous.clone() else {
            return;
        };
        if r.busy {
            // A switch is being checked: decided when its gate answers (`on_gate`).
            if r.pending_rollback.is_none() {
                tracing::warn!(route = %route, reason = %why, "rollback due, but a switch is being checked; deciding when it is");
            }
            r.pending_rollback = Some(why);
            return;
        }
        r.watch = None;
        if !prev.iter().any(|a| r.is_up(a)) {
            // Rolling back onto a set the checks found down would only move the outage.
            tracing::warn!(route = %route, to = %join(&prev), reason = %why, "not rolling back: every backend of the previous set is down");
            self.count(route, "rollback_skipped");
            return;
        }
        tracing::warn!(route = %route, to = %join(&prev), reason = %why, "rolling back");
        self.commit(route, prev, Reason::Rollback, Some(why), None);
    }

    /// A periodic check changed a backend's health.
    pub(super) fn on_health_changed(
        &mut self,
        route: &str,
        backend: SocketAddr,
        up: bool,
        reason: Option<String>,
    ) {
        let Some(r) = self.routes.iter_mut().find(|r| r.cfg.name == route) else {
            return;
        };
        let was_up = r.is_up(&backend);
        r.health.insert(
            backend,
            BackendHealth {
                up,
                reason: reason.clone(),
                since: std::time::SystemTime::now(),
            },
        );
        if up {
            tracing::info!(route = %route, backend = %backend, "backend is up");
        } else {
            tracing::warn!(route = %route, backend = %backend, reason = reason.as_deref().unwrap_or(""), "backend is down");
        }
        if was_up != up && r.active.contains(&backend) {
            self.publish(Vec::new());
        }
    }

    /// Sessions of `route` that ended because no backend could be connected, in total.
    fn connect_failed_sessions(&self, route: &str) -> u64 {
        self.metrics.route_counters(route).ended[Outcome::ConnectFailed as usize]
    }

    fn count(&mut self, route: &str, result: &'static str) {
        *self
            .control_metrics
            .switches
            .entry((route.to_string(), result))
            .or_insert(0) += 1;
    }

    /// Writes the state file; a failure is logged, never fatal (traffic already moved).
    pub(super) fn persist(&self) {
        // After an upgrade the state file is the new process's.
        if self.handed_over {
            return;
        }
        if let Err(e) = persist::save(&self.config.state.file, &self.routes) {
            tracing::error!(file = %self.config.state.file.display(), error = %e, "cannot write the state file; this change will not survive a restart");
        }
    }
}
