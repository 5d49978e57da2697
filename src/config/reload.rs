//! What a reload of an edge's config changes, and how each change is applied: uplinks added,
//! removed or re-prioritised and the mode live, on the running session; the gateway, the keys,
//! the cipher and the latency budget with a new session; the rest at the next restart.

use crate::LinkId;
use crate::scheduler::Mode;
use crate::session::LinkConfig;

use super::{EdgeSettings, UplinkSettings};

/// How to go from the running config to a new one.
#[derive(Debug, Clone)]
pub struct EdgeReload {
    /// The new config, each uplink under the link id it runs under: a kept uplink (same name)
    /// keeps its id, a new one takes a free id (one no running uplink had, if any is left).
    pub settings: EdgeSettings,
    /// Links to take out: uplinks gone, or changed where only a new link applies the change
    /// (interface, source address, rate).
    pub removed: Vec<LinkId>,
    /// Links to add (new or re-created uplinks), as in `settings`.
    pub added: Vec<(UplinkSettings, LinkConfig)>,
    /// Kept links whose priority changed, with the new one.
    pub priorities: Vec<(LinkId, u8)>,
    /// The new mode, if it changed.
    pub mode: Option<Mode>,
    /// The changed keys that need a new session (a new handshake; the stream glitches for about
    /// a round trip).
    pub new_session: Vec<&'static str>,
    /// The changed keys that only a restart applies.
    pub restart_only: Vec<&'static str>,
}

impl EdgeSettings {
    /// The reload from `self` (running, its uplinks under their running ids) to `new` (as
    /// loaded: ids by position).
    pub fn reload_to(&self, new: &Self) -> EdgeReload {
        let (old, next) = (&self.edge, &new.edge);
        let (s, n) = (&old.session, &next.session);
        let changed = |keys: &[(&'static str, bool)]| keys.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
        let new_session = changed(&[
            ("private_key_file", old.private_key != next.private_key),
            ("gateway.address", s.links.first().map(|l| l.remote) != n.links.first().map(|l| l.remote)),
            ("gateway.public_key", old.gateway_key != next.gateway_key),
            ("gateway.psk_file", old.psk != next.psk),
            ("gateways", old.standbys != next.standbys),
            ("cipher", old.cipher != next.cipher),
            ("latency_budget_ms", s.latency_budget != n.latency_budget),
        ]);
        let restart_only = changed(&[
            ("tap", self.tap != new.tap),
            ("gateway_return_after_s", old.return_after != next.return_after),
            ("status", self.status != new.status),
            ("path_mtu", s.max_datagram != n.max_datagram),
            ("retransmit", s.retransmit != n.retransmit),
            ("mss_clamp", s.clamp_mss != n.clamp_mss),
            ("fec", s.fec != n.fec),
            ("advanced", s.tuning != n.tuning),
        ]);

        let running: Vec<(&UplinkSettings, &LinkConfig)> = self.uplinks.iter().zip(&s.links).collect();
        let mut taken: Vec<LinkId> = Vec::new();
        let mut ids: Vec<Option<LinkId>> = new
            .uplinks
            .iter()
            .map(|u| {
                let id = running.iter().find(|(r, _)| r.name == u.name).map(|(r, _)| r.id);
                taken.extend(id);
                id
            })
            .collect();
        // New uplinks: ids no running uplink had first, then those the removed ones freed.
        let free = (0..crate::MAX_LINKS as u8).map(LinkId::new);
        let mut fresh = free.clone().filter(|id| !running.iter().any(|(r, _)| r.id == *id));
        let mut freed = free.filter(|id| running.iter().any(|(r, _)| r.id == *id) && !taken.contains(id));
        for id in ids.iter_mut().filter(|id| id.is_none()) {
            *id = fresh.next().or_else(|| freed.next());
        }

        let mut settings = new.clone();
        let (mut removed, mut added, mut priorities) = (Vec::new(), Vec::new(), Vec::new());
        settings.uplinks.clear();
        settings.edge.session.links.clear();
        for ((uplink, link), id) in new.uplinks.iter().zip(&n.links).zip(ids) {
            let Some(id) = id else { continue };
            let uplink = UplinkSettings { id, ..uplink.clone() };
            let link = LinkConfig { id, ..*link };
            match running.iter().find(|(r, _)| r.name == uplink.name) {
                Some((r, l))
                    if r.interface == uplink.interface && r.source == uplink.source && l.rate_bps == link.rate_bps =>
                {
                    if l.priority != link.priority {
                        priorities.push((id, link.priority));
                    }
                }
                Some(_) => {
                    removed.push(id);
                    added.push((uplink.clone(), link));
                }
                None => added.push((uplink.clone(), link)),
            }
            settings.uplinks.push(uplink);
            settings.edge.session.links.push(link);
        }
        removed
            .extend(running.iter().filter(|(r, _)| !new.uplinks.iter().any(|u| u.name == r.name)).map(|(r, _)| r.id));
        EdgeReload {
            settings,
            removed,
            added,
            priorities,
            mode: (s.mode != n.mode).then_some(n.mode),
            new_session,
            restart_only,
        }
    }
}
