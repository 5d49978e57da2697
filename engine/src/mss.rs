//! TCP MSS clamping: TCP through the tunnel sends segments that fit one datagram.
//!
//! The TAP keeps a 1500-byte MTU, so a full-size TCP segment is a 1514-byte frame, and with
//! [`crate::wire::DATA_OVERHEAD`] it no longer fits a 1500-byte path: the engine splits it in
//! two pieces (see [`crate::fragment`]), which costs a second header, a second AEAD operation
//! and a second chance of loss per segment. TCP can be told instead: the MSS option of every
//! SYN and SYN-ACK that crosses the tunnel is lowered to what fits one datagram, as routers do
//! for PPPoE (`iptables ... TCPMSS --clamp-mss-to-pmtu`) and as OpenVPN's `mssfix` does. Both
//! ends of a connection then send segments that go in one piece; UDP and everything else are
//! untouched, and still split when too large.
//!
//! Only the MSS bytes and the TCP checksum change (updated incrementally, RFC 1624), so the
//! frame's length and every other byte stay as they were. Frames this does not understand
//! (fragments, IPv6 extension headers, two VLAN tags, malformed options) are left alone.

use crate::wire::DATA_OVERHEAD;

/// Ethernet header length.
const ETH_LEN: usize = 14;
/// An 802.1Q tag.
const VLAN_LEN: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
/// TCP header without options.
const TCP_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_FLAG_SYN: u8 = 0x02;
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_MSS: u8 = 2;

/// The largest MSS for an IPv4 connection whose segments must fit a datagram of
/// `max_datagram` bytes (the UDP payload a link's path carries).
pub const fn max_mss_v4(max_datagram: usize) -> u16 {
    mss_for(max_datagram, 20)
}

/// As [`max_mss_v4`], for IPv6.
pub const fn max_mss_v6(max_datagram: usize) -> u16 {
    mss_for(max_datagram, IPV6_LEN)
}

const fn mss_for(max_datagram: usize, ip_len: usize) -> u16 {
    let mss = max_datagram.saturating_sub(DATA_OVERHEAD + ETH_LEN + ip_len + TCP_MIN_LEN);
    if mss > u16::MAX as usize { u16::MAX } else { mss as u16 }
}

/// Lowers the MSS option of a TCP SYN in an Ethernet frame to what fits `max_datagram`, and
/// returns the MSS it had if it was lowered. Any other frame is left as it is.
pub fn clamp(frame: &mut [u8], max_datagram: usize) -> Option<u16> {
    let mut at = ETH_LEN;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == ETHERTYPE_VLAN {
        ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        at += VLAN_LEN;
    }
    let vlan = at - ETH_LEN;
    let (tcp, limit) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(at..at + 20)?;
            let header = usize::from(ip[0] & 0x0F) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF;
            if ip[0] >> 4 != 4 || header < 20 || ip[9] != PROTO_TCP || fragment != 0 {
                return None;
            }
            (at + header, max_mss_v4(max_datagram).saturating_sub(vlan as u16))
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(at..at + IPV6_LEN)?;
            if ip[0] >> 4 != 6 || ip[6] != PROTO_TCP {
                return None;
            }
            (at + IPV6_LEN, max_mss_v6(max_datagram).saturating_sub(vlan as u16))
        }
        _ => return None,
    };
    let header = frame.get(tcp..tcp + TCP_MIN_LEN)?;
    let options_end = tcp + usize::from(header[12] >> 4) * 4;
    if header[13] & TCP_FLAG_SYN == 0 || options_end < tcp + TCP_MIN_LEN || options_end > frame.len() {
        return None;
    }
    let mut i = tcp + TCP_MIN_LEN;
    while i < options_end {
        match frame[i] {
            OPTION_END => return None,
            OPTION_NOP => i += 1,
            kind => {
                let len = usize::from(*frame.get(i + 1).filter(|_| i + 1 < options_end)?);
                if len < 2 || i + len > options_end {
                    return None;
                }
                if kind == OPTION_MSS && len == 4 {
                    let old = u16::from_be_bytes([frame[i + 2], frame[i + 3]]);
                    if old <= limit {
                        return None;
                    }
                    frame[i + 2..i + 4].copy_from_slice(&limit.to_be_bytes());
                    let sum = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
                    frame[tcp + 16..tcp + 18].copy_from_slice(&update_checksum(sum, old, limit).to_be_bytes());
                    return Some(old);
                }
                i += len;
            }
        }
    }
    None
}

