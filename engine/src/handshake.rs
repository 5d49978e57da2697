//! The handshake: Noise `IKpsk2_25519_ChaChaPoly_BLAKE2s` (via `snow`), with WireGuard's
//! defences around it, sans-IO.
//!
//! Messages travel as braid control datagrams (see [`crate::wire`]); after the GRE header and
//! the control-type byte come:
//!
//! ```text
//! initiation (type 1, Key = 0 | link):  sender index (4) ‖ Noise msg 1 (125) ‖ mac1 (16) ‖ mac2 (16)
//! response   (type 2, Key = initiator): sender index (4) ‖ Noise msg 2 (57)  ‖ mac1 (16) ‖ mac2 (16)
//! cookie     (type 3, Key = initiator): nonce (12) ‖ AEAD(cookie) (32)
//! ```
//!
//! * **mac1** = BLAKE2s-MAC(BLAKE2s("mac1----" ‖ receiver's public key), message up to mac1). The
//!   gateway checks it before any Diffie-Hellman, so a flood from anyone who does not know its
//!   public key costs one hash per datagram.
//! * **mac2** = BLAKE2s-MAC(cookie, message up to mac2). Under load the gateway answers an
//!   initiation without a valid mac2 with a cookie reply instead of doing the handshake; the
//!   cookie is a MAC of the sender's address under a secret that rotates every two minutes, so
//!   only a sender that can receive at its address gets through. The reply is smaller than the
//!   initiation: no amplification.
//! * The initiation's encrypted payload carries a TAI64N timestamp (the gateway accepts only a
//!   newer one per edge: no replay of initiations), the cipher, the edge's session epoch (a
//!   rekey of the same session keeps the stream; a new epoch is a restarted edge), and the next
//!   frame sequence, so a new gateway session starts its reorder buffer where the edge is.
//! * The response's payload says whether the session was resumed and the gateway's next frame
//!   sequence, so a restarted gateway is noticed and the edge resyncs.

use std::net::SocketAddr;

use blake2::digest::consts::{U16, U32};
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Dh, Random};
use zeroize::Zeroize;

use crate::SessionIndex;
use crate::crypto::Cipher;
use crate::keys::{KEY_LEN, PrivateKey, Psk, PublicKey};
use crate::wire::ControlType;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Bytes of the initiation's Noise payload.
pub const INIT_PAYLOAD_LEN: usize = 12 + 1 + 8 + 8;
/// Bytes of the response's Noise payload.
pub const RESPONSE_PAYLOAD_LEN: usize = 1 + 8 + TOKEN_LEN;
/// Bytes of a "no such session" token.
pub const TOKEN_LEN: usize = 16;
/// Length of a "no such session" body (from the control-type byte on).
pub const NO_SESSION_LEN: usize = 1 + TOKEN_LEN;
const MAC_LEN: usize = 16;
const INDEX_LEN: usize = 4;
const NOISE_INIT_LEN: usize = 32 + 48 + INIT_PAYLOAD_LEN + 16;
const NOISE_RESPONSE_LEN: usize = 32 + RESPONSE_PAYLOAD_LEN + 16;
/// Length of an initiation body (from the control-type byte on).
pub const INIT_LEN: usize = 1 + INDEX_LEN + NOISE_INIT_LEN + 2 * MAC_LEN;
/// Length of a response body (from the control-type byte on).
pub const RESPONSE_LEN: usize = 1 + INDEX_LEN + NOISE_RESPONSE_LEN + 2 * MAC_LEN;
/// Length of a cookie reply body (from the control-type byte on).
pub const COOKIE_REPLY_LEN: usize = 1 + 12 + MAC_LEN + 16;

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The wrong length or type for the message.
    #[error("malformed handshake message")]
    Malformed,
    /// mac1 did not verify: the sender does not know our public key.
    #[error("bad mac1")]
    BadMac,
    /// The Noise message did not decrypt: wrong keys or PSK, or tampering.
    #[error("noise handshake failed")]
    Noise,
    /// The initiator's static key is not on the allowlist.
    #[error("unknown peer")]
    UnknownPeer,
    /// The timestamp is not newer than the last one seen from this peer.
    #[error("replayed initiation")]
    Replay,
    /// Too many handshakes: answered with a cookie (or dropped).
    #[error("rate limited")]
    RateLimited,
}

