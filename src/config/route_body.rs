//! Control side: one route from outside the configuration file — a `PUT /routes/{name}` body
//! (JSON) or a route the admin API created, as the state file keeps it (a `[[route]]`
//! table). Both go through the file's own validator ([`super::validate::route`]), so every
//! key has the same rules and the same messages wherever a route comes from.

use toml::Spanned;

use super::error::{ConfigError, Problems};
use super::file::FileRoute;
use super::validate::{Label, RouteRules, route};
use super::{RouteConfig, toml_string};

/// Where a route's text came from, for messages.
const BODY: &str = "request body";

/// A `[[route]]` document holding exactly one route (what [`RouteConfig::to_toml`] writes).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OneRoute {
    #[serde(default)]
    route: Vec<Spanned<FileRoute>>,
}

/// Parses a route kept as a `[[route]]` table (the state file's copy of an API route).
/// `source` names it in errors.
pub fn parse_route_toml(text: &str, source: &str) -> Result<RouteConfig, ConfigError> {
    one(text, source, true)
}

/// Validates a `PUT /routes/{name}` body: a JSON object with the keys of a `[[route]]`
/// table (`listen`, `backends`, `connect_timeout`, `health`, `switch`, ...). `name` comes
/// from the path; a `name` in the body must agree. `listen` may be left out: the caller then
/// picks an address. Problems name the key as in the file, without the `route[i]` prefix.
pub fn parse_route_json(name: &str, body: &serde_json::Value) -> Result<RouteConfig, ConfigError> {
    let single = |key: &str, message: String, fix: &str| ConfigError {
        file: BODY.into(),
        problems: vec![super::Problem {
            line: None,
            key: key.into(),
            message,
            fix: fix.into(),
        }],
    };
    let serde_json::Value::Object(map) = body else {
        return Err(single(
            "(body)",
            "the body is not a JSON object".into(),
            "send the keys of a [[route]] table as an object, e.g. {\"listen\": [\"127.0.0.1:3000\"], \"backends\": [\"127.0.0.1:8080\"]}",
        ));
    };
    let mut map = map.clone();
    match map.get("name") {
        None => {
            map.insert("name".into(), serde_json::Value::String(name.into()));
        }
        Some(serde_json::Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(single(
                "name",
                format!("the body names the route {other}, the path names it \"{name}\""),
                "leave name out of the body (the path names the route), or make them agree",
            ));
        }
    }
    let table: toml::Value = match serde_json::from_value(serde_json::Value::Object(map)) {
        Ok(t) => t,
        Err(e) => {
            return Err(single(
                "(value)",
                format!("a value cannot be used: {e}"),
                "use strings, numbers, booleans, arrays and objects (no null: leave the key out instead)",
            ));
        }
    };
    let mut doc = toml::map::Map::new();
    doc.insert("route".into(), toml::Value::Array(vec![table]));
    let text = match toml::to_string(&toml::Value::Table(doc)) {
        Ok(t) => t,
        Err(e) => {
            return Err(single(
                "(value)",
                format!("a value cannot be used: {e}"),
                "use strings, numbers, booleans, arrays and objects",
            ));
        }
    };
    let route = one(&text, BODY, false)?;
    if let Some(super::AccessLogConfig {
        path: super::LogPath::File(path),
        ..
    }) = &route.access_log
    {
        // A token holder must not make ringway append to any file its user can write.
        return Err(single(
            "access_log",
            format!(
                "a route made through the admin API cannot log to a file ({})",
                path.display()
            ),
            "use access_log = \"stdout\" here, or define the route in the configuration file to log to a file",
        ));
    }
    Ok(route)
}

fn one(text: &str, source: &str, from_file: bool) -> Result<RouteConfig, ConfigError> {
    // Lines of a document ringway wrote itself from a JSON body mean nothing to the caller.
    let mut problems = if from_file {
        Problems::new(text)
    } else {
        Problems::without_lines(text)
    };
    let doc: OneRoute = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let (key, fix) = super::validate::syntax_hint(e.message());
            problems.add(
                e.span().map(|s| s.start),
                key,
                e.message().trim().to_string(),
                fix,
            );
            return Err(problems.into_error(source));
        }
    };
    let [spanned] = doc.route.as_slice() else {
        problems.add(
            None,
            "route",
            format!("{} routes where one was expected", doc.route.len()),
            "keep exactly one [[route]] table",
        );
        return Err(problems.into_error(source));
    };
    let rules = RouteRules {
        listen_optional: !from_file,
    };
    let label = if from_file {
        Label::Indexed(0)
    } else {
        Label::Bare
    };
    match route(
        &label,
        spanned.span().start,
        spanned.get_ref(),
        &mut problems,
        rules,
    ) {
        Some(r) if problems.is_empty() => Ok(r),
        _ => Err(problems.into_error(source)),
    }
}

