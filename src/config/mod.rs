//! Control side: configuration.
//!
//! `config.toml` → [`file::FileConfig`] (serde, unknown keys denied) → [`Config`] (validated,
//! every default filled in). Validation reports every problem at once with the file, the line,
//! the key and how to fix it ([`ConfigError`]). Parsing never binds a socket: whether a port
//! is free is a question for start-up (`control::ports`), not for `ringway check`.

mod access_log;
mod admin;
mod balance;
mod dns;
mod duration;
mod eject;
mod error;
mod file;
mod health;
mod limits;
mod matching;
mod peers;
mod read;
mod route_body;
mod size;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

pub use access_log::{
    ACCESS_LOG_QUEUE_RANGE, AccessLogConfig, DEFAULT_ACCESS_LOG_QUEUE, LogFormat, LogPath,
};
pub use admin::{
    AdminConfig, DEFAULT_ADMIN_LISTEN, ListenRange, MIN_TOKEN_LEN, StateConfig, TokenSource,
    allowed, default_state_file, euid, token_path_beside,
};
pub use balance::{Balance, DEFAULT_WEIGHT, MAX_WEIGHT};
pub use dns::{DEFAULT_DNS_MAX_TTL, DEFAULT_DNS_MIN_TTL, DnsConfig, NamedBackend, parse_named};
pub use duration::{format_duration, parse_duration};
pub use eject::{
    DEFAULT_EJECT_AFTER, DEFAULT_EJECT_MAX_PERCENT, DEFAULT_EJECT_MAX_TIME, DEFAULT_EJECT_TIME,
    Eject,
};
pub use error::{ConfigError, Problem};
pub use health::{Check, HealthConfig, SwitchConfig};
pub use limits::MAX_FIRST_BYTE_TIMEOUT;
pub use matching::{
    DEFAULT_PEEK_TIMEOUT, MatchConfig, NamePattern, PEEK_LIMIT, ProxyProtocol, SharedError,
    Sharing, canonical, check_shared,
};
pub use peers::{
    DEFAULT_HALF_CLOSE_TIMEOUT, DEFAULT_KEEPALIVE_COUNT, DEFAULT_KEEPALIVE_IDLE,
    DEFAULT_KEEPALIVE_INTERVAL, Keepalive, Probes,
};
pub use read::{MAX_CONFIG_BYTES, read_config_file};
pub use route_body::{parse_route_json, parse_route_toml, route_to_json};
pub use size::{format_size, parse_size};
pub use validate::{overlaps, valid_route_name};

/// The embedded default configuration, printed by `ringway config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Name used in errors for the embedded default.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// A validated configuration: what the control thread applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub admin: AdminConfig,
    pub state: StateConfig,
    pub routes: Vec<RouteConfig>,
}

/// Which io driver the workers' monoio runtimes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring (the default). Start-up fails with a clear message where it is unavailable.
    IoUring,
    /// epoll, chosen explicitly by the operator; never a silent fallback.
    Epoll,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// `runtime.splice`: when a relay direction moves bytes with splice(2) through a pipe
/// instead of copying them through a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceMode {
    /// Copy through the worker's buffer; move a direction to splice once one read fills the
    /// buffer (bulk traffic). The default.
    Auto,
    /// Splice from the first byte (`true`).
    Always,
    /// Never splice (`false`).
    Never,
}

