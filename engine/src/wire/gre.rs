//! The GRE header (RFC 2784 with the RFC 2890 Key and Sequence fields).

use super::{GRE_HEADER_LEN, PathKey, Protocol, WireError, field, read_u32};

/// A read-only view of a GRE header at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer without checking it; only [`GrePacket::new_checked`] makes accessors safe.
    const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking its length, flags and version, so no accessor can panic.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the header, [`WireError::BadFlags`]
    /// if the flags are not exactly K and S, or the version is not 0.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < GRE_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if bytes[field::GRE_FLAGS] != field::GRE_FLAGS_KS || bytes[field::GRE_VERSION] != 0 {
            return Err(WireError::BadFlags);
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// The raw protocol type.
    pub fn protocol_raw(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::GRE_PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The raw 32-bit Key.
    pub fn key(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::GRE_KEY)
    }

    /// The raw 32-bit Sequence.
    pub fn sequence(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::GRE_SEQUENCE)
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[GRE_HEADER_LEN..]
    }
}

/// The typed form of a braid GRE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GreRepr {
    /// Ethernet data or braid control.
    pub protocol: Protocol,
    /// The receiver's session index and the link.
    pub key: PathKey,
    /// The low 32 bits of the path's packet number.
    pub sequence: u32,
}

impl GreRepr {
    /// Parses a checked view.
    ///
    /// # Errors
    /// [`WireError::UnknownProtocol`] for a protocol type braid does not speak.
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<Self, WireError> {
        let protocol = Protocol::from_u16(packet.protocol_raw()).ok_or(WireError::UnknownProtocol)?;
        Ok(Self { protocol, key: PathKey::from_u32(packet.key()), sequence: packet.sequence() })
    }

    /// Writes the header into the first [`GRE_HEADER_LEN`] bytes of `out`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let out = out.get_mut(..GRE_HEADER_LEN).ok_or(WireError::Truncated)?;
        out[field::GRE_FLAGS] = field::GRE_FLAGS_KS;
        out[field::GRE_VERSION] = 0;
        out[field::GRE_PROTOCOL].copy_from_slice(&self.protocol.to_u16().to_be_bytes());
        out[field::GRE_KEY].copy_from_slice(&self.key.to_u32().to_be_bytes());
        out[field::GRE_SEQUENCE].copy_from_slice(&self.sequence.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinkId, SessionIndex};

    const SAMPLE: [u8; 12] = [0x30, 0x00, 0x65, 0x58, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x01, 0x00];

    #[test]
    fn a_data_header_parses_to_its_fields() {
        let packet = GrePacket::new_checked(&SAMPLE[..]).unwrap();
        let repr = GreRepr::parse(&packet).unwrap();
        assert_eq!(repr.protocol, Protocol::Ethernet);
        assert_eq!(repr.key.index, SessionIndex::from_wire(0x123456));
        assert_eq!(repr.key.link, LinkId::new(2));
        assert_eq!(repr.sequence, 256);
        let mut out = [0u8; 12];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, SAMPLE);
    }

    #[test]
    fn a_header_with_the_checksum_bit_is_refused() {
        let mut bytes = SAMPLE;
        bytes[0] |= 0x80;
        assert_eq!(GrePacket::new_checked(&bytes[..]).unwrap_err(), WireError::BadFlags);
    }

    #[test]
    fn a_short_header_is_truncated() {
        assert_eq!(GrePacket::new_checked(&SAMPLE[..11]).unwrap_err(), WireError::Truncated);
    }
}
