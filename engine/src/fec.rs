//! Forward error correction over the frames of a short block: systematic Reed-Solomon, so a
//! frame lost on one link is rebuilt from what the others carried, without a round trip.
//!
//! The sender ([`FecEncoder`]) takes frames in sequence order and groups up to `originals`
//! consecutive ones into a block. When the block is full (or closed early), it makes recovery
//! shards over it: each frame, its length in two bytes and then its bytes, is padded with zeros
//! to the block's longest and cut into `stripes` equal original shards (one, unless a shard
//! would not fit the path's datagram: then a recovery shard is a datagram no larger than a piece
//! of a frame, and each one still helps on its own). A block of `parity` frames' worth of
//! recovery has `parity × stripes` recovery shards, each travelling with a [`ParityHeader`]
//! naming the block.
//!
//! The receiver ([`FecDecoder`]) keeps a copy of the recent frames it received and the recovery
//! shards of the recent blocks. Once a block has `originals` pieces in all (frames and recovery
//! shards) and misses some of its frames, it rebuilds them. Everything in a recovery shard's
//! header is checked against the block it names; a shard that disagrees is refused with a
//! [`FecError`], never a panic.
//!
//! The codec is `reed-solomon-simd`: an O(n log n) Reed-Solomon over GF(2^16) with SIMD
//! kernels, any shard count up to 65535 and shards of any even size, with no unsafe code in its
//! API and two small dependencies.

use std::collections::{BTreeMap, VecDeque};

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// The most frames one block covers.
pub const MAX_ORIGINALS: usize = 64;
/// The most frames' worth of recovery one block has.
pub const MAX_PARITY: usize = 32;
/// The most original shards one frame is cut into.
pub const MAX_STRIPES: usize = 8;
/// The most recovery shards one block has (the count travels in one byte).
const MAX_RECOVERY_SHARDS: usize = 255;
/// The smallest shard the encoder cuts a frame into.
const MIN_SHARD: usize = 64;
/// The largest frame a block carries (the length prefix is two bytes).
pub const MAX_FRAME: usize = 9216;
/// Bytes of a recovery shard's header: the block's first frame (8), its frame count (1), the
/// shards per frame (1), its recovery shard count (1), this shard's index (1) and the shard size
/// (2).
pub const PARITY_HEADER_LEN: usize = 14;
/// Bytes before a frame inside an original shard: its length.
const LENGTH_PREFIX: usize = 2;
/// Recovery shards kept for blocks not yet complete, at most.
const MAX_PENDING_BLOCKS: usize = 64;

/// Why a recovery shard or a block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// The header is shorter than [`PARITY_HEADER_LEN`].
    #[error("recovery shard header truncated")]
    Truncated,
    /// A count is zero or past [`MAX_ORIGINALS`] / [`MAX_PARITY`], or the index is not below
    /// the recovery shard count.
    #[error("recovery shard header out of range")]
    OutOfRange,
    /// The shard size is odd, too small for a frame, too large, or not the bytes that follow.
    #[error("recovery shard size does not match")]
    BadSize,
    /// The header disagrees with another shard of the same block.
    #[error("recovery shard disagrees with its block")]
    Inconsistent,
    /// A frame is longer than [`MAX_FRAME`] or than its block's shards.
    #[error("frame too long for the block")]
    FrameTooLong,
    /// The codec refused the block, or a rebuilt frame's length prefix is impossible.
    #[error("the block could not be decoded")]
    Codec,
}

/// What a recovery shard says of its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParityHeader {
    /// The sequence of the block's first frame.
    pub first: u64,
    /// How many consecutive frames the block covers.
    pub originals: u8,
    /// How many original shards each frame is cut into.
    pub stripes: u8,
    /// How many recovery shards the block has.
    pub parity: u8,
    /// This shard's index among them.
    pub index: u8,
    /// The size of every shard of the block.
    pub shard_len: u16,
}

