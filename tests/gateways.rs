//! Gateway redundancy, simulated: an edge with a standby gateway keeps a session with it (over
//! paths of its own on the same uplinks) and moves the stream there when the active gateway
//! stops answering on every uplink. Seeded, without root.

// A failed simulation names what it found.
#![allow(clippy::panic, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use braid::crypto::Cipher;
use braid::endpoint::edge::{Edge, EdgeConfig, GatewayPeer};
use braid::endpoint::gateway::{Gateway, PeerId};
use braid::keys::PrivateKey;
use braid::monitor::PROBE_INTERVAL;
use braid::session::{DropReason, LinkConfig, SessionConfig, SetupError};
use braid::{LinkId, LinkState, Mode};
use braid_lab::sim::{Action, Profile, Security, Sim, ms};

type PairSim = Sim<Edge, Gateway>;

fn field_links() -> [Profile; 3] {
    [Profile::dsl(), Profile::lte_good(), Profile::lte_bad()]
}

fn with_standby(seed: u64, mode: Mode) -> PairSim {
    let config = SessionConfig { mode, ..SessionConfig::default() };
    Sim::secure_with_standby(seed, config, &field_links(), &Security::new())
}

/// `auto` with a standby probed `factor` times less often than the gateway carrying the stream.
fn standby_probed(seed: u64, factor: u32) -> PairSim {
    let mut config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
    config.tuning.monitor.standby_probe_factor = factor;
    Sim::secure_with_standby(seed, config, &field_links(), &Security::new())
}

fn standby_addr(sim: &PairSim) -> SocketAddr {
    sim.standby.as_ref().unwrap().addr
}

/// When the standby delivered its first frame to the ingest.
fn standby_first_delivery(sim: &PairSim) -> Option<Instant> {
    sim.standby.as_ref().unwrap().delivered_at.first().copied()
}

#[test]
fn a_standby_takes_over_a_dead_gateways_stream_within_300_ms_losing_nothing() {
    for seed in [21, 22, 23] {
        let mut sim = with_standby(seed, Mode::Auto);
        sim.stream(1.0, 7.0, 6.0, 1000);
        sim.schedule(4.0, Action::GatewayCut);
        sim.run_until(3.9);
        assert_eq!(sim.edge.active_gateway(), sim.gateway_addr, "seed {seed}: the first gateway carries the stream");
        assert!(standby_first_delivery(&sim).is_none(), "seed {seed}: the standby delivered before it was needed");
        let standby_ready = sim.edge.gateways().nth(1).and_then(|(_, s)| s).is_some_and(|s| s.any_link_usable());
        assert!(standby_ready, "seed {seed}: the standby has no session answering before the cut");
        sim.run_until(8.0);
        let r = sim.report();
        let stats = sim.edge.stats();
        let stall = sim.max_gap_between(3.5, 7.0);
        let moved_at = standby_first_delivery(&sim).map(|t| ms(t - sim.at(4.0)));
        println!(
            "RESULT scenario=sim-gateway-failover seed={seed} stall_ms={:.1} {r} moved={} takeover_ms={moved_at:?}",
            ms(stall),
            stats.frames_moved,
        );
        assert_eq!(stats.gateway_takeovers, 1, "seed {seed}: one takeover");
        assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "seed {seed}: the standby carries the stream");
        assert_eq!(r.lost, 0, "seed {seed}: what the dead gateway had not delivered went to the standby: {r}");
        assert!(stall <= Duration::from_millis(300), "seed {seed}: the stream stalled {stall:?}");
        assert!(r.duplicated <= stats.frames_moved, "seed {seed}: more duplicates than frames moved: {r}");
    }
}

/// The probes the edge sent to the `gateway`th gateway and the packets it received from it, on
/// all links, so far.
fn probe_traffic(sim: &PairSim, gateway: usize) -> (u64, u64) {
    let Some((_, Some(session))) = sim.edge.gateways().nth(gateway) else { return (0, 0) };
    session
        .links()
        .filter_map(|l| session.link_stats(l))
        .fold((0, 0), |(p, r), s| (p + s.probes_sent, r + s.rx_packets))
}

