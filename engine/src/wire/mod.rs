//! The wire format: zero-copy checked views over bytes, plus typed `Repr`s.
//!
//! A braid datagram is the payload of one UDP datagram (default port [`DEFAULT_PORT`]) and is
//! GRE-in-UDP (RFC 8086) with the RFC 2890 Key and Sequence fields:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|0|1|1|   reserved0 (0)   | ver |      Protocol Type            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Key = receiver session index (24) | link id (8)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Sequence = low 32 bits of the path's packet number     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! * Protocol `0x6558` (Transparent Ethernet Bridging) carries a sealed Ethernet frame:
//!   `AEAD(DataHeader ‖ frame)`, with the GRE header as associated data.
//! * Protocol `0x88B5` (IEEE 802 local experimental) carries braid control. One cleartext byte,
//!   [`ControlType`], follows the GRE header and is part of the associated data. A sealed control
//!   packet carries `AEAD(ControlHeader ‖ messages)`.
//!
//! ## Why the Sequence is per path and not per session
//! One frame can travel on several links (redundant mode, duplicates, retransmission). If the
//! sequence (and so the AEAD nonce) were the session's frame counter, each copy would be sealed
//! under the same nonce with a different per-link header: a nonce reuse that breaks
//! ChaCha20-Poly1305 and AES-GCM. So every *path* (session + link) has its own 64-bit packet
//! counter, which is the nonce (together with the link id) and the replay key, and the frame's
//! session-wide sequence, which is the dedup/reorder key, travels inside the ciphertext. This also
//! makes the cleartext Sequence exactly what RFC 2890 means by it (a per-Key-flow counter), and it
//! gives the receiver an authenticated per-link sequence, so per-link loss never comes from the
//! global sequence.

mod control;
mod gre;
mod inner;

pub use control::{ControlMessage, ControlMessages, LinkReport, Placement, emit_padding};
pub use gre::{GrePacket, GreRepr};
pub use inner::{ControlHeader, DataHeader, FEC_RECOVERY, FLAG_RETRANSMIT, FRAGMENT_PIECE};

use crate::stats::DropReason;
use crate::{LinkId, SessionIndex};

/// The UDP port braid uses when none is configured (registered for GRE-in-UDP by RFC 8086).
pub const DEFAULT_PORT: u16 = 4754;
/// Length of the GRE header with Key and Sequence present.
pub const GRE_HEADER_LEN: usize = 12;
/// Length of the AEAD tag appended to every sealed payload.
pub const TAG_LEN: usize = 16;
/// Length of the [`DataHeader`] inside a sealed data packet.
pub const DATA_HEADER_LEN: usize = 10;
/// Length of the [`ControlHeader`] inside a sealed control packet.
pub const CONTROL_HEADER_LEN: usize = 4;
/// Bytes a data frame grows by inside the tunnel, not counting the outer IP and UDP headers:
/// GRE (12) + data header (10) + tag (16) = 38. Over IPv4 add 28, over IPv6 add 48.
pub const DATA_OVERHEAD: usize = GRE_HEADER_LEN + DATA_HEADER_LEN + TAG_LEN;
/// The largest datagram braid builds or accepts.
pub const MAX_DATAGRAM_LEN: usize = 65_535 - 8;
/// The largest Ethernet frame the engine carries (a datagram must still fit).
pub const MAX_FRAME_LEN: usize = 9_216;

/// The GRE protocol type of a braid datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `0x6558`, Transparent Ethernet Bridging: a sealed Ethernet frame.
    Ethernet,
    /// `0x88B5`, IEEE 802 local experimental ethertype: braid control.
    Control,
}

impl Protocol {
    /// The ethertype on the wire.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Ethernet => 0x6558,
            Self::Control => 0x88B5,
        }
    }

    /// Parses an ethertype; `None` for any type braid does not speak.
    pub const fn from_u16(value: u16) -> Option<Self> {
        match value {
            0x6558 => Some(Self::Ethernet),
            0x88B5 => Some(Self::Control),
            _ => None,
        }
    }
}

/// The cleartext byte that follows the GRE header of a control datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlType {
    /// First handshake message (Noise IKpsk2 initiation); Key is 0.
    HandshakeInitiation,
    /// Second handshake message; Key is the initiator's session index.
    HandshakeResponse,
    /// A cookie reply to a handshake initiation under load.
    CookieReply,
    /// Sealed probes, probe replies and link reports.
    Sealed,
    /// The gateway's answer to data for a session it does not have: the token it handed out in
    /// that session's handshake; Key is the unknown index.
    NoSession,
}

impl ControlType {
    /// The byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::HandshakeInitiation => 1,
            Self::HandshakeResponse => 2,
            Self::CookieReply => 3,
            Self::Sealed => 4,
            Self::NoSession => 5,
        }
    }

    /// Parses the byte; `None` for an unknown type.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::HandshakeInitiation),
            2 => Some(Self::HandshakeResponse),
            3 => Some(Self::CookieReply),
            4 => Some(Self::Sealed),
            5 => Some(Self::NoSession),
            _ => None,
        }
    }
}

/// The GRE Key: which receiver session, and which of its links, a datagram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathKey {
    /// The receiver's session index (24 bits).
    pub index: SessionIndex,
    /// The link the datagram travels on, numbered by the edge.
    pub link: LinkId,
}

impl PathKey {
    /// Packs the key into the 32-bit GRE Key field.
    pub const fn to_u32(self) -> u32 {
        (self.index.get() << 8) | self.link.get() as u32
    }

