//! Control side: which endpoint a request names, and its JSON body, checked before the
//! control thread sees it (route bodies are validated here, by the configuration's own
//! validator). Refusals come back as [`Rejection`]s.

use std::net::SocketAddr;

use hyper::Method;
use percent_encoding::percent_decode_str;

use crate::api::{AttachBody, BackendPatch, ProblemDoc, SwitchBody};
use crate::config::parse_route_json;
use crate::control::messages::AdminQuery;

/// An endpoint (the methods it accepts are [`Endpoint::methods`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Status,
    Metrics {
        json: bool,
    },
    Health,
    Config,
    Reload,
    Upgrade,
    Routes,
    Route {
        name: String,
    },
    Backends {
        route: String,
    },
    Backend {
        route: String,
        addr: SocketAddr,
    },
    /// `/routes/{name}/backends/{host:port}`: a backend name (DELETE only).
    NamedBackend {
        route: String,
        host: String,
        port: u16,
    },
    Switch {
        route: String,
    },
    Rollback {
        route: String,
    },
}

impl Endpoint {
    pub fn methods(&self) -> &'static str {
        match self {
            Endpoint::Status
            | Endpoint::Metrics { .. }
            | Endpoint::Health
            | Endpoint::Config
            | Endpoint::Routes => "GET, HEAD",
            Endpoint::Route { .. } => "GET, HEAD, PUT, DELETE",
            Endpoint::Backend { .. } => "DELETE, PATCH",
            Endpoint::NamedBackend { .. } => "DELETE",
            Endpoint::Reload
            | Endpoint::Upgrade
            | Endpoint::Backends { .. }
            | Endpoint::Switch { .. }
            | Endpoint::Rollback { .. } => "POST",
        }
    }

    pub fn accepts(&self, m: &Method) -> bool {
        let read = m == Method::GET || m == Method::HEAD;
        match self {
            Endpoint::Status
            | Endpoint::Metrics { .. }
            | Endpoint::Health
            | Endpoint::Config
            | Endpoint::Routes => read,
            Endpoint::Route { .. } => read || m == Method::PUT || m == Method::DELETE,
            Endpoint::Backend { .. } => m == Method::DELETE || m == Method::PATCH,
            Endpoint::NamedBackend { .. } => m == Method::DELETE,
            Endpoint::Reload
            | Endpoint::Upgrade
            | Endpoint::Backends { .. }
            | Endpoint::Switch { .. }
            | Endpoint::Rollback { .. } => m == Method::POST,
        }
    }
}

/// True when the control thread may take long to answer: a change (a health gate may run
/// first, and every worker acknowledges).
pub fn slow(m: &Method) -> bool {
    !(m == Method::GET || m == Method::HEAD)
}

/// A refused request: status, code, message, and the configuration problems behind an
/// invalid route body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<ProblemDoc>,
}

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
        problems: Vec::new(),
    }
}

/// The endpoint of `path` (`query` without the `?`).
pub fn endpoint(path: &str, query: &str) -> Result<Endpoint, Rejection> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = |s: &str| -> Result<String, Rejection> {
        let n = decode(s)?;
        if n.is_empty() {
            return Err(reject(
                404,
                "not_found",
                format!("no such endpoint: {path}"),
            ));
        }
        Ok(n)
    };
    match segs.as_slice() {
        ["status"] => Ok(Endpoint::Status),
        ["metrics"] => Ok(Endpoint::Metrics {
            json: query.split('&').any(|kv| kv == "format=json"),
        }),
        ["health"] => Ok(Endpoint::Health),
        ["config"] => Ok(Endpoint::Config),
        ["reload"] => Ok(Endpoint::Reload),
        ["upgrade"] => Ok(Endpoint::Upgrade),
        ["routes"] | ["routes", ""] => Ok(Endpoint::Routes),
        ["routes", n] => Ok(Endpoint::Route { name: name(n)? }),
        ["routes", n, "backends"] => Ok(Endpoint::Backends { route: name(n)? }),
        ["routes", n, "backends", a] => {
            let route = name(n)?;
            let a = decode(a)?;
            match (address(&a), crate::config::parse_named(&a)) {
                (Err(_), Some((host, port))) => Ok(Endpoint::NamedBackend { route, host, port }),
                (addr, _) => Ok(Endpoint::Backend { route, addr: addr? }),
            }
        }
        ["routes", n, "switch"] => Ok(Endpoint::Switch { route: name(n)? }),
        ["routes", n, "rollback"] => Ok(Endpoint::Rollback { route: name(n)? }),
        _ => Err(reject(
            404,
            "not_found",
            format!("no such endpoint: {path}"),
        )),
    }
}