#[test]
fn a_standby_is_probed_at_the_standby_rate_both_ways_until_it_carries_the_stream() {
    let mut sim = standby_probed(26, 5);
    sim.stream(1.0, 9.0, 2.0, 1000);
    sim.schedule(6.0, Action::GatewayCut);
    sim.run_until(3.0);
    let (active_before, standby_before) = (probe_traffic(&sim, 0), probe_traffic(&sim, 1));
    sim.run_until(5.0);
    let (active_after, standby_after) = (probe_traffic(&sim, 0), probe_traffic(&sim, 1));
    let active_probes = active_after.0 - active_before.0;
    let (standby_probes, standby_rx) = (standby_after.0 - standby_before.0, standby_after.1 - standby_before.1);
    // 2 s on 3 links: at most one probe per link each 250 ms (jitter only lengthens an
    // interval), and from the standby gateway its own probes and the replies to ours.
    let slow = 2 * 3 * 1000 / (50 * 5);
    println!("standby: {standby_probes} probes sent, {standby_rx} packets back; active: {active_probes} probes sent");
    assert!(standby_probes <= slow + 3, "the standby was probed {standby_probes} times in 2 s, more than {slow}");
    assert!(standby_probes >= slow / 2, "the standby was probed only {standby_probes} times in 2 s");
    assert!(standby_rx <= 2 * slow + 6, "the standby gateway sent {standby_rx} packets in 2 s");
    assert!(active_probes >= 2 * slow, "the active gateway was probed only {active_probes} times in 2 s");
    // Once it carries the stream, the standby is probed at the full rate.
    sim.run_until(7.0);
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the standby took over");
    let before = probe_traffic(&sim, 1).0;
    sim.run_until(8.0);
    let carrying = probe_traffic(&sim, 1).0 - before;
    assert!(carrying >= slow, "the gateway that carries the stream was probed only {carrying} times in 1 s");
}

/// The links of the standby gateway's session, each with whether it is up or degraded.
fn standby_links_usable(sim: &PairSim) -> Vec<(LinkId, bool)> {
    let Some(session) = sim.standby.as_ref().and_then(|s| s.gateway.session(PeerId(0))) else { return Vec::new() };
    session.links().map(|l| (l, session.link_state(l).is_some_and(LinkState::is_usable))).collect()
}

#[test]
fn a_standby_gateways_links_stay_up_while_probed_at_the_standby_pace() {
    let mut sim = standby_probed(28, 5);
    sim.stream(1.0, 6.0, 2.0, 1000);
    // Sampled every 100 ms from 2 s to 6 s: the standby gateway's links, probed five times less
    // often than the carrying gateway's, never go down.
    let mut flaps = 0;
    let mut was_usable: Vec<(LinkId, bool)> = Vec::new();
    for step in 0..40 {
        sim.run_until(2.0 + f64::from(step) * 0.1);
        let now_usable = standby_links_usable(&sim);
        flaps += now_usable.iter().filter(|(l, up)| !up && was_usable.iter().any(|(w, was)| w == l && *was)).count();
        was_usable = now_usable;
    }
    println!("standby gateway's links at 6 s: {was_usable:?}, went down {flaps} times");
    assert_eq!(was_usable.len(), 3, "the standby gateway learned {was_usable:?}");
    assert!(was_usable.iter().all(|(_, up)| *up), "a standby gateway's link is not up: {was_usable:?}");
    assert_eq!(flaps, 0, "the standby gateway's links went down {flaps} times with nothing wrong");
}

#[test]
fn a_standby_gateway_sends_the_rig_no_lan_frames_until_it_carries_the_stream() {
    let mut sim = with_standby(27, Mode::Auto);
    sim.stream(1.0, 7.0, 2.0, 1000);
    sim.schedule(4.0, Action::GatewayCut);
    sim.run_until(3.0);
    // A broadcast from the ingest LAN, as both gateways' bridges hand it to the rig's TAP.
    let mut broadcast = vec![0xff; 6];
    broadcast.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x06]);
    broadcast.resize(60, 0);
    let now = sim.now;
    let standby = &mut sim.standby.as_mut().unwrap().gateway;
    assert_eq!(standby.handle_frame(now, PeerId(0), &broadcast), Err(DropReason::Standby));
    let refused = standby.session(PeerId(0)).unwrap().stats().drops.get(DropReason::Standby);
    assert_eq!(refused, 1, "the refusal is counted");
    assert_eq!(sim.gateway.handle_frame(now, PeerId(0), &broadcast), Ok(()), "the active gateway forwards it");
    sim.run_until(5.0);
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the standby took over");
    let now = sim.now;
    let standby = &mut sim.standby.as_mut().unwrap().gateway;
    assert_eq!(standby.handle_frame(now, PeerId(0), &broadcast), Ok(()), "the new active gateway forwards it");
}

#[test]
fn a_gateway_cut_off_and_back_gets_nothing_back_and_the_ingest_hears_one_gateway_at_a_time() {
    let mut sim = with_standby(24, Mode::Redundant);
    sim.stream(1.0, 9.0, 4.0, 1000);
    sim.schedule(3.0, Action::GatewayCut);
    sim.schedule(4.0, Action::GatewayRestore);
    sim.run_until(10.0);
    let r = sim.report();
    let stats = sim.edge.stats();
    println!("RESULT scenario=sim-gateway-partition {r} takeovers={}", stats.gateway_takeovers);
    assert_eq!(stats.gateway_takeovers, 1, "the stream moved once, and not back");
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "no surprise switch back to the first gateway");
    assert_eq!(r.lost, 0, "{r}");
    let first_standby = standby_first_delivery(&sim).expect("the standby carried the stream");
    let late = sim.gateway_delivered_at.iter().filter(|&&t| t > first_standby + Duration::from_millis(500)).count();
    assert_eq!(late, 0, "the first gateway delivered {late} frames while the standby carried the stream");
    let back = sim.edge.gateways().next().and_then(|(_, s)| s).is_some_and(|s| s.any_link_usable());
    assert!(back, "the first gateway answers again, as a standby");
}

