//! Control side: the admin HTTP API, served by hyper on its own small thread (a tokio
//! current-thread runtime), never on a worker; over TCP (`admin.listen`) and, optionally, a
//! unix socket (`admin.unix`, mode 0600) with the same API.
//!
//! Every request passes, in order: the source allowlist (403), the per-source rate limit
//! (429 with `Retry-After`), the bearer token (401), the endpoint and method (404, 405), the
//! body's size and read time (413, 408) and its JSON (400). Only then does it become an
//! [`AdminQuery`] for the control thread, which owns the state and answers. Slow clients are
//! bounded: a head must arrive within 5 s, a body within 5 s, and one source may hold at
//! most 64 connections (4 from outside the allowlist; 1,024 in all), so a slowloris from
//! one address starves neither the API nor other sources.

mod guard;
mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, IF_NONE_MATCH, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

pub use guard::{RateLimiter, Source};

use crate::api::{ErrorDoc, ProblemDoc};
use crate::control::ControlError;
use crate::control::messages::{AdminQuery, AdminReply, AdminRequest, Answer};

/// Longest a client may take to send its request head (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a client may take to send its body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the control thread may take to answer a read.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest it may take to answer a switch or rollback (health gate, then every worker's ack).
const SWITCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Open admin connections, in all and per source.
const MAX_CONNECTIONS: usize = 1024;
const MAX_PER_SOURCE: usize = 64;
/// A source outside `admin.allow` only ever gets a 403; it needs few connections for that,
/// and all such sources together get their own small pool (they cannot use up the main one).
const MAX_PER_DENIED_SOURCE: usize = 4;
const MAX_DENIED: usize = 64;
/// Longest one admin connection may stay open (a client that never reads its answers cannot
/// hold it forever); longer than the slowest answer (a switch's gate and acknowledgements).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(SWITCH_TIMEOUT.as_secs() + 10);

/// The admin API's sockets, bound before anything else is decided (so a busy port is
/// reported before the token file is touched).
pub struct AdminSockets {
    tcp: std::net::TcpListener,
    unix: Option<(PathBuf, std::os::unix::net::UnixListener)>,
}

impl AdminSockets {
    /// Binds `listen` and, when set, the unix socket `unix`. Errors name what failed.
    pub fn bind(
        listen: SocketAddr,
        unix: Option<&std::path::Path>,
    ) -> Result<AdminSockets, (String, std::io::Error)> {
        let at = |what: String| move |e| (what, e);
        let tcp = std::net::TcpListener::bind(listen).map_err(at(listen.to_string()))?;
        tcp.set_nonblocking(true).map_err(at(listen.to_string()))?;
        let unix = match unix {
            Some(path) => Some((
                path.to_path_buf(),
                bind_unix(path).map_err(at(path.display().to_string()))?,
            )),
            None => None,
        };
        Ok(AdminSockets { tcp, unix })
    }

    /// The bound TCP address (the real port when `admin.listen` asks for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The sockets an upgrade handed over where they match the configuration (`listen`
    /// port 0 takes the inherited address), bound afresh where they do not.
    pub fn inherit(
        from: crate::upgrade::child::InheritedAdmin,
        listen: SocketAddr,
        unix: Option<&std::path::Path>,
    ) -> Result<AdminSockets, (String, std::io::Error)> {
        let at = |what: String| move |e| (what, e);
        let same =
            from.tcp_addr == listen || (listen.port() == 0 && listen.ip() == from.tcp_addr.ip());
        let tcp = if same {
            std::net::TcpListener::from(from.tcp)
        } else {
            let l = std::net::TcpListener::bind(listen).map_err(at(listen.to_string()))?;
            l.set_nonblocking(true).map_err(at(listen.to_string()))?;
            l
        };
        let unix = match (unix, from.unix) {
            (Some(path), Some((old, fd))) if old == path => Some((
                path.to_path_buf(),
                std::os::unix::net::UnixListener::from(fd),
            )),
            (Some(path), _) => Some((
                path.to_path_buf(),
                bind_unix(path).map_err(at(path.display().to_string()))?,
            )),
            (None, _) => None,
        };
        Ok(AdminSockets { tcp, unix })
    }

    /// Copies of the sockets, kept for handing to a new binary.
    pub fn copies(&self) -> std::io::Result<crate::upgrade::parent::AdminFds> {
        Ok(crate::upgrade::parent::AdminFds {
            tcp: std::os::fd::OwnedFd::from(self.tcp.try_clone()?),
            tcp_addr: self.tcp.local_addr()?,
            unix: match &self.unix {
                Some((path, l)) => Some((path.clone(), std::os::fd::OwnedFd::from(l.try_clone()?))),
                None => None,
            },
        })
    }
}

/// Stops the admin API's accepting (an upgrade: the new process accepts on the same
/// sockets); connections already open are served to their end.
#[derive(Debug)]
pub struct AdminHandle {
    stop: tokio::sync::watch::Sender<bool>,
}

