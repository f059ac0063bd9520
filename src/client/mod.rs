//! Control side (CLI): `ringway status | metrics | health | switch | rollback`, talking to a
//! running ringway's admin API. Human output by default, `--json` for machines. Exit codes:
//! 0 done (and, for `health`, healthy), 1 refused, failed, unreachable or unhealthy, 64 bad
//! usage.

mod http;
mod render;

use hyper::Method;
use serde_json::{Value, json};

pub use http::Target;

use crate::cli::ClientArgs;
use crate::config::{Config, TokenSource, default_state_file};
use crate::control::read_token_file;

/// What the CLI asks.
#[derive(Debug, Clone)]
pub enum Call {
    Status,
    Metrics,
    Health,
    Switch { route: String, to: Vec<String> },
    Rollback { route: String },
}

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
pub const EXIT_USAGE: u8 = 64;

/// Runs one CLI call; prints the answer; returns the exit code.
pub fn run(call: Call, args: &ClientArgs) -> u8 {
    let (target, token) = match connect_info(args) {
        Ok(x) => x,
        Err((code, why)) => {
            eprintln!("ringway: {why}");
            return code;
        }
    };
    let (method, path, body) = match &call {
        Call::Status => (Method::GET, "/status".to_string(), None),
        Call::Metrics if args.json => (Method::GET, "/metrics?format=json".to_string(), None),
        Call::Metrics => (Method::GET, "/metrics".to_string(), None),
        Call::Health => (Method::GET, "/health".to_string(), None),
        Call::Switch { route, to } => (
            Method::POST,
            format!("/routes/{route}/switch"),
            Some(json!({ "to": to }).to_string()),
        ),
        Call::Rollback { route } => (Method::POST, format!("/routes/{route}/rollback"), None),
    };
    let answer = match http::request(&target, &token, method, &path, body) {
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
        let v: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        if args.json && v.is_object() {
            println!("{}", answer.body);
        }
        let message = v["message"].as_str().unwrap_or(answer.body.trim());
        let hint = match answer.status {
            401 => {
                " (pass --token or RINGWAY_TOKEN, or -c with the configuration ringway runs with)"
            }
            _ => "",
        };
        eprintln!(
            "ringway: {} ({}): {message}{hint}",
            what(&call),
            answer.status
        );
        return EXIT_FAIL;
    }
    if matches!(call, Call::Metrics) && !args.json {
        print!("{}", answer.body);
        return EXIT_OK;
    }
    let v: Value = match serde_json::from_str(&answer.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ringway: the admin API answered something that is not JSON: {e}");
            return EXIT_FAIL;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let text = match call {
            Call::Status => render::status(&v),
            Call::Health => render::health(&v),
            Call::Switch { .. } | Call::Rollback { .. } => render::switched(&v),
            Call::Metrics => String::new(),
        };
        print!("{text}");
    }
    if is_health && v["healthy"] != Value::Bool(true) {
        return EXIT_FAIL;
    }
    EXIT_OK
}

fn what(call: &Call) -> &'static str {
    match call {
        Call::Status => "status failed",
        Call::Metrics => "metrics failed",
        Call::Health => "health failed",
        Call::Switch { .. } => "switch refused",
        Call::Rollback { .. } => "rollback refused",
    }
}

/// The admin address and token, from flags/env first, then the configuration (-c or the
/// embedded default), then the generated token file beside the state file.
fn connect_info(args: &ClientArgs) -> Result<(Target, String), (u8, String)> {
    let cfg = match &args.config {
        Some(path) => Some(Config::load(path).map_err(|e| (EXIT_USAGE, e.to_string()))?),
        None => None,
    };
    let target = match &args.admin {
        Some(s) => Target::parse(s).map_err(|e| (EXIT_USAGE, e))?,
        None => match &cfg {
            Some(c) => Target::Tcp(c.admin.listen),
            None => Target::Tcp(Config::embedded_default().admin.listen),
        },
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
