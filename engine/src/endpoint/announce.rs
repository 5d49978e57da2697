//! The rig's MAC addresses, announced on the ingest LAN when a new gateway carries the rig.
//!
//! A gateway that takes over a rig (a restart, a keepalived pair's other half) is a new port
//! for the ingest LAN's switches, which still send the rig's traffic where they last saw it.
//! Upstream frames teach them soon enough while the rig sends; traffic only toward the rig
//! would wait for the old entries to age out. So, as QEMU does after a live migration, the edge
//! sends a short burst of RARP frames from every source address it has seen on its LAN, through
//! the new session: the gateway puts them on the ingest LAN, and the switches learn the new
//! port before the first downstream frame.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Source addresses remembered, the most recently seen kept.
pub const MAX_ANNOUNCED: usize = 32;
/// When the announcements go, from the new session's start: three, as a burst that one loss
/// does not silence.
pub const ANNOUNCE_AT: [Duration; 3] = [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(300)];

/// The bytes of a RARP frame (60, the Ethernet minimum without the FCS).
pub const RARP_LEN: usize = 60;

/// The addresses to announce, and when.
#[derive(Debug, Default)]
pub struct Announcer {
    macs: VecDeque<[u8; 6]>,
    due: VecDeque<Instant>,
}

impl Announcer {
    /// Notes the source address of a frame from the LAN (a unicast one other than zero).
    pub fn note(&mut self, frame: &[u8]) {
        let Some(mac) = frame.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()) else { return };
        if mac[0] & 1 == 1 || mac == [0; 6] || self.macs.back() == Some(&mac) {
            return;
        }
        if let Some(i) = self.macs.iter().position(|m| *m == mac) {
            self.macs.remove(i);
        } else if self.macs.len() == MAX_ANNOUNCED {
            self.macs.pop_front();
        }
        self.macs.push_back(mac);
    }

    /// Announces every address noted, at [`ANNOUNCE_AT`] from `now` (a burst already under way
    /// starts again).
    pub fn schedule(&mut self, now: Instant) {
        self.due = ANNOUNCE_AT.iter().map(|d| now + *d).collect();
    }

    /// When the next announcement is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.front().copied().filter(|_| !self.macs.is_empty())
    }

    /// The frames of the announcement due by `now`, if one is; each is written to `out`.
    pub fn take_due(&mut self, now: Instant, mut out: impl FnMut(&[u8])) {
        if self.due.front().is_none_or(|at| *at > now) {
            return;
        }
        self.due.pop_front();
        for mac in &self.macs {
            out(&rarp(mac));
        }
    }
}

/// A RARP request from `mac` (RFC 903), broadcast, as QEMU announces a migrated guest.
pub fn rarp(mac: &[u8; 6]) -> [u8; RARP_LEN] {
    let mut frame = [0u8; RARP_LEN];
    frame[..6].fill(0xff);
    frame[6..12].copy_from_slice(mac);
    frame[12..14].copy_from_slice(&0x8035u16.to_be_bytes());
    // Hardware type Ethernet, protocol IPv4, address lengths 6 and 4, opcode 3 (reverse request).
    frame[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 3]);
    frame[22..28].copy_from_slice(mac);
    frame[32..38].copy_from_slice(mac);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_from(mac: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[6..12].copy_from_slice(&mac);
        f
    }

    #[test]
    fn each_unicast_source_is_announced_three_times_from_a_new_session() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut a = Announcer::default();
        let cam = [2, 0, 0, 0, 0, 1];
        for mac in [cam, cam, [2, 0, 0, 0, 0, 2], [1, 0, 0x5e, 0, 0, 1], [0; 6], cam] {
            a.note(&frame_from(mac));
        }
        a.note(&[0u8; 8]);
        assert_eq!(a.next(), None, "nothing scheduled yet");
        a.schedule(now);
        let mut sent = Vec::new();
        for at in ANNOUNCE_AT {
            assert_eq!(a.next(), Some(now + at));
            a.take_due(now + at, |f| sent.push(f.to_vec()));
        }
        assert_eq!(a.next(), None);
        assert_eq!(sent.len(), 6, "two unicast sources, three times each");
        assert!(sent.iter().all(|f| f[..6] == [0xff; 6] && f[12..14] == [0x80, 0x35]));
        assert_eq!(sent[0][6..12], [2, 0, 0, 0, 0, 2], "least recently seen first");
        assert_eq!(sent[1][22..28], cam);
    }

    #[test]
    fn only_the_most_recent_sources_are_kept() {
        let mut a = Announcer::default();
        for i in 0..(MAX_ANNOUNCED as u8 + 5) {
            a.note(&frame_from([2, 0, 0, 0, 0, i]));
        }
        assert_eq!(a.macs.len(), MAX_ANNOUNCED);
        assert_eq!(a.macs.front(), Some(&[2, 0, 0, 0, 0, 5]));
    }
}
