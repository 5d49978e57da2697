//! The config files as written: what the YAML parser reads, before any rule is checked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EdgeFile {
    pub(super) private_key_file: PathBuf,
    pub(super) gateway: Option<PeerFile>,
    pub(super) gateways: Option<Vec<GatewayEntryFile>>,
    pub(super) gateway_return_after_s: Option<i64>,
    pub(super) cipher: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) latency_budget_ms: Option<i64>,
    pub(super) retransmit: Option<bool>,
    pub(super) path_mtu: Option<i64>,
    pub(super) mss_clamp: Option<bool>,
    pub(super) fec: Option<FecFile>,
    pub(super) tap: Option<TapFile>,
    pub(super) uplinks: Vec<UplinkFile>,
    pub(super) status: Option<StatusFile>,
    pub(super) name: Option<String>,
    pub(super) bitrate_feed: Option<String>,
    pub(super) advanced: Option<Advanced>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PeerFile {
    pub(super) address: String,
    pub(super) public_key: String,
    pub(super) psk_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewayEntryFile {
    pub(super) address: String,
    pub(super) public_key: String,
    pub(super) psk_file: Option<PathBuf>,
    pub(super) priority: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FecFile {
    pub(super) enabled: Option<bool>,
    pub(super) block: Option<i64>,
    pub(super) parity: Option<i64>,
    pub(super) max_delay_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TapFile {
    pub(super) name: Option<String>,
    pub(super) mtu: Option<i64>,
    pub(super) mac: Option<String>,
    pub(super) bridge: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UplinkFile {
    pub(super) name: String,
    pub(super) interface: String,
    pub(super) source: Option<String>,
    pub(super) priority: Option<i64>,
    pub(super) rate_mbps: Option<f64>,
    pub(super) metered: Option<bool>,
    pub(super) cap_mb: Option<f64>,
    pub(super) cap_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatusFile {
    pub(super) listen: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GatewayFile {
    pub(super) private_key_file: PathBuf,
    pub(super) listen: Option<Vec<String>>,
    pub(super) nonlocal_bind: Option<bool>,
    pub(super) mode: Option<String>,
    pub(super) latency_budget_ms: Option<i64>,
    pub(super) retransmit: Option<bool>,
    pub(super) path_mtu: Option<i64>,
    pub(super) mss_clamp: Option<bool>,
    pub(super) handshake_rate: Option<i64>,
    pub(super) workers: Option<Scalar>,
    #[serde(default)]
    pub(super) edges: Vec<AllowedEdgeFile>,
    pub(super) status: Option<StatusFile>,
    pub(super) fleet: Option<super::fleet::FleetFile>,
    pub(super) advanced: Option<Advanced>,
}

/// `advanced:`: engine tunables by section and field, e.g. `monitor: { probe_interval: 20ms }`:
/// those of [`Tuning::OPERATOR_KEYS`] only. Unset ones keep their defaults.
pub(super) type Advanced = BTreeMap<String, BTreeMap<String, Scalar>>;

/// A YAML scalar, kept as the text a tunable parses.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    pub(super) fn text(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Float(x) => x.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowedEdgeFile {
    pub(super) name: String,
    pub(super) public_key: String,
    pub(super) psk_file: Option<PathBuf>,
    pub(super) tap: Option<String>,
    pub(super) mtu: Option<i64>,
    pub(super) mac: Option<String>,
    pub(super) bridge: Option<String>,
}