/// A deterministic CSPRNG: BLAKE2s-MAC-256 of a counter under a 32-byte seed.
///
/// The engine draws ephemeral keys, session indices and nonces from it. The driver seeds it from
/// the OS; a simulation seeds it with a constant and gets the same run every time.
#[derive(Clone)]
pub struct CryptoRng {
    key: [u8; 32],
    counter: u64,
}

impl core::fmt::Debug for CryptoRng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CryptoRng(<redacted>)")
    }
}

impl Drop for CryptoRng {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl CryptoRng {
    /// A generator for a 32-byte seed.
    pub const fn new(seed: [u8; 32]) -> Self {
        Self { key: seed, counter: 0 }
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            let block = mac32(&self.key, &self.counter.to_le_bytes());
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    /// 32 fresh bytes, to seed a child generator.
    pub fn fork(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        seed
    }

    /// A random 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A random non-zero session index.
    pub fn session_index(&mut self) -> SessionIndex {
        loop {
            let index = SessionIndex::from_wire(self.next_u64() as u32);
            if index.get() != 0 {
                return index;
            }
        }
    }
}

impl Random for CryptoRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.fill(dest);
        Ok(())
    }
}

/// snow's default primitives, with the RNG replaced by a seeded [`CryptoRng`].
struct SeededResolver {
    seed: [u8; 32],
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(CryptoRng::new(self.seed)))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn snow::types::Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The X25519 public key of a private key.
pub fn x25519_public(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
        dh.set(private);
        out.copy_from_slice(dh.pubkey());
    }
    out
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    // The name is a constant that snow parses; a failure would be a build-time bug.
    let params = NOISE_PARAMS.parse().expect("NOISE_PARAMS is a valid Noise protocol name");
    snow::Builder::with_resolver(params, Box::new(SeededResolver { seed }))
}

fn mac32(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut mac = <Blake2sMac<U32> as KeyInit>::new_from_slice(key).expect("a 32-byte BLAKE2s key is valid");
    Mac::update(&mut mac, data);
    mac.finalize().into_bytes().into()
}

fn mac16(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("keys up to 32 bytes are valid");
    Mac::update(&mut mac, data);
    mac.finalize().into_bytes().into()
}

fn verify16(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let Ok(mut mac) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else { return false };
    Mac::update(&mut mac, data);
    mac.verify_slice(tag).is_ok()
}

fn hash(label: &[u8], key: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::default();
    Update::update(&mut h, label);
    Update::update(&mut h, &key.0);
    h.finalize_fixed().into()
}

/// The key for mac1 of messages sent to the holder of `receiver`.
pub fn mac1_key(receiver: &PublicKey) -> [u8; 32] {
    hash(b"mac1----", receiver)
}

fn cookie_key(gateway: &PublicKey) -> [u8; 32] {
    hash(b"cookie--", gateway)
}

/// Fills in mac1, and a zero mac2, at the end of a message body.
fn seal_macs(body: &mut [u8], mac1_key: &[u8; 32]) {
    let len = body.len();
    let mac1 = mac16(mac1_key, &body[..len - 2 * MAC_LEN]);
    body[len - 2 * MAC_LEN..len - MAC_LEN].copy_from_slice(&mac1);
    set_mac2(body, None);
}