impl SpliceMode {
    /// The relay's name in `/status` and logs.
    pub fn relay_name(self) -> &'static str {
        match self {
            SpliceMode::Auto => "auto",
            SpliceMode::Always => "splice",
            SpliceMode::Never => "buffered",
        }
    }

    /// The value as `ringway check` and `config dump` write it.
    pub fn toml_value(self) -> &'static str {
        match self {
            SpliceMode::Auto => "\"auto\"",
            SpliceMode::Always => "true",
            SpliceMode::Never => "false",
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Worker threads; `None` means one per core the process may run on.
    pub workers: Option<NonZeroUsize>,
    /// Pin worker i to the i-th core of the allowed set.
    pub pin: bool,
    /// How the relay moves bytes: buffered, splice, or buffered until a read fills the
    /// buffer (auto).
    pub splice: SpliceMode,
    pub driver: Driver,
    /// On SIGTERM/SIGINT: how long open sessions may finish before they are closed.
    pub shutdown_grace: Duration,
    /// Buffered path: bytes per direction buffer.
    pub buffer_size: usize,
    /// Splice path: pipe capacity requested with F_SETPIPE_SZ.
    pub pipe_size: usize,
    /// Reload by itself when the configuration file changes (debounced), as `ringway
    /// reload` would.
    pub watch_config: bool,
    /// Spin this long on the ring after the last event before sleeping (lower latency for
    /// CPU); `None`: off.
    pub busy_poll: Option<Duration>,
    /// Access log records each worker's queue holds before lines are dropped (and counted
    /// in `ringway_access_log_dropped_total`); the queues exist once a route logs.
    pub access_log_queue: usize,
    /// `runtime.max_connections`: client connections the whole process holds at once
    /// (sessions, and connections still being read for a route), enforced per worker as an
    /// equal share (rounded up); beyond it new connections are reset at accept and counted.
    /// `None`: no cap but the open-files limit.
    pub max_connections: Option<NonZeroU32>,
    /// `dns_resolver`, `dns_min_ttl`, `dns_max_ttl`: how backend names are resolved.
    pub dns: DnsConfig,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    /// The initial active set; a switch may move the route to other addresses. The
    /// addresses of [`Self::names`] join it as they resolve.
    pub backends: Vec<SocketAddr>,
    /// Backends written `"name:port"`: resolved on the control side, each name expanding to
    /// its current addresses (empty unless the route names one).
    pub names: Vec<NamedBackend>,
    /// `balance`: how new sessions are spread over the active backends.
    pub balance: Balance,
    /// Backend weights other than [`DEFAULT_WEIGHT`], by address (from `backends` entries
    /// written `{ addr = "…", weight = N }`, or `POST /routes/{name}/backends` with a
    /// weight). An address not in it (one a switch brought in) weighs 1.
    pub weights: BTreeMap<SocketAddr, u16>,
    /// Budget for the whole connect phase (all attempts together).
    pub connect_timeout: Duration,
    /// Extra attempts after the first; `None` = try each backend once.
    pub connect_retries: Option<u32>,
    /// Close both sides after this long without a byte either way.
    pub idle_timeout: Option<Duration>,
    /// Sessions this route may hold open; new ones beyond it are reset.
    pub max_connections: Option<NonZeroU32>,
    /// Sessions one client source (an IPv4 address, an IPv6 /64) may hold open on this
    /// route, enforced per worker as an equal share (rounded up); beyond it new ones are
    /// reset at accept. `None`: no limit.
    pub max_connections_per_source: Option<NonZeroU32>,
    /// A client that sends nothing for this long after it connected is reset, and the
    /// backend is connected only once the client's first bytes arrive (a silent flood never
    /// reaches the backends). `None` (the default): off, the backend is connected at once,
    /// as server-speaks-first protocols (SMTP, SSH, MySQL) need.
    pub first_byte_timeout: Option<Duration>,
    pub health: HealthConfig,
    pub switch: SwitchConfig,
    /// `[route.match]`, `proxy_protocol`, `accept_proxy_from`, `peek_timeout`.
    pub sharing: Sharing,
    /// One line per finished session, to a file or stdout; `None`: no access log.
    pub access_log: Option<AccessLogConfig>,
    /// After one side's FIN, close the session when the other direction moves no byte for
    /// this long; `None`: off. Default [`DEFAULT_HALF_CLOSE_TIMEOUT`].
    pub half_close_timeout: Option<Duration>,
    /// `[route.keepalive]`: keepalive probes and `TCP_USER_TIMEOUT` on both sockets.
    pub keepalive: Keepalive,
    /// `[route.eject]`: passive ejection of backends whose connects keep failing.
    pub eject: Eject,
    /// Backends' own `max_connections` (the long form of a `backends` entry), by address;
    /// an address not in it has no limit of its own.
    pub backend_limits: BTreeMap<SocketAddr, NonZeroU32>,
}

