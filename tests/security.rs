//! Security scenarios: real handshakes between an `Edge` and a `Gateway` over simulated links,
//! with an attacker who replays, forges, spoofs and floods.

use std::net::SocketAddr;
use std::time::Duration;

use braid::LinkId;
use braid::SessionIndex;
use braid::crypto::Cipher;
use braid::endpoint::edge::{HandshakeTrouble, REKEY_AFTER_TIME};
use braid::endpoint::gateway::{Gateway, PeerId};
use braid::handshake::{self, CryptoRng, InitPayload, Tai64n};
use braid::keys::{PrivateKey, Psk};
use braid::session::{DropReason, SessionConfig};
use braid_lab::sim::{Action, Profile, Security, Sim, ms};

type SecureSim = Sim<braid::endpoint::edge::Edge, Gateway>;

fn attacker() -> SocketAddr {
    SocketAddr::from(([127, 0, 9, 9], 666))
}

fn two_links() -> [Profile; 2] {
    [Profile::dsl(), Profile::lte_good()]
}

fn secure(seed: u64, security: &Security) -> SecureSim {
    Sim::secure(seed, SessionConfig::default(), &two_links(), security)
}

fn gateway_drops(sim: &SecureSim, reason: DropReason) -> u64 {
    let outside = sim.gateway.stats().drops.get(reason);
    let inside = sim.gateway.session(PeerId(0)).map_or(0, |s| s.stats().drops.get(reason));
    outside + inside
}

/// The first captured datagram of a kind: data (`0x6558`) or a control type byte.
fn captured(sim: &SecureSim, data: bool, control_type: u8) -> Vec<u8> {
    sim.captured
        .iter()
        .map(|(_, bytes)| bytes)
        .find(|b| if data { b[2..4] == [0x65, 0x58] } else { b[2..4] == [0x88, 0xb5] && b[12] == control_type })
        .cloned()
        .expect("a captured datagram of that kind")
}

#[test]
fn a_handshake_keys_a_session_that_carries_frames_both_ways_with_either_cipher() {
    for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
        let security = Security { cipher, ..Security::new() };
        let mut sim = secure(1, &security);
        sim.stream(1.0, 5.0, 2.0, 1000);
        sim.stream_reverse(1.0, 5.0, 2.0, 1000);
        sim.run_until(6.0);
        let (up, down) = (sim.report(), sim.reverse_report());
        println!("RESULT scenario=sim-handshake cipher={cipher:?} up: {up} down: {down}");
        assert_eq!((up.lost, up.duplicated, up.out_of_order), (0, 0, 0), "{cipher:?} edge to gateway: {up}");
        assert_eq!((down.lost, down.duplicated, down.out_of_order), (0, 0, 0), "{cipher:?} gateway to edge: {down}");
        assert_eq!(sim.edge.stats().handshakes_completed, 1);
        assert_eq!(sim.gateway.stats().sessions_started, 1);
        // The initiation went out on both links; the slower copy gets the first's response back
        // on its own link, with no handshake work, and that response is one too many at the edge.
        assert_eq!(gateway_drops(&sim, DropReason::HandshakeReplay), 0);
        assert_eq!(sim.gateway.stats().handshakes, 1);
        assert_eq!(sim.edge.stats().drops.get(DropReason::UnknownSession), 1);
        assert!(sim.misdirected.is_empty(), "the gateway sent to {:?}", sim.misdirected);
    }
}