#[test]
fn a_recovered_first_gateway_gets_the_stream_back_only_after_the_hold_down_losing_and_repeating_nothing() {
    let security = Security { return_after: Some(Duration::from_secs(3)), ..Security::new() };
    let config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
    let mut sim = Sim::secure_with_standby(28, config, &field_links(), &security);
    sim.stream(1.0, 20.0, 6.0, 1000);
    // Cut off, back, and cut off again before the hold-down passed (a flapping gateway): the
    // hold-down starts again when it is back for good, after 8 s.
    sim.schedule(3.0, Action::GatewayCut);
    sim.schedule(4.0, Action::GatewayRestore);
    sim.schedule(7.0, Action::GatewayCut);
    sim.schedule(8.0, Action::GatewayRestore);
    let first_answers =
        |sim: &PairSim| sim.edge.gateways().next().and_then(|(_, s)| s).is_some_and(|s| s.any_link_usable());
    // When the first gateway answers again for good (its links probed back up, at the standby's
    // pace, past the penalty its flapping earned).
    let mut answered = None;
    let mut answered_between_cuts = false;
    for step in 0..300 {
        sim.run_until(4.0 + 0.05 * f64::from(step));
        answered_between_cuts |= sim.now < sim.at(7.0) && first_answers(&sim);
        if first_answers(&sim) {
            answered = answered.or(Some(sim.now));
        } else {
            answered = None;
        }
        if answered.is_some_and(|t| sim.now < t + Duration::from_millis(2900)) {
            assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the stream went back before the hold-down");
        }
    }
    assert!(answered_between_cuts, "the first gateway did not answer between the cuts: no flap was tested");
    let answered = answered.expect("the first gateway answers again");
    sim.run_until(21.0);
    let r = sim.report();
    let stats = sim.edge.stats();
    let returned = sim.gateway_delivered_at.iter().copied().find(|&t| t > sim.at(8.0));
    let returned_s = returned.map(|t| (t - sim.at(0.0)).as_secs_f64());
    // Frames sent from 1 s before the return on: the move was make-before-break.
    let around = returned.map_or(sim.now, |t| t - Duration::from_secs(1));
    let sink = &sim.sink;
    let dup_after = sink.sent_at.iter().zip(&sink.delivered).filter(|&(&at, &n)| at >= around && n > 1).count();
    let stall = sim.max_gap_between(returned_s.unwrap_or(1.0) - 1.0, returned_s.unwrap_or(1.0) + 1.0);
    println!(
        "RESULT scenario=sim-gateway-return {r} returned_at_s={returned_s:?} stall_ms={:.1} dup_after={dup_after}",
        ms(stall)
    );
    assert_eq!(sim.edge.active_gateway(), sim.gateway_addr, "the stream is back on the first gateway");
    assert_eq!(stats.gateway_takeovers, 2, "one move away, one back");
    let returned = returned.expect("the first gateway delivered again");
    // `answered` is sampled every 50 ms: the gateway may have answered up to 50 ms before it.
    let after = returned - answered;
    assert!(
        (Duration::from_millis(2950)..Duration::from_millis(3300)).contains(&after),
        "back {after:?} after the first gateway answered again, not the 3 s hold-down"
    );
    assert_eq!(r.lost, 0, "{r}");
    assert_eq!(dup_after, 0, "the return sent frames twice");
    // Make-before-break, and the first gateway told at once which frames went to the standby
    // (else it holds the first new frames behind them for a NAK's round trip: 30 ms here).
    assert!(stall <= Duration::from_millis(15), "the return stalled the stream {stall:?}");
}

#[test]
fn a_first_gateway_that_never_answers_leaves_the_stream_to_the_standby_after_the_grace() {
    let mut sim = with_standby(25, Mode::Auto);
    sim.schedule(0.0, Action::GatewayCut);
    sim.stream(1.5, 4.0, 2.0, 1000);
    sim.run_until(5.0);
    let r = sim.report();
    println!("RESULT scenario=sim-gateway-first-silent {r}");
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim));
    assert_eq!(sim.edge.stats().gateway_takeovers, 1);
    assert_eq!(r.lost, 0, "{r}");
    assert!(sim.gateway_delivered_at.is_empty());
}

