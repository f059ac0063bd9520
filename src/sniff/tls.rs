//! Hot side: the server name (SNI) of a TLS ClientHello, from the first bytes a client sent.
//!
//! The record layer is reassembled here; `tls-parser` parses the ClientHello body and its
//! extensions. A ClientHello is one handshake message, but the client may frame it in
//! several handshake records (RFC 8446 §5.1: "a single message MAY be fragmented across
//! several records"), and TCP may cut anywhere, so the bytes are walked record by record
//! until the handshake message's declared length is complete. Only then are the record
//! payloads joined (no copy when one record holds the whole message, the usual case).
//!
//! Bounds: a record may carry at most 16 KiB + 2 KiB, a ClientHello at most 64 KiB. The
//! caller bounds its buffer (32 KiB): a ClientHello larger than that buffer keeps returning
//! [`Peek::More`] until the buffer is full or `peek_timeout` runs out, and the caller gives
//! up (`too_large`).

use tls_parser::{
    SNIType, TlsExtension, TlsMessageHandshake, parse_tls_client_hello_extension,
    parse_tls_handshake_msg_client_hello,
};

use super::{Peek, normalize_host};

/// TLS record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// A record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// A handshake header: type, length (3).
const HANDSHAKE_HEADER: usize = 4;
/// Largest record payload accepted: 2^14 plus the 2 KiB that TLSCiphertext may add (RFC 8446
/// §5.2); a plaintext ClientHello record is never longer, so more is not TLS.
pub const MAX_RECORD: usize = 16384 + 2048;
/// Largest ClientHello body accepted (real ones are under 2 KiB; post-quantum key shares
/// bring them to a few KiB).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The server name a ClientHello asks for: `Done(Some(name))` lower-cased without a trailing
/// dot, `Done(None)` for a valid ClientHello without `server_name`, `More` while the
/// ClientHello is incomplete (split across TCP reads or records), `Invalid` for anything that
/// is not a TLS ClientHello, or whose server name is not a DNS-ish host name.
pub fn client_hello_sni(buf: &[u8]) -> Peek<Option<String>> {
    match reassemble(buf) {
        Reassembled::More => Peek::More,
        Reassembled::Invalid(why) => Peek::Invalid(why),
        Reassembled::Borrowed(msg) => server_name(msg),
        Reassembled::Joined(msg) => server_name(&msg),
    }
}

/// The handshake message, once complete.
enum Reassembled<'a> {
    More,
    Invalid(&'static str),
    /// Header and body, inside one record.
    Borrowed(&'a [u8]),
    /// Header and body, joined from several records.
    Joined(Vec<u8>),
}

/// Walks the records of `buf` until the first handshake message is complete. Each record
/// takes at least 6 bytes of `buf`, so the walk is bounded by its length.
fn reassemble(buf: &[u8]) -> Reassembled<'_> {
    let mut header = [0u8; HANDSHAKE_HEADER];
    // Payload bytes of the records walked so far.
    let mut got = 0usize;
    // Handshake header plus body, once the header is known.
    let mut needed: Option<usize> = None;
    let mut records = 0usize;
    let mut at = 0usize;
    while needed.is_none_or(|n| got < n) {
        let rec = buf.get(at..).unwrap_or_default();
        let len = match record_header(rec) {
            Err(why) => return Reassembled::Invalid(why),
            Ok(None) => return Reassembled::More,
            Ok(Some(len)) => len,
        };
        let end = RECORD_HEADER + len;
        let Some(payload) = rec.get(RECORD_HEADER..end) else {
            // Say no early when the first payload byte already shows another message.
            if got == 0
                && let Some(&t) = rec.get(RECORD_HEADER)
                && t != CLIENT_HELLO
            {
                return Reassembled::Invalid("handshake message is not a ClientHello");
            }
            return Reassembled::More;
        };
        // The handshake header itself may be split across records.
        for (slot, &b) in header.iter_mut().skip(got).zip(payload) {
            *slot = b;
        }
        got += len;
        records += 1;
        at += end;
        if header[0] != CLIENT_HELLO {
            return Reassembled::Invalid("handshake message is not a ClientHello");
        }
        if needed.is_none() && got >= HANDSHAKE_HEADER {
            let [_, b1, b2, b3] = header;
            let body = u32::from_be_bytes([0, b1, b2, b3]) as usize;
            if body > MAX_CLIENT_HELLO {
                return Reassembled::Invalid("ClientHello longer than 64 KiB");
            }
            needed = Some(HANDSHAKE_HEADER + body);
        }
    }
    match needed {
        Some(total) => join(buf, records, total),
        None => Reassembled::Invalid("no handshake header"),
    }
}

