//! Control side: the admin HTTP API, served by hyper on its own small thread (a tokio
//! current-thread runtime), never on a worker. Handlers do no work themselves: each request
//! becomes an [`AdminRequest`] to the control thread, which owns the state and answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;

use crate::control::messages::{AdminQuery, AdminReply, AdminRequest};

/// Longest a client may take to send its request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the control thread may take to answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Binds the admin address now (errors are start-up errors) and serves it on a new thread.
pub fn spawn(addr: SocketAddr, control: Sender<AdminRequest>) -> std::io::Result<JoinHandle<()>> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || runtime.block_on(serve(listener, control)))
}

async fn serve(listener: std::net::TcpListener, control: Sender<AdminRequest>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin API cannot use its listener");
            return;
        }
    };
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, control.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = Full<Bytes>;

async fn handle(
    req: Request<Incoming>,
    control: Sender<AdminRequest>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    // Read (and bound) the body even where it is unused, so a client gets 413, not a reset.
    if Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .is_err()
    {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is over 64 KiB",
        ));
    }
    let q = match path.as_str() {
        "/metrics" => AdminQuery::Metrics {
            json: query.split('&').any(|kv| kv == "format=json"),
        },
        "/status" => AdminQuery::Status,
        _ => {
            return Ok(error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such endpoint: {path}"),
            ));
        }
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} accepts GET"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(ask(&control, q).await)
}

async fn ask(control: &Sender<AdminRequest>, query: AdminQuery) -> Response<Body> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if control.try_send(AdminRequest { query, reply: tx }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the control thread is busy; retry",
        );
    }
    match tokio::time::timeout(CONTROL_TIMEOUT, rx).await {
        Ok(Ok(AdminReply {
            status,
            content_type,
            body,
        })) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the control thread did not answer in time",
        ),
    }
}

/// A JSON error `{"error", "message"}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = json!({"error": code, "message": message}).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
