//! Key generations: the keys that seal, the ones they replaced (still opening for a grace
//! period) and the ones a rekey brought that wait to be proven.

use std::time::{Duration, Instant};

use crate::SessionIndex;
use crate::crypto::{PathNonce, Protection, SessionKeys};
use crate::stats::DropReason;

/// After new keys take over, the previous ones still open packets this long, so packets in
/// flight on a slow link when the keys changed are not lost.
pub const KEY_GRACE: Duration = Duration::from_secs(10);
/// Keys this old are never used to seal (the edge rekeys long before, at
/// [`crate::endpoint::edge::REKEY_AFTER_TIME`]).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// One generation of keys.
#[derive(Debug)]
pub(super) struct KeyGen {
    pub(super) local_index: SessionIndex,
    pub(super) remote_index: SessionIndex,
    protection: Box<dyn Protection>,
    pub(super) created: Instant,
    pub(super) sealed: u64,
}

impl KeyGen {
    fn new(keys: SessionKeys, now: Instant) -> Self {
        Self {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            protection: keys.protection,
            created: now,
            sealed: 0,
        }
    }

    /// Seals `buf` (its first `aad_len` bytes authenticated only) under `nonce`, counting it.
    pub(super) fn seal(&mut self, nonce: PathNonce, buf: &mut Vec<u8>, aad_len: usize) -> Result<(), DropReason> {
        self.protection.seal(nonce, buf, aad_len).map_err(|_| DropReason::SealFailed)?;
        self.sealed += 1;
        Ok(())
    }
}

/// Which generation of keys a datagram was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Generation {
    Current,
    Previous,
    Next,
}

/// The generations of keys a session holds.
#[derive(Debug)]
pub(super) struct Keys {
    /// The keys that seal.
    pub(super) current: KeyGen,
    /// The keys before the last rekey, and when they stop opening packets.
    previous: Option<(KeyGen, Instant)>,
    /// Keys the gateway answered a rekey with, used once the edge proves it has them.
    next: Option<KeyGen>,
}

impl Keys {
    pub(super) fn new(keys: SessionKeys, now: Instant) -> Self {
        Self { current: KeyGen::new(keys, now), previous: None, next: None }
    }

    /// Installs keys from a new handshake: `confirmed` ones take over sealing at once, the others
    /// wait in `next` until a packet opens under them.
    pub(super) fn install(&mut self, now: Instant, keys: SessionKeys, confirmed: bool) {
        let generation = KeyGen::new(keys, now);
        if confirmed {
            let old = std::mem::replace(&mut self.current, generation);
            self.previous = Some((old, now + KEY_GRACE));
            self.next = None;
        } else {
            self.next = Some(generation);
        }
    }