/// Sets mac2 of a message body from the cookie of the address it is sent from (zero without).
///
/// A cookie is bound to one source address, so an edge keeps one per link and sets mac2 for
/// each copy of an initiation as it sends it.
pub fn set_mac2(body: &mut [u8], cookie: Option<&[u8; MAC_LEN]>) {
    let Some(start) = body.len().checked_sub(MAC_LEN) else { return };
    let mac2 = cookie.map_or([0; MAC_LEN], |cookie| mac16(cookie, &body[..start]));
    body[start..].copy_from_slice(&mac2);
}

/// Checks mac1 of a message body.
pub fn check_mac1(body: &[u8], mac1_key: &[u8; 32]) -> bool {
    let len = body.len();
    len >= 2 * MAC_LEN && verify16(mac1_key, &body[..len - 2 * MAC_LEN], &body[len - 2 * MAC_LEN..len - MAC_LEN])
}

/// Checks mac2 of a message body against a cookie.
pub fn check_mac2(body: &[u8], cookie: &[u8; MAC_LEN]) -> bool {
    let len = body.len();
    len >= 2 * MAC_LEN && verify16(cookie, &body[..len - MAC_LEN], &body[len - MAC_LEN..])
}

/// mac1 of a message body (the associated data of a cookie reply to it).
pub fn mac1_of(body: &[u8]) -> Option<[u8; MAC_LEN]> {
    let len = body.len();
    body.get(len.checked_sub(2 * MAC_LEN)?..len - MAC_LEN)?.try_into().ok()
}

/// A TAI64N timestamp: comparable as bytes, newer is greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tai64n(pub [u8; 12]);

impl Tai64n {
    /// The timestamp of a Unix time in nanoseconds.
    pub fn from_unix_nanos(nanos: u64) -> Self {
        let secs = (1u64 << 62) + nanos / 1_000_000_000;
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&secs.to_be_bytes());
        out[8..].copy_from_slice(&((nanos % 1_000_000_000) as u32).to_be_bytes());
        Self(out)
    }
}

/// What the initiation carries inside its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitPayload {
    /// When the edge sent it.
    pub timestamp: Tai64n,
    /// The data-plane cipher the edge asks for.
    pub cipher: Cipher,
    /// Random per edge session; the same value across rekeys.
    pub epoch: u64,
    /// The edge's next frame sequence.
    pub next_frame_seq: u64,
}

impl InitPayload {
    fn emit(&self) -> [u8; INIT_PAYLOAD_LEN] {
        let mut out = [0u8; INIT_PAYLOAD_LEN];
        out[..12].copy_from_slice(&self.timestamp.0);
        out[12] = match self.cipher {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        };
        out[13..21].copy_from_slice(&self.epoch.to_be_bytes());
        out[21..29].copy_from_slice(&self.next_frame_seq.to_be_bytes());
        out
    }

    fn parse(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let bytes: &[u8; INIT_PAYLOAD_LEN] = bytes.try_into().map_err(|_| HandshakeError::Malformed)?;
        let mut timestamp = [0u8; 12];
        timestamp.copy_from_slice(&bytes[..12]);
        let cipher = match bytes[12] {
            1 => Cipher::ChaCha20Poly1305,
            2 => Cipher::Aes256Gcm,
            _ => return Err(HandshakeError::Malformed),
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self { timestamp: Tai64n(timestamp), cipher, epoch: u64_at(13), next_frame_seq: u64_at(21) })
    }
}

/// What the response carries inside its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePayload {
    /// Whether the gateway continued the edge's session (a rekey) rather than starting anew.
    pub resumed: bool,
    /// The gateway's next frame sequence for this session.
    pub next_frame_seq: u64,
    /// What the gateway answers, in the clear, to data for the new keys' index once it no longer
    /// has the session ([`no_session_token`]): only it and this edge know it.
    pub no_session_token: [u8; TOKEN_LEN],
}

