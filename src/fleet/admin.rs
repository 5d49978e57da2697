//! `braid-gateway fleet ...`: the fleet's allowlist and its state, read and written in etcd from
//! any gateway's config. Every gateway applies an allowlist change within moments, without a
//! restart (it watches the prefix).

use std::fmt::Write as _;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::member::{EdgeRecord, MemberRecord, Parsed, connect, parse_prefix};
use crate::config::{FleetSettings, is_fleet_name, is_interface_name};
use crate::keys::PublicKey;

/// What `fleet` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FleetCommand {
    /// Prints the fleet: each gateway, its load against its capacity, the edges it carries and
    /// where each keeps its standby.
    Status,
    /// Lists the fleet's allowlist: each edge's name and public key.
    List,
    /// Admits an edge on every gateway of the fleet.
    AddEdge {
        /// Its name, unique in the fleet (letters, digits, '-', '_', '.').
        name: String,
        /// Its public key, as `braid-edge keygen` or `braid-edge pubkey` prints it.
        public_key: String,
        /// The bridge its TAP joins on every gateway (default: each gateway's `fleet.edge_bridge`).
        #[arg(long, value_name = "BRIDGE")]
        bridge: Option<String>,
    },
    /// Removes an edge from the fleet's allowlist: every gateway ends its session.
    RemoveEdge {
        /// Its name.
        name: String,
    },
}

impl FleetCommand {
    /// Runs the command against the fleet `settings` name, and returns what to print.
    ///
    /// # Errors
    /// A message: bad input, or what etcd said.
    pub fn run(self, settings: &FleetSettings) -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime: {e}"))?;
        runtime.block_on(self.run_async(settings))
    }

    async fn run_async(self, settings: &FleetSettings) -> Result<String, String> {
        // Input is checked before etcd is reached.
        if let Self::AddEdge { name, public_key, bridge } = &self {
            check_edge(name, public_key, bridge.as_deref())?;
        }
        let (mut client, _) = connect(settings, 0).await?;
        let prefix = format!("{}/", settings.prefix);
        let edge_key = |name: &str| format!("{prefix}edges/{name}");
        let read = async |client: &mut etcd_client::Client| -> Result<Parsed, String> {
            let response = client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| format!("reading the fleet from etcd: {e}"))?;
            Ok(parse_prefix(&prefix, response.kvs().iter().map(|kv| (kv.key(), kv.value()))))
        };
        match self {
            Self::Status => Ok(status(&read(&mut client).await?, settings)),
            Self::List => {
                let parsed = read(&mut client).await?;
                let mut out = String::new();
                for edge in &parsed.edges {
                    let bridge = edge.bridge.as_deref().map(|b| format!(" bridge={b}")).unwrap_or_default();
                    let _ = writeln!(out, "{} {}{bridge}", edge.name, edge.public_key.to_base64());
                }
                if parsed.edges.is_empty() {
                    out.push_str("the fleet's allowlist is empty\n");
                }
                Ok(out.trim_end().to_owned())
            }
            Self::AddEdge { name, public_key, bridge } => {
                let parsed = read(&mut client).await?;
                let key = PublicKey::from_base64(&public_key).map_err(|_| "unreachable: checked".to_owned())?;
                if let Some(other) = parsed.edges.iter().find(|e| e.public_key == key && e.name != name) {
                    return Err(format!("edge {:?} already has this public key; one key per edge", other.name));
                }
                let record = EdgeRecord { public_key, bridge };
                let value = serde_json::to_string(&record).map_err(|e| e.to_string())?;
                // Created only if absent: an admitted edge is re-keyed by removing it first.
                let path = edge_key(&name);
                let txn = Txn::new()
                    .when([Compare::create_revision(path.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(path.as_str(), value, None)]);
                let done = client.txn(txn).await.map_err(|e| format!("writing to etcd: {e}"))?;
                if !done.succeeded() {
                    return Err(format!("edge {name:?} is already admitted; `fleet remove-edge {name}` first"));
                }
                Ok(format!("edge {name} admitted on every gateway of the fleet"))
            }
            Self::RemoveEdge { name } => {
                let removed =
                    client.delete(edge_key(&name), None).await.map_err(|e| format!("writing to etcd: {e}"))?.deleted();
                if removed == 0 {
                    return Err(format!("edge {name:?} is not on the fleet's allowlist"));
                }
                Ok(format!("edge {name} removed from the fleet"))
            }
        }
    }
}

/// Refuses a bad name, key or bridge, saying what is expected.
fn check_edge(name: &str, public_key: &str, bridge: Option<&str>) -> Result<(), String> {
    if !is_fleet_name(name) {
        return Err(format!("{name:?} is not an edge name; expected 1-64 letters, digits, '-', '_' or '.'"));
    }
    if PublicKey::from_base64(public_key).is_err() {
        return Err(format!(
            "{public_key:?} is not a public key; expected a base64 key of 32 bytes (44 characters, as `braid-edge pubkey` prints)"
        ));
    }
    if let Some(bridge) = bridge
        && !is_interface_name(bridge)
    {
        return Err(format!("{bridge:?} is not a bridge name; expected 1-15 bytes without spaces, '/' or ':'"));
    }
    Ok(())
}

/// The fleet as a table: each gateway, its load against its capacity, its edges and where each
/// keeps its standby.
pub fn status(parsed: &Parsed, settings: &FleetSettings) -> String {
    let mut out = format!(
        "fleet {} on {}: {} gateways, {} edges admitted\n",
        settings.prefix,
        settings.endpoints.join(","),
        parsed.members.len(),
        parsed.edges.len()
    );
    let standby_of = |edge: &str| -> Vec<&str> {
        parsed.members.iter().filter(|m| m.standby_for.iter().any(|e| e == edge)).map(|m| m.name.as_str()).collect()
    };
    for member in &parsed.members {
        let MemberRecord { name, zone, address, capacity_mbps, capacity_edges, edges, .. } = member;
        let _ = writeln!(
            out,
            "{name}  zone {zone}  {address}  edges {edges}/{capacity_edges}  in {:.1} out {:.1} of {capacity_mbps} Mbit/s  cpu {:.2}{}",
            member.load_mbps_in,
            member.load_mbps_out,
            member.cpu,
            if member.draining { "  DRAINING" } else { "" }
        );
        for edge in &member.carrying {
            let standby = standby_of(edge);
            let standby = if standby.is_empty() { "none".to_owned() } else { standby.join(",") };
            let _ = writeln!(out, "  {edge} (standby {standby})");
        }
    }
    if parsed.bad > 0 {
        let _ = writeln!(out, "{} records under {} could not be read and were skipped", parsed.bad, settings.prefix);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_refused_before_etcd_is_reached() {
        let key = "RznYx4+VZSFljYPltjpxHPm793q+ZuATND43ueCelOQ=";
        assert!(check_edge("van-1", key, Some("br-ingest")).is_ok());
        assert!(check_edge("van 1", key, None).unwrap_err().contains("not an edge name"));
        assert!(check_edge("van-1", "abc", None).unwrap_err().contains("not a public key"));
        assert!(check_edge("van-1", key, Some("a/b")).unwrap_err().contains("not a bridge name"));
    }
}
