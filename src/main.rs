//! The `ringway` binary: parse the command line, start logging, dispatch, map errors to exit
//! codes (0 ok, 1 runtime failure, 64 bad usage or invalid configuration).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use ringway::cli::{BackendCommand, Cli, Command, ConfigCommand, RouteCommand};
use ringway::client::{self, Call};
use ringway::config::{Config, DEFAULT_TOML};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Collects the calling thread's mimalloc heap and returns the memory it freed to the OS
/// (`force`: every page and every pending purge, now); the workers call it once a second
/// (`ringway::worker::trim`).
fn mimalloc_release(force: bool) {
    // `void mi_collect(bool force)` of mimalloc.h, in the static library that
    // libmimalloc-sys (under the `mimalloc` crate above) builds and links.
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes a C bool (ABI-compatible with Rust's bool), touches only the
    // calling thread's own heap and the allocator's internal, synchronized arena state, and
    // is safe to call from any thread at any time (an uninitialized heap is a no-op).
    unsafe { mi_collect(force) }
}

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set
/// (then mimalloc does what it says).
///
/// mimalloc asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so they are used
/// even where THP is "madvise" only. For a proxy that is a bad trade: a buffer touched in one
/// place makes a whole 2 MiB page resident (2,100 sessions each holding two 64 KiB buffers:
/// ~310 MiB resident with huge pages, ~48 MiB without), and memory freed after a peak does
/// not stay freed: khugepaged (`max_ptes_none` 511 by default) collapses a range with one
/// page still in use back into a whole huge page. Measured: after a peak of 2,100 sessions,
/// RSS stayed 15-25 % above its baseline with huge pages, 2-4 % without.
/// `PR_SET_THP_DISABLE` applies to every later fault and collapse, in the arena mimalloc
/// reserved before `main` too.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: prctl(2) with integer arguments only; PR_SET_THP_DISABLE sets a flag on this
    // process's memory map and touches no memory of ours. A failure (a kernel without it)
    // leaves THP as it was, which is harmless.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (call, args) = match cli.command {
        Command::Status { client } => (Call::Status, client),
        Command::Metrics { client } => (Call::Metrics, client),
        Command::Health { client } => (Call::Health, client),
        Command::Switch { route, to, client } => (Call::Switch { route, to }, client),
        Command::Rollback { route, client } => (Call::Rollback { route }, client),
        Command::Reload { client } => (Call::Reload, client),
        Command::Upgrade {
            binary,
            timeout,
            no_sessions,
            client,
        } => {
            // The server resolves nothing relative to its own directory: send an absolute
            // path.
            let binary = binary.map(|p| std::path::absolute(&p).unwrap_or(p));
            let binary = binary.map(|p| p.display().to_string());
            (
                Call::Upgrade {
                    binary,
                    timeout: Some(timeout),
                    sessions: !no_sessions,
                },
                client,
            )
        }
        Command::Config {
            what: ConfigCommand::Dump { client },
        } => (Call::ConfigDump, client),
        Command::Route { what } => match route_call(what) {
            Ok(x) => x,
            Err(why) => {
                eprintln!("ringway: {why}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        Command::Backend { what } => backend_call(what),
        other => return serve(other),
    };
    ExitCode::from(client::run(call, &args))
}

fn route_call(what: RouteCommand) -> Result<(Call, ringway::cli::ClientArgs), String> {
    Ok(match what {
        RouteCommand::List { client } => (Call::Routes, client),
        RouteCommand::Show { name, client } => (Call::Route { name }, client),
        RouteCommand::Add {
            name,
            keys,
            from,
            replace,
            client,
        } => {
            let body = client::route_body(from.as_deref(), &keys)?;
            (
                Call::PutRoute {
                    name,
                    body,
                    replace,
                },
                client,
            )
        }
        RouteCommand::Remove { name, client } => (Call::RemoveRoute { name }, client),
    })
}

fn drain_call(b: ringway::cli::BackendArgs, drain: bool) -> (Call, ringway::cli::ClientArgs) {
    (
        Call::Drain {
            route: b.route,
            addr: b.addr,
            drain,
        },
        b.client,
    )
}

fn backend_call(what: BackendCommand) -> (Call, ringway::cli::ClientArgs) {
    match what {
        BackendCommand::Add {
            route,
            addr,
            no_check,
            weight,
            client,
        } => (
            Call::Attach {
                route,
                addr,
                check: !no_check,
                weight,
            },
            client,
        ),
        BackendCommand::Remove(b) => (
            Call::Detach {
                route: b.route,
                addr: b.addr,
            },
            b.client,
        ),
        BackendCommand::Drain(b) => drain_call(b, true),
        BackendCommand::Undrain(b) => drain_call(b, false),
    }
}

/// The commands that do not talk to a running ringway.
fn serve(command: Command) -> ExitCode {
    match command {
        Command::Config {
            what: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.to_toml());
                // Backend names are resolved (nothing is bound); one that does not resolve
                // fails the check like an invalid key.
                let unresolved = ringway::dns::check(&c);
                if !unresolved.is_empty() {
                    let e = ringway::config::ConfigError {
                        file: config.display().to_string(),
                        problems: unresolved,
                    };
                    eprint!("{e}");
                    return ExitCode::from(EXIT_USAGE);
                }
                eprintln!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config } => run_server(config),
        // Client commands are dispatched before this.
        _ => ExitCode::from(EXIT_USAGE),
    }
}

/// `ringway run`: loads the configuration, installs the signal flags, runs until stopped.
/// Started by `ringway upgrade`, it first receives the old process's sockets, and tells it
/// why when it cannot start.
fn run_server(config: Option<std::path::PathBuf>) -> ExitCode {
    let mut inherited = match ringway::upgrade::child::from_env() {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(why)) => {
            eprintln!("ringway: upgrade: {why}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let fail = |inherited: Option<ringway::upgrade::child::Inherited>, why: &str, code: u8| {
        if let Some(i) = inherited {
            i.fail(why);
        }
        ExitCode::from(code)
    };
    // Absolute (so /status and reloads name it the same whatever the working directory),
    // but not canonical: a symlink at the path is followed at each read.
    let config = config.map(|p| std::path::absolute(&p).unwrap_or(p));
    let loaded = match &config {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded_default()),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return fail(inherited, &e.to_string(), EXIT_USAGE);
        }
    };
    ringway::worker::trim::set_release(mimalloc_release);
    // Installed before anything starts: SIGHUP, SIGUSR1 and SIGUSR2 would otherwise end the
    // process by default. The control thread looks at the flags every tick (100 ms).
    let flag = || Arc::new(AtomicBool::new(false));
    let signals = ringway::control::Signals {
        stop: flag(),
        reload: flag(),
        reopen: flag(),
        upgrade: flag(),
    };
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let wanted = [
        // Stop gracefully.
        (SIGTERM, &signals.stop),
        (SIGINT, &signals.stop),
        // Reload the configuration file.
        (SIGHUP, &signals.reload),
        // Reopen the access log files (logrotate's postrotate).
        (SIGUSR1, &signals.reopen),
        // Upgrade to the binary at this process's own path.
        (SIGUSR2, &signals.upgrade),
    ];
    for (signal, flag) in wanted {
        if let Err(e) = signal_hook::flag::register(signal, flag.clone()) {
            eprintln!("ringway: cannot install a signal handler: {e}");
            return fail(
                inherited,
                &format!("cannot install a signal handler: {e}"),
                EXIT_RUNTIME,
            );
        }
    }
    match ringway::control::run(cfg, config, signals, &mut inherited) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ringway could not start");
            eprintln!("ringway: {e}");
            fail(inherited, &e.to_string(), EXIT_RUNTIME)
        }
    }
}
