//! `ringway-load`: an open-loop load generator for ringway's benchmarks and fault tests.
//!
//! Three shapes (`--mode`): `conn` (a fixed rate of new connections, one exchange each, or
//! with `--closed-loop` a fixed number of them back to back),
//! `keepalive` (a fixed number of connections repeating the exchange, open loop at a fixed
//! rate or closed loop), `idle` (hold connections open). Every exchange ends in one outcome
//! (ok, refused, reset, timeout, wrong_bytes, error; `dropped` when the tool itself could not
//! keep up); latency goes to an HdrHistogram, corrected for coordinated omission. The report is
//! JSON on stdout, a summary on stderr. Exit 0, or 1 with `--fail-on-error` when any exchange
//! failed, 64 on bad arguments.

mod cli;
mod exchange;
mod hello;
mod modes;
mod report;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use cli::Args;
use modes::Share;
use report::{Report, Tally};

fn main() {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("ringway-load: {e}");
        std::process::exit(64);
    }
    let report = match run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringway-load: {e:#}");
            std::process::exit(1);
        }
    };
    eprintln!("{}", report.0.summary());
    match serde_json::to_string_pretty(&report.0) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("ringway-load: cannot encode the report: {e}"),
    }
    if report.1 && report.0.failed > 0 {
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<(Report, bool)> {
    let threads = args.threads;
    let args = Arc::new(args);
    // All threads share one clock origin, a little ahead so every thread is ready.
    let origin = std::time::Instant::now() + Duration::from_millis(50);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let args = args.clone();
        let cpu = args.cpus.get(i).copied();
        let core = cpu.and_then(|c| cores.iter().find(|k| k.id == c).copied());
        if cpu.is_some() && core.is_none() {
            anyhow::bail!(
                "--cpus: CPU {} is not one this process may run on",
                cpu.unwrap_or(0)
            );
        }
        let h = std::thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || -> anyhow::Result<Tally> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                let share = share_of(&args, i, origin);
                let args = Rc::new(Args::clone(&args));
                Ok(local.block_on(&rt, modes::run(args, share)))
            })?;
        handles.push(h);
    }
    let mut total = Tally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.merge(&t);
    }
    Ok((
        Report::new(&args, &total, args.duration),
        args.fail_on_error,
    ))
}

/// Thread `i`'s share: an equal part of the rate, and of the connections (the first threads
/// take the remainder).
fn share_of(args: &Args, i: usize, origin: std::time::Instant) -> Share {
    let n = args.threads;
    let connections = args.connections / n + usize::from(i < args.connections % n);
    let rate = if args.mode == cli::Mode::Conn || args.rate == 0.0 {
        args.rate / n as f64
    } else {
        // keepalive/idle: the rate follows the connections this thread has.
        args.rate * connections as f64 / args.connections as f64
    };
    let start = tokio::time::Instant::from_std(origin);
    let record_from = start + args.warmup;
    Share {
        rate,
        connections,
        start,
        record_from,
        end: record_from + args.duration,
    }
}