impl RouteConfig {
    /// A route with every optional key at its default, as a file naming only `name`,
    /// `listen` and `backends` would give (for code that builds routes without a file).
    pub fn with_defaults(name: String, listen: Vec<SocketAddr>, backends: Vec<SocketAddr>) -> Self {
        RouteConfig {
            name,
            listen,
            backends,
            names: Vec::new(),
            balance: Balance::default(),
            weights: BTreeMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_retries: None,
            idle_timeout: None,
            max_connections: None,
            max_connections_per_source: None,
            first_byte_timeout: None,
            health: HealthConfig::default(),
            switch: SwitchConfig::default(),
            sharing: Sharing::default(),
            access_log: None,
            half_close_timeout: Some(DEFAULT_HALF_CLOSE_TIMEOUT),
            keepalive: Keepalive::default(),
            eject: Eject::default(),
            backend_limits: BTreeMap::new(),
        }
    }

    /// The weight of backend `addr` in this route (1 unless configured otherwise).
    pub fn weight(&self, addr: &SocketAddr) -> u16 {
        self.weights.get(addr).copied().unwrap_or(DEFAULT_WEIGHT)
    }

    /// Connect attempts per session over `backends` backends: `connect_retries + 1`, or one
    /// per backend.
    pub fn connect_attempts(&self, backends: usize) -> usize {
        match self.connect_retries {
            Some(r) => r as usize + 1,
            None => backends.max(1),
        }
    }

    /// The route as `ringway check` prints it; also what the state file's fingerprint hashes.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let r = self;
        out.push_str("[[route]]\n");
        out.push_str(&format!("name = {}\n", toml_string(&r.name)));
        out.push_str(&format!("listen = {}\n", addr_list(&r.listen)));
        out.push_str(&format!(
            "backends = {}\n",
            balance::backends_toml(&r.backends, &r.weights, &r.backend_limits, &r.names)
        ));
        out.push_str(&format!("balance = \"{}\"\n", r.balance));
        out.push_str(&format!(
            "connect_timeout = \"{}\"\n",
            format_duration(r.connect_timeout)
        ));
        match r.connect_retries {
            Some(n) => out.push_str(&format!("connect_retries = {n}\n")),
            None => out.push_str("# connect_retries: not set, each backend is tried once\n"),
        }
        match r.idle_timeout {
            Some(d) => out.push_str(&format!("idle_timeout = \"{}\"\n", format_duration(d))),
            None => out.push_str("# idle_timeout: not set, idle sessions stay open\n"),
        }
        peers::half_close_to_toml(r.half_close_timeout, &mut out);
        match r.max_connections {
            Some(n) => out.push_str(&format!("max_connections = {n}\n")),
            None => out.push_str("# max_connections: not set, no limit\n"),
        }
        limits::to_toml(r.max_connections_per_source, r.first_byte_timeout, &mut out);
        match &r.access_log {
            Some(a) => out.push_str(&a.to_toml()),
            None => out.push_str("# access_log: not set, no access log\n"),
        }
        matching::to_toml(&r.sharing, &mut out);
        peers::keepalive_to_toml(&r.keepalive, &mut out);
        eject::eject_to_toml(&r.eject, &mut out);
        let h = &r.health;
        if h.periodic {
            out.push_str("[route.health]\n");
        } else {
            out.push_str("# no [route.health]: no periodic checks; switches and rollbacks check with:\n# [route.health]\n");
        }
        let c = if h.periodic { "" } else { "# " };
        match &h.check {
            Check::Tcp => out.push_str(&format!("{c}check = \"tcp\"\n")),
            Check::Http { path } => out.push_str(&format!(
                "{c}check = \"http\"\n{c}path = {}\n",
                toml_string(path)
            )),
        }
        out.push_str(&format!(
            "{c}interval = \"{}\"\n",
            format_duration(h.interval)
        ));
        out.push_str(&format!(
            "{c}timeout = \"{}\"\n",
            format_duration(h.timeout)
        ));
        out.push_str(&format!("{c}rise = {}\n{c}fall = {}\n", h.rise, h.fall));
        let s = &r.switch;
        out.push_str("[route.switch]\n");
        out.push_str(&format!("drain = \"{}\"\n", format_duration(s.drain)));
        out.push_str(&format!(
            "rollback_window = \"{}\"\n",
            format_duration(s.rollback_window)
        ));
        out.push_str(&format!(
            "rollback_check = \"{}\"\n",
            format_duration(s.rollback_check)
        ));
        out.push_str(&format!(
            "rollback_fail_threshold = {}\n",
            s.rollback_fail_threshold
        ));
        out.push_str(&format!(
            "rollback_connect_errors = {}\n",
            s.rollback_connect_errors
        ));
        out
    }
}

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_BUFFER_SIZE: usize = 64 * 1024;
pub const DEFAULT_PIPE_SIZE: usize = 1024 * 1024;
/// The adaptive relay is the default: small request/response traffic is copied through the
/// worker's buffer (fewest system calls), bulk directions move to splice (a third of the CPU
/// per byte), and an idle connection holds neither buffer nor pipe (bench/README.md).
pub const DEFAULT_SPLICE: SpliceMode = SpliceMode::Auto;

