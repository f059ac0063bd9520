//! Hot side: what a new connection on a shared address says first, read without consuming it.
//!
//! Parsers run once per new connection on a shared address; pure functions on a byte slice,
//! bounded, never panic. Several routes may listen on one address (issue 11); the worker
//! peeks at the client's first bytes and picks the route by the TLS server name
//! ([`tls::client_hello_sni`]), the HTTP/1.x `Host` and path ([`http::request_head`]), after
//! stripping a PROXY protocol header from a trusted source ([`proxy::parse`]).
//!
//! Each parser takes everything received so far and answers [`Peek::More`] until it can
//! decide, so the caller simply peeks again after the next read. The caller bounds the
//! buffer (32 KiB) and the time (`peek_timeout`); the parsers bound their own work by the
//! slice they are given (no parser looks past it, none allocates more than a few times its
//! length). Nothing here does I/O or keeps state between calls.

pub mod http;
pub mod proxy;
pub mod tls;

/// What a parser makes of the bytes a client has sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek<T> {
    /// Decided: the parsed value.
    Done(T),
    /// Undecided: these bytes are a prefix of a possibly valid message; read more and ask
    /// again with everything received so far.
    More,
    /// Not this protocol, or malformed; more bytes will not change that. The reason is a
    /// constant (no allocation on the hot path), for a debug log.
    Invalid(&'static str),
}

impl<T> Peek<T> {
    /// The value, if decided.
    pub fn done(self) -> Option<T> {
        match self {
            Peek::Done(t) => Some(t),
            Peek::More | Peek::Invalid(_) => None,
        }
    }
}

/// Longest host name accepted (RFC 1035 presentation form, without the trailing dot).
const MAX_HOST_LEN: usize = 253;
/// Longest label of a host name.
const MAX_LABEL_LEN: usize = 63;

/// A host name as routes match it: lower-cased, one trailing dot stripped; `None` unless it
/// is DNS-ish (ASCII letters, digits, `-` and `_`, non-empty labels of at most 63 bytes, at
/// most 253 bytes in all). Shared by the TLS and the HTTP parser so both name a host alike.
pub(crate) fn normalize_host(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return None;
    }
    let labels_ok = name
        .split(|&b| b == b'.')
        .all(|l| !l.is_empty() && l.len() <= MAX_LABEL_LEN);
    let chars_ok = name
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !(labels_ok && chars_ok) {
        return None;
    }
    // Every byte is ASCII, so this is valid UTF-8.
    let s = std::str::from_utf8(name).ok()?;
    Some(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_normalized() {
        assert_eq!(
            normalize_host(b"API.Example.COM."),
            Some("api.example.com".into())
        );
        assert_eq!(normalize_host(b"localhost"), Some("localhost".into()));
        assert_eq!(
            normalize_host(b"_acme-challenge.x.org"),
            Some("_acme-challenge.x.org".into())
        );
        assert_eq!(normalize_host(b"127.0.0.1"), Some("127.0.0.1".into()));
    }

    #[test]
    fn bad_host_names_are_refused() {
        for bad in [
            &b""[..],
            b".",
            b"a..b",
            b".a",
            b"a b",
            b"a\0b",
            b"caf\xc3\xa9.fr",
            b"a/b",
            b"a:80",
            b"a..",
        ] {
            assert_eq!(
                normalize_host(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_label = vec![b'a'; 64];
        assert_eq!(normalize_host(&long_label), None);
        let mut long = Vec::new();
        for _ in 0..64 {
            long.extend_from_slice(b"abc.");
        }
        assert!(long.len() > MAX_HOST_LEN);
        assert_eq!(normalize_host(&long), None);
        let max: Vec<u8> = std::iter::repeat_n(&b"abcdefghi."[..], 25)
            .flatten()
            .copied()
            .chain(*b"abc")
            .collect();
        assert_eq!(max.len(), MAX_HOST_LEN);
        assert!(normalize_host(&max).is_some());
    }
}
