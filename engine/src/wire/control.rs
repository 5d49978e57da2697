//! Messages inside a sealed control packet: type-length-value, so a newer peer's additions are
//! skipped rather than refused.

use super::{WireError, read_u32};
use crate::LinkId;

const PROBE: u8 = 1;
const PROBE_REPLY: u8 = 2;
const REPORT: u8 = 3;
const NAK: u8 = 4;
const GONE: u8 = 5;
const SENT: u8 = 6;
const MTU_PROBE: u8 = 7;
const MTU_ACK: u8 = 8;
/// Filler that makes a path-MTU probe its size; skipped like any unknown type.
const PADDING: u8 = 9;
const EXCUSED: u8 = 10;
const NAK_AGAIN: u8 = 11;
const DRAINING: u8 = 12;
const STANDBY: u8 = 13;
const PLACEMENT: u8 = 14;

const PROBE_LEN: usize = 1;
const PROBE_REPLY_LEN: usize = 8;
const REPORT_LEN: usize = 13;
const NAK_LEN: usize = 6;
const SENT_LEN: usize = 4;
const MTU_LEN: usize = 2;
const KEY_LEN: usize = 32;

/// Where a gateway of a fleet puts an edge: the gateway (by its public key) that should carry
/// its stream, and the standby it should keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Placement {
    /// The public key of the gateway that carries the stream.
    pub gateway: [u8; KEY_LEN],
    /// The public key of the standby gateway, if the fleet has one for the edge.
    pub standby: Option<[u8; KEY_LEN]>,
}

/// What one peer has received from the other on one link, cumulatively (all counters wrap).
///
/// The sender of the link's traffic compares two reports to learn its forward loss and delivery
/// rate on that link, from the link's own sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkReport {
    /// The link reported on.
    pub link: LinkId,
    /// Low 32 bits of the highest path packet number received on the link.
    pub highest: u32,
    /// Packets received on the link (wrapping).
    pub received: u32,
    /// Datagram bytes received on the link (wrapping).
    pub received_bytes: u32,
}

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlMessage {
    /// Asks for an immediate [`ControlMessage::ProbeReply`] on the same link.
    Probe {
        /// The sender's priority for this link (lower is preferred), so both ends agree.
        priority: u8,
    },
    /// Answers a probe.
    ProbeReply {
        /// Low 32 bits of the probe's path packet number.
        echo_seq: u32,
        /// The probe's send timestamp, echoed.
        echo_ts: u32,
    },
    /// A receive report for one link.
    Report(LinkReport),
    /// Asks for frames that are missing by now to be sent again.
    Nak {
        /// Low 32 bits of the first missing frame sequence.
        first: u32,
        /// How many consecutive frames from `first` are missing (at least 1).
        count: u16,
    },
    /// Asks again for frames whose re-sent copies were lost: a copy re-sent after them has
    /// come, and the sender re-sends in order. Answered at once, even where a copy could
    /// still seem to be on its way.
    NakAgain {
        /// Low 32 bits of the first frame sequence.
        first: u32,
        /// How many consecutive frames from `first` (at least 1).
        count: u16,
    },
    /// Answers a NAK: these frames will not come (no longer kept, or too late to be useful), so
    /// the receiver stops waiting for them.
    Gone {
        /// Low 32 bits of the first frame sequence.
        first: u32,
        /// How many consecutive frames from `first` (at least 1).
        count: u16,
    },
    /// Every frame below this has been sent, so the receiver notices lost frames at the tail of
    /// a burst, which no later frame would reveal.
    Sent {
        /// Low 32 bits of the sender's next frame sequence.
        next: u32,
    },
    /// A path-MTU probe: the datagram carrying it is `size` bytes (padded with
    /// [`emit_padding`]). Asks for a [`ControlMessage::MtuAck`] on the same link.
    MtuProbe {
        /// The probe datagram's length (UDP payload).
        size: u16,
    },
    /// Answers a path-MTU probe: a datagram of `size` bytes got through on this link.
    MtuAck {
        /// The probe's size, echoed.
        size: u16,
    },
    /// How many packets on this link, in all, the sender sent knowing the path might refuse
    /// them (path-MTU probes that went unanswered), so the receiver does not count them as loss.
    Excused {
        /// The cumulative count, wrapping.
        total: u32,
    },
    /// The gateway is being drained: the edge moves its stream to a standby gateway, and keeps
    /// it off this one while the message keeps coming (on every probe).
    Draining,
    /// The edge keeps this session as a standby (another gateway carries its stream): both ends
    /// probe it at the standby rate while the message keeps coming (on every probe of the edge).
    Standby,
    /// A gateway of a fleet says where the edge belongs (on every probe of the gateway): the edge
    /// moves its stream to that gateway if it pins its key, and prefers the standby named.
    Placement(Placement),
}

