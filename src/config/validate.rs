//! Control side: `FileConfig` → `Config`, collecting every problem.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, Problems};
use super::file::{FileConfig, FileRoute, FileRuntime, FileSplice};
use super::{
    Config, DEFAULT_BUFFER_SIZE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PIPE_SIZE,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_SPLICE, Driver, RouteConfig, RuntimeConfig, SpliceMode, admin,
    health, parse_duration, parse_size,
};

const ADDR_FIX: &str = "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)";
/// Backends may also be names, which the control thread resolves.
const BACKEND_FIX: &str = "write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\", or a host name and a port, e.g. \"app.internal:8080\"";

pub(super) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(text);
    let raw: FileConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (key, fix) = syntax_hint(e.message());
            problems.add(
                e.span().map(|s| s.start),
                key,
                e.message().trim().to_string(),
                fix,
            );
            return Err(problems.into_error(file));
        }
    };

    let runtime = runtime(raw.runtime.unwrap_or_default(), &mut problems);
    let admin = admin::admin(raw.admin.unwrap_or_default(), &mut problems);
    let state = admin::state(raw.state, &mut problems);

    let mut routes = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut listens: Vec<(SocketAddr, String)> = Vec::new();
    for (i, spanned) in raw.routes.iter().enumerate() {
        let at = spanned.span().start;
        let opts = RouteRules {
            listen_optional: false,
        };
        if let Some(r) = route(
            &Label::Indexed(i),
            at,
            spanned.get_ref(),
            &mut problems,
            opts,
        ) {
            let label = format!("route[{i}] (\"{}\").", r.name);
            if let Some(first) = names.insert(r.name.clone(), i) {
                problems.add(
                    Some(at),
                    format!("route[{i}].name"),
                    format!(
                        "route name \"{}\" is already used by route[{first}]",
                        r.name
                    ),
                    "give every [[route]] its own name",
                );
            }
            for l in &r.listen {
                // The same address may be shared (told apart by [route.match], checked
                // below); a wildcard address overlapping another address of its port may not.
                if let Some((held, other)) =
                    listens.iter().find(|(h, _)| h != l && overlaps(*h, *l))
                {
                    problems.add(
                        Some(at),
                        format!("{label}listen"),
                        format!(
                            "{l} overlaps {held}, the listen address of route \"{other}\" (a wildcard address covers every address of its port)"
                        ),
                        "listen on the same address as that route (and tell the routes apart with [route.match]) or on another port",
                    );
                }
                if l.port() != 0 {
                    listens.push((*l, r.name.clone()));
                }
            }
            routes.push(r);
        }
    }
    shared(&routes, &mut problems);
    same_log_format(&routes, &mut problems);
    if let Some((_, route)) = admin
        .as_ref()
        .and_then(|a| listens.iter().find(|(l, _)| overlaps(*l, a.listen)))
    {
        problems.add(
            None,
            "admin.listen",
            format!("the admin address is also a listen address of route \"{route}\""),
            "move the admin API or the route to another port",
        );
    }

    match (runtime, admin) {
        (Some(runtime), Some(admin)) if problems.is_empty() => Ok(Config {
            runtime,
            admin,
            state,
            routes,
        }),
        _ => Err(problems.into_error(file)),
    }
}

/// Hint for the most common TOML-level errors (syntax, unknown or mistyped keys).
pub(super) fn syntax_hint(message: &str) -> (String, String) {
    if let Some(rest) = message.split("unknown field `").nth(1) {
        let key = rest.split('`').next().unwrap_or("?").to_string();
        let expected = message
            .split("expected")
            .nth(1)
            .map(|s| format!("remove or rename it; valid keys here:{}", s.trim_end()))
            .unwrap_or_else(|| "remove or rename it".to_string());
        return (key, expected);
    }
    if message.contains("invalid type") {
        return (
            "(value)".into(),
            "use the type shown in `ringway config default` (strings are quoted; durations are strings like \"1s\")".into(),
        );
    }
    (
        "(syntax)".into(),
        "fix the TOML syntax at that line (see `ringway config default` for a valid file)".into(),
    )
}

