//! braid: a multi-link bonded L2 tunnel for live streaming.
//!
//! At its core is a **sans-IO protocol engine**: no sockets, no clock, no RNG. Time and randomness
//! are passed in; the engine is driven by `handle_*` inputs and drained by `poll_*` outputs (see
//! [`Session`]). This crate is the engine alone: its dependency list has no runtime, socket, TAP,
//! netlink or command-line crate, so it cannot reach for one. The tokio I/O layer is the `braid`
//! crate, which drives it.
//!
//! The parts, bottom-up:
//! * [`wire`]: GRE-in-UDP framing, zero-copy views and typed `Repr`s;
//! * [`crypto`]: the seal/open trait and its AEAD implementation;
//! * [`window`]: the dedup/replay window;
//! * [`reorder`]: the time-bounded reorder buffer;
//! * [`fec`]: forward error correction over short blocks of frames (systematic Reed-Solomon);
//! * [`monitor`]: per-link liveness and quality;
//! * [`scheduler`]: which links carry each frame (policy behind one trait);
//! * [`session`]: the state machine that composes them;
//! * [`endpoint`]: the edge and the gateway, which run handshakes and own sessions.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod calendar;
pub mod cc;
pub mod crypto;
pub mod endpoint;
pub mod fec;
pub mod fragment;
pub mod handshake;
pub mod keys;
pub mod monitor;
pub mod mss;
pub mod pmtu;
pub mod release;
pub mod reorder;
pub mod retransmit;
pub mod rng;
pub mod scheduler;
pub mod session;
pub mod stats;
pub mod tuning;
pub mod window;
pub mod wire;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use monitor::LinkState;
pub use scheduler::Mode;
pub use session::{
    DropReason, Event, FecConfig, LinkConfig, LinkEvent, Role, Session, SessionConfig, SetupError, TakeoverReason,
    TimerKind, Transmit,
};
pub use tuning::Tuning;

use core::fmt;

/// The most links one session can have. Field rigs have 2–4 modems; 16 leaves room and keeps a
/// set of links in one `u16`.
pub const MAX_LINKS: usize = 16;

/// Identifies one uplink of a session. Numbered by the edge from 0, below [`MAX_LINKS`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LinkId(u8);

impl LinkId {
    /// Wraps a raw link number (it may be out of range; see [`LinkId::index`]).
    pub const fn new(raw: u8) -> Self {
        Self(raw)
    }

    /// The raw link number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The link as an index into per-link tables, or `None` if it is not below [`MAX_LINKS`].
    pub const fn index(self) -> Option<usize> {
        if (self.0 as usize) < MAX_LINKS { Some(self.0 as usize) } else { None }
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link{}", self.0)
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A receiver's session index: the upper 24 bits of the GRE Key. Zero is reserved for handshake
/// initiations, which have no session yet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionIndex(u32);

impl SessionIndex {
    /// The largest index that fits in the Key.
    pub const MAX: u32 = (1 << 24) - 1;

    /// Wraps a 24-bit value from the wire (higher bits are dropped).
    pub const fn from_wire(raw: u32) -> Self {
        Self(raw & Self::MAX)
    }

    /// The index, below 2²⁴.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for SessionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "idx{:06x}", self.0)
    }
}

/// A path's 64-bit packet number: the AEAD nonce and the replay key of one link of a session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct PacketNumber(pub u64);

/// A frame's session-wide 64-bit sequence: the dedup and reorder key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct FrameSeq(pub u64);

/// A set of links, one bit per [`LinkId`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LinkSet(u16);

impl LinkSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// Adds a link (ignored if out of range).
    pub fn insert(&mut self, link: LinkId) {
        if let Some(i) = link.index() {
            self.0 |= 1 << i;
        }
    }

    /// Removes a link.
    pub fn remove(&mut self, link: LinkId) {
        if let Some(i) = link.index() {
            self.0 &= !(1 << i);
        }
    }

    /// Whether the set holds `link`.
    pub const fn contains(self, link: LinkId) -> bool {
        match link.index() {
            Some(i) => self.0 & (1 << i) != 0,
            None => false,
        }
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many links the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Removes and returns the lowest link.
    pub fn pop_first(&mut self) -> Option<LinkId> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(LinkId::new(i as u8))
    }

    /// The links in ascending order.
    pub fn iter(self) -> impl Iterator<Item = LinkId> {
        let mut set = self;
        core::iter::from_fn(move || set.pop_first())
    }
}

impl FromIterator<LinkId> for LinkSet {
    fn from_iter<I: IntoIterator<Item = LinkId>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for link in iter {
            set.insert(link);
        }
        set
    }
}

impl Extend<LinkId> for LinkSet {
    fn extend<I: IntoIterator<Item = LinkId>>(&mut self, iter: I) {
        for link in iter {
            self.insert(link);
        }
    }
}

impl fmt::Debug for LinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}
