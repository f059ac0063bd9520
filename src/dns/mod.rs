//! Control side: resolving backend names, on a thread of its own (a tokio current-thread
//! runtime with `hickory-resolver`), never on a worker and never on the control thread's
//! message loop.
//!
//! The control thread says which names to keep resolved ([`Dns::names`]); the thread asks
//! the name server for each, again when the answer's TTL (clamped to `runtime.dns_min_ttl`
//! ..`dns_max_ttl`) runs out, or `dns_min_ttl` after a failure, and reports every outcome
//! ([`Event`]). It keeps no state that matters: the control thread holds the last good
//! addresses, decides what a changed answer means (a new generation) and what a failure
//! means (the last good addresses stay).

mod lookup;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::{Config, DnsConfig, Problem};
use crate::side_thread::SideThread;

pub use lookup::resolve_now;

/// Resolver thread → control: one resolution of `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub host: String,
    /// The addresses (sorted, at least one), or why there are none.
    pub result: Result<Vec<IpAddr>, String>,
    /// When the thread asks again (the clamped TTL, or `dns_min_ttl` after a failure).
    pub next: Duration,
}

/// The control thread's handle on the resolver thread. Dropping it stops the thread.
pub struct Dns {
    thread: SideThread<BTreeSet<String>>,
}

impl Dns {
    /// Starts the resolver thread; its answers go to `events`. Answers known already (from
    /// the start-up resolution) are asked again when `known` says.
    pub fn spawn(
        cfg: DnsConfig,
        known: Vec<(String, Duration)>,
        events: Sender<Event>,
    ) -> std::io::Result<Dns> {
        let thread =
            SideThread::spawn("ringway-dns", move |rx| lookup::run(cfg, known, rx, events))?;
        Ok(Dns { thread })
    }

    /// The names to keep resolved from now on (replaces the earlier set).
    pub fn names(&self, names: BTreeSet<String>) {
        self.thread.send(names);
    }
}

/// `ringway check`: resolves every backend name of `config` once (nothing is bound); a
/// problem for each name that does not resolve, under each route that names it.
pub fn check(config: &Config) -> Vec<Problem> {
    let hosts: BTreeSet<String> = config
        .routes
        .iter()
        .flat_map(|r| r.names.iter().map(|n| n.host.clone()))
        .collect();
    if hosts.is_empty() {
        return Vec::new();
    }
    let hosts: Vec<String> = hosts.into_iter().collect();
    let answers = resolve_now(&config.runtime.dns, &hosts);
    let mut problems = Vec::new();
    for (i, r) in config.routes.iter().enumerate() {
        for n in &r.names {
            let Some(Err(error)) = answers.iter().find(|a| a.host == n.host).map(|a| &a.result)
            else {
                continue;
            };
            problems.push(Problem {
                line: None,
                key: format!("route[{i}] (\"{}\").backends", r.name),
                message: format!("\"{n}\" does not resolve: {error}"),
                fix: match config.runtime.dns.resolver {
                    Some(ns) => format!(
                        "check the name and that the name server {ns} (runtime.dns_resolver) answers for it; \
                         `ringway run` would start without its addresses and keep trying"
                    ),
                    None => "check the name and /etc/resolv.conf (or set runtime.dns_resolver); \
                             `ringway run` would start without its addresses and keep trying"
                        .to_string(),
                },
            });
        }
    }
    problems
}