fn runtime(rt: FileRuntime, p: &mut Problems<'_>) -> Option<RuntimeConfig> {
    let ok_before = p.is_empty();
    let workers = match &rt.workers {
        None => None,
        Some(w) => match *w.get_ref() {
            0 => None,
            n if (1..=4096).contains(&n) => NonZeroUsize::new(n as usize),
            n => {
                p.add(
                    Some(w.span().start),
                    "runtime.workers",
                    format!("{n} is not a valid worker count"),
                    "use 0 (one per allowed core) or a count from 1 to 4096",
                );
                None
            }
        },
    };
    let driver = match rt
        .driver
        .as_ref()
        .map(|d| (d.get_ref().as_str(), d.span().start))
    {
        None | Some(("io_uring", _)) => Driver::IoUring,
        Some(("epoll", _)) => Driver::Epoll,
        Some((other, at)) => {
            p.add(
                Some(at),
                "runtime.driver",
                format!("unknown driver \"{other}\""),
                "use \"io_uring\" (default) or \"epoll\"",
            );
            Driver::IoUring
        }
    };
    let splice = match rt.splice.as_ref().map(|s| (s.get_ref(), s.span().start)) {
        None => DEFAULT_SPLICE,
        Some((FileSplice::Bool(true), _)) => SpliceMode::Always,
        Some((FileSplice::Bool(false), _)) => SpliceMode::Never,
        Some((FileSplice::Mode(m), at)) => match m.as_str() {
            "auto" => SpliceMode::Auto,
            "always" => SpliceMode::Always,
            "never" => SpliceMode::Never,
            other => {
                p.add(
                    Some(at),
                    "runtime.splice",
                    format!("unknown relay mode \"{other}\""),
                    "use \"auto\" (default: buffered, splice once a read fills the buffer), \
                     true (always splice) or false (never splice)",
                );
                DEFAULT_SPLICE
            }
        },
    };
    let busy_poll = duration(
        rt.busy_poll.as_ref(),
        "runtime.busy_poll",
        Duration::ZERO,
        p,
    );
    if busy_poll > MAX_BUSY_POLL {
        p.add(
            rt.busy_poll.as_ref().map(|s| s.span().start),
            "runtime.busy_poll",
            format!("{busy_poll:?} is longer than {MAX_BUSY_POLL:?}"),
            "use a few tens of microseconds (e.g. \"50us\"), or \"0us\" for off (default)",
        );
    }
    let busy_poll = (!busy_poll.is_zero() && busy_poll <= MAX_BUSY_POLL).then_some(busy_poll);
    let shutdown_grace = duration(
        rt.shutdown_grace.as_ref(),
        "runtime.shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
        p,
    );
    let buffer_size = size(
        rt.buffer_size.as_ref(),
        "runtime.buffer_size",
        DEFAULT_BUFFER_SIZE,
        (4096, 16 << 20),
        p,
    );
    let pipe_size = size(
        rt.pipe_size.as_ref(),
        "runtime.pipe_size",
        DEFAULT_PIPE_SIZE,
        (4096, 64 << 20),
        p,
    );
    let access_log_queue = access_log_queue(rt.access_log_queue.as_ref(), p);
    let max_connections =
        super::limits::count(rt.max_connections.as_ref(), "runtime.max_connections", p);
    let dns = super::dns::dns(
        rt.dns_resolver.as_ref(),
        rt.dns_min_ttl.as_ref(),
        rt.dns_max_ttl.as_ref(),
        p,
    );
    if !ok_before || !p.is_empty() {
        return None;
    }
    Some(RuntimeConfig {
        workers,
        pin: rt.pin.unwrap_or(true),
        splice,
        driver,
        shutdown_grace,
        buffer_size,
        pipe_size,
        watch_config: rt.watch_config.unwrap_or(false),
        busy_poll,
        access_log_queue,
        max_connections,
        dns,
    })
}

/// `runtime.access_log_queue`: records per worker, within [`super::ACCESS_LOG_QUEUE_RANGE`].
fn access_log_queue(v: Option<&Spanned<i64>>, p: &mut Problems<'_>) -> usize {
    let (min, max) = super::ACCESS_LOG_QUEUE_RANGE;
    let Some(v) = v else {
        return super::DEFAULT_ACCESS_LOG_QUEUE;
    };
    match usize::try_from(*v.get_ref()) {
        Ok(n) if (min..=max).contains(&n) => n,
        _ => {
            p.add(
                Some(v.span().start),
                "runtime.access_log_queue",
                format!("{} is not a valid queue length", v.get_ref()),
                format!(
                    "use a count of records from {min} to {max} (default {})",
                    super::DEFAULT_ACCESS_LOG_QUEUE
                ),
            );
            super::DEFAULT_ACCESS_LOG_QUEUE
        }
    }
}

