//! The systemd units in tuning/systemd: they load, and they say what the README promises.

use std::path::Path;
use std::process::Command;

use crate::support::ringway_bin;

/// Where the units install the binary; replaced by the one cargo built.
const INSTALLED: &str = "/usr/local/bin/ringway";

/// Both units pass `systemd-analyze verify` (every directive known and valid on this systemd,
/// every command executable: the installed path is replaced by the built binary, the template
/// is checked as the instance `ringway@test`), and both are `Type=notify` with an
/// `ExecReload=` that runs `ringway reload`, so `systemctl reload` reports a refused file.
#[test]
fn systemd_units_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/systemd");
    let bin = ringway_bin();
    let bin = bin.to_str().expect("binary path is UTF-8");
    let dir = tempfile::tempdir().unwrap();
    for (source, name) in [
        ("ringway.service", "ringway.service"),
        ("ringway@.service", "ringway@test.service"),
    ] {
        let text = std::fs::read_to_string(units.join(source)).expect("read the unit");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert!(
            lines.contains(&"Type=notify"),
            "{source}: no Type=notify line"
        );
        assert!(
            lines.iter().any(
                |l| l.starts_with("ExecReload=") && l.contains(&format!("{INSTALLED} reload "))
            ),
            "{source}: no ExecReload= line running `ringway reload`"
        );
        assert!(
            text.contains(INSTALLED),
            "{source}: does not run {INSTALLED}"
        );

        let path = dir.path().join(name);
        std::fs::write(&path, text.replace(INSTALLED, bin)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run systemd-analyze ({e}): install it (Debian: apt-get install systemd; scripts/test.sh does)"
                )
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify {source}: {}\n{stderr}",
            out.status
        );
        // Warnings (an unknown key, a bad value) exit 0 too: any line naming the unit fails.
        let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
        assert!(
            about_unit.is_empty(),
            "systemd-analyze verify {source} complains:\n{stderr}"
        );
    }
}
