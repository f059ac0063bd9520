//! Control side (the resolver thread): the hickory resolver as `[runtime]` configures it, one
//! task per name that resolves it again when its answer runs out, and a one-shot resolution
//! of a few names for start-up and `ringway check`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use super::Event;
use crate::config::DnsConfig;

/// How long one try of a query waits for the name server.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// hickory's `attempts`: retries of a query whose try failed.
const QUERY_ATTEMPTS: usize = 2;
/// The bound on [`resolve_now`] as a whole.
const RESOLVE_NOW_LIMIT: Duration = Duration::from_secs(10);

/// The resolver, or why none could be made (then every name fails with that reason).
type Made = Result<TokioResolver, String>;

fn make(cfg: &DnsConfig) -> Made {
    let mut builder = match cfg.resolver {
        Some(ns) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true),
            ),
            TokioConnectionProvider::default(),
        ),
        None => match TokioResolver::builder_tokio() {
            Ok(b) => b,
            // No usable /etc/resolv.conf: /etc/hosts still answers (every other name fails,
            // saying why); set runtime.dns_resolver to ask a name server.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system's resolver configuration: only /etc/hosts answers backend names (set runtime.dns_resolver)");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), NameServerConfigGroup::new()),
                    TokioConnectionProvider::default(),
                )
            }
        },
    };
    let opts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = QUERY_ATTEMPTS;
    // /etc/hosts first, whichever name server is asked.
    opts.use_hosts_file = ResolveHosts::Always;
    // The resolver's own cache keeps an answer no longer than ringway would.
    opts.positive_min_ttl = Some(cfg.min_ttl);
    opts.positive_max_ttl = Some(cfg.max_ttl);
    opts.negative_min_ttl = Some(cfg.min_ttl);
    opts.negative_max_ttl = Some(cfg.min_ttl);
    Ok(builder.build())
}

/// One resolution of `host`: its addresses (sorted) and when to ask again.
async fn resolve(made: &Made, cfg: &DnsConfig, host: &str) -> Event {
    let (result, next) = match made {
        Err(e) => (Err(e.clone()), cfg.min_ttl),
        Ok(r) => match r.lookup_ip(host).await {
            Ok(found) => {
                let mut ips: Vec<IpAddr> = found.iter().collect();
                ips.sort();
                ips.dedup();
                let ttl = found
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                if ips.is_empty() {
                    (Err("the answer holds no address".to_string()), cfg.min_ttl)
                } else {
                    (Ok(ips), cfg.clamp(ttl))
                }
            }
            Err(e) => (Err(e.to_string()), cfg.min_ttl),
        },
    };
    Event {
        host: host.to_string(),
        result,
        next,
    }
}

/// The resolver thread: a task per name in the latest set from the control thread.
pub(super) async fn run(
    cfg: DnsConfig,
    known: Vec<(String, Duration)>,
    mut rx: UnboundedReceiver<BTreeSet<String>>,
    events: Sender<Event>,
) {
    let made = make(&cfg);
    let mut known: HashMap<String, Duration> = known.into_iter().collect();
    let mut tasks: HashMap<String, JoinHandle<()>> = HashMap::new();
    while let Some(names) = rx.recv().await {
        tasks.retain(|host, task| {
            let keep = names.contains(host);
            if !keep {
                task.abort();
            }
            keep
        });
        for host in names {
            if tasks.contains_key(&host) {
                continue;
            }
            let first = known.remove(&host).unwrap_or_default();
            let (made, cfg, events) = (made.clone(), cfg.clone(), events.clone());
            let name = host.clone();
            let task = tokio::spawn(async move {
                tokio::time::sleep(first).await;
                loop {
                    let ev = resolve(&made, &cfg, &name).await;
                    let next = ev.next;
                    if events.send(ev).is_err() {
                        return;
                    }
                    tokio::time::sleep(next).await;
                }
            });
            tasks.insert(host, task);
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

/// Resolves `hosts` once, all at the same time, within about ten seconds (a name without an
/// answer by then fails): for start-up (the first generation starts with the addresses) and
/// `ringway check`. Blocks the calling thread.
pub fn resolve_now(cfg: &DnsConfig, hosts: &[String]) -> Vec<Event> {
    let timed_out = |host: &String| Event {
        host: host.clone(),
        result: Err("no answer in time".into()),
        next: cfg.min_ttl,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return hosts
                .iter()
                .map(|h| Event {
                    host: h.clone(),
                    result: Err(format!("cannot start the resolver: {e}")),
                    next: cfg.min_ttl,
                })
                .collect();
        }
    };
    runtime.block_on(async {
        let made = make(cfg);
        let tasks: Vec<JoinHandle<Event>> = hosts
            .iter()
            .map(|h| {
                let (made, cfg, h) = (made.clone(), cfg.clone(), h.clone());
                tokio::spawn(async move { resolve(&made, &cfg, &h).await })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + RESOLVE_NOW_LIMIT;
        let mut out = Vec::with_capacity(hosts.len());
        for (host, task) in hosts.iter().zip(tasks) {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(ev)) => out.push(ev),
                _ => out.push(timed_out(host)),
            }
        }
        out
    })
}
