//! `braid-edge`: runs on the field rig and bonds its uplinks into one L2 tunnel to a gateway.
//!
//! The tunnel itself (`run`, `status`) comes with the I/O layer; key management and
//! `check-config` are here already.

use std::path::PathBuf;
use std::process::ExitCode;

use braid::cli::{KeyCommand, check_edge_config, finish};
use clap::{Parser, Subcommand};

/// The command line; the about text is the crate description.
#[derive(Debug, Parser)]
#[command(name = "braid-edge", version = env!("CARGO_PKG_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Command::Key(command) => finish(command.run()),
        Command::CheckConfig { config } => check_edge_config(&config),
    }
}
