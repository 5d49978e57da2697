//! `braid-edge`: runs on the field rig and bonds its uplinks into one L2 tunnel to a gateway.
//!
//! For now the binary only parses its command line; the driver comes with the I/O layer.

use clap::Parser;

/// The command line; the about text is the crate description.
#[derive(Debug, Parser)]
#[command(name = "braid-edge", version = env!("CARGO_PKG_VERSION"), about, long_about = None)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
