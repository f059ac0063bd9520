//! Control side: who may use the admin API — the source allowlist (checked first), a
//! per-source rate limit, and the bearer token (compared in constant time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use subtle::ConstantTimeEq;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    /// The unix socket (its file mode is the allowlist).
    Unix,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Unix => f.write_str("unix socket"),
        }
    }
}

/// Sources remembered by the rate limiter before idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// A token bucket per source: `rate` requests per second, bursts of `rate`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<Source, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one token of `source`; `Err(retry_after)` when it has none.
    pub fn take(&self, source: Source, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let source = bucket_key(source);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&source) {
            // A full bucket refilled long ago carries no information: forget those; if that
            // frees nothing, start over (memory stays bounded; budgets reset once).
            let rate = self.rate;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < rate
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(source).or_insert((self.rate, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The rate-limit key: an IPv6 source counts per /64 (one host may hold a whole /64).
fn bucket_key(source: Source) -> Source {
    match source {
        Source::Ip(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            Source::Ip(IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], s[3], 0, 0, 0, 0,
            )))
        }
        other => other,
    }
}

/// True when `source` may call the API at all.
pub fn source_allowed(allow: &[IpNet], source: Source) -> bool {
    match source {
        Source::Ip(ip) => crate::config::allowed(allow, ip),
        Source::Unix => true,
    }
}

/// True when the `Authorization` header carries the token (`Bearer <token>`).
pub fn token_ok(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    let given = given.trim_ascii();
    // `ct_eq` on slices of different lengths is false without comparing contents; the length
    // of the token is not a secret worth hiding.
    bool::from(given.ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let rl = RateLimiter::new(5);
        let a = Source::Ip("127.0.0.1".parse().unwrap());
        let b = Source::Ip("127.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rl.take(a, t0).is_ok());
        }
        let wait = rl.take(a, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200));
        // Another source is not affected.
        assert!(rl.take(b, t0).is_ok());
        // 200 ms later one more request is allowed.
        assert!(rl.take(a, t0 + Duration::from_millis(210)).is_ok());
    }

    #[test]
    fn token_needs_the_bearer_scheme_and_the_exact_value() {
        let t = "0123456789abcdef0123";
        assert!(token_ok(Some(b"Bearer 0123456789abcdef0123"), t));
        assert!(!token_ok(Some(b"Bearer 0123456789abcdef012"), t));
        assert!(!token_ok(Some(b"Bearer 0123456789abcdef01234"), t));
        assert!(!token_ok(Some(b"Basic 0123456789abcdef0123"), t));
        assert!(!token_ok(Some(b"0123456789abcdef0123"), t));
        assert!(!token_ok(None, t));
    }
}
