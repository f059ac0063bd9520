//! Control side: the listen addresses ringway holds, and the routes on each.
//!
//! Every change of the route set (start-up, a reload, an API call) goes through one
//! [`Ports::plan`]: from what each route wants to listen on, it works out which addresses
//! are new to ringway (bound now, one SO_REUSEPORT socket per worker), which it already
//! holds (reused, never bound twice), and which no route uses any more (released once the
//! change is applied). A plan is all or nothing: conflicts inside ringway are found before
//! anything is bound; every new address is bound before any of them listens; on any error
//! the sockets bound so far are dropped without ever having listened, so a failed change
//! leaves no socket behind and never touched a live port.
//!
//! For a binary upgrade (`crate::upgrade`) it also keeps a copy of every held address's
//! sockets, to hand to the new process, and, in that new process, the sockets inherited
//! from the old one: a plan takes an inherited group where it would bind the same address,
//! so the listening sockets (and the connections queued on them) carry over.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use crate::config::{ListenRange, SharedError, Sharing, check_shared, overlaps};
use crate::net::listener::{Group, ListenerError, bind_group, try_bind_group};

/// Why a plan could not be made. Nothing was bound or changed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error(
        "{addr} is already the listen address of route \"{other}\": route \"{route}\" cannot listen there too"
    )]
    Taken {
        addr: SocketAddr,
        route: String,
        other: String,
    },
    #[error(
        "{addr} (route \"{route}\") overlaps {held}, the listen address of route \"{other}\": a wildcard address covers every address of its port"
    )]
    Overlap {
        addr: SocketAddr,
        route: String,
        held: SocketAddr,
        other: String,
    },
    #[error("{addr} (route \"{route}\") is {what}")]
    Reserved {
        addr: SocketAddr,
        route: String,
        what: String,
    },
    #[error(
        "{addr} (route \"{route}\") overlaps {held}, which ringway still listens on: release that address in one change, then listen on {addr} in the next"
    )]
    StillHeld {
        addr: SocketAddr,
        route: String,
        held: SocketAddr,
    },
    #[error(
        "{addr} (route \"{route}\") is still being released by generation {generation} (its listeners close once every worker has served what they had queued); retry in a moment"
    )]
    Releasing {
        addr: SocketAddr,
        route: String,
        generation: u64,
    },
    #[error("route \"{route}\": {source}")]
    Listener {
        route: String,
        #[source]
        source: ListenerError,
    },
    #[error("{0}; {fix}", fix = .0.fix())]
    Shared(#[from] SharedError),
    #[error("route \"{route}\": no free port in admin.listen_range ({range})")]
    NoFreePort { route: String, range: ListenRange },
    #[error(
        "route \"{route}\" names no listen address and admin.listen_range is not set: name one, or set admin.listen_range (e.g. \"127.0.0.1:20000-20999\") and reload"
    )]
    NoRange { route: String },
}

impl PortError {
    /// The routes the error is about (the one asking first).
    pub fn routes(&self) -> Vec<&str> {
        match self {
            PortError::Taken { route, other, .. } | PortError::Overlap { route, other, .. } => {
                vec![route, other]
            }
            PortError::Shared(e) => e.routes().to_vec(),
            PortError::Reserved { route, .. }
            | PortError::StillHeld { route, .. }
            | PortError::Releasing { route, .. }
            | PortError::Listener { route, .. }
            | PortError::NoFreePort { route, .. }
            | PortError::NoRange { route } => vec![route],
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            PortError::Taken { .. }
            | PortError::Overlap { .. }
            | PortError::Shared(_)
            | PortError::Reserved { .. }
            | PortError::StillHeld { .. } => "listen_conflict",
            PortError::Releasing { .. } => "releasing",
            PortError::Listener {
                source: ListenerError::Bind { .. },
                ..
            } => "cannot_listen",
            PortError::Listener { .. } => "address_in_use",
            PortError::NoFreePort { .. } => "no_free_port",
            PortError::NoRange { .. } => "no_listen_range",
        }
    }
}

/// One listen address a route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// As configured: a concrete address, or port 0 for a fresh port the kernel picks.
    Addr(SocketAddr),
    /// Port 0 that ringway already bound for this route: keep that port.
    Keep {
        configured: SocketAddr,
        bound: SocketAddr,
    },
    /// The first free address of `admin.listen_range` (a route created without `listen`).
    Auto,
}

/// What one route asks for.
#[derive(Debug, Clone)]
pub struct Want {
    pub route: String,
    pub slots: Vec<Slot>,
    /// How the route is told apart from others on a shared address.
    pub sharing: Sharing,
}

