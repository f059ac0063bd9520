//! Fuzzing on stable Rust: proptest-generated inputs for the parsers that read what the
//! network and operators send (see README.md beside this file).
//!
//! One test per target; each replays `corpus/<target>/` and then checks generated inputs:
//! a few hundred in a plain `cargo test`, as many as fit in `RINGWAY_FUZZ_SECONDS` when
//! that is set. Besides "does not panic, is fast, allocates sanely", each target checks
//! what its parser promises (a decision on a prefix holds for the whole input, names come
//! back normalized, an encoded header parses back, a valid configuration survives its own
//! `to_toml`).

#![deny(unsafe_code)]

mod alloc;
mod harness;
mod mutate;
mod structured;

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use harness::Target;
use ringway::sniff::Peek;
use ringway::sniff::http::{Head, request_head};
use ringway::sniff::proxy::{self, ProxyHeader, ProxyVersion};
use ringway::sniff::tls::client_hello_sni;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn no_extra_seeds() -> Vec<Vec<u8>> {
    Vec::new()
}

/// A parser's decision on a prefix of the input must be its decision on the whole input
/// (`More` promises exactly that): checked at two cuts derived from the input.
fn prefix_holds<T: PartialEq + Debug>(
    b: &[u8],
    parse: fn(&[u8]) -> Peek<T>,
) -> Result<&'static str, String> {
    let whole = parse(b);
    let label = match whole {
        Peek::Done(_) => "done",
        Peek::More => "more",
        Peek::Invalid(_) => "invalid",
    };
    if b.is_empty() {
        return Ok(label);
    }
    let h = b.iter().fold(7usize, |h, &x| {
        h.wrapping_mul(31).wrapping_add(usize::from(x))
    });
    for cut in [b.len() / 2, h % b.len()] {
        let part = parse(&b[..cut]);
        let agrees = match (&part, &whole) {
            (Peek::More, _) => true,
            (Peek::Done(p), Peek::Done(w)) => p == w,
            (Peek::Invalid(_), Peek::Invalid(_)) => true,
            _ => false,
        };
        if !agrees {
            return Err(format!(
                "the first {cut} bytes gave {part:?}, all {} bytes {whole:?}",
                b.len()
            ));
        }
    }
    Ok(label)
}

/// A host name as the parsers promise it: lower-case, no trailing dot, at most 253 bytes.
fn normalized(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.ends_with('.')
        && host
            .bytes()
            .all(|b| !b.is_ascii_uppercase() && b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!("host {host:?} is not normalized"))
    }
}

// ---- tls ----------------------------------------------------------------------------------

fn check_tls(b: &[u8]) -> Result<&'static str, String> {
    if let Peek::Done(Some(name)) = client_hello_sni(b) {
        normalized(&name)?;
        if name.contains(':') || name.contains('[') {
            return Err(format!("server name {name:?}"));
        }
    }
    prefix_holds(b, client_hello_sni)
}

#[test]
fn tls() {
    harness::run(&Target {
        name: "tls",
        words: &[
            &[0x16, 3, 1],
            &[0x16, 3, 3],
            &[0, 0],
            &[0, 0, 0, 0x14, 0, 0x12, 0, 0, 0x0f],
            &[1, 0, 1, 0],
            b"api.example.com",
            b"API.EXAMPLE.COM.",
            &[0xff, 0xff],
            &[0x0a, 0x0a, 0, 0],
            &[0x00],
        ],
        extra_seeds: tls_seeds,
        structured: None,
        check: check_tls,
    });
}

/// The captured ClientHello re-framed into records of a few sizes.
fn tls_seeds() -> Vec<Vec<u8>> {
    let hello: &[u8] = include_bytes!("corpus/tls/openssl-sni.bin");
    let msg = &hello[5..];
    [1usize, 3, 64]
        .iter()
        .map(|&size| {
            let mut out = Vec::new();
            for chunk in msg.chunks(size) {
                out.extend_from_slice(&[22, 3, 1]);
                out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                out.extend_from_slice(chunk);
            }
            out
        })
        .collect()
}

// ---- http ---------------------------------------------------------------------------------

fn check_http(b: &[u8]) -> Result<&'static str, String> {
    if let Peek::Done(Head {
        host: Some(host), ..
    }) = request_head(b)
    {
        normalized(&host)?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        if host.contains(':') && !bracketed {
            return Err(format!("host {host:?} kept its port"));
        }
    }
    prefix_holds(b, request_head)
}