/// Appends `len` bytes of padding messages, which a receiver skips (`len` of 0 or at least 2).
pub fn emit_padding(out: &mut Vec<u8>, mut len: usize) {
    while len >= 2 {
        // A message holds at most 255 bytes after its type and length; never leave a lone byte.
        let body = (len - 2).min(255);
        let body = if len - 2 - body == 1 { body - 1 } else { body };
        out.extend_from_slice(&[PADDING, body as u8]);
        out.resize(out.len() + body, 0);
        len -= 2 + body;
    }
}

impl ControlMessage {
    /// Appends the message to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Probe { priority } => {
                out.extend_from_slice(&[PROBE, PROBE_LEN as u8, priority]);
            }
            Self::ProbeReply { echo_seq, echo_ts } => {
                out.extend_from_slice(&[PROBE_REPLY, PROBE_REPLY_LEN as u8]);
                out.extend_from_slice(&echo_seq.to_be_bytes());
                out.extend_from_slice(&echo_ts.to_be_bytes());
            }
            Self::Report(report) => {
                out.extend_from_slice(&[REPORT, REPORT_LEN as u8, report.link.get()]);
                out.extend_from_slice(&report.highest.to_be_bytes());
                out.extend_from_slice(&report.received.to_be_bytes());
                out.extend_from_slice(&report.received_bytes.to_be_bytes());
            }
            Self::Sent { next } => {
                out.extend_from_slice(&[SENT, SENT_LEN as u8]);
                out.extend_from_slice(&next.to_be_bytes());
            }
            Self::Excused { total } => {
                out.extend_from_slice(&[EXCUSED, SENT_LEN as u8]);
                out.extend_from_slice(&total.to_be_bytes());
            }
            Self::MtuProbe { size } | Self::MtuAck { size } => {
                let kind = if matches!(self, Self::MtuProbe { .. }) { MTU_PROBE } else { MTU_ACK };
                out.extend_from_slice(&[kind, MTU_LEN as u8]);
                out.extend_from_slice(&size.to_be_bytes());
            }
            Self::Draining => out.extend_from_slice(&[DRAINING, 0]),
            Self::Placement(p) => {
                out.extend_from_slice(&[PLACEMENT, (KEY_LEN * (1 + usize::from(p.standby.is_some()))) as u8]);
                out.extend_from_slice(&p.gateway);
                if let Some(standby) = &p.standby {
                    out.extend_from_slice(standby);
                }
            }
            Self::Standby => out.extend_from_slice(&[STANDBY, 0]),
            Self::Nak { first, count } | Self::NakAgain { first, count } | Self::Gone { first, count } => {
                let kind = match self {
                    Self::Nak { .. } => NAK,
                    Self::NakAgain { .. } => NAK_AGAIN,
                    _ => GONE,
                };
                out.extend_from_slice(&[kind, NAK_LEN as u8]);
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
        }
    }

    /// The encoded length of the message.
    pub const fn encoded_len(&self) -> usize {
        2 + match self {
            Self::Probe { .. } => PROBE_LEN,
            Self::ProbeReply { .. } => PROBE_REPLY_LEN,
            Self::Report(_) => REPORT_LEN,
            Self::Nak { .. } | Self::NakAgain { .. } | Self::Gone { .. } => NAK_LEN,
            Self::Sent { .. } | Self::Excused { .. } => SENT_LEN,
            Self::MtuProbe { .. } | Self::MtuAck { .. } => MTU_LEN,
            Self::Draining | Self::Standby => 0,
            Self::Placement(p) => KEY_LEN * (1 + p.standby.is_some() as usize),
        }
    }

    fn parse(kind: u8, body: &[u8]) -> Result<Option<Self>, WireError> {
        let exact = |len: usize| {
            if body.len() == len { Ok(()) } else { Err(WireError::Malformed) }
        };
        Ok(Some(match kind {
            PROBE => {
                exact(PROBE_LEN)?;
                Self::Probe { priority: body[0] }
            }
            PROBE_REPLY => {
                exact(PROBE_REPLY_LEN)?;
                Self::ProbeReply { echo_seq: read_u32(body, 0..4), echo_ts: read_u32(body, 4..8) }
            }
            REPORT => {
                exact(REPORT_LEN)?;
                Self::Report(LinkReport {
                    link: LinkId::new(body[0]),
                    highest: read_u32(body, 1..5),
                    received: read_u32(body, 5..9),
                    received_bytes: read_u32(body, 9..13),
                })
            }
            SENT => {
                exact(SENT_LEN)?;
                Self::Sent { next: read_u32(body, 0..4) }
            }
            EXCUSED => {
                exact(SENT_LEN)?;
                Self::Excused { total: read_u32(body, 0..4) }
            }
            MTU_PROBE | MTU_ACK => {
                exact(MTU_LEN)?;
                let size = u16::from_be_bytes([body[0], body[1]]);
                if kind == MTU_PROBE { Self::MtuProbe { size } } else { Self::MtuAck { size } }
            }
            DRAINING => {
                exact(0)?;
                Self::Draining
            }
            STANDBY => {
                exact(0)?;
                Self::Standby
            }
            PLACEMENT => {
                let key = |range: core::ops::Range<usize>| {
                    let mut out = [0; KEY_LEN];
                    out.copy_from_slice(&body[range]);
                    out
                };
                match body.len() {
                    KEY_LEN => Self::Placement(Placement { gateway: key(0..KEY_LEN), standby: None }),
                    64 => Self::Placement(Placement {
                        gateway: key(0..KEY_LEN),
                        standby: Some(key(KEY_LEN..2 * KEY_LEN)),
                    }),
                    _ => return Err(WireError::Malformed),
                }
            }
            NAK | NAK_AGAIN | GONE => {
                exact(NAK_LEN)?;
                let first = read_u32(body, 0..4);
                let count = u16::from_be_bytes([body[4], body[5]]);
                match (kind, count) {
                    (_, 0) => return Err(WireError::Malformed),
                    (NAK, _) => Self::Nak { first, count },
                    (NAK_AGAIN, _) => Self::NakAgain { first, count },
                    _ => Self::Gone { first, count },
                }
            }
            _ => return Ok(None),
        }))
    }
}