    /// Unpacks the 32-bit GRE Key field.
    pub const fn from_u32(value: u32) -> Self {
        Self { index: SessionIndex::from_wire(value >> 8), link: LinkId::new((value & 0xff) as u8) }
    }
}

/// Why a datagram could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its fixed header, or than a length field says.
    #[error("truncated")]
    Truncated,
    /// The GRE flags or version are not the ones braid sends (K and S set, C clear, version 0).
    #[error("unsupported GRE flags or version")]
    BadFlags,
    /// A protocol type braid does not speak.
    #[error("unknown protocol type")]
    UnknownProtocol,
    /// A control type braid does not speak.
    #[error("unknown control type")]
    UnknownControlType,
    /// A field holds a value outside its range.
    #[error("malformed field")]
    Malformed,
}

/// What an incoming datagram is, from its cleartext alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A sealed Ethernet frame.
    Data,
    /// Sealed probes, replies and reports.
    SealedControl,
    /// A handshake message, with its body from the control-type byte on.
    Handshake(ControlType, &'a [u8]),
}

impl Kind<'_> {
    /// Bytes at the front of the datagram that are associated data for the AEAD.
    pub const fn aad_len(&self) -> usize {
        match self {
            Self::Data => GRE_HEADER_LEN,
            Self::SealedControl | Self::Handshake(..) => GRE_HEADER_LEN + 1,
        }
    }
}

/// Parses the cleartext of an incoming datagram: the GRE header and, for control, its type.
///
/// # Errors
/// [`DropReason::BadHeader`], [`DropReason::UnknownProtocol`] or
/// [`DropReason::UnknownControlType`].
pub fn classify(datagram: &[u8]) -> Result<(GreRepr, Kind<'_>), DropReason> {
    let packet = GrePacket::new_checked(datagram).map_err(|_| DropReason::BadHeader)?;
    let repr = GreRepr::parse(&packet).map_err(|_| DropReason::UnknownProtocol)?;
    let kind = match repr.protocol {
        Protocol::Ethernet => Kind::Data,
        Protocol::Control => {
            let body = &datagram[GRE_HEADER_LEN..];
            match ControlType::from_u8(*body.first().ok_or(DropReason::BadHeader)?) {
                Some(ControlType::Sealed) => Kind::SealedControl,
                Some(handshake) => Kind::Handshake(handshake, body),
                None => return Err(DropReason::UnknownControlType),
            }
        }
    };
    Ok((repr, kind))
}

/// Expands the low 32 bits of a counter to the 64-bit value closest to `expected`.
///
/// `expected` is the next value the receiver expects (highest seen + 1). The result is the candidate
/// within ±2³¹ of it, so the expansion is exact as long as the sender's counter is less than 2³¹
/// away from what the receiver last saw, whichever side of it, across any number of wraps.
pub const fn expand_u32(expected: u64, low: u32) -> u64 {
    const WIN: u64 = 1 << 32;
    const HALF: u64 = WIN / 2;
    let candidate = (expected & !(WIN - 1)) | low as u64;
    if candidate.saturating_add(HALF) <= expected && candidate <= u64::MAX - WIN {
        candidate + WIN
    } else if candidate > expected.saturating_add(HALF) && candidate >= WIN {
        candidate - WIN
    } else {
        candidate
    }
}

pub(crate) mod field {
    //! Byte offsets of every fixed field, in one place.
    use core::ops::Range;

    pub(crate) const GRE_FLAGS: usize = 0;
    pub(crate) const GRE_VERSION: usize = 1;
    pub(crate) const GRE_PROTOCOL: Range<usize> = 2..4;
    pub(crate) const GRE_KEY: Range<usize> = 4..8;
    pub(crate) const GRE_SEQUENCE: Range<usize> = 8..12;
    /// K (key present) and S (sequence present); C, R and the reserved bits clear.
    pub(crate) const GRE_FLAGS_KS: u8 = 0x30;

    pub(crate) const DATA_FRAME_SEQ: Range<usize> = 0..4;
    pub(crate) const DATA_SEND_TS: Range<usize> = 4..8;
    pub(crate) const DATA_FLAGS: usize = 8;
    pub(crate) const DATA_FRAGMENT: usize = 9;

    pub(crate) const CONTROL_SEND_TS: Range<usize> = 0..4;
}

pub(crate) fn read_u32(bytes: &[u8], range: core::ops::Range<usize>) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[range]);
    u32::from_be_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_picks_the_closest_candidate() {
        assert_eq!(expand_u32(0, 0), 0);
        assert_eq!(expand_u32(10, 9), 9);
        assert_eq!(expand_u32(10, 11), 11);
        assert_eq!(expand_u32(0x1_0000_0002, 0xffff_fffe), 0xffff_fffe);
        assert_eq!(expand_u32(0xffff_fffe, 3), 0x1_0000_0003);
        assert_eq!(expand_u32(0x5_0000_0000, 0x7fff_ffff), 0x5_7fff_ffff);
        assert_eq!(expand_u32(0x5_0000_0000, 0x8000_0001), 0x4_8000_0001);
        assert_eq!(expand_u32(u64::MAX - 3, 0xffff_ffff), u64::MAX);
        assert_eq!(expand_u32(u64::MAX - 3, 0), u64::MAX - 0xffff_ffff);
    }

    #[test]
    fn path_key_packs_index_and_link() {
        let key = PathKey { index: SessionIndex::from_wire(0xabcdef), link: LinkId::new(7) };
        assert_eq!(key.to_u32(), 0xabcd_ef07);
        assert_eq!(PathKey::from_u32(0xabcd_ef07), key);
    }
}
