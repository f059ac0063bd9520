//! Structure-aware inputs for the configuration targets: byte mutations break JSON and TOML
//! syntax almost every time, so these generate well-formed documents with the keys and
//! values a route has (and some it has not), to reach the validator behind the parser.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

/// Keys of a route and its tables, the admin bodies' keys, and a few that do not exist.
const KEYS: &[&str] = &[
    "name",
    "listen",
    "backends",
    "connect_timeout",
    "connect_retries",
    "idle_timeout",
    "max_connections",
    "health",
    "switch",
    "match",
    "check",
    "path",
    "interval",
    "timeout",
    "rise",
    "fall",
    "drain",
    "rollback_window",
    "rollback_check",
    "rollback_fail_threshold",
    "rollback_connect_errors",
    "sni",
    "host",
    "path_prefix",
    "source",
    "proxy_protocol",
    "accept_proxy_from",
    "peek_timeout",
    "half_close_timeout",
    "keepalive",
    "idle",
    "count",
    "user_timeout",
    "eject",
    "after",
    "time",
    "max_time",
    "max_percent",
    "balance",
    "addr",
    "to",
    "nonsense",
];

const STRINGS: &[&str] = &[
    "127.0.0.1:3000",
    "127.0.0.1:8080",
    "[::1]:8080",
    "0.0.0.0:0",
    "127.0.0.1:0",
    "256.0.0.1:1",
    "5s",
    "0s",
    "250ms",
    "1h",
    "18446744073709551615s",
    "tcp",
    "http",
    "/health",
    "v1",
    "v2",
    "*.example.com",
    "api.example.com",
    "app.internal:8080",
    "a..b:80",
    "*.",
    "127.0.0.0/8",
    "::/0",
    "1.2.3.4/33",
    "/.well-known/",
    "",
    "web",
    "\u{0}",
    "é",
];

const INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    65535,
    65536,
    i64::MAX,
    i64::MIN,
    4_294_967_296,
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        2 => select(INTS).prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        6 => select(STRINGS).prop_map(Value::from),
        2 => "[a-z0-9:./*\\[\\]-]{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            3 => proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => object(inner),
        ]
    })
}

fn object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    proptest::collection::vec((select(KEYS), values), 0..8).prop_map(|kv| {
        Value::Object(
            kv.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<String, Value>>(),
        )
    })
}

/// A valid route (as JSON) with up to 5 keys added or replaced: most inputs then reach the
/// validator's checks of those keys rather than its complaint about a missing `backends`.
fn route(index: usize) -> impl Strategy<Value = Value> {
    proptest::collection::vec((select(KEYS), value()), 0..6).prop_map(move |kv| {
        let mut map = Map::new();
        map.insert("name".into(), Value::from(format!("r{index}")));
        map.insert(
            "listen".into(),
            Value::from(vec![format!("127.0.0.1:{}", 3000 + index)]),
        );
        map.insert("backends".into(), Value::from(vec!["127.0.0.1:8080"]));
        for (k, v) in kv {
            map.insert(k.to_string(), v);
        }
        Value::Object(map)
    })
}

/// A JSON object of route-ish keys, as a `PUT /routes/{name}` or other admin body.
pub fn json_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        1 => object(value()),
        2 => route(0).prop_map(|mut v| {
            // The path names the route: a body names it rarely.
            if let Value::Object(map) = &mut v
                && map.get("name") == Some(&Value::from("r0"))
            {
                map.remove("name");
            }
            v
        }),
    ]
    .prop_map(|v| serde_json::to_vec(&v).unwrap_or_default())
    .boxed()
}

/// One to three `[[route]]` tables of route-ish keys, sometimes after a `[runtime]` table.
pub fn toml_config() -> BoxedStrategy<Vec<u8>> {
    (any::<bool>(), (route(0), route(1), route(2), 1usize..=3))
        .prop_map(|(runtime, (r0, r1, r2, n))| {
            let routes = [r0, r1, r2].into_iter().take(n);
            let mut out = String::new();
            if runtime {
                out.push_str("[runtime]\nworkers = 1\n\n");
            }
            for r in routes {
                out.push_str("[[route]]\n");
                if let Value::Object(map) = r {
                    for (k, v) in map {
                        if let Some(v) = toml_inline(&v) {
                            out.push_str(&format!("{k} = {v}\n"));
                        }
                    }
                }
                out.push('\n');
            }
            out.into_bytes()
        })
        .boxed()
}

/// A JSON value as a TOML inline value; `None` for null (TOML has none).
fn toml_inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.is_finite() && f.fract() == 0.0 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        // A JSON string literal is a valid TOML basic string for what STRINGS holds.
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().filter_map(toml_inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .filter_map(|(k, v)| Some(format!("{k} = {}", toml_inline(v)?)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    })
}