/// The longest `runtime.busy_poll`: past a millisecond a worker is a spin loop.
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// How a route's keys are named in problems: `route[0] ("web").backends[1]` in a file,
/// `backends[1]` in an admin API body.
pub(super) enum Label {
    Indexed(usize),
    Bare,
}

impl Label {
    /// The prefix of the route's keys, given its name (empty when unknown).
    fn prefix(&self, name: &str) -> String {
        match self {
            Label::Indexed(i) if name.is_empty() => format!("route[{i}]."),
            Label::Indexed(i) => format!("route[{i}] (\"{name}\")."),
            Label::Bare => String::new(),
        }
    }
}

/// Routes on one concrete address must be told apart ([`super::check_shared`]).
fn shared(routes: &[RouteConfig], p: &mut Problems<'_>) {
    let mut by_addr: std::collections::BTreeMap<SocketAddr, Vec<(&str, &super::Sharing)>> =
        Default::default();
    for r in routes {
        for l in r.listen.iter().filter(|l| l.port() != 0) {
            by_addr.entry(*l).or_default().push((&r.name, &r.sharing));
        }
    }
    for (addr, on) in by_addr {
        if let Err(e) = super::check_shared(addr, &on) {
            let [_, b] = e.routes();
            let i = routes.iter().position(|r| r.name == b).unwrap_or(0);
            p.add(
                None,
                format!("route[{i}] (\"{b}\").listen"),
                e.to_string(),
                e.fix(),
            );
        }
    }
}

/// Routes writing one access log file write it in one format.
fn same_log_format(routes: &[RouteConfig], p: &mut Problems<'_>) {
    let mut first: HashMap<&super::LogPath, (&str, super::LogFormat)> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let Some(a) = &r.access_log else { continue };
        match first.get(&a.path) {
            Some((other, f)) if *f != a.format => p.add(
                None,
                format!("route[{i}] (\"{}\").access_log", r.name),
                format!(
                    "{} is written as {} by route \"{other}\" and as {} here",
                    a.path.as_config(),
                    f.as_str(),
                    a.format.as_str()
                ),
                "give routes that share an access log file the same format, or separate files",
            ),
            Some(_) => {}
            None => {
                first.insert(&a.path, (&r.name, a.format));
            }
        }
    }
}

/// What a route must have beyond its keys' own rules.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteRules {
    /// A route without `listen` is valid (the admin API then picks an address from
    /// `admin.listen_range`).
    pub listen_optional: bool,
}

