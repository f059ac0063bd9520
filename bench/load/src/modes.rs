//! The load shapes (conn open or closed loop, keepalive, idle), each run by one thread on its own current-thread tokio runtime with
//! its share of the rate and connections.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::cli::{Args, Mode};
use crate::exchange::{self, Spec};
use crate::report::{Outcome, Tally};

/// One thread's share of the work.
pub struct Share {
    /// conn: connections per second; keepalive: exchanges per second (0 = closed loop);
    /// idle: connections opened per second (0 = at once).
    pub rate: f64,
    pub connections: usize,
    /// Start of the warm-up; recording begins at `record_from` and stops at `end`.
    pub start: Instant,
    pub record_from: Instant,
    pub end: Instant,
}

/// Backoff after a failed exchange in closed-loop mode, so a refusing target is not hammered
/// in a tight loop.
const FAIL_BACKOFF: Duration = Duration::from_millis(1);

pub async fn run(args: Rc<Args>, share: Share) -> Tally {
    let tally = Rc::new(RefCell::new(Tally::default()));
    match args.mode {
        Mode::Conn if args.closed_loop => conn_closed(&args, &share, &tally).await,
        Mode::Conn => conn(&args, &share, &tally).await,
        Mode::Keepalive => keepalive(&args, &share, &tally).await,
        Mode::Idle => idle(&args, &share, &tally).await,
    }
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| {
            // A task still holds it (cannot happen: all are awaited); copy what is there.
            let mut t = Tally::default();
            t.merge(&rc.borrow());
            t
        })
}