#[test]
// Any instant serves: nothing runs.
#[allow(clippy::disallowed_methods)]
fn two_gateways_with_one_key_or_one_address_are_refused() {
    let gateway = |port: u16| SocketAddr::from(([192, 0, 2, 1], port));
    let config = |standby: GatewayPeer| EdgeConfig {
        private_key: PrivateKey::from_bytes([1; 32]),
        gateway_key: PrivateKey::from_bytes([2; 32]).public(),
        psk: None,
        cipher: Cipher::ChaCha20Poly1305,
        session: SessionConfig {
            links: vec![LinkConfig { id: LinkId::new(0), priority: 0, rate_bps: None, remote: gateway(4754) }],
            ..SessionConfig::default()
        },
        standbys: vec![standby],
        return_after: None,
    };
    let now = Instant::now();
    let same_key =
        GatewayPeer { address: gateway(4755), public_key: PrivateKey::from_bytes([2; 32]).public(), psk: None };
    let error = Edge::new(config(same_key), now, 0, [0; 32]).unwrap_err();
    assert_eq!(error, SetupError::DuplicateGatewayKey(gateway(4755)));
    let same_address =
        GatewayPeer { address: gateway(4754), public_key: PrivateKey::from_bytes([3; 32]).public(), psk: None };
    let error = Edge::new(config(same_address), now, 0, [0; 32]).unwrap_err();
    assert_eq!(error, SetupError::DuplicateGatewayAddress(gateway(4754)));
    assert_eq!(error.to_string(), "gateway 192.0.2.1:4754 is listed twice");
}

#[test]
fn with_no_gateway_answering_the_edge_waits_without_spinning_and_moves_nothing() {
    let mut sim = with_standby(26, Mode::Auto);
    for link in 0..3 {
        sim.schedule(0.0, Action::Blackhole(link));
    }
    sim.stream(0.5, 3.0, 2.0, 1000);
    // A timer left in the past would spin the loop past its step limit, which fails the run.
    sim.run_until(4.0);
    assert!(sim.edge.session().is_none());
    assert_eq!(sim.edge.stats().gateway_takeovers, 0);
    let roles: Vec<bool> = sim.edge.gateways().map(|(_, s)| s.is_some()).collect();
    assert_eq!(roles, [false, false], "no session with either gateway");
}

#[test]
fn a_drained_gateway_hands_the_stream_to_the_standby_losing_and_repeating_nothing() {
    for seed in [31, 32, 33] {
        let mut sim = with_standby(seed, Mode::Auto);
        sim.stream(1.0, 8.0, 6.0, 1000);
        sim.run_until(4.0);
        sim.gateway.set_draining(true);
        sim.run_until(6.0);
        let moved_at = standby_first_delivery(&sim).map(|t| ms(t - sim.at(4.0)));
        // The drain ends: the edge stays where it is.
        sim.gateway.set_draining(false);
        sim.run_until(9.0);
        let r = sim.report();
        let stats = sim.edge.stats();
        let stall = sim.max_gap_between(3.5, 8.0);
        println!(
            "RESULT scenario=sim-gateway-drain seed={seed} stall_ms={:.1} {r} moved={} takeover_ms={moved_at:?}",
            ms(stall),
            stats.frames_moved
        );
        assert_eq!(stats.gateway_takeovers, 1, "seed {seed}: one move, and none back when the drain ends");
        assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "seed {seed}");
        assert_eq!(r.lost, 0, "seed {seed}: {r}");
        assert_eq!(r.duplicated, 0, "seed {seed}: make-before-break sends nothing twice: {r}");
        assert!(stall <= Duration::from_millis(50), "seed {seed}: the stream stalled {stall:?}");
    }
}

/// Each link's rate, as the congestion control of the session with the gateway at `index`
/// has it.
fn link_rates(sim: &PairSim, index: usize) -> Vec<(LinkId, u64)> {
    let (_, session) = sim.edge.gateways().nth(index).unwrap();
    let session = session.expect("a session with the gateway");
    session.links().map(|l| (l, session.link_estimate(l).unwrap().rate_bps)).collect()
}

#[test]
fn the_session_that_takes_a_stream_over_starts_from_the_rates_the_carrying_one_measured() {
    // The uplinks are the same whichever gateway is behind them: what the carrying session
    // measured is what the next one can send, not the rate its session kept from before (a
    // default, or what a cut drained it to), which would spill the stream onto slower links.
    let mut sim = with_standby(34, Mode::Auto);
    // Enough to load every link (20, 10 and 8 Mbit/s), so that each rate is measured.
    sim.stream(1.0, 8.0, 24.0, 1200);
    sim.run_until(4.0);
    sim.gateway.set_draining(true);
    for step in 1..=2000 {
        sim.run_until(4.0 + f64::from(step) * 0.0005);
        if sim.edge.active_gateway() == standby_addr(&sim) {
            break;
        }
    }
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the drain moved the stream");
    // Both read in the step the stream moved in: the carrying session's rates may change
    // within any step, the move's included.
    let (carrying, next) = (link_rates(&sim, 0), link_rates(&sim, 1));
    println!("carrying session's rates {carrying:?}, the next one's once it carries {next:?}");
    assert!(
        carrying.iter().any(|&(_, r)| r != braid::scheduler::DEFAULT_LINK_RATE_BPS),
        "nothing measured: {carrying:?}"
    );
    assert_eq!(next, carrying, "the session that took the stream over kept its own rates");
}

