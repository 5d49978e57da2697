//! A fleet of gateways: where an edge goes, and how edges move when members come and go.
//!
//! [`placement`] holds the rules as pure functions of the members' reports and the time;
//! [`member`] is a gateway's membership on etcd.

pub mod admin;
pub mod member;
pub mod placement;
pub mod placer;
