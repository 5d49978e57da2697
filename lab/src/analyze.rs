//! What the lab reads off real clients' traffic: an iperf3 UDP stream captured on the ingest
//! side (loss, duplicates, reordering, the longest stall, one-way latency), and an MPEG-TS
//! recording (continuity-counter errors).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One datagram of the stream as captured: when it arrived, when it was sent and its iperf3
/// sequence number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds since the Unix epoch (tshark's `frame.time_epoch`).
    pub at: f64,
    /// When iperf3 sent it, in seconds, from the datagram header, on the sender's clock: iperf3
    /// 3.12 stamps `CLOCK_MONOTONIC`, so [`Arrival::with_clock_offset`] puts it on the
    /// capture's clock.
    pub sent: f64,
    /// iperf3's packet count, from the datagram header.
    pub seq: u64,
}

impl Arrival {
    /// Parses a tshark line `EPOCH HEX_PAYLOAD`: iperf3's UDP header is seconds, microseconds and
    /// a 32-bit packet count, big-endian. `None` for a line that is not such a datagram.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let at = fields.next()?.parse().ok()?;
        let hex = fields.next()?.replace(':', "");
        let word = |range: std::ops::Range<usize>| u64::from_str_radix(hex.get(range)?, 16).ok();
        let (secs, micros, seq) = (word(0..8)?, word(8..16)?, word(16..24)?);
        Some(Self { at, sent: secs as f64 + micros as f64 / 1e6, seq })
    }

    /// The same arrival with its send time moved by `offset` seconds (from the sender's clock to
    /// the capture's).
    #[must_use]
    pub fn with_clock_offset(self, offset: f64) -> Self {
        Self { sent: self.sent + offset, ..self }
    }
}

/// A stream's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamReport {
    /// Datagrams the client sent.
    pub sent: u64,
    /// Datagrams that arrived, copies included.
    pub received: u64,
    /// Sent datagrams that never arrived.
    pub lost: u64,
    /// Copies beyond the first.
    pub duplicated: u64,
    /// First copies that arrived after a later datagram.
    pub reordered: u64,
    /// The longest time without a datagram between the first and the last arrival, in ms.
    pub max_gap_ms: f64,
    /// The longest such stall that began in each window.
    pub window_gaps_ms: Vec<f64>,
    /// Datagrams sent in each window (by send time), lost or not.
    pub window_sent: Vec<u64>,
    /// Datagrams sent in each window (by send time) that never arrived. A lost datagram's send
    /// time is interpolated by sequence number between the received datagrams on either side
    /// of it (iperf3 stamps every datagram it sends); before the first or after the last
    /// received one, it is extrapolated at the stream's mean interval.
    pub window_lost: Vec<u64>,
    /// Median one-way latency of first copies (arrival minus send time), in ms.
    pub owd_p50_ms: Option<f64>,
    /// 99th percentile of the same, in ms.
    pub owd_p99_ms: Option<f64>,
    /// The one-way latency of every first copy, in ms, sorted.
    pub owd_ms: Vec<f64>,
}