#[test]
fn a_drained_gateway_keeps_an_edge_that_has_no_standby() {
    let security = Security::new();
    let config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
    let mut sim = Sim::secure(34, config, &field_links(), &security);
    sim.stream(1.0, 5.0, 4.0, 1000);
    sim.run_until(2.0);
    sim.gateway.set_draining(true);
    sim.run_until(6.0);
    let r = sim.report();
    assert_eq!(sim.edge.stats().gateway_takeovers, 0);
    assert_eq!(r.lost, 0, "{r}");
    assert!(sim.max_gap_between(1.5, 5.0) <= Duration::from_millis(50), "{r}");
}

#[test]
fn a_killed_gateways_bonded_stream_moves_to_the_standby_losing_nothing() {
    // Bond over links 15 to 70 ms away: the gateway holds frames behind gaps all the time, and
    // what it held when it died is gone with it. The 200-odd frames moved at once fill the new
    // session's modelled queues past send.max_queue_delay: neither they nor the frames that
    // come while they drain may meet over_capacity.
    for seed in 41..=50 {
        let mut sim = with_standby(seed, Mode::Bond);
        sim.stream(1.0, 7.0, 6.0, 1000);
        sim.schedule(4.0, Action::GatewayKill);
        sim.run_until(8.0);
        let r = sim.report();
        let drops = sim.edge.session().map(|s| s.stats().drops);
        println!(
            "RESULT scenario=sim-gateway-kill-held seed={seed} {r} moved={} drops={drops:?}",
            sim.edge.stats().frames_moved
        );
        assert_eq!(sim.edge.stats().gateway_takeovers, 1, "seed {seed}");
        assert_eq!(r.lost, 0, "seed {seed}: frames the dead gateway held were not moved: {r}");
    }
}

#[test]
fn an_edge_its_fleet_placed_on_a_later_gateway_does_not_return_to_the_first_by_list_order() {
    use braid::wire::Placement;
    let security = Security { return_after: Some(Duration::from_secs(3)), ..Security::new() };
    let (first, standby) = (security.gateway_key.public().0, security.standby_key.public().0);
    let config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
    let mut sim = Sim::secure_with_standby(42, config, &field_links(), &security);
    sim.stream(1.0, 14.0, 4.0, 1000);
    sim.run_until(2.0);
    // The fleet puts the edge on the second gateway, says so once, and then says nothing more:
    // the first, earlier in the edge's list, answers all along.
    sim.gateway.set_placement(PeerId(0), Some(Placement { gateway: standby, standby: Some(first) }));
    sim.run_until(3.0);
    sim.gateway.set_placement(PeerId(0), None);
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the placement was not followed");
    sim.run_until(14.0);
    let stats = sim.edge.stats();
    println!("takeovers {} followed {}", stats.gateway_takeovers, stats.redirects_followed);
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the edge went back to the first by list order");
    assert_eq!(stats.gateway_takeovers, 1, "only the placement moved the stream");
}