impl Config {
    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        validate::parse(text, file)
    }

    /// Reads and validates a file (a regular file of at most [`MAX_CONFIG_BYTES`], UTF-8).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Only `[admin]` and `[state]` of a file (what the CLI needs to reach a running
    /// ringway), so that `ringway reload -c FILE` still reaches the server when a route in
    /// FILE is invalid: the server then reports every problem. The file's TOML must parse.
    pub fn load_admin(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        let file = path.display().to_string();
        let doc: toml::Table = match toml::from_str(&text) {
            Ok(d) => d,
            // The full parse reports the syntax error with its line.
            Err(_) => return Config::parse(&text, &file),
        };
        let mut keep = toml::Table::new();
        for key in ["admin", "state"] {
            if let Some(v) = doc.get(key) {
                keep.insert(key.to_string(), v.clone());
            }
        }
        let only = toml::to_string(&keep).unwrap_or_default();
        Config::parse(&only, &file)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        match Config::parse(DEFAULT_TOML, EMBEDDED_NAME) {
            Ok(c) => c,
            // The default is checked by a unit test; reaching this is a build defect.
            Err(e) => panic!("embedded default configuration is invalid: {e}"),
        }
    }

    /// The configuration with every default written out, as `ringway check` prints it.
    pub fn to_toml(&self) -> String {
        let rt = &self.runtime;
        let mut out = String::new();
        out.push_str("[runtime]\n");
        out.push_str(&format!(
            "workers = {}\n",
            rt.workers.map(NonZeroUsize::get).unwrap_or(0)
        ));
        out.push_str(&format!("pin = {}\n", rt.pin));
        out.push_str(&format!("splice = {}\n", rt.splice.toml_value()));
        out.push_str(&format!("driver = \"{}\"\n", rt.driver.as_str()));
        out.push_str(&format!(
            "shutdown_grace = \"{}\"\n",
            format_duration(rt.shutdown_grace)
        ));
        out.push_str(&format!(
            "buffer_size = \"{}\"\n",
            format_size(rt.buffer_size)
        ));
        out.push_str(&format!("pipe_size = \"{}\"\n", format_size(rt.pipe_size)));
        out.push_str(&format!("watch_config = {}\n", rt.watch_config));
        out.push_str(&format!(
            "busy_poll = \"{}\"\n",
            format_duration(rt.busy_poll.unwrap_or_default())
        ));
        out.push_str(&format!("access_log_queue = {}\n", rt.access_log_queue));
        match rt.max_connections {
            Some(n) => out.push_str(&format!("max_connections = {n}\n")),
            None => out.push_str("# max_connections: not set, no cap but the open-files limit\n"),
        }
        rt.dns.to_toml(&mut out);
        let a = &self.admin;
        out.push_str("\n[admin]\n");
        out.push_str(&format!("listen = \"{}\"\n", a.listen));
        match &a.token {
            TokenSource::Inline(_) => out.push_str("# token: set in the file (not shown)\n"),
            TokenSource::File(p) => out.push_str(&format!(
                "token_file = {}\n",
                toml_string(&p.display().to_string())
            )),
            TokenSource::Generated => out.push_str(&format!(
                "# token: generated at start-up into {}\n",
                self.state.token_path().display()
            )),
        }
        let allow: Vec<String> = a.allow.iter().map(|n| format!("\"{n}\"")).collect();
        out.push_str(&format!("allow = [{}]\n", allow.join(", ")));
        out.push_str(&format!("rate_limit = {}\n", a.rate_limit));
        match &a.unix {
            Some(p) => out.push_str(&format!(
                "unix = {}\n",
                toml_string(&p.display().to_string())
            )),
            None => out.push_str("# unix: not set, no unix socket\n"),
        }
        match &a.listen_range {
            Some(r) => out.push_str(&format!("listen_range = \"{r}\"\n")),
            None => out.push_str(
                "# listen_range: not set, routes created through the API must name listen\n",
            ),
        }
        out.push_str("\n[state]\n");
        out.push_str(&format!(
            "file = {}\n",
            toml_string(&self.state.file.display().to_string())
        ));
        for r in &self.routes {
            out.push('\n');
            out.push_str(&r.to_toml());
        }
        out
    }
}

