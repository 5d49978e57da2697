//! The two ends of a tunnel: each runs the handshake and owns the sessions it leads to.
//!
//! * [`edge`]: the rig's side, which initiates one session to its gateway;
//! * [`gateway`]: the datacenter's side, which answers many edges from an allowlist.

pub mod edge;
pub mod gateway;
