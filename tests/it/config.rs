//! Configuration from the command line: check, defaults, and every kind of invalid file.

use crate::support::*;

fn check(toml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    ringway(&["check", "-c", path.to_str().unwrap()])
}

/// `config default` prints a file that `check` accepts, and `check` prints it normalized.
#[test]
fn default_config_round_trips_through_check() {
    let (code, default, _) = ringway(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(default.contains("[[route]]") && default.contains("127.0.0.1:3000"));
    let (code, normalized, err) = check(&default);
    assert_eq!(code, 0, "{err}");
    assert!(
        normalized.contains("connect_timeout = \"1s\""),
        "{normalized}"
    );
    assert!(normalized.contains("backends = [\"127.0.0.1:8080\"]"));
    // The normalized output is itself valid and stable.
    let (code, again, _) = check(&normalized);
    assert_eq!(code, 0);
    assert_eq!(again, normalized);
}

/// Each invalid configuration exits 64 and names the file, the key and a fix.
#[test]
fn invalid_configurations_exit_64_naming_the_key() {
    let route = "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("{route}colour = \"blue\"\n"), "colour"),
        ("[runtime]\nworkerz = 2\n".into(), "workerz"),
        (
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"localhost:99999\"]\n".into(),
            "backends[0]",
        ),
        (
            "[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = []\n".into(),
            "backends",
        ),
        (
            format!("{route}\n[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3001\"]\nbackends = [\"127.0.0.1:8080\"]\n"),
            "route[1].name",
        ),
        (
            format!("{route}\n[[route]]\nname = \"api\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"127.0.0.1:8080\"]\n"),
            "route[1] (\"api\").listen",
        ),
        (format!("{route}connect_timeout = \"5 parsecs\"\n"), "connect_timeout"),
        (format!("{route}connect_timeout = 5\n"), "(value)"),
        (format!("{route}idle_timeout = \"0s\"\n"), "idle_timeout"),
        (format!("{route}max_connections = 0\n"), "max_connections"),
        ("[runtime]\ndriver = \"kqueue\"\n".into(), "runtime.driver"),
        ("[admin]\nlisten = \"nowhere\"\n".into(), "admin.listen"),
        ("[admin]\ntoken = \"short\"\n".into(), "admin.token"),
        (
            "[admin]\ntoken = \"0123456789abcdef0123\"\ntoken_file = \"/t\"\n".into(),
            "admin.token",
        ),
        ("[admin]\nallow = [\"10.0.0.0/33\"]\n".into(), "admin.allow[0]"),
        ("[admin]\nrate_limit = 0\n".into(), "admin.rate_limit"),
        ("[state]\nfile = \"\"\n".into(), "state.file"),
        (format!("{route}[route.health]\ncheck = \"icmp\"\n"), "health.check"),
        (
            format!("{route}[route.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n"),
            "health.timeout",
        ),
        (format!("{route}[route.health]\npath = \"/h\"\n"), "health.path"),
        (format!("{route}[route.health]\nfall = 0\n"), "health.fall"),
        (format!("{route}[route.switch]\ndrain = \"soon\"\n"), "switch.drain"),
        (
            format!("{route}[route.switch]\nrollback_fail_threshold = 0\n"),
            "switch.rollback_fail_threshold",
        ),
        ("[[route]\nname = \"x\"\n".into(), "(syntax)"),
        (format!("{route}access_log = \"web.log\"\n"), "access_log"),
        (
            format!("{route}access_log = {{ path = \"/w.log\", format = \"xml\" }}\n"),
            "access_log.format",
        ),
        ("[runtime]\naccess_log_queue = 0\n".into(), "runtime.access_log_queue"),
    ];
    for (toml, key) in cases {
        let (code, out, err) = check(&toml);
        assert_eq!(code, 64, "exit code for:\n{toml}\nstderr: {err}");
        assert!(out.is_empty(), "nothing on stdout for an invalid file");
        assert!(err.contains("bad.toml"), "file named in: {err}");
        assert!(err.contains(key), "key {key:?} named in: {err}");
        assert!(err.contains("fix:"), "a fix in: {err}");
    }
}

/// Every problem is reported at once, each with its line.
#[test]
fn all_problems_are_reported_at_once_with_lines() {
    let toml = "[runtime]\nworkers = -1\n\n[[route]]\nname = \"web\"\nlisten = [\"127.0.0.1:3000\"]\nbackends = [\"bad\", \"127.0.0.1:8080\"]\nconnect_timeout = \"1 fortnight\"\n";
    let (code, _, err) = check(toml);
    assert_eq!(code, 64);
    assert!(err.contains("3 problems"), "{err}");
    assert!(err.contains("bad.toml:2: runtime.workers"), "{err}");
    assert!(
        err.contains("bad.toml:7: route[0] (\"web\").backends[0]"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:8: route[0] (\"web\").connect_timeout"),
        "{err}"
    );
}

/// `run` refuses an invalid file with 64 too, before binding anything.
#[test]
fn run_with_invalid_config_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[route]]\nname = \"x\"\n").unwrap();
    let (code, _, err) = ringway(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("listen") && err.contains("backends"), "{err}");
    let (code, _, _) = ringway(&["check", "-c", "/nonexistent/ringway.toml"]);
    assert_eq!(code, 64);
    let (code, _, _) = ringway(&["frobnicate"]);
    assert_eq!(code, 64, "bad usage is 64");
}