fn addr_list(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(", "))
}

pub(crate) fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice_of(value: &str) -> Result<SpliceMode, String> {
        Config::parse(&format!("[runtime]\nsplice = {value}\n"), "t.toml")
            .map(|c| c.runtime.splice)
            .map_err(|e| e.to_string())
    }

    /// `runtime.splice` takes the two booleans and three names; anything else names the key
    /// and the choices; `to_toml` writes a value that reads back the same.
    #[test]
    fn splice_modes_parse_and_round_trip() {
        assert_eq!(splice_of("\"auto\""), Ok(SpliceMode::Auto));
        assert_eq!(splice_of("true"), Ok(SpliceMode::Always));
        assert_eq!(splice_of("\"always\""), Ok(SpliceMode::Always));
        assert_eq!(splice_of("false"), Ok(SpliceMode::Never));
        assert_eq!(splice_of("\"never\""), Ok(SpliceMode::Never));
        assert_eq!(
            Config::parse("", "t.toml").map(|c| c.runtime.splice),
            Ok(SpliceMode::Auto)
        );
        let err = splice_of("\"sometimes\"").unwrap_err();
        assert!(
            err.contains("runtime.splice") && err.contains("\"auto\""),
            "{err}"
        );
        assert!(splice_of("3").is_err());
        for mode in [SpliceMode::Auto, SpliceMode::Always, SpliceMode::Never] {
            assert_eq!(splice_of(mode.toml_value()), Ok(mode));
        }
    }

    /// `runtime.busy_poll`: off by default and at "0us", on up to 1ms, written back the way it
    /// reads; longer or unit-less is refused with the key named.
    #[test]
    fn busy_poll_parses_and_round_trips() {
        let of = |v: &str| {
            Config::parse(&format!("[runtime]\nbusy_poll = {v}\n"), "t.toml")
                .map(|c| c.runtime.busy_poll)
                .map_err(|e| e.to_string())
        };
        assert_eq!(Config::parse("", "t.toml").unwrap().runtime.busy_poll, None);
        assert_eq!(of("\"0us\""), Ok(None));
        assert_eq!(of("\"50us\""), Ok(Some(Duration::from_micros(50))));
        assert_eq!(of("\"1ms\""), Ok(Some(Duration::from_millis(1))));
        let err = of("\"5ms\"").unwrap_err();
        assert!(err.contains("runtime.busy_poll"), "{err}");
        assert!(of("\"50\"").unwrap_err().contains("runtime.busy_poll"));
        let c = Config::parse("[runtime]\nbusy_poll = \"50us\"\n", "t.toml").unwrap();
        let again = Config::parse(&c.to_toml(), "t.toml").unwrap();
        assert_eq!(again.runtime.busy_poll, Some(Duration::from_micros(50)));
    }
}