/// A ready change of the address set: new addresses bound and listening, to be handed to
/// the workers; addresses to release once the change is applied.
#[derive(Debug)]
pub struct Plan {
    /// Per [`Want`], per slot: (configured, bound).
    pub bound: Vec<Vec<(SocketAddr, SocketAddr)>>,
    /// New addresses, one listener per worker, in worker order.
    pub add: Vec<(SocketAddr, Vec<TcpListener>)>,
    /// Addresses no route uses any more.
    pub release: Vec<SocketAddr>,
    next: BTreeMap<SocketAddr, Held>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    configured: SocketAddr,
    routes: Vec<String>,
}

/// The addresses ringway holds now, and those it has let go of whose listeners the workers
/// are still closing.
#[derive(Debug, Default)]
pub struct Ports {
    held: BTreeMap<SocketAddr, Held>,
    /// Released address → the generation that retires it (until every worker applied it).
    releasing: BTreeMap<SocketAddr, u64>,
    /// A copy of each held address's listening sockets, in worker order (for an upgrade).
    /// Dropped when the address is released, before its workers close theirs.
    copies: BTreeMap<SocketAddr, Vec<OwnedFd>>,
    /// Sockets inherited from the process this one replaces, by bound address, until a plan
    /// takes them ([`Ports::inherit`]).
    inherited: BTreeMap<SocketAddr, Vec<OwnedFd>>,
}

impl Ports {
    /// Works out and binds what `wants` needs; `reserved` are addresses no route may take
    /// (the admin API's). Nothing changes here until [`Ports::commit`].
    pub fn plan(
        &self,
        wants: &[Want],
        workers: usize,
        range: Option<&ListenRange>,
        reserved: &[(SocketAddr, &str)],
    ) -> Result<Plan, PortError> {
        let mut next: BTreeMap<SocketAddr, Held> = BTreeMap::new();
        let mut out: Vec<Vec<Option<(SocketAddr, SocketAddr)>>> =
            wants.iter().map(|w| vec![None; w.slots.len()]).collect();
        // 1. Concrete addresses, and port-0 bindings ringway keeps: claim them all first, so
        //    a conflict inside ringway is found before anything is bound.
        for (i, w) in wants.iter().enumerate() {
            for (j, slot) in w.slots.iter().enumerate() {
                let pair = match *slot {
                    Slot::Addr(a) if a.port() != 0 => (a, a),
                    Slot::Keep { configured, bound } if self.held.contains_key(&bound) => {
                        (configured, bound)
                    }
                    _ => continue,
                };
                claim(&mut next, reserved, pair, &w.route)?;
                out[i][j] = Some(pair);
            }
        }
        // Routes sharing an address must be told apart.
        for (addr, held) in next.iter().filter(|(_, h)| h.routes.len() > 1) {
            let on: Vec<(&str, &Sharing)> = held
                .routes
                .iter()
                .filter_map(|name| {
                    wants
                        .iter()
                        .find(|w| &w.route == name)
                        .map(|w| (name.as_str(), &w.sharing))
                })
                .collect();
            check_shared(*addr, &on)?;
        }
        // 2. Bind the concrete addresses ringway does not hold yet (not listening).
        let mut groups: Vec<Group> = Vec::new();
        let fresh: Vec<(SocketAddr, String)> = next
            .iter()
            .filter(|(a, _)| !self.held.contains_key(a))
            .map(|(a, h)| (*a, h.routes.first().cloned().unwrap_or_default()))
            .collect();
        for (addr, route) in fresh {
            if let Some((_, generation)) = self.releasing.iter().find(|(r, _)| overlaps(**r, addr))
            {
                return Err(PortError::Releasing {
                    addr,
                    route,
                    generation: *generation,
                });
            }
            if let Some(held) = self.held.keys().find(|h| overlaps(**h, addr)) {
                return Err(PortError::StillHeld {
                    addr,
                    route,
                    held: *held,
                });
            }
            let g = self
                .take_inherited(addr, workers)
                .unwrap_or_else(|| bind_group(addr, workers))
                .map_err(|source| PortError::Listener {
                    route: route.clone(),
                    source,
                })?;
            groups.push(g);
        }
        // 3. Fresh ports the kernel picks (port 0).
        for (i, w) in wants.iter().enumerate() {
            for (j, slot) in w.slots.iter().enumerate() {
                let (configured, kept) = match *slot {
                    Slot::Addr(a) if a.port() == 0 => (a, None),
                    Slot::Keep { configured, bound } if !self.held.contains_key(&bound) => {
                        (configured, Some(bound))
                    }
                    _ => continue,
                };
                // The port this route had before an upgrade comes back with its sockets.
                let g = kept
                    .and_then(|bound| self.take_inherited(bound, workers))
                    .unwrap_or_else(|| bind_group(configured, workers))
                    .map_err(|source| PortError::Listener {
                        route: w.route.clone(),
                        source,
                    })?;
                let pair = (configured, g.addr);
                claim(&mut next, reserved, pair, &w.route)?;
                out[i][j] = Some(pair);
                groups.push(g);
            }
        }
        // 4. Addresses from admin.listen_range: the first that is free everywhere.
        for (i, w) in wants.iter().enumerate() {
            for (j, slot) in w.slots.iter().enumerate() {
                if *slot != Slot::Auto {
                    continue;
                }
                let range = range.ok_or_else(|| PortError::NoRange {
                    route: w.route.clone(),
                })?;
                let free = |a: &SocketAddr| {
                    !next
                        .keys()
                        .chain(self.held.keys())
                        .any(|h| overlaps(*h, *a))
                        && !reserved.iter().any(|(r, _)| overlaps(*r, *a))
                };
                let g = range
                    .addrs()
                    .filter(free)
                    .find_map(|a| try_bind_group(a, workers).ok())
                    .ok_or_else(|| PortError::NoFreePort {
                        route: w.route.clone(),
                        range: *range,
                    })?;
                let pair = (g.addr, g.addr);
                claim(&mut next, reserved, pair, &w.route)?;
                out[i][j] = Some(pair);
                groups.push(g);
            }
        }
        // 5. Every bind succeeded: only now does anything listen.
        let mut add = Vec::with_capacity(groups.len());
        for g in groups {
            let addr = g.addr;
            let route = next
                .get(&addr)
                .and_then(|h| h.routes.first().cloned())
                .unwrap_or_default();
            let listeners = g
                .listen()
                .map_err(|source| PortError::Listener { route, source })?;
            add.push((addr, listeners));
        }
        let release = self
            .held
            .keys()
            .filter(|a| !next.contains_key(a))
            .copied()
            .collect();
        let bound = out
            .into_iter()
            .map(|slots| slots.into_iter().flatten().collect())
            .collect();
        Ok(Plan {
            bound,
            add,
            release,
            next,
        })
    }

