//! Control side: `[admin]` (who may use the admin API, and how) and `[state]` (where switch
//! state and the generated admin token live), validated.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use super::error::Problems;
use super::file::{FileAdmin, FileState};
use super::validate::addr;

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Requests per second per source address (and the burst a source may spend at once).
pub const DEFAULT_RATE_LIMIT: u32 = 20;
/// Shortest token accepted from the configuration.
pub const MIN_TOKEN_LEN: usize = 16;
/// The generated token's file name, beside the state file.
pub const TOKEN_FILE_NAME: &str = "admin.token";

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: TokenSource,
    /// Source networks allowed to call the API over TCP (checked before the token).
    pub allow: Vec<IpNet>,
    /// Requests per second per source address; the same number is the burst.
    pub rate_limit: u32,
    /// A unix socket serving the same API (mode 0600), besides `listen`.
    pub unix: Option<PathBuf>,
    /// Where a route created through the API without `listen` gets its address: the first
    /// port of this range that is free.
    pub listen_range: Option<ListenRange>,
}

/// `admin.listen_range`: an IP address and a range of ports, `"127.0.0.1:20000-20999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenRange {
    pub ip: std::net::IpAddr,
    pub first: u16,
    pub last: u16,
}

impl ListenRange {
    /// Every address of the range, in order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (self.first..=self.last).map(|p| SocketAddr::new(self.ip, p))
    }

    /// Parses `"IP:FIRST-LAST"` (`"[::1]:FIRST-LAST"` for IPv6).
    pub fn parse(s: &str) -> Result<ListenRange, String> {
        let s = s.trim();
        let (ip, ports) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{s}\" has no port range"))?;
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("\"{ip}\" is not an IP address"))?;
        let (first, last) = ports
            .split_once('-')
            .ok_or_else(|| format!("\"{ports}\" is not a range FIRST-LAST"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("\"{p}\" is not a port from 1 to 65535"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!("the range {first}-{last} is empty"));
        }
        Ok(ListenRange { ip, first, last })
    }
}

impl fmt::Display for ListenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            std::net::IpAddr::V4(ip) => write!(f, "{ip}:{}-{}", self.first, self.last),
            std::net::IpAddr::V6(ip) => write!(f, "[{ip}]:{}-{}", self.first, self.last),
        }
    }
}

/// Where the admin token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `admin.token`: written in the configuration.
    Inline(String),
    /// `admin.token_file`: read at start-up (first line, trimmed).
    File(PathBuf),
    /// Neither: generated at start-up and written (mode 0600) beside the state file.
    Generated,
}

// The token never appears in logs or debug output.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline(<hidden>)"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Generated => f.write_str("Generated"),
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The state file (JSON). Its directory also holds the generated admin token.
    pub file: PathBuf,
}

impl StateConfig {
    /// Where a generated admin token is written: `admin.token` beside the state file.
    pub fn token_path(&self) -> PathBuf {
        token_path_beside(&self.file)
    }
}

/// `admin.token` in the state file's directory.
pub fn token_path_beside(state_file: &Path) -> PathBuf {
    state_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(TOKEN_FILE_NAME)
}

/// The state file used when `[state] file` is not set, in this order: systemd's
/// `$STATE_DIRECTORY` (from `StateDirectory=`), `/var/lib/ringway/` for root,
/// `$XDG_STATE_HOME/ringway/`, `~/.local/state/ringway/`, then `/tmp/ringway-<uid>/`.
/// The CLI uses the same rule to find the generated token.
pub fn default_state_file() -> PathBuf {
    let name = "state.json";
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several directories separated by ':'; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return Path::new(&first).join(name);
        }
    }
    if euid() == 0 {
        return Path::new("/var/lib/ringway").join(name);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("ringway").join(name);
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&home).join(".local/state/ringway").join(name);
    }
    PathBuf::from(format!("/tmp/ringway-{}", euid())).join(name)
}

/// The effective user id: proc(5) says `/proc/self` is owned by it (no `unsafe` needed).
pub fn euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

