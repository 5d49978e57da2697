//! The impairment model measures what it is set to, within stated tolerances, in virtual time.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use braid_lab::{Link, Profile, preset};

/// Offers `count` frames of `size` bytes every `gap` and takes each out exactly when it is due
/// (event-driven, so the measurement adds nothing); returns the one-way delays and the link.
fn run(profile: Profile, count: usize, size: usize, gap: Duration) -> (Vec<Duration>, Link) {
    let start = Instant::now();
    let sent_at = |frame: &[u8]| start + gap * u64::from_be_bytes(frame[..8].try_into().unwrap()) as u32;
    let mut link = Link::new(profile, 42);
    let mut delays = Vec::new();
    let mut next = 0usize;
    loop {
        let offer_at = (next < count).then(|| start + gap * next as u32);
        let now = match (offer_at, link.next_due()) {
            (Some(o), Some(d)) => o.min(d),
            (Some(o), None) => o,
            (None, Some(d)) => d,
            (None, None) => break,
        };
        while let Some(frame) = link.pop_due(now) {
            delays.push(now - sent_at(&frame));
        }
        if offer_at == Some(now) {
            let mut frame = vec![0u8; size];
            frame[..8].copy_from_slice(&(next as u64).to_be_bytes());
            link.offer(now, &frame);
            next += 1;
        }
    }
    (delays, link)
}

fn mean_ms(v: &[Duration]) -> f64 {
    v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1000.0
}

#[test]
fn delay_and_jitter_match_the_setting_within_a_fifth_of_a_millisecond() {
    let profile = Profile {
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(10),
        reorder: true,
        ..Profile::default()
    };
    let (delays, _) = run(profile, 20_000, 200, Duration::from_millis(1));
    let mean = mean_ms(&delays);
    let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    println!("delay mean {mean:.2} ms, min {min:?}, max {max:?}");
    assert!((mean - 40.0).abs() < 0.2, "mean delay {mean:.2} ms");
    assert!(*min >= Duration::from_millis(30) && *max <= Duration::from_millis(50), "{min:?}..{max:?}");
}

#[test]
fn random_loss_matches_the_setting_within_four_standard_deviations() {
    let p = 0.05;
    let n = 40_000;
    let (_, link) = run(Profile { loss: p, ..Profile::default() }, n, 200, Duration::from_millis(1));
    let measured = link.stats().dropped as f64 / n as f64;
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    println!("loss {measured:.4} (set {p}, sigma {sigma:.4})");
    assert!((measured - p).abs() < 4.0 * sigma, "loss {measured:.4}");
}

#[test]
fn the_rate_limit_holds_within_one_percent_and_a_full_queue_drops() {
    // 10 Mbit/s offered 20 Mbit/s of 1250-byte frames for 2 s: half must be dropped, and what
    // goes through goes at the set rate.
    let profile = Profile { rate_bps: Some(10_000_000), queue: Duration::from_millis(100), ..Profile::default() };
    let gap = Duration::from_micros(500);
    let (delays, link) = run(profile, 4000, 1250, gap);
    let delivered = link.stats().delivered as f64;
    let seconds = 4000.0 * gap.as_secs_f64() + delays.last().unwrap().as_secs_f64();
    let rate = delivered * 1250.0 * 8.0 / seconds;
    println!("rate {:.2} Mbit/s, delivered {delivered}, max queueing {:?}", rate / 1e6, delays.iter().max());
    assert!((rate - 10e6).abs() / 10e6 < 0.01, "rate {:.3} Mbit/s", rate / 1e6);
    // 2 s at the rate plus the 100 ms queue: about 2100 of the 4000 frames get through.
    assert!((2090..=2110).contains(&link.stats().delivered), "{:?}", link.stats());
    assert!(*delays.iter().max().unwrap() <= Duration::from_millis(101), "the queue is bounded");
}

#[test]
fn without_reordering_frames_keep_their_order_and_a_blackhole_drops_everything() {
    let profile = Profile { jitter: Duration::from_millis(10), delay: Duration::from_millis(20), ..Profile::default() };
    let start = Instant::now();
    let mut link = Link::new(profile, 7);
    for i in 0..1000u64 {
        link.offer(start + Duration::from_micros(100 * i), &i.to_be_bytes());
    }
    let mut last = None;
    while let Some(frame) = link.pop_due(start + Duration::from_secs(10)) {
        let i = u64::from_be_bytes(frame[..8].try_into().unwrap());
        assert!(last.is_none_or(|l| i > l), "{i} after {last:?}");
        last = Some(i);
    }
    let mut hole = Link::new(Profile { blackhole: true, ..Profile::default() }, 1);
    assert!(!hole.offer(start, &[0; 100]));
    assert_eq!(hole.stats().dropped, 1);
}

#[test]
fn profiles_parse_from_presets_and_keys_and_bad_keys_are_named() {
    let p = Profile::parse("preset=lte-good loss=0.02 blackhole=1").unwrap();
    assert_eq!(p.delay, preset("lte-good").unwrap().delay);
    assert!((p.loss - 0.02).abs() < 1e-9 && p.blackhole);
    assert_eq!(Profile::parse("loss=2").unwrap_err().key, "loss");
    assert_eq!(Profile::parse("speed=9").unwrap_err().key, "speed");
    assert!(Profile::parse("preset=none").is_err());
}
