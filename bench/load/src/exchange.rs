//! One exchange on a connection: an HTTP/1.1 GET (response parsed with httparse), an echo, or
//! a TLS ClientHello answered by anything, and how an I/O error maps to an [`Outcome`].

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{Args, Exchange};
use crate::report::Outcome;

/// What to send and what to expect, built once from the arguments.
pub struct Spec {
    kind: Exchange,
    /// HTTP request (keep-alive or `Connection: close`), the echo payload, or the ClientHello.
    request: Vec<u8>,
    expect_body: Option<Vec<u8>>,
    /// conn mode: after the answer, wait for the peer's close (HTTP) or half-close and wait
    /// for EOF (echo), so that the connection ends cleanly and the end is checked too.
    close: bool,
}

/// Largest HTTP response head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl Spec {
    pub fn new(args: &Args, close: bool) -> Self {
        let request = match args.exchange {
            Exchange::Http => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringway-load\r\n{}\r\n",
                args.path,
                args.target,
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes(),
            Exchange::Echo => (0..args.size).map(|i| (i % 251) as u8).collect(),
            Exchange::Hello => crate::hello::client_hello(&args.hello_sni),
        };
        Spec {
            kind: args.exchange,
            request,
            expect_body: args.expect_body.as_ref().map(|b| b.as_bytes().to_vec()),
            close,
        }
    }
}

/// Maps an I/O error to the outcome it stands for.
pub fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Outcome::Reset,
        io::ErrorKind::UnexpectedEof => Outcome::WrongBytes,
        io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

pub async fn connect(addr: SocketAddr) -> Result<TcpStream, Outcome> {
    let s = TcpStream::connect(addr).await.map_err(|e| classify(&e))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Does one exchange. `buf` is reused between calls. Returns when the answer is complete
/// (and, with `close`, when the connection has ended cleanly).
pub async fn run(s: &mut TcpStream, spec: &Spec, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    s.write_all(&spec.request).await.map_err(|e| classify(&e))?;
    match spec.kind {
        Exchange::Http => http_response(s, spec, buf).await?,
        Exchange::Echo => echo_back(s, spec, buf).await?,
        // the answer ends with the peer's close: nothing more to wait for
        Exchange::Hello => return any_answer(s, buf).await,
    }
    if spec.close {
        if spec.kind == Exchange::Echo {
            s.shutdown().await.map_err(|e| classify(&e))?;
        }
        expect_eof(s, buf).await?;
    }
    Ok(())
}

async fn echo_back(s: &mut TcpStream, spec: &Spec, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    buf.resize(spec.request.len(), 0);
    s.read_exact(buf).await.map_err(|e| classify(&e))?;
    if buf[..] != spec.request[..] {
        return Err(Outcome::WrongBytes);
    }
    Ok(())
}

async fn http_response(s: &mut TcpStream, spec: &Spec, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    buf.clear();
    let (head_len, status, body_len) = loop {
        read_more(s, buf).await?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (n, resp.code.unwrap_or(0), len);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return Err(Outcome::WrongBytes),
        }
    };
    // Without a Content-Length the body cannot be delimited on a kept-alive connection.
    let body_len = body_len.ok_or(Outcome::WrongBytes)?;
    let want = head_len + body_len;
    while buf.len() < want {
        read_more(s, buf).await?;
    }
    let body = &buf[head_len..];
    let body_ok = spec.expect_body.as_ref().is_none_or(|e| body == &e[..]);
    if !(200..300).contains(&status) || buf.len() != want || !body_ok {
        return Err(Outcome::WrongBytes);
    }
    Ok(())
}

/// Hello: reads until the peer closes; at least one byte must have come (at most MAX_HEAD).
async fn any_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    buf.clear();
    loop {
        buf.reserve(4096);
        match s.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Err(Outcome::WrongBytes),
            Ok(0) => return Ok(()),
            Ok(_) if buf.len() > MAX_HEAD => return Err(Outcome::WrongBytes),
            Ok(_) => {}
            Err(e) => return Err(classify(&e)),
        }
    }
}

/// Appends what the socket has to `buf`; EOF here means the answer was cut short.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    buf.reserve(4096);
    match s.read_buf(buf).await {
        Ok(0) => Err(Outcome::WrongBytes),
        Ok(_) => Ok(()),
        Err(e) => Err(classify(&e)),
    }
}

/// After the answer nothing more may come but a clean EOF.
async fn expect_eof(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Outcome> {
    buf.clear();
    buf.reserve(1);
    match s.read_buf(buf).await {
        Ok(0) => Ok(()),
        Ok(_) => Err(Outcome::WrongBytes),
        Err(e) => Err(classify(&e)),
    }
}