pub(super) fn admin(a: FileAdmin, p: &mut Problems<'_>) -> Option<AdminConfig> {
    let before = p.len();
    let listen = match &a.listen {
        Some(s) => addr(s, "admin.listen", p),
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
    };
    let token = match (&a.token, &a.token_file) {
        (Some(t), Some(_)) => {
            p.add(
                Some(t.span().start),
                "admin.token",
                "both admin.token and admin.token_file are set",
                "keep one of them (token_file keeps the secret out of the configuration)",
            );
            TokenSource::Generated
        }
        (Some(t), None) => {
            let v = t.get_ref().trim();
            if v.len() < MIN_TOKEN_LEN || v.chars().any(|c| !c.is_ascii_graphic()) {
                p.add(
                    Some(t.span().start),
                    "admin.token",
                    format!(
                        "the token must be at least {MIN_TOKEN_LEN} printable characters without spaces"
                    ),
                    "use a long random string, e.g. the output of `head -c 32 /dev/urandom | base64`, or leave admin.token out to have one generated",
                );
            }
            TokenSource::Inline(v.to_string())
        }
        (None, Some(f)) => match nonempty_path(f, "admin.token_file", p) {
            Some(path) => TokenSource::File(path),
            None => TokenSource::Generated,
        },
        (None, None) => TokenSource::Generated,
    };
    let allow = match &a.allow {
        None => vec!["127.0.0.1/32".parse().ok()?, "::1/128".parse().ok()?],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| cidr(s, &format!("admin.allow[{i}]"), p))
            .collect(),
    };
    let rate_limit = match &a.rate_limit {
        None => DEFAULT_RATE_LIMIT,
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if (1..=100_000).contains(&n) => n,
            _ => {
                p.add(
                    Some(v.span().start),
                    "admin.rate_limit",
                    format!("{} is not a valid rate", v.get_ref()),
                    "use requests per second per source address, from 1 to 100000",
                );
                DEFAULT_RATE_LIMIT
            }
        },
    };
    let unix = a
        .unix
        .as_ref()
        .and_then(|s| nonempty_path(s, "admin.unix", p));
    let listen_range = a.listen_range.as_ref().and_then(|s| {
        ListenRange::parse(s.get_ref())
            .map_err(|why| {
                p.add(
                    Some(s.span().start),
                    "admin.listen_range",
                    why,
                    "write an address and a port range, e.g. \"127.0.0.1:20000-20999\" or \"[::1]:20000-20999\"",
                )
            })
            .ok()
    });
    if p.len() != before {
        return None;
    }
    Some(AdminConfig {
        listen: listen?,
        token,
        allow,
        rate_limit,
        unix,
        listen_range,
    })
}

pub(super) fn state(s: Option<FileState>, p: &mut Problems<'_>) -> StateConfig {
    let file = s
        .and_then(|s| s.file)
        .and_then(|f| nonempty_path(&f, "state.file", p))
        .unwrap_or_else(default_state_file);
    StateConfig { file }
}

fn nonempty_path(s: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<PathBuf> {
    let v = s.get_ref().trim();
    if v.is_empty() || v.ends_with('/') {
        p.add(
            Some(s.span().start),
            key,
            format!("\"{v}\" is not a file path"),
            "write the path of a file, e.g. \"/var/lib/ringway/state.json\"",
        );
        return None;
    }
    Some(PathBuf::from(v))
}

pub(super) fn cidr(s: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<IpNet> {
    let v = s.get_ref().trim();
    // A bare address means that one host.
    let parsed = v
        .parse::<IpNet>()
        .ok()
        .or_else(|| v.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    match parsed {
        Some(net) => Some(net.trunc()),
        None => {
            p.add(
                Some(s.span().start),
                key,
                format!("\"{v}\" is not a network"),
                "write a CIDR such as \"127.0.0.1/32\", \"10.0.0.0/8\" or \"::1/128\"",
            );
            None
        }
    }
}

/// True when `ip` is inside one of the `allow` networks (IPv4-mapped IPv6 counts as IPv4).
pub fn allowed(allow: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    allow.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_networks_and_mapped_addresses() {
        let allow: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(allowed(&allow, "127.0.0.1".parse().unwrap()));
        assert!(!allowed(&allow, "127.0.0.2".parse().unwrap()));
        assert!(allowed(&allow, "10.9.8.7".parse().unwrap()));
        assert!(allowed(&allow, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allowed(&allow, "::1".parse().unwrap()));
    }

    #[test]
    fn listen_ranges_parse_and_print_back() {
        let r = ListenRange::parse("127.0.0.1:20000-20002").unwrap();
        assert_eq!(r.addrs().count(), 3);
        assert_eq!(r.to_string(), "127.0.0.1:20000-20002");
        let v6 = ListenRange::parse("[::1]:7000-7000").unwrap();
        assert_eq!(ListenRange::parse(&v6.to_string()), Ok(v6));
        for bad in [
            "127.0.0.1",
            "127.0.0.1:5-1",
            "x:1-2",
            "127.0.0.1:0-9",
            "127.0.0.1:1-70000",
        ] {
            assert!(ListenRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_is_hidden_in_debug_output() {
        let t = TokenSource::Inline("supersecretsupersecret".into());
        assert!(!format!("{t:?}").contains("supersecret"));
    }

    #[test]
    fn token_lives_beside_the_state_file() {
        let s = StateConfig {
            file: "/var/lib/ringway/state.json".into(),
        };
        assert_eq!(s.token_path(), Path::new("/var/lib/ringway/admin.token"));
    }
}
