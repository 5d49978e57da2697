//! Static X25519 keys: generation, base64 text form, and private key files.
//!
//! A private key file holds one line, the base64 key (as WireGuard's), and must not be readable
//! by group or others: braid refuses to load it otherwise. Key material is zeroed on drop and
//! never printed by `Debug`.

use core::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::handshake::CryptoRng;

/// Length of X25519 keys and of PSKs.
pub const KEY_LEN: usize = 32;

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not 32 bytes of base64.
    #[error("not a base64 key of 32 bytes (44 characters, as `braid-edge keygen` prints)")]
    Format,
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The private key file is readable by group or others.
    #[error("{path}: private key is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses the base64 text form.
    ///
    /// # Errors
    /// [`KeyError::Format`] if it is not 32 bytes of base64.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self)
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// An X25519 private key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A new key from a CSPRNG.
    pub fn generate(rng: &mut CryptoRng) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes);
        Self(bytes)
    }

    /// A new key from the operating system's entropy.
    ///
    /// # Errors
    /// [`KeyError::Io`] if the OS has no entropy to give.
    pub fn generate_from_os() -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Io {
            path: "getrandom".into(),
            error: std::io::Error::other("the OS random source failed"),
        })?;
        Ok(Self(bytes))
    }

    /// The raw bytes (for the handshake).
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(crate::handshake::x25519_public(&self.0))
    }

    /// Parses the base64 text form.
    ///
    /// # Errors
    /// [`KeyError::Format`] if it is not 32 bytes of base64.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self)
    }

    /// The base64 text form.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Reads a private key file, refusing one that group or others can read.
    ///
    /// # Errors
    /// [`KeyError::Io`], [`KeyError::Permissions`] or [`KeyError::Format`].
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let io = |error| KeyError::Io { path: path.display().to_string(), error };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions { path: path.display().to_string(), mode });
            }
        }
        let mut text = std::fs::read_to_string(path).map_err(io)?;
        let key = Self::from_base64(text.trim());
        text.zeroize();
        key
    }

    /// Writes the key to a new file with mode 0600 (never over an existing file).
    ///
    /// # Errors
    /// [`KeyError::Io`] if the file exists or cannot be written.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let io = |error| KeyError::Io { path: path.display().to_string(), error };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let mut text = self.to_base64();
        text.push('\n');
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        text.zeroize();
        written.map_err(io)
    }
}

/// Generates a private key from the OS's entropy, writes it to `path` (mode 0600, never over an
/// existing file) and returns its public key: what `keygen` does in both binaries.
///
/// # Errors
/// [`KeyError::Io`] if there is no entropy or the file cannot be created.
pub fn generate_key_file(path: &Path) -> Result<PublicKey, KeyError> {
    let key = PrivateKey::generate_from_os()?;
    key.write_file(path)?;
    Ok(key.public())
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// An optional per-edge pre-shared key (Noise `psk2`), for post-quantum resistance of recorded
/// traffic. Absent means all zeroes, as in WireGuard.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Psk(pub [u8; KEY_LEN]);

impl Psk {
    /// Parses the base64 text form.
    ///
    /// # Errors
    /// [`KeyError::Format`] if it is not 32 bytes of base64.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self)
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

fn decode(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let mut bytes = BASE64.decode(text.trim()).map_err(|_| KeyError::Format)?;
    let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Format);
    bytes.zeroize();
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_debug_hides_private_ones() {
        let key = PrivateKey::from_bytes([7; 32]);
        assert_eq!(PrivateKey::from_base64(&key.to_base64()).unwrap(), key);
        assert_eq!(PublicKey::from_base64(&key.public().to_base64()).unwrap(), key.public());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
        assert!(matches!(PublicKey::from_base64("short"), Err(KeyError::Format)));
    }

    #[test]
    fn a_key_file_is_written_0600_and_refused_once_others_can_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("braid-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let _ = std::fs::remove_file(&path);
        let key = PrivateKey::from_bytes([9; 32]);
        key.write_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(PrivateKey::read_file(&path).unwrap(), key);
        assert!(key.write_file(&path).is_err(), "never overwrites a key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(PrivateKey::read_file(&path), Err(KeyError::Permissions { mode: 0o644, .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
