//! Control side (CLI): the client commands (`status`, `metrics`, `health`, `switch`,
//! `rollback`, `route ...`, `backend ...`, `reload`, `config dump`), talking to a running
//! ringway's admin API. Answers are read into the same [`crate::api`] types the server
//! writes. Human output by default, `--json` for machines. Exit codes: 0 done (and, for
//! `health`, healthy), 1 refused, failed, unreachable or unhealthy, 64 bad usage.

pub mod http;
mod render;

use std::path::Path;

use hyper::Method;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use http::Target;

use crate::api::{
    ChangeDoc, ErrorDoc, HealthDoc, ReloadDoc, RouteList, RouteView, StatusDoc, SwitchDoc,
    UpgradeBody, UpgradeDoc,
};
use crate::cli::{ClientArgs, RouteKeys};
use crate::config::{Config, TokenSource, default_state_file};
use crate::control::read_token_file;

/// What the CLI asks.
#[derive(Debug, Clone)]
pub enum Call {
    Status,
    Metrics,
    Health,
    Switch {
        route: String,
        to: Vec<String>,
    },
    Rollback {
        route: String,
    },
    Routes,
    Route {
        name: String,
    },
    /// `body`: the route's keys as JSON; `replace`: replace an existing route.
    PutRoute {
        name: String,
        body: Value,
        replace: bool,
    },
    RemoveRoute {
        name: String,
    },
    Attach {
        route: String,
        addr: String,
        check: bool,
        /// `None`: the server's default (1).
        weight: Option<u16>,
    },
    Detach {
        route: String,
        addr: String,
    },
    Drain {
        route: String,
        addr: String,
        drain: bool,
    },
    Reload,
    ConfigDump,
    Upgrade {
        binary: Option<String>,
        timeout: Option<String>,
        sessions: bool,
    },
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 64;

/// Characters escaped in a path segment (an IPv6 backend's brackets and colons, '/').
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'%')
    .add(b'[')
    .add(b']')
    .add(b':');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// One HTTP request: method, path, body, create-only.
struct Request {
    method: Method,
    path: String,
    body: Option<String>,
    create_only: bool,
}

impl Call {
    fn request(&self, json_metrics: bool) -> Request {
        let r = |method: Method, path: String, body: Option<Value>| Request {
            method,
            path,
            body: body.map(|b| b.to_string()),
            create_only: false,
        };
        match self {
            Call::Status => r(Method::GET, "/status".into(), None),
            Call::Metrics if json_metrics => r(Method::GET, "/metrics?format=json".into(), None),
            Call::Metrics => r(Method::GET, "/metrics".into(), None),
            Call::Health => r(Method::GET, "/health".into(), None),
            Call::Switch { route, to } => r(
                Method::POST,
                format!("/routes/{}/switch", seg(route)),
                Some(json!({ "to": to })),
            ),
            Call::Rollback { route } => r(
                Method::POST,
                format!("/routes/{}/rollback", seg(route)),
                None,
            ),
            Call::Routes => r(Method::GET, "/routes".into(), None),
            Call::Route { name } => r(Method::GET, format!("/routes/{}", seg(name)), None),
            Call::PutRoute {
                name,
                body,
                replace,
            } => Request {
                create_only: !replace,
                ..r(
                    Method::PUT,
                    format!("/routes/{}", seg(name)),
                    Some(body.clone()),
                )
            },
            Call::RemoveRoute { name } => r(Method::DELETE, format!("/routes/{}", seg(name)), None),
            Call::Attach {
                route,
                addr,
                check,
                weight,
            } => {
                let mut body = json!({ "addr": addr, "check": check });
                if let Some(w) = weight {
                    body["weight"] = json!(w);
                }
                r(
                    Method::POST,
                    format!("/routes/{}/backends", seg(route)),
                    Some(body),
                )
            }
            Call::Detach { route, addr } => r(
                Method::DELETE,
                format!("/routes/{}/backends/{}", seg(route), seg(addr)),
                None,
            ),
            Call::Drain { route, addr, drain } => r(
                Method::PATCH,
                format!("/routes/{}/backends/{}", seg(route), seg(addr)),
                Some(json!({ "drain": drain })),
            ),
            Call::Reload => r(Method::POST, "/reload".into(), None),
            Call::ConfigDump => r(Method::GET, "/config".into(), None),
            Call::Upgrade {
                binary,
                timeout,
                sessions,
            } => r(
                Method::POST,
                "/upgrade".into(),
                Some(json!(UpgradeBody {
                    binary: binary.clone(),
                    timeout: timeout.clone(),
                    sessions: Some(*sessions),
                })),
            ),
        }
    }

    fn failed(&self) -> &'static str {
        match self {
            Call::Status => "status failed",
            Call::Metrics => "metrics failed",
            Call::Health => "health failed",
            Call::Switch { .. } => "switch refused",
            Call::Rollback { .. } => "rollback refused",
            Call::Routes | Call::Route { .. } => "route lookup failed",
            Call::PutRoute { .. } => "route add refused",
            Call::RemoveRoute { .. } => "route remove refused",
            Call::Attach { .. } => "backend add refused",
            Call::Detach { .. } => "backend remove refused",
            Call::Drain { drain: true, .. } => "backend drain refused",
            Call::Drain { .. } => "backend undrain refused",
            Call::Reload => "reload failed",
            Call::ConfigDump => "config dump failed",
            Call::Upgrade { .. } => "upgrade failed",
        }
    }
}