impl StreamReport {
    /// Reads `arrivals` (in capture order) of a stream of `sent` datagrams (sequence numbers 1
    /// to `sent`, as iperf3 counts) that began at `start`; `windows` are `[from, to)` offsets in
    /// seconds from `start`, measured on their own (they may overlap). Send times must be on the
    /// capture's clock.
    pub fn new(sent: u64, start: f64, windows: &[(f64, f64)], arrivals: &[Arrival]) -> Self {
        let mut seen = BTreeSet::new();
        let mut sent_at = BTreeMap::new();
        let mut owd_ms = Vec::new();
        let (mut duplicated, mut reordered, mut highest) = (0, 0, None::<u64>);
        for a in arrivals {
            if !seen.insert(a.seq) {
                duplicated += 1;
                continue;
            }
            sent_at.insert(a.seq, a.sent);
            owd_ms.push((a.at - a.sent) * 1000.0);
            if highest.is_some_and(|h| a.seq < h) {
                reordered += 1;
            }
            highest = highest.max(Some(a.seq));
        }
        let windows: Vec<(f64, f64)> = windows.iter().map(|(from, to)| (start + from, start + to)).collect();
        let windows_of = |t: f64| windows.iter().enumerate().filter(move |(_, w)| t >= w.0 && t < w.1).map(|(i, _)| i);
        let mut window_gaps_ms: Vec<f64> = vec![0.0; windows.len()];
        let mut max_gap_ms: f64 = 0.0;
        for pair in arrivals.windows(2) {
            let gap = (pair[1].at - pair[0].at) * 1000.0;
            max_gap_ms = max_gap_ms.max(gap);
            for w in windows_of(pair[0].at) {
                window_gaps_ms[w] = window_gaps_ms[w].max(gap);
            }
        }
        let (mut window_sent, mut window_lost) = (vec![0; windows.len()], vec![0; windows.len()]);
        for (at, lost) in send_times(sent, &sent_at) {
            for w in windows_of(at) {
                window_sent[w] += 1;
                window_lost[w] += u64::from(lost);
            }
        }
        owd_ms.sort_by(f64::total_cmp);
        let unique = seen.len() as u64;
        Self {
            sent,
            received: arrivals.len() as u64,
            lost: sent.saturating_sub(unique),
            duplicated,
            reordered,
            max_gap_ms,
            window_gaps_ms,
            window_sent,
            window_lost,
            owd_p50_ms: percentile(&owd_ms, 0.5),
            owd_p99_ms: percentile(&owd_ms, 0.99),
            owd_ms,
        }
    }

    /// The share (0..=1) of first copies whose one-way latency exceeded `limit_ms`; `None` if
    /// none arrived.
    pub fn share_over(&self, limit_ms: f64) -> Option<f64> {
        let within = self.owd_ms.partition_point(|&ms| ms <= limit_ms);
        (!self.owd_ms.is_empty()).then(|| (self.owd_ms.len() - within) as f64 / self.owd_ms.len() as f64)
    }
}
/// Every sequence number from 1 to `sent` (or to the highest received, if beyond) with its send
/// time and whether it was lost. `sent_at` holds the send times of those received; a lost one's
/// is interpolated between its received neighbours by sequence number, or extrapolated at the
/// mean interval before the first or after the last. Empty when nothing was received.
fn send_times(sent: u64, sent_at: &BTreeMap<u64, f64>) -> Vec<(f64, bool)> {
    let (Some((&first, &t_first)), Some((&last, &t_last))) = (sent_at.first_key_value(), sent_at.last_key_value())
    else {
        return Vec::new();
    };
    let interval = if last > first { (t_last - t_first) / (last - first) as f64 } else { 0.0 };
    (1..=sent.max(last))
        .map(|seq| {
            if let Some(&at) = sent_at.get(&seq) {
                return (at, false);
            }
            let before = sent_at.range(..seq).next_back();
            let after = sent_at.range(seq..).next();
            let at = match (before, after) {
                (Some((&s0, &t0)), Some((&s1, &t1))) => t0 + (t1 - t0) * (seq - s0) as f64 / (s1 - s0) as f64,
                (Some((&s0, &t0)), None) => t0 + (seq - s0) as f64 * interval,
                (None, Some((&s1, &t1))) => t1 - (s1 - seq) as f64 * interval,
                (None, None) => t_first,
            };
            (at, true)
        })
        .collect()
}

/// The nearest-rank percentile `p` (0..=1) of sorted values; `None` if there are none.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} received={} unique={} lost={} dup={} reordered={} max_gap_ms={:.0}",
            self.sent,
            self.received,
            self.received.saturating_sub(self.duplicated),
            self.lost,
            self.duplicated,
            self.reordered,
            self.max_gap_ms
        )?;
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        write!(f, " owd_p50_ms={} owd_p99_ms={}", ms(self.owd_p50_ms), ms(self.owd_p99_ms))
    }
}

/// An MPEG-TS recording's continuity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TsReport {
    /// 188-byte packets read.
    pub packets: u64,
    /// Packets without the 0x47 sync byte where one was due.
    pub sync_errors: u64,
    /// Continuity-counter discontinuities (a lost, duplicated-twice or reordered packet).
    pub cc_errors: u64,
    /// Where the first discontinuities are: packet index and PID.
    pub first_errors: Vec<(u64, u16)>,
}