/// The payload length of the record at the start of `rec`, once its header is complete:
/// `Ok(None)` while it is not.
fn record_header(rec: &[u8]) -> Result<Option<usize>, &'static str> {
    // Check each byte as soon as it arrives: "GET " must not wait for five bytes.
    if let Some(&t) = rec.first()
        && t != CONTENT_HANDSHAKE
    {
        return Err("not a TLS handshake record");
    }
    if let Some(&major) = rec.get(1)
        && major != 3
    {
        return Err("not a TLS record version");
    }
    let Some(&[_, _, _, hi, lo]) = rec.get(..RECORD_HEADER) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Err("empty handshake record");
    }
    if len > MAX_RECORD {
        return Err("TLS record longer than 18 KiB");
    }
    Ok(Some(len))
}

/// The handshake message (`total` bytes, header included) from the payloads of the first
/// `records` records.
fn join(buf: &[u8], records: usize, total: usize) -> Reassembled<'_> {
    if let Some(&[_, _, _, hi, lo]) = buf.get(..RECORD_HEADER) {
        let first = usize::from(u16::from_be_bytes([hi, lo]));
        if first >= total {
            return match buf.get(RECORD_HEADER..RECORD_HEADER + total) {
                Some(msg) => Reassembled::Borrowed(msg),
                None => Reassembled::Invalid("record walk out of bounds"),
            };
        }
    }
    let mut msg = Vec::with_capacity(total);
    let mut at = 0usize;
    for _ in 0..records {
        let len = match buf.get(at + 3..at + 5) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Reassembled::Invalid("record walk out of bounds"),
        };
        let Some(payload) = buf.get(at + RECORD_HEADER..at + RECORD_HEADER + len) else {
            return Reassembled::Invalid("record walk out of bounds");
        };
        let take = payload.len().min(total - msg.len());
        msg.extend_from_slice(payload.get(..take).unwrap_or_default());
        at += RECORD_HEADER + len;
    }
    if msg.len() != total {
        return Reassembled::Invalid("record walk out of bounds");
    }
    Reassembled::Joined(msg)
}

