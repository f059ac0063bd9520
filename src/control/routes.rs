//! Control side: a route's runtime state — its active backend set (which switches change),
//! the set before the last switch (where a rollback goes), health as the checks last saw it,
//! the switch history and the rollback watch.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::messages::RouteSpec;
use super::ports::Slot;
use crate::api::{HealthWord, Origin};
pub use crate::api::{Reason, SwitchRecord};
use crate::config::RouteConfig;

/// Switch records kept per route for `/status`.
pub const HISTORY: usize = 10;

/// What the health checks last said of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    pub up: bool,
    pub reason: Option<String>,
    pub since: SystemTime,
}

/// After a switch: the new set is watched until `until`.
#[derive(Debug, Clone)]
pub struct Watch {
    pub switch_id: u64,
    pub until: Instant,
    /// The route's sessions that had failed to connect when the switch committed.
    pub failed_at_switch: u64,
}

/// One route at run time.
#[derive(Debug, Clone)]
pub struct RouteState {
    /// Unique for the life of the process (see [`RouteSpec::id`]).
    pub id: u64,
    pub origin: Origin,
    pub cfg: RouteConfig,
    /// The bound listen addresses, one per `cfg.listen` entry (the real port where that asks
    /// for port 0); set when the route's addresses are planned.
    pub bound: Vec<SocketAddr>,
    pub active: Vec<SocketAddr>,
    /// The set before the last change: where a rollback goes.
    pub previous: Option<Vec<SocketAddr>>,
    /// The generation that last changed this route's active set.
    pub generation: u64,
    pub history: VecDeque<SwitchRecord>,
    pub health: HashMap<SocketAddr, BackendHealth>,
    pub watch: Option<Watch>,
    /// A switch or rollback is between its gate and the workers' acknowledgement.
    pub busy: bool,
    /// A rollback that came due while a switch was being checked (why).
    pub pending_rollback: Option<String>,
    /// Backends with the drain flag: no new sessions, open ones stay.
    pub drain: BTreeSet<SocketAddr>,
    /// The addresses `cfg.names` expand to now (beside `cfg.backends`), each with its
    /// name's weight; empty for a route of IP literals (see `control::names`).
    pub resolved: Vec<(SocketAddr, u16)>,
}

impl RouteState {
    /// A route as configured: its `backends` are the initial active set.
    pub fn new(id: u64, origin: Origin, cfg: RouteConfig) -> Self {
        RouteState {
            id,
            origin,
            active: cfg.backends.clone(),
            bound: cfg.listen.clone(),
            cfg,
            previous: None,
            generation: 1,
            history: VecDeque::new(),
            health: HashMap::new(),
            watch: None,
            busy: false,
            pending_rollback: None,
            drain: BTreeSet::new(),
            resolved: Vec::new(),
        }
    }

    /// The configured set: `cfg.backends`, then the addresses its names resolve to now.
    pub fn configured(&self) -> Vec<SocketAddr> {
        let mut all = self.cfg.backends.clone();
        for (a, _) in &self.resolved {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        all
    }

    /// The weight of `addr` in this route: configured for it, or its name's.
    pub fn weight(&self, addr: &SocketAddr) -> u16 {
        match self.cfg.weights.get(addr) {
            Some(w) => *w,
            None => self
                .resolved
                .iter()
                .find(|(a, _)| a == addr)
                .map_or(crate::config::DEFAULT_WEIGHT, |(_, w)| *w),
        }
    }

    /// Takes the addresses the route's names now resolve to. A route whose active set is the
    /// configured set follows it; one that a switch moved elsewhere stays where it is (until
    /// a switch or rollback brings it back). Returns the addresses no longer active.
    pub fn set_resolved(&mut self, resolved: Vec<(SocketAddr, u16)>) -> Vec<SocketAddr> {
        if resolved == self.resolved {
            return Vec::new();
        }
        let before = self.configured();
        let following =
            self.active.len() == before.len() && self.active.iter().all(|a| before.contains(a));
        self.resolved = resolved;
        if !following {
            return Vec::new();
        }
        let now = self.configured();
        let gone: Vec<SocketAddr> = self
            .active
            .iter()
            .filter(|a| !now.contains(a))
            .copied()
            .collect();
        self.active = now;
        let keep = self.checked_backends();
        self.drain.retain(|a| keep.contains(a));
        self.health.retain(|a, _| keep.contains(a));
        gone
    }

    /// What this route asks of the listen addresses ([`super::ports::Ports::plan`]).
    pub fn want(&self) -> super::ports::Want {
        super::ports::Want {
            route: self.cfg.name.clone(),
            slots: self.slots(),
            sharing: self.cfg.sharing.clone(),
        }
    }

    /// What this route asks to listen on (see [`Slot`]).
    pub fn slots(&self) -> Vec<Slot> {
        if self.cfg.listen.is_empty() {
            return vec![Slot::Auto];
        }
        self.cfg
            .listen
            .iter()
            .enumerate()
            .map(|(i, c)| match self.bound.get(i) {
                Some(b) if c.port() == 0 && b.port() != 0 => Slot::Keep {
                    configured: *c,
                    bound: *b,
                },
                _ => Slot::Addr(*c),
            })
            .collect()
    }

    /// Records where the route listens, as planned: `(configured, bound)` per address. A
    /// route created without `listen` keeps the address it was given from then on.
    pub fn place(&mut self, pairs: &[(SocketAddr, SocketAddr)]) {
        if self.cfg.listen.is_empty() {
            self.cfg.listen = pairs.iter().map(|(_, b)| *b).collect();
        }
        self.bound = pairs.iter().map(|(_, b)| *b).collect();
    }

    /// Takes a new definition (a reload's changed route, a replacing `PUT`). Port-0
    /// addresses it still names keep their bound ports. Where `backends` changed, the new
    /// list becomes the active set (and there is nothing to roll back to); otherwise the
    /// active set stays as switches left it. Returns the backends that are no longer active
    /// (their sessions drain).
    pub fn reconfigure(&mut self, cfg: RouteConfig) -> Vec<SocketAddr> {
        let old = std::mem::replace(&mut self.cfg, cfg);
        let mut old_slots: Vec<Option<(SocketAddr, SocketAddr)>> = old
            .listen
            .iter()
            .zip(&self.bound)
            .map(|(c, b)| Some((*c, *b)))
            .collect();
        if self.cfg.listen.is_empty() {
            // A replacing PUT without listen keeps the route where it is.
            self.cfg.listen = old.listen.clone();
        }
        self.bound = self
            .cfg
            .listen
            .iter()
            .map(|c| {
                old_slots
                    .iter_mut()
                    .find(|s| s.is_some_and(|(oc, _)| oc == *c))
                    .and_then(Option::take)
                    .map_or(*c, |(_, b)| b)
            })
            .collect();
        let before = self.active.clone();
        if old.backends != self.cfg.backends || old.names != self.cfg.names {
            // The new names' addresses join as `control::names` expands them.
            self.resolved.clear();
            self.active = self.cfg.backends.clone();
            self.previous = None;
            self.watch = None;
        }
        let keep = self.checked_backends();
        self.drain.retain(|a| keep.contains(a));
        self.health.retain(|a, _| keep.contains(a));
        before
            .into_iter()
            .filter(|a| !self.active.contains(a))
            .collect()
    }

    pub fn last(&self) -> Option<&SwitchRecord> {
        self.history.back()
    }

    pub fn remember(&mut self, record: SwitchRecord) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }

    /// Every backend the health checks cover: configured, active, and the rollback target.
    pub fn checked_backends(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        let prev = self.previous.iter().flatten();
        let named = self.resolved.iter().map(|(a, _)| a);
        for a in self
            .active
            .iter()
            .chain(&self.cfg.backends)
            .chain(named)
            .chain(prev)
        {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        all
    }

    /// True unless the checks found it down (unchecked counts as up).
    pub fn is_up(&self, addr: &SocketAddr) -> bool {
        self.health.get(addr).is_none_or(|h| h.up)
    }

    /// The health word for `/status` and the CLI.
    pub fn health_word(&self, addr: &SocketAddr) -> HealthWord {
        match self.health.get(addr) {
            Some(h) if h.up => HealthWord::Up,
            Some(_) => HealthWord::Down,
            None if self.cfg.health.periodic => HealthWord::Checking,
            None => HealthWord::Unchecked,
        }
    }

    /// True when at least one active backend is not down.
    pub fn healthy(&self) -> bool {
        self.active.iter().any(|a| self.is_up(a))
    }

    /// What the workers get for this route.
    pub fn spec(&self) -> RouteSpec {
        let mut cfg = self.cfg.clone();
        // The workers weigh a named backend's addresses by its weight.
        for (a, w) in &self.resolved {
            if *w != crate::config::DEFAULT_WEIGHT {
                cfg.weights.entry(*a).or_insert(*w);
            }
        }
        RouteSpec {
            id: self.id,
            cfg,
            listen: self.bound.clone(),
            drain: self
                .active
                .iter()
                .filter(|a| self.drain.contains(a))
                .copied()
                .collect(),
            active: self.active.clone(),
            down: self
                .active
                .iter()
                .filter(|a| !self.is_up(a))
                .copied()
                .collect(),
            // Given by `AccessLog::tag` when published.
            log: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A route on its configured set follows its names' answers (the addresses that left
    /// are returned to drain); one a switch moved elsewhere stays there.
    #[test]
    fn resolved_addresses_join_and_leave_the_configured_set() {
        let cfg = RouteConfig::with_defaults(
            "web".into(),
            vec![addr("127.0.0.1:3000")],
            vec![addr("127.0.0.1:8080")],
        );
        let mut r = RouteState::new(1, Origin::File, cfg);
        let (x, y) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"));
        assert!(r.set_resolved(vec![(x, 2)]).is_empty());
        assert_eq!(r.active, vec![addr("127.0.0.1:8080"), x]);
        assert_eq!(r.weight(&x), 2);
        assert_eq!(r.spec().cfg.weight(&x), 2);
        // The same addresses again: nothing to do; a new answer: x drains, y joins.
        assert!(r.set_resolved(vec![(x, 2)]).is_empty());
        assert_eq!(r.set_resolved(vec![(y, 1)]), vec![x]);
        assert_eq!(r.active, vec![addr("127.0.0.1:8080"), y]);
        assert_eq!(r.weight(&x), 1);
        // A weight change alone keeps the set and changes the weight.
        assert!(r.set_resolved(vec![(y, 3)]).is_empty());
        assert_eq!(r.spec().cfg.weight(&y), 3);

        // Switched elsewhere: the answer is recorded (health checks cover it), the set stays.
        r.active = vec![addr("127.0.0.1:9090")];
        assert!(r.set_resolved(vec![(x, 1)]).is_empty());
        assert_eq!(r.active, vec![addr("127.0.0.1:9090")]);
        assert!(r.checked_backends().contains(&x));
    }
}