impl AdminHandle {
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }
}

/// What the admin API is started with.
pub struct AdminSettings {
    pub token: String,
    pub allow: Vec<IpNet>,
    pub rate_limit: u32,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("token", &"<hidden>")
            .field("allow", &self.allow)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// Shared by every connection task (control side; a mutex here is fine).
struct Ctx {
    token: String,
    allow: Vec<IpNet>,
    rate: RateLimiter,
    control: Sender<AdminRequest>,
    total: Arc<Semaphore>,
    denied: Arc<Semaphore>,
    per_source: Mutex<HashMap<Source, usize>>,
}

/// Serves the admin API on its bound sockets, on a new thread.
pub fn spawn(
    sockets: AdminSockets,
    s: AdminSettings,
    control: Sender<AdminRequest>,
) -> std::io::Result<(JoinHandle<()>, AdminHandle)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let ctx = Arc::new(Ctx {
        token: s.token,
        allow: s.allow,
        rate: RateLimiter::new(s.rate_limit),
        control,
        total: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        denied: Arc::new(Semaphore::new(MAX_DENIED)),
        per_source: Mutex::new(HashMap::new()),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("ringway-admin".into())
        .spawn(move || runtime.block_on(serve(sockets.tcp, sockets.unix, ctx, stopped)))?;
    Ok((thread, AdminHandle { stop }))
}

/// Binds the unix socket with mode 0600, replacing a stale socket file (never another file).
fn bind_unix(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        // A socket someone still answers on belongs to a running process: leave it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process (another ringway?) serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::control::ensure_dir(dir)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

async fn serve(
    tcp: std::net::TcpListener,
    unix: Option<(PathBuf, std::os::unix::net::UnixListener)>,
    ctx: Arc<Ctx>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    if let Some((path, l)) = unix {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                let ctx = ctx.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = until_stopped(&mut stopped) => break,
                            r = l.accept() => match r {
                                Ok((stream, _)) => connection(stream, Source::Unix, ctx.clone()),
                                Err(e) => accept_failed(&e).await,
                            },
                        }
                    }
                });
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "admin API cannot use its unix socket")
            }
        }
    }
    let tcp = match tokio::net::TcpListener::from_std(tcp) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin API cannot use its listener");
            return;
        }
    };
    let mut stopped = stopped;
    loop {
        tokio::select! {
            _ = until_stopped(&mut stopped) => break,
            r = tcp.accept() => match r {
                Ok((stream, peer)) => connection(stream, Source::Ip(peer.ip()), ctx.clone()),
                Err(e) => accept_failed(&e).await,
            },
        }
    }
    drop(tcp);
    // Open connections are served on; the thread ends with the process.
    std::future::pending::<()>().await
}

/// Returns once the control thread asked to stop accepting (never, if it is gone).
async fn until_stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "admin accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one connection, within the connection limits (over them it is closed at once).
fn connection<S>(stream: S, source: Source, ctx: Arc<Ctx>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let allowed = guard::source_allowed(&ctx.allow, source);
    let pool = if allowed { &ctx.total } else { &ctx.denied };
    let Ok(permit) = pool.clone().try_acquire_owned() else {
        return;
    };
    let cap = if allowed {
        MAX_PER_SOURCE
    } else {
        MAX_PER_DENIED_SOURCE
    };
    {
        let Ok(mut per) = ctx.per_source.lock() else {
            return;
        };
        let n = per.entry(source).or_insert(0);
        if *n >= cap {
            return;
        }
        *n += 1;
    }
    tokio::spawn(async move {
        let c = ctx.clone();
        let service = service_fn(move |req| handle(req, source, c.clone()));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        if let Ok(mut per) = ctx.per_source.lock()
            && let Some(n) = per.get_mut(&source)
        {
            *n -= 1;
            if *n == 0 {
                per.remove(&source);
            }
        }
        drop(permit);
    });
}

type Body = Full<Bytes>;

async fn handle(
    req: Request<Incoming>,
    source: Source,
    ctx: Arc<Ctx>,
) -> Result<Response<Body>, Infallible> {
    Ok(match check(req, source, &ctx).await {
        Ok((query, slow)) => ask(&ctx.control, query, slow).await,
        Err(resp) => resp,
    })
}