#[test]
fn rekeying_under_traffic_over_links_300_ms_apart_loses_no_frame() {
    let config = SessionConfig { latency_budget: Duration::from_millis(500), ..SessionConfig::default() };
    let links = [Profile::new(10).jitter_ms(2), Profile::new(310).jitter_ms(2)];
    let mut sim = Sim::secure(2, config, &links, &Security::new());
    let end = 2.0 * REKEY_AFTER_TIME.as_secs_f64() + 10.0;
    sim.stream(1.0, end, 0.5, 500);
    sim.stream_reverse(1.0, end, 0.5, 500);
    sim.run_until(end + 1.0);
    let (up, down) = (sim.report(), sim.reverse_report());
    println!(
        "RESULT scenario=sim-rekey mode=redundant handshakes={} up: {up} down: {down}",
        sim.edge.stats().handshakes_completed
    );
    assert!(sim.edge.stats().handshakes_completed >= 3, "rekeyed twice: {:?}", sim.edge.stats());
    assert_eq!((up.lost, up.duplicated, up.out_of_order), (0, 0, 0), "edge to gateway: {up}");
    assert_eq!((down.lost, down.duplicated, down.out_of_order), (0, 0, 0), "gateway to edge: {down}");
    let gateway = sim.gateway.session(PeerId(0)).expect("live session");
    let edge = sim.edge.session().expect("edge session");
    assert_eq!(gateway.stats().drops.total(), 0, "{:?}", gateway.stats().drops);
    assert_eq!(edge.stats().drops.total(), 0, "{:?}", edge.stats().drops);
    // Every copy on the slow link opened, including those in flight across each key change.
    let slow = LinkId::new(1);
    assert_eq!(gateway.link_stats(slow).unwrap().rx_frames, edge.link_stats(slow).unwrap().tx_frames);
}

#[test]
fn a_replayed_data_packet_or_initiation_is_rejected_and_nothing_is_delivered_twice() {
    let mut sim = secure(3, &Security::new());
    sim.capture = true;
    sim.stream(1.0, 4.0, 2.0, 1000);
    sim.run_until(2.0);
    let data = captured(&sim, true, 0);
    let init = captured(&sim, false, 1);
    let from = sim.links[0].nat;
    sim.inject(2.5, from, data.clone());
    sim.inject(2.6, attacker(), data);
    sim.inject(2.7, from, init);
    sim.run_until(5.0);
    let r = sim.report();
    assert_eq!(r.duplicated, 0, "{r}");
    assert_eq!(sim.injected_results.len(), 3);
    assert!(
        matches!(sim.injected_results[0], Err(DropReason::Replay | DropReason::TooOld)),
        "{:?}",
        sim.injected_results
    );
    assert!(matches!(sim.injected_results[1], Err(DropReason::Replay | DropReason::TooOld)));
    assert_eq!(sim.injected_results[2], Err(DropReason::HandshakeReplay));
}

/// Sets a datagram's GRE Sequence.
fn with_sequence(mut datagram: Vec<u8>, sequence: u32) -> Vec<u8> {
    datagram[8..12].copy_from_slice(&sequence.to_be_bytes());
    datagram
}

#[test]
fn a_forged_packet_is_rejected_never_moves_a_path_and_never_burns_a_sequence_number() {
    let mut sim = secure(4, &Security::new());
    sim.capture = true;
    sim.stream(1.0, 4.0, 2.0, 1000);
    sim.run_until(2.0);
    let data = captured(&sim, true, 0);
    // Sequence numbers link 0 will use in the next 100 ms: forgeries must reach the AEAD, and
    // must not stop the real packets with those numbers from opening.
    let next = sim.edge.session().unwrap().link_stats(LinkId::new(0)).unwrap().tx_packets as u32;
    let mut tag = with_sequence(data.clone(), next + 5);
    *tag.last_mut().unwrap() ^= 1;
    let mut ciphertext = with_sequence(data.clone(), next + 6);
    ciphertext[20] ^= 0x80;
    let sequence_only = with_sequence(data, next + 7);
    for forged in [tag, ciphertext, sequence_only] {
        sim.inject(2.0, attacker(), forged);
    }
    sim.run_until(5.0);
    assert_eq!(sim.injected_results, vec![Err(DropReason::OpenFailed); 3]);
    let gateway = sim.gateway.session(PeerId(0)).expect("live session");
    let edge = sim.edge.session().expect("edge session");
    let link = LinkId::new(0);
    assert_eq!(
        gateway.link_stats(link).unwrap().rx_packets,
        edge.link_stats(link).unwrap().tx_packets - sim.in_flight_up(0),
        "every real packet that arrived opened, including those numbered like the forgeries"
    );
    assert_eq!(gateway.stats().drops.get(DropReason::OpenFailed), 3);
    assert_eq!(gateway.stats().drops.total(), 3, "{:?}", gateway.stats().drops);
    for link in 0..2u8 {
        assert_eq!(gateway.link_remote(LinkId::new(link)), Some(sim.links[usize::from(link)].nat));
    }
    assert!(sim.misdirected.is_empty(), "nothing is ever sent to the attacker: {:?}", sim.misdirected);
    assert_eq!(sim.report().lost, 0);
}