/// Runs one CLI call; prints the answer; returns the exit code.
pub fn run(call: Call, args: &ClientArgs) -> u8 {
    let (target, token) = match connect_info(args) {
        Ok(x) => x,
        Err((code, why)) => {
            eprintln!("ringway: {why}");
            return code;
        }
    };
    let req = call.request(args.json);
    let headers: &[(&str, &str)] = if req.create_only {
        &[("if-none-match", "*")]
    } else {
        &[]
    };
    let answer = match http::request(&target, &token, req.method, &req.path, req.body, headers) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("ringway: {why}");
            return EXIT_FAIL;
        }
    };
    // /health answers 503 with a full document when unhealthy: that is an answer, not an error.
    let is_health = matches!(call, Call::Health);
    let answered = (200..300).contains(&answer.status) || (is_health && answer.status == 503);
    if !answered {
        return refused(&call, &answer, args.json);
    }
    if matches!(call, Call::ConfigDump) || (matches!(call, Call::Metrics) && !args.json) {
        print!("{}", answer.body);
        return EXIT_OK;
    }
    if args.json {
        return match serde_json::from_str::<Value>(&answer.body) {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                if is_health && v["healthy"] != Value::Bool(true) {
                    EXIT_FAIL
                } else {
                    EXIT_OK
                }
            }
            Err(e) => not_json(&e),
        };
    }
    let text = match &call {
        Call::Status => typed(&answer.body, |d: StatusDoc| render::status(&d)),
        Call::Health => {
            let doc: Result<HealthDoc, _> = serde_json::from_str(&answer.body);
            return match doc {
                Ok(d) => {
                    print!("{}", render::health(&d));
                    if d.healthy { EXIT_OK } else { EXIT_FAIL }
                }
                Err(e) => not_json(&e),
            };
        }
        Call::Switch { .. } | Call::Rollback { .. } => {
            typed(&answer.body, |d: SwitchDoc| render::switched(&d))
        }
        Call::Routes => typed(&answer.body, |d: RouteList| render::routes(&d)),
        Call::Route { .. } => typed(&answer.body, |d: RouteView| render::view(&d)),
        Call::PutRoute { .. }
        | Call::RemoveRoute { .. }
        | Call::Attach { .. }
        | Call::Detach { .. }
        | Call::Drain { .. } => typed(&answer.body, |d: ChangeDoc| render::change(&d)),
        Call::Reload => typed(&answer.body, |d: ReloadDoc| render::reload(&d)),
        Call::Upgrade { .. } => typed(&answer.body, |d: UpgradeDoc| render::upgraded(&d)),
        Call::Metrics | Call::ConfigDump => Ok(String::new()),
    };
    match text {
        Ok(t) => {
            print!("{t}");
            EXIT_OK
        }
        Err(e) => not_json(&e),
    }
}

fn typed<T: DeserializeOwned>(
    body: &str,
    render: impl FnOnce(T) -> String,
) -> Result<String, serde_json::Error> {
    serde_json::from_str(body).map(render)
}

fn not_json(e: &serde_json::Error) -> u8 {
    eprintln!("ringway: the admin API answered something this CLI cannot read: {e}");
    EXIT_FAIL
}

/// Prints a refusal: the server's message (and the configuration problems behind it).
fn refused(call: &Call, answer: &http::Answer, json: bool) -> u8 {
    let doc: Option<ErrorDoc> = serde_json::from_str(&answer.body).ok();
    if json && doc.is_some() {
        println!("{}", answer.body);
    }
    let message = doc
        .as_ref()
        .map_or(answer.body.trim(), |d| d.message.as_str());
    let hint = match answer.status {
        401 => " (pass --token or RINGWAY_TOKEN, or -c with the configuration ringway runs with)",
        _ => "",
    };
    eprintln!(
        "ringway: {} ({}): {message}{hint}",
        call.failed(),
        answer.status
    );
    EXIT_FAIL
}