fn decode(s: &str) -> Result<String, Rejection> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| reject(400, "bad_request", "the path is not UTF-8 once decoded"))
}

/// The query for the control thread, from the endpoint, the method and the body;
/// `create_only`: a PUT sent with `If-None-Match: *`.
pub fn query(
    ep: Endpoint,
    method: &Method,
    body: &[u8],
    create_only: bool,
) -> Result<AdminQuery, Rejection> {
    let write = method == Method::PUT;
    let delete = method == Method::DELETE;
    match ep {
        Endpoint::Status => Ok(AdminQuery::Status),
        Endpoint::Metrics { json } => Ok(AdminQuery::Metrics { json }),
        Endpoint::Health => Ok(AdminQuery::Health),
        Endpoint::Config => Ok(AdminQuery::Config),
        Endpoint::Routes => Ok(AdminQuery::Routes),
        Endpoint::Reload => {
            no_parameters(body, "reload")?;
            Ok(AdminQuery::Reload)
        }
        Endpoint::Upgrade => {
            let b: crate::api::UpgradeBody = if body.trim_ascii().is_empty() {
                Default::default()
            } else {
                json(
                    body,
                    "{\"binary\": \"/usr/bin/ringway\", \"timeout\": \"30s\"}",
                )?
            };
            let timeout = match b.timeout.as_deref() {
                None => None,
                Some(t) => Some(
                    humantime::parse_duration(t)
                        .ok()
                        .filter(|d| !d.is_zero() && *d <= std::time::Duration::from_secs(600))
                        .ok_or_else(|| {
                            reject(
                                400,
                                "bad_request",
                                format!("timeout {t:?}: a duration from \"1s\" to \"10m\""),
                            )
                        })?,
                ),
            };
            let binary = match b.binary {
                Some(p) if !p.starts_with('/') => {
                    return Err(reject(
                        400,
                        "bad_request",
                        format!("binary {p:?}: give an absolute path"),
                    ));
                }
                other => other.map(std::path::PathBuf::from),
            };
            Ok(AdminQuery::Upgrade {
                binary,
                timeout,
                sessions: b.sessions.unwrap_or(true),
            })
        }
        Endpoint::Route { name } if write => {
            let v: serde_json::Value = json(body, "the keys of a [[route]] table")?;
            let cfg = parse_route_json(&name, &v).map_err(|e| Rejection {
                status: 400,
                code: "invalid_route",
                message: e.to_string().trim_end().to_string(),
                problems: ProblemDoc::all(&e),
            })?;
            Ok(AdminQuery::PutRoute {
                cfg: Box::new(cfg),
                create_only,
            })
        }
        Endpoint::Route { name } if delete => Ok(AdminQuery::DeleteRoute { name }),
        Endpoint::Route { name } => Ok(AdminQuery::Route { name }),
        Endpoint::Backends { route } => {
            let b: AttachBody = json(body, "{\"addr\": \"127.0.0.1:8082\"}")?;
            let addr = match (address(&b.addr), crate::config::parse_named(&b.addr)) {
                // A name joins the route's names, without a gate: what it resolves to is
                // known only later (the periodic checks cover those addresses).
                (Err(_), Some((host, port))) => {
                    return Ok(AdminQuery::AttachName {
                        route,
                        name: crate::config::NamedBackend {
                            host,
                            port,
                            weight: weight(b.weight)?,
                        },
                    });
                }
                (addr, _) => addr?,
            };
            Ok(AdminQuery::Attach {
                route,
                addr,
                check: b.check,
                weight: weight(b.weight)?,
            })
        }
        Endpoint::Backend { route, addr } if delete => Ok(AdminQuery::Detach { route, addr }),
        Endpoint::NamedBackend { route, host, port } => Ok(AdminQuery::DetachName {
            route,
            name: format!("{host}:{port}"),
        }),
        Endpoint::Backend { route, addr } => {
            let b: BackendPatch = json(body, "{\"drain\": true}")?;
            Ok(AdminQuery::Drain {
                route,
                addr,
                drain: b.drain,
            })
        }
        Endpoint::Rollback { route } => {
            no_parameters(body, "rollback")?;
            Ok(AdminQuery::Rollback { route })
        }
        Endpoint::Switch { route } => {
            let b: SwitchBody = json(body, "{\"to\": [\"127.0.0.1:8081\", ...]}")?;
            let to = addresses(&b.to)?;
            Ok(AdminQuery::Switch { route, to })
        }
    }
}