#[test]
fn an_edge_not_on_the_allowlist_is_refused() {
    let security = Security { allowed_edge: Some(PrivateKey::from_bytes([0x33; 32])), ..Security::new() };
    let mut sim = secure(5, &security);
    sim.run_until(3.0);
    assert!(sim.edge.session().is_none());
    assert!(gateway_drops(&sim, DropReason::UnknownPeer) >= 2, "{:?}", sim.gateway.stats());
    assert_eq!(sim.gateway.stats().handshakes, 0);
    // The edge hears nothing back: it says so after TROUBLE_AFTER, and again, less often.
    sim.run_until(10.0);
    let reports: Vec<f64> = sim.edge_troubles.iter().map(|(t, _)| t.as_secs_f64()).collect();
    assert!(sim.edge_troubles.iter().all(|(_, c)| *c == HandshakeTrouble::NoReply), "{:?}", sim.edge_troubles);
    assert!(reports.len() == 2 && (3.0..3.6).contains(&reports[0]) && (6.0..6.6).contains(&reports[1]), "{reports:?}");
}

#[test]
fn a_wrong_psk_is_refused_and_the_right_one_works() {
    let psk = |b: u8| Some(Psk([b; 32]));
    let wrong = Security { edge_psk: psk(1), gateway_psk: psk(2), ..Security::new() };
    let mut sim = secure(6, &wrong);
    sim.run_until(3.0);
    assert!(sim.edge.session().is_none(), "the edge refuses the gateway's response");
    assert!(sim.edge.stats().drops.get(DropReason::HandshakeFailed) >= 2, "{:?}", sim.edge.stats());
    assert!(sim.gateway.session(PeerId(0)).is_none(), "the gateway's candidate session never goes live");

    let right = Security { edge_psk: psk(1), gateway_psk: psk(1), ..Security::new() };
    let mut sim = secure(6, &right);
    sim.stream(1.0, 2.0, 1.0, 500);
    sim.run_until(3.0);
    assert_eq!(sim.report().lost, 0);
}

#[test]
fn an_edge_pinning_the_wrong_gateway_key_is_dropped_before_any_diffie_hellman() {
    let security = Security { pinned_gateway: Some(PrivateKey::from_bytes([0x44; 32])), ..Security::new() };
    let mut sim = secure(7, &security);
    sim.run_until(3.0);
    assert!(sim.edge.session().is_none());
    assert!(gateway_drops(&sim, DropReason::BadMac) >= 2);
    assert_eq!(gateway_drops(&sim, DropReason::HandshakeFailed), 0, "no Noise work was done");
    // The gateway's answer, sealed with its own key, tells the edge at once that it pins another.
    let first = sim.edge_troubles.first().copied();
    assert!(
        first.is_some_and(|(t, c)| c == HandshakeTrouble::WrongKey && t < Duration::from_secs(1)),
        "{:?}",
        sim.edge_troubles
    );
}

#[test]
fn a_gateway_under_load_is_named_and_the_handshake_still_completes() {
    let security = Security::new();
    let mut sim = secure(9, &security);
    // A flood of initiations from elsewhere, from the start (its first hundred at once, so
    // that no token is left when the edge's first initiation arrives): the gateway answers with
    // cookies.
    let inits = attacker_initiations(&security.gateway_key, 100);
    for i in 0..2000usize {
        sim.inject(i.saturating_sub(100) as f64 * 0.001, attacker(), inits[i % inits.len()].clone());
    }
    sim.run_until(3.0);
    assert!(sim.edge.session().is_some(), "the cookie gets the edge through");
    assert!(sim.edge_troubles.iter().any(|(_, c)| *c == HandshakeTrouble::UnderLoad), "{:?}", sim.edge_troubles);
}