/// A new connection per exchange, started on schedule whatever the earlier ones do: no
/// coordinated omission to correct, so latency is measured from the actual dispatch and the
/// tool's own lateness is reported as `max_dispatch_lag`.
async fn conn(args: &Rc<Args>, share: &Share, tally: &Rc<RefCell<Tally>>) {
    let spec = Rc::new(Spec::new(args, true));
    let interval = Duration::from_secs_f64(1.0 / share.rate);
    let inflight = Rc::new(RefCell::new(0usize));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = share.start;
    while next < share.end {
        sleep_until(next).await;
        let now = Instant::now();
        let record = next >= share.record_from;
        if record {
            let mut t = tally.borrow_mut();
            t.max_dispatch_lag = t.max_dispatch_lag.max(now - next);
        }
        next += interval;
        if *inflight.borrow() >= args.max_inflight {
            if record {
                tally.borrow_mut().outcomes.dropped += 1;
            }
            continue;
        }
        *inflight.borrow_mut() += 1;
        let (spec, tally, inflight, args) =
            (spec.clone(), tally.clone(), inflight.clone(), args.clone());
        tasks.spawn_local(async move {
            let mut buf = Vec::with_capacity(4096);
            let _ = one_conn(&args, &spec, &tally, &mut buf, record, Instant::now()).await;
            *inflight.borrow_mut() -= 1;
        });
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One connection: connect, one exchange, close; counted (when `record`) with the time since
/// `begun`.
async fn one_conn(
    args: &Args,
    spec: &Spec,
    tally: &RefCell<Tally>,
    buf: &mut Vec<u8>,
    record: bool,
    begun: Instant,
) -> Result<(), Outcome> {
    let res = timeout(args.timeout, async {
        let mut s = exchange::connect(args.target).await?;
        if record {
            tally.borrow_mut().connections += 1;
        }
        exchange::run(&mut s, spec, buf).await
    })
    .await
    .unwrap_or(Err(Outcome::Timeout));
    if record {
        let took = begun.elapsed();
        let mut t = tally.borrow_mut();
        match res {
            Ok(()) => t.record_ok(took, took),
            Err(o) => t.outcomes.count(o),
        }
    }
    res
}

/// A new connection per exchange, closed loop: `share.connections` loops, each opening a
/// connection, doing the exchange, closing it and starting over at once (what
/// `wrk -H 'Connection: close'` does). Latency is the exchange's own time, connect included.
async fn conn_closed(args: &Rc<Args>, share: &Share, tally: &Rc<RefCell<Tally>>) {
    let spec = Rc::new(Spec::new(args, true));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..share.connections {
        let (spec, tally, args) = (spec.clone(), tally.clone(), args.clone());
        let (start, record_from, end) = (share.start, share.record_from, share.end);
        tasks.spawn_local(async move {
            let mut buf = Vec::with_capacity(4096);
            sleep_until(start).await;
            loop {
                let begun = Instant::now();
                if begun >= end {
                    break;
                }
                let record = begun >= record_from;
                let res = one_conn(&args, &spec, &tally, &mut buf, record, begun).await;
                if res.is_err() {
                    sleep(FAIL_BACKOFF).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A fixed set of connections repeating the exchange. With a rate, each connection follows its
/// own schedule; when an answer is late the next exchange starts at once and its latency is
/// counted from when it should have started (coordinated omission corrected); when the
/// connection was ahead and slept, latency is counted from the actual send, so timer slack is
/// not charged to the target.
async fn keepalive(args: &Rc<Args>, share: &Share, tally: &Rc<RefCell<Tally>>) {
    let spec = Rc::new(Spec::new(args, false));
    let per_conn = if share.rate > 0.0 {
        Some(Duration::from_secs_f64(
            share.connections as f64 / share.rate,
        ))
    } else {
        None
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..share.connections {
        let (spec, tally, args) = (spec.clone(), tally.clone(), args.clone());
        // Spread the connections' schedules over one interval.
        let phase = per_conn
            .map(|p| p.mul_f64(i as f64 / share.connections as f64))
            .unwrap_or_default();
        let (record_from, end) = (share.record_from, share.end);
        let start = share.start + phase;
        tasks.spawn_local(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut stream: Option<TcpStream> = None;
            let mut intended = start;
            sleep_until(start).await;
            loop {
                let mut behind = false;
                if per_conn.is_some() {
                    if Instant::now() < intended {
                        sleep_until(intended).await;
                    } else {
                        behind = true;
                    }
                }
                let actual = Instant::now();
                if actual >= end {
                    break;
                }
                let from = if behind { intended } else { actual };
                let record = from >= record_from;
                let res = timeout_at(actual + args.timeout, async {
                    if stream.is_none() {
                        let s = exchange::connect(args.target).await?;
                        if record {
                            tally.borrow_mut().connections += 1;
                        }
                        stream = Some(s);
                    }
                    match stream.as_mut() {
                        Some(s) => exchange::run(s, &spec, &mut buf).await,
                        None => Err(Outcome::Error),
                    }
                })
                .await
                .unwrap_or(Err(Outcome::Timeout));
                let done = Instant::now();
                if record {
                    let mut t = tally.borrow_mut();
                    match res {
                        Ok(()) => t.record_ok(done - from, done - actual),
                        Err(o) => t.outcomes.count(o),
                    }
                }
                if res.is_err() {
                    stream = None;
                    if per_conn.is_none() {
                        sleep(FAIL_BACKOFF).await;
                    }
                }
                if let Some(p) = per_conn {
                    intended += p;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Opens the connections, sends nothing, and holds them until the end; then counts how many
/// are still open (ok) and how the others ended. Prints `holding N connections` on stderr once
/// every connection of this thread is up, so a script can sample the target meanwhile.
async fn idle(args: &Rc<Args>, share: &Share, tally: &Rc<RefCell<Tally>>) {
    let mut held = Vec::with_capacity(share.connections);
    let gap = (share.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / share.rate));
    let mut next = share.start;
    sleep_until(share.start).await;
    for _ in 0..share.connections {
        if let Some(g) = gap {
            sleep_until(next).await;
            next += g;
        }
        match timeout(args.timeout, exchange::connect(args.target)).await {
            Ok(Ok(s)) => {
                tally.borrow_mut().connections += 1;
                held.push(s);
            }
            Ok(Err(o)) => tally.borrow_mut().outcomes.count(o),
            Err(_) => tally.borrow_mut().outcomes.count(Outcome::Timeout),
        }
    }
    eprintln!("ringway-load: holding {} connections", held.len());
    sleep_until(share.end).await;
    let mut t = tally.borrow_mut();
    let mut probe = [0u8; 1];
    for s in &held {
        // Nothing was sent, so nothing may come back: WouldBlock = still open.
        match s.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                t.held += 1;
                t.outcomes.ok += 1;
            }
            Ok(0) => t.outcomes.count(Outcome::WrongBytes),
            Ok(_) => t.outcomes.count(Outcome::WrongBytes),
            Err(e) => t.outcomes.count(exchange::classify(&e)),
        }
    }
}
