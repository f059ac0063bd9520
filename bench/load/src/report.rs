//! What one run counted: outcomes per exchange, latency histograms, and the JSON report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How a failed exchange (or, in idle mode, a connection that did not hold) ended; success is
/// counted by [`Tally::record_ok`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connect was refused (RST to the SYN).
    Refused,
    /// The connection was reset (or the write hit a broken pipe).
    Reset,
    /// No complete answer within --timeout (connect included).
    Timeout,
    /// The answer was not the expected bytes: wrong status, wrong body, bad echo, or EOF before
    /// the whole answer arrived.
    WrongBytes,
    /// Any other local error (e.g. no free ephemeral port, too many open files).
    Error,
}

/// Counters for each [`Outcome`], plus `dropped` (exchanges the tool could not start).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub wrong_bytes: u64,
    pub error: u64,
    pub dropped: u64,
}

impl Outcomes {
    pub fn count(&mut self, o: Outcome) {
        match o {
            Outcome::Refused => self.refused += 1,
            Outcome::Reset => self.reset += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::WrongBytes => self.wrong_bytes += 1,
            Outcome::Error => self.error += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.failed()
    }

    pub fn failed(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.wrong_bytes + self.error + self.dropped
    }

    fn add(&mut self, o: &Outcomes) {
        self.ok += o.ok;
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.wrong_bytes += o.wrong_bytes;
        self.error += o.error;
        self.dropped += o.dropped;
    }
}

/// One thread's tally; merged at the end.
pub struct Tally {
    pub outcomes: Outcomes,
    /// From the intended start (the schedule) to the end of the exchange: corrected for
    /// coordinated omission. Only ok exchanges are recorded.
    pub latency: Histogram<u64>,
    /// From the actual start to the end: what the exchange itself took.
    pub service: Histogram<u64>,
    /// Connections opened (connect succeeded).
    pub connections: u64,
    /// Worst lateness of the tool's own scheduler (conn mode): a large value means the load
    /// tool was too busy to keep the rate, and the run should not be trusted.
    pub max_dispatch_lag: Duration,
    /// Idle mode: connections still open at the end of the hold.
    pub held: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s, 3 significant figures; values beyond are clamped by saturating_record.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("fixed, valid histogram bounds")
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            outcomes: Outcomes::default(),
            latency: histogram(),
            service: histogram(),
            connections: 0,
            max_dispatch_lag: Duration::ZERO,
            held: 0,
        }
    }
}

impl Tally {
    pub fn record_ok(&mut self, latency: Duration, service: Duration) {
        self.outcomes.ok += 1;
        self.latency.saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
    }

    pub fn merge(&mut self, other: &Tally) {
        self.outcomes.add(&other.outcomes);
        // Same bounds on both sides: add cannot fail; a failure would only lose samples.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.connections += other.connections;
        self.max_dispatch_lag = self.max_dispatch_lag.max(other.max_dispatch_lag);
        self.held += other.held;
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, u64::MAX as u128) as u64
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The JSON report (`latency_us` and `service_us` in microseconds).
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub mode: crate::cli::Mode,
    pub exchange: crate::cli::Exchange,
    pub rate: f64,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub outcomes: Outcomes,
    pub exchanges: u64,
    pub failed: u64,
    pub per_second: f64,
    pub connections_opened: u64,
    pub held: u64,
    pub latency_us: Percentiles,
    pub service_us: Percentiles,
    pub max_dispatch_lag_us: u64,
}

impl Report {
    pub fn new(args: &crate::cli::Args, t: &Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            target: args.target.to_string(),
            mode: args.mode,
            exchange: args.exchange,
            rate: args.rate,
            connections: args.connections,
            threads: args.threads,
            duration_s: (secs * 1000.0).round() / 1000.0,
            outcomes: t.outcomes.clone(),
            exchanges: t.outcomes.total(),
            failed: t.outcomes.failed(),
            per_second: (t.outcomes.ok as f64 / secs).round(),
            connections_opened: t.connections,
            held: t.held,
            latency_us: Percentiles::of(&t.latency),
            service_us: Percentiles::of(&t.service),
            max_dispatch_lag_us: t.max_dispatch_lag.as_micros() as u64,
        }
    }

    /// A few lines for a person, on stderr.
    pub fn summary(&self) -> String {
        let o = &self.outcomes;
        format!(
            "{} {:?}/{:?}: {} exchanges in {:.1}s ({:.0}/s ok), failed {} \
             [refused {} reset {} timeout {} wrong_bytes {} error {} dropped {}]\n\
             latency µs (from schedule): p50 {} p99 {} p99.9 {} max {}; service p50 {} p99 {}; \
             held {}; max dispatch lag {} µs",
            self.target,
            self.mode,
            self.exchange,
            self.exchanges,
            self.duration_s,
            self.per_second,
            self.failed,
            o.refused,
            o.reset,
            o.timeout,
            o.wrong_bytes,
            o.error,
            o.dropped,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.p999,
            self.latency_us.max,
            self.service_us.p50,
            self.service_us.p99,
            self.held,
            self.max_dispatch_lag_us,
        )
    }
}
