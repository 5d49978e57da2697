//! `braid-gateway`: runs in the datacenter and terminates the bonded tunnels of many edges on one UDP port.
//!
//! The tunnel itself (`run`, `check-config`, `status`) comes with the I/O layer; key
//! management is here already.

use std::process::ExitCode;

use braid::cli::{KeyCommand, finish};
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
    #[command(flatten)]
    Key(KeyCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Key(command) => finish(command.run()),
    }
}