/// The server name of a complete ClientHello handshake message (header included).
fn server_name(msg: &[u8]) -> Peek<Option<String>> {
    let Some(body) = msg.get(HANDSHAKE_HEADER..) else {
        return Peek::Invalid("no handshake header");
    };
    // The extensions block is optional, so a body cut inside it parses without one: bytes
    // left over mean the declared lengths disagree.
    let hello = match parse_tls_handshake_msg_client_hello(body) {
        Ok(([], TlsMessageHandshake::ClientHello(hello))) => hello,
        Ok(_) | Err(_) => return Peek::Invalid("malformed ClientHello"),
    };
    let Some(mut ext) = hello.ext else {
        return Peek::Done(None);
    };
    let mut name: Option<&[u8]> = None;
    let mut seen_sni = false;
    while !ext.is_empty() {
        let (rest, e) = match parse_tls_client_hello_extension(ext) {
            Ok(parsed) => parsed,
            Err(_) => return Peek::Invalid("malformed ClientHello extension"),
        };
        ext = rest;
        let TlsExtension::SNI(list) = e else {
            continue;
        };
        if seen_sni {
            return Peek::Invalid("two server_name extensions");
        }
        seen_sni = true;
        name = list
            .iter()
            .find(|(t, _)| *t == SNIType::HostName)
            .map(|&(_, n)| n);
    }
    match name {
        None => Peek::Done(None),
        Some(raw) => match normalize_host(raw) {
            Some(host) => Peek::Done(Some(host)),
            None => Peek::Invalid("server_name is not a host name"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl s_client -servername api.example.com` (TLS 1.3, one record).
    const OPENSSL_SNI: &[u8] = include_bytes!("../../tests/fuzz/corpus/tls/openssl-sni.bin");
    /// `openssl s_client -noservername`.
    const OPENSSL_NO_SNI: &[u8] = include_bytes!("../../tests/fuzz/corpus/tls/openssl-nosni.bin");
    /// `openssl s_client -tls1_2 -servername API.Example.COM.`.
    const OPENSSL_UPPER_DOT: &[u8] =
        include_bytes!("../../tests/fuzz/corpus/tls/openssl-tls12-upper-dot.bin");
    /// `curl https://www.example.org` (OpenSSL 3, TLS 1.3 with padding to 512 bytes).
    const CURL: &[u8] = include_bytes!("../../tests/fuzz/corpus/tls/curl-sni.bin");

    fn sni(name: &str) -> Peek<Option<String>> {
        Peek::Done(Some(name.into()))
    }

    /// The handshake message of a one-record ClientHello, re-framed into records of at most
    /// `size` payload bytes.
    fn reframe(hello: &[u8], size: usize) -> Vec<u8> {
        let msg = &hello[RECORD_HEADER..];
        let mut out = Vec::new();
        for chunk in msg.chunks(size) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn real_client_hellos() {
        assert_eq!(client_hello_sni(OPENSSL_SNI), sni("api.example.com"));
        assert_eq!(client_hello_sni(OPENSSL_NO_SNI), Peek::Done(None));
        assert_eq!(client_hello_sni(OPENSSL_UPPER_DOT), sni("api.example.com"));
        assert_eq!(client_hello_sni(CURL), sni("www.example.org"));
    }

    #[test]
    fn bytes_after_the_client_hello_are_ignored() {
        let mut more = OPENSSL_SNI.to_vec();
        more.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3]);
        assert_eq!(client_hello_sni(&more), sni("api.example.com"));
    }

    #[test]
    fn every_prefix_is_more() {
        for hello in [OPENSSL_SNI, OPENSSL_NO_SNI, CURL] {
            for cut in 0..hello.len() {
                assert_eq!(client_hello_sni(&hello[..cut]), Peek::More, "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_client_hello_over_many_records_parses() {
        for size in [1, 2, 3, 4, 5, 7, 100, 300] {
            let framed = reframe(OPENSSL_SNI, size);
            assert_eq!(
                client_hello_sni(&framed),
                sni("api.example.com"),
                "size {size}"
            );
            // Cut anywhere, it asks for more.
            for cut in 0..framed.len() {
                assert_eq!(
                    client_hello_sni(&framed[..cut]),
                    Peek::More,
                    "size {size} cut {cut}"
                );
            }
        }
        let framed = reframe(CURL, 1);
        assert_eq!(client_hello_sni(&framed), sni("www.example.org"));
    }

    #[test]
    fn not_tls_is_invalid_at_once() {
        assert!(matches!(client_hello_sni(b"G"), Peek::Invalid(_)));
        assert!(matches!(
            client_hello_sni(b"GET / HTTP/1.1\r\n"),
            Peek::Invalid(_)
        ));
        assert!(matches!(client_hello_sni(b"PROXY TCP4"), Peek::Invalid(_)));
        // Application data, alert, change cipher spec.
        for t in [20u8, 21, 23] {
            assert!(matches!(
                client_hello_sni(&[t, 3, 3, 0, 1, 0]),
                Peek::Invalid(_)
            ));
        }
        // SSL 2 style and a bad version major.
        assert!(matches!(client_hello_sni(&[22, 2, 0]), Peek::Invalid(_)));
        // A ServerHello (type 2) is not a ClientHello, even before its record is complete.
        assert!(matches!(
            client_hello_sni(&[22, 3, 3, 0, 50, 2]),
            Peek::Invalid(_)
        ));
        // ... or once a short first record shows it (found by the fuzzer: the whole input
        // must not say More where its prefix said Invalid).
        let short_first = [22, 3, 1, 0, 3, 0x39, 0xf0, 0xcc, 22, 3, 1, 0, 3, 0x58];
        assert!(matches!(
            client_hello_sni(&short_first[..8]),
            Peek::Invalid(_)
        ));
        assert!(matches!(client_hello_sni(&short_first), Peek::Invalid(_)));
    }

    #[test]
    fn lying_lengths_are_caught() {
        // A record longer than TLS allows.
        assert!(matches!(
            client_hello_sni(&[22, 3, 1, 0x48, 0x01]),
            Peek::Invalid(_)
        ));
        // An empty record.
        assert!(matches!(
            client_hello_sni(&[22, 3, 1, 0, 0]),
            Peek::Invalid(_)
        ));
        // A ClientHello longer than 64 KiB.
        assert!(matches!(
            client_hello_sni(&[22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x01]),
            Peek::Invalid(_)
        ));
        // A handshake length shorter than the body: the body does not parse.
        let mut short = OPENSSL_SNI.to_vec();
        let declared = u16::from_be_bytes([short[7], short[8]]) - 60;
        short[7..9].copy_from_slice(&declared.to_be_bytes());
        assert!(matches!(client_hello_sni(&short), Peek::Invalid(_)));
        // A record length longer than the bytes: more is needed.
        let mut long = OPENSSL_SNI.to_vec();
        long[4] = long[4].wrapping_add(10);
        assert_eq!(client_hello_sni(&long), Peek::More);
        // A second record of another content type inside the ClientHello.
        let mut framed = reframe(OPENSSL_SNI, 100);
        framed[105] = 23;
        assert!(matches!(client_hello_sni(&framed), Peek::Invalid(_)));
    }

    #[test]
    fn bad_server_names_are_invalid() {
        let name_at = OPENSSL_SNI
            .windows(15)
            .position(|w| w == b"api.example.com")
            .expect("the capture holds the name");
        for (i, bad) in [b'\0', b' ', b'/', 0xc3].into_iter().enumerate() {
            let mut hello = OPENSSL_SNI.to_vec();
            hello[name_at + 3 + i] = bad;
            assert!(
                matches!(client_hello_sni(&hello), Peek::Invalid(_)),
                "byte {bad:#x}"
            );
        }
    }
}