/// An attached backend's weight: 1 unless given; 1..=256.
fn weight(w: Option<u16>) -> Result<u16, Rejection> {
    match w {
        None => Ok(crate::config::DEFAULT_WEIGHT),
        Some(w) if (1..=crate::config::MAX_WEIGHT).contains(&w) => Ok(w),
        Some(0) => Err(reject(
            400,
            "bad_request",
            "weight 0 would send this backend nothing: to take a backend out of rotation, drain it (PATCH /routes/{name}/backends/{addr} {\"drain\": true}) or detach it; weights run from 1 to 256",
        )),
        Some(w) => Err(reject(
            400,
            "bad_request",
            format!("weight {w} is out of range: use 1 (default) to 256"),
        )),
    }
}

/// A JSON body of type `T`; `expected` shows the right shape in the error.
fn json<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, Rejection> {
    serde_json::from_slice(body)
        .map_err(|e| reject(400, "malformed_json", format!("expected {expected}: {e}")))
}

/// An empty body or an empty object; anything else is a mistake worth reporting.
fn no_parameters(body: &[u8], what: &str) -> Result<(), Rejection> {
    if body.trim_ascii().is_empty() {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| reject(400, "malformed_json", format!("the body is not JSON: {e}")))?;
    if v.as_object().is_none_or(|o| !o.is_empty()) {
        return Err(reject(
            400,
            "bad_request",
            format!("{what} takes no parameters: send no body or {{}}"),
        ));
    }
    Ok(())
}

/// One backend address: concrete, with a port.
fn address(s: &str) -> Result<SocketAddr, Rejection> {
    let a: SocketAddr = s.trim().parse().map_err(|_| {
        reject(
            400,
            "bad_request",
            format!("\"{s}\" is not an IP address with a port, e.g. \"127.0.0.1:8081\" or \"[::1]:8081\""),
        )
    })?;
    if a.port() == 0 || a.ip().is_unspecified() {
        return Err(reject(
            400,
            "bad_request",
            format!("{a} cannot be connected to: use a concrete address and a non-zero port"),
        ));
    }
    Ok(a)
}

