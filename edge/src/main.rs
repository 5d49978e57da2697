//! `braid-edge`: runs on the field rig and bonds its uplinks into one L2 tunnel to a gateway.
//!
//! Everything here is shared with the other binary through `braid::cli`; the tunnel itself is
//! `braid::io`.

use std::process::ExitCode;

use braid::cli::{Command, Daemon};
use clap::Parser;

/// The command line; the about text is the crate description.
#[derive(Debug, Parser)]
#[command(name = "braid-edge", version = env!("CARGO_PKG_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    Cli::parse().command.run(Daemon::Edge)
}