#[test]
fn a_fleet_placement_moves_the_stream_to_a_pinned_gateway_make_before_break_and_never_to_an_unpinned_one() {
    use braid::wire::Placement;
    let security = Security::new();
    let (first, standby) = (security.gateway_key.public().0, security.standby_key.public().0);
    let config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
    let mut sim = Sim::secure_with_standby(41, config, &field_links(), &security);
    sim.stream(1.0, 12.0, 6.0, 1000);
    sim.run_until(3.0);
    // A gateway it does not pin: refused, counted once, and the stream stays.
    sim.gateway.set_placement(PeerId(0), Some(Placement { gateway: [9; 32], standby: None }));
    sim.run_until(4.0);
    assert_eq!(sim.edge.stats().redirects_refused, 1);
    assert_eq!(sim.edge.stats().gateway_takeovers, 0);
    // The fleet puts the edge on the standby: the stream moves, make-before-break.
    sim.gateway.set_placement(PeerId(0), Some(Placement { gateway: standby, standby: Some(first) }));
    sim.run_until(6.0);
    let moved_at = standby_first_delivery(&sim).map(|t| ms(t - sim.at(4.0)));
    assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "the placement was not followed");
    // Gateways that disagree cannot bounce the stream: two moves in a minute, no more.
    let standby_gateway = &mut sim.standby.as_mut().unwrap().gateway;
    standby_gateway.set_placement(PeerId(0), Some(Placement { gateway: first, standby: Some(standby) }));
    sim.run_until(8.0);
    sim.standby.as_mut().unwrap().gateway.set_placement(PeerId(0), None);
    sim.gateway.set_placement(PeerId(0), Some(Placement { gateway: standby, standby: Some(first) }));
    sim.run_until(13.0);
    let r = sim.report();
    let stats = sim.edge.stats();
    let stall = sim.max_gap_between(3.5, 11.5);
    println!(
        "RESULT scenario=sim-fleet-redirect {r} stall_ms={:.1} moved_after_ms={moved_at:?} followed={} refused={}",
        ms(stall),
        stats.redirects_followed,
        stats.redirects_refused
    );
    assert_eq!(stats.redirects_followed, 2, "to the standby and back, then no more");
    assert_eq!(stats.redirects_refused, 2, "the unpinned gateway, and the third move");
    assert_eq!(sim.edge.active_gateway(), sim.gateway_addr, "the third move was refused");
    assert_eq!(r.lost, 0, "{r}");
    assert_eq!(r.duplicated, 0, "make-before-break sends nothing twice: {r}");
    assert!(stall <= Duration::from_millis(50), "the stream stalled {stall:?}");
}

/// Datagrams the edge has sent toward the first gateway, on all uplinks.
fn sent_to_first_gateway(sim: &PairSim) -> u64 {
    sim.links.iter().map(|l| l.up.stats().offered).sum()
}

#[test]
fn a_dead_gateway_gets_no_burst_of_re_sends_on_the_uplinks_the_stream_moves_to() {
    for seed in [21, 22, 23] {
        let mut sim = with_standby(seed, Mode::Auto);
        sim.stream(1.0, 7.0, 6.0, 1200);
        sim.schedule(4.0, Action::GatewayCut);
        sim.run_until(4.0);
        // The last 5 ms before the move, which still carry the stream, and 500 ms after it.
        let mut before = sent_to_first_gateway(&sim);
        let mut t = 4.0;
        while sim.edge.active_gateway() == sim.gateway_addr && t < 5.0 {
            before = sent_to_first_gateway(&sim);
            t += 0.005;
            sim.run_until(t);
        }
        assert_eq!(sim.edge.active_gateway(), standby_addr(&sim), "seed {seed}: the stream did not move");
        sim.run_until(t + 0.5);
        let sent = sent_to_first_gateway(&sim) - before;
        // The stream's 5 ms on three links (625 frames a second, a copy on each: ~10), and the
        // dead gateway's probes and handshake attempts (a few a second on each link).
        println!("seed {seed}: {sent} datagrams to the dead gateway in the 505 ms around the move");
        assert!(sent <= 40, "seed {seed}: {sent} datagrams went to the dead gateway as the stream moved away from it");
    }
}

#[test]
fn a_gateway_that_takes_an_overloaded_stream_over_never_wakes_for_a_nak_it_would_not_send() {
    // 20 Mbit/s in auto, and at the cut dsl (on both gateways' paths) drops to 12 Mbit/s: the
    // standby takes over a stream its links cannot all carry, with many frames missing. Its
    // next wake-up must lie ahead of the simulated clock (the simulation also stops a run that
    // does not move on).
    for factor in [1, 5] {
        for seed in [21, 22] {
            let mut sim = standby_probed(seed, factor);
            sim.stream(1.0, 7.0, 20.0, 1200);
            sim.schedule(4.0, Action::GatewayCut);
            sim.schedule(4.0, Action::SetProfile(0, Profile::dsl().rate_mbps(12.0)));
            sim.run_until(8.0);
            let standby = &sim.standby.as_ref().unwrap().gateway;
            let next = standby.poll_timeout().map(|(at, _)| at);
            assert!(next.is_none_or(|at| at > sim.now), "factor {factor} seed {seed}: the standby is due in the past");
            println!("factor {factor} seed {seed}: {}", sim.report());
        }
    }
}

