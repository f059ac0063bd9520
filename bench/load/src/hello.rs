//! A fixed TLS ClientHello carrying a server name, for `--exchange hello`: what a TLS client
//! sends first, so that a proxy routing by SNI (ringway's `[route.match] sni`, HAProxy's
//! `req.ssl_sni`) has to read and parse it before it can pick a backend.
//!
//! The bytes are shaped like a modern client's (TLS 1.3 offered through supported_versions,
//! TLS 1.2 as the legacy version, an x25519 key share) but nothing random: the random, the
//! session id and the key share are fixed patterns. No handshake ever completes; the backend
//! only has to answer some bytes.

/// The largest server name accepted (a DNS name is at most 253 characters).
pub const MAX_NAME: usize = 253;

/// Checks a server name for `--hello-sni`: 1 to 253 characters of letters, digits, `-`, `.`
/// and `_`, as in a DNS name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "--hello-sni must be 1 to {MAX_NAME} characters, got {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "--hello-sni: `{c}` is not allowed in a server name"
        ));
    }
    Ok(())
}

/// One TLS record holding one ClientHello handshake message with `name` in its server_name
/// extension. `name` must pass [`check_name`].
pub fn client_hello(name: &str) -> Vec<u8> {
    let name = name.as_bytes();
    let mut ext = Vec::with_capacity(160 + name.len());

    // server_name (0): a list of one host_name entry
    let mut sni = Vec::with_capacity(5 + name.len());
    put_u16(&mut sni, (3 + name.len()) as u16); // server_name_list length
    sni.push(0); // name_type host_name
    put_u16(&mut sni, name.len() as u16);
    sni.extend_from_slice(name);
    extension(&mut ext, 0x0000, &sni);

    // supported_groups (10): x25519, secp256r1, secp384r1
    extension(
        &mut ext,
        0x000a,
        &[0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
    );
    // ec_point_formats (11): uncompressed
    extension(&mut ext, 0x000b, &[0x01, 0x00]);
    // signature_algorithms (13)
    let sig: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let mut s = Vec::with_capacity(2 + 2 * sig.len());
    put_u16(&mut s, (2 * sig.len()) as u16);
    sig.iter().for_each(|a| put_u16(&mut s, *a));
    extension(&mut ext, 0x000d, &s);
    // supported_versions (43): TLS 1.3, TLS 1.2
    extension(&mut ext, 0x002b, &[0x04, 0x03, 0x04, 0x03, 0x03]);
    // psk_key_exchange_modes (45): psk_dhe_ke
    extension(&mut ext, 0x002d, &[0x01, 0x01]);
    // key_share (51): one x25519 share of 32 bytes (a fixed pattern, not a real key)
    let mut ks = Vec::with_capacity(38);
    put_u16(&mut ks, 36); // client_shares length
    put_u16(&mut ks, 0x001d);
    put_u16(&mut ks, 32);
    ks.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(0x40)));
    extension(&mut ext, 0x0033, &ks);

    let mut body = Vec::with_capacity(120 + ext.len());
    put_u16(&mut body, 0x0303); // legacy_version: TLS 1.2
    body.extend((0..32u8).map(|i| i.wrapping_mul(13).wrapping_add(1))); // random
    body.push(32); // legacy_session_id
    body.extend((0..32u8).map(|i| 0xa0 ^ i));
    let suites: [u16; 9] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8,
    ];
    put_u16(&mut body, (2 * suites.len()) as u16);
    suites.iter().for_each(|c| put_u16(&mut body, *c));
    body.extend_from_slice(&[0x01, 0x00]); // compression methods: null
    put_u16(&mut body, ext.len() as u16);
    body.extend_from_slice(&ext);

    let mut out = Vec::with_capacity(9 + body.len());
    out.push(0x16); // handshake record
    put_u16(&mut out, 0x0301); // record version, as clients send it
    put_u16(&mut out, (4 + body.len()) as u16);
    out.push(0x01); // client_hello
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    out
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_u16(out, kind);
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::{MAX_NAME, check_name, client_hello};
    use tls_parser::{
        TlsExtension, TlsMessage, TlsMessageHandshake, TlsVersion, parse_tls_extensions,
        parse_tls_plaintext,
    };

    /// Parses `bytes` as one TLS record with a ClientHello; returns its server names and
    /// whether TLS 1.3 is offered.
    fn parse(bytes: &[u8]) -> (Vec<String>, bool) {
        let (rest, rec) = parse_tls_plaintext(bytes).expect("a TLS plaintext record");
        assert!(rest.is_empty(), "{} bytes after the record", rest.len());
        assert_eq!(rec.msg.len(), 1);
        let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = &rec.msg[0] else {
            panic!("not a ClientHello: {:?}", rec.msg[0]);
        };
        assert_eq!(ch.version, TlsVersion::Tls12);
        assert_eq!(ch.ciphers.len(), 9);
        let (rest, exts) =
            parse_tls_extensions(ch.ext.expect("extensions")).expect("extensions parse");
        assert!(rest.is_empty());
        let mut names = Vec::new();
        let mut tls13 = false;
        let mut key_share = false;
        for e in &exts {
            match e {
                TlsExtension::SNI(list) => names.extend(list.iter().map(|(t, n)| {
                    assert_eq!(t.0, 0, "host_name");
                    String::from_utf8(n.to_vec()).expect("ASCII")
                })),
                TlsExtension::SupportedVersions(v) => tls13 = v.contains(&TlsVersion::Tls13),
                TlsExtension::KeyShare(ks) => key_share = ks.len() == 38,
                _ => {}
            }
        }
        assert!(key_share, "an x25519 key share of 32 bytes");
        (names, tls13)
    }

    #[test]
    fn parses_as_a_client_hello_with_the_name() {
        for name in ["bench.test", "a", "api.example.com", &"x".repeat(MAX_NAME)] {
            let (names, tls13) = parse(&client_hello(name));
            assert_eq!(names, [name.to_string()]);
            assert!(tls13, "TLS 1.3 offered");
        }
    }

    #[test]
    fn lengths_are_consistent() {
        let b = client_hello("bench.test");
        assert_eq!(&b[..3], &[0x16, 0x03, 0x01]);
        let rec = u16::from_be_bytes([b[3], b[4]]) as usize;
        assert_eq!(rec + 5, b.len());
        let hs = u32::from_be_bytes([0, b[6], b[7], b[8]]) as usize;
        assert_eq!(b[5], 1);
        assert_eq!(hs + 9, b.len());
        // one name longer: the record grows by exactly one byte
        assert_eq!(client_hello("bench.tests").len(), b.len() + 1);
        // fixed: the same name gives the same bytes
        assert_eq!(client_hello("bench.test"), b);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("bench.test").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("é.test").is_err());
    }
}