impl ResponsePayload {
    fn emit(&self) -> [u8; RESPONSE_PAYLOAD_LEN] {
        let mut out = [0u8; RESPONSE_PAYLOAD_LEN];
        out[0] = u8::from(self.resumed);
        out[1..9].copy_from_slice(&self.next_frame_seq.to_be_bytes());
        out[9..].copy_from_slice(&self.no_session_token);
        out
    }

    fn parse(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let bytes: &[u8; RESPONSE_PAYLOAD_LEN] = bytes.try_into().map_err(|_| HandshakeError::Malformed)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[1..9]);
        let mut no_session_token = [0u8; TOKEN_LEN];
        no_session_token.copy_from_slice(&bytes[9..]);
        Ok(Self { resumed: bytes[0] == 1, next_frame_seq: u64::from_be_bytes(seq), no_session_token })
    }
}

/// The secret behind a gateway's "no such session" tokens. It is derived from the gateway's
/// static key, so a restarted process (or the other gateway of a pair that shares the key)
/// answers with the token the edge was given.
pub fn no_session_key(gateway: &PrivateKey) -> [u8; 32] {
    mac32(gateway.as_bytes(), b"braid no-session token")
}

/// The token for session index `index` under `key` ([`no_session_key`]).
pub fn no_session_token(key: &[u8; 32], index: SessionIndex) -> [u8; TOKEN_LEN] {
    mac16(key, &index.get().to_be_bytes())
}

/// Writes a "no such session" body carrying `token` into `out`.
pub fn no_session(token: &[u8; TOKEN_LEN], out: &mut Vec<u8>) {
    out.push(ControlType::NoSession.to_u8());
    out.extend_from_slice(token);
}

/// Whether a "no such session" body carries `expected` (compared in constant time).
pub fn check_no_session(body: &[u8], expected: &[u8; TOKEN_LEN]) -> bool {
    body.len() == NO_SESSION_LEN
        && body[0] == ControlType::NoSession.to_u8()
        && aws_lc_rs::constant_time::verify_slices_are_equal(&body[1..], expected).is_ok()
}

/// The directional data-plane keys a finished handshake yields.
pub struct SplitKeys {
    /// Initiator to responder.
    pub initiator_to_responder: [u8; 32],
    /// Responder to initiator.
    pub responder_to_initiator: [u8; 32],
}

impl core::fmt::Debug for SplitKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SplitKeys(<redacted>)")
    }
}

impl Drop for SplitKeys {
    fn drop(&mut self) {
        self.initiator_to_responder.zeroize();
        self.responder_to_initiator.zeroize();
    }
}

fn split(state: &mut snow::HandshakeState) -> SplitKeys {
    let (initiator_to_responder, responder_to_initiator) = state.dangerously_get_raw_split();
    SplitKeys { initiator_to_responder, responder_to_initiator }
}

fn read_index(body: &[u8]) -> Result<SessionIndex, HandshakeError> {
    let b = body.get(1..1 + INDEX_LEN).ok_or(HandshakeError::Malformed)?;
    Ok(SessionIndex::from_wire(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
}

/// An initiation in flight, waiting for its response.
pub struct Initiation {
    state: snow::HandshakeState,
    /// The index the initiator chose for the new keys.
    pub local_index: SessionIndex,
    /// mac1 of the initiation (a cookie reply is bound to it).
    pub mac1: [u8; MAC_LEN],
    local_public: PublicKey,
}

impl core::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiation").field("local_index", &self.local_index).finish_non_exhaustive()
    }
}

