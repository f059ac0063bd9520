//! Hot side: the PROXY protocol header (v1 text or v2 binary, told apart by their
//! signatures) that a trusted load balancer sends before the client's bytes, and the header
//! ringway sends to a backend that asked for one.
//!
//! Framing is decided here and `ppp` parses only complete headers: its own partial-input
//! answers depend on where the input was cut (a v1 line cut inside an address reads as an
//! invalid address, not as "incomplete"), so the v1 line is complete once its `\n` has
//! arrived (at most 107 bytes, the spec's bound, CRLF included), and the v2 header once its
//! 16-byte fixed part and the length it declares have. A v2 header is at most
//! 16 + 65,535 bytes; the caller's buffer (32 KiB) bounds what it waits for, as for TLS.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use ppp::v2::{self, Command};

use super::Peek;

/// The v1 signature.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, `\r\n` included (spec §2.1).
pub const V1_MAX: usize = 107;
/// The v2 signature.
const V2_PREFIX: &[u8] = v2::PROTOCOL_PREFIX;
/// The v2 fixed part: signature, version and command, family and protocol, length (2).
const V2_FIXED: usize = 16;

/// A PROXY header's framing and the connection it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes the header takes at the start of the stream (the caller strips them).
    pub len: usize,
    /// The client as the proxy in front saw it; `None` for v1 `UNKNOWN`, v2 `LOCAL`, and v2
    /// families without IP addresses (unspecified, unix).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, `None` alike.
    pub destination: Option<SocketAddr>,
}

/// Which PROXY protocol version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// The PROXY header at the start of `buf`, v1 or v2.
pub fn parse(buf: &[u8]) -> Peek<ProxyHeader> {
    if starts_like(buf, V1_PREFIX) {
        v1_header(buf)
    } else if starts_like(buf, V2_PREFIX) {
        v2_header(buf)
    } else {
        Peek::Invalid("no PROXY header")
    }
}

/// `buf` starts with `prefix`, or is a prefix of it.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf.get(..n) == prefix.get(..n)
}

fn v1_header(buf: &[u8]) -> Peek<ProxyHeader> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or_default();
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if window.len() >= V1_MAX {
            return Peek::Invalid("PROXY v1 line longer than 107 bytes");
        }
        // Say no early to bytes no v1 line holds (a \r may only precede the \n).
        let text = window.strip_suffix(b"\r").unwrap_or(window);
        return if v1_text(text) {
            Peek::More
        } else {
            Peek::Invalid("malformed PROXY v1 line")
        };
    };
    let len = nl + 1;
    let Some(line) = buf.get(..len) else {
        return Peek::Invalid("malformed PROXY v1 line");
    };
    // ppp skips whatever follows UNKNOWN; the spec allows only the same printable fields.
    match line.strip_suffix(b"\r\n") {
        Some(text) if v1_text(text) => {}
        _ => return Peek::Invalid("malformed PROXY v1 line"),
    }
    let header = match ppp::v1::Header::try_from(line) {
        Ok(h) => h,
        Err(_) => return Peek::Invalid("malformed PROXY v1 line"),
    };
    // ppp stops at the first \r; the line must be all of it.
    if header.header.len() != len {
        return Peek::Invalid("malformed PROXY v1 line");
    }
    let (source, destination) = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Unknown => (None, None),
    };
    Peek::Done(ProxyHeader {
        len,
        source,
        destination,
    })
}

/// What a v1 line holds before its CRLF: printable ASCII and spaces.
fn v1_text(text: &[u8]) -> bool {
    text.iter().all(|&b| b.is_ascii_graphic() || b == b' ')
}

