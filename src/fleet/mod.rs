//! A fleet of gateways: where an edge goes, and how edges move when members come and go.
//!
//! [`placement`] holds the rules as pure functions of the members' reports and the time.

pub mod placement;
