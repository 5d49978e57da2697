//! Packet protection: the seal/open trait and its AEAD implementation.
//!
//! Every datagram's payload is sealed with an AEAD, with the GRE header (and, for control, the
//! control-type byte) as associated data. The nonce is the path's 64-bit packet number and the
//! link id (see [`PathNonce`]), so copies of one frame on different links never share a nonce.
//! Each direction has its own key, so the two ends' counters never collide either.

use core::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::wire::TAG_LEN;
use crate::{LinkId, PacketNumber, SessionIndex};

/// The AEAD a session uses for its data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (the default: fast without AES instructions, as on many ARM rigs).
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM (faster where the CPU has AES-NI and CLMUL).
    Aes256Gcm,
}

/// The 96-bit nonce of one packet: link id, three zero bytes, then the path packet number
/// (little-endian, as WireGuard lays out its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathNonce {
    /// The link the packet travels on.
    pub link: LinkId,
    /// The path's packet number.
    pub packet_number: PacketNumber,
}

impl PathNonce {
    fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0] = self.link.get();
        out[4..].copy_from_slice(&self.packet_number.0.to_le_bytes());
        out
    }
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The tag did not verify: forged, corrupted, or sealed under another key.
    #[error("authentication failed")]
    Open,
    /// The AEAD refused to seal (the buffer is too long for it).
    #[error("seal failed")]
    Seal,
    /// A key of the wrong length.
    #[error("bad key")]
    Key,
}

/// Seals outgoing and opens incoming payloads in place.
///
/// `buf[..aad_len]` is the associated data and `buf[aad_len..]` the payload. Implementations must
/// be deterministic for a given key, nonce and input.
pub trait Protection: Send + fmt::Debug {
    /// Seals `buf[aad_len..]` in place and appends the [`TAG_LEN`]-byte tag.
    ///
    /// # Errors
    /// [`CryptoError::Seal`] if the AEAD refuses the input.
    fn seal(&self, nonce: PathNonce, buf: &mut Vec<u8>, aad_len: usize) -> Result<(), CryptoError>;

    /// Opens `buf[aad_len..]` in place and returns the plaintext length (the tag is stripped).
    ///
    /// # Errors
    /// [`CryptoError::Open`] if the tag does not verify or the buffer is too short to hold one.
    fn open(&self, nonce: PathNonce, buf: &mut [u8], aad_len: usize) -> Result<usize, CryptoError>;
}

/// The keys one end of a session holds, as the handshake hands them over.
///
/// Only the handshake (and, with the `test-util` feature, [`crate::testing`]) can make one, so
/// no session runs without real keys.
#[derive(Debug)]
pub struct SessionKeys {
    /// This end's session index (the Key the peer sends to).
    pub(crate) local_index: SessionIndex,
    /// The peer's session index (the Key this end sends to).
    pub(crate) remote_index: SessionIndex,
    /// Seals with this end's sending key, opens with its receiving key.
    pub(crate) protection: Box<dyn Protection>,
}

/// AEAD protection from aws-lc-rs, one key per direction.
pub struct Aead {
    cipher: Cipher,
    seal_key: LessSafeKey,
    open_key: LessSafeKey,
}

impl fmt::Debug for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material is never printed.
        f.debug_struct("Aead").field("cipher", &self.cipher).finish_non_exhaustive()
    }
}

impl Aead {
    /// Builds the protection from the two 32-byte directional keys.
    ///
    /// # Errors
    /// [`CryptoError::Key`] if aws-lc refuses a key.
    pub fn new(cipher: Cipher, seal_key: &[u8; 32], open_key: &[u8; 32]) -> Result<Self, CryptoError> {
        let algorithm = match cipher {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        };
        let key =
            |bytes: &[u8; 32]| UnboundKey::new(algorithm, bytes).map(LessSafeKey::new).map_err(|_| CryptoError::Key);
        Ok(Self { cipher, seal_key: key(seal_key)?, open_key: key(open_key)? })
    }

    /// The cipher in use.
    pub const fn cipher(&self) -> Cipher {
        self.cipher
    }
}

impl Protection for Aead {
    fn seal(&self, nonce: PathNonce, buf: &mut Vec<u8>, aad_len: usize) -> Result<(), CryptoError> {
        let (aad, payload) = buf.split_at_mut_checked(aad_len).ok_or(CryptoError::Seal)?;
        let tag = self
            .seal_key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce.to_bytes()), Aad::from(&*aad), payload)
            .map_err(|_| CryptoError::Seal)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    fn open(&self, nonce: PathNonce, buf: &mut [u8], aad_len: usize) -> Result<usize, CryptoError> {
        let (aad, payload) = buf.split_at_mut_checked(aad_len).ok_or(CryptoError::Open)?;
        if payload.len() < TAG_LEN {
            return Err(CryptoError::Open);
        }
        self.open_key
            .open_in_place(Nonce::assume_unique_for_key(nonce.to_bytes()), Aad::from(&*aad), payload)
            .map(|plain| plain.len())
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cipher: Cipher) -> (Aead, Aead) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (Aead::new(cipher, &a, &b).unwrap(), Aead::new(cipher, &b, &a).unwrap())
    }

    fn nonce(link: u8, pn: u64) -> PathNonce {
        PathNonce { link: LinkId::new(link), packet_number: PacketNumber(pn) }
    }

    #[test]
    fn both_ciphers_seal_and_open_with_the_header_as_associated_data() {
        for cipher in [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm] {
            let (edge, gateway) = pair(cipher);
            let mut buf = b"HEADERpayload".to_vec();
            edge.seal(nonce(1, 7), &mut buf, 6).unwrap();
            assert_eq!(buf.len(), 13 + TAG_LEN);
            assert_ne!(&buf[6..13], b"payload");
            let len = gateway.open(nonce(1, 7), &mut buf, 6).unwrap();
            assert_eq!(&buf[6..6 + len], b"payload");
        }
    }

    #[test]
    fn a_changed_header_nonce_or_direction_fails_to_open() {
        let (edge, gateway) = pair(Cipher::ChaCha20Poly1305);
        let mut sealed = b"HEADERpayload".to_vec();
        edge.seal(nonce(1, 7), &mut sealed, 6).unwrap();

        let mut header = sealed.clone();
        header[0] ^= 1;
        assert_eq!(gateway.open(nonce(1, 7), &mut header, 6), Err(CryptoError::Open));
        assert_eq!(gateway.open(nonce(2, 7), &mut sealed.clone(), 6), Err(CryptoError::Open));
        assert_eq!(gateway.open(nonce(1, 8), &mut sealed.clone(), 6), Err(CryptoError::Open));
        assert_eq!(edge.open(nonce(1, 7), &mut sealed, 6), Err(CryptoError::Open));
        assert_eq!(gateway.open(nonce(1, 7), &mut [0u8; 20], 6), Err(CryptoError::Open));
    }
}
