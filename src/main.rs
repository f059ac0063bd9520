//! The `ringway` binary: parse the command line, start logging, dispatch, map errors to exit
//! codes (0 ok, 1 runtime failure, 64 bad usage or invalid configuration).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use ringway::cli::{Cli, Command, ConfigCommand};
use ringway::client::{self, Call};
use ringway::config::{Config, DEFAULT_TOML};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
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
        other => return serve(other),
    };
    ExitCode::from(client::run(call, &args))
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
                eprintln!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Run { config } => {
            let loaded = match &config {
                Some(path) => Config::load(path),
                None => Ok(Config::embedded_default()),
            };
            let cfg = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
                    eprintln!("ringway: cannot install a signal handler: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
            match ringway::control::run(cfg, config, stop) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "ringway could not start");
                    eprintln!("ringway: {e}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        // Client commands are dispatched before this.
        _ => ExitCode::from(EXIT_USAGE),
    }
}