/// Writes an initiation body into `out` (replacing its contents), with a zero mac2 (see
/// [`set_mac2`]).
///
/// # Errors
/// [`HandshakeError::Noise`] if snow refuses the keys.
pub fn initiate(
    local: &PrivateKey,
    gateway: &PublicKey,
    psk: Option<&Psk>,
    rng: &mut CryptoRng,
    local_index: SessionIndex,
    payload: &InitPayload,
    out: &mut Vec<u8>,
) -> Result<Initiation, HandshakeError> {
    let zero = Psk([0; KEY_LEN]);
    let psk = psk.unwrap_or(&zero);
    let mut state = builder(rng.fork())
        .local_private_key(local.as_bytes())
        .and_then(|b| b.remote_public_key(&gateway.0))
        .and_then(|b| b.psk(2, &psk.0))
        .and_then(snow::Builder::build_initiator)
        .map_err(|_| HandshakeError::Noise)?;
    out.clear();
    out.resize(INIT_LEN, 0);
    out[0] = ControlType::HandshakeInitiation.to_u8();
    out[1..1 + INDEX_LEN].copy_from_slice(&local_index.get().to_be_bytes());
    let written = state
        .write_message(&payload.emit(), &mut out[1 + INDEX_LEN..1 + INDEX_LEN + NOISE_INIT_LEN])
        .map_err(|_| HandshakeError::Noise)?;
    if written != NOISE_INIT_LEN {
        return Err(HandshakeError::Noise);
    }
    seal_macs(out, &mac1_key(gateway));
    let mac1 = mac1_of(out).ok_or(HandshakeError::Malformed)?;
    Ok(Initiation { state, local_index, mac1, local_public: local.public() })
}

/// Checks a response body's length, type and mac1 (addressed to `initiator`), without touching
/// any handshake state: junk is refused before it can disturb a pending initiation.
///
/// # Errors
/// [`HandshakeError::Malformed`] or [`HandshakeError::BadMac`].
pub fn check_response(body: &[u8], initiator: &PublicKey) -> Result<(), HandshakeError> {
    if body.len() != RESPONSE_LEN || body[0] != ControlType::HandshakeResponse.to_u8() {
        return Err(HandshakeError::Malformed);
    }
    if !check_mac1(body, &mac1_key(initiator)) {
        return Err(HandshakeError::BadMac);
    }
    Ok(())
}

impl Initiation {
    /// Reads the response body and yields the gateway's index, its payload and the keys.
    ///
    /// # Errors
    /// [`HandshakeError::Malformed`], [`HandshakeError::BadMac`] or [`HandshakeError::Noise`]
    /// (a wrong PSK or gateway key shows up here).
    pub fn finish(mut self, body: &[u8]) -> Result<(SessionIndex, ResponsePayload, SplitKeys), HandshakeError> {
        check_response(body, &self.local_public)?;
        let remote_index = read_index(body)?;
        let mut payload = [0u8; RESPONSE_PAYLOAD_LEN + 16];
        let len = self
            .state
            .read_message(&body[1 + INDEX_LEN..1 + INDEX_LEN + NOISE_RESPONSE_LEN], &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        let payload = ResponsePayload::parse(&payload[..len])?;
        Ok((remote_index, payload, split(&mut self.state)))
    }
}

/// An initiation the gateway has read, before it decides whether to answer.
pub struct ReadInitiation {
    state: snow::HandshakeState,
    /// The edge's static key.
    pub peer: PublicKey,
    /// The index the edge chose.
    pub sender_index: SessionIndex,
    /// What the edge sent.
    pub payload: InitPayload,
}

impl core::fmt::Debug for ReadInitiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadInitiation").field("peer", &self.peer).field("sender_index", &self.sender_index).finish()
    }
}

/// Reads an initiation body whose mac1 (and, under load, mac2) the caller has checked.
///
/// # Errors
/// [`HandshakeError::Malformed`] or [`HandshakeError::Noise`].
pub fn read_initiation(local: &PrivateKey, rng: &mut CryptoRng, body: &[u8]) -> Result<ReadInitiation, HandshakeError> {
    if body.len() != INIT_LEN || body[0] != ControlType::HandshakeInitiation.to_u8() {
        return Err(HandshakeError::Malformed);
    }
    let sender_index = read_index(body)?;
    let mut state = builder(rng.fork())
        .local_private_key(local.as_bytes())
        .and_then(snow::Builder::build_responder)
        .map_err(|_| HandshakeError::Noise)?;
    let mut payload = [0u8; INIT_PAYLOAD_LEN + 16];
    let len = state
        .read_message(&body[1 + INDEX_LEN..1 + INDEX_LEN + NOISE_INIT_LEN], &mut payload)
        .map_err(|_| HandshakeError::Noise)?;
    let payload = InitPayload::parse(&payload[..len])?;
    let peer = state.get_remote_static().and_then(|k| <[u8; 32]>::try_from(k).ok()).ok_or(HandshakeError::Noise)?;
    Ok(ReadInitiation { state, peer: PublicKey(peer), sender_index, payload })
}