/// The body of `route add`: the keys of a `--from` file (a `[[route]]` table, or the bare
/// keys), plus the flags (`--listen`, `--backend`, `--sni`, ...). Errors are usage errors
/// (exit 64).
pub fn route_body(from: Option<&Path>, keys: &RouteKeys) -> Result<Value, String> {
    let mut table = match from {
        None => serde_json::Map::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let v: toml::Value =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let v = match v {
                toml::Value::Table(mut t) => match t.remove("route") {
                    Some(toml::Value::Array(mut a)) if a.len() == 1 && t.is_empty() => a.remove(0),
                    Some(_) => {
                        return Err(format!(
                            "{}: holds several [[route]] tables; keep one",
                            path.display()
                        ));
                    }
                    None => toml::Value::Table(t),
                },
                other => other,
            };
            match serde_json::to_value(v) {
                Ok(Value::Object(m)) => m,
                _ => return Err(format!("{}: not a table of route keys", path.display())),
            }
        }
    };
    let add = |table: &mut serde_json::Map<String, Value>, key: &str, values: &[String]| {
        if values.is_empty() {
            return;
        }
        let list = table
            .entry(key.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.extend(values.iter().map(|v| Value::String(v.clone())));
        }
    };
    add(&mut table, "listen", &keys.listen);
    add(&mut table, "backends", &keys.backends);
    let matching = [
        ("sni", &keys.sni),
        ("host", &keys.host),
        ("path_prefix", &keys.path_prefix),
        ("source", &keys.source),
    ];
    if matching.iter().any(|(_, v)| !v.is_empty()) {
        let m = table
            .entry("match".to_string())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        let Value::Object(m) = m else {
            return Err("match: the --from file's match is not a table".into());
        };
        for (key, values) in matching {
            add(m, key, values);
        }
    }
    if let Some(v) = &keys.proxy_protocol {
        table.insert("proxy_protocol".into(), Value::String(v.clone()));
    }
    Ok(Value::Object(table))
}

/// The admin address and token, from flags/env first, then the configuration (-c or the
/// embedded default), then the generated token file beside the state file.
fn connect_info(args: &ClientArgs) -> Result<(Target, String), (u8, String)> {
    let cfg = match &args.config {
        Some(path) => Some(Config::load_admin(path).map_err(|e| (EXIT_USAGE, e.to_string()))?),
        None => None,
    };
    let target = match &args.admin {
        Some(s) => Target::parse(s).map_err(|e| (EXIT_USAGE, e))?,
        None => {
            let admin = cfg
                .as_ref()
                .map_or_else(|| Config::embedded_default().admin, |c| c.admin.clone());
            match (&admin.unix, admin.listen.port()) {
                (Some(path), _) => Target::Unix(path.clone()),
                (None, 0) => {
                    return Err((
                        EXIT_USAGE,
                        "admin.listen asks for port 0, so the CLI cannot know the port: pass --admin with the address `ringway status` shows, or set admin.unix".into(),
                    ));
                }
                (None, _) => Target::Tcp(admin.listen),
            }
        }
    };
    if let Some(t) = args.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok((target, t.clone()));
    }
    let (source, token_path) = match &cfg {
        Some(c) => (c.admin.token.clone(), c.state.token_path()),
        None => (
            TokenSource::Generated,
            crate::config::token_path_beside(&default_state_file()),
        ),
    };
    let token = match source {
        TokenSource::Inline(t) => t,
        TokenSource::File(p) => read_token_file(&p)
            .map_err(|why| (EXIT_FAIL, format!("admin.token_file {}: {why}", p.display())))?,
        TokenSource::Generated => read_token_file(&token_path).map_err(|why| {
            (
                EXIT_FAIL,
                format!(
                    "no admin token: {} {why}; pass --token (or RINGWAY_TOKEN), or -c with the configuration ringway runs with",
                    token_path.display()
                ),
            )
        })?,
    };
    Ok((target, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_bodies_merge_the_file_and_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(
            &file,
            "[[route]]\nbackends = [\"127.0.0.1:1\"]\nconnect_timeout = \"2s\"\n[route.health]\ncheck = \"tcp\"\n",
        )
        .unwrap();
        let keys = RouteKeys {
            listen: vec!["127.0.0.1:0".into()],
            backends: vec!["127.0.0.1:2".into()],
            ..RouteKeys::default()
        };
        let body = route_body(Some(&file), &keys).unwrap();
        assert_eq!(
            body,
            json!({"backends": ["127.0.0.1:1", "127.0.0.1:2"], "connect_timeout": "2s",
                   "health": {"check": "tcp"}, "listen": ["127.0.0.1:0"]})
        );
        std::fs::write(&file, "backends = [\"127.0.0.1:1\"]\n").unwrap();
        assert_eq!(
            route_body(Some(&file), &RouteKeys::default()).unwrap(),
            json!({"backends": ["127.0.0.1:1"]})
        );
        let keys = RouteKeys {
            sni: vec!["a.test".into(), "*.b.test".into()],
            source: vec!["10.0.0.0/8".into()],
            proxy_protocol: Some("v2".into()),
            ..RouteKeys::default()
        };
        assert_eq!(
            route_body(Some(&file), &keys).unwrap(),
            json!({"backends": ["127.0.0.1:1"], "proxy_protocol": "v2",
                   "match": {"sni": ["a.test", "*.b.test"], "source": ["10.0.0.0/8"]}})
        );
        std::fs::write(&file, "[[route]\n").unwrap();
        assert!(route_body(Some(&file), &RouteKeys::default()).is_err());
    }

    #[test]
    fn addresses_in_paths_are_escaped() {
        let c = Call::Detach {
            route: "web".into(),
            addr: "[::1]:8080".into(),
        };
        assert_eq!(
            c.request(false).path,
            "/routes/web/backends/%5B%3A%3A1%5D%3A8080"
        );
    }
}