/// One gateway, `edges` edges of one link each (5 ms each way), run in virtual time for
/// `secs`: edge 0 sends a 1,200-byte frame every millisecond from 1 s to `secs` - 2, the others
/// send nothing. Every endpoint's timers run when they are due, and only then. Returns the
/// gateway, the edges, the frames edge 0 sent, and the longest a frame took from edge 0's entry
/// to the gateway's exit.
fn one_gateway_many_edges(edges: usize, secs: u64) -> (Gateway, Vec<Edge>, u64, Duration) {
    use braid::endpoint::gateway::{EdgeEntry, GatewayConfig};
    const DELAY: Duration = Duration::from_millis(5);
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let gateway_key = PrivateKey::from_bytes([0x22; 32]);
    let gateway_addr: SocketAddr = "192.0.2.1:4754".parse().unwrap();
    let key = |i: usize| PrivateKey::from_bytes([0x40 + i as u8; 32]);
    let addr = |i: usize| -> SocketAddr { format!("198.51.100.{}:4000", i + 1).parse().unwrap() };
    let session = SessionConfig { mode: Mode::Bond, ..SessionConfig::default() };
    let config = GatewayConfig {
        private_key: gateway_key.clone(),
        edges: (0..edges)
            .map(|i| EdgeEntry { name: format!("rig{i}"), public_key: key(i).public(), psk: None })
            .collect(),
        session: session.clone(),
        handshake_rate: braid::endpoint::gateway::DEFAULT_HANDSHAKE_RATE,
    };
    let mut gateway = Gateway::new(config, start, [7; 32]).unwrap();
    let mut rigs: Vec<Edge> = (0..edges)
        .map(|i| {
            let links = vec![LinkConfig { id: LinkId::new(0), priority: 0, rate_bps: None, remote: gateway_addr }];
            let config = EdgeConfig {
                private_key: key(i),
                gateway_key: gateway_key.public(),
                psk: None,
                cipher: Cipher::ChaCha20Poly1305,
                session: SessionConfig { links, ..session.clone() },
                standbys: Vec::new(),
                return_after: None,
            };
            Edge::new(config, start, 1_700_000_000_000_000_000, [i as u8 + 1; 32]).unwrap()
        })
        .collect();
    // Datagrams on the way: when they arrive, to whom (None: the gateway), from where.
    let mut wire: Vec<(Instant, Option<usize>, SocketAddr, Vec<u8>)> = Vec::new();
    let (mut buf, frame, mut sent, mut slowest) = (Vec::new(), vec![0x5a; 1200], 0, Duration::ZERO);
    for step in 0..secs * 1000 {
        let now = start + Duration::from_millis(step);
        if (1000..(secs - 2) * 1000).contains(&step) {
            let mut frame = frame.clone();
            frame[..8].copy_from_slice(&step.to_be_bytes());
            rigs[0].handle_frame(now, &frame).unwrap();
            sent += 1;
        }
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|(at, ..)| *at <= now);
        wire = later;
        for (_, to, from, bytes) in due {
            let _ = match to {
                Some(i) => rigs[i].handle_datagram(now, LinkId::new(0), from, &bytes),
                None => gateway.handle_datagram(now, from, &bytes),
            };
        }
        if gateway.poll_timeout().is_some_and(|(at, _)| at <= now) {
            gateway.handle_timeout(now);
        }
        while let Some(t) = gateway.poll_transmit(now, &mut buf) {
            let to = (0..edges).find(|&i| addr(i) == t.destination);
            wire.push((now + DELAY, Some(to.expect("the gateway sends only to the rigs")), gateway_addr, buf.clone()));
        }
        while gateway.poll_frame(now, &mut buf).is_some() {
            let entered = u64::from_be_bytes(buf[..8].try_into().unwrap());
            slowest = slowest.max(now - (start + Duration::from_millis(entered)));
        }
        while gateway.poll_event().is_some() {}
        for (i, rig) in rigs.iter_mut().enumerate() {
            if rig.poll_timeout().is_some_and(|(at, _)| at <= now) {
                rig.handle_timeout(now);
            }
            while rig.poll_transmit(now, &mut buf).is_some() {
                wire.push((now + DELAY, None, addr(i), buf.clone()));
            }
            while rig.poll_frame(now, &mut buf).is_some() {}
            while rig.poll_event().is_some() {}
        }
    }
    (gateway, rigs, sent, slowest)
}