/// A one's-complement checksum with one 16-bit word changed from `old` to `new` (RFC 1624,
/// equation 3: HC' = ~(~HC + ~m + m')).
fn update_checksum(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one's-complement sum over `bytes`, folded.
    fn ones_sum(bytes: &[u8], mut acc: u32) -> u32 {
        for pair in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc
    }

    /// An Ethernet + IPv4 + TCP SYN frame with the given options and a correct checksum.
    fn syn_v4(options: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let tcp_len = TCP_MIN_LEN + options.len();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = PROTO_TCP;
        ip[12..16].copy_from_slice(&[10, 77, 0, 10]);
        ip[16..20].copy_from_slice(&[10, 77, 0, 20]);
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; TCP_MIN_LEN];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        tcp.extend_from_slice(options);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, PROTO_TCP]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        let sum = !(ones_sum(&tcp, ones_sum(&pseudo, 0)) as u16);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&tcp);
        f
    }

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let ip = &frame[14..34];
        let tcp = &frame[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, PROTO_TCP]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        ones_sum(tcp, ones_sum(&pseudo, 0)) == 0xFFFF
    }

    /// MSS 1460, SACK permitted, timestamps, NOP, window scale: Linux's SYN.
    const LINUX_OPTIONS: [u8; 20] = [2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn a_syns_mss_is_lowered_to_fit_one_datagram_and_its_checksum_stays_valid() {
        let mut frame = syn_v4(&LINUX_OPTIONS, TCP_FLAG_SYN);
        assert!(tcp_checksum_ok(&frame));
        let before = frame.clone();
        assert_eq!(clamp(&mut frame, 1452), Some(1460));
        let mss = u16::from_be_bytes([frame[56], frame[57]]);
        assert_eq!(mss, max_mss_v4(1452));
        // A segment of that MSS is a frame that fits the datagram with the tunnel's overhead.
        assert_eq!(usize::from(mss) + 14 + 20 + 20 + DATA_OVERHEAD, 1452);
        assert!(tcp_checksum_ok(&frame), "the checksum must be updated with the MSS");
        let changed: Vec<usize> = (0..frame.len()).filter(|&i| frame[i] != before[i]).collect();
        assert!(changed.iter().all(|&i| (50..52).contains(&i) || (56..58).contains(&i)), "{changed:?}");
    }

    #[test]
    fn a_syn_ack_is_clamped_too_and_a_small_mss_is_left_alone() {
        let mut frame = syn_v4(&LINUX_OPTIONS, TCP_FLAG_SYN | 0x10);
        assert_eq!(clamp(&mut frame, 1452), Some(1460));
        let mut small = syn_v4(&[2, 4, 0x04, 0x00], TCP_FLAG_SYN);
        let before = small.clone();
        assert_eq!(clamp(&mut small, 1452), None, "MSS 1024 already fits");
        assert_eq!(small, before);
    }

    #[test]
    fn segments_that_are_not_syns_and_frames_that_are_not_tcp_are_untouched() {
        let mut ack = syn_v4(&LINUX_OPTIONS, 0x10);
        let before = ack.clone();
        assert_eq!(clamp(&mut ack, 1452), None);
        assert_eq!(ack, before);
        let mut udp = syn_v4(&LINUX_OPTIONS, TCP_FLAG_SYN);
        udp[14 + 9] = 17;
        assert_eq!(clamp(&mut udp, 1452), None);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(clamp(&mut arp, 1452), None);
    }

    #[test]
    fn truncated_and_malformed_frames_are_left_alone_without_panicking() {
        let full = syn_v4(&LINUX_OPTIONS, TCP_FLAG_SYN);
        for len in 0..full.len() {
            let mut cut = full[..len].to_vec();
            // A cut frame may still hold the whole MSS option; it must not be read past its end.
            let _ = clamp(&mut cut, 1452);
        }
        let mut bad_len = syn_v4(&[2, 0, 0x05, 0xB4], TCP_FLAG_SYN);
        assert_eq!(clamp(&mut bad_len, 1452), None, "an option length of 0 stops the walk");
        let mut huge_offset = full.clone();
        huge_offset[14 + 20 + 12] = 0xF0;
        assert_eq!(clamp(&mut huge_offset, 1452), None, "options past the frame's end");
    }

    #[test]
    fn ipv6_and_a_vlan_tag_leave_room_for_their_headers() {
        assert_eq!(max_mss_v6(1452), max_mss_v4(1452) - 20);
        let v4 = syn_v4(&LINUX_OPTIONS, TCP_FLAG_SYN);
        let mut tagged = v4[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0A]);
        tagged.extend_from_slice(&v4[12..]);
        assert_eq!(clamp(&mut tagged, 1452), Some(1460));
        let mss = u16::from_be_bytes([tagged[60], tagged[61]]);
        assert_eq!(mss, max_mss_v4(1452) - 4);
    }
}