/// The TS packet length.
pub const TS_PACKET: usize = 188;

impl TsReport {
    /// Checks every PID's continuity counter (ISO/IEC 13818-1 §2.4.3.3): it increments by one
    /// per packet with payload, may repeat once (a duplicate), and restarts where the
    /// discontinuity indicator is set. The null PID is not counted.
    pub fn check(bytes: &[u8]) -> Self {
        let mut report = Self::default();
        let mut last: Vec<Option<(u8, bool)>> = vec![None; 8192];
        for packet in bytes.chunks_exact(TS_PACKET) {
            report.packets += 1;
            if packet[0] != 0x47 {
                report.sync_errors += 1;
                continue;
            }
            let pid = usize::from(u16::from_be_bytes([packet[1], packet[2]]) & 0x1FFF);
            let control = (packet[3] >> 4) & 0x3;
            let cc = packet[3] & 0xF;
            let has_payload = control & 0x1 != 0;
            let discontinuity = control & 0x2 != 0 && packet[4] > 0 && packet[5] & 0x80 != 0;
            if pid == 0x1FFF {
                continue;
            }
            let expected_ok = match last[pid] {
                None => true,
                _ if discontinuity => true,
                Some((prev, _)) if !has_payload => cc == prev,
                Some((prev, repeated)) => cc == (prev + 1) & 0xF || (cc == prev && !repeated),
            };
            if !expected_ok {
                report.cc_errors += 1;
                if report.first_errors.len() < 8 {
                    report.first_errors.push((report.packets - 1, pid as u16));
                }
            }
            let repeated = last[pid].is_some_and(|(prev, _)| prev == cc && has_payload);
            last[pid] = Some((cc, repeated));
        }
        report
    }
}

