//! The headers inside the sealed payload.

use super::{CONTROL_HEADER_LEN, DATA_HEADER_LEN, WireError, field, read_u32};

/// [`DataHeader::flags`]: this copy answers a NAK (a retransmission).
pub const FLAG_RETRANSMIT: u8 = 0x01;
/// [`DataHeader::fragment`]: the payload is a piece of a frame ([`crate::fragment`]).
pub const FRAGMENT_PIECE: u8 = 1;
/// [`DataHeader::fragment`]: the payload is a recovery shard ([`crate::fec`]), and the frame
/// sequence is the one its block ends before.
pub const FEC_RECOVERY: u8 = 2;

/// The header in front of an Ethernet frame inside a sealed data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataHeader {
    /// The low 32 bits of the frame's session-wide sequence: the dedup and reorder key.
    pub frame_seq: u32,
    /// When the sender sealed this copy, in µs of the sender's session clock (wrapping).
    pub send_ts: u32,
    /// Flags ([`FLAG_RETRANSMIT`]); bits braid does not know are ignored.
    pub flags: u8,
    /// 0 for a whole frame, [`FRAGMENT_PIECE`] for a piece of one, [`FEC_RECOVERY`] for a
    /// recovery shard; other values are refused.
    pub fragment: u8,
}

impl DataHeader {
    /// Parses the header at the start of an opened payload, returning it and the frame.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the payload is shorter than the header.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), WireError> {
        if payload.len() < DATA_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header = Self {
            frame_seq: read_u32(payload, field::DATA_FRAME_SEQ),
            send_ts: read_u32(payload, field::DATA_SEND_TS),
            flags: payload[field::DATA_FLAGS],
            fragment: payload[field::DATA_FRAGMENT],
        };
        if header.fragment > FEC_RECOVERY {
            return Err(WireError::Malformed);
        }
        Ok((header, &payload[DATA_HEADER_LEN..]))
    }

    /// Writes the header into the first [`DATA_HEADER_LEN`] bytes of `out`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let out = out.get_mut(..DATA_HEADER_LEN).ok_or(WireError::Truncated)?;
        out[field::DATA_FRAME_SEQ].copy_from_slice(&self.frame_seq.to_be_bytes());
        out[field::DATA_SEND_TS].copy_from_slice(&self.send_ts.to_be_bytes());
        out[field::DATA_FLAGS] = self.flags;
        out[field::DATA_FRAGMENT] = self.fragment;
        Ok(())
    }
}

/// The header in front of the messages inside a sealed control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlHeader {
    /// When the sender sealed this packet, in µs of the sender's session clock (wrapping).
    pub send_ts: u32,
}

impl ControlHeader {
    /// Parses the header at the start of an opened payload, returning it and the messages.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the payload is shorter than the header.
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), WireError> {
        if payload.len() < CONTROL_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header = Self { send_ts: read_u32(payload, field::CONTROL_SEND_TS) };
        Ok((header, &payload[CONTROL_HEADER_LEN..]))
    }

    /// Writes the header into the first [`CONTROL_HEADER_LEN`] bytes of `out`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let out = out.get_mut(..CONTROL_HEADER_LEN).ok_or(WireError::Truncated)?;
        out[field::CONTROL_SEND_TS].copy_from_slice(&self.send_ts.to_be_bytes());
        Ok(())
    }
}