/// A route as the body of `PUT /routes/{name}` takes it (what `ringway route add --file`
/// sends): the route's keys, as JSON.
pub fn route_to_json(r: &RouteConfig) -> serde_json::Value {
    let text = r.to_toml();
    let parsed: Result<toml::Value, _> = toml::from_str(&text);
    let mut v = match parsed {
        Ok(toml::Value::Table(mut t)) => match t.remove("route") {
            Some(toml::Value::Array(mut a)) if a.len() == 1 => a.remove(0),
            _ => toml::Value::Table(t),
        },
        _ => toml::Value::String(toml_string(&r.name)),
    };
    if let toml::Value::Table(t) = &mut v {
        t.remove("name");
    }
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A token holder cannot make ringway write to an arbitrary file; stdout is allowed.
    #[test]
    fn api_routes_log_to_stdout_only() {
        let body = serde_json::json!({"listen": ["127.0.0.1:0"], "backends": ["127.0.0.1:1"],
                                      "access_log": "/etc/cron.d/x"});
        let e = parse_route_json("r", &body).unwrap_err();
        assert_eq!(e.problems[0].key, "access_log", "{e}");
        let body = serde_json::json!({"listen": ["127.0.0.1:0"], "backends": ["127.0.0.1:1"],
                                      "access_log": "stdout"});
        assert!(parse_route_json("r", &body).is_ok());
    }

    #[test]
    fn a_json_body_is_validated_like_the_file() {
        let ok = parse_route_json(
            "web",
            &json!({"listen": ["127.0.0.1:3000"], "backends": ["127.0.0.1:8080"],
                    "connect_timeout": "2s", "health": {"check": "http", "path": "/h"}}),
        )
        .unwrap();
        assert_eq!(ok.name, "web");
        assert_eq!(ok.connect_timeout, std::time::Duration::from_secs(2));
        assert!(ok.health.periodic);

        // No listen: allowed here (the API picks one).
        let auto = parse_route_json("api", &json!({"backends": ["127.0.0.1:8080"]})).unwrap();
        assert!(auto.listen.is_empty());

        for (body, key, needle) in [
            (
                json!({"backends": ["bad"]}),
                "backends[0]",
                "not an address",
            ),
            (json!({"backends": []}), "backends", "no backends"),
            (
                json!({"backends": ["127.0.0.1:1"], "colour": 1}),
                "colour",
                "unknown field",
            ),
            (
                json!({"backends": ["127.0.0.1:1"], "connect_timeout": 5}),
                "(value)",
                "invalid type",
            ),
            (
                json!({"backends": ["127.0.0.1:1"], "health": {"fall": 0}}),
                "health.fall",
                "out of range",
            ),
            (
                json!({"backends": ["127.0.0.1:1"], "name": "other"}),
                "name",
                "path names it",
            ),
            (
                json!({"backends": ["127.0.0.1:1"], "idle_timeout": null}),
                "(value)",
                "cannot be used",
            ),
            (
                json!(["not", "an", "object"]),
                "(body)",
                "not a JSON object",
            ),
        ] {
            let err = parse_route_json("web", &body).unwrap_err();
            let p = &err.problems[0];
            assert_eq!(p.key, key, "{body}: {err}");
            assert!(p.message.contains(needle), "{body}: {err}");
            assert_eq!(p.line, None, "no lines for a body: {err}");
        }
    }

    #[test]
    fn a_route_round_trips_through_its_toml_and_json_forms() {
        let r = parse_route_json(
            "web",
            &json!({"listen": ["127.0.0.1:0"], "backends": ["127.0.0.1:8080"],
                    "idle_timeout": "5m", "switch": {"drain": "3s"},
                    "access_log": {"path": "stdout", "format": "json"}}),
        )
        .unwrap();
        assert!(r.access_log.is_some());
        assert_eq!(parse_route_toml(&r.to_toml(), "state").unwrap(), r);
        assert_eq!(parse_route_json("web", &route_to_json(&r)).unwrap(), r);
    }
}
