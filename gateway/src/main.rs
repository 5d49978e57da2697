//! `braid-gateway`: runs in the datacenter and terminates the bonded tunnels of many edges on one UDP port.
//!
//! Everything here is shared with the other binary through `braid::cli`; the tunnel itself is
//! `braid::io`.

use std::process::ExitCode;

use braid::cli::{Command, Daemon};
use clap::Parser;

/// The command line; the about text is the crate description.
#[derive(Debug, Parser)]
#[command(name = "braid-gateway", version = env!("CARGO_PKG_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    Cli::parse().command.run(Daemon::Gateway)
}
