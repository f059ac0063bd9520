//! Control side: the admin token — from `admin.token`, from `admin.token_file`, or generated
//! at start-up (32 random bytes, hex) and written with mode 0600 beside the state file, where
//! the CLI finds it. The token itself is never logged.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::persist::write_atomic;
use crate::config::{Config, TokenSource};

/// Why the token could not be had (a start-up failure: exit 1).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token_file {path}: {why}")]
    File { path: PathBuf, why: String },
    #[error(
        "cannot write the generated admin token to {path}: {source}; set [state] file to a writable place, or set admin.token or admin.token_file"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read random bytes for the admin token: {0}")]
    Random(#[source] std::io::Error),
}

/// The token to require, and where it was written when generated.
pub fn resolve(cfg: &Config) -> Result<(String, Option<PathBuf>), TokenError> {
    match &cfg.admin.token {
        TokenSource::Inline(t) => Ok((t.clone(), None)),
        TokenSource::File(path) => {
            read_token_file(path)
                .map(|t| (t, None))
                .map_err(|why| TokenError::File {
                    path: path.clone(),
                    why,
                })
        }
        TokenSource::Generated => {
            let token = generate().map_err(TokenError::Random)?;
            let path = write(cfg, &token)?;
            Ok((token, Some(path)))
        }
    }
}

/// After an upgrade, a generated token carries over: the old process's token (the one the
/// CLI holds) is written where the CLI looks, the same bytes when the old one generated it too.
pub fn keep(cfg: &Config, token: &str) -> Result<(String, Option<PathBuf>), TokenError> {
    write(cfg, token)?;
    Ok((token.to_string(), None))
}

/// Writes `token` (mode 0600) beside the state file, where the CLI finds it.
fn write(cfg: &Config, token: &str) -> Result<PathBuf, TokenError> {
    let path = cfg.state.token_path();
    write_atomic(&path, format!("{token}\n").as_bytes(), 0o600).map_err(|source| {
        TokenError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// The first line of a token file, trimmed; at least 16 characters.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < crate::config::MIN_TOKEN_LEN {
        return Err(format!(
            "the token in it is shorter than {} characters",
            crate::config::MIN_TOKEN_LEN
        ));
    }
    Ok(token)
}

fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_token_is_written_0600_beside_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::embedded_default();
        cfg.state.file = dir.path().join("state.json");
        let (token, path) = resolve(&cfg).unwrap();
        let path = path.unwrap();
        assert_eq!(path, dir.path().join("admin.token"));
        assert_eq!(token.len(), 64);
        assert_eq!(read_token_file(&path).unwrap(), token);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = resolve(&cfg).unwrap();
        assert_ne!(again, token, "a new token at every start");
    }
}
