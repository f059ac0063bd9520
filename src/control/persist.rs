//! Control side: the state file — per route the active set, the set a rollback would go to,
//! the last switch record, the generation, the drain flags and a fingerprint of the route's
//! configuration; for routes created through the admin API, their whole definition too (the
//! state file is where they live).
//!
//! Written atomically on every change (temporary file in the same directory, fsync, rename,
//! fsync of the directory) in a versioned JSON format. Read once at start: a route resumes its
//! persisted active set unless its configuration changed since (then the configuration wins)
//! or it no longer exists; a corrupt or unreadable file is reported and ignored.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::routes::{RouteState, SwitchRecord};
use crate::api::Origin;
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
    /// Who owns the route (absent in files from before runtime routes: the file).
    #[serde(default)]
    pub origin: Origin,
    /// An API route's definition, as a `[[route]]` table (validated like the file on load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Backends with the drain flag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain: Vec<SocketAddr>,
}

/// A stable fingerprint of a route's configuration: FNV-1a 64 over a canonical JSON of every
/// route key (explicit units, fixed order; not the printed TOML, whose comments may change
/// between versions).
pub fn fingerprint(cfg: &RouteConfig) -> String {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let h = &cfg.health;
    let s = &cfg.switch;
    let check = match &h.check {
        crate::config::Check::Tcp => "tcp".to_string(),
        crate::config::Check::Http { path } => format!("http {path}"),
    };
    let canonical = serde_json::json!([
        1,
        cfg.name,
        cfg.listen,
        cfg.backends,
        ms(cfg.connect_timeout),
        cfg.connect_retries,
        cfg.idle_timeout.map(ms),
        cfg.max_connections.map(|n| n.get()),
        [
            h.periodic.to_string(),
            check,
            ms(h.interval).to_string(),
            ms(h.timeout).to_string(),
            h.rise.to_string(),
            h.fall.to_string()
        ],
        [
            ms(s.drain),
            ms(s.rollback_window),
            ms(s.rollback_check),
            u64::from(s.rollback_fail_threshold),
            u64::from(s.rollback_connect_errors)
        ],
    ]);
    // Added later: only when set, so that a route without them keeps the fingerprint its
    // state file has (and its switched active set across the upgrade).
    let mut canonical = canonical;
    let balance = (cfg.balance != crate::config::Balance::default() || !cfg.weights.is_empty())
        .then(|| {
            let weights: Vec<(String, u16)> = cfg
                .weights
                .iter()
                .map(|(a, w)| (a.to_string(), *w))
                .collect();
            serde_json::json!([cfg.balance.as_str(), weights])
        });
    if let (Some(b), Some(a)) = (balance, canonical.as_array_mut()) {
        a.push(b);
    }
    let limits = (cfg.max_connections_per_source.is_some() || cfg.first_byte_timeout.is_some())
        .then(|| {
            serde_json::json!([
                "limits",
                cfg.max_connections_per_source.map(|n| n.get()),
                cfg.first_byte_timeout.map(ms)
            ])
        });
    if let (Some(l), Some(a)) = (limits, canonical.as_array_mut()) {
        a.push(l);
    }
    let canonical = canonical.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
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

/// Renames an unusable state file to `<file>.unusable-<unix seconds>`; returns the new name
/// (or why it could not be moved).
pub fn set_aside(path: &Path) -> String {
    let aside = stamped(path, "unusable");
    match std::fs::rename(path, &aside) {
        Ok(()) => aside.display().to_string(),
        Err(e) => format!("(not moved: {e})"),
    }
}

/// Copies the state file to `<file>.kept-<unix seconds>` (before a rewrite would lose part of
/// it); returns the copy's name (or why there is none).
pub fn keep_copy(path: &Path) -> String {
    let copy = stamped(path, "kept");
    match std::fs::copy(path, &copy) {
        Ok(_) => copy.display().to_string(),
        Err(e) => format!("(not copied: {e})"),
    }
}

/// `<path>.<tag>-<unix seconds>`.
fn stamped(path: &Path, tag: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{tag}-{secs}"));
    PathBuf::from(name)
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
                        origin: r.origin,
                        definition: (r.origin == Origin::Api).then(|| r.cfg.to_toml()),
                        drain: r.drain.iter().copied().collect(),
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
    let mut nonce = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{:016x}", u64::from_ne_bytes(nonce)));
    let result = (|| {
        // A fresh file only (no following a planted symlink, no reusing someone's file).
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
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

/// Creates `dir` (mode 0700) when it does not exist. An existing one must be a directory
/// owned by this user (or root) that others cannot write to: the token lives there.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        ))),
        Ok(m) if (m.uid() != crate::config::euid() && m.uid() != 0) || m.mode() & 0o002 != 0 => {
            Err(std::io::Error::other(format!(
                "{} is owned by another user or writable by everyone; use a directory only ringway's user can write",
                dir.display()
            )))
        }
        Ok(_) => Ok(()),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
    }
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
        let usable = |set: &[SocketAddr]| {
            !set.is_empty()
                && set
                    .iter()
                    .all(|a| a.port() != 0 && !a.ip().is_unspecified())
        };
        if !usable(&p.active) || p.previous.as_deref().is_some_and(|s| !usable(s)) {
            tracing::warn!(route = %name, file = %file.display(), "state file has an empty or unusable backend set; ignored");
            continue;
        }
        max_generation = max_generation.max(p.generation);
        // A route with backend names that was never switched held its names' answer then;
        // they resolve afresh (`control::names`), so the saved set is not resumed.
        let follows_names = !r.cfg.names.is_empty() && p.previous.is_none();
        if p.active != r.active && !follows_names {
            tracing::info!(
                route = %name,
                active = %join(&p.active),
                "resuming the persisted active set"
            );
        }
        if !follows_names {
            r.active = p.active;
            r.previous = p.previous;
        }
        r.generation = p.generation;
        let known = r.checked_backends();
        r.drain = p.drain.into_iter().filter(|a| known.contains(a)).collect();
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
        cfg.routes
            .into_iter()
            .enumerate()
            .map(|(i, c)| RouteState::new(i as u64 + 1, Origin::File, c))
            .collect()
    }

    /// `balance` and weights count in the fingerprint only when set: a route that sets
    /// neither keeps the fingerprint it had before they existed (its state file still
    /// matches after an upgrade).
    #[test]
    fn balance_and_weights_change_the_fingerprint_only_when_set() {
        let plain = routes().remove(0).cfg;
        // The value computed before `balance` and `weight` existed.
        let before = fingerprint(&plain);
        assert_eq!(before, "fnv1a64:b3442bb1efc715f3");
        let mut weighted = plain.clone();
        weighted
            .weights
            .insert("127.0.0.1:8080".parse().unwrap(), 3);
        let mut hashed = plain.clone();
        hashed.balance = crate::config::Balance::HashSource;
        assert_ne!(fingerprint(&weighted), before);
        assert_ne!(fingerprint(&hashed), before);
        assert_ne!(fingerprint(&hashed), fingerprint(&weighted));
        assert_eq!(before, fingerprint(&routes().remove(0).cfg));
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
        let aside = set_aside(&path);
        assert!(aside.contains(".unusable-") && !path.exists(), "{aside}");
        std::fs::write(&path, r#"{"version": 99, "written_at": "", "routes": {}}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("version 99"));
    }
}
