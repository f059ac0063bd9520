//! Control side: the configuration file as written (`File*` types), before validation.
//!
//! These types mirror the TOML one to one. Every table denies unknown keys, and every value
//! that validation can reject is `Spanned` so that the error can name its line.
//! Nothing here binds a socket or touches the system.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub runtime: Option<FileRuntime>,
    pub admin: Option<FileAdmin>,
    pub state: Option<FileState>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<FileRoute>>,
}

/// `[runtime]`: how the data plane runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    pub workers: Option<Spanned<i64>>,
    pub pin: Option<bool>,
    pub splice: Option<Spanned<FileSplice>>,
    pub driver: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub buffer_size: Option<Spanned<String>>,
    pub pipe_size: Option<Spanned<String>>,
    pub watch_config: Option<bool>,
    pub busy_poll: Option<Spanned<String>>,
    pub access_log_queue: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub dns_resolver: Option<Spanned<String>>,
    pub dns_min_ttl: Option<Spanned<String>>,
    pub dns_max_ttl: Option<Spanned<String>>,
}

/// `runtime.splice`: `true`, `false` or a mode name (`"auto"`, `"always"`, `"never"`).
#[derive(Debug)]
pub enum FileSplice {
    Bool(bool),
    Mode(String),
}

impl<'de> Deserialize<'de> for FileSplice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FileSplice;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("runtime.splice = \"auto\", true or false")
            }
            fn visit_bool<E>(self, v: bool) -> Result<FileSplice, E> {
                Ok(FileSplice::Bool(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<FileSplice, E> {
                Ok(FileSplice::Mode(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[admin]`: the admin HTTP API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub allow: Option<Vec<Spanned<String>>>,
    pub rate_limit: Option<Spanned<i64>>,
    pub unix: Option<Spanned<String>>,
    pub listen_range: Option<Spanned<String>>,
}

/// `[state]`: where switch state survives a restart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    pub file: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub backends: Vec<Spanned<FileBackend>>,
    /// `balance`: how new sessions are spread over the backends.
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    pub connect_retries: Option<Spanned<i64>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_source: Option<Spanned<i64>>,
    pub first_byte_timeout: Option<Spanned<String>>,
    pub health: Option<Spanned<FileHealth>>,
    pub switch: Option<FileSwitch>,
    #[serde(rename = "match")]
    pub matching: Option<Spanned<FileMatch>>,
    pub proxy_protocol: Option<Spanned<String>>,
    pub accept_proxy_from: Option<Vec<Spanned<String>>>,
    pub peek_timeout: Option<Spanned<String>>,
    pub access_log: Option<Spanned<FileAccessLog>>,
    pub half_close_timeout: Option<Spanned<String>>,
    pub keepalive: Option<Spanned<FileKeepalive>>,
    pub eject: Option<Spanned<FileEject>>,
}

/// `[route.eject]`: passive ejection of a backend whose connects keep failing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEject {
    pub after: Option<Spanned<i64>>,
    pub time: Option<Spanned<String>>,
    pub max_time: Option<Spanned<String>>,
    pub max_percent: Option<Spanned<i64>>,
}

/// `[route.keepalive]`: how a session finds out that a peer vanished.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeepalive {
    pub idle: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub count: Option<Spanned<i64>>,
    pub user_timeout: Option<Spanned<String>>,
}

/// A route's `access_log`: a path (or `"stdout"`), or `{ path = "...", format = "json" }`.
#[derive(Debug)]
pub enum FileAccessLog {
    Path(String),
    Table {
        path: Option<String>,
        format: Option<String>,
    },
}

/// The table form of `access_log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccessLogTable {
    path: Option<String>,
    format: Option<String>,
}

impl<'de> Deserialize<'de> for FileAccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileAccessLog;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "access_log = \"/path/to/file.log\", \"stdout\" or { path = \"...\", format = \"text\" | \"json\" }",
                )
            }
            fn visit_str<E>(self, v: &str) -> Result<FileAccessLog, E> {
                Ok(FileAccessLog::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileAccessLog, A::Error> {
                let t = FileAccessLogTable::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(FileAccessLog::Table {
                    path: t.path,
                    format: t.format,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One entry of `backends`: `"addr"`, or `{ addr = "…", weight = N, max_connections = M }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBackend {
    pub addr: String,
    /// Only in the table form; validated later (1..=256).
    pub weight: Option<i64>,
    /// Only in the table form; validated later (1..=u32::MAX).
    pub max_connections: Option<i64>,
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileBackend;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a backend: \"IP:PORT\", \"NAME:PORT\" or { addr = \"…\", weight = N, max_connections = M }",
                )
            }
            fn visit_str<E>(self, v: &str) -> Result<FileBackend, E> {
                Ok(FileBackend {
                    addr: v.to_string(),
                    weight: None,
                    max_connections: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FileBackend, A::Error> {
                use serde::de::Error;
                let mut addr: Option<String> = None;
                let mut weight: Option<i64> = None;
                let mut max_connections: Option<i64> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        // TOML itself refuses a key given twice.
                        "addr" => addr = Some(map.next_value()?),
                        "weight" => weight = Some(map.next_value()?),
                        "max_connections" => max_connections = Some(map.next_value()?),
                        other => {
                            return Err(A::Error::unknown_field(
                                other,
                                &["addr", "weight", "max_connections"],
                            ));
                        }
                    }
                }
                let addr = addr.ok_or_else(|| A::Error::missing_field("addr"))?;
                Ok(FileBackend {
                    addr,
                    weight,
                    max_connections,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[route.match]`: how the routes sharing a listen address are told apart.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub sni: Option<Vec<Spanned<String>>>,
    pub host: Option<Vec<Spanned<String>>>,
    pub path_prefix: Option<Vec<Spanned<String>>>,
    pub source: Option<Vec<Spanned<String>>>,
}

/// `[route.health]`: active health checks of the route's backends.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub check: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

/// `[route.switch]`: draining and automatic rollback after a switch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSwitch {
    pub drain: Option<Spanned<String>>,
    pub rollback_window: Option<Spanned<String>>,
    pub rollback_check: Option<Spanned<String>>,
    pub rollback_fail_threshold: Option<Spanned<i64>>,
    pub rollback_connect_errors: Option<Spanned<i64>>,
}
