//! Command-line pieces both binaries share, so `braid-edge` and `braid-gateway` behave alike.

use core::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::keys::{KeyError, PrivateKey, PublicKey, generate_key_file};

/// Key management subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
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

impl KeyCommand {
    /// Runs the command and returns the public key to print.
    ///
    /// # Errors
    /// [`KeyError`] if the key cannot be written, read, or is readable by others.
    pub fn run(&self) -> Result<PublicKey, KeyError> {
        match self {
            Self::Keygen { out } => generate_key_file(out),
            Self::Pubkey { key } => PrivateKey::read_file(key).map(|k| k.public()),
        }
    }
}

/// Ends a command: its output on stdout and exit 0, or `error: …` on stderr and exit 1.
pub fn finish<T: Display, E: Display>(result: Result<T, E>) -> ExitCode {
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
