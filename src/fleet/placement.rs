//! Where a fleet puts an edge: the placement rule, the answer a gateway gives a handshake, and
//! the hold-down and small steps by which a returning gateway gets edges back. Pure functions of
//! the members' reports and the time, so that they are tested in virtual time without etcd.
//!
//! A member's *score* for one more edge is the larger of two shares of its capacity: its load
//! plus the edge's expected bitrate over its Mbit/s, and its edges plus one over its edge count.
//! A new edge goes to the member with the lowest score among those that accept it (not
//! draining, a member for the hold-down, under the threshold with it); its standby is the best
//! other such member, in another zone when one exists.

use std::time::{Duration, Instant};

/// The share of its capacity past which a member takes no more edges.
pub const PLACEMENT_THRESHOLD: f64 = 0.9;
/// How long a member must have been in the fleet (its lease unbroken) before it takes edges:
/// a gateway that restarts or comes back is not handed a rush of edges at once.
pub const HOLD_DOWN: Duration = Duration::from_secs(60);
/// Edges one planned move takes from a member to a returned one.
pub const REBALANCE_STEP: u32 = 1;

/// What a member of the fleet reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its name, unique in the fleet.
    pub name: String,
    /// Its zone label (a datacenter, a region).
    pub zone: String,
    /// The Mbit/s it is configured to carry.
    pub capacity_mbps: f64,
    /// The edges it is configured to carry.
    pub capacity_edges: u32,
    /// What its edges carry now, Mbit/s (the busier direction).
    pub load_mbps: f64,
    /// Its edges with a live session now.
    pub edges: u32,
    /// It is being drained: it takes no edges.
    pub draining: bool,
    /// Since when it has been a member without a break.
    pub since: Instant,
}

/// Where an edge goes: the gateway that carries its stream and the standby it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The gateway.
    pub gateway: &'a str,
    /// Its standby, if another member accepts the edge.
    pub standby: Option<&'a str>,
}

/// What a gateway answers an edge's handshake with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// It carries the edge, which keeps `standby`.
    Accept {
        /// The standby to keep.
        standby: Option<&'a str>,
    },
    /// The edge should go to another gateway.
    Redirect(Placement<'a>),
    /// No member accepts the edge: the gateway carries it anyway (a full fleet still serves
    /// its edges, and says so).
    Overloaded,
}

/// A planned move: `edges` edges drained from one member toward another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move<'a> {
    /// The member the edges leave.
    pub from: &'a str,
    /// The member they go to.
    pub to: &'a str,
    /// How many.
    pub edges: u32,
}

/// The rules, with their settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// [`PLACEMENT_THRESHOLD`].
    pub threshold: f64,
    /// [`HOLD_DOWN`].
    pub hold_down: Duration,
    /// [`REBALANCE_STEP`].
    pub step: u32,
}

impl Default for Rules {
    fn default() -> Self {
        Self { threshold: PLACEMENT_THRESHOLD, hold_down: HOLD_DOWN, step: REBALANCE_STEP }
    }
}

impl Member {
    /// The share of its capacity it would be at with one more edge of `expected_mbps`.
    pub fn score(&self, expected_mbps: f64) -> f64 {
        let mbps = (self.load_mbps + expected_mbps) / self.capacity_mbps.max(f64::MIN_POSITIVE);
        let edges = f64::from(self.edges + 1) / f64::from(self.capacity_edges.max(1));
        mbps.max(edges)
    }

    /// The share of its capacity it is at now.
    fn share(&self) -> f64 {
        let mbps = self.load_mbps / self.capacity_mbps.max(f64::MIN_POSITIVE);
        mbps.max(f64::from(self.edges) / f64::from(self.capacity_edges.max(1)))
    }
}

impl Rules {
    /// Whether `member` takes a new edge of `expected_mbps` at `now`.
    pub fn accepts(&self, member: &Member, expected_mbps: f64, now: Instant) -> bool {
        !member.draining && self.held_down(member, now) && member.score(expected_mbps) <= self.threshold
    }

    /// Whether `member` has been in the fleet for the hold-down.
    pub fn held_down(&self, member: &Member, now: Instant) -> bool {
        now.saturating_duration_since(member.since) >= self.hold_down
    }

