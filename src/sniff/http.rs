//! Hot side: the host and path of an HTTP/1.x request head, from the first bytes a client
//! sent.
//!
//! `httparse` parses the head (request line and headers) into a fixed array of 64 headers on
//! the stack; nothing is allocated but the two strings returned. Only HTTP/1.0 and HTTP/1.1
//! parse; anything else (HTTP/2's preface, TLS, binary) is `Invalid` as soon as a byte shows
//! it. The caller bounds the buffer (32 KiB): a head larger than that keeps returning
//! [`Peek::More`] until the caller gives up.

use super::{Peek, normalize_host};

/// Most headers a head may have.
pub const MAX_HEADERS: usize = 64;

/// What routing needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The `Host` header (or, without one, the authority of an absolute-form target):
    /// lower-cased, port and trailing dot stripped. An IPv6 literal keeps its brackets
    /// (`[::1]`). `None` when the request names no host (HTTP/1.0 without `Host`).
    pub host: Option<String>,
    /// The request target's path, without query or fragment: `/a/b` for `/a/b?c` and for
    /// `http://h/a/b?c`, `/` for `http://h`, `*` for `OPTIONS *`, empty for `CONNECT h:443`.
    /// Not percent-decoded (routes compare prefixes byte for byte).
    pub path: String,
}

/// The host and path of the request head at the start of `buf`.
pub fn request_head(buf: &[u8]) -> Peek<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Peek::More,
        Err(httparse::Error::TooManyHeaders) => return Peek::Invalid("too many headers"),
        Err(httparse::Error::Version) => return Peek::Invalid("not HTTP/1.x"),
        Err(_) => return Peek::Invalid("malformed HTTP request head"),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Peek::Invalid("malformed HTTP request head");
    };
    let mut host_header: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Peek::Invalid("two Host headers");
            }
            host_header = Some(h.value);
        }
    }
    let (authority, path) = if method == "CONNECT" {
        (Some(target), "")
    } else {
        split_target(target)
    };
    // An absolute-form target's authority wins over the Host header (RFC 9112 §3.2.2), as
    // the backend will read it; else the Host header (an empty one is allowed where the
    // target has no authority, §3.2).
    let host = authority
        .map(str::as_bytes)
        .filter(|a| !a.is_empty())
        .or_else(|| {
            host_header
                .map(<[u8]>::trim_ascii)
                .filter(|h| !h.is_empty())
        });
    let host = match host.map(host_without_port) {
        None => None,
        Some(Some(h)) => Some(h),
        Some(None) => return Peek::Invalid("Host is not a host name"),
    };
    Peek::Done(Head {
        host,
        path: path.to_string(),
    })
}

/// `(authority, path)` of a request target: origin-form `/p?q`, absolute-form
/// `scheme://authority/p?q`, or asterisk-form `*`.
fn split_target(target: &str) -> (Option<&str>, &str) {
    let (authority, rest) = match target.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (auth, path) = rest.split_at(end);
            // Userinfo is not part of the host.
            let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            (Some(auth), path)
        }
        _ => (None, target),
    };
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    if authority.is_some() && path.is_empty() {
        return (authority, "/");
    }
    (authority, path)
}

/// A `Host` value without its port, normalized; `None` when it is no host name.
fn host_without_port(value: &[u8]) -> Option<String> {
    if let Some(rest) = value.strip_prefix(b"[") {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        let close = rest.iter().position(|&b| b == b']')?;
        let (addr, after) = rest.split_at(close);
        let after = after.get(1..).unwrap_or_default();
        if !(after.is_empty() || is_port(after.strip_prefix(b":")?)) {
            return None;
        }
        let addr = std::str::from_utf8(addr).ok()?;
        let ip: std::net::Ipv6Addr = addr.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    let name = match value.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let (name, port) = value.split_at(colon);
            if !is_port(port.get(1..).unwrap_or_default()) {
                return None;
            }
            name
        }
        None => value,
    };
    normalize_host(name)
}

/// Digits only (an empty port is allowed by RFC 3986's grammar), at most 5.
fn is_port(p: &[u8]) -> bool {
    p.len() <= 5 && p.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(host: Option<&str>, path: &str) -> Peek<Head> {
        Peek::Done(Head {
            host: host.map(String::from),
            path: path.into(),
        })
    }

    #[test]
    fn host_with_port_is_stripped_and_lower_cased() {
        let req = b"GET /api/v1?x=1 HTTP/1.1\r\nHost: API.Example.com.:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(request_head(req), head(Some("api.example.com"), "/api/v1"));
    }

    #[test]
    fn ipv6_host_keeps_brackets_and_loses_port() {
        let req = b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n";
        assert_eq!(request_head(req), head(Some("[::1]"), "/"));
        let req = b"GET / HTTP/1.1\r\nHost: [0:0:0:0:0:0:0:1]\r\n\r\n";
        assert_eq!(request_head(req), head(Some("[::1]"), "/"));
        let req = b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n";
        assert!(matches!(request_head(req), Peek::Invalid(_)));
        let req = b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n";
        assert!(matches!(request_head(req), Peek::Invalid(_)));
    }

    #[test]
    fn absolute_form_gives_host_and_path() {
        let req = b"GET http://Proxy.Example:81/a/b?c#d HTTP/1.1\r\n\r\n";
        assert_eq!(request_head(req), head(Some("proxy.example"), "/a/b"));
        let req = b"GET http://user@h.example HTTP/1.1\r\n\r\n";
        assert_eq!(request_head(req), head(Some("h.example"), "/"));
        // The target's authority wins over a Host header (RFC 9112 §3.2.2: the backend
        // reads it so; routing by the Host would send it elsewhere than it asks).
        let req = b"GET http://a.example/p HTTP/1.1\r\nHost: b.example\r\n\r\n";
        assert_eq!(request_head(req), head(Some("a.example"), "/p"));
        let req = b"GET http://a.example/p HTTP/1.1\r\nHost:\r\n\r\n";
        assert_eq!(request_head(req), head(Some("a.example"), "/p"));
    }

    #[test]
    fn connect_and_asterisk_forms() {
        let req = b"CONNECT db.example:5432 HTTP/1.1\r\n\r\n";
        assert_eq!(request_head(req), head(Some("db.example"), ""));
        let req = b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(request_head(req), head(Some("x"), "*"));
    }

    #[test]
    fn no_host_is_none() {
        assert_eq!(request_head(b"GET /x HTTP/1.0\r\n\r\n"), head(None, "/x"));
    }

    #[test]
    fn every_prefix_of_a_head_is_more() {
        let req = b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc";
        let end = req.len() - 3;
        for cut in 0..end {
            assert_eq!(request_head(&req[..cut]), Peek::More, "cut at {cut}");
        }
        for cut in end..=req.len() {
            assert_eq!(
                request_head(&req[..cut]),
                head(Some("example.com"), "/upload")
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
            b"GET / FTP/1.1\r\n",
            b"GET\x00/ HTTP/1.1\r\n",
            b"\xff\xfe",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a:b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
        ] {
            assert!(
                matches!(request_head(bad), Peek::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn header_count_is_bounded() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            req.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        let mut ok = req.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(request_head(&ok), head(None, "/"));
        req.extend_from_slice(b"X-last: y\r\n\r\n");
        assert_eq!(request_head(&req), Peek::Invalid("too many headers"));
    }
}
