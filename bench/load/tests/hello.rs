//! `--exchange hello` (a TLS ClientHello per new connection) and `--closed-loop`, against a
//! server on 127.0.0.1 that parses what it receives with tls-parser, as an SNI-routing proxy
//! would, and answers only when the server name is the one it expects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::thread;

use serde_json::Value;
use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_extensions, parse_tls_plaintext,
};

/// The server name in a whole ClientHello record, if `buf` is one.
fn sni_of(buf: &[u8]) -> Option<String> {
    let (_, rec) = parse_tls_plaintext(buf).ok()?;
    let Some(TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch))) = rec.msg.first() else {
        return None;
    };
    let (_, exts) = parse_tls_extensions(ch.ext?).ok()?;
    exts.iter().find_map(|e| match e {
        TlsExtension::SNI(list) => list
            .first()
            .and_then(|(_, n)| String::from_utf8(n.to_vec()).ok()),
        _ => None,
    })
}

/// Reads one TLS record (5-byte header, then its length); answers a short HTTP 400 (what a
/// plain HTTP origin such as nginx answers to TLS bytes) and closes when it is a ClientHello
/// for bench.test, closes without a word otherwise.
fn sni_server(mut s: TcpStream) {
    let mut buf = vec![0u8; 5];
    if s.read_exact(&mut buf).is_err() {
        return;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    buf.resize(5 + len, 0);
    if s.read_exact(&mut buf[5..]).is_err() {
        return;
    }
    if sni_of(&buf).as_deref() == Some("bench.test") {
        let _ = s.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
}

fn server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || sni_server(s));
        }
    });
    addr
}

fn load(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringway-load"))
        .args(args)
        .output()
        .expect("run ringway-load");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, v, stderr)
}

fn n(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

#[test]
fn closed_loop_hello_is_answered() {
    let t = server().to_string();
    let (code, v, err) = load(&[
        "-t",
        &t,
        "-m",
        "conn",
        "--closed-loop",
        "-c",
        "4",
        "-x",
        "hello",
        "--hello-sni",
        "bench.test",
        "-d",
        "500ms",
        "--fail-on-error",
    ]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    let ok = n(&v, "outcomes.ok");
    assert!(ok > 20, "{v}");
    // a new connection for every exchange
    assert_eq!(n(&v, "connections_opened"), ok, "{v}");
    assert_eq!(v["exchange"], "hello", "{v}");
}

#[test]
fn open_loop_hello_keeps_to_the_rate() {
    let t = server().to_string();
    let (code, v, err) = load(&[
        "-t", &t, "-m", "conn", "-r", "200", "-x", "hello", "-d", "500ms",
    ]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(n(&v, "failed"), 0, "{v}");
    let ok = n(&v, "outcomes.ok");
    assert!(ok > 0 && ok <= 101, "{v}");
    assert_eq!(n(&v, "connections_opened"), ok, "{v}");
}

#[test]
fn another_name_gets_no_answer_and_is_wrong_bytes() {
    let t = server().to_string();
    let (code, v, err) = load(&[
        "-t",
        &t,
        "-m",
        "conn",
        "--closed-loop",
        "-c",
        "1",
        "-x",
        "hello",
        "--hello-sni",
        "other.test",
        "-d",
        "200ms",
        "--fail-on-error",
    ]);
    assert_eq!(code, 1, "{v} {err}");
    assert!(n(&v, "outcomes.wrong_bytes") > 0, "{v}");
    assert_eq!(n(&v, "outcomes.ok"), 0, "{v}");
}

#[test]
fn bad_arguments_exit_64() {
    let cases: [(&[&str], &str); 5] = [
        (&["-m", "keepalive", "-x", "hello"], "--exchange hello"),
        (
            &[
                "-m",
                "conn",
                "-x",
                "hello",
                "-r",
                "10",
                "--hello-sni",
                "a b",
            ],
            "--hello-sni",
        ),
        (
            &["-m", "conn", "--closed-loop", "-r", "10"],
            "--closed-loop",
        ),
        (&["-m", "keepalive", "--closed-loop"], "--closed-loop"),
        (
            &["-m", "conn", "--closed-loop", "-c", "1", "--threads", "2"],
            "--connections",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["-t", "127.0.0.1:1"];
        all.extend_from_slice(args);
        let (code, _, err) = load(&all);
        assert_eq!(code, 64, "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
    }
}
