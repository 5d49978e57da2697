//! A gateway's placement of its edges: from the fleet as it last saw it, where each edge whose
//! stream it carries belongs ([`crate::fleet::placement::Rules`]), said to the edge on every
//! probe of its session ([`crate::wire::Placement`]).
//!
//! An edge is placed once, when its stream first comes to this gateway (a new session, or a
//! takeover from a gateway that died); the decision then stands, so that loads reported a
//! moment late never bounce an edge between gateways. It is made again only when the gateway or
//! the standby it names leaves the fleet. While etcd is unreachable nothing new is placed: the
//! gateway keeps the edges it has, and their standbys.
//!
//! A stream that comes from a standby session here (its gateway died, or another member sent
//! it here) stays if this member accepts it: the standby was chosen for it, and two members
//! placing at once on the same stale reports would otherwise send it on again. Planned moves
//! even out what is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::member::{FleetView, MemberRecord};
use super::placement::{Answer, Member, Rules};
use crate::keys::PublicKey;
use crate::wire::Placement;

/// One edge as the placer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeNow<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its session here.
    pub here: Here,
}

/// An edge's session with this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Here {
    /// It carries the edge's stream.
    Carried,
    /// A standby: the edge's stream goes through another gateway.
    Standby,
    /// No session.
    Absent,
}

impl EdgeNow<'_> {
    fn carried(&self) -> bool {
        self.here == Here::Carried
    }
}

/// Where an edge was placed, by member names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    gateway: String,
    standby: Option<String>,
    /// When it was made.
    since: Instant,
}

/// How long an edge sent to another member counts toward that member's load before its
/// report shows it: the edges placed in one burst (a fleet restarting) spread, rather than all
/// go where the last reports said there was room.
pub const PENDING_FOR: Duration = Duration::from_secs(10);

/// How often a member may move one step of edges to a member with more room.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(10);

/// The placements this gateway made.
#[derive(Debug, Default)]
pub struct Placer {
    decided: BTreeMap<String, Decision>,
    /// Edges sent to another member, by name: the member, and when.
    pending: BTreeMap<String, (String, Instant)>,
    /// When the next planned move may be made.
    next_rebalance: Option<Instant>,
    /// The edges with a standby session here at the last placement.
    standing_by: BTreeSet<String>,
}