/// The `to` list: at least one concrete address, each once.
fn addresses(list: &[String]) -> Result<Vec<SocketAddr>, Rejection> {
    if list.is_empty() {
        return Err(reject(
            400,
            "bad_request",
            "\"to\" is empty: name at least one backend address",
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(list.len());
    for s in list {
        let a = address(s)?;
        if out.contains(&a) {
            return Err(reject(400, "bad_request", format!("{a} is listed twice")));
        }
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_bodies() {
        assert!(matches!(endpoint("/status", ""), Ok(Endpoint::Status)));
        assert!(matches!(
            endpoint("/metrics", "format=json"),
            Ok(Endpoint::Metrics { json: true })
        ));
        assert!(endpoint("/routes//switch", "").is_err());
        assert_eq!(endpoint("/nope", "").err().map(|e| e.status), Some(404));
        let post = Method::POST;
        let sw = || Endpoint::Switch {
            route: "web".into(),
        };
        assert_eq!(
            query(sw(), &post, br#"{"to": ["127.0.0.1:8081"]}"#, false),
            Ok(AdminQuery::Switch {
                route: "web".into(),
                to: vec!["127.0.0.1:8081".parse().unwrap()]
            })
        );
        for bad in [
            &br#"{"to": "#[..],
            br#"{"to": []}"#,
            br#"{"to": ["web:80"]}"#,
            br#"{"to": ["0.0.0.0:80"]}"#,
            br#"{"to": ["127.0.0.1:1", "127.0.0.1:1"]}"#,
            br#"{"to": ["127.0.0.1:1"], "extra": 1}"#,
        ] {
            assert_eq!(
                query(sw(), &post, bad, false).err().map(|e| e.status),
                Some(400),
                "{bad:?}"
            );
        }
        let rb = || Endpoint::Rollback {
            route: "web".into(),
        };
        assert!(query(rb(), &post, b"", false).is_ok());
        assert!(query(rb(), &post, b"{}", false).is_ok());
        assert_eq!(
            query(rb(), &post, b"{\"x\":1}", false)
                .err()
                .map(|e| e.status),
            Some(400)
        );
    }

    #[test]
    fn upgrade_bodies() {
        let post = Method::POST;
        assert!(matches!(endpoint("/upgrade", ""), Ok(Endpoint::Upgrade)));
        assert_eq!(
            query(Endpoint::Upgrade, &post, b"", false),
            Ok(AdminQuery::Upgrade {
                binary: None,
                timeout: None,
                sessions: true
            })
        );
        assert_eq!(
            query(
                Endpoint::Upgrade,
                &post,
                br#"{"binary": "/usr/bin/ringway", "timeout": "5s", "sessions": false}"#,
                false
            ),
            Ok(AdminQuery::Upgrade {
                binary: Some("/usr/bin/ringway".into()),
                timeout: Some(std::time::Duration::from_secs(5)),
                sessions: false
            })
        );
        for bad in [
            &br#"{"binary": "ringway"}"#[..],
            br#"{"timeout": "0s"}"#,
            br#"{"timeout": "1h"}"#,
            br#"{"timeout": "soon"}"#,
            br#"{"sessions": "no"}"#,
            br#"{"binary": "/x", "extra": 1}"#,
        ] {
            assert_eq!(
                query(Endpoint::Upgrade, &post, bad, false)
                    .err()
                    .map(|e| e.status),
                Some(400),
                "{bad:?}"
            );
        }
        assert!(!Endpoint::Upgrade.accepts(&Method::GET));
    }

    #[test]
    fn route_and_backend_endpoints() {
        let web = || "web".to_string();
        assert_eq!(
            endpoint("/routes/web", ""),
            Ok(Endpoint::Route { name: web() })
        );
        // IPv6 backends arrive percent-encoded.
        assert_eq!(
            endpoint("/routes/web/backends/%5B%3A%3A1%5D%3A8082", ""),
            Ok(Endpoint::Backend {
                route: web(),
                addr: "[::1]:8082".parse().unwrap()
            })
        );
        assert_eq!(
            endpoint("/routes/web/backends/nowhere", "")
                .err()
                .map(|e| e.status),
            Some(400)
        );
        let route = Endpoint::Route { name: web() };
        assert!(route.accepts(&Method::PUT) && route.accepts(&Method::DELETE));
        assert!(!route.accepts(&Method::POST));
        let put = query(
            route.clone(),
            &Method::PUT,
            br#"{"backends": ["127.0.0.1:8080"], "connect_timeout": "2s"}"#,
            false,
        );
        assert!(matches!(put, Ok(AdminQuery::PutRoute { .. })), "{put:?}");
        let bad = query(
            route.clone(),
            &Method::PUT,
            br#"{"backends": ["127.0.0.1:8080"], "connect_timeout": "soon"}"#,
            false,
        )
        .unwrap_err();
        assert_eq!((bad.status, bad.code), (400, "invalid_route"));
        assert_eq!(bad.problems[0].key, "connect_timeout");
        assert_eq!(
            query(route, &Method::DELETE, b"", false),
            Ok(AdminQuery::DeleteRoute { name: web() })
        );
        let attach = query(
            Endpoint::Backends { route: web() },
            &Method::POST,
            br#"{"addr": "127.0.0.1:8082", "check": false}"#,
            false,
        );
        assert_eq!(
            attach,
            Ok(AdminQuery::Attach {
                route: web(),
                addr: "127.0.0.1:8082".parse().unwrap(),
                check: false,
                weight: 1,
            })
        );
        // A name attaches as a name (weight kept), and detaches by its path.
        let named = query(
            Endpoint::Backends { route: web() },
            &Method::POST,
            br#"{"addr": "App.Internal:8082", "weight": 2}"#,
            false,
        );
        assert_eq!(
            named,
            Ok(AdminQuery::AttachName {
                route: web(),
                name: crate::config::NamedBackend {
                    host: "app.internal".into(),
                    port: 8082,
                    weight: 2,
                },
            })
        );
        let ep = endpoint("/routes/web/backends/app.internal:8082", "").unwrap();
        assert!(ep.accepts(&Method::DELETE) && !ep.accepts(&Method::PATCH));
        assert_eq!(
            query(ep, &Method::DELETE, b"", false),
            Ok(AdminQuery::DetachName {
                route: web(),
                name: "app.internal:8082".into(),
            })
        );
        assert!(endpoint("/routes/web/backends/not a name", "").is_err());
        let weighted = |body: &[u8]| {
            query(
                Endpoint::Backends { route: web() },
                &Method::POST,
                body,
                false,
            )
        };
        assert!(matches!(
            weighted(br#"{"addr": "127.0.0.1:8082", "weight": 3}"#),
            Ok(AdminQuery::Attach { weight: 3, .. })
        ));
        for body in [
            &br#"{"addr": "127.0.0.1:8082", "weight": 0}"#[..],
            br#"{"addr": "127.0.0.1:8082", "weight": 257}"#,
            br#"{"addr": "127.0.0.1:8082", "weight": -1}"#,
        ] {
            let e = weighted(body).unwrap_err();
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(body));
        }
        let backend = Endpoint::Backend {
            route: web(),
            addr: "127.0.0.1:8082".parse().unwrap(),
        };
        assert!(matches!(
            query(
                backend.clone(),
                &Method::PATCH,
                br#"{"drain": true}"#,
                false
            ),
            Ok(AdminQuery::Drain { drain: true, .. })
        ));
        assert_eq!(
            query(backend, &Method::PATCH, br#"{"drain": "yes"}"#, false)
                .err()
                .map(|e| e.status),
            Some(400)
        );
    }
}
