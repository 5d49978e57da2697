//! Counters for a session and its links, and the reasons a datagram or frame is dropped.

/// Declares [`DropReason`] from one list: each reason's variant, doc, metric name and message.
macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, $message:literal; )*) => {
        /// Why the engine dropped a datagram or a frame. Every drop is counted under one reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $( $(#[doc = $doc])+ $variant, )*
        }

        impl DropReason {
            /// Every reason, in a fixed order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// A snake_case name for metrics and logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                }
            }

            /// The reason in words.
            pub const fn message(self) -> &'static str {
                match self {
                    $( Self::$variant => $message, )*
                }
            }
        }
    };
}

drop_reasons! {
    /// The GRE header is truncated or has flags or a version braid does not send.
    BadHeader = "bad_header", "bad header";
    /// A GRE protocol type braid does not speak.
    UnknownProtocol = "unknown_protocol", "unknown protocol";
    /// A control type braid does not speak.
    UnknownControlType = "unknown_control_type", "unknown control type";
    /// The Key names another session (or none).
    UnknownSession = "unknown_session", "unknown session";
    /// The Key names a link this session does not have, or it arrived on another link's socket.
    BadLink = "bad_link", "bad link";
    /// The path packet number was already seen: a replay or a duplicate on the wire.
    Replay = "replay", "replay";
    /// The path packet number is behind the replay window.
    TooOld = "too_old", "too old";
    /// The AEAD tag did not verify.
    OpenFailed = "open_failed", "failed to open";
    /// Authenticated, but the inner payload is malformed.
    BadPayload = "bad_payload", "bad payload";
    /// An authenticated recovery shard that its block refuses (a header out of range or at odds
    /// with the block's other shards, or a block that does not decode).
    BadRecovery = "bad_recovery", "bad recovery shard";
    /// A handshake message reached an established session.
    UnexpectedHandshake = "unexpected_handshake", "unexpected handshake";
    /// An outgoing frame is larger than the engine carries, or shorter than an Ethernet header.
    BadFrameLength = "bad_frame_length", "bad frame length";
    /// No link could carry an outgoing frame.
    NoLink = "no_link", "no link";
    /// The send queue was full: the driver is not draining `poll_transmit`.
    QueueFull = "queue_full", "queue full";
    /// The AEAD refused to seal.
    SealFailed = "seal_failed", "seal failed";
    /// The keys are past their lifetime and no rekey has succeeded.
    KeyExpired = "key_expired", "keys expired";
    /// A handshake message's mac1 did not verify: the sender does not know our public key.
    BadMac = "bad_mac", "bad mac";
    /// A handshake message did not decrypt, or is malformed.
    HandshakeFailed = "handshake_failed", "handshake failed";
    /// A handshake from a static key that is not on the allowlist.
    UnknownPeer = "unknown_peer", "unknown peer";
    /// A handshake initiation with a timestamp not newer than the last one.
    HandshakeReplay = "handshake_replay", "handshake replay";
    /// A handshake initiation refused (or answered with a cookie) under load.
    HandshakeRateLimited = "handshake_rate_limited", "handshake rate limited";
    /// A frame to send before any session exists.
    NoSession = "no_session", "no session";
    /// An outgoing frame would wait behind more than
    /// [`crate::session::MAX_QUEUE_DELAY`] on every link that could take it: the offered load
    /// exceeds what the links carry, and the tunnel drops at its entry rather than fill the
    /// modems' buffers.
    OverCapacity = "over_capacity", "over capacity";
    /// A frame for an edge that keeps this gateway as a standby (another gateway carries its
    /// stream): the edge would discard it.
    Standby = "standby", "standby session";
    /// A "no such session" answer to data sent under keys a newer handshake replaced: the
    /// gateway has the newer session.
    StaleNoSession = "stale_no_session", "stale no-session answer";
}

