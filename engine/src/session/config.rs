//! What a session is set up with: its role, its links and its settings, and the errors a setup
//! that cannot run is refused with.

use std::net::SocketAddr;
use std::time::Duration;

use crate::scheduler::Mode;
use crate::tuning::{Tuning, TuningError};
use crate::{LinkId, MAX_LINKS};

/// The most a gap is held by default, however the links measure.
pub const DEFAULT_LATENCY_BUDGET: Duration = Duration::from_millis(500);
/// The largest UDP payload by default: a 1500-byte path less IPv6 and UDP headers (48 bytes),
/// so one setting serves either family.
pub const DEFAULT_MAX_DATAGRAM: usize = 1500 - 48;
/// The frame rate the dedup window is sized for by default, with the latency budget.
pub const DEFAULT_MAX_FRAME_RATE: u32 = 100_000;

/// Which end of the tunnel a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The rig: its links are configured, each sends to the gateway's fixed address.
    Edge,
    /// The datacenter: links appear as they prove the key, each at the address it last proved
    /// from (so NAT rebinding and a modem's new IP are followed).
    Gateway,
}

/// One link of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Its id, below [`MAX_LINKS`].
    pub id: LinkId,
    /// Lower is preferred (active-backup order, bond tie-break).
    pub priority: u8,
    /// Its capacity in bits per second, if known.
    pub rate_bps: Option<u64>,
    /// Where to send on this link (the gateway's address).
    pub remote: SocketAddr,
}

/// A session's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// How frames are spread over links.
    pub mode: Mode,
    /// The most a gap is held before the frames behind it are released.
    pub latency_budget: Duration,
    /// The frame rate the dedup window is sized for.
    pub max_frame_rate: u32,
    /// The edge's links (the gateway's list is empty: it learns links).
    pub links: Vec<LinkConfig>,
    /// Whether missing frames are asked for again (NAK) and re-sent within the budget.
    pub retransmit: bool,
    /// The largest UDP payload a link's path carries: larger frames are split in the tunnel.
    pub max_datagram: usize,
    /// Whether TCP SYNs crossing the tunnel have their MSS lowered so that segments fit one
    /// datagram ([`crate::mss`]).
    pub clamp_mss: bool,
    /// Whether each link probes its path for the largest datagram it carries, up to
    /// `max_datagram` ([`crate::pmtu`]). Without it every link uses `max_datagram` as given.
    pub probe_mtu: bool,
    /// Forward error correction of the frames this end sends, if on ([`crate::fec`]).
    pub fec: Option<FecConfig>,
    /// The engine's tunables (probe interval, congestion control, recovery timing...).
    pub tuning: Tuning,
}

/// How this end protects what it sends with recovery shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecConfig {
    /// Frames per block, at most [`crate::fec::MAX_ORIGINALS`].
    pub block: u8,
    /// Frames' worth of recovery shards per block, at most [`crate::fec::MAX_PARITY`]: a block
    /// rebuilds this many of its frames lost, wherever they were lost.
    pub parity: u8,
    /// The most a block stays open before its recovery shards go out, however few frames it
    /// has: a frame lost early in a block is rebuilt no later than this after it was sent, plus
    /// the shards' way.
    pub max_delay: Duration,
}

impl Default for FecConfig {
    fn default() -> Self {
        Self { block: 16, parity: 2, max_delay: Duration::from_millis(10) }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            latency_budget: DEFAULT_LATENCY_BUDGET,
            max_frame_rate: DEFAULT_MAX_FRAME_RATE,
            links: Vec::new(),
            retransmit: true,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            clamp_mss: true,
            probe_mtu: true,
            fec: None,
            tuning: Tuning::default(),
        }
    }
}

