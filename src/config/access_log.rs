//! Control side: a route's `access_log` key, validated, and the `runtime.access_log_queue`
//! bounds. The log itself is written by [`crate::access_log`].
//!
//! Two shapes, one meaning:
//! ```toml
//! access_log = "/var/log/ringway/web.log"                  # text lines to a file
//! access_log = "stdout"                                    # text lines to standard output
//! access_log = { path = "/var/log/ringway/web.log", format = "json" }
//! ```
//! `path` is `"stdout"` or an absolute path; `format` is `"text"` (default) or `"json"`.
//! Several routes may name the same file: one writer serves each path.

use std::path::PathBuf;

use toml::Spanned;

use super::error::Problems;
use super::file::FileAccessLog;
use super::toml_string;

/// Records each worker's queue holds before lines are dropped (and counted).
pub const DEFAULT_ACCESS_LOG_QUEUE: usize = 4096;
/// Bounds of `runtime.access_log_queue`.
pub const ACCESS_LOG_QUEUE_RANGE: (usize, usize) = (1, 1 << 20);

/// Where a route's access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogPath {
    Stdout,
    /// An absolute path, opened for appending (created mode 0640 when missing).
    File(PathBuf),
}

impl LogPath {
    /// As the configuration writes it.
    pub fn as_config(&self) -> String {
        match self {
            LogPath::Stdout => "stdout".to_string(),
            LogPath::File(p) => p.display().to_string(),
        }
    }
}

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum LogFormat {
    /// Space-separated fields in a fixed order (README, "Access log").
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A route's `access_log`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessLogConfig {
    pub path: LogPath,
    pub format: LogFormat,
}

impl AccessLogConfig {
    /// The `access_log = ...` line `ringway check` and `config dump` print.
    pub fn to_toml(&self) -> String {
        format!(
            "access_log = {{ path = {}, format = \"{}\" }}\n",
            toml_string(&self.path.as_config()),
            self.format.as_str()
        )
    }
}

const PATH_FIX: &str = "write \"stdout\" or an absolute path, e.g. access_log = \"/var/log/ringway/web.log\" or access_log = { path = \"/var/log/ringway/web.log\", format = \"json\" }";

/// Validates `access_log` of the route whose keys start with `label`.
pub(super) fn access_log(
    raw: Option<&Spanned<FileAccessLog>>,
    label: &str,
    p: &mut Problems<'_>,
) -> Option<AccessLogConfig> {
    let raw = raw?;
    let at = Some(raw.span().start);
    let key = format!("{label}access_log");
    let (path, format) = match raw.get_ref() {
        FileAccessLog::Path(s) => (s.as_str(), None),
        FileAccessLog::Table { path: None, .. } => {
            p.add(
                at,
                format!("{key}.path"),
                "the access_log table has no path",
                PATH_FIX,
            );
            return None;
        }
        FileAccessLog::Table {
            path: Some(path),
            format,
        } => (path.as_str(), format.as_deref()),
    };
    let format = match format {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                at,
                format!("{key}.format"),
                format!("unknown access log format \"{other}\""),
                "use \"text\" (default: space-separated fields) or \"json\" (one object per line)",
            );
            return None;
        }
    };
    let path = match path {
        "stdout" | "-" => LogPath::Stdout,
        "" => {
            p.add(at, key, "the access log path is empty", PATH_FIX);
            return None;
        }
        s if !s.starts_with('/') => {
            p.add(
                at,
                key,
                format!("\"{s}\" is not an absolute path"),
                PATH_FIX,
            );
            return None;
        }
        s if s.ends_with('/') => {
            p.add(
                at,
                key,
                format!("\"{s}\" names a directory"),
                "name a file in it, e.g. \"/var/log/ringway/web.log\"",
            );
            return None;
        }
        s => LogPath::File(PathBuf::from(s)),
    };
    Some(AccessLogConfig { path, format })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LogFormat, LogPath};

    fn of(value: &str) -> Result<Option<super::AccessLogConfig>, String> {
        let text = format!(
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\naccess_log = {value}\n"
        );
        Config::parse(&text, "t.toml")
            .map(|c| c.routes[0].access_log.clone())
            .map_err(|e| e.to_string())
    }

    /// Both shapes read; bad values name the key and the fix; what `to_toml` writes reads
    /// back the same.
    #[test]
    fn shapes_problems_and_round_trip() {
        let file = of("\"/var/log/ringway/web.log\"").unwrap().unwrap();
        assert_eq!(file.path, LogPath::File("/var/log/ringway/web.log".into()));
        assert_eq!(file.format, LogFormat::Text);
        assert_eq!(of("\"stdout\"").unwrap().unwrap().path, LogPath::Stdout);
        let json = of("{ path = \"/tmp/a.log\", format = \"json\" }")
            .unwrap()
            .unwrap();
        assert_eq!(json.format, LogFormat::Json);
        for c in [&file, &json] {
            let again = of(c.to_toml().trim_start_matches("access_log = ").trim()).unwrap();
            assert_eq!(again.as_ref(), Some(c));
        }
        for (value, needle) in [
            ("\"relative.log\"", "not an absolute path"),
            ("\"\"", "empty"),
            ("\"/var/log/\"", "names a directory"),
            (
                "{ path = \"/a.log\", format = \"xml\" }",
                "access_log.format",
            ),
            ("{ format = \"json\" }", "access_log.path"),
            ("{ path = \"/a.log\", colour = 1 }", "colour"),
            ("3", "access_log"),
        ] {
            let err = of(value).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
        assert_eq!(
            of("\"/a.log\"").unwrap().unwrap().to_toml(),
            "access_log = { path = \"/a.log\", format = \"text\" }\n"
        );
    }
}
