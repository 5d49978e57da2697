//! Counters for a session and its links, and the reasons a datagram or frame is dropped.

/// Why the engine dropped a datagram or a frame. Every drop is counted under one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DropReason {
    /// The GRE header is truncated or has flags or a version braid does not send.
    #[error("bad header")]
    BadHeader,
    /// A GRE protocol type braid does not speak.
    #[error("unknown protocol")]
    UnknownProtocol,
    /// A control type braid does not speak.
    #[error("unknown control type")]
    UnknownControlType,
    /// The Key names another session (or none).
    #[error("unknown session")]
    UnknownSession,
    /// The Key names a link this session does not have, or it arrived on another link's socket.
    #[error("bad link")]
    BadLink,
    /// The path packet number was already seen: a replay or a duplicate on the wire.
    #[error("replay")]
    Replay,
    /// The path packet number is behind the replay window.
    #[error("too old")]
    TooOld,
    /// The AEAD tag did not verify.
    #[error("failed to open")]
    OpenFailed,
    /// Authenticated, but the inner payload is malformed.
    #[error("bad payload")]
    BadPayload,
    /// A handshake message reached an established session.
    #[error("unexpected handshake")]
    UnexpectedHandshake,
    /// An outgoing frame is larger than the engine carries, or shorter than an Ethernet header.
    #[error("bad frame length")]
    BadFrameLength,
    /// No link could carry an outgoing frame.
    #[error("no link")]
    NoLink,
    /// The send queue was full: the driver is not draining `poll_transmit`.
    #[error("queue full")]
    QueueFull,
    /// The AEAD refused to seal.
    #[error("seal failed")]
    SealFailed,
    /// The keys are past their lifetime and no rekey has succeeded.
    #[error("keys expired")]
    KeyExpired,
    /// A handshake message's mac1 did not verify: the sender does not know our public key.
    #[error("bad mac")]
    BadMac,
    /// A handshake message did not decrypt, or is malformed.
    #[error("handshake failed")]
    HandshakeFailed,
    /// A handshake from a static key that is not on the allowlist.
    #[error("unknown peer")]
    UnknownPeer,
    /// A handshake initiation with a timestamp not newer than the last one.
    #[error("handshake replay")]
    HandshakeReplay,
    /// A handshake initiation refused (or answered with a cookie) under load.
    #[error("handshake rate limited")]
    HandshakeRateLimited,
    /// A frame to send before any session exists.
    #[error("no session")]
    NoSession,
    /// An outgoing frame would wait behind more than
    /// [`crate::session::MAX_QUEUE_DELAY`] on every link that could take it: the offered load
    /// exceeds what the links carry, and the tunnel drops at its entry rather than fill the
    /// modems' buffers.
    #[error("over capacity")]
    OverCapacity,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [Self; 22] = [
        Self::BadHeader,
        Self::UnknownProtocol,
        Self::UnknownControlType,
        Self::UnknownSession,
        Self::BadLink,
        Self::Replay,
        Self::TooOld,
        Self::OpenFailed,
        Self::BadPayload,
        Self::UnexpectedHandshake,
        Self::BadFrameLength,
        Self::NoLink,
        Self::QueueFull,
        Self::SealFailed,
        Self::KeyExpired,
        Self::BadMac,
        Self::HandshakeFailed,
        Self::UnknownPeer,
        Self::HandshakeReplay,
        Self::HandshakeRateLimited,
        Self::NoSession,
        Self::OverCapacity,
    ];

    /// A snake_case name for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadHeader => "bad_header",
            Self::UnknownProtocol => "unknown_protocol",
            Self::UnknownControlType => "unknown_control_type",
            Self::UnknownSession => "unknown_session",
            Self::BadLink => "bad_link",
            Self::Replay => "replay",
            Self::TooOld => "too_old",
            Self::OpenFailed => "open_failed",
            Self::BadPayload => "bad_payload",
            Self::UnexpectedHandshake => "unexpected_handshake",
            Self::BadFrameLength => "bad_frame_length",
            Self::NoLink => "no_link",
            Self::QueueFull => "queue_full",
            Self::SealFailed => "seal_failed",
            Self::KeyExpired => "key_expired",
            Self::BadMac => "bad_mac",
            Self::HandshakeFailed => "handshake_failed",
            Self::UnknownPeer => "unknown_peer",
            Self::HandshakeReplay => "handshake_replay",
            Self::HandshakeRateLimited => "handshake_rate_limited",
            Self::NoSession => "no_session",
            Self::OverCapacity => "over_capacity",
        }
    }

    const fn slot(self) -> usize {
        self as usize
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.slot()] += 1;
    }

    /// The count for one reason.
    pub const fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.slot()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each reason with its count, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

impl core::fmt::Display for DropCounts {
    /// The non-zero counts as `reason=count`, space-separated.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (reason, count) in self.iter().filter(|(_, n)| *n > 0) {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{}={count}", reason.as_str())?;
            first = false;
        }
        Ok(())
    }
}

/// Session-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Frames handed in by the local side.
    pub frames_in: u64,
    /// Frame copies sealed onto links (a redundant frame counts once per link).
    pub frame_copies_sent: u64,
    /// Frames delivered to the local side, in order.
    pub frames_delivered: u64,
    /// Frames the reorder buffer gave up on.
    pub frames_lost: u64,
    /// Frames that arrived after their gap was given up.
    pub frames_late: u64,
    /// Frames delivered after waiting for a gap.
    pub frames_reordered: u64,
    /// Duplicate copies discarded (redundancy working, not an error).
    pub duplicate_copies: u64,
    /// Missing frames asked for again (each NAK of each frame counts).
    pub frames_nacked: u64,
    /// Frame copies re-sent in answer to the peer's NAKs.
    pub frames_retransmitted: u64,
    /// Gaps filled by a re-sent copy: frames retransmission saved.
    pub frames_recovered: u64,
    /// Frame copies sent in pieces, because they were larger than one datagram on the path.
    pub frames_fragmented: u64,
    /// Frames joined again from pieces.
    pub frames_reassembled: u64,
    /// Pieces of frames already delivered or held (redundant copies), discarded.
    pub duplicate_pieces: u64,
    /// TCP SYNs whose MSS was lowered to fit one datagram.
    pub mss_clamped: u64,
    /// NAKs for frames whose first copy could not have arrived yet, left unanswered.
    pub naks_early: u64,
    /// Datagram bytes of data sent as each frame's first copy.
    pub data_bytes_first: u64,
    /// Datagram bytes of data sent beyond the first copies: redundant and spare-capacity
    /// duplicates and retransmissions (the overhead of the mode).
    pub data_bytes_extra: u64,
    /// Drops by reason.
    pub drops: DropCounts,
}

/// Per-link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagram bytes sent.
    pub tx_bytes: u64,
    /// Frame copies sent.
    pub tx_frames: u64,
    /// Of those, copies re-sent in answer to a NAK.
    pub tx_retransmits: u64,
    /// Authenticated datagrams received.
    pub rx_packets: u64,
    /// Authenticated datagram bytes received.
    pub rx_bytes: u64,
    /// Frame copies received (including duplicates).
    pub rx_frames: u64,
    /// Frames this link delivered first (its share of the stream).
    pub rx_frames_first: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Path-MTU probes sent.
    pub mtu_probes_sent: u64,
}