#[test]
fn one_gateway_keeps_every_idle_edges_session_on_its_own_timers_while_a_busy_edge_delivers_everything() {
    // The gateway polls a session only after something changed it, and runs its timers only
    // when they are due: the idle sessions must still probe on their own and stay up, and the
    // busy one lose nothing.
    let (edges, secs) = (8, 20);
    let (gateway, rigs, sent, slowest) = one_gateway_many_edges(edges, secs);
    let link = LinkId::new(0);
    let session = |i: usize| gateway.session(PeerId(i)).unwrap_or_else(|| panic!("rig{i} has no live session"));
    let delivered = session(0).stats().frames_delivered;
    let probes: Vec<u64> = (0..edges).map(|i| session(i).link_stats(link).map_or(0, |s| s.probes_sent)).collect();
    let srtt: Vec<f64> = rigs
        .iter()
        .map(|r| r.session().and_then(|s| s.link_quality(link)).and_then(|q| q.srtt).map_or(f64::NAN, ms))
        .collect();
    println!(
        "RESULT scenario=sim-one-gateway-many-edges edges={edges} sent={sent} delivered={delivered} slowest_ms={:.1} edge_srtt_ms={srtt:?} gateway_probes={probes:?}",
        ms(slowest)
    );
    assert_eq!(delivered, sent, "rig0 sent {sent} frames and the gateway delivered {delivered}");
    // 5 ms on the wire, and the gateway answers and delivers as soon as a datagram comes: a
    // session left unpolled after its input would hold them until its next timer.
    assert!(slowest <= Duration::from_millis(6), "a frame took {:.1} ms through 5 ms of wire", ms(slowest));
    assert!(
        srtt.iter().all(|&rtt| rtt <= 12.0),
        "an edge measured more than 12 ms round trips over 10 ms of wire: {srtt:?}"
    );
    // The gateway's own probes on an idle edge's link: one per PROBE_INTERVAL while up, from
    // soon after the handshake.
    let expected = (secs - 1) * 1000 / PROBE_INTERVAL.as_millis() as u64;
    for (i, rig) in rigs.iter().enumerate() {
        let at_gateway = session(i).link_state(link);
        let at_edge = rig.session().and_then(|s| s.link_state(link));
        assert_eq!(at_gateway, Some(LinkState::Up), "rig{i}'s link at the gateway");
        assert_eq!(at_edge, Some(LinkState::Up), "rig{i}'s link at the edge");
        let sent = probes[i];
        assert!(
            sent * 10 >= expected * 9,
            "the gateway sent {sent} probes of its own to rig{i} in {secs} s: at least {} expected",
            expected * 9 / 10
        );
    }
}

#[test]
fn a_gateway_of_several_workers_carries_an_edge_on_the_worker_that_owns_it_through_a_rekey_losing_nothing() {
    use braid::endpoint::edge::REKEY_AFTER_TIME;
    use braid::endpoint::gateway::{steer, worker_of};
    use braid_lab::sim::Workers;
    for (seed, count) in [(31, 2), (32, 3)] {
        let config = SessionConfig { mode: Mode::Auto, ..SessionConfig::default() };
        // An edge key that a worker other than 0 owns (the owner is a hash of the key).
        let edge_key = (0x11..=0xff)
            .map(|b| PrivateKey::from_bytes([b; 32]))
            .find(|k| worker_of(&k.public(), count) != 0)
            .unwrap();
        let security = Security { edge_key, ..Security::new() };
        let mut sim: Sim<Edge, Workers> = Sim::secure_workers(seed, config, &field_links(), &security, count);
        let end = REKEY_AFTER_TIME.as_secs_f64() + 10.0;
        sim.stream(1.0, end, 4.0, 1000);
        sim.stream_reverse(1.0, end, 1.0, 1000);
        sim.run_until(end + 1.0);
        let (up, down) = (sim.report(), sim.reverse_report());
        let owner = sim.gateway.owner();
        let workers = &sim.gateway.workers;
        let stats: Vec<_> = workers.iter().map(Gateway::stats).collect();
        let counts: Vec<_> = stats.iter().map(|s| (s.handshakes, s.handshakes_forwarded)).collect();
        println!(
            "RESULT scenario=sim-workers workers={count} owner={owner} up: {up} down: {down} (answered, handed over): {counts:?}"
        );
        assert_eq!(owner, worker_of(&security.edge_key.public(), count));
        assert_ne!(owner, 0, "seed {seed}: the test needs an edge that worker 0 hands over");
        assert!(sim.edge.stats().handshakes_completed >= 2, "seed {seed}: rekeyed: {:?}", sim.edge.stats());
        assert_eq!((up.lost, up.duplicated, up.out_of_order), (0, 0, 0), "seed {seed}, {count} workers, up: {up}");
        assert_eq!((down.lost, down.duplicated), (0, 0), "seed {seed}, {count} workers, down: {down}");
        for (w, worker) in workers.iter().enumerate() {
            assert_eq!(worker.session(PeerId(0)).is_some(), w == owner, "seed {seed}: worker {w} of {count}");
        }
        // Every initiation reached worker 0 (index 0) and was handed over; the owner answered.
        assert!(stats[0].handshakes_forwarded >= 2, "seed {seed}: {:?}", stats[0]);
        assert_eq!(stats[0].handshakes, 0, "seed {seed}: worker 0 answered for an edge it does not own");
        assert!(stats[owner].handshakes >= 2, "seed {seed}: {:?}", stats[owner]);
        let session = workers[owner].session(PeerId(0)).unwrap();
        for index in session.local_indices() {
            assert_eq!(index.get() as usize % count, owner, "seed {seed}: index {index:?} steers elsewhere");
        }
        let drops: u64 = stats.iter().map(|s| s.drops.total()).sum();
        assert_eq!(drops, 0, "seed {seed}: {stats:?}");
        assert_eq!(steer(&[0; 7], count), 0, "a datagram too short for a Key goes to worker 0");
    }
}
