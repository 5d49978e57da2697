//! `braid-gateway`: runs in the datacenter and terminates the bonded tunnels of many edges on one UDP port.
//!
//! The tunnel itself (`run`, `check-config`, `status`) comes with the I/O layer; key
//! management is here already.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    /// Writes a new private key (mode 0600, never over an existing file) and prints its public key.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Prints the public key of a private key file.
    Pubkey {
        /// The private key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let public = braid::keys::generate_key_file(&out).context("keygen")?;
            println!("{public}");
        }
        Command::Pubkey { key } => {
            let private = braid::keys::PrivateKey::read_file(&key).context("pubkey")?;
            println!("{}", private.public());
        }
    }
    Ok(())
}