impl DropReason {
    const fn slot(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for DropReason {}

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

    /// Adds `other`'s counts to these.
    pub fn add_all(&mut self, other: &Self) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
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

/// One counter as declared in [`counters!`]: what the status JSON calls it, what it means,
/// and the metric family it is exported under (several counters may share one family, told
/// apart by their direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDef {
    /// The field, and the key in the status JSON.
    pub name: &'static str,
    /// What it counts: the field's doc comment.
    help: &'static str,
    /// The metric family, without its prefix (`braid_session_`, `braid_link_`, ...).
    pub metric: &'static str,
    /// `tx` or `rx` for a family that counts both directions.
    pub direction: Option<&'static str>,
}

impl CounterDef {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        help: &'static str,
        metric: &'static str,
        direction: Option<&'static str>,
    ) -> Self {
        Self { name, help, metric, direction }
    }

    /// What it counts, one line.
    pub fn help(&self) -> &'static str {
        self.help.trim()
    }
}

/// A set of counters declared with [`counters!`]: each one is named, documented and exported
/// from its declaration alone.
pub trait Counters: Copy + Default {
    /// Every counter, in declaration order.
    const DEFS: &'static [CounterDef];

    /// The value of counter `i` of [`Counters::DEFS`].
    fn get(&self, i: usize) -> u64;

    /// Sets counter `i` of [`Counters::DEFS`].
    fn set(&mut self, i: usize, value: u64);

    /// Every counter with its value, in declaration order.
    fn entries(&self) -> impl Iterator<Item = (&'static CounterDef, u64)> + '_ {
        Self::DEFS.iter().enumerate().map(|(i, def)| (def, self.get(i)))
    }

    /// The index in [`Counters::DEFS`] of the counter called `name`.
    fn position(name: &str) -> Option<usize> {
        Self::DEFS.iter().position(|d| d.name == name)
    }
}

/// Declares a struct of `u64` counters and its [`Counters`] implementation. Each field's doc
/// comment is its help text; `as "family"` exports it under another metric family than its
/// name, and a trailing `tx` or `rx` labels its direction in that family. `with drops` adds a
/// `drops: DropCounts` field. The status JSON, `/metrics`, the schema and the CLI table all read
/// counters from here, so a counter is declared once.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])+ $field:ident $(as $metric:literal $($direction:ident)?)? ),* $(,)?
        }
        $(with $drops:ident)?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        $vis struct $name {
            $( $(#[doc = $doc])+ pub $field: u64, )*
            $(
                /// Drops by reason.
                pub $drops: $crate::stats::DropCounts,
            )?
        }

        impl $crate::stats::Counters for $name {
            const DEFS: &'static [$crate::stats::CounterDef] = &[
                $( $crate::stats::CounterDef::new(
                    stringify!($field),
                    concat!($($doc),+),
                    $crate::counters!(@metric $field $($metric)?),
                    $crate::counters!(@direction $($($direction)?)?),
                ), )*
            ];

            fn get(&self, i: usize) -> u64 {
                let fields = [$(self.$field),*];
                fields.get(i).copied().unwrap_or(0)
            }

            fn set(&mut self, i: usize, value: u64) {
                let fields = [$(&mut self.$field),*];
                if let Some(field) = fields.into_iter().nth(i) {
                    *field = value;
                }
            }
        }
    };
    (@metric $field:ident) => { stringify!($field) };
    (@metric $field:ident $metric:literal) => { $metric };
    (@direction) => { None };
    (@direction $direction:ident) => { Some(stringify!($direction)) };
}

