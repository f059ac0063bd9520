//! Control side (CLI): one HTTP/1.1 request to the admin API over TCP or a unix socket, with
//! hyper's client on a throwaway tokio runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "http://{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Target {
    /// "127.0.0.1:9901", "http://127.0.0.1:9901/", "unix:/run/ringway/admin.sock" or an
    /// absolute socket path.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if s.starts_with("https://") {
            return Err(
                "the admin API speaks plain HTTP (keep it on loopback or a unix socket)".into(),
            );
        }
        hostport.parse().map(Target::Tcp).map_err(|_| {
            format!("\"{s}\" is not an admin address: use IP:port, http://IP:port or unix:/path")
        })
    }
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Longest the CLI waits for an answer (a switch runs its health gate first).
const TIMEOUT: Duration = Duration::from_secs(330);

/// One request; `headers` are extra (name, value) pairs.
pub fn request(
    target: &Target,
    token: &str,
    method: Method,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    rt.block_on(async {
        let fut = async {
            match target {
                Target::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a)
                        .await
                        .map_err(|e| reach(target, &e))?;
                    send(s, &a.to_string(), token, (method, path, headers), body).await
                }
                Target::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| reach(target, &e))?;
                    send(s, "localhost", token, (method, path, headers), body).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .map_err(|_| format!("no answer from {target} within {}s", TIMEOUT.as_secs()))?
    })
}

fn reach(target: &Target, e: &std::io::Error) -> String {
    format!("cannot reach the admin API at {target}: {e} (is ringway running? see --admin)")
}

async fn send<S>(
    stream: S,
    host: &str,
    token: &str,
    (method, path, headers): (Method, &str, &[(&str, &str)]),
    body: Option<String>,
) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
        .header(AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    driver.abort();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let tcp = Target::Tcp("127.0.0.1:9901".parse().unwrap());
        assert_eq!(Target::parse("127.0.0.1:9901"), Ok(tcp.clone()));
        assert_eq!(Target::parse("http://127.0.0.1:9901/"), Ok(tcp));
        assert_eq!(
            Target::parse("unix:/run/r.sock"),
            Ok(Target::Unix("/run/r.sock".into()))
        );
        assert_eq!(
            Target::parse("/run/r.sock"),
            Ok(Target::Unix("/run/r.sock".into()))
        );
        assert!(Target::parse("localhost:9901").is_err());
        assert!(Target::parse("https://127.0.0.1:9901").is_err());
    }
}