    /// Where a new edge of `expected_mbps` goes, if any member accepts it.
    pub fn place<'a>(&self, members: &'a [Member], expected_mbps: f64, now: Instant) -> Option<Placement<'a>> {
        let gateway = self.best(members, expected_mbps, now, None, None)?;
        Some(Placement { gateway: &gateway.name, standby: self.standby(members, &gateway.name, expected_mbps, now) })
    }

    /// The standby for an edge carried by `gateway`: the best other member that accepts it, in
    /// another zone when one does.
    pub fn standby<'a>(
        &self,
        members: &'a [Member],
        gateway: &str,
        expected_mbps: f64,
        now: Instant,
    ) -> Option<&'a str> {
        let zone = members.iter().find(|m| m.name == gateway).map(|m| m.zone.as_str());
        self.best(members, expected_mbps, now, Some(gateway), zone)
            .or_else(|| self.best(members, expected_mbps, now, Some(gateway), None))
            .map(|m| m.name.as_str())
    }

    /// The member with the lowest score that accepts an edge of `expected_mbps`, other than
    /// `skip` and outside `zone`.
    fn best<'a>(
        &self,
        members: &'a [Member],
        expected_mbps: f64,
        now: Instant,
        skip: Option<&str>,
        zone: Option<&str>,
    ) -> Option<&'a Member> {
        members
            .iter()
            .filter(|m| skip.is_none_or(|s| s != m.name))
            .filter(|m| zone.is_none_or(|z| m.zone != z))
            .filter(|m| self.accepts(m, expected_mbps, now))
            .min_by(|a, b| a.score(expected_mbps).total_cmp(&b.score(expected_mbps)).then(a.name.cmp(&b.name)))
    }

    /// What the member called `me` answers a handshake from an edge of `expected_mbps`: it
    /// keeps the edge if it is where the rule puts it, and redirects it otherwise.
    pub fn answer<'a>(&self, me: &str, members: &'a [Member], expected_mbps: f64, now: Instant) -> Answer<'a> {
        match self.place(members, expected_mbps, now) {
            None => Answer::Overloaded,
            Some(p) if p.gateway == me => Answer::Accept { standby: p.standby },
            Some(p) => Answer::Redirect(p),
        }
    }

    /// The next planned move, if the fleet is uneven: from the member at the highest share of
    /// its capacity to the member at the lowest that accepts edges (back for the hold-down, not
    /// draining), at most [`Rules::step`] edges, and only while the two are more than one edge
    /// apart. Repeated after each move, this brings a returned member its share in small steps.
    pub fn rebalance<'a>(&self, members: &'a [Member], now: Instant) -> Option<Move<'a>> {
        let by_share = |a: &&Member, b: &&Member| a.share().total_cmp(&b.share()).then(a.name.cmp(&b.name));
        let to = members.iter().filter(|m| self.accepts(m, 0.0, now)).min_by(by_share)?;
        // The busiest; of equals, the first by name.
        let from = members
            .iter()
            .filter(|m| m.name != to.name && m.edges > 0)
            .max_by(|a, b| a.share().total_cmp(&b.share()).then(b.name.cmp(&a.name)))?;
        if from.edges <= to.edges + 1 || from.share() <= to.share() {
            return None;
        }
        let edges = self.step.min((from.edges - to.edges) / 2).max(1);
        Some(Move { from: &from.name, to: &to.name, edges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn member(name: &str, zone: &str, since: Instant) -> Member {
        Member {
            name: name.to_owned(),
            zone: zone.to_owned(),
            capacity_mbps: 100.0,
            capacity_edges: 10,
            load_mbps: 0.0,
            edges: 0,
            draining: false,
            since,
        }
    }

    /// Three members in three zones, each in the fleet for the hold-down by `now`.
    fn fleet(now: Instant) -> Vec<Member> {
        let since = now - HOLD_DOWN;
        vec![member("a", "z1", since), member("b", "z2", since), member("c", "z3", since)]
    }

    /// Places `n` edges of `mbps` one after the other, each member's load following.
    fn place_all(rules: &Rules, members: &mut [Member], n: usize, mbps: f64, now: Instant) -> Vec<Option<String>> {
        (0..n)
            .map(|_| {
                let name = rules.place(members, mbps, now).map(|p| p.gateway.to_owned());
                if let Some(m) = members.iter_mut().find(|m| Some(&m.name) == name.as_ref()) {
                    m.edges += 1;
                    m.load_mbps += mbps;
                }
                name
            })
            .collect()
    }

    #[test]
    fn six_edges_over_three_equal_gateways_land_two_two_two_with_standbys_in_other_zones() {
        let now = start() + HOLD_DOWN;
        let rules = Rules::default();
        let mut members = fleet(now);
        place_all(&rules, &mut members, 6, 2.0, now);
        let edges: Vec<u32> = members.iter().map(|m| m.edges).collect();
        assert_eq!(edges, [2, 2, 2]);
        let p = rules.place(&members, 2.0, now).unwrap();
        assert_ne!(Some(p.gateway), p.standby);
        let zone = |name: &str| members.iter().find(|m| m.name == name).unwrap().zone.clone();
        assert_ne!(zone(p.gateway), zone(p.standby.unwrap()), "the standby is in another zone");
    }

    #[test]
    fn the_standby_shares_the_zone_only_when_no_other_zone_accepts() {
        let now = start() + HOLD_DOWN;
        let rules = Rules::default();
        let mut members = fleet(now);
        members[1].zone = "z1".into();
        members[2].zone = "z1".into();
        let p = rules.place(&members, 2.0, now).unwrap();
        assert!(p.standby.is_some(), "a standby in the same zone beats none");
        members.truncate(1);
        assert_eq!(rules.place(&members, 2.0, now).unwrap().standby, None);
    }

    #[test]
    fn a_gateway_at_its_threshold_or_draining_is_passed_over_and_redirects() {
        let now = start() + HOLD_DOWN;
        let rules = Rules::default();
        let mut members = fleet(now);
        members[0].load_mbps = 89.0; // 89 + 2 > 90
        members[1].draining = true;
        assert_eq!(rules.place(&members, 2.0, now).unwrap().gateway, "c");
        assert_eq!(rules.answer("a", &members, 2.0, now), Answer::Redirect(Placement { gateway: "c", standby: None }));
        assert_eq!(rules.answer("c", &members, 2.0, now), Answer::Accept { standby: None });
        // Edges count as much as Mbit/s: nine of ten edges is at the threshold.
        members[2].edges = 9;
        assert_eq!(rules.place(&members, 2.0, now), None);
        assert_eq!(rules.answer("c", &members, 2.0, now), Answer::Overloaded);
    }

    #[test]
    fn a_returned_gateway_gets_nothing_before_the_hold_down_then_edges_back_one_at_a_time() {
        let t0 = start() + HOLD_DOWN;
        let rules = Rules::default();
        let mut members = fleet(t0);
        place_all(&rules, &mut members, 6, 2.0, t0);
        // c dies: its two edges take over on their standbys, one each on a and b.
        let mut members: Vec<Member> = members.into_iter().filter(|m| m.name != "c").collect();
        for m in &mut members {
            m.edges = 3;
            m.load_mbps = 6.0;
        }
        // c comes back at t1: within the hold-down it takes no new edge and none moves to it.
        let t1 = t0 + Duration::from_secs(30);
        members.push(member("c", "z3", t1));
        let soon = t1 + HOLD_DOWN - Duration::from_secs(1);
        assert_ne!(rules.place(&members, 2.0, soon).unwrap().gateway, "c");
        assert_eq!(rules.rebalance(&members, soon), None, "nothing moves within the hold-down");
        // After it, one edge at a time until the fleet is even, then nothing.
        let later = t1 + HOLD_DOWN;
        let mut moves = Vec::new();
        for _ in 0..10 {
            let Some(m) = rules.rebalance(&members, later) else { break };
            let (from, to, n) = (m.from.to_owned(), m.to.to_owned(), m.edges);
            for member in &mut members {
                if member.name == from {
                    member.edges -= n;
                    member.load_mbps -= 2.0 * f64::from(n);
                } else if member.name == to {
                    member.edges += n;
                    member.load_mbps += 2.0 * f64::from(n);
                }
            }
            moves.push((from, to, n));
        }
        assert_eq!(moves, [("a".into(), "c".into(), 1), ("b".into(), "c".into(), 1)]);
        let edges: Vec<u32> = members.iter().map(|m| m.edges).collect();
        assert_eq!(edges, [2, 2, 2]);
    }

    #[test]
    fn an_empty_fleet_or_one_still_held_down_places_nothing() {
        let now = start();
        let rules = Rules::default();
        assert_eq!(rules.place(&[], 2.0, now), None);
        assert_eq!(rules.place(&[member("a", "z1", now)], 2.0, now), None);
        assert_eq!(rules.rebalance(&[member("a", "z1", now)], now + HOLD_DOWN), None);
    }
}