#[test]
fn an_authenticated_address_change_moves_the_path_and_the_reverse_stream_follows() {
    let mut sim = secure(8, &Security::new());
    sim.stream(1.0, 6.0, 1.0, 500);
    sim.stream_reverse(1.0, 6.0, 1.0, 500);
    // One link at a time, as NATs do; the other link carries the stream while the gateway
    // learns the new mapping from the edge's next packet. (If every link rebinds in the same
    // instant, the gateway's frames in flight to the old mappings are lost: nothing can know.)
    sim.schedule(3.0, Action::Rebind(0));
    sim.schedule(4.0, Action::Rebind(1));
    sim.run_until(7.0);
    let session = sim.gateway.session(PeerId(0)).expect("live session");
    for link in 0..2u8 {
        assert_eq!(session.link_remote(LinkId::new(link)), Some(sim.links[usize::from(link)].nat));
    }
    let (up, down) = (sim.report(), sim.reverse_report());
    assert_eq!(up.lost, 0, "{up}");
    assert_eq!(down.lost, 0, "the gateway's frames follow the new mappings: {down}");
}

/// Initiations with a valid mac1 (the attacker knows the gateway's public key) from a key the
/// gateway does not allow.
fn attacker_initiations(gateway: &PrivateKey, count: usize) -> Vec<Vec<u8>> {
    let mut rng = CryptoRng::new([0x55; 32]);
    let key = PrivateKey::from_bytes([0x66; 32]);
    (0..count)
        .map(|i| {
            let payload = InitPayload {
                timestamp: Tai64n::from_unix_nanos(1_700_000_000_000_000_000 + i as u64),
                cipher: Cipher::ChaCha20Poly1305,
                epoch: 1,
                next_frame_seq: 0,
            };
            let mut body = Vec::new();
            handshake::initiate(
                &key,
                &gateway.public(),
                None,
                &mut rng,
                SessionIndex::from_wire(9),
                &payload,
                &mut body,
            )
            .expect("initiation");
            let mut datagram = vec![0x30, 0, 0x88, 0xb5, 0, 0, 0, 0, 0, 0, 0, 0];
            datagram.extend_from_slice(&body);
            datagram
        })
        .collect()
}

#[test]
fn a_flood_of_garbage_and_initiations_is_counted_and_dropped_while_the_stream_flows() {
    let security = Security::new();
    let mut sim = secure(9, &security);
    sim.stream(1.0, 6.0, 2.0, 1000);
    let mut rng = braid::rng::Rng::new(99);
    let mut garbage = 0;
    for i in 0..5000 {
        let len = rng.below(200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        if i % 2 == 0 && bytes.len() > 12 {
            // Half of it looks like braid: a valid GRE header, random Key and payload.
            bytes[..4].copy_from_slice(&[0x30, 0, 0x65, 0x58]);
        }
        sim.inject(1.5 + i as f64 * 0.0005, attacker(), bytes);
        garbage += 1;
    }
    let inits = attacker_initiations(&security.gateway_key, 200);
    let flood = 2000;
    for i in 0..flood {
        sim.inject(2.0 + i as f64 * 0.001, attacker(), inits[i % inits.len()].clone());
    }
    sim.run_until(7.0);
    let r = sim.report();
    let stats = sim.gateway.stats();
    println!("RESULT scenario=sim-hostile {r} drops: {} cookies={}", stats.drops, stats.cookies_sent);
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0), "{r}");
    assert_eq!(sim.injected_results.len(), garbage + flood);
    assert!(sim.injected_results.iter().all(Result::is_err), "nothing the attacker sent was accepted");
    // Within the rate, the attacker's initiations cost a DH and are refused for their key;
    // beyond it, they get cookies the attacker's address would have to answer.
    let refused = gateway_drops(&sim, DropReason::UnknownPeer) + gateway_drops(&sim, DropReason::HandshakeReplay);
    assert!(refused <= 50 + 2 * 50 + 10, "DH work stayed near the rate limit: {refused}");
    assert!(stats.cookies_sent >= 1000, "the flood was answered with cookies: {stats:?}");
    assert_eq!(
        sim.gateway.stats().drops.total() + sim.gateway.session(PeerId(0)).map_or(0, |s| s.stats().drops.total()),
        (garbage + flood) as u64,
        "every datagram is counted under a reason"
    );
}

