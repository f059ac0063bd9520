//! The command line (clap). `main.rs` dispatches on it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration (documented TOML).
    Default,
}