/// An iterator over the messages of a control payload.
///
/// It yields `Err` once, and then stops, at the first malformed message.
#[derive(Debug, Clone)]
pub struct ControlMessages<'a> {
    rest: &'a [u8],
}

impl<'a> ControlMessages<'a> {
    /// Iterates over the messages in `bytes`.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
}

impl Iterator for ControlMessages<'_> {
    type Item = Result<ControlMessage, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let [kind, len, rest @ ..] = self.rest else {
                if self.rest.is_empty() {
                    return None;
                }
                self.rest = &[];
                return Some(Err(WireError::Truncated));
            };
            let len = usize::from(*len);
            let Some((body, rest)) = rest.split_at_checked(len) else {
                self.rest = &[];
                return Some(Err(WireError::Truncated));
            };
            self.rest = rest;
            match ControlMessage::parse(*kind, body) {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => continue,
                Err(error) => {
                    self.rest = &[];
                    return Some(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_ones_are_skipped() {
        let messages = [
            ControlMessage::Probe { priority: 3 },
            ControlMessage::ProbeReply { echo_seq: 9, echo_ts: 77 },
            ControlMessage::Report(LinkReport { link: LinkId::new(1), highest: 5, received: 4, received_bytes: 4000 }),
            ControlMessage::Nak { first: u32::MAX, count: 3 },
            ControlMessage::NakAgain { first: 9, count: 2 },
            ControlMessage::Gone { first: 7, count: 1 },
            ControlMessage::Sent { next: 99 },
            ControlMessage::MtuProbe { size: 1452 },
            ControlMessage::MtuAck { size: 1392 },
            ControlMessage::Excused { total: 12 },
            ControlMessage::Draining,
            ControlMessage::Standby,
            ControlMessage::Placement(Placement { gateway: [7; 32], standby: None }),
            ControlMessage::Placement(Placement { gateway: [8; 32], standby: Some([9; 32]) }),
        ];
        let mut out = Vec::new();
        messages[0].emit(&mut out);
        out.extend_from_slice(&[200, 3, 1, 2, 3]);
        for message in &messages[1..] {
            message.emit(&mut out);
        }
        let parsed: Vec<_> = ControlMessages::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed, messages);
        let len: usize = messages.iter().map(ControlMessage::encoded_len).sum();
        assert_eq!(out.len(), len + 5);
    }

    #[test]
    fn padding_of_any_length_is_exact_and_skipped() {
        for len in (0..600).filter(|&len| len != 1) {
            let mut out = Vec::new();
            ControlMessage::MtuProbe { size: 7 }.emit(&mut out);
            emit_padding(&mut out, len);
            assert_eq!(out.len(), 4 + len, "padding of {len}");
            let parsed: Vec<_> = ControlMessages::new(&out).collect::<Result<_, _>>().unwrap();
            assert_eq!(parsed, [ControlMessage::MtuProbe { size: 7 }], "padding of {len}");
        }
    }

    #[test]
    fn a_nak_for_no_frames_is_malformed() {
        let out = [NAK, NAK_LEN as u8, 0, 0, 0, 7, 0, 0];
        assert_eq!(ControlMessages::new(&out).next(), Some(Err(WireError::Malformed)));
    }

    #[test]
    fn a_truncated_message_yields_one_error_and_stops() {
        let mut out = Vec::new();
        ControlMessage::ProbeReply { echo_seq: 1, echo_ts: 2 }.emit(&mut out);
        out.truncate(out.len() - 1);
        let mut it = ControlMessages::new(&out);
        assert_eq!(it.next(), Some(Err(WireError::Truncated)));
        assert_eq!(it.next(), None);
    }
}