#[test]
fn a_restarted_gateway_is_found_and_the_stream_flows_again_within_2_s_even_under_a_handshake_flood() {
    let security = Security::new();
    let mut sim = secure(10, &security);
    sim.stream(1.0, 9.0, 2.0, 1000);
    sim.stream_reverse(1.0, 9.0, 0.5, 500);
    let inits = attacker_initiations(&security.gateway_key, 100);
    for i in 0..6000 {
        sim.inject(3.0 + i as f64 * 0.0005, attacker(), inits[i % inits.len()].clone());
    }
    sim.run_until(4.0);
    let fresh = security.gateway(&SessionConfig::default(), sim.now, 1234);
    sim.replace_gateway(fresh);
    sim.run_until(10.0);
    let gap = sim.max_gap_between(3.5, 9.0);
    let r = sim.report();
    println!(
        "RESULT scenario=sim-gateway-restart max_gap_ms={:.1} lost={} cookies={} edge_cookies={}",
        ms(gap),
        r.lost,
        sim.gateway.stats().cookies_sent,
        sim.edge.stats().cookies
    );
    assert!(gap <= Duration::from_secs(2), "stream resumed after {gap:?}");
    assert!(sim.gateway.session(PeerId(0)).is_some(), "a new live session");
    assert!(sim.edge.stats().cookies >= 1, "the edge got in with a cookie: {:?}", sim.edge.stats());
    let down = sim.reverse_report();
    assert!(down.out_of_order == 0 && down.duplicated == 0, "{down}");
    let tail = sim.reverse.delivered.iter().rev().take(100).filter(|&&n| n == 1).count();
    assert_eq!(tail, 100, "the gateway's new stream reaches the edge");
}

#[test]
fn a_restarted_gateway_answers_with_the_sessions_token_and_the_stream_is_back_within_100_ms_losing_nothing() {
    // The new process has the same key, so it answers the old session's data with the token
    // the old one handed out; the edge handshakes at once and re-sends what the old process
    // may not have delivered. Without the answer the edge waits for every link to go quiet.
    let security = Security::new();
    let mut sim = secure(14, &security);
    sim.stream(1.0, 6.0, 4.0, 1000);
    sim.run_until(2.0);
    // A camera on the rig's LAN: its address is announced on the ingest LAN through the new
    // gateway, so that traffic toward it finds the new port at once.
    let camera = [2, 0, 0, 0, 0, 7];
    let mut frame = vec![0u8; 100];
    frame[6..12].copy_from_slice(&camera);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    sim.edge.handle_frame(sim.now, &frame).expect("a frame from the camera");
    sim.run_until(3.0);
    assert!(sim.sink.announced.is_empty(), "nothing announced while the gateway stays");
    let before = sim.edge.stats();
    let fresh = security.gateway(&SessionConfig::default(), sim.now, 4321);
    sim.replace_gateway(fresh);
    sim.run_until(7.0);
    let gap = sim.max_gap_between(2.5, 6.0);
    let r = sim.report();
    let edge = sim.edge.stats();
    let resent = sim.edge.session().map_or(0, |s| s.stats().frames_resent_to_new_peer);
    println!(
        "RESULT scenario=sim-gateway-restart-token max_gap_ms={:.1} {r} handshakes={} resent={resent}",
        ms(gap),
        edge.handshakes_completed - before.handshakes_completed
    );
    assert!(gap <= Duration::from_millis(100), "the stream came back after {gap:?}");
    assert_eq!(r.lost, 0, "what the old process had not delivered was re-sent: {r}");
    assert_eq!(edge.handshakes_completed - before.handshakes_completed, 1, "one handshake, at once");
    assert_eq!(edge.sessions_lost - before.sessions_lost, 1, "the gateway's answer was counted once");
    assert!(resent > 0, "nothing re-sent");
    assert!(r.duplicated <= resent, "duplicates ({}) are at most the frames re-sent ({resent})", r.duplicated);
    assert!(r.out_of_order <= r.duplicated, "only repeated frames come out of order: {r}");
    let restart = sim.at(3.0);
    let announced: Vec<u128> = sim
        .sink
        .announced
        .iter()
        .filter(|(_, mac)| *mac == camera)
        .map(|(at, _)| (*at - restart).as_millis())
        .collect();
    println!("announced at {announced:?} ms");
    assert_eq!(announced.len(), 3, "the camera announced three times through the new gateway: {announced:?}");
    assert!(announced[0] <= 100, "the first announcement reached the ingest {} ms after the restart", announced[0]);
}

