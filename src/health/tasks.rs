//! Control side: the health thread's loop and its tasks — one periodic task per checked
//! backend, one task per switch gate, one rollback watch per route.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::probe::probe;
use super::{Command, Event};
use crate::config::HealthConfig;

/// Pause between the probes of one gate (keeps a refusing backend's answer within
/// `timeout × fall + 1s` for any `fall` up to 20).
const GATE_PAUSE: Duration = Duration::from_millis(50);

struct RouteChecks {
    cfg: HealthConfig,
    tasks: HashMap<SocketAddr, AbortHandle>,
}

pub(super) async fn run(mut rx: UnboundedReceiver<Command>, events: Sender<Event>) {
    let mut routes: HashMap<String, RouteChecks> = HashMap::new();
    let mut watches: HashMap<String, AbortHandle> = HashMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Targets {
                route,
                cfg,
                backends,
            } => {
                let entry = routes.entry(route.clone()).or_insert_with(|| RouteChecks {
                    cfg: cfg.clone(),
                    tasks: HashMap::new(),
                });
                if entry.cfg != cfg {
                    for (_, t) in entry.tasks.drain() {
                        t.abort();
                    }
                    entry.cfg = cfg.clone();
                }
                entry.tasks.retain(|addr, t| {
                    let keep = backends.contains(addr);
                    if !keep {
                        t.abort();
                    }
                    keep
                });
                for addr in backends {
                    entry.tasks.entry(addr).or_insert_with(|| {
                        tokio::spawn(periodic(route.clone(), addr, cfg.clone(), events.clone()))
                            .abort_handle()
                    });
                }
                if entry.tasks.is_empty() {
                    routes.remove(&route);
                }
            }
            Command::Gate { id, cfg, targets } => {
                let events = events.clone();
                tokio::spawn(async move {
                    let result = gate(&cfg, &targets).await;
                    let _ = events.send(Event::Gate { id, result });
                });
            }
            Command::Watch {
                route,
                switch_id,
                cfg,
                every,
                window,
                threshold,
                targets,
            } => {
                let task = tokio::spawn(watch(
                    route.clone(),
                    switch_id,
                    cfg,
                    (every, window, threshold),
                    targets,
                    events.clone(),
                ));
                if let Some(old) = watches.insert(route, task.abort_handle()) {
                    old.abort();
                }
            }
            Command::Unwatch { route } => {
                if let Some(old) = watches.remove(&route) {
                    old.abort();
                }
            }
        }
    }
}

/// Checks one backend every `interval`. The first pass marks it up, `fall` failures in a
/// row mark it down; after that it takes `rise` passes or `fall` failures in a row to change.
async fn periodic(route: String, addr: SocketAddr, cfg: HealthConfig, events: Sender<Event>) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut passes, mut fails) = (0u32, 0u32);
    let mut state: Option<bool> = None;
    loop {
        tick.tick().await;
        let result = probe(addr, &cfg).await;
        let next = match &result {
            Ok(()) => {
                fails = 0;
                passes = passes.saturating_add(1);
                let needed = if state.is_none() { 1 } else { cfg.rise };
                (passes >= needed).then_some(true)
            }
            Err(_) => {
                passes = 0;
                fails = fails.saturating_add(1);
                (fails >= cfg.fall).then_some(false)
            }
        };
        if let Some(up) = next
            && state != Some(up)
        {
            state = Some(up);
            let sent = events.send(Event::Changed {
                route: route.clone(),
                backend: addr,
                up,
                reason: result.err(),
            });
            if sent.is_err() {
                return;
            }
        }
    }
}

/// The switch gate: every target must pass `rise` probes in a row before it fails `fall`
/// times. All targets are probed at once.
pub(super) async fn gate(cfg: &HealthConfig, targets: &[SocketAddr]) -> Result<(), String> {
    let mut set = JoinSet::new();
    for &addr in targets {
        let cfg = cfg.clone();
        set.spawn(async move { (addr, gate_one(addr, &cfg).await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((addr, Err(why))) => failures.push(format!("{addr}: {why}")),
            Err(e) => failures.push(format!("health check task failed: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        failures.sort();
        Err(failures.join("; "))
    }
}

async fn gate_one(addr: SocketAddr, cfg: &HealthConfig) -> Result<(), String> {
    let (mut passes, mut fails) = (0u32, 0u32);
    loop {
        match probe(addr, cfg).await {
            Ok(()) => {
                passes += 1;
                if passes >= cfg.rise {
                    return Ok(());
                }
            }
            Err(why) => {
                passes = 0;
                fails += 1;
                if fails >= cfg.fall {
                    return Err(format!("{why} ({fails} failed checks)"));
                }
            }
        }
        tokio::time::sleep(GATE_PAUSE).await;
    }
}

/// The rollback watch: a round probes every target; a round fails when any target fails.
async fn watch(
    route: String,
    switch_id: u64,
    cfg: HealthConfig,
    (every, window, threshold): (Duration, Duration, u32),
    targets: Vec<SocketAddr>,
    events: Sender<Event>,
) {
    let end = Instant::now() + window;
    let mut failed_rounds = 0;
    let mut last = String::new();
    loop {
        let next = Instant::now() + every;
        if next > end {
            return;
        }
        tokio::time::sleep_until(next).await;
        let mut set = JoinSet::new();
        for &addr in &targets {
            let cfg = cfg.clone();
            set.spawn(async move { (addr, probe(addr, &cfg).await) });
        }
        let mut round_ok = true;
        while let Some(joined) = set.join_next().await {
            if let Ok((addr, Err(why))) = joined {
                round_ok = false;
                last = format!("{addr}: {why}");
            }
        }
        if round_ok {
            failed_rounds = 0;
            continue;
        }
        failed_rounds += 1;
        if failed_rounds >= threshold {
            let _ = events.send(Event::WatchFailed {
                route,
                switch_id,
                reason: format!("{failed_rounds} failed checks in a row, last: {last}"),
            });
            return;
        }
    }
}
