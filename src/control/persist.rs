//! Control side: the state file — per route the active set, the set a rollback would go to,
//! the last switch record, the generation and a fingerprint of the route's configuration.
//!
//! Written atomically on every change (temporary file in the same directory, fsync, rename,
//! fsync of the directory) in a versioned JSON format. Read once at start: a route resumes its
//! persisted active set unless its configuration changed since (then the configuration wins)
//! or it no longer exists; a corrupt or unreadable file is reported and ignored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::routes::{RouteState, SwitchRecord};
use crate::config::RouteConfig;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct StateDoc {
    version: u32,
    written_at: String,
    routes: BTreeMap<String, PersistedRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedRoute {
    pub active: Vec<SocketAddr>,
    #[serde(default)]
    pub previous: Option<Vec<SocketAddr>>,
    pub generation: u64,
    pub fingerprint: String,
    #[serde(default)]
    pub last_switch: Option<SwitchRecord>,
}

/// A stable fingerprint of a route's configuration (FNV-1a 64 of its normalized TOML).
pub fn fingerprint(cfg: &RouteConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cfg.to_toml().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// Reads the state file. `Ok(None)`: there is none yet.
pub fn load(path: &Path) -> Result<Option<BTreeMap<String, PersistedRoute>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let doc: StateDoc = serde_json::from_str(&text).map_err(|e| format!("not valid: {e}"))?;
    if doc.version != FORMAT_VERSION {
        return Err(format!(
            "format version {} is not {FORMAT_VERSION} (written by another ringway version)",
            doc.version
        ));
    }
    Ok(Some(doc.routes))
}

/// Writes the state of `routes` to `path` atomically.
pub fn save(path: &Path, routes: &[RouteState]) -> std::io::Result<()> {
    let doc = StateDoc {
        version: FORMAT_VERSION,
        written_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        routes: routes
            .iter()
            .map(|r| {
                (
                    r.cfg.name.clone(),
                    PersistedRoute {
                        active: r.active.clone(),
                        previous: r.previous.clone(),
                        generation: r.generation,
                        fingerprint: fingerprint(&r.cfg),
                        last_switch: r.last().cloned(),
                    },
                )
            })
            .collect(),
    };
    let body = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    write_atomic(path, &body, 0o600)
}

/// temp file (same directory) → write → fsync → rename → fsync the directory.
pub fn write_atomic(path: &Path, body: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (mode 0700) when it does not exist.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Applies the persisted state to the configured routes, with the precedence README
/// documents. Returns the highest persisted generation (0 when none).
pub fn resume(
    routes: &mut [RouteState],
    saved: BTreeMap<String, PersistedRoute>,
    file: &Path,
) -> u64 {
    let mut max_generation = 0;
    for (name, p) in saved {
        let Some(r) = routes.iter_mut().find(|r| r.cfg.name == name) else {
            tracing::warn!(route = %name, file = %file.display(), "state file names a route that is no longer configured; ignored");
            continue;
        };
        if p.fingerprint != fingerprint(&r.cfg) {
            tracing::warn!(
                route = %name,
                file = %file.display(),
                "the route's configuration changed since the state was written; the configuration's backends win"
            );
            continue;
        }
        if p.active.is_empty() {
            tracing::warn!(route = %name, "state file has an empty active set; ignored");
            continue;
        }
        max_generation = max_generation.max(p.generation);
        if p.active != r.active {
            tracing::info!(
                route = %name,
                active = %join(&p.active),
                "resuming the persisted active set"
            );
        }
        r.active = p.active;
        r.previous = p.previous;
        r.generation = p.generation;
        if let Some(last) = p.last_switch {
            r.remember(last);
        }
    }
    max_generation
}

pub fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::routes::Reason;

    fn routes() -> Vec<RouteState> {
        let cfg = Config::parse(
            r#"
            [[route]]
            name = "web"
            listen = ["127.0.0.1:3000"]
            backends = ["127.0.0.1:8080"]
            [[route]]
            name = "api"
            listen = ["127.0.0.1:3001"]
            backends = ["127.0.0.1:9000"]
            "#,
            "t.toml",
        )
        .unwrap();
        cfg.routes.into_iter().map(RouteState::new).collect()
    }

    #[test]
    fn saves_atomically_and_resumes_with_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut rs = routes();
        rs[0].previous = Some(rs[0].active.clone());
        rs[0].active = vec!["127.0.0.1:8081".parse().unwrap()];
        rs[0].generation = 7;
        rs[0].remember(SwitchRecord::now(
            1,
            "web",
            vec!["127.0.0.1:8080".parse().unwrap()],
            vec!["127.0.0.1:8081".parse().unwrap()],
            Reason::Switch,
            None,
        ));
        save(&path, &rs).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // Same configuration: the switched-to set resumes.
        let mut fresh = routes();
        let saved = load(&path).unwrap().unwrap();
        assert_eq!(resume(&mut fresh, saved, &path), 7);
        assert_eq!(fresh[0].active, vec!["127.0.0.1:8081".parse().unwrap()]);
        assert_eq!(fresh[0].last().map(|r| r.id), Some(1));

        // A changed configuration wins.
        let mut changed = routes();
        changed[0].cfg.connect_timeout = std::time::Duration::from_secs(3);
        let before = changed[0].active.clone();
        resume(&mut changed, load(&path).unwrap().unwrap(), &path);
        assert_eq!(changed[0].active, before);
    }

    #[test]
    fn corrupt_or_foreign_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path), Ok(None));
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path).unwrap_err().contains("not valid"));
        std::fs::write(&path, r#"{"version": 99, "written_at": "", "routes": {}}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("version 99"));
    }
}