impl SessionConfig {
    /// Checks what a session of `role` needs of these settings.
    ///
    /// # Errors
    /// The first [`SetupError`] found.
    pub fn validate(&self, role: Role) -> Result<(), SetupError> {
        self.tuning.validate()?;
        if self.latency_budget.is_zero() {
            return Err(SetupError::Zero("latency budget"));
        }
        if let Some(fec) = self.fec {
            if !(1..=crate::fec::MAX_ORIGINALS).contains(&usize::from(fec.block)) {
                return Err(SetupError::FecOutOfRange("fec.block", crate::fec::MAX_ORIGINALS));
            }
            if !(1..=crate::fec::MAX_PARITY).contains(&usize::from(fec.parity)) {
                return Err(SetupError::FecOutOfRange("fec.parity", crate::fec::MAX_PARITY));
            }
            if fec.max_delay.is_zero() {
                return Err(SetupError::Zero("fec.max_delay"));
            }
        }
        if role == Role::Edge && self.links.is_empty() {
            return Err(SetupError::NoLinks);
        }
        let mut seen = crate::LinkSet::EMPTY;
        for link in &self.links {
            if link.id.index().is_none() {
                return Err(SetupError::LinkOutOfRange(link.id.get()));
            }
            if seen.contains(link.id) {
                return Err(SetupError::DuplicateLink(link.id.get()));
            }
            seen.insert(link.id);
        }
        Ok(())
    }
}

/// A session or an endpoint that cannot be set up with what it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A link id at or above [`MAX_LINKS`].
    #[error("link id {0} is out of range (0..{MAX_LINKS})")]
    LinkOutOfRange(u8),
    /// Two links with one id.
    #[error("link id {0} is configured twice")]
    DuplicateLink(u8),
    /// An edge with no links.
    #[error("an edge needs at least one link")]
    NoLinks,
    /// Two allowed edges with one public key.
    #[error("edge {0:?} has the same public key as an earlier edge")]
    DuplicateEdgeKey(String),
    /// Two gateways of an edge with one public key.
    #[error("gateway {0} has the same public key as an earlier gateway")]
    DuplicateGatewayKey(std::net::SocketAddr),
    /// Two gateways of an edge at one address.
    #[error("gateway {0} is listed twice")]
    DuplicateGatewayAddress(std::net::SocketAddr),
    /// A zero latency budget.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A forward error correction count out of its range.
    #[error("{0} must be between 1 and {1}")]
    FecOutOfRange(&'static str, usize),
    /// A tunable out of range.
    #[error(transparent)]
    Tuning(#[from] TuningError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u8) -> LinkConfig {
        LinkConfig { id: LinkId::new(id), priority: 0, rate_bps: None, remote: "192.0.2.1:4789".parse().unwrap() }
    }

    #[test]
    fn an_edge_needs_links_and_a_gateway_learns_them() {
        let config = SessionConfig::default();
        assert_eq!(config.validate(Role::Edge), Err(SetupError::NoLinks));
        assert_eq!(config.validate(Role::Gateway), Ok(()));
    }

    #[test]
    fn link_ids_must_be_in_range_and_unique() {
        let config = SessionConfig { links: vec![link(0), link(MAX_LINKS as u8)], ..SessionConfig::default() };
        assert_eq!(config.validate(Role::Edge), Err(SetupError::LinkOutOfRange(MAX_LINKS as u8)));
        let config = SessionConfig { links: vec![link(1), link(2), link(1)], ..SessionConfig::default() };
        assert_eq!(config.validate(Role::Edge), Err(SetupError::DuplicateLink(1)));
    }

    #[test]
    fn forward_error_correction_counts_are_checked_by_name() {
        let with = |fec: FecConfig| {
            let config = SessionConfig { links: vec![link(0)], fec: Some(fec), ..SessionConfig::default() };
            config.validate(Role::Edge).map_err(|e| e.to_string())
        };
        assert_eq!(with(FecConfig::default()), Ok(()));
        assert_eq!(
            with(FecConfig { block: 0, ..FecConfig::default() }),
            Err("fec.block must be between 1 and 64".into())
        );
        assert_eq!(
            with(FecConfig { parity: 33, ..FecConfig::default() }),
            Err("fec.parity must be between 1 and 32".into())
        );
        assert_eq!(
            with(FecConfig { max_delay: Duration::ZERO, ..FecConfig::default() }),
            Err("fec.max_delay must be greater than zero".into())
        );
    }

    #[test]
    fn zero_durations_are_refused_by_name() {
        let mut config = SessionConfig { links: vec![link(0)], ..SessionConfig::default() };
        config.tuning.monitor.probe_interval = Duration::ZERO;
        let error = config.validate(Role::Edge).unwrap_err().to_string();
        assert_eq!(error, "monitor.probe_interval: must be greater than zero");
        let config = SessionConfig { links: vec![link(0)], latency_budget: Duration::ZERO, ..SessionConfig::default() };
        assert_eq!(
            config.validate(Role::Edge).map_err(|e| e.to_string()),
            Err("latency budget must be greater than zero".into())
        );
    }
}