    /// Every index this end answers to: current, previous (in its grace) and next.
    pub(super) fn indices(&self) -> impl Iterator<Item = SessionIndex> + '_ {
        let previous = self.previous.as_ref().map(|(k, _)| k.local_index);
        let next = self.next.as_ref().map(|k| k.local_index);
        core::iter::once(self.current.local_index).chain(previous).chain(next)
    }

    /// The generation a datagram addressed to `index` belongs to.
    pub(super) fn generation(&self, index: SessionIndex) -> Option<Generation> {
        if index == self.current.local_index {
            Some(Generation::Current)
        } else if self.previous.as_ref().is_some_and(|(k, _)| k.local_index == index) {
            Some(Generation::Previous)
        } else if self.next.as_ref().is_some_and(|k| k.local_index == index) {
            Some(Generation::Next)
        } else {
            None
        }
    }

    /// Opens `buf` in place under the keys of `generation`; the plaintext's length.
    pub(super) fn open(
        &self,
        generation: Generation,
        nonce: PathNonce,
        buf: &mut [u8],
        aad_len: usize,
    ) -> Result<usize, DropReason> {
        let keys = match generation {
            Generation::Current => Some(&self.current),
            Generation::Previous => self.previous.as_ref().map(|(k, _)| k),
            Generation::Next => self.next.as_ref(),
        };
        let keys = keys.ok_or(DropReason::UnknownSession)?;
        keys.protection.open(nonce, buf, aad_len).map_err(|_| DropReason::OpenFailed)
    }

    /// A packet opened under `generation`: next keys so proven take over sealing. Whether they
    /// did.
    pub(super) fn opened(&mut self, now: Instant, generation: Generation) -> bool {
        if generation != Generation::Next {
            return false;
        }
        let Some(next) = self.next.take() else { return false };
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now + KEY_GRACE));
        true
    }

    /// The keys to seal with at `now`, unless they are too old to use.
    pub(super) fn sealing(&mut self, now: Instant) -> Result<&mut KeyGen, DropReason> {
        if now.saturating_duration_since(self.current.created) >= REJECT_AFTER_TIME {
            return Err(DropReason::KeyExpired);
        }
        Ok(&mut self.current)
    }

    /// Forgets every generation but the current one.
    pub(super) fn forget_others(&mut self) {
        self.previous = None;
        self.next = None;
    }

    /// When the previous keys stop opening packets.
    pub(super) fn retire_at(&self) -> Option<Instant> {
        self.previous.as_ref().map(|(_, at)| *at)
    }

    /// Drops the previous keys once their grace is over.
    pub(super) fn retire(&mut self, now: Instant) {
        if self.retire_at().is_some_and(|at| at <= now) {
            self.previous = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;
    use crate::testing::key_pair;
    use crate::{LinkId, PacketNumber};

    fn keys_with_index(seed: u64, index: u32) -> SessionKeys {
        let (mut keys, _) = key_pair(seed, Cipher::ChaCha20Poly1305);
        keys.local_index = SessionIndex::from_wire(index);
        keys
    }

    #[test]
    fn confirmed_keys_seal_at_once_and_the_old_ones_open_for_the_grace() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut keys = Keys::new(keys_with_index(1, 1), now);
        keys.install(now, keys_with_index(2, 2), true);
        assert_eq!(keys.current.local_index.get(), 2);
        assert_eq!(keys.generation(SessionIndex::from_wire(1)), Some(Generation::Previous));
        assert_eq!(keys.retire_at(), Some(now + KEY_GRACE));
        keys.retire(now + KEY_GRACE - Duration::from_millis(1));
        assert_eq!(keys.indices().count(), 2);
        keys.retire(now + KEY_GRACE);
        assert_eq!(keys.generation(SessionIndex::from_wire(1)), None);
        assert_eq!(keys.indices().map(SessionIndex::get).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn unconfirmed_keys_wait_until_a_packet_opens_under_them() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut keys = Keys::new(keys_with_index(1, 1), now);
        keys.install(now, keys_with_index(2, 2), false);
        assert_eq!(keys.current.local_index.get(), 1);
        assert_eq!(keys.generation(SessionIndex::from_wire(2)), Some(Generation::Next));
        assert!(!keys.opened(now, Generation::Current));
        assert_eq!(keys.current.local_index.get(), 1);
        assert!(keys.opened(now, Generation::Next));
        assert_eq!(keys.current.local_index.get(), 2);
        assert_eq!(keys.generation(SessionIndex::from_wire(1)), Some(Generation::Previous));
    }

    #[test]
    fn keys_past_reject_after_time_never_seal() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut keys = Keys::new(keys_with_index(1, 1), now);
        assert!(keys.sealing(now + REJECT_AFTER_TIME - Duration::from_secs(1)).is_ok());
        assert_eq!(keys.sealing(now + REJECT_AFTER_TIME).err(), Some(DropReason::KeyExpired));
    }

    #[test]
    fn a_sealed_packet_opens_under_the_peers_generation_and_counts() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let (edge, gateway) = key_pair(7, Cipher::ChaCha20Poly1305);
        let mut edge = Keys::new(edge, now);
        let gateway = Keys::new(gateway, now);
        let nonce = PathNonce { link: LinkId::new(0), packet_number: PacketNumber(5) };
        let mut buf = b"aad:secret".to_vec();
        edge.sealing(now).unwrap().seal(nonce, &mut buf, 4).unwrap();
        assert_eq!(edge.current.sealed, 1);
        let len = gateway.open(Generation::Current, nonce, &mut buf, 4).unwrap();
        assert_eq!(&buf[4..4 + len], b"secret");
        assert_eq!(gateway.open(Generation::Previous, nonce, &mut buf, 4), Err(DropReason::UnknownSession));
        let mut forged = b"aad:secret".to_vec();
        forged.extend_from_slice(&[0; 16]);
        assert_eq!(gateway.open(Generation::Current, nonce, &mut forged, 4), Err(DropReason::OpenFailed));
    }
}