    /// Makes a plan's address set the current one; `generation` carries it to the workers.
    pub fn commit(&mut self, plan: &Plan, generation: u64) {
        self.held = plan.next.clone();
        for addr in &plan.release {
            self.releasing.insert(*addr, generation);
            self.copies.remove(addr);
        }
    }

    /// Keeps a copy of the sockets a plan adds (for an upgrade; call before its listeners
    /// go to the workers). Inherited sockets of those addresses are used up.
    pub fn keep_copies(&mut self, add: &[(SocketAddr, Vec<TcpListener>)]) {
        for (addr, listeners) in add {
            // A copy that cannot be made only means this address cannot be handed to a
            // new binary; logged, and the upgrade says so.
            match listeners
                .iter()
                .map(|l| l.try_clone().map(OwnedFd::from))
                .collect()
            {
                Ok(copy) => {
                    self.copies.insert(*addr, copy);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot keep a copy of a listener for upgrades")
                }
            }
            self.inherited.remove(addr);
        }
    }

    /// Listening sockets inherited from the process this one replaces (by bound address).
    pub fn inherit(&mut self, sockets: BTreeMap<SocketAddr, Vec<OwnedFd>>) {
        self.inherited = sockets;
    }

    /// Inherited addresses no plan has taken: closed here (the old process retires them).
    pub fn drop_inherited(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.inherited).into_keys().collect()
    }

    /// Forgets the copies (a new process took the sockets over; this one must not keep any
    /// alive past its own workers' closes).
    pub fn drop_copies(&mut self) {
        self.copies.clear();
    }

    /// Every held address with a copy of its sockets (to hand to a new binary).
    pub fn copies(&self) -> impl Iterator<Item = (SocketAddr, &[OwnedFd])> {
        self.copies.iter().map(|(a, fds)| (*a, fds.as_slice()))
    }

    /// A group made of the inherited sockets of `addr` (copies: the originals stay until a
    /// commit, so a plan that fails leaves them for the next), completed with fresh
    /// SO_REUSEPORT sockets when this process has more workers than the old one.
    fn take_inherited(
        &self,
        addr: SocketAddr,
        workers: usize,
    ) -> Option<Result<Group, ListenerError>> {
        let fds = self.inherited.get(&addr)?;
        let copies: std::io::Result<Vec<OwnedFd>> =
            fds.iter().take(workers).map(OwnedFd::try_clone).collect();
        Some(
            copies
                .and_then(|c| Group::inherited(addr, c, workers))
                .map_err(|source| ListenerError::Bind { addr, source }),
        )
    }

    /// Every worker has applied `generation`: what it released is closed.
    pub fn settled(&mut self, generation: u64) {
        self.releasing.retain(|_, g| *g > generation);
    }

    /// Every held address: (bound, configured, routes on it).
    pub fn list(&self) -> impl Iterator<Item = (SocketAddr, SocketAddr, &[String])> {
        self.held
            .iter()
            .map(|(a, h)| (*a, h.configured, h.routes.as_slice()))
    }
}