impl fmt::Display for TsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ts_packets={} sync_errors={} cc_errors={}", self.packets, self.sync_errors, self.cc_errors)?;
        if !self.first_errors.is_empty() {
            let at: Vec<String> = self.first_errors.iter().map(|(i, pid)| format!("{i}:{pid:#x}")).collect();
            write!(f, " cc_error_at={}", at.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(list: &[(f64, u64)]) -> Vec<Arrival> {
        list.iter().map(|&(at, seq)| Arrival { at, sent: at, seq }).collect()
    }

    #[test]
    fn a_tshark_line_gives_the_arrival_time_the_send_time_and_the_iperf3_count() {
        let a = Arrival::parse("1700000000.250000000 6553f10000012a3f0000002a000000").unwrap();
        assert_eq!((a.at, a.seq), (1_700_000_000.25, 42));
        assert!((a.sent - 1_700_000_000.076_351).abs() < 1e-6, "{a:?}");
        // iperf3 3.12 stamps its monotonic clock: 807.6 s after boot, in this capture.
        let m = Arrival::parse("1796162040.673250000 00000327000976db00000001ac14ebd2").unwrap();
        assert_eq!(m.seq, 1);
        assert!((m.sent - 807.620_251).abs() < 1e-9, "{m:?}");
        assert!((m.with_clock_offset(1_796_161_233.0).sent - 1_796_162_040.620_251).abs() < 1e-6);
        assert_eq!(Arrival::parse("1700000000.25 0000"), None);
        assert_eq!(Arrival::parse("garbage"), None);
    }

    #[test]
    fn loss_duplicates_reordering_and_stalls_are_counted_per_window() {
        let a = arrivals(&[(100.0, 1), (100.01, 3), (100.02, 2), (100.02, 2), (100.5, 4), (101.2, 6)]);
        let r = StreamReport::new(7, 100.0, &[(f64::NEG_INFINITY, 0.4), (0.4, 1.0), (1.0, f64::INFINITY)], &a);
        assert_eq!((r.received, r.lost, r.duplicated, r.reordered), (6, 2, 1, 1));
        assert!((r.max_gap_ms - 700.0).abs() < 1e-6);
        assert_eq!(r.window_gaps_ms.len(), 3);
        assert!((r.window_gaps_ms[0] - 480.0).abs() < 1e-6, "{:?}", r.window_gaps_ms);
        assert!((r.window_gaps_ms[1] - 700.0).abs() < 1e-6);
        assert_eq!(r.window_gaps_ms[2], 0.0);
    }

    #[test]
    fn one_way_latency_is_the_arrival_minus_the_send_time_of_first_copies_at_nearest_rank() {
        // 100 datagrams sent every 10 ms, datagram i taking i ms; then a late duplicate of 1.
        let mut a: Vec<Arrival> = (1..=100u64)
            .map(|i| Arrival { at: 100.0 + i as f64 * 0.01 + i as f64 / 1000.0, sent: 100.0 + i as f64 * 0.01, seq: i })
            .collect();
        a.push(Arrival { at: 105.0, sent: 100.01, seq: 1 });
        let r = StreamReport::new(100, 100.0, &[], &a);
        assert!((r.owd_p50_ms.unwrap() - 50.0).abs() < 1e-6, "{:?}", r.owd_p50_ms);
        assert!((r.owd_p99_ms.unwrap() - 99.0).abs() < 1e-6, "{:?}", r.owd_p99_ms);
        // Datagrams 96 to 100 took more than 95.5 ms: 5 of 100.
        assert_eq!(r.share_over(95.5), Some(0.05));
        assert_eq!(r.share_over(100.0), Some(0.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
        let empty = StreamReport::new(5, 100.0, &[(0.0, 1.0), (1.0, 2.0)], &[]);
        assert_eq!((empty.lost, empty.owd_p50_ms, empty.window_lost.clone()), (5, None, vec![0, 0]));
        assert_eq!(empty.share_over(1.0), None);
        assert!(empty.to_string().contains("owd_p50_ms=- owd_p99_ms=-"), "{empty}");
    }

    #[test]
    fn a_lost_datagram_counts_in_the_window_its_neighbours_send_times_place_it_in() {
        // Sent every 100 ms from 100.1 (seq 1) to 102.0 (seq 20); 8, 9 and 10 (sent at 100.8,
        // 100.9 and 101.0) never arrive, nor does the head 1 or the tail 19 and 20. Windows:
        // before 100.75 (1 to 7), to 101.45 (8 to 14), after (15 to 20).
        let a: Vec<Arrival> = (2..=18u64)
            .filter(|s| !(8..=10).contains(s))
            .map(|s| Arrival { at: 100.05 + s as f64 * 0.1, sent: 100.0 + s as f64 * 0.1, seq: s })
            .collect();
        let r = StreamReport::new(
            20,
            100.0,
            &[(f64::NEG_INFINITY, 0.75), (0.75, 1.45), (1.45, f64::INFINITY), (0.0, 0.75)],
            &a,
        );
        assert_eq!(r.lost, 6);
        assert_eq!(r.window_sent, vec![7, 7, 6, 7], "{r:?}");
        assert_eq!(r.window_lost, vec![1, 3, 2, 1], "{r:?}");
    }

    fn ts_packet(pid: u16, cc: u8, payload: bool) -> [u8; TS_PACKET] {
        let mut p = [0xFFu8; TS_PACKET];
        p[0] = 0x47;
        p[1..3].copy_from_slice(&pid.to_be_bytes());
        p[3] = (if payload { 0x10 } else { 0x20 }) | cc;
        p[4] = 0;
        p
    }

    #[test]
    fn continuity_counters_count_a_lost_packet_once_and_allow_one_duplicate() {
        let mut ts = Vec::new();
        for cc in [0, 1, 1, 2, 4, 5] {
            ts.extend_from_slice(&ts_packet(0x100, cc, true));
        }
        ts.extend_from_slice(&ts_packet(0x100, 5, false));
        ts.extend_from_slice(&ts_packet(0x101, 9, true));
        ts.extend_from_slice(&ts_packet(0x1FFF, 3, true));
        let r = TsReport::check(&ts);
        assert_eq!(r, TsReport { packets: 9, sync_errors: 0, cc_errors: 1, first_errors: vec![(4, 0x100)] });
    }
}
