//! UDP sockets: one per uplink on the edge, one per listen address on the gateway.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::IoError;

/// Socket buffers: a few hundred milliseconds of a fast link, so bursts are not dropped.
const SOCKET_BUFFER: usize = 4 << 20;

/// A socket for one uplink: bound to `interface` (SO_BINDTODEVICE), so its packets leave by that
/// interface and its own default route whatever the main routing table prefers, and to `source`
/// if given. `ipv6` picks the family (the gateway's).
///
/// # Errors
/// [`IoError`] if the interface does not exist (yet) or the address is not on it.
pub fn bind_uplink(interface: &str, source: Option<IpAddr>, ipv6: bool) -> Result<UdpSocket, IoError> {
    let what = || format!("binding a UDP socket to uplink {interface}");
    let local = match (source, ipv6) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, false) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (None, true) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| IoError::new(what(), e))?;
    socket.bind_device(Some(interface.as_bytes())).map_err(|e| IoError::new(what(), e))?;
    finish(socket, local).map_err(|e| IoError::new(what(), e))
}

/// A listening socket of the gateway. An IPv6 wildcard is v6-only, so it can sit beside an IPv4
/// one on the same port.
///
/// # Errors
/// [`IoError`] if the address cannot be bound.
pub fn bind_listen(address: SocketAddr, nonlocal: bool) -> Result<UdpSocket, IoError> {
    let what = || format!("listening on UDP {address}");
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| IoError::new(what(), e))?;
    if address.is_ipv6() {
        socket.set_only_v6(true).map_err(|e| IoError::new(what(), e))?;
    }
    if nonlocal {
        // IP_FREEBIND: a virtual IP the other gateway of a pair holds now. Replies leave from
        // the bound address, so they come from the virtual IP once this host holds it.
        let freebind = if address.is_ipv6() { socket.set_freebind_v6(true) } else { socket.set_freebind_v4(true) };
        freebind.map_err(|e| IoError::new(what(), e))?;
    }
    finish(socket, address).map_err(|e| IoError::new(what(), e))
}

fn finish(socket: Socket, local: SocketAddr) -> io::Result<UdpSocket> {
    // Larger buffers are a wish, not a requirement: the kernel caps them at its limits.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    UdpSocket::from_std(socket.into())
}