pub(super) fn route(
    l: &Label,
    at: usize,
    r: &FileRoute,
    p: &mut Problems<'_>,
    rules: RouteRules,
) -> Option<RouteConfig> {
    let before = p.len();
    let name_key = format!("{}name", l.prefix(""));
    let name = match &r.name {
        None => {
            p.add(
                Some(at),
                name_key,
                "the route has no name",
                "add name = \"...\" (letters, digits, '-', '_', '.'; used in the admin API and metrics)",
            );
            String::new()
        }
        Some(n) => {
            let s = n.get_ref();
            if !valid_route_name(s) {
                p.add(
                    Some(n.span().start),
                    name_key,
                    format!("\"{s}\" is not a valid route name"),
                    "use 1 to 64 letters, digits, '-', '_' or '.'",
                );
            }
            s.clone()
        }
    };
    let label = l.prefix(&name);
    if r.listen.is_empty() && !rules.listen_optional {
        p.add(
            Some(at),
            format!("{label}listen"),
            "the route listens nowhere",
            "add listen = [\"127.0.0.1:3000\"]",
        );
    }
    if r.backends.is_empty() {
        p.add(
            Some(at),
            format!("{label}backends"),
            "the route has no backends",
            "add backends = [\"127.0.0.1:8080\"] (at least one)",
        );
    }
    // Each entry keeps its index in the file, so a problem names the right key and line
    // even when an earlier entry did not parse.
    let listen = addrs(&r.listen, &format!("{label}listen"), p);
    for (j, l) in listen.iter().enumerate() {
        if listen[..j].iter().any(|(_, x)| x == &l.1) {
            p.add(
                Some(r.listen[l.0].span().start),
                format!("{label}listen[{}]", l.0),
                format!("{} is listed twice", l.1),
                "list each address once",
            );
        }
    }
    // An entry is an address, or else a name the control thread resolves.
    let mut backends: Vec<(usize, SocketAddr)> = Vec::new();
    let mut names: Vec<super::NamedBackend> = Vec::new();
    let mut weights = std::collections::BTreeMap::new();
    for (j, b) in r.backends.iter().enumerate() {
        let key = format!("{label}backends[{j}]");
        let text = b.get_ref().addr.trim();
        let weight = super::balance::weight(b, &key, p);
        if let Ok(a) = text.parse::<SocketAddr>() {
            backends.push((j, a));
            if let Some(w) = weight {
                weights.insert(a, w);
            }
        } else if let Some((host, port)) = super::dns::parse_named(text) {
            let n = super::NamedBackend {
                host,
                port,
                weight: weight.unwrap_or(super::DEFAULT_WEIGHT),
            };
            if b.get_ref().max_connections.is_some() {
                p.add(
                    Some(b.span().start),
                    format!("{key}.max_connections"),
                    format!("{n} is a name: a per-backend max_connections needs an address"),
                    "give the backend as \"IP:PORT\" to limit it, or leave max_connections out \
                     (the route's own max_connections still applies)",
                );
            }
            if names.iter().any(|x| x.host == n.host && x.port == n.port) {
                p.add(
                    Some(b.span().start),
                    key,
                    format!("{n} is listed twice"),
                    "list each backend once",
                );
            } else {
                names.push(n);
            }
        } else {
            p.add(
                Some(b.span().start),
                key,
                format!(
                    "\"{}\" is not an address or a name with a port",
                    b.get_ref().addr
                ),
                BACKEND_FIX,
            );
        }
    }
    let backend_limits = super::eject::limits_of(&backends, &r.backends, &label, p);
    let balance = super::balance::balance(r.balance.as_ref(), &label, p);
    for (j, (i, b)) in backends.iter().enumerate() {
        let at = Some(r.backends[*i].span().start);
        if backends[..j].iter().any(|(_, x)| x == b) {
            p.add(
                at,
                format!("{label}backends[{i}]"),
                format!("{b} is listed twice"),
                "list each backend once",
            );
        }
        if b.port() == 0 || b.ip().is_unspecified() {
            p.add(
                at,
                format!("{label}backends[{i}]"),
                format!("{b} cannot be connected to"),
                "use a concrete address and a non-zero port",
            );
        }
    }
    let listen: Vec<SocketAddr> = listen.into_iter().map(|(_, a)| a).collect();
    let backends: Vec<SocketAddr> = backends.into_iter().map(|(_, a)| a).collect();
    let connect_timeout = duration(
        r.connect_timeout.as_ref(),
        &format!("{label}connect_timeout"),
        DEFAULT_CONNECT_TIMEOUT,
        p,
    );
    if connect_timeout.is_zero() {
        p.add(
            r.connect_timeout.as_ref().map(|s| s.span().start),
            format!("{label}connect_timeout"),
            "a zero connect timeout never connects",
            "use a duration such as \"1s\"",
        );
    }
    let connect_retries = r.connect_retries.as_ref().and_then(|v| {
        let n = *v.get_ref();
        if (0..=100).contains(&n) {
            Some(n as u32)
        } else {
            p.add(
                Some(v.span().start),
                format!("{label}connect_retries"),
                format!("{n} is out of range"),
                "use 0 to 100 (extra attempts after the first), or leave it out to try each backend once",
            );
            None
        }
    });
    let idle_timeout = r.idle_timeout.as_ref().map(|s| {
        let d = duration(Some(s), &format!("{label}idle_timeout"), Duration::ZERO, p);
        if d.is_zero() {
            p.add(
                Some(s.span().start),
                format!("{label}idle_timeout"),
                "a zero idle timeout would close every session at once",
                "use a duration such as \"5m\", or leave the key out for no idle timeout",
            );
        }
        d
    });
    let max_connections = r.max_connections.as_ref().and_then(|v| {
        let n = *v.get_ref();
        match u32::try_from(n).ok().and_then(NonZeroU32::new) {
            Some(n) => Some(n),
            None => {
                p.add(
                    Some(v.span().start),
                    format!("{label}max_connections"),
                    format!("{n} is not a valid limit"),
                    "use a count from 1 to 4294967295, or leave the key out for no limit",
                );
                None
            }
        }
    });
    let max_connections_per_source = super::limits::count(
        r.max_connections_per_source.as_ref(),
        &format!("{label}max_connections_per_source"),
        p,
    );
    let first_byte_timeout =
        super::limits::first_byte_timeout(r.first_byte_timeout.as_ref(), &label, p);
    let health = health::health(r.health.as_ref(), &label, p);
    let switch = health::switch(r.switch.as_ref(), &label, p);
    let sharing = super::matching::sharing(
        r.matching.as_ref(),
        r.proxy_protocol.as_ref(),
        r.accept_proxy_from.as_ref(),
        r.peek_timeout.as_ref(),
        &label,
        p,
    );
    let access_log = super::access_log::access_log(r.access_log.as_ref(), &label, p);
    let half_close_timeout =
        super::peers::half_close_timeout(r.half_close_timeout.as_ref(), &label, p);
    let keepalive = super::peers::keepalive(r.keepalive.as_ref(), &label, p);
    let eject = super::eject::eject(r.eject.as_ref(), &label, p);
    if p.len() != before {
        return None;
    }
    Some(RouteConfig {
        name,
        listen,
        backends,
        names,
        balance,
        weights,
        connect_timeout,
        connect_retries,
        idle_timeout,
        max_connections,
        max_connections_per_source,
        first_byte_timeout,
        health,
        switch,
        sharing,
        access_log,
        half_close_timeout,
        keepalive,
        eject,
        backend_limits,
    })
}

