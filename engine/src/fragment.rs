//! In-tunnel fragmentation: a frame too large for one datagram on the path is split into equal
//! pieces, each sealed on its own, and joined again at the far end, so the TAP keeps its MTU
//! and nothing is fragmented outside the tunnel.
//!
//! A piece carries its byte offset and the frame's total length (after the data header), so
//! pieces of one frame that went different ways, even split differently, join by byte range.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::wire::{DATA_OVERHEAD, MAX_FRAME_LEN, WireError};

/// The bytes in front of a piece: its offset and the frame's total length, big-endian.
pub const PIECE_HEADER_LEN: usize = 4;
/// The most frames being joined at once; past it the oldest is dropped.
pub const MAX_PARTIAL_FRAMES: usize = 256;

/// How many pieces a frame of `len` bytes needs for datagrams of at most `max_datagram` bytes
/// of UDP payload, and the byte range of piece `i`. One piece means a whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    len: usize,
    pieces: usize,
}

impl Split {
    /// Splits a frame of `len` bytes for `max_datagram`.
    pub fn new(len: usize, max_datagram: usize) -> Self {
        if len + DATA_OVERHEAD <= max_datagram {
            return Self { len, pieces: 1 };
        }
        let room = max_datagram.saturating_sub(DATA_OVERHEAD + PIECE_HEADER_LEN).max(64);
        Self { len, pieces: len.div_ceil(room) }
    }

    /// The number of pieces (1: the frame goes whole).
    pub const fn pieces(&self) -> usize {
        self.pieces
    }

    /// The byte range of piece `i`: equal pieces, the last one shorter.
    pub fn range(&self, i: usize) -> Range<usize> {
        let size = self.len.div_ceil(self.pieces);
        let start = (i * size).min(self.len);
        start..(start + size).min(self.len)
    }
}

/// Writes a piece's header.
pub fn emit_piece_header(offset: usize, total: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(offset as u16).to_be_bytes());
    out.extend_from_slice(&(total as u16).to_be_bytes());
}

/// A piece as received: where it goes in which frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// Its byte offset in the frame.
    pub offset: usize,
    /// The frame's length.
    pub total: usize,
    /// Its bytes.
    pub bytes: &'a [u8],
}

impl<'a> Piece<'a> {
    /// Parses a piece (the payload after the data header).
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::Malformed`] (empty, past the end, or a frame
    /// larger than braid carries).
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let (header, bytes) = body.split_at_checked(PIECE_HEADER_LEN).ok_or(WireError::Truncated)?;
        let offset = usize::from(u16::from_be_bytes([header[0], header[1]]));
        let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if bytes.is_empty() || total > MAX_FRAME_LEN || offset + bytes.len() > total {
            return Err(WireError::Malformed);
        }
        Ok(Self { offset, total, bytes })
    }
}

#[derive(Debug)]
struct Partial {
    frame: Vec<u8>,
    /// Byte ranges received so far, sorted and disjoint.
    have: Vec<Range<usize>>,
    started: Instant,
}

/// Frames being joined, by frame sequence.
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: BTreeMap<u64, Partial>,
}

/// What a piece did.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// The frame is complete.
    Frame(Vec<u8>),
    /// More pieces are needed.
    Waiting,
    /// The piece disagrees with earlier ones about the frame's length.
    Inconsistent,
}

impl Reassembly {
    /// Adds a piece of frame `seq`.
    pub fn add(&mut self, now: Instant, seq: u64, piece: Piece<'_>) -> Joined {
        let partial = self.partial.entry(seq).or_insert_with(|| Partial {
            frame: vec![0; piece.total],
            have: Vec::new(),
            started: now,
        });
        if partial.frame.len() != piece.total {
            return Joined::Inconsistent;
        }
        let range = piece.offset..piece.offset + piece.bytes.len();
        partial.frame[range.clone()].copy_from_slice(piece.bytes);
        partial.have.push(range);
        partial.have.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(partial.have.len());
        for r in partial.have.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        partial.have = merged;
        if partial.have.first().is_some_and(|r| r.start == 0 && r.end == piece.total) {
            return self.partial.remove(&seq).map_or(Joined::Waiting, |p| Joined::Frame(p.frame));
        }
        if self.partial.len() > MAX_PARTIAL_FRAMES {
            self.partial.pop_first();
        }
        Joined::Waiting
    }

    /// Drops frames started more than `keep` ago, or below `expected` (delivered or given up).
    pub fn expire(&mut self, now: Instant, keep: Duration, expected: u64) {
        self.partial.retain(|&seq, p| seq >= expected && now.saturating_duration_since(p.started) <= keep);
    }

    /// How many frames are being joined.
    pub fn len(&self) -> usize {
        self.partial.len()
    }

    /// Whether no frame is being joined.
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn piece_bytes(frame: &[u8], range: Range<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        emit_piece_header(range.start, frame.len(), &mut out);
        out.extend_from_slice(&frame[range]);
        out
    }

    #[test]
    fn a_full_size_frame_over_a_1420_byte_path_is_split_in_two_equal_pieces() {
        let split = Split::new(1514, 1420 - 48);
        assert_eq!(split.pieces(), 2);
        assert_eq!((split.range(0), split.range(1)), (0..757, 757..1514));
        assert_eq!(Split::new(1000, 1452).pieces(), 1);
    }

    #[test]
    fn pieces_join_in_any_order_and_from_different_splits() {
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut r = Reassembly::default();
        let t = now();
        let a = piece_bytes(&frame, 1500..3000);
        let b = piece_bytes(&frame, 0..1000);
        let c = piece_bytes(&frame, 800..1600);
        assert_eq!(r.add(t, 7, Piece::parse(&a).unwrap()), Joined::Waiting);
        assert_eq!(r.add(t, 7, Piece::parse(&b).unwrap()), Joined::Waiting);
        assert_eq!(r.add(t, 7, Piece::parse(&c).unwrap()), Joined::Frame(frame));
        assert!(r.is_empty());
    }

    #[test]
    fn a_piece_past_the_end_or_of_another_length_is_refused() {
        let frame = vec![1u8; 100];
        let mut bad = Vec::new();
        emit_piece_header(90, 100, &mut bad);
        bad.extend_from_slice(&[0; 20]);
        assert_eq!(Piece::parse(&bad), Err(WireError::Malformed));
        assert_eq!(Piece::parse(&[0, 0]), Err(WireError::Truncated));
        let mut r = Reassembly::default();
        let t = now();
        r.add(t, 1, Piece::parse(&piece_bytes(&frame, 0..50)).unwrap());
        let other = vec![1u8; 120];
        assert_eq!(r.add(t, 1, Piece::parse(&piece_bytes(&other, 60..120)).unwrap()), Joined::Inconsistent);
    }

    #[test]
    fn frames_never_completed_are_dropped_after_the_keep_time() {
        let frame = vec![1u8; 100];
        let mut r = Reassembly::default();
        let t = now();
        r.add(t, 1, Piece::parse(&piece_bytes(&frame, 0..50)).unwrap());
        r.expire(t + Duration::from_millis(100), Duration::from_millis(500), 0);
        assert_eq!(r.len(), 1);
        r.expire(t + Duration::from_millis(600), Duration::from_millis(500), 0);
        assert!(r.is_empty());
    }
}
