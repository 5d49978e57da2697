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
    let socket = listen_socket(address, nonlocal, false)?;
    finish(socket, address).map_err(|e| IoError::new(format!("listening on UDP {address}"), e))
}

/// `count` listening sockets on one address, one per gateway worker, in worker order; with more
/// than one, they share the port (SO_REUSEPORT) and the kernel steers each datagram to the
/// socket of the worker its GRE Key names, by the rule of
/// [`steer`](crate::endpoint::gateway::steer). They are registered with no runtime yet: each
/// worker registers its own ([`register`]).
///
/// # Errors
/// [`IoError`] if the address cannot be bound or the steering program attached.
pub fn bind_listen_workers(address: SocketAddr, nonlocal: bool, count: usize) -> Result<Vec<Socket>, IoError> {
    let what = || format!("listening on UDP {address}");
    let shared = count > 1;
    // Sockets that share a port join whatever group already holds it (another process of the
    // same user): a socket that does not share it first finds the port taken, as with one
    // worker, and fixes the port the group binds if the address leaves it to the kernel.
    let address = if shared {
        let probe = listen_socket(address, nonlocal, false)?;
        probe.bind(&address.into()).map_err(|e| IoError::new(what(), e))?;
        probe.local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(address)
    } else {
        address
    };
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = listen_socket(address, nonlocal, shared)?;
        prepare(&socket).and_then(|()| socket.bind(&address.into())).map_err(|e| IoError::new(what(), e))?;
        sockets.push(socket);
    }
    if let (true, Some(first)) = (shared, sockets.first()) {
        attach_steering(first, count)
            .map_err(|e| IoError::new(format!("attaching the workers' steering program to UDP {address}"), e))?;
    }
    Ok(sockets)
}

/// A socket of [`bind_listen_workers`] on the runtime this is called on.
///
/// # Errors
/// What the OS says if it cannot be registered.
pub fn register(socket: Socket) -> io::Result<UdpSocket> {
    UdpSocket::from_std(socket.into())
}

fn listen_socket(address: SocketAddr, nonlocal: bool, shared: bool) -> Result<Socket, IoError> {
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
    if shared {
        socket.set_reuse_port(true).map_err(|e| IoError::new(what(), e))?;
    }
    Ok(socket)
}

/// Has the kernel hand each datagram arriving on `socket`'s port to the socket of the group
/// (in the order they were bound) that [`steer`](crate::endpoint::gateway::steer) names: a
/// classic BPF program, which the kernel runs with the UDP payload at offset 0. A datagram too
/// short for the load ends the program with 0: worker 0's socket, as `steer` says.
fn attach_steering(socket: &Socket, count: usize) -> io::Result<()> {
    use nix::libc::{sock_filter, sock_fprog};
    use nix::sys::socket::{setsockopt, sockopt::AttachReusePortCbpf};
    // Classic BPF opcodes (linux/filter.h).
    const LD_W_ABS: u16 = 0x20;
    const ALU_RSH_K: u16 = 0x74;
    const ALU_MOD_K: u16 = 0x94;
    const RET_A: u16 = 0x16;
    let op = |code, k| sock_filter { code, jt: 0, jf: 0, k };
    let count = u32::try_from(count).map_err(io::Error::other)?;
    let mut program = [
        op(LD_W_ABS, 4),      // A = the GRE Key (bytes 4..8 of the payload)
        op(ALU_RSH_K, 8),     // A = the session index
        op(ALU_MOD_K, count), // A = the worker
        op(RET_A, 0),
    ];
    let fprog = sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    setsockopt(socket, AttachReusePortCbpf, &fprog).map_err(io::Error::from)
}

fn finish(socket: Socket, local: SocketAddr) -> io::Result<UdpSocket> {
    prepare(&socket)?;
    socket.bind(&local.into())?;
    UdpSocket::from_std(socket.into())
}

fn prepare(socket: &Socket) -> io::Result<()> {
    // Larger buffers are a wish, not a requirement: the kernel caps them at its limits.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)
}
