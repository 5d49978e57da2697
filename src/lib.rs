//! braid: a multi-link bonded L2 tunnel for live streaming.
//!
//! This crate is the I/O around the sans-IO engine [`braid_engine`]: the tokio driver loops, the
//! TAP device, the per-uplink UDP sockets, netlink link events, the observability endpoint
//! ([`io`]), the configuration file ([`config`]) and the command line both binaries share
//! ([`cli`]). The engine's modules are re-exported here, so `braid::session::Session` and
//! `braid_engine::session::Session` name the same type.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub use braid_engine::*;

pub mod cli;
pub mod config;
pub mod fleet;
pub mod io;
