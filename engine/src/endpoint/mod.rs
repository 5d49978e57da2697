//! The two ends of a tunnel: each runs the handshake and owns the sessions it leads to.
//!
//! * [`edge`]: the rig's side, which initiates one session to its gateway;
//! * [`gateway`]: the datacenter's side, which answers many edges from an allowlist;
//! * [`announce`]: the rig's addresses, announced on the ingest LAN through a new gateway.

pub mod announce;
pub mod edge;
pub mod gateway;
