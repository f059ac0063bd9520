//! Command line of `ringway-load`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Open-loop TCP/HTTP load generator: per-connection outcomes and coordinated-omission-corrected
/// latency, as JSON.
#[derive(Debug, Clone, Parser)]
#[command(name = "ringway-load", version)]
pub struct Args {
    /// Address to load (host:port).
    #[arg(long, short = 't')]
    pub target: SocketAddr,

    /// conn: a new connection per exchange at --rate per second (open loop), or with
    /// --closed-loop on --connections connections one after the other, as fast as they go.
    /// keepalive: --connections connections repeating the exchange (open loop at --rate
    /// exchanges per second in total, or as fast as they can without --rate).
    /// idle: open --connections connections, send nothing, hold them for --duration.
    #[arg(long, short = 'm', value_enum)]
    pub mode: Mode,

    /// conn: new connections per second (0 with --closed-loop). keepalive: exchanges per second over all connections
    /// (0 = closed loop, as fast as possible). idle: connections opened per second (0 = all at once).
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,

    /// keepalive and idle: how many connections; conn with --closed-loop: how many in flight.
    #[arg(long, short = 'c', default_value_t = 10)]
    pub connections: usize,

    /// How long to measure (e.g. 10s, 500ms); idle: how long to hold the connections.
    #[arg(long, short = 'd', value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Run the load this long first without recording it.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// The exchange each connection does.
    #[arg(long, short = 'x', value_enum, default_value_t = Exchange::Http)]
    pub exchange: Exchange,

    /// http: the path to GET (the response must be 2xx with a Content-Length).
    #[arg(long, default_value = "/")]
    pub path: String,

    /// http: the exact body the response must carry (default: any).
    #[arg(long)]
    pub expect_body: Option<String>,

    /// echo: bytes sent per exchange; the same bytes must come back.
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Deadline for one exchange, connect included; past it the outcome is `timeout`.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub timeout: Duration,

    /// Load-generating threads, each with its own share of the rate and connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// conn mode: most connections in flight per thread; past it new ones are counted as
    /// `dropped` (the load tool, not the target, is overloaded).
    #[arg(long, default_value_t = 20_000)]
    pub max_inflight: usize,

    /// conn mode: no rate; --connections loops each open a new connection, do the exchange,
    /// close it and start over at once (closed loop, as wrk -H 'Connection: close' does).
    #[arg(long)]
    pub closed_loop: bool,

    /// hello: the server name the ClientHello carries.
    #[arg(long, default_value = "bench.test")]
    pub hello_sni: String,

    /// Exit 1 unless every exchange was ok.
    #[arg(long)]
    pub fail_on_error: bool,

    /// Pin thread i to CPU list item i (e.g. "0" or "0,1").
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Conn,
    Keepalive,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    /// HTTP/1.1 GET, response parsed with httparse.
    Http,
    /// Send --size bytes of a fixed pattern, expect them back.
    Echo,
    /// Send a fixed TLS ClientHello with --hello-sni as server name, then read whatever the
    /// backend answers until it closes: ok when at least one byte came back (the handshake is
    /// never completed; a plain HTTP origin answers 400 and closes). conn mode only.
    Hello,
}

/// Parses "250ms", "10s", "2m", "1.5s", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use us, ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err("--rate must be a number ≥ 0".into());
        }
        if self.closed_loop && self.mode != Mode::Conn {
            return Err("--closed-loop is for --mode conn".into());
        }
        if self.closed_loop && self.rate > 0.0 {
            return Err("--closed-loop takes no --rate (it goes as fast as it can)".into());
        }
        if self.mode == Mode::Conn && !self.closed_loop && self.rate <= 0.0 {
            return Err(
                "--mode conn needs --rate > 0 (new connections per second) or --closed-loop".into(),
            );
        }
        if (self.mode != Mode::Conn || self.closed_loop) && self.connections < self.threads {
            return Err("--connections must be at least --threads".into());
        }
        if self.exchange == Exchange::Hello {
            if self.mode != Mode::Conn {
                return Err(
                    "--exchange hello is for --mode conn (one ClientHello per connection)".into(),
                );
            }
            crate::hello::check_name(&self.hello_sni)?;
        }
        if self.exchange == Exchange::Echo && self.size == 0 {
            return Err("--size must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