impl Placer {
    /// The placement to say to each of `edges` (by position), as of `now` (`now_unix_ms` on the
    /// wall clock, against which the members' `since_unix_ms` are read). `me` is this gateway's
    /// name. An edge not carried here, or with no fleet to place it in, is told nothing.
    pub fn place(
        &mut self,
        rules: &Rules,
        me: &str,
        view: &FleetView,
        edges: &[EdgeNow<'_>],
        now: Instant,
        now_unix_ms: u64,
    ) -> Vec<Option<Placement>> {
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        let member = |name: &str| view.members.iter().find(|m| m.name == name);
        self.decided.retain(|edge, _| edges.iter().any(|e| e.carried() && e.name == edge));
        // This gateway's own edges are counted from its decisions, not from its report, which
        // may not have caught up yet.
        let mut members: Vec<Member> = view.members.iter().map(|m| to_member(m, now, now_unix_ms)).collect();
        let mut unfollowed = Vec::new();
        self.pending.retain(|edge, (to, at)| {
            let arrived = view.members.iter().any(|m| m.name == *to && m.carrying.contains(edge));
            let expired = now.saturating_duration_since(*at) >= PENDING_FOR;
            if expired && !arrived {
                unfollowed.push(edge.clone());
            }
            !expired && !arrived
        });
        for (to, _) in self.pending.values() {
            if let Some(member) = members.iter_mut().find(|m| m.name == *to) {
                member.edges += 1;
            }
        }
        // An edge sent away that is still here when its move is no longer pending did not
        // follow (it moved too often to move again, or cannot reach the member): it stays, with
        // a standby chosen again below, and the next planned move takes another edge.
        for edge in unfollowed {
            if let Some(decision) = self.decided.get_mut(&edge) {
                *decision = Decision { gateway: me.to_owned(), standby: None, since: now };
            }
        }
        let mine = |decided: &BTreeMap<String, Decision>| decided.values().filter(|d| d.gateway == me).count() as u32;
        for edge in edges.iter().filter(|e| e.carried()) {
            let kept = self.decided.get(edge.name).filter(|d| names.contains(&d.gateway.as_str()));
            let standby_gone = kept.is_some_and(|d| {
                d.standby.as_deref().is_some_and(|s| !names.contains(&s)) || (d.standby.is_none() && names.len() > 1)
            });
            if !view.etcd_reachable || (kept.is_some() && !standby_gone) {
                continue;
            }
            if standby_gone {
                // Its gateway stays; only its standby is chosen again.
                let gateway = kept.map(|d| d.gateway.clone()).unwrap_or_default();
                let standby = rules.standby(&members, &gateway, 0.0, now).map(str::to_owned);
                let since = kept.map_or(now, |d| d.since);
                self.decided.insert(edge.name.to_owned(), Decision { gateway, standby, since });
                continue;
            }
            self.decided.remove(edge.name);
            let accepts = match members.iter_mut().find(|m| m.name == me) {
                Some(own) => {
                    own.edges = mine(&self.decided);
                    rules.accepts(own, 0.0, now)
                }
                None => false,
            };
            // It came from a standby session here (a takeover, or a move another member sent).
            let took_over = self.standing_by.contains(edge.name) && accepts;
            let answer = if took_over {
                Answer::Accept { standby: rules.standby(&members, me, 0.0, now) }
            } else {
                rules.answer(me, &members, 0.0, now)
            };
            let decision = match answer {
                Answer::Accept { standby } => {
                    Decision { gateway: me.to_owned(), standby: standby.map(str::to_owned), since: now }
                }
                Answer::Redirect(p) => {
                    Decision { gateway: p.gateway.to_owned(), standby: p.standby.map(str::to_owned), since: now }
                }
                // No member takes it: this gateway carries it anyway, and says nothing.
                Answer::Overloaded => continue,
            };
            if let Some(target) = members.iter_mut().find(|m| m.name == decision.gateway && m.name != me) {
                // Counted at once, so the next edge placed sees it.
                target.edges += 1;
                self.pending.insert(edge.name.to_owned(), (decision.gateway.clone(), now));
            }
            self.decided.insert(edge.name.to_owned(), decision);
        }
        if view.etcd_reachable && self.next_rebalance.is_none_or(|at| now >= at) {
            if let Some(own) = members.iter_mut().find(|m| m.name == me) {
                own.edges = mine(&self.decided);
            }
            self.rebalance(rules, me, &members, now);
        }
        // A stream that came from a standby session here keeps the mark until it is placed:
        // etcd may be out of reach when it comes.
        let decided = &self.decided;
        self.standing_by
            .retain(|name| !decided.contains_key(name) && edges.iter().any(|e| e.carried() && e.name == name));
        self.standing_by.extend(edges.iter().filter(|e| e.here == Here::Standby).map(|e| e.name.to_owned()));
        let key = |name: &str| member(name).and_then(|m| PublicKey::from_base64(&m.public_key).ok()).map(|k| k.0);
        edges
            .iter()
            .map(|edge| {
                let decision = self.decided.get(edge.name).filter(|_| edge.carried())?;
                Some(Placement { gateway: key(&decision.gateway)?, standby: decision.standby.as_deref().and_then(key) })
            })
            .collect()
    }

    /// The fleet's next planned move, if it is from this member: the edges here longest (of
    /// equals, the last by name) go to the member the rule names, make-before-break (the edge
    /// follows its new placement), one step every [`REBALANCE_EVERY`], so that a returned member
    /// gets edges back in small steps. An edge that has just moved, and may not move again so
    /// soon ([`crate::endpoint::edge::MAX_REDIRECTS`]), is the last to be asked.
    fn rebalance(&mut self, rules: &Rules, me: &str, members: &[Member], now: Instant) {
        let Some(step) = rules.rebalance(members, now).filter(|m| m.from == me) else { return };
        let mut here: Vec<(&String, &Decision)> = self.decided.iter().filter(|(_, d)| d.gateway == me).collect();
        here.sort_by_key(|(name, d)| (d.since, std::cmp::Reverse(*name)));
        let moving: Vec<String> = here.iter().take(step.edges as usize).map(|(name, _)| (*name).clone()).collect();
        for name in moving {
            tracing::info!(edge = %name, to = step.to, "rebalancing: the edge moves to a member with more room");
            let standby = Some(me.to_owned());
            self.decided.insert(name.clone(), Decision { gateway: step.to.to_owned(), standby, since: now });
            self.pending.insert(name, (step.to.to_owned(), now));
        }
        self.next_rebalance = Some(now + REBALANCE_EVERY);
    }
}

/// A member's record as the placement rules read it.
fn to_member(record: &MemberRecord, now: Instant, now_unix_ms: u64) -> Member {
    let age = Duration::from_millis(now_unix_ms.saturating_sub(record.since_unix_ms));
    Member {
        name: record.name.clone(),
        zone: record.zone.clone(),
        capacity_mbps: record.capacity_mbps,
        capacity_edges: record.capacity_edges,
        load_mbps: record.load_mbps_in.max(record.load_mbps_out),
        edges: record.edges,
        draining: record.draining,
        since: now.checked_sub(age).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::placement::HOLD_DOWN;
    use crate::keys::PrivateKey;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn record(name: &str, seed: u8, edges: u32, capacity_edges: u32) -> MemberRecord {
        MemberRecord {
            name: name.to_owned(),
            zone: format!("z-{name}"),
            address: "192.0.2.1:4754".into(),
            public_key: PrivateKey::from_bytes([seed; 32]).public().to_base64(),
            capacity_mbps: 1000.0,
            capacity_edges,
            edges,
            carrying: Vec::new(),
            standby_for: Vec::new(),
            load_mbps_in: 0.0,
            load_mbps_out: 0.0,
            cpu: 0.0,
            draining: false,
            since_unix_ms: 0,
        }
    }

    fn key(seed: u8) -> [u8; 32] {
        PrivateKey::from_bytes([seed; 32]).public().0
    }

    fn view(members: Vec<MemberRecord>) -> FleetView {
        FleetView { name: "gw1".into(), etcd_reachable: true, members, ..FleetView::default() }
    }

    const NOW_MS: u64 = 3_600_000;

    #[test]
    fn each_edge_is_placed_once_spreading_over_the_fleet_and_the_decision_stands() {
        let rules = Rules::default();
        let now = start();
        let fleet = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 0, 10), record("gw3", 3, 0, 10)]);
        let mut placer = Placer::default();
        let edges = [
            EdgeNow { name: "a", here: Here::Carried },
            EdgeNow { name: "b", here: Here::Carried },
            EdgeNow { name: "c", here: Here::Carried },
            EdgeNow { name: "s", here: Here::Standby },
        ];
        let placed = placer.place(&rules, "gw1", &fleet, &edges, now, NOW_MS);
        let gateways: Vec<Option<[u8; 32]>> = placed.iter().map(|p| p.map(|p| p.gateway)).collect();
        assert_eq!(gateways, [Some(key(1)), Some(key(2)), Some(key(3)), None], "one each; a standby is told nothing");
        assert!(placed[0].is_some_and(|p| p.standby.is_some()), "a standby in another zone");
        // The edges sent away count toward their gateways until their reports show them: a
        // fourth edge placed a moment later, on the same stale reports, spreads on.
        let mut later = edges.to_vec();
        later.push(EdgeNow { name: "d", here: Here::Carried });
        let fourth = placer.place(&rules, "gw1", &fleet, &later, now + Duration::from_secs(1), NOW_MS + 1000);
        assert_eq!(&fourth[..4], &placed[..], "the first decisions stand");
        let gateway = fourth[4].map(|p| p.gateway);
        assert_eq!(gateway, Some(key(1)), "gw1 has 1, gw2 and gw3 1 each pending: gw1 first by name");
        // Loads change (gw2 and gw3 report the edges they got, and more): the decisions stand.
        let busier = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 9, 10), record("gw3", 3, 1, 10)]);
        assert_eq!(placer.place(&rules, "gw1", &busier, &edges, now, NOW_MS), placed);
    }

    #[test]
    fn an_edge_is_placed_again_when_its_gateway_or_standby_leaves_and_not_while_etcd_is_away() {
        let rules = Rules::default();
        let now = start();
        let mut placer = Placer::default();
        let edges = [EdgeNow { name: "a", here: Here::Carried }];
        let two = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 0, 10)]);
        let first = placer.place(&rules, "gw1", &two, &edges, now, NOW_MS)[0].unwrap();
        assert_eq!((first.gateway, first.standby), (key(1), Some(key(2))));
        // gw2 leaves; gw3 joins: the standby is chosen again.
        let mut away = view(vec![record("gw1", 1, 1, 10), record("gw3", 3, 0, 10)]);
        away.etcd_reachable = false;
        let kept = placer.place(&rules, "gw1", &away, &edges, now, NOW_MS)[0].unwrap();
        assert_eq!((kept.gateway, kept.standby), (key(1), None), "kept, less the standby that left");
        away.etcd_reachable = true;
        let again = placer.place(&rules, "gw1", &away, &edges, now, NOW_MS)[0].unwrap();
        assert_eq!((again.gateway, again.standby), (key(1), Some(key(3))));
    }

    #[test]
    fn a_stream_that_comes_from_a_standby_session_stays_where_a_new_one_would_be_sent_on() {
        let rules = Rules::default();
        let now = start();
        let mut placer = Placer::default();
        // gw2 stands by for "a" while gw1 carries it; gw1 dies (its report still shows), and
        // "a" takes over here. On the reports, gw1 (first by name) has as much room as gw2.
        let fleet = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 0, 10)]);
        let standby = [EdgeNow { name: "a", here: Here::Standby }, EdgeNow { name: "b", here: Here::Absent }];
        assert_eq!(
            placer.place(&rules, "gw2", &fleet, &standby, now, NOW_MS),
            [None, None],
            "standbys are told nothing"
        );
        let carried = [EdgeNow { name: "a", here: Here::Carried }, EdgeNow { name: "b", here: Here::Carried }];
        let placed = placer.place(&rules, "gw2", &fleet, &carried, now + Duration::from_secs(1), NOW_MS + 1000);
        let a = placed[0].expect("the stream that came from a standby is placed");
        assert_eq!((a.gateway, a.standby), (key(2), Some(key(1))), "kept where it came, with a standby");
        assert_eq!(placed[1].map(|p| p.gateway), Some(key(1)), "a new stream goes where the rule puts it");
        // A member that does not accept it (at capacity) sends it on.
        let mut placer = Placer::default();
        let full = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 0, 1)]);
        placer.place(&rules, "gw2", &full, &standby[..1], now, NOW_MS);
        let placed = placer.place(&rules, "gw2", &full, &carried[..1], now, NOW_MS)[0];
        assert_eq!(placed.map(|p| p.gateway), Some(key(1)), "gw2 cannot take it: sent on");
        // A takeover while etcd is out of reach is placed once it is back, as one.
        let mut placer = Placer::default();
        let mut offline = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 0, 10)]);
        offline.etcd_reachable = false;
        placer.place(&rules, "gw2", &fleet, &standby[..1], now, NOW_MS);
        placer.place(&rules, "gw2", &offline, &carried[..1], now + Duration::from_secs(1), NOW_MS + 1000);
        placer.place(&rules, "gw2", &offline, &carried[..1], now + Duration::from_secs(2), NOW_MS + 2000);
        let placed = placer.place(&rules, "gw2", &fleet, &carried[..1], now + Duration::from_secs(3), NOW_MS + 3000)[0];
        assert_eq!(placed.map(|p| p.gateway), Some(key(2)), "etcd back: kept where it came");
    }

    #[test]
    fn a_planned_move_takes_the_edge_here_longest_and_one_that_does_not_follow_stays() {
        let rules = Rules::default();
        let now = start();
        let mut placer = Placer::default();
        let carried = |names: &[&'static str]| -> Vec<EdgeNow<'static>> {
            names.iter().map(|&name| EdgeNow { name, here: Here::Carried }).collect()
        };
        let mut joined = record("gw2", 2, 0, 10);
        joined.since_unix_ms = NOW_MS;
        let fleet = view(vec![record("gw1", 1, 0, 10), joined]);
        // gw2 is held down: gw1 keeps "a", then "b" and "z" a second later.
        placer.place(&rules, "gw1", &fleet, &carried(&["a"]), now, NOW_MS);
        let all = carried(&["a", "b", "z"]);
        placer.place(&rules, "gw1", &fleet, &all, now + Duration::from_secs(1), NOW_MS + 1000);
        let on = |placed: &[Option<Placement>]| -> Vec<u8> {
            placed.iter().map(|p| if p.is_some_and(|p| p.gateway == key(2)) { 2 } else { 1 }).collect()
        };
        let later = now + HOLD_DOWN + Duration::from_secs(1);
        let later_ms = NOW_MS + HOLD_DOWN.as_millis() as u64 + 1000;
        let placed = placer.place(&rules, "gw1", &fleet, &all, later, later_ms);
        assert_eq!(on(&placed), [2, 1, 1], "the edge here longest moves first, though first by name");
        // "a" does not follow (it moved too often): once its move is no longer pending it stays,
        // and the next move takes another edge.
        let next = later + PENDING_FOR.max(REBALANCE_EVERY);
        let placed = placer.place(&rules, "gw1", &fleet, &all, next, later_ms + 10_000);
        assert_eq!(on(&placed), [1, 1, 2], "a stays; of b and z, here as long, the last by name moves");
        assert!(placed[0].is_some_and(|p| p.standby == Some(key(2))), "a keeps a standby");
    }

    #[test]
    fn a_gateway_at_capacity_redirects_and_a_new_member_waits_out_the_hold_down() {
        let rules = Rules::default();
        let now = start();
        let mut placer = Placer::default();
        let edges = [EdgeNow { name: "a", here: Here::Carried }];
        // gw1 takes one edge (a second would be past the threshold); gw2 joined a minute ago.
        let mut fresh = record("gw2", 2, 0, 10);
        fresh.since_unix_ms = NOW_MS - 1000;
        let fleet = view(vec![record("gw1", 1, 1, 1), fresh.clone()]);
        assert_eq!(placer.place(&rules, "gw1", &fleet, &edges, now, NOW_MS)[0], None, "nobody accepts: say nothing");
        fresh.since_unix_ms = 0;
        let fleet = view(vec![record("gw1", 1, 1, 1), fresh]);
        let placed = placer.place(&rules, "gw1", &fleet, &edges, now, NOW_MS)[0].unwrap();
        assert_eq!(placed.gateway, key(2), "redirected to the member with room");
    }

    #[test]
    fn a_returned_member_gets_edges_back_after_the_hold_down_one_step_at_a_time() {
        let rules = Rules::default();
        let now = start();
        let mut placer = Placer::default();
        let edges: Vec<EdgeNow<'_>> =
            ["a", "b", "c", "d"].iter().map(|name| EdgeNow { name, here: Here::Carried }).collect();
        let mut back = record("gw3", 3, 0, 10);
        back.since_unix_ms = NOW_MS;
        let fleet = view(vec![record("gw1", 1, 0, 10), record("gw2", 2, 3, 10), back.clone()]);
        let on = |placed: &[Option<Placement>], seed: u8| {
            placed.iter().filter(|p| p.is_some_and(|p| p.gateway == key(seed))).count()
        };
        let placed = placer.place(&rules, "gw1", &fleet, &edges, now, NOW_MS);
        assert_eq!(on(&placed, 1), 4, "gw3 is held down: gw1 keeps its four");
        let later = now + HOLD_DOWN + Duration::from_secs(1);
        let later_ms = NOW_MS + HOLD_DOWN.as_millis() as u64 + 1000;
        let placed = placer.place(&rules, "gw1", &fleet, &edges, later, later_ms);
        assert_eq!((on(&placed, 1), on(&placed, 3)), (3, 1), "one step to the returned member");
        let placed = placer.place(&rules, "gw1", &fleet, &edges, later + Duration::from_secs(1), later_ms + 1000);
        assert_eq!(on(&placed, 3), 1, "never all at once");
        back.edges = 1;
        back.carrying = vec!["d".into()];
        let fleet = view(vec![record("gw1", 1, 3, 10), record("gw2", 2, 3, 10), back]);
        let placed = placer.place(&rules, "gw1", &fleet, &edges, later + REBALANCE_EVERY, later_ms + 10_000);
        assert_eq!((on(&placed, 1), on(&placed, 3)), (2, 2), "the next step, a step's interval later");
    }
}