fn v2_header(buf: &[u8]) -> Peek<ProxyHeader> {
    // Version 2 lives in the high nibble of byte 12; say no as soon as it shows otherwise.
    if let Some(&vc) = buf.get(V2_PREFIX.len())
        && (vc >> 4 != 2 || vc & 0x0f > 1)
    {
        return Peek::Invalid("unsupported PROXY v2 version or command");
    }
    let Some(&[hi, lo]) = buf.get(V2_FIXED - 2..V2_FIXED) else {
        return Peek::More;
    };
    let len = V2_FIXED + usize::from(u16::from_be_bytes([hi, lo]));
    let Some(bytes) = buf.get(..len) else {
        return Peek::More;
    };
    let header = match v2::Header::try_from(bytes) {
        Ok(h) => h,
        Err(_) => return Peek::Invalid("malformed PROXY v2 header"),
    };
    let (source, destination) = match (header.command, header.addresses) {
        (Command::Local, _) => (None, None),
        (Command::Proxy, v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (Command::Proxy, v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        (Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => (None, None),
    };
    Peek::Done(ProxyHeader {
        len,
        source,
        destination,
    })
}

/// Appends the PROXY header for a client `src` that connected to `dst` to `out`. When one
/// address is IPv4 and the other IPv6, the IPv4 one is written IPv4-mapped (`::ffff:a.b.c.d`)
/// so that both are of one family, as the protocol requires.
pub fn encode(v: ProxyVersion, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = same_family(src, dst);
    match v {
        ProxyVersion::V1 => {
            use std::io::Write;
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            // Writing to a Vec cannot fail.
            let _ = write!(
                out,
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            );
        }
        ProxyVersion::V2 => encode_v2(src, dst, out),
    }
}

/// Both addresses as one family: IPv4 when both are, else IPv6 (IPv4 ones mapped).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        return (src, dst);
    }
    let v6 = |a: SocketAddr| -> SocketAddr {
        match a.ip() {
            IpAddr::V4(ip) => SocketAddrV6::new(ip.to_ipv6_mapped(), a.port(), 0, 0).into(),
            IpAddr::V6(_) => a,
        }
    };
    (v6(src), v6(dst))
}

/// The v2 header (PROXY command, TCP) for two addresses of one family. Written by hand: it is
/// 28 or 52 fixed bytes, and `ppp`'s builder returns an `io::Result` for a failure that two
/// addresses cannot cause; the tests check the bytes against that builder.
fn encode_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(V2_PREFIX);
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let ip6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&ip6(src).octets());
            out.extend_from_slice(&ip6(dst).octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn done(len: usize, src: Option<&str>, dst: Option<&str>) -> Peek<ProxyHeader> {
        Peek::Done(ProxyHeader {
            len,
            source: src.map(addr),
            destination: dst.map(addr),
        })
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h),
            done(45, Some("192.0.2.1:56324"), Some("198.51.100.2:443"))
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert_eq!(
            parse(h),
            done(h.len(), Some("[2001:db8::1]:1"), Some("[::1]:65535"))
        );
        let h = b"PROXY UNKNOWN\r\n\x16\x03\x01";
        assert_eq!(parse(h), done(15, None, None));
        let h = b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n";
        assert_eq!(parse(h), done(h.len(), None, None));
    }

    #[test]
    fn v2_proxy_and_local() {
        let mut h = V2_PREFIX.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 1, 127, 0, 0, 2, 0, 80, 1, 187]);
        h.extend_from_slice(b"payload");
        assert_eq!(
            parse(&h),
            done(28, Some("127.0.0.1:80"), Some("127.0.0.2:443"))
        );

        // LOCAL (a health check from the balancer), with a TLV it should skip.
        let mut h = V2_PREFIX.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0, 4, 0x04, 0, 1, 42]);
        assert_eq!(parse(&h), done(20, None, None));

        // TLVs after the addresses count in `len`.
        let mut h = V2_PREFIX.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 16, 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2]);
        h.extend_from_slice(&[0x04, 0, 1, 0]);
        assert_eq!(parse(&h), done(32, Some("10.0.0.1:1"), Some("10.0.0.2:2")));

        // Unix sockets have no IP addresses.
        let mut h = V2_PREFIX.to_vec();
        h.extend_from_slice(&[0x21, 0x31, 0, 216]);
        h.extend_from_slice(&[0; 216]);
        assert_eq!(parse(&h), done(232, None, None));
    }

    #[test]
    fn round_trip_v1_and_v2() {
        let pairs = [
            ("192.0.2.1:56324", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[::1]:65535"),
            ("[2001:db8::1]:1", "10.1.2.3:8443"),
            ("10.1.2.3:0", "[fe80::1]:80"),
        ];
        for (s, d) in pairs {
            let (s, d) = (addr(s), addr(d));
            let (ms, md) = same_family(s, d);
            for v in [ProxyVersion::V1, ProxyVersion::V2] {
                let mut out = b"prefix".to_vec();
                encode(v, s, d, &mut out);
                let header = &out[6..];
                let mut stream = header.to_vec();
                stream.extend_from_slice(b"client bytes");
                assert_eq!(
                    parse(&stream),
                    Peek::Done(ProxyHeader {
                        len: header.len(),
                        source: Some(ms),
                        destination: Some(md),
                    }),
                    "{v:?} {s} {d}"
                );
            }
        }
    }

    #[test]
    fn v2_encoding_matches_ppp_builder() {
        for (s, d) in [
            ("192.0.2.1:56324", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[::1]:65535"),
        ] {
            let (s, d) = (addr(s), addr(d));
            let mut ours = Vec::new();
            encode(ProxyVersion::V2, s, d, &mut ours);
            let theirs = v2::Builder::with_addresses(
                v2::Version::Two | Command::Proxy,
                v2::Protocol::Stream,
                (s, d),
            )
            .build()
            .expect("ppp builds a header");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn every_prefix_is_more() {
        let mut headers = vec![
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
        ];
        let mut v2 = Vec::new();
        encode(ProxyVersion::V2, addr("[::1]:1"), addr("[::2]:2"), &mut v2);
        headers.push(v2);
        for h in headers {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Peek::More, "{:?} cut at {cut}", h);
            }
            assert!(matches!(parse(&h), Peek::Done(ProxyHeader { len, .. }) if len == h.len()));
        }
    }

    #[test]
    fn garbage_is_invalid() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        let mut bad_version = V2_PREFIX.to_vec();
        bad_version.push(0x11);
        let mut bad_command = V2_PREFIX.to_vec();
        bad_command.push(0x22);
        let mut short_addresses = V2_PREFIX.to_vec();
        short_addresses.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01",
            b"PROXY",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\x00",
            &long,
            &bad_version,
            &bad_command,
            &short_addresses,
        ] {
            // "PROXY" alone is a prefix of the signature: More, not Invalid.
            if bad == b"PROXY" {
                assert_eq!(parse(bad), Peek::More);
                continue;
            }
            assert!(
                matches!(parse(bad), Peek::Invalid(_)),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        assert_eq!(parse(b"GET /"), Peek::Invalid("no PROXY header"));
    }
}
