//! `braid-gateway`: runs in the datacenter and terminates the bonded tunnels of many edges on one UDP port.
//!
//! Everything here is shared with the other binary through `braid::cli`; the tunnel itself is
//! `braid::io`.

use std::path::PathBuf;
use std::process::ExitCode;

use braid::cli::{KeyCommand, check_gateway_config, finish, run_gateway, status_gateway};
use clap::{Parser, Subcommand};

/// The command line; the about text is the crate description.
#[derive(Debug, Parser)]
#[command(name = "braid-gateway", version = env!("CARGO_PKG_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the tunnel until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Prints the running daemon's status (JSON, schema version 1).
    Status {
        /// The config file (it names the status address).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    #[command(flatten)]
    Key(KeyCommand),
    /// Checks a config file: prints what would run, or the first problem (file, line and key).
    CheckConfig {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run_gateway(&config),
        Command::Status { config } => status_gateway(&config),
        Command::Key(command) => finish(command.run()),
        Command::CheckConfig { config } => check_gateway_config(&config),
    }
}
