//! Control side (the writer thread): an access log [`Record`] as a line of text or JSON.
//!
//! Text: ten space-separated fields in a fixed order, never empty (`-` where there is
//! nothing), like HAProxy's `tcplog`:
//! ```text
//! TIME CLIENT ROUTE LISTEN BACKEND BYTES_TO_BACKEND BYTES_TO_CLIENT DURATION_MS CONNECT_MS OUTCOME
//! 2026-11-29T18:02:03.456Z 10.0.0.7:51234 web 0.0.0.0:443 10.0.1.5:8443 517 4096 1234.567 0.412 clean
//! 2026-11-29T18:02:03.512Z 10.0.0.9:40022 web 0.0.0.0:443 - 0 0 0.004 - rejected:max_connections
//! ```
//! TIME is RFC 3339 in UTC with milliseconds, at the session's end; durations are
//! milliseconds with three decimals (microsecond resolution); OUTCOME is a session outcome
//! (`clean`, `client_reset`, `backend_reset`, `idle_timeout`, `connect_failed`, `drained`,
//! `shutdown`, `first_byte_timeout`, ...) or `rejected:REASON` (`max_connections`,
//! `backends_full`, `max_connections_per_source`, `runtime_max_connections`, `no_match`,
//! `proxy_untrusted`,
//! `proxy_malformed`). ROUTE is `-` for a connection a shared address refused before any
//! route took it.
//!
//! JSON: one object per line with the same fields (`time`, `client`, `route`, `listen`,
//! `backend`, `bytes_to_backend`, `bytes_to_client`, `duration_ms`, `connect_ms`, `outcome`,
//! `reason`); `null` where the text has `-`, `reason` only set for `rejected`.

use std::io::{self, Write};
use std::net::SocketAddr;

use serde::Serialize;

use super::Record;

/// Microseconds as milliseconds with three decimals.
struct Ms(u64);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// Writes `r` as one text line (with its newline). `route`: `None` for `-`.
pub fn text<W: Write>(w: &mut W, route: Option<&str>, r: &Record) -> io::Result<()> {
    write!(
        w,
        "{} {} {} {} ",
        humantime::format_rfc3339_millis(r.time),
        r.client,
        route.unwrap_or("-"),
        r.listen
    )?;
    match r.backend {
        Some(b) => write!(w, "{b} ")?,
        None => w.write_all(b"- ")?,
    }
    write!(w, "{} {} {} ", r.to_backend, r.to_client, Ms(r.duration_us))?;
    match r.connect_us {
        Some(c) => write!(w, "{} ", Ms(c))?,
        None => w.write_all(b"- ")?,
    }
    w.write_all(r.outcome.as_str().as_bytes())?;
    if let Some(reason) = r.outcome.reason() {
        write!(w, ":{reason}")?;
    }
    w.write_all(b"\n")
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: SocketAddr,
    route: Option<&'a str>,
    listen: SocketAddr,
    backend: Option<SocketAddr>,
    bytes_to_backend: u64,
    bytes_to_client: u64,
    duration_ms: f64,
    connect_ms: Option<f64>,
    outcome: &'static str,
    reason: Option<&'static str>,
}

/// Writes `r` as one JSON object and a newline. `route`: `None` for `null`.
pub fn json<W: Write>(w: &mut W, route: Option<&str>, r: &Record) -> io::Result<()> {
    let ms = |us: u64| us as f64 / 1000.0;
    let line = JsonLine {
        time: humantime::format_rfc3339_millis(r.time).to_string(),
        client: r.client,
        route,
        listen: r.listen,
        backend: r.backend,
        bytes_to_backend: r.to_backend,
        bytes_to_client: r.to_client,
        duration_ms: ms(r.duration_us),
        connect_ms: r.connect_us.map(ms),
        outcome: r.outcome.as_str(),
        reason: r.outcome.reason(),
    };
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::access_log::{LogOutcome, LogTag, Refusal};
    use crate::metrics::local::{Outcome, Rejected};

    fn record(outcome: LogOutcome) -> Record {
        Record {
            tag: LogTag(0),
            outcome,
            // 2026-11-29T18:02:03.456789Z
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_975_323_456_789),
            client: "10.0.0.7:51234".parse().unwrap(),
            listen: "0.0.0.0:443".parse().unwrap(),
            backend: Some("[2001:db8::5]:8443".parse().unwrap()),
            to_backend: 517,
            to_client: 4096,
            duration_us: 1_234_567,
            connect_us: Some(412),
        }
    }

    fn text_of(route: Option<&str>, r: &Record) -> String {
        let mut out = Vec::new();
        text(&mut out, route, r).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn json_of(route: Option<&str>, r: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        json(&mut out, route, r).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_lines_have_ten_fixed_fields() {
        let clean = record(LogOutcome::Ended(Outcome::Clean));
        assert_eq!(
            text_of(Some("web"), &clean),
            "2026-11-29T18:02:03.456Z 10.0.0.7:51234 web 0.0.0.0:443 [2001:db8::5]:8443 517 4096 1234.567 0.412 clean\n"
        );
        let refused = Record {
            backend: None,
            to_backend: 0,
            to_client: 0,
            duration_us: 4,
            connect_us: None,
            ..record(LogOutcome::Rejected(Refusal::MaxConnections))
        };
        assert_eq!(
            text_of(Some("web"), &refused),
            "2026-11-29T18:02:03.456Z 10.0.0.7:51234 web 0.0.0.0:443 - 0 0 0.004 - rejected:max_connections\n"
        );
        let door = record(LogOutcome::Rejected(Refusal::Door(Rejected::NoMatch)));
        let line = text_of(None, &door);
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(fields.len(), 10, "{line}");
        assert_eq!((fields[2], fields[9]), ("-", "rejected:no_match"));
        for o in Outcome::ALL {
            let line = text_of(Some("r"), &record(LogOutcome::Ended(o)));
            assert_eq!(line.trim_end().split(' ').nth(9), Some(o.as_str()));
        }
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let v = json_of(
            Some("web"),
            &record(LogOutcome::Ended(Outcome::BackendReset)),
        );
        assert_eq!(v["time"], "2026-11-29T18:02:03.456Z");
        assert_eq!(v["client"], "10.0.0.7:51234");
        assert_eq!(v["route"], "web");
        assert_eq!(v["listen"], "0.0.0.0:443");
        assert_eq!(v["backend"], "[2001:db8::5]:8443");
        assert_eq!(v["bytes_to_backend"], 517);
        assert_eq!(v["bytes_to_client"], 4096);
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["connect_ms"], 0.412);
        assert_eq!(v["outcome"], "backend_reset");
        assert!(v["reason"].is_null());
        let refused = Record {
            backend: None,
            connect_us: None,
            ..record(LogOutcome::Rejected(Refusal::Door(
                Rejected::ProxyUntrusted,
            )))
        };
        let v = json_of(None, &refused);
        assert!(v["route"].is_null() && v["backend"].is_null() && v["connect_ms"].is_null());
        assert_eq!(
            (v["outcome"].as_str(), v["reason"].as_str()),
            (Some("rejected"), Some("proxy_untrusted"))
        );
    }
}