/// A stream from 1 s on, both links blackholed at 3 s until `back_at`, when a new gateway
/// process (no sessions) takes the old one's place; `while_gone` looks at the sim just before.
/// Returns the sim at 7 s and how long after `back_at` the first frame was delivered.
fn gateway_gone_and_restarted(
    security: &Security,
    back_at: f64,
    while_gone: impl FnOnce(&SecureSim),
) -> (SecureSim, Option<Duration>) {
    let mut sim = secure(16, security);
    sim.stream(1.0, 6.0, 4.0, 1000);
    for link in 0..2 {
        sim.schedule(3.0, Action::Blackhole(link));
        sim.schedule(back_at, Action::Restore(link));
    }
    sim.run_until(back_at);
    while_gone(&sim);
    let fresh = security.gateway(&SessionConfig::default(), sim.now, 99);
    sim.replace_gateway(fresh);
    sim.run_until(7.0);
    let listening = sim.at(back_at);
    let back = sim.sink.delivered_at.iter().flatten().filter(|&&t| t > listening).min().map(|&t| t - listening);
    (sim, back)
}

#[test]
fn a_gateway_gone_for_300_ms_then_restarted_is_answered_at_once_though_a_handshake_was_under_way() {
    // While the gateway is gone, the edge's links go down and it starts a handshake that no one
    // receives; the new process's answer must not wait for that handshake's retry.
    let security = Security::new();
    let (sim, back) = gateway_gone_and_restarted(&security, 3.3, |sim| {
        let started = sim.edge.stats().handshakes_started;
        assert!(started >= 2, "the edge started a handshake while the gateway was gone");
    });
    println!("RESULT scenario=sim-gateway-gone-and-back back_after_listen_ms={:?}", back.map(ms));
    let back = back.expect("the stream came back");
    assert!(back <= Duration::from_millis(100), "the stream came back {back:?} after the new gateway listened");
    assert_eq!(sim.edge.stats().sessions_lost, 1);
}

#[test]
fn a_gateway_back_too_late_for_the_oldest_frames_says_so_and_the_stream_does_not_wait_for_them() {
    // Gone for 480 ms: by the time the new process has a session, the frames sent just after
    // the old one died can no longer arrive within the 500 ms budget, so the edge does not
    // re-send them; it must say so at once, or the new gateway holds the re-sent and new frames
    // behind them until it gives them up.
    let security = Security::new();
    let (sim, back) = gateway_gone_and_restarted(&security, 3.48, |_| {});
    let r = sim.report();
    let gone = sim.edge.session().map_or(0, |s| s.stats().frames_gone_to_new_peer);
    println!("RESULT scenario=sim-gateway-back-late back_after_listen_ms={:?} {r} gone={gone}", back.map(ms));
    let back = back.expect("the stream came back");
    assert!(back <= Duration::from_millis(100), "the stream came back {back:?} after the new gateway listened");
    assert!(gone > 0, "no frame was too late: the scenario does not test what it says");
    assert!(r.lost <= gone, "lost {} frames, more than the {gone} too late to re-send: {r}", r.lost);
}