impl ParityHeader {
    /// Reads a header and the shard after it from `bytes`, checking every field.
    ///
    /// # Errors
    /// A [`FecError`] for a truncated header, a field out of range or a shard of another size.
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), FecError> {
        let (head, shard) = bytes.split_at_checked(PARITY_HEADER_LEN).ok_or(FecError::Truncated)?;
        let mut first = [0u8; 8];
        first.copy_from_slice(&head[..8]);
        let header = Self {
            first: u64::from_be_bytes(first),
            originals: head[8],
            stripes: head[9],
            parity: head[10],
            index: head[11],
            shard_len: u16::from_be_bytes([head[12], head[13]]),
        };
        let (originals, stripes) = (usize::from(header.originals), usize::from(header.stripes));
        if !(1..=MAX_ORIGINALS).contains(&originals)
            || !(1..=MAX_STRIPES).contains(&stripes)
            || header.parity == 0
            || header.index >= header.parity
        {
            return Err(FecError::OutOfRange);
        }
        let len = usize::from(header.shard_len);
        if len % 2 != 0 || len * stripes <= LENGTH_PREFIX || len > shard_size(MAX_FRAME) || shard.len() != len {
            return Err(FecError::BadSize);
        }
        if header.first.checked_add(originals as u64).is_none() {
            return Err(FecError::OutOfRange);
        }
        Ok((header, shard))
    }

    /// Appends the header to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first.to_be_bytes());
        out.extend_from_slice(&[self.originals, self.stripes, self.parity, self.index]);
        out.extend_from_slice(&self.shard_len.to_be_bytes());
    }

    /// Whether frame `seq` is in the block.
    const fn covers(&self, seq: u64) -> bool {
        seq >= self.first && seq - self.first < self.originals as u64
    }

    /// The block's shape, which every shard of it must repeat.
    const fn shape(&self) -> (u64, u8, u8, u8, u16) {
        (self.first, self.originals, self.stripes, self.parity, self.shard_len)
    }

    /// The original shards of the block.
    const fn original_shards(&self) -> usize {
        self.originals as usize * self.stripes as usize
    }
}

/// The shard size for frames of at most `longest` bytes.
const fn shard_size(longest: usize) -> usize {
    (longest + LENGTH_PREFIX).next_multiple_of(2)
}

/// How many shards, and of what size, frames of at most `longest` bytes are cut into when a
/// shard may be at most `max_shard` bytes.
fn cut(longest: usize, max_shard: usize) -> (usize, usize) {
    let whole = longest + LENGTH_PREFIX;
    let max_shard = (max_shard & !1).max(MIN_SHARD);
    let stripes = whole.div_ceil(max_shard).clamp(1, MAX_STRIPES);
    (stripes, whole.div_ceil(stripes).next_multiple_of(2))
}

/// `frame` as `stripes` original shards of `shard_len` bytes each, one after the other in `out`.
fn original_shards(frame: &[u8], stripes: usize, shard_len: usize, out: &mut Vec<u8>) -> Result<(), FecError> {
    if frame.len() + LENGTH_PREFIX > shard_len * stripes {
        return Err(FecError::FrameTooLong);
    }
    out.clear();
    out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
    out.extend_from_slice(frame);
    out.resize(shard_len * stripes, 0);
    Ok(())
}

/// Frame `seq` among the `recent` ones (sorted by sequence), if it was received.
fn received(recent: &VecDeque<(u64, Vec<u8>)>, seq: u64) -> Option<&[u8]> {
    let at = recent.partition_point(|(s, _)| *s < seq);
    recent.get(at).filter(|(s, _)| *s == seq).map(|(_, f)| f.as_slice())
}

/// The sender's side: frames in, recovery shards (header included) out, a block at a time.
pub struct FecEncoder {
    originals: usize,
    parity: usize,
    /// The largest shard to make.
    max_shard: usize,
    /// The sequence of the open block's first frame.
    first: u64,
    frames: Vec<Vec<u8>>,
    codec: Option<ReedSolomonEncoder>,
    shard: Vec<u8>,
}