impl ReadInitiation {
    /// Writes the response body into `out` and yields the keys.
    ///
    /// # Errors
    /// [`HandshakeError::Noise`] if snow refuses.
    pub fn respond(
        mut self,
        psk: Option<&Psk>,
        local_index: SessionIndex,
        payload: &ResponsePayload,
        out: &mut Vec<u8>,
    ) -> Result<SplitKeys, HandshakeError> {
        let zero = Psk([0; KEY_LEN]);
        self.state.set_psk(2, &psk.unwrap_or(&zero).0).map_err(|_| HandshakeError::Noise)?;
        out.clear();
        out.resize(RESPONSE_LEN, 0);
        out[0] = ControlType::HandshakeResponse.to_u8();
        out[1..1 + INDEX_LEN].copy_from_slice(&local_index.get().to_be_bytes());
        let written = self
            .state
            .write_message(&payload.emit(), &mut out[1 + INDEX_LEN..1 + INDEX_LEN + NOISE_RESPONSE_LEN])
            .map_err(|_| HandshakeError::Noise)?;
        if written != NOISE_RESPONSE_LEN {
            return Err(HandshakeError::Noise);
        }
        seal_macs(out, &mac1_key(&self.peer));
        Ok(split(&mut self.state))
    }
}

/// The cookie for a source address under the current secret.
pub fn cookie_for(secret: &[u8; 32], from: SocketAddr) -> [u8; MAC_LEN] {
    let mut data = Vec::with_capacity(18);
    match from.ip() {
        std::net::IpAddr::V4(ip) => data.extend_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => data.extend_from_slice(&ip.octets()),
    }
    data.extend_from_slice(&from.port().to_be_bytes());
    mac16(secret, &data)
}

/// Writes a cookie reply body into `out`, encrypted to whoever sent the initiation with `mac1`.
pub fn cookie_reply(
    gateway: &PublicKey,
    rng: &mut CryptoRng,
    mac1: &[u8; MAC_LEN],
    cookie: &[u8; MAC_LEN],
    out: &mut Vec<u8>,
) {
    use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce);
    out.clear();
    out.push(ControlType::CookieReply.to_u8());
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(cookie);
    let key = UnboundKey::new(&CHACHA20_POLY1305, &cookie_key(gateway)).map(LessSafeKey::new);
    let tag = key.ok().and_then(|key| {
        key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(mac1), &mut out[start..]).ok()
    });
    match tag {
        Some(tag) => out.extend_from_slice(tag.as_ref()),
        None => out.clear(),
    }
}