counters! {
    /// Session-wide counters.
    pub struct SessionStats {
        /// Frames handed in by the local side (TAP).
        frames_in,
        /// Frame copies sealed onto links (a redundant frame counts once per link).
        frame_copies_sent,
        /// Frames delivered to the local side, in order.
        frames_delivered,
        /// Frames the reorder buffer gave up on.
        frames_lost,
        /// Frames that arrived after their gap was given up.
        frames_late,
        /// Frames delivered after waiting for a gap.
        frames_reordered,
        /// Duplicate copies discarded (redundancy working, not an error).
        duplicate_copies,
        /// Missing frames asked for again (each NAK of each frame counts).
        frames_nacked,
        /// Frame copies re-sent in answer to the peer's NAKs.
        frames_retransmitted,
        /// Gaps filled by a re-sent copy: frames retransmission saved.
        frames_recovered,
        /// Frame copies sent in pieces, because they were larger than one datagram on the path.
        frames_fragmented,
        /// Frames joined again from pieces.
        frames_reassembled,
        /// Pieces of frames already delivered or held (redundant copies), discarded.
        duplicate_pieces,
        /// TCP SYNs whose MSS was lowered to fit one datagram.
        mss_clamped,
        /// NAKs for frames whose first copy could not have arrived yet, left unanswered.
        naks_early,
        /// Frames re-sent to a peer that had lost the session (it restarted), because it may not
        /// have delivered them: the most the far side can see twice.
        frames_resent_to_new_peer,
        /// Frames a peer that had lost the session was told not to wait for: no longer kept, or
        /// too late to arrive within the latency budget.
        frames_gone_to_new_peer,
        /// Datagram bytes of data sent as each frame's first copy.
        data_bytes_first,
        /// Datagram bytes of data sent beyond the first copies: redundant and spare-capacity
        /// duplicates, retransmissions and recovery shards (the overhead of the mode).
        data_bytes_extra,
        /// Recovery shards sent (forward error correction).
        fec_shards_sent,
        /// Of the extra data bytes, those of recovery shards.
        fec_bytes,
        /// Recovery shards never sent: no link had room for them before their block's time.
        fec_shards_dropped,
        /// Recovery shards not sent because every frame of their block went out on two links or
        /// more (duplicates protect it already).
        fec_shards_unneeded,
        /// Recovery shards received from the peer.
        fec_shards_received,
        /// Frames lost on their way and rebuilt from the peer's recovery shards.
        frames_rebuilt,
    }
    with drops
}

counters! {
    /// Per-link counters.
    pub struct LinkStats {
        /// Datagrams sent.
        tx_packets as "packets" tx,
        /// Datagram bytes sent.
        tx_bytes as "bytes" tx,
        /// Frame copies sent.
        tx_frames as "frames" tx,
        /// Of the frame copies sent, those re-sent in answer to the peer's NAKs.
        retransmits,
        /// Authenticated datagrams received.
        rx_packets as "packets" rx,
        /// Authenticated datagram bytes received.
        rx_bytes as "bytes" rx,
        /// Frame copies received (including duplicates).
        rx_frames as "frames" rx,
        /// Frames this link delivered first (its share of the stream).
        rx_frames_first as "frames_first",
        /// Probes sent.
        probes_sent,
        /// Path-MTU probes sent.
        mtu_probes_sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    counters! {
        /// A set declared only here, to show what the macro makes of a declaration.
        struct Example {
            /// Widgets made,
            /// counted once each.
            widgets,
            /// Bytes in.
            rx_bytes as "bytes" rx,
        }
        with drops
    }

    #[test]
    fn a_declaration_gives_names_help_families_and_directions() {
        let defs = Example::DEFS;
        assert_eq!(defs.iter().map(|d| d.name).collect::<Vec<_>>(), ["widgets", "rx_bytes"]);
        assert_eq!(defs[0].help(), "Widgets made, counted once each.");
        assert_eq!((defs[0].metric, defs[0].direction), ("widgets", None));
        assert_eq!((defs[1].metric, defs[1].direction), ("bytes", Some("rx")));
    }

    #[test]
    fn counters_are_read_and_written_by_index_and_by_name() {
        let mut example = Example { widgets: 3, ..Example::default() };
        example.set(1, 9);
        example.drops.add(DropReason::Replay);
        assert_eq!(example.entries().map(|(d, v)| (d.name, v)).collect::<Vec<_>>(), [("widgets", 3), ("rx_bytes", 9)]);
        assert_eq!(Example::position("rx_bytes").map(|i| example.get(i)), Some(9));
        assert_eq!(Example::position("nothing"), None);
        assert_eq!(example.get(2), 0, "past the end reads zero");
        assert_eq!(example.drops.total(), 1);
    }

    #[test]
    fn every_drop_reason_has_a_distinct_name_and_slot() {
        let names: std::collections::BTreeSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.slot(), i, "{reason:?} is out of order in ALL");
        }
    }
}