#[test]
fn http() {
    harness::run(&Target {
        name: "http",
        words: &[
            b"GET ",
            b"CONNECT ",
            b"OPTIONS * ",
            b"http://",
            b" HTTP/1.1\r\n",
            b" HTTP/1.0\r\n",
            b"Host: ",
            b"host:",
            b"\r\n",
            b"\r\n\r\n",
            b"\n",
            b":",
            b":8080",
            b"[::1]",
            b"[",
            b"]",
            b"?",
            b"#",
            b"@",
            b"/",
            b".",
            b"\0",
            b"\t",
            b" ",
            b"PRI * HTTP/2.0",
        ],
        extra_seeds: no_extra_seeds,
        structured: None,
        check: check_http,
    });
}

// ---- proxy --------------------------------------------------------------------------------

fn check_proxy(b: &[u8]) -> Result<&'static str, String> {
    if let Peek::Done(ProxyHeader { len, .. }) = proxy::parse(b)
        && (len == 0 || len > b.len())
    {
        return Err(format!("len {len} of {} bytes", b.len()));
    }
    let label = prefix_holds(b, proxy::parse)?;
    round_trip(b)?;
    Ok(label)
}

/// Addresses made from the input's bytes, encoded both ways, must parse back.
fn round_trip(b: &[u8]) -> Result<(), String> {
    let mut bytes = [0u8; 38];
    for (slot, &x) in bytes.iter_mut().zip(b.iter().rev()) {
        *slot = x;
    }
    let ip = |at: usize, v6: bool| -> IpAddr {
        if v6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                bytes[at],
                bytes[at + 1],
                bytes[at + 2],
                bytes[at + 3],
            ))
        }
    };
    let src = SocketAddr::new(
        ip(0, bytes[36] & 1 == 1),
        u16::from_be_bytes([bytes[32], bytes[33]]),
    );
    let dst = SocketAddr::new(
        ip(16, bytes[36] & 2 == 2),
        u16::from_be_bytes([bytes[34], bytes[35]]),
    );
    let to_v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) if src.is_ipv4() != dst.is_ipv4() => {
            SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port())
        }
        _ => a,
    };
    for v in [ProxyVersion::V1, ProxyVersion::V2] {
        let mut out = Vec::new();
        proxy::encode(v, src, dst, &mut out);
        let n = out.len();
        out.extend_from_slice(b);
        let want = Peek::Done(ProxyHeader {
            len: n,
            source: Some(to_v6(src)),
            destination: Some(to_v6(dst)),
        });
        let got = proxy::parse(&out);
        if got != want {
            return Err(format!("{v:?} {src} -> {dst}: parsed back as {got:?}"));
        }
    }
    Ok(())
}

/// Headers for a few address pairs, each version.
fn proxy_seeds(v: ProxyVersion) -> Vec<Vec<u8>> {
    let pairs = [
        ("10.0.0.1:1", "10.0.0.2:65535"),
        ("[::1]:443", "[2001:db8::2]:0"),
        ("192.0.2.7:8080", "[::ffff:192.0.2.8]:80"),
    ];
    pairs
        .iter()
        .filter_map(|(s, d)| Some((s.parse().ok()?, d.parse().ok()?)))
        .map(|(s, d)| {
            let mut out = Vec::new();
            proxy::encode(v, s, d, &mut out);
            out
        })
        .collect()
}

#[test]
fn proxy_v1() {
    harness::run(&Target {
        name: "proxy_v1",
        words: &[
            b"PROXY ",
            b"TCP4 ",
            b"TCP6 ",
            b"UNKNOWN",
            b"\r\n",
            b"\r",
            b" ",
            b"127.0.0.1",
            b"::1",
            b"::ffff:1.2.3.4",
            b"65535",
            b"65536",
            b"0",
            b"00",
            b"-1",
        ],
        extra_seeds: || proxy_seeds(ProxyVersion::V1),
        structured: None,
        check: check_proxy,
    });
}

#[test]
fn proxy_v2() {
    harness::run(&Target {
        name: "proxy_v2",
        words: &[
            b"\r\n\r\n\x00\r\nQUIT\n",
            &[0x21],
            &[0x20],
            &[0x11],
            &[0x12],
            &[0x21, 0x11],
            &[0x21, 0x21],
            &[0x21, 0x31],
            &[0, 12],
            &[0, 36],
            &[0, 216],
            &[0xff, 0xff],
            &[0x04, 0, 1, 0],
            &[0x20, 0, 5, 1, 0, 0, 0, 0],
        ],
        extra_seeds: || proxy_seeds(ProxyVersion::V2),
        structured: None,
        check: check_proxy,
    });
}

// ---- configuration ------------------------------------------------------------------------

