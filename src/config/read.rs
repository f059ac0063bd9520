//! Control side: reading the configuration file, defensively.
//!
//! A reload reads whatever is at the path at that moment: a half-written file, a FIFO or a
//! device put there through a symlink, a 10 MB file, bytes that are not UTF-8. None of that
//! may hang, exhaust memory or panic the control thread: the file must be a regular file of
//! at most [`MAX_CONFIG_BYTES`], opened without blocking, and valid UTF-8; anything else is a
//! [`ConfigError`] naming the file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::line_of;
use super::{ConfigError, Problem};

/// Largest configuration file accepted (about 20,000 routes).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads a configuration file: a regular file (symlinks followed), at most
/// [`MAX_CONFIG_BYTES`], UTF-8.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let fail = |key: &str, message: String, fix: &str| ConfigError {
        file: path.display().to_string(),
        problems: vec![Problem {
            line: None,
            key: key.into(),
            message,
            fix: fix.into(),
        }],
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the file: {e}"),
                "check the path given with -c, that it exists and that ringway may read it",
            )
        })?;
    let meta = file.metadata().map_err(|e| {
        fail(
            "(file)",
            format!("cannot inspect the file: {e}"),
            "check the path given with -c",
        )
    })?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a pipe, socket or device)"
        };
        return Err(fail(
            "(file)",
            format!("the path is {what}"),
            "point -c (or the symlink at that path) at a regular TOML file",
        ));
    }
    let too_big = |size: u64| {
        fail(
            "(file)",
            format!("the file is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit"),
            "a configuration is a few KiB; check that the right file is at this path",
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never read more than the limit allows.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            fail(
                "(file)",
                format!("cannot read the file: {e}"),
                "check that ringway may read it",
            )
        })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
        ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                line: Some(line_of(&valid, at)),
                key: "(encoding)".into(),
                message: format!("byte {at} is not UTF-8"),
                fix: "save the file as UTF-8 text".into(),
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_utf8_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "[runtime]\n").unwrap();
        assert_eq!(read_config_file(&ok).unwrap(), "[runtime]\n");

        let cases: Vec<(std::path::PathBuf, &str)> = vec![
            (dir.path().join("missing.toml"), "cannot read"),
            (dir.path().to_path_buf(), "a directory"),
            ("/dev/zero".into(), "not a regular file"),
        ];
        for (path, needle) in cases {
            let e = read_config_file(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{}: {e}", path.display());
        }
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        assert!(
            read_config_file(&big)
                .unwrap_err()
                .to_string()
                .contains("over the")
        );
        let bin = dir.path().join("bin.toml");
        std::fs::write(&bin, b"[runtime]\nworkers = 1\n\xff\xfe").unwrap();
        let e = read_config_file(&bin).unwrap_err();
        assert_eq!(e.problems[0].line, Some(3), "{e}");
        // A FIFO through a symlink: refused without waiting for a writer.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let link = dir.path().join("link.toml");
            std::os::unix::fs::symlink(&fifo, &link).unwrap();
            assert!(
                read_config_file(&link)
                    .unwrap_err()
                    .to_string()
                    .contains("not a regular file")
            );
        }
    }
}