/// Records that `route` listens on `bound` (configured as `configured`), refusing what
/// another route (or the admin API) already has.
fn claim(
    next: &mut BTreeMap<SocketAddr, Held>,
    reserved: &[(SocketAddr, &str)],
    (configured, bound): (SocketAddr, SocketAddr),
    route: &str,
) -> Result<(), PortError> {
    if let Some((_, what)) = reserved.iter().find(|(r, _)| overlaps(*r, bound)) {
        return Err(PortError::Reserved {
            addr: bound,
            route: route.to_string(),
            what: (*what).to_string(),
        });
    }
    if let Some(h) = next.get_mut(&bound) {
        // A shared address: whether its routes can be told apart was checked before the
        // plan (`config::check_shared`). A port-0 binding is never shared.
        if bound.port() != 0 && configured.port() != 0 && h.configured.port() != 0 {
            if !h.routes.iter().any(|r| r == route) {
                h.routes.push(route.to_string());
            }
            return Ok(());
        }
        return Err(PortError::Taken {
            addr: bound,
            route: route.to_string(),
            other: h.routes.first().cloned().unwrap_or_default(),
        });
    }
    if let Some((held, h)) = next.iter().find(|(h, _)| overlaps(**h, bound)) {
        return Err(PortError::Overlap {
            addr: bound,
            route: route.to_string(),
            held: *held,
            other: h.routes.first().cloned().unwrap_or_default(),
        });
    }
    next.insert(
        bound,
        Held {
            configured,
            routes: vec![route.to_string()],
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(route: &str, slots: &[Slot]) -> Want {
        Want {
            route: route.into(),
            slots: slots.to_vec(),
            sharing: Sharing::default(),
        }
    }

    fn any() -> Slot {
        Slot::Addr("127.0.0.1:0".parse().unwrap())
    }

    /// Addresses are bound once, reused while a route uses them, released when none does.
    #[test]
    fn bind_reuse_release() {
        let mut ports = Ports::default();
        let first = ports.plan(&[want("a", &[any()])], 2, None, &[]).unwrap();
        assert_eq!(first.add.len(), 1);
        assert_eq!(first.add[0].1.len(), 2);
        let (configured, bound) = first.bound[0][0];
        assert_eq!(configured.port(), 0);
        assert_ne!(bound.port(), 0);
        ports.commit(&first, 1);
        // The same route keeping its port, and a second one on a concrete fresh address.
        let other = crate::net::listener::bind_group("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .addr;
        let keep = Slot::Keep { configured, bound };
        let plan = ports
            .plan(
                &[want("a", &[keep]), want("b", &[Slot::Addr(other)])],
                2,
                None,
                &[],
            )
            .unwrap();
        assert_eq!(plan.add.len(), 1, "only b's address is new");
        assert_eq!(plan.bound[0][0], (configured, bound));
        assert!(plan.release.is_empty());
        ports.commit(&plan, 1);
        // a leaves: its address is released.
        let plan = ports
            .plan(&[want("b", &[Slot::Addr(other)])], 2, None, &[])
            .unwrap();
        assert!(plan.add.is_empty());
        assert_eq!(plan.release, vec![bound]);
        ports.commit(&plan, 2);
        // Until generation 2 is applied everywhere, the address is not free to take again.
        let again = [
            want("b", &[Slot::Addr(other)]),
            want("c", &[Slot::Addr(bound)]),
        ];
        let e = ports.plan(&again, 2, None, &[]).unwrap_err();
        assert!(
            matches!(e, PortError::Releasing { generation: 2, .. }),
            "{e}"
        );
        // The workers close a's listeners (here: the test drops them), then acknowledge.
        drop(first);
        ports.settled(2);
        let plan = ports.plan(&again, 2, None, &[]).unwrap();
        assert_eq!(plan.bound[1][0], (bound, bound));
    }

    /// Conflicts inside ringway name both routes; nothing is bound.
    #[test]
    fn copies_follow_the_held_addresses() {
        let mut ports = Ports::default();
        let plan = ports.plan(&[want("a", &[any()])], 2, None, &[]).unwrap();
        ports.commit(&plan, 1);
        ports.keep_copies(&plan.add);
        let addr = plan.add[0].0;
        let copies: Vec<(SocketAddr, usize)> = ports.copies().map(|(a, f)| (a, f.len())).collect();
        assert_eq!(copies, vec![(addr, 2)], "one copy per worker's socket");
        let plan = ports.plan(&[], 2, None, &[]).unwrap();
        assert_eq!(plan.release, vec![addr]);
        ports.commit(&plan, 2);
        assert_eq!(
            ports.copies().count(),
            0,
            "a released address keeps no copy"
        );
    }

    #[test]
    fn conflicts_inside_ringway_name_both_routes() {
        let ports = Ports::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let wild: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let e = ports
            .plan(
                &[want("x", &[Slot::Addr(wild)]), want("y", &[Slot::Addr(a)])],
                1,
                None,
                &[],
            )
            .unwrap_err();
        assert!(matches!(e, PortError::Overlap { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("\"x\"") && text.contains("\"y\""), "{text}");
        let e = ports
            .plan(
                &[want("x", &[Slot::Addr(a)])],
                1,
                None,
                &[(a, "the admin API's")],
            )
            .unwrap_err();
        assert!(e.to_string().contains("the admin API's"), "{e}");
    }

    /// Routes naming the same concrete address share one listener group (bound once); it is
    /// released when the last of them goes.
    #[test]
    fn routes_share_a_concrete_address() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = free.local_addr().unwrap();
        drop(free);
        let mut ports = Ports::default();
        // Two defaults cannot be told apart ...
        let e = ports
            .plan(
                &[want("x", &[Slot::Addr(a)]), want("y", &[Slot::Addr(a)])],
                2,
                None,
                &[],
            )
            .unwrap_err();
        assert!(matches!(e, PortError::Shared(_)), "{e}");
        assert_eq!(e.routes(), ["x", "y"]);
        // ... a default and a route matching a source can.
        let mut y = want("y", &[Slot::Addr(a)]);
        y.sharing.matching = Some(crate::config::MatchConfig {
            source: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        });
        let plan = ports
            .plan(&[want("x", &[Slot::Addr(a)]), y.clone()], 2, None, &[])
            .unwrap();
        assert_eq!(plan.add.len(), 1, "one address, bound once");
        ports.commit(&plan, 1);
        let held: Vec<_> = ports.list().collect();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].2, ["x".to_string(), "y".to_string()]);
        let plan = ports.plan(&[y], 2, None, &[]).unwrap();
        assert!(plan.add.is_empty() && plan.release.is_empty());
        ports.commit(&plan, 2);
        let plan = ports.plan(&[], 2, None, &[]).unwrap();
        assert_eq!(plan.release, vec![a]);
    }

    /// A route without listen gets the first free port of the range; no range: an error.
    #[test]
    fn auto_addresses_come_from_the_range() {
        let ports = Ports::default();
        assert!(matches!(
            ports.plan(&[want("x", &[Slot::Auto])], 1, None, &[]),
            Err(PortError::NoRange { .. })
        ));
        // A range whose first port is busy (held by this test) and whose second is free.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let range = ListenRange {
            ip: "127.0.0.1".parse().unwrap(),
            first: port,
            last: port.saturating_add(20),
        };
        let plan = ports
            .plan(&[want("x", &[Slot::Auto])], 1, Some(&range), &[])
            .unwrap();
        let (_, bound) = plan.bound[0][0];
        assert!(bound.port() > port && bound.port() <= port + 20);
        let only_busy = ListenRange {
            last: port,
            ..range
        };
        assert!(matches!(
            ports.plan(&[want("x", &[Slot::Auto])], 1, Some(&only_busy), &[]),
            Err(PortError::NoFreePort { .. })
        ));
    }

    /// A plan fails as a whole on an outside holder, naming it (the integration tests count
    /// the process's fds around 100 such failures; unit tests share one process).
    #[test]
    fn an_outside_holder_fails_the_whole_plan() {
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held = outside.local_addr().unwrap();
        let ports = Ports::default();
        for _ in 0..3 {
            let e = ports
                .plan(
                    &[want("ok", &[any()]), want("bad", &[Slot::Addr(held)])],
                    4,
                    None,
                    &[],
                )
                .unwrap_err();
            assert!(e.to_string().contains("held by another process"), "{e}");
            assert!(e.to_string().contains("route \"bad\""), "{e}");
        }
    }
}