fn check_route_toml(b: &[u8]) -> Result<&'static str, String> {
    let text = String::from_utf8_lossy(b);
    let whole = match ringway::config::Config::parse(&text, "fuzz.toml") {
        Ok(config) => {
            // What `ringway check` prints must read back as the same configuration.
            let printed = config.to_toml();
            match ringway::config::Config::parse(&printed, "printed.toml") {
                Ok(again) if again.to_toml() == printed => {}
                Ok(again) => {
                    return Err(format!(
                        "to_toml is not stable:\n{printed}\n--- then ---\n{}",
                        again.to_toml()
                    ));
                }
                Err(e) => return Err(format!("to_toml does not parse back:\n{printed}\n{e}")),
            }
            true
        }
        Err(e) => {
            // Messages quote lines and spans of the input: build them all.
            let _ = e.to_string();
            false
        }
    };
    let one = match ringway::config::parse_route_toml(&text, "fuzz.toml") {
        Ok(route) => {
            let printed = route.to_toml();
            if let Err(e) = ringway::config::parse_route_toml(&printed, "printed.toml") {
                return Err(format!(
                    "RouteConfig::to_toml does not parse back:\n{printed}\n{e}"
                ));
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    };
    Ok(match (whole, one) {
        (true, true) => "valid config, valid route",
        (true, false) => "valid config",
        (false, true) => "valid route",
        (false, false) => "invalid",
    })
}

#[test]
fn route_toml() {
    harness::run(&Target {
        name: "route_toml",
        words: &[
            b"[[route]]\n",
            b"[route.match]\n",
            b"[route.health]\n",
            b"[route.switch]\n",
            b"[runtime]\n",
            b"[admin]\n",
            b"name = ",
            b"listen = ",
            b"backends = ",
            b"\"127.0.0.1:0\"",
            b"\"[::1]:8080\"",
            b"\"0.0.0.0:1\"",
            b"\"app.internal:8080\"",
            b"dns_resolver = ",
            b"dns_min_ttl = ",
            b"sni = ",
            b"host = ",
            b"path_prefix = ",
            b"source = ",
            b"proxy_protocol = ",
            b"\"v1\"",
            b"accept_proxy_from = ",
            b"peek_timeout = ",
            b"half_close_timeout = ",
            b"[route.keepalive]\n",
            b"user_timeout = ",
            b"[route.eject]\n",
            b"max_percent = ",
            b"max_time = ",
            b"connect_timeout = ",
            b"\"5s\"",
            b"\"0s\"",
            b"\"18446744073709551615s\"",
            b"\"*.example.com\"",
            b"\"127.0.0.0/8\"",
            b"\"::/0\"",
            b"workers = ",
            b"-1",
            b"9223372036854775807",
            b"1e309",
            b"nan",
            b"[",
            b"]",
            b"{",
            b"}",
            b"\"",
            b"'''",
            b"=",
            b",",
            b"\n",
            b"\xc3\xa9",
        ],
        extra_seeds: no_extra_seeds,
        structured: Some(structured::toml_config),
        check: check_route_toml,
    });
}

// ---- admin API bodies ---------------------------------------------------------------------

fn check_admin_json(b: &[u8]) -> Result<&'static str, String> {
    // PUT /routes/{name}
    let mut label = "not JSON";
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) {
        label = match ringway::config::parse_route_json("fuzz", &v) {
            Ok(route) => {
                let json = ringway::config::route_to_json(&route);
                if let Err(e) = ringway::config::parse_route_json("fuzz", &json) {
                    return Err(format!("route_to_json does not parse back:\n{json}\n{e}"));
                }
                "valid route"
            }
            Err(e) => {
                let _ = e.to_string();
                "invalid route"
            }
        };
    }
    // POST /routes/{name}/backends, POST .../switch, PATCH .../backends/{addr}
    if let Ok(a) = serde_json::from_slice::<ringway::api::AttachBody>(b) {
        let _ = a.addr.parse::<SocketAddr>();
        label = "attach body";
    }
    if serde_json::from_slice::<ringway::api::SwitchBody>(b).is_ok() {
        label = "switch body";
    }
    if serde_json::from_slice::<ringway::api::BackendPatch>(b).is_ok() {
        label = "backend patch";
    }
    Ok(label)
}

#[test]
fn admin_json() {
    harness::run(&Target {
        name: "admin_json",
        words: &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"addr\"",
            b"\"to\"",
            b"\"drain\"",
            b"\"check\"",
            b"\"name\"",
            b"\"listen\"",
            b"\"backends\"",
            b"\"match\"",
            b"\"sni\"",
            b"\"health\"",
            b"\"127.0.0.1:8082\"",
            b"\"\\u0000\"",
            b":",
            b",",
            b"true",
            b"null",
            b"1e999",
            b"-0",
            b"18446744073709551616",
            b"[[[[[[[[[[[[[[[[",
        ],
        extra_seeds: no_extra_seeds,
        structured: Some(structured::json_body),
        check: check_admin_json,
    });
}
