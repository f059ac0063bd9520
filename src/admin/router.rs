//! Control side: which endpoint a request names, and its JSON body, checked before the
//! control thread sees it. Errors come back as (status, code, message).

use std::net::SocketAddr;

use hyper::Method;
use serde::Deserialize;

use crate::control::messages::AdminQuery;

/// An endpoint and the methods it accepts.
pub enum Endpoint {
    Status,
    Metrics { json: bool },
    Health,
    Switch { route: String },
    Rollback { route: String },
}

impl Endpoint {
    pub fn methods(&self) -> &'static str {
        match self {
            Endpoint::Status | Endpoint::Metrics { .. } | Endpoint::Health => "GET, HEAD",
            Endpoint::Switch { .. } | Endpoint::Rollback { .. } => "POST",
        }
    }

    pub fn accepts(&self, m: &Method) -> bool {
        match self {
            Endpoint::Status | Endpoint::Metrics { .. } | Endpoint::Health => {
                m == Method::GET || m == Method::HEAD
            }
            Endpoint::Switch { .. } | Endpoint::Rollback { .. } => m == Method::POST,
        }
    }

    /// True when the control thread may take long to answer (a health gate runs first).
    pub fn slow(&self) -> bool {
        matches!(self, Endpoint::Switch { .. } | Endpoint::Rollback { .. })
    }
}

pub type Rejection = (u16, &'static str, String);

/// The endpoint of `path` (`query` without the `?`).
pub fn endpoint(path: &str, query: &str) -> Result<Endpoint, Rejection> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["status"] => Ok(Endpoint::Status),
        ["metrics"] => Ok(Endpoint::Metrics {
            json: query.split('&').any(|kv| kv == "format=json"),
        }),
        ["health"] => Ok(Endpoint::Health),
        ["routes", name, "switch"] if !name.is_empty() => Ok(Endpoint::Switch {
            route: name.to_string(),
        }),
        ["routes", name, "rollback"] if !name.is_empty() => Ok(Endpoint::Rollback {
            route: name.to_string(),
        }),
        _ => Err((404, "not_found", format!("no such endpoint: {path}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: Vec<String>,
}

/// The query for the control thread, from the endpoint and its body.
pub fn query(ep: Endpoint, body: &[u8]) -> Result<AdminQuery, Rejection> {
    match ep {
        Endpoint::Status => Ok(AdminQuery::Status),
        Endpoint::Metrics { json } => Ok(AdminQuery::Metrics { json }),
        Endpoint::Health => Ok(AdminQuery::Health),
        Endpoint::Rollback { route } => {
            // An empty body or an empty object; anything else is a mistake worth reporting.
            if !body.trim_ascii().is_empty() {
                let v: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| (400, "malformed_json", format!("the body is not JSON: {e}")))?;
                if v.as_object().is_none_or(|o| !o.is_empty()) {
                    return Err((
                        400,
                        "bad_request",
                        "rollback takes no parameters: send no body or {}".into(),
                    ));
                }
            }
            Ok(AdminQuery::Rollback { route })
        }
        Endpoint::Switch { route } => {
            let b: SwitchBody = serde_json::from_slice(body).map_err(|e| {
                (
                    400,
                    "malformed_json",
                    format!("expected {{\"to\": [\"127.0.0.1:8081\", ...]}}: {e}"),
                )
            })?;
            let to = addresses(&b.to)?;
            Ok(AdminQuery::Switch { route, to })
        }
    }
}

/// The `to` list: at least one concrete address, each once.
fn addresses(list: &[String]) -> Result<Vec<SocketAddr>, Rejection> {
    if list.is_empty() {
        return Err((
            400,
            "bad_request",
            "\"to\" is empty: name at least one backend address".into(),
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(list.len());
    for s in list {
        let a: SocketAddr = s.trim().parse().map_err(|_| {
            (
                400,
                "bad_request",
                format!("\"{s}\" is not an IP address with a port, e.g. \"127.0.0.1:8081\""),
            )
        })?;
        if a.port() == 0 || a.ip().is_unspecified() {
            return Err((
                400,
                "bad_request",
                format!("{a} cannot be connected to: use a concrete address and a non-zero port"),
            ));
        }
        if out.contains(&a) {
            return Err((400, "bad_request", format!("{a} is listed twice")));
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
        assert_eq!(endpoint("/nope", "").err().map(|e| e.0), Some(404));
        let sw = || Endpoint::Switch {
            route: "web".into(),
        };
        assert_eq!(
            query(sw(), br#"{"to": ["127.0.0.1:8081"]}"#),
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
            assert_eq!(query(sw(), bad).err().map(|e| e.0), Some(400), "{bad:?}");
        }
        let rb = || Endpoint::Rollback {
            route: "web".into(),
        };
        assert!(query(rb(), b"").is_ok());
        assert!(query(rb(), b"{}").is_ok());
        assert_eq!(query(rb(), b"{\"x\":1}").err().map(|e| e.0), Some(400));
    }
}