/// Everything before the control thread: source, rate, token, endpoint, method, body.
async fn check(
    req: Request<Incoming>,
    source: Source,
    ctx: &Ctx,
) -> Result<(AdminQuery, bool), Response<Body>> {
    if !guard::source_allowed(&ctx.allow, source) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("{source} is not in admin.allow"),
        ));
    }
    if let Err(wait) = ctx.rate.take(source, Instant::now()) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this source; retry later",
        );
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        return Err(r);
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if !guard::token_ok(auth, &ctx.token) {
        let in_url = query
            .split('&')
            .any(|kv| kv.starts_with("token=") || kv.starts_with("access_token="));
        let message = if in_url {
            "tokens in the URL are not accepted (they end up in logs): send Authorization: Bearer <token>"
        } else {
            "a valid Authorization: Bearer <token> header is required"
        };
        let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    }
    let ep = router::endpoint(req.uri().path(), &query).map_err(rejection)?;
    let method = req.method().clone();
    // `If-None-Match: *` on a PUT: create only (RFC 9110 13.1.2).
    let create_only = req
        .headers()
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"*");
    if !ep.accepts(req.method()) {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} accepts {}", req.uri().path(), ep.methods()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(ep.methods()));
        return Err(r);
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is over 64 KiB",
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return Err(too_large()),
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive within 5s",
            ));
        }
    };
    let q = router::query(ep, &method, &body, create_only).map_err(rejection)?;
    Ok((q, router::slow(&method)))
}

fn rejection(r: router::Rejection) -> Response<Body> {
    error_doc(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        &ErrorDoc {
            error: r.code.to_string(),
            message: r.message,
            problems: r.problems,
        },
    )
}

async fn ask(control: &Sender<AdminRequest>, query: AdminQuery, slow: bool) -> Response<Body> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if control.try_send(AdminRequest { query, reply: tx }).is_err() {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the control thread is busy; retry",
        );
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u64));
        return r;
    }
    let limit = if slow {
        SWITCH_TIMEOUT
    } else {
        CONTROL_TIMEOUT
    };
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(reply)) => respond(reply),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the control thread did not answer in time",
        ),
    }
}

/// The HTTP form of the control thread's answer.
fn respond(reply: AdminReply) -> Response<Body> {
    let answer = match reply {
        Ok(a) => a,
        Err(e) => {
            let problems = e.problems().map(ProblemDoc::all).unwrap_or_default();
            let doc = ErrorDoc {
                error: e.code().to_string(),
                message: e.to_string().trim_end().to_string(),
                problems,
            };
            return error_doc(status_of(&e), &doc);
        }
    };
    match answer {
        Answer::Metrics(text) => body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            text,
        ),
        Answer::Config(text) => body(StatusCode::OK, "application/toml; charset=utf-8", text),
        Answer::MetricsJson(v) => json_body(StatusCode::OK, &v),
        Answer::Status(d) => json_body(StatusCode::OK, &d),
        Answer::Health(d) => {
            let status = if d.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_body(status, &d)
        }
        Answer::Routes(d) => json_body(StatusCode::OK, &d),
        Answer::Route(d) => json_body(StatusCode::OK, &d),
        Answer::Switch(d) => json_body(StatusCode::OK, &d),
        Answer::Upgrade(d) => json_body(StatusCode::OK, &d),
        Answer::Change(d) => {
            let status = if d.action == crate::api::ChangeAction::Created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_body(status, &d)
        }
        Answer::Reload(d) => json_body(StatusCode::OK, &d),
    }
}

/// The one place where control errors become HTTP statuses.
pub fn status_of(e: &ControlError) -> StatusCode {
    match e {
        ControlError::NoRoute(_) | ControlError::NoBackend { .. } | ControlError::NoName { .. } => {
            StatusCode::NOT_FOUND
        }
        ControlError::Exists(_) => StatusCode::PRECONDITION_FAILED,
        ControlError::InvalidRoute(_) | ControlError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
        ControlError::Port(crate::control::PortError::NoRange { .. }) => StatusCode::BAD_REQUEST,
        ControlError::Port(crate::control::PortError::Releasing { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ControlError::Busy(_)
        | ControlError::FileOwned { .. }
        | ControlError::Port(_)
        | ControlError::GateFailed(_)
        | ControlError::NothingToRollBack(_)
        | ControlError::LastBackend { .. }
        | ControlError::LastName { .. }
        | ControlError::FromName { .. }
        | ControlError::WouldDrainAll { .. }
        | ControlError::EmptySet
        | ControlError::NoConfigFile
        | ControlError::Upgrading
        | ControlError::ChangePending => StatusCode::CONFLICT,
        ControlError::UpgradeFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ControlError::ShuttingDown | ControlError::NotAcknowledged { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn body(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_body<T: serde::Serialize>(status: StatusCode, doc: &T) -> Response<Body> {
    match serde_json::to_string(doc) {
        Ok(text) => body(status, "application/json", text),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("cannot serialise the answer: {e}"),
        ),
    }
}

fn error_doc(status: StatusCode, doc: &ErrorDoc) -> Response<Body> {
    json_body(status, doc)
}

/// A JSON error `{"error", "message"}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    error_doc(
        status,
        &ErrorDoc {
            error: code.to_string(),
            message: message.to_string(),
            problems: Vec::new(),
        },
    )
}