#[test]
fn a_forged_no_session_answer_changes_nothing_and_unknown_indices_are_answered_sparingly() {
    let security = Security::new();
    let mut sim = secure(15, &security);
    sim.capture = true;
    sim.stream(1.0, 4.0, 2.0, 1000);
    sim.run_until(1.2);
    // A "no such session" for the live session's index (in the clear on every data packet),
    // with a made-up token, and one for an index the edge never had.
    let data = captured(&sim, true, 0);
    let mut forged = vec![0x30, 0, 0x88, 0xb5];
    forged.extend_from_slice(&data[4..8]);
    forged.extend_from_slice(&[0, 0, 0, 0, 5]);
    forged.extend_from_slice(&[0x5a; 16]);
    let started = sim.edge.stats().handshakes_started;
    let link = LinkId::new(0);
    assert_eq!(sim.edge.handle_datagram(sim.now, link, attacker(), &forged), Err(DropReason::BadMac));
    forged[4] ^= 0xff;
    assert_eq!(sim.edge.handle_datagram(sim.now, link, attacker(), &forged), Err(DropReason::UnknownSession));
    // Data for 2,000 indices the gateway does not have, in one second: each answered at most
    // once per link in 100 ms, and no more than 500 a second in all after a first burst of 500.
    let mut rng = braid::rng::Rng::new(5);
    for i in 0..4000 {
        let mut bytes = data.clone();
        bytes[4..7].copy_from_slice(&(rng.below(2000) as u32).to_be_bytes()[1..]);
        sim.inject(1.5 + i as f64 * 0.00025, attacker(), bytes);
    }
    let short = vec![0x30, 0, 0x65, 0x58, 1, 2, 3, 0, 0, 0, 0, 1, 0];
    sim.inject(2.6, attacker(), short);
    sim.run_until(4.5);
    let answers = sim.misdirected.iter().filter(|&&a| a == attacker()).count();
    println!("RESULT scenario=sim-no-session-forged answers_to_attacker={answers}");
    assert!((1..=1000).contains(&answers), "{answers} answers to 4,000 datagrams over one second");
    assert_eq!(sim.edge.stats().handshakes_started, started, "the forged answer started no handshake");
    assert_eq!(sim.edge.stats().sessions_lost, 0);
    assert_eq!(sim.report().lost, 0);
}

#[test]
fn after_a_gateway_restart_late_in_a_busy_session_both_directions_recover_without_a_handshake_storm() {
    // Past the 4096-packet replay window in both directions before the restart, so the new
    // gateway's counters start far below the old ones.
    let security = Security::new();
    let mut sim = secure(12, &security);
    sim.stream(1.0, 24.0, 4.0, 500);
    sim.stream_reverse(1.0, 24.0, 4.0, 500);
    sim.run_until(15.0);
    let handshakes_before = sim.edge.stats().handshakes_completed;
    let fresh = security.gateway(&SessionConfig::default(), sim.now, 77);
    sim.replace_gateway(fresh);
    sim.run_until(25.0);
    let up_gap = sim.max_gap_between(14.5, 23.0);
    let down_tail = sim.reverse.delivered.iter().rev().skip(50).take(1000).filter(|&&n| n == 1).count();
    let handshakes = sim.edge.stats().handshakes_completed - handshakes_before;
    println!(
        "RESULT scenario=sim-late-gateway-restart up_max_gap_ms={:.1} down_tail_delivered={down_tail}/1000 handshakes={handshakes}",
        ms(up_gap)
    );
    assert!(up_gap <= Duration::from_secs(2), "edge to gateway resumed after {up_gap:?}");
    assert_eq!(down_tail, 1000, "gateway to edge flows again after the restart");
    assert!(handshakes <= 3, "a handshake storm: {handshakes} handshakes after one restart");
    let edge = sim.edge.session().expect("edge session");
    assert!(edge.links().all(|l| edge.link_state(l).is_some_and(braid::LinkState::is_usable)), "links back up");
}

#[test]
fn a_junk_response_does_not_cancel_the_pending_handshake() {
    let mut sim = secure(13, &Security::new());
    sim.capture = true;
    sim.schedule(0.0, Action::Restore(0));
    sim.run_until(0.001);
    // The initiation is on the wire; forge a response to its (cleartext) sender index.
    let init = captured(&sim, false, 1);
    // Key = the initiator's 24-bit index (the low three bytes of the sender index) and link 0.
    let mut junk = vec![0x30, 0, 0x88, 0xb5];
    junk.extend_from_slice(&init[14..17]);
    junk.push(0);
    junk.extend_from_slice(&[0, 0, 0, 0]);
    junk.push(2);
    junk.resize(12 + braid::handshake::RESPONSE_LEN, 0);
    let result = sim.edge.handle_datagram(sim.now, LinkId::new(0), sim.gateway_addr, &junk);
    assert_eq!(result, Err(DropReason::BadMac));
    sim.stream(0.5, 2.0, 1.0, 500);
    sim.run_until(3.0);
    assert_eq!(sim.edge.stats().handshakes_completed, 1, "the real response still completed the handshake");
    assert_eq!(sim.edge.stats().handshakes_started, 1, "without a retry: the junk cancelled nothing");
    assert_eq!(sim.report().lost, 0);
}
