//! Control side: one health probe of one backend — a TCP connect, or an HTTP `GET path`
//! expecting a 2xx status — bounded by the check's timeout. Runs on the health thread's
//! tokio runtime, never on a worker.

use std::net::SocketAddr;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{Check, HealthConfig, format_duration};

/// Probes `addr` once. `Err` carries a reason an operator reads in `/status` and in the
/// 409 of a refused switch ("connection refused", "timed out after 1s", "HTTP 500 on /health").
pub async fn probe(addr: SocketAddr, cfg: &HealthConfig) -> Result<(), String> {
    match tokio::time::timeout(cfg.timeout, probe_inner(addr, &cfg.check)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}", format_duration(cfg.timeout))),
    }
}

async fn probe_inner(addr: SocketAddr, check: &Check) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| io_reason(&e))?;
    let Check::Http { path } = check else {
        return Ok(());
    };
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path.as_str())
        .header(HOST, addr.to_string())
        .header(
            USER_AGENT,
            concat!("ringway-health/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request for {path}: {e}"))?;
    // The connection is driven by its own task while the request is in flight; only the
    // status line matters, so the task is dropped (and the socket closed) right after.
    let driver = tokio::spawn(conn);
    let resp = send.send_request(req).await;
    driver.abort();
    let resp = resp.map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {} on {path}", status.as_u16()))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::TimedOut => "connect timed out".into(),
        _ => format!("connect failed: {e}"),
    }
}