impl core::fmt::Debug for FecEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FecEncoder")
            .field("originals", &self.originals)
            .field("parity", &self.parity)
            .field("first", &self.first)
            .field("open", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl FecEncoder {
    /// Blocks of up to `originals` frames, each with `parity` recovery shards.
    ///
    /// # Errors
    /// [`FecError::OutOfRange`] if a count is zero or past its maximum.
    pub fn new(originals: usize, parity: usize) -> Result<Self, FecError> {
        if !(1..=MAX_ORIGINALS).contains(&originals) || !(1..=MAX_PARITY).contains(&parity) {
            return Err(FecError::OutOfRange);
        }
        Ok(Self {
            originals,
            parity,
            max_shard: shard_size(MAX_FRAME),
            first: 0,
            frames: Vec::with_capacity(originals),
            codec: None,
            shard: Vec::new(),
        })
    }

    /// Cuts the frames of the blocks closed from now on into shards of at most `bytes` (at
    /// least 64; a frame is cut into at most [`MAX_STRIPES`]).
    pub fn set_max_shard(&mut self, bytes: usize) {
        self.max_shard = bytes;
    }

    /// The bytes a recovery shard of a block with frames of at most `longest` bytes takes,
    /// header included.
    pub fn shard_bytes(&self, longest: usize) -> usize {
        PARITY_HEADER_LEN + cut(longest, self.max_shard).1
    }

    /// Frames in the open block.
    pub fn open(&self) -> usize {
        self.frames.len()
    }

    /// Takes in frame `seq`. A frame that does not follow the open block's last closes the block
    /// first. Returns the recovery shards of the block it closed or filled, if any: each is a
    /// header and a shard.
    ///
    /// # Errors
    /// [`FecError::FrameTooLong`] for a frame past [`MAX_FRAME`] (the open block is kept).
    pub fn push(&mut self, seq: u64, frame: &[u8]) -> Result<Vec<Vec<u8>>, FecError> {
        if frame.len() > MAX_FRAME {
            return Err(FecError::FrameTooLong);
        }
        let mut out = Vec::new();
        if !self.frames.is_empty() && seq != self.first + self.frames.len() as u64 {
            out = self.close()?;
        }
        if self.frames.is_empty() {
            self.first = seq;
        }
        self.frames.push(frame.to_vec());
        if self.frames.len() == self.originals {
            out.extend(self.close()?);
        }
        Ok(out)
    }

    /// Closes the open block now (a deadline came before it filled): its recovery shards.
    ///
    /// # Errors
    /// [`FecError::Codec`] if the codec refused the block.
    pub fn close(&mut self) -> Result<Vec<Vec<u8>>, FecError> {
        if self.frames.is_empty() {
            return Ok(Vec::new());
        }
        let frames = std::mem::take(&mut self.frames);
        let longest = frames.iter().map(Vec::len).max().unwrap_or(0);
        let (stripes, shard_len) = cut(longest, self.max_shard);
        let (originals, recovery) = (frames.len() * stripes, (self.parity * stripes).min(MAX_RECOVERY_SHARDS));
        let codec = match self.codec.as_mut() {
            Some(codec) => {
                codec.reset(originals, recovery, shard_len).map_err(|_| FecError::Codec)?;
                codec
            }
            None => {
                self.codec.insert(ReedSolomonEncoder::new(originals, recovery, shard_len).map_err(|_| FecError::Codec)?)
            }
        };
        for frame in &frames {
            original_shards(frame, stripes, shard_len, &mut self.shard)?;
            for stripe in self.shard.chunks_exact(shard_len) {
                codec.add_original_shard(stripe).map_err(|_| FecError::Codec)?;
            }
        }
        let result = codec.encode().map_err(|_| FecError::Codec)?;
        let mut out = Vec::with_capacity(recovery);
        for (index, shard) in result.recovery_iter().enumerate() {
            let header = ParityHeader {
                first: self.first,
                originals: frames.len() as u8,
                stripes: stripes as u8,
                parity: recovery as u8,
                index: index as u8,
                shard_len: shard_len as u16,
            };
            let mut packet = Vec::with_capacity(PARITY_HEADER_LEN + shard_len);
            header.emit(&mut packet);
            packet.extend_from_slice(shard);
            out.push(packet);
        }
        drop(result);
        self.frames = frames;
        self.frames.clear();
        Ok(out)
    }
}

/// A block the decoder has recovery shards for.
#[derive(Debug)]
struct Pending {
    header: ParityHeader,
    /// Recovery shards by index.
    recovery: BTreeMap<u8, Vec<u8>>,
}

/// The receiver's side: frames and recovery shards in, rebuilt frames out.
pub struct FecDecoder {
    /// Recent frames received, by sequence, oldest first, at most `keep`.
    recent: VecDeque<(u64, Vec<u8>)>,
    keep: usize,
    /// Blocks with recovery shards and missing frames, by first sequence.
    pending: BTreeMap<u64, Pending>,
    codec: Option<ReedSolomonDecoder>,
    shard: Vec<u8>,
}

impl core::fmt::Debug for FecDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FecDecoder")
            .field("recent", &self.recent.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl FecDecoder {
    /// A decoder that keeps the last `keep` frames it received (at least one block's worth).
    pub fn new(keep: usize) -> Self {
        Self {
            recent: VecDeque::new(),
            keep: keep.max(MAX_ORIGINALS),
            pending: BTreeMap::new(),
            codec: None,
            shard: Vec::new(),
        }
    }

    /// Takes in frame `seq` as received. Returns the frames it let the decoder rebuild (its
    /// block had enough pieces with it), by sequence.
    pub fn on_frame(&mut self, seq: u64, frame: &[u8]) -> Vec<(u64, Vec<u8>)> {
        if self.frame(seq).is_some() {
            return Vec::new();
        }
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        let at = self.recent.partition_point(|(s, _)| *s < seq);
        self.recent.insert(at, (seq, frame.to_vec()));
        let block = self.pending.range(..=seq).next_back().filter(|(_, p)| p.header.covers(seq)).map(|(&f, _)| f);
        block.map_or_else(Vec::new, |first| self.try_rebuild(first))
    }

    /// Takes in a recovery shard (its header and the shard). Returns the frames it let the
    /// decoder rebuild, by sequence.
    ///
    /// # Errors
    /// A [`FecError`] for a bad header, one that disagrees with the block's other shards, or a
    /// block that cannot be decoded; nothing else changes.
    pub fn on_parity(&mut self, packet: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, FecError> {
        let (header, shard) = ParityHeader::parse(packet)?;
        if let Some(pending) = self.pending.get(&header.first) {
            if pending.header.shape() != header.shape() {
                return Err(FecError::Inconsistent);
            }
        } else if self.pending.range(..header.first).next_back().is_some_and(|(_, p)| p.header.covers(header.first))
            || self
                .pending
                .range(header.first..)
                .next()
                .is_some_and(|(&f, _)| f < header.first + u64::from(header.originals))
        {
            return Err(FecError::Inconsistent);
        }
        if self.missing(&header).is_empty() {
            return Ok(Vec::new());
        }
        let pending = self.pending.entry(header.first).or_insert_with(|| Pending { header, recovery: BTreeMap::new() });
        pending.recovery.insert(header.index, shard.to_vec());
        while self.pending.len() > MAX_PENDING_BLOCKS {
            self.pending.pop_first();
        }
        Ok(self.try_rebuild(header.first))
    }

    /// Forgets the blocks that end before frame `seq`: their frames are past any use.
    pub fn forget_before(&mut self, seq: u64) {
        self.pending.retain(|_, p| p.header.first + u64::from(p.header.originals) > seq);
    }

    /// Blocks waiting for pieces.
    pub fn pending_blocks(&self) -> usize {
        self.pending.len()
    }

    fn frame(&self, seq: u64) -> Option<&[u8]> {
        received(&self.recent, seq)
    }

    /// The frames of the block that have not been received.
    fn missing(&self, header: &ParityHeader) -> Vec<u64> {
        (header.first..header.first + u64::from(header.originals)).filter(|&s| self.frame(s).is_none()).collect()
    }

    /// Rebuilds the block starting at `first` if it has enough pieces: the rebuilt frames, which
    /// also join the recent ones. A block that cannot be decoded is dropped.
    fn try_rebuild(&mut self, first: u64) -> Vec<(u64, Vec<u8>)> {
        let Some(pending) = self.pending.remove(&first) else { return Vec::new() };
        let header = pending.header;
        let missing = self.missing(&header);
        if missing.is_empty() {
            return Vec::new();
        }
        if pending.recovery.len() < missing.len() * usize::from(header.stripes) {
            self.pending.insert(first, pending);
            return Vec::new();
        }
        let rebuilt = self.decode(&header, &pending.recovery, &missing).unwrap_or_default();
        for (seq, frame) in &rebuilt {
            self.on_frame(*seq, frame);
        }
        rebuilt
    }

    fn decode(
        &mut self,
        header: &ParityHeader,
        recovery: &BTreeMap<u8, Vec<u8>>,
        missing: &[u64],
    ) -> Result<Vec<(u64, Vec<u8>)>, FecError> {
        let (stripes, parity, shard_len) =
            (usize::from(header.stripes), usize::from(header.parity), usize::from(header.shard_len));
        let originals = header.original_shards();
        let codec = match self.codec.as_mut() {
            Some(codec) => {
                codec.reset(originals, parity, shard_len).map_err(|_| FecError::Codec)?;
                codec
            }
            None => {
                self.codec.insert(ReedSolomonDecoder::new(originals, parity, shard_len).map_err(|_| FecError::Codec)?)
            }
        };
        for (i, seq) in (header.first..header.first + u64::from(header.originals)).enumerate() {
            let Some(frame) = received(&self.recent, seq) else { continue };
            original_shards(frame, stripes, shard_len, &mut self.shard)?;
            for (j, stripe) in self.shard.chunks_exact(shard_len).enumerate() {
                codec.add_original_shard(i * stripes + j, stripe).map_err(|_| FecError::Codec)?;
            }
        }
        for (&index, shard) in recovery {
            codec.add_recovery_shard(usize::from(index), shard).map_err(|_| FecError::Codec)?;
        }
        let result = codec.decode().map_err(|_| FecError::Codec)?;
        let mut rebuilt = Vec::with_capacity(missing.len());
        let mut whole = Vec::with_capacity(stripes * shard_len);
        for &seq in missing {
            let at = (seq - header.first) as usize * stripes;
            whole.clear();
            for j in at..at + stripes {
                whole.extend_from_slice(result.restored_original(j).ok_or(FecError::Codec)?);
            }
            let (len, bytes) = whole.split_at_checked(LENGTH_PREFIX).ok_or(FecError::Codec)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let frame = bytes.get(..len).ok_or(FecError::Codec)?;
            rebuilt.push((seq, frame.to_vec()));
        }
        Ok(rebuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(count: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..count).map(|i| (0..(60 + i * 37 % 1400)).map(|j| (j as u8) ^ seed ^ (i as u8)).collect()).collect()
    }

    /// The recovery shards of `frames` as one block starting at `first`.
    fn encode(first: u64, frames: &[Vec<u8>], parity: usize) -> Vec<Vec<u8>> {
        let mut encoder = FecEncoder::new(frames.len(), parity).unwrap();
        let mut out = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            out.extend(encoder.push(first + i as u64, frame).unwrap());
        }
        assert_eq!(encoder.open(), 0, "a full block closes itself");
        out
    }

    #[test]
    fn any_frames_of_a_block_up_to_its_recovery_count_are_rebuilt_exactly() {
        let block = frames(10, 7);
        let parity = encode(100, &block, 3);
        assert_eq!(parity.len(), 3);
        for lost in [vec![0], vec![9], vec![2, 5], vec![0, 4, 9]] {
            let mut decoder = FecDecoder::new(256);
            let mut rebuilt = Vec::new();
            for (i, frame) in block.iter().enumerate().filter(|(i, _)| !lost.contains(i)) {
                rebuilt.extend(decoder.on_frame(100 + i as u64, frame));
            }
            assert!(rebuilt.is_empty(), "nothing to rebuild from frames alone");
            for shard in parity.iter().take(lost.len()) {
                rebuilt.extend(decoder.on_parity(shard).unwrap());
            }
            let expected: Vec<(u64, Vec<u8>)> = lost.iter().map(|&i| (100 + i as u64, block[i].clone())).collect();
            assert_eq!(rebuilt, expected, "lost {lost:?}");
            assert_eq!(decoder.pending_blocks(), 0);
        }
    }

    #[test]
    fn frames_cut_to_fit_a_small_datagram_are_rebuilt_from_that_many_shards_each() {
        let block = frames(8, 5);
        let longest = block.iter().map(Vec::len).max().unwrap();
        let mut encoder = FecEncoder::new(block.len(), 2).unwrap();
        encoder.set_max_shard(600);
        let mut parity = Vec::new();
        for (i, frame) in block.iter().enumerate() {
            parity.extend(encoder.push(200 + i as u64, frame).unwrap());
        }
        let (header, _) = ParityHeader::parse(&parity[0]).unwrap();
        let stripes = (longest + 2).div_ceil(600);
        assert_eq!((usize::from(header.stripes), parity.len()), (stripes, 2 * stripes));
        assert!(parity.iter().all(|p| p.len() <= PARITY_HEADER_LEN + 600), "every shard fits");
        assert_eq!(encoder.shard_bytes(longest), parity[0].len());
        let lost = [3, 6];
        let mut decoder = FecDecoder::new(64);
        for (i, frame) in block.iter().enumerate().filter(|(i, _)| !lost.contains(i)) {
            assert!(decoder.on_frame(200 + i as u64, frame).is_empty());
        }
        let mut rebuilt = Vec::new();
        for (n, shard) in parity.iter().enumerate() {
            rebuilt.extend(decoder.on_parity(shard).unwrap());
            if n + 1 < 2 * stripes {
                assert!(rebuilt.is_empty(), "two frames need {} shards, {} came", 2 * stripes, n + 1);
            }
        }
        assert_eq!(rebuilt, vec![(203, block[3].clone()), (206, block[6].clone())]);
    }

    #[test]
    fn recovery_shards_that_come_first_wait_for_the_frames() {
        let block = frames(6, 3);
        let parity = encode(0, &block, 2);
        let mut decoder = FecDecoder::new(64);
        assert!(decoder.on_parity(&parity[1]).unwrap().is_empty());
        let mut rebuilt = Vec::new();
        for (i, frame) in block.iter().enumerate().skip(1) {
            rebuilt.extend(decoder.on_frame(i as u64, frame));
        }
        assert_eq!(rebuilt, vec![(0, block[0].clone())], "the fifth frame completed the block");
    }

    #[test]
    fn more_losses_than_recovery_shards_rebuild_nothing_and_panic_nowhere() {
        let block = frames(8, 1);
        let parity = encode(40, &block, 2);
        let mut decoder = FecDecoder::new(64);
        for (i, frame) in block.iter().enumerate().skip(3) {
            assert!(decoder.on_frame(40 + i as u64, frame).is_empty());
        }
        for shard in &parity {
            assert!(decoder.on_parity(shard).unwrap().is_empty());
        }
        assert_eq!(decoder.pending_blocks(), 1);
        decoder.forget_before(48);
        assert_eq!(decoder.pending_blocks(), 0);
    }

    #[test]
    fn a_frame_out_of_sequence_closes_the_block_early() {
        let mut encoder = FecEncoder::new(10, 1).unwrap();
        assert!(encoder.push(5, b"one").unwrap().is_empty());
        assert!(encoder.push(6, b"two").unwrap().is_empty());
        let closed = encoder.push(9, b"three").unwrap();
        assert_eq!(closed.len(), 1);
        let (header, _) = ParityHeader::parse(&closed[0]).unwrap();
        assert_eq!((header.first, header.originals), (5, 2));
        assert_eq!(encoder.open(), 1);
        let mut decoder = FecDecoder::new(64);
        decoder.on_frame(6, b"two");
        assert_eq!(decoder.on_parity(&closed[0]).unwrap(), vec![(5, b"one".to_vec())]);
    }

    #[test]
    fn a_shard_that_disagrees_with_its_block_is_refused() {
        let block = frames(4, 9);
        let parity = encode(10, &block, 2);
        let mut decoder = FecDecoder::new(64);
        decoder.on_frame(11, &block[1]);
        assert!(decoder.on_parity(&parity[0]).unwrap().is_empty());
        let mut other = parity[1].clone();
        other[8] = 3; // another frame count for the same block
        assert_eq!(decoder.on_parity(&other), Err(FecError::Inconsistent));
        let mut overlapping = parity[1].clone();
        overlapping[7] = 12; // a block starting inside the pending one
        assert_eq!(decoder.on_parity(&overlapping), Err(FecError::Inconsistent));
    }

    #[test]
    fn bad_headers_are_refused_with_their_reason() {
        let good = encode(0, &frames(2, 0), 1).remove(0);
        assert!(ParityHeader::parse(&good).is_ok());
        assert_eq!(ParityHeader::parse(&good[..5]), Err(FecError::Truncated));
        let with = |at: usize, value: u8| {
            let mut bad = good.clone();
            bad[at] = value;
            ParityHeader::parse(&bad).map(|(h, _)| h)
        };
        assert_eq!(with(8, 0), Err(FecError::OutOfRange), "no frames");
        assert_eq!(with(9, 0), Err(FecError::OutOfRange), "no shards per frame");
        assert_eq!(with(9, MAX_STRIPES as u8 + 1), Err(FecError::OutOfRange), "too many shards per frame");
        assert_eq!(with(10, 0), Err(FecError::OutOfRange), "no recovery shards");
        assert_eq!(with(11, 1), Err(FecError::OutOfRange), "index past the count");
        assert_eq!(with(13, good[13] ^ 1), Err(FecError::BadSize), "odd size");
        assert_eq!(ParityHeader::parse(&good[..good.len() - 2]).map(|(h, _)| h), Err(FecError::BadSize));
        let mut wraps = good.clone();
        wraps[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(ParityHeader::parse(&wraps).map(|(h, _)| h), Err(FecError::OutOfRange));
        assert!(FecEncoder::new(0, 1).is_err() && FecEncoder::new(1, MAX_PARITY + 1).is_err());
    }

    #[test]
    fn a_rebuilt_frame_with_an_impossible_length_is_refused() {
        // A forged block whose first "frame" claims more bytes than its shard holds: the
        // decoder rebuilds nothing rather than a short or padded frame.
        let shard_len = 16;
        let mut forged = vec![0u8; shard_len];
        forged[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut honest = Vec::new();
        original_shards(b"frame one", 1, shard_len, &mut honest).unwrap();
        let recovery = reed_solomon_simd::encode(2, 1, [&forged, &honest]).unwrap();
        let header =
            ParityHeader { first: 0, originals: 2, stripes: 1, parity: 1, index: 0, shard_len: shard_len as u16 };
        let mut packet = Vec::new();
        header.emit(&mut packet);
        packet.extend_from_slice(&recovery[0]);
        let mut decoder = FecDecoder::new(64);
        decoder.on_frame(1, b"frame one");
        assert_eq!(decoder.on_parity(&packet), Ok(Vec::new()));
        assert_eq!(decoder.pending_blocks(), 0, "the undecodable block is dropped");
    }
}
