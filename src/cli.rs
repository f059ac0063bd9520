//! The command line (clap). `main.rs` dispatches on it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ringway — an io_uring, thread-per-core TCP proxy.
#[derive(Debug, Parser)]
#[command(name = "ringway", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (without -c: the embedded default configuration).
    Run {
        /// Configuration file (TOML).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print it normalized (every default written out).
    Check {
        /// Configuration file (TOML).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Show routes, backends (health, connections, draining), workers and recent switches.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the metrics (Prometheus text; --json for JSON).
    Metrics {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Say whether every route has a healthy active backend (exit 0 healthy, 1 not).
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Health-gated switch of ROUTE's active backends to ADDR... (old sessions drain).
    Switch {
        /// The route's name.
        route: String,
        /// The new active set: one or more IP:port addresses.
        #[arg(required = true, value_name = "ADDR")]
        to: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Switch ROUTE back to the set it had before its last switch.
    Rollback {
        /// The route's name.
        route: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List, show, add or remove routes at runtime (routes the file defines change only
    /// through the file and `ringway reload`).
    Route {
        #[command(subcommand)]
        what: RouteCommand,
    },
    /// Attach, detach or drain a route's backends at runtime.
    Backend {
        #[command(subcommand)]
        what: BackendCommand,
    },
    /// Re-read the configuration file ringway runs with: all or nothing; prints what each
    /// route did (added, changed, removed, unchanged).
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace the running binary without losing a connection: start the new one with the
    /// running configuration, hand it every listening socket and every quiet session, and
    /// let the old process exit once its last session ends. On any failure the old process
    /// serves on unchanged (exit 1, with why).
    Upgrade {
        /// The new binary (default: the path the running ringway was started from).
        #[arg(long, value_name = "PATH")]
        binary: Option<std::path::PathBuf>,
        /// How long the new binary gets to report ready.
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        timeout: String,
        /// Hand over the listeners only: open sessions finish in the old process (under
        /// runtime.shutdown_grace) instead of moving to the new one.
        #[arg(long)]
        no_sessions: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Every route: origin (file or api), listen addresses, active backends, health.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One route in detail.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a route through the admin API (it lives in the state file and survives
    /// restarts and reloads). Without --listen it gets an address from admin.listen_range.
    Add {
        name: String,
        #[command(flatten)]
        keys: RouteKeys,
        /// The route's other keys from a TOML file, as a [[route]] table has them
        /// (connect_timeout, [health], [switch], ...); the flags above add to it.
        #[arg(long = "from", value_name = "FILE")]
        from: Option<PathBuf>,
        /// Replace the route if it exists (otherwise an existing route is an error).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a route created through the API; its open sessions drain.
    Remove {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackendCommand {
    /// Attach ADDR to ROUTE: it passes the route's health gate, then gets new sessions. A
    /// NAME:PORT is attached without the gate; its addresses join as it resolves.
    Add {
        route: String,
        addr: String,
        /// Skip the health gate.
        #[arg(long)]
        no_check: bool,
        /// The backend's weight in the route (1..=256; default 1). Attaching a backend that
        /// is already there with another weight changes its weight.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        weight: Option<u16>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Detach ADDR (or a NAME:PORT) from ROUTE: no new sessions; open ones drain under the
    /// route's drain rules.
    Remove(BackendArgs),
    /// Drain ADDR: no new sessions, open ones stay (any route, file-defined too).
    Drain(BackendArgs),
    /// Undo `backend drain`: ADDR gets new sessions again.
    Undrain(BackendArgs),
}

/// A backend of a route, and how to reach ringway.
#[derive(Debug, Args)]
pub struct BackendArgs {
    /// The route's name.
    pub route: String,
    /// The backend: IP:port (`remove` also takes a NAME:PORT).
    pub addr: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How the CLI reaches a running ringway.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// Admin API: "127.0.0.1:9901", "http://127.0.0.1:9901", or "unix:/path/admin.sock"
    /// [default: the configuration's admin.unix when set, else its admin.listen]
    #[arg(long, env = "RINGWAY_ADMIN", value_name = "URL")]
    pub admin: Option<String>,
    /// Admin token [default: admin.token / admin.token_file of the configuration, else the
    /// token ringway generated beside its state file]
    #[arg(
        long,
        env = "RINGWAY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The configuration ringway runs with (where the admin address and token are found)
    /// [default: the embedded default]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration (documented TOML).
    Default,
    /// Print the running ringway's effective configuration (the file's routes and the
    /// API's) as TOML that `ringway check` accepts.
    Dump {
        #[command(flatten)]
        client: ClientArgs,
    },
}

// The token never appears in debug output.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("admin", &self.admin)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("config", &self.config)
            .field("json", &self.json)
            .finish()
    }
}

/// The keys `ringway route add` takes as flags (each adds to what `--from` gives).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteKeys {
    /// An address to listen on (repeat for several).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// A backend (repeat for several).
    #[arg(long = "backend", value_name = "ADDR")]
    pub backends: Vec<String>,
    /// [route.match] sni: a TLS server name this route takes on a shared address (repeat).
    #[arg(long = "sni", value_name = "NAME")]
    pub sni: Vec<String>,
    /// [route.match] host: an HTTP Host this route takes on a shared address (repeat).
    #[arg(long = "host", value_name = "NAME")]
    pub host: Vec<String>,
    /// [route.match] path_prefix: an HTTP path prefix this route takes (repeat).
    #[arg(long = "path-prefix", value_name = "PREFIX")]
    pub path_prefix: Vec<String>,
    /// [route.match] source: a client network this route takes (repeat).
    #[arg(long = "source", value_name = "CIDR")]
    pub source: Vec<String>,
    /// Send a PROXY protocol header to the backends: v1 or v2.
    #[arg(long = "proxy-protocol", value_name = "VERSION")]
    pub proxy_protocol: Option<String>,
}