/// Opens a cookie reply to the initiation with `mac1`.
pub fn open_cookie_reply(gateway: &PublicKey, mac1: &[u8; MAC_LEN], body: &[u8]) -> Option<[u8; MAC_LEN]> {
    use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
    if body.len() != COOKIE_REPLY_LEN || body[0] != ControlType::CookieReply.to_u8() {
        return None;
    }
    let nonce: [u8; 12] = body[1..13].try_into().ok()?;
    let mut sealed = body[13..].to_vec();
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &cookie_key(gateway)).ok()?);
    let plain = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(mac1), &mut sealed).ok()?;
    plain.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> PrivateKey {
        PrivateKey::from_bytes([n; 32])
    }

    fn payload() -> InitPayload {
        InitPayload {
            timestamp: Tai64n::from_unix_nanos(1_700_000_000_000_000_000),
            cipher: Cipher::ChaCha20Poly1305,
            epoch: 42,
            next_frame_seq: 7,
        }
    }

    #[test]
    fn a_full_handshake_yields_matching_keys_and_payloads() {
        let (edge, gateway) = (keys(1), keys(2));
        let mut rng = CryptoRng::new([3; 32]);
        let mut init = Vec::new();
        let pending =
            initiate(&edge, &gateway.public(), None, &mut rng, SessionIndex::from_wire(5), &payload(), &mut init)
                .unwrap();
        assert_eq!(init.len(), INIT_LEN);
        assert!(check_mac1(&init, &mac1_key(&gateway.public())));
        let read = read_initiation(&gateway, &mut rng, &init).unwrap();
        assert_eq!(read.peer, edge.public());
        assert_eq!(read.payload, payload());
        let mut response = Vec::new();
        let reply = ResponsePayload { resumed: false, next_frame_seq: 9, no_session_token: [7; TOKEN_LEN] };
        let gw_keys = read.respond(None, SessionIndex::from_wire(6), &reply, &mut response).unwrap();
        let (index, got, edge_keys) = pending.finish(&response).unwrap();
        assert_eq!((index, got), (SessionIndex::from_wire(6), reply));
        assert_eq!(edge_keys.initiator_to_responder, gw_keys.initiator_to_responder);
        assert_eq!(edge_keys.responder_to_initiator, gw_keys.responder_to_initiator);
    }

    #[test]
    fn a_wrong_psk_fails_at_the_edge_and_a_wrong_gateway_key_fails_mac1() {
        let (edge, gateway) = (keys(1), keys(2));
        let mut rng = CryptoRng::new([3; 32]);
        let mut init = Vec::new();
        let psk = Psk([8; 32]);
        let pending =
            initiate(&edge, &gateway.public(), Some(&psk), &mut rng, SessionIndex::from_wire(5), &payload(), &mut init)
                .unwrap();
        let read = read_initiation(&gateway, &mut rng, &init).unwrap();
        let mut response = Vec::new();
        read.respond(
            Some(&Psk([9; 32])),
            SessionIndex::from_wire(6),
            &ResponsePayload { resumed: false, next_frame_seq: 0, no_session_token: [0; TOKEN_LEN] },
            &mut response,
        )
        .unwrap();
        assert_eq!(pending.finish(&response).unwrap_err(), HandshakeError::Noise);

        initiate(&edge, &keys(4).public(), None, &mut rng, SessionIndex::from_wire(5), &payload(), &mut init).unwrap();
        assert!(!check_mac1(&init, &mac1_key(&gateway.public())));
    }

    #[test]
    fn a_cookie_reply_opens_only_for_the_initiation_it_answers() {
        let gateway = keys(2).public();
        let mut rng = CryptoRng::new([3; 32]);
        let cookie = cookie_for(&[5; 32], "127.0.0.1:4000".parse().unwrap());
        let mut reply = Vec::new();
        cookie_reply(&gateway, &mut rng, &[1; 16], &cookie, &mut reply);
        assert_eq!(reply.len(), COOKIE_REPLY_LEN);
        assert_eq!(open_cookie_reply(&gateway, &[1; 16], &reply), Some(cookie));
        assert_eq!(open_cookie_reply(&gateway, &[2; 16], &reply), None);
        assert!(reply.len() < INIT_LEN, "no amplification");
    }

    #[test]
    fn timestamps_order_by_time() {
        assert!(Tai64n::from_unix_nanos(2_000_000_001) > Tai64n::from_unix_nanos(2_000_000_000));
        assert!(Tai64n::from_unix_nanos(3_000_000_000) > Tai64n::from_unix_nanos(2_999_999_999));
    }
}