/// 1 to 64 letters, digits, '-', '_' or '.' (the name is a URL path segment and a metric
/// label).
pub fn valid_route_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// True when a socket on `a` and one on `b` cannot both be bound: the same address, or the
/// same port and family where one of them is the wildcard address. (Port 0 overlaps
/// nothing: the kernel picks a free port.)
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

pub(super) fn addr(s: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<SocketAddr> {
    match s.get_ref().trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(
                Some(s.span().start),
                key,
                format!("\"{}\" is not an address with a port", s.get_ref()),
                ADDR_FIX,
            );
            None
        }
    }
}

/// The entries that parse, each with its index in the list.
fn addrs(list: &[Spanned<String>], key: &str, p: &mut Problems<'_>) -> Vec<(usize, SocketAddr)> {
    list.iter()
        .enumerate()
        .filter_map(|(j, s)| addr(s, &format!("{key}[{j}]"), p).map(|a| (j, a)))
        .collect()
}

pub(super) fn duration(
    s: Option<&Spanned<String>>,
    key: &str,
    default: Duration,
    p: &mut Problems<'_>,
) -> Duration {
    match s {
        None => default,
        Some(s) => parse_duration(s.get_ref()).unwrap_or_else(|why| {
            p.add(
                Some(s.span().start),
                key,
                why,
                "write a duration with a unit: \"250ms\", \"30s\", \"5m\"",
            );
            default
        }),
    }
}

fn size(
    s: Option<&Spanned<String>>,
    key: &str,
    default: usize,
    (min, max): (usize, usize),
    p: &mut Problems<'_>,
) -> usize {
    let Some(s) = s else { return default };
    match parse_size(s.get_ref()) {
        Ok(n) if (min..=max).contains(&n) => n,
        Ok(n) => {
            p.add(
                Some(s.span().start),
                key,
                format!("{n} bytes is out of range"),
                format!("use a size from {min} bytes to {} MiB", max >> 20),
            );
            default
        }
        Err(why) => {
            p.add(
                Some(s.span().start),
                key,
                why,
                "write a size such as \"64KiB\" or \"1MiB\"",
            );
            default
        }
    }
}
