//! What the lab reads off real clients' traffic: an iperf3 UDP stream captured on the ingest
//! side (loss, duplicates, reordering, the longest stall), and an MPEG-TS recording
//! (continuity-counter errors).

use std::collections::BTreeSet;
use std::fmt;

/// One datagram of the stream as captured: when it arrived and its iperf3 sequence number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Seconds since the Unix epoch (tshark's `frame.time_epoch`).
    pub at: f64,
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
        let seq = u64::from_str_radix(hex.get(16..24)?, 16).ok()?;
        Some(Self { at, seq })
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
    /// The longest such stall that began in each window between consecutive event times.
    pub window_gaps_ms: Vec<f64>,
}

impl StreamReport {
    /// Reads `arrivals` (in capture order) of a stream of `sent` datagrams that began at
    /// `start`; `events` are offsets in seconds from `start` that cut the run into windows.
    pub fn new(sent: u64, start: f64, events: &[f64], arrivals: &[Arrival]) -> Self {
        let mut seen = BTreeSet::new();
        let (mut duplicated, mut reordered, mut highest) = (0, 0, None::<u64>);
        for a in arrivals {
            if !seen.insert(a.seq) {
                duplicated += 1;
                continue;
            }
            if highest.is_some_and(|h| a.seq < h) {
                reordered += 1;
            }
            highest = highest.max(Some(a.seq));
        }
        let mut bounds: Vec<f64> = events.iter().map(|e| start + e).collect();
        bounds.insert(0, f64::NEG_INFINITY);
        bounds.push(f64::INFINITY);
        let mut window_gaps_ms: Vec<f64> = vec![0.0; bounds.len() - 1];
        let mut max_gap_ms: f64 = 0.0;
        for pair in arrivals.windows(2) {
            let gap = (pair[1].at - pair[0].at) * 1000.0;
            max_gap_ms = max_gap_ms.max(gap);
            if let Some(w) = bounds.windows(2).position(|b| pair[0].at >= b[0] && pair[0].at < b[1]) {
                window_gaps_ms[w] = window_gaps_ms[w].max(gap);
            }
        }
        let unique = seen.len() as u64;
        Self {
            sent,
            received: arrivals.len() as u64,
            lost: sent.saturating_sub(unique),
            duplicated,
            reordered,
            max_gap_ms,
            window_gaps_ms,
        }
    }
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} received={} lost={} dup={} reordered={} max_gap_ms={:.0}",
            self.sent, self.received, self.lost, self.duplicated, self.reordered, self.max_gap_ms
        )?;
        let gaps: Vec<String> = self.window_gaps_ms.iter().map(|g| format!("{g:.0}")).collect();
        write!(f, " window_gaps_ms={}", gaps.join(","))
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
        list.iter().map(|&(at, seq)| Arrival { at, seq }).collect()
    }

    #[test]
    fn a_tshark_line_gives_the_arrival_time_and_the_iperf3_count() {
        let a = Arrival::parse("1700000000.250000000 6553f10000012a3f0000002a000000").unwrap();
        assert_eq!(a, Arrival { at: 1_700_000_000.25, seq: 42 });
        assert_eq!(Arrival::parse("1700000000.25 0000"), None);
        assert_eq!(Arrival::parse("garbage"), None);
    }

    #[test]
    fn loss_duplicates_reordering_and_stalls_are_counted_per_window() {
        let a = arrivals(&[(100.0, 1), (100.01, 3), (100.02, 2), (100.02, 2), (100.5, 4), (101.2, 6)]);
        let r = StreamReport::new(7, 100.0, &[0.4, 1.0], &a);
        assert_eq!((r.received, r.lost, r.duplicated, r.reordered), (6, 2, 1, 1));
        assert!((r.max_gap_ms - 700.0).abs() < 1e-6);
        assert_eq!(r.window_gaps_ms.len(), 3);
        assert!((r.window_gaps_ms[0] - 480.0).abs() < 1e-6, "{:?}", r.window_gaps_ms);
        assert!((r.window_gaps_ms[1] - 700.0).abs() < 1e-6);
        assert_eq!(r.window_gaps_ms[2], 0.0);
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
