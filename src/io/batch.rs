//! Batched UDP I/O with quinn-udp: recvmmsg with GRO on the way in, GSO on the way out.
//!
//! On receive, one call fills up to [`RECV_SLOTS`] buffers, and GRO may pack several datagrams of
//! one flow into a buffer (`stride` apart). On send, consecutive datagrams of the same size to the
//! same destination on the same socket are handed to the kernel as one GSO send: bulk traffic is
//! mostly full-size frames, so most datagrams go out in batches.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Receive buffers per call.
pub const RECV_SLOTS: usize = 16;
/// Bytes per receive buffer: room for a GRO batch of full-size datagrams.
pub const SLOT_LEN: usize = 65_536;
/// The most bytes one GSO send carries: the largest UDP payload over IPv4 (65535 − 20 − 8).
pub const GSO_MAX_BYTES: usize = 65_507;
/// The largest datagram sent as a GSO segment: one that fits a 1500-byte path over IPv6 (and so
/// over IPv4). The kernel refuses GSO segments larger than the path MTU, so a larger datagram
/// (a full 1500-byte frame plus braid's overhead) goes out alone.
pub const GSO_MAX_SEGMENT: usize = 1500 - 40 - 8;

/// The most ICMP errors [`BatchSocket::icmp_errors`] reads in one call.
pub const MAX_ICMP_ERRORS: usize = 64;

/// A UDP socket with quinn-udp's state for it (GRO/GSO support, batch sizes).
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    local: SocketAddr,
    /// Whether a send or receive failed as an ICMP error makes them fail (see
    /// [`Self::report_icmp`]) since [`Self::take_icmp_pending`] last looked.
    icmp_pending: AtomicBool,
}

impl BatchSocket {
    /// Wraps a socket.
    ///
    /// # Errors
    /// What the OS says if the socket options cannot be set.
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let local = socket.local_addr()?;
        // DF on every datagram, and the kernel's own path-MTU cache ignored: braid probes each
        // link's path itself (crate::pmtu) and never sends data larger than a probe confirmed,
        // so a datagram is never fragmented outside the tunnel. A probe larger than the local
        // interface fails with EMSGSIZE, which the search counts as too large.
        use rustix::net::sockopt;
        if local.is_ipv4() {
            sockopt::set_ip_mtu_discover(&socket, sockopt::Ipv4PathMtuDiscovery::PROBE)?;
        } else {
            sockopt::set_ipv6_mtu_discover(&socket, sockopt::Ipv6PathMtuDiscovery::PROBE)?;
        }
        Ok(Self { socket, state, local, icmp_pending: AtomicBool::new(false) })
    }

    /// Has the kernel report ICMP errors for this socket's datagrams (`IP_RECVERR`): the next
    /// send or receive then fails once per error ([`Self::take_icmp_pending`] says so), and
    /// [`Self::icmp_errors`] says what they were.
    ///
    /// # Errors
    /// What the OS says if the option cannot be set.
    pub fn report_icmp(&self) -> io::Result<()> {
        self.state.enable_transport_errors((&self.socket).into())
    }

    /// The ICMP errors queued for this socket, oldest first; the queue is drained (its entries
    /// count against the receive buffer, so it must be), at most [`MAX_ICMP_ERRORS`] at a time.
    pub fn icmp_errors(&self) -> Vec<quinn_udp::TransportError> {
        let mut errors = Vec::new();
        while errors.len() < MAX_ICMP_ERRORS {
            match self.state.recv_transport_error((&self.socket).into()) {
                Ok(Some(error)) => errors.push(error),
                Ok(None) | Err(_) => break,
            }
        }
        errors
    }

    /// Whether a send or receive failed as an ICMP error makes them fail since the last call.
    pub fn take_icmp_pending(&self) -> bool {
        self.icmp_pending.swap(false, Ordering::Relaxed)
    }

    fn note_error(&self, error: &io::Error) {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
        ) {
            self.icmp_pending.store(true, Ordering::Relaxed);
        }
    }

    /// The local address (read once, when wrapped).
    pub const fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How many segments one GSO send may carry on this socket (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives a batch into `batch`; returns how many slots were filled.
    pub fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<io::Result<usize>> {
        loop {
            if let Err(error) = std::task::ready!(self.socket.poll_recv_ready(cx)) {
                return Poll::Ready(Err(error));
            }
            let mut slices: [IoSliceMut<'_>; RECV_SLOTS] = {
                let mut buffers = batch.buffers.iter_mut();
                std::array::from_fn(|_| IoSliceMut::new(buffers.next().map_or(&mut [][..], |b| &mut b[..])))
            };
            let result = self
                .socket
                .try_io(Interest::READABLE, || self.state.recv((&self.socket).into(), &mut slices, &mut batch.metas));
            match result {
                Ok(count) => return Poll::Ready(Ok(count)),
                // Readiness was stale: wait for the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    self.note_error(&error);
                    return Poll::Ready(Err(error));
                }
            }
        }
    }

    /// Sends `contents` to `destination`, as GSO segments of `segment` bytes if it holds more
    /// than one. Never blocks: a full socket buffer drops the batch, as a router would.
    ///
    /// # Errors
    /// What the OS says.
    pub fn try_send(&self, destination: SocketAddr, contents: &[u8], segment: usize) -> io::Result<()> {
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        let sent = self.state.try_send((&self.socket).into(), &transmit);
        if let Err(error) = &sent {
            self.note_error(error);
        }
        sent
    }
}

/// Buffers and metadata for one batched receive.
#[derive(Debug)]
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    metas: [RecvMeta; RECV_SLOTS],
}

impl RecvBatch {
    /// Allocates the buffers once.
    pub fn new() -> Self {
        Self {
            buffers: (0..RECV_SLOTS).map(|_| vec![0u8; SLOT_LEN]).collect(),
            metas: [RecvMeta::default(); RECV_SLOTS],
        }
    }

    /// The datagrams of the first `count` slots, with their sources (GRO batches split apart).
    pub fn datagrams(&self, count: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.metas.iter().zip(&self.buffers).take(count).flat_map(|(meta, buffer)| {
            let stride = meta.stride.max(1);
            buffer[..meta.len.min(buffer.len())].chunks(stride).map(move |datagram| (meta.addr, datagram))
        })
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls every socket in `sockets`, starting after the last one that was ready, and receives a
/// batch from the first ready one. Yields its index and the slot count.
pub fn poll_recv_any(
    cx: &mut Context<'_>,
    sockets: &[Option<BatchSocket>],
    batch: &mut RecvBatch,
    cursor: &mut usize,
) -> Poll<(usize, io::Result<usize>)> {
    super::poll_round_robin(cx, sockets, cursor, |socket, cx| socket.poll_recv(cx, batch))
}

/// Coalesces outgoing datagrams into GSO batches, one pending batch at a time.
#[derive(Debug, Default)]
pub struct SendBatch {
    buf: Vec<u8>,
    socket: usize,
    destination: Option<SocketAddr>,
    segment: usize,
    count: usize,
}

impl SendBatch {
    /// Queues one datagram for `sockets[socket]`; sends the pending batch first when this one
    /// cannot join it (another socket or destination, a different size, or the batch is full).
    pub fn push(&mut self, sockets: &[Option<BatchSocket>], socket: usize, destination: SocketAddr, datagram: &[u8]) {
        let limit = if datagram.len() > GSO_MAX_SEGMENT {
            1
        } else {
            sockets.get(socket).and_then(Option::as_ref).map_or(1, BatchSocket::max_gso_segments)
        };
        let joins = self.destination == Some(destination)
            && self.socket == socket
            && datagram.len() == self.segment
            && self.count < limit
            && self.buf.len() + datagram.len() <= GSO_MAX_BYTES;
        if !joins {
            self.flush(sockets);
            self.socket = socket;
            self.destination = Some(destination);
            self.segment = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Sends the pending batch, if any.
    pub fn flush(&mut self, sockets: &[Option<BatchSocket>]) {
        if let (Some(destination), Some(Some(socket))) = (self.destination.take(), sockets.get(self.socket))
            && let Err(error) = socket.try_send(destination, &self.buf, self.segment)
        {
            tracing::trace!(%error, segments = self.count, "send failed");
        }
        self.buf.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> BatchSocket {
        let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        BatchSocket::new(UdpSocket::from_std(std).unwrap()).unwrap()
    }

    #[test]
    fn a_full_batch_never_exceeds_the_largest_udp_payload() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (tx, rx) = (socket(), socket());
            let sockets = [Some(tx)];
            let mut sends = SendBatch::default();
            // 64 × 1024 = 65536 bytes would be one byte too many for a single send.
            for i in 0..64u8 {
                sends.push(&sockets, 0, rx.local_addr(), &[i; 1024]);
                assert!(sends.buf.len() <= GSO_MAX_BYTES);
            }
            sends.flush(&sockets);
            let mut batch = RecvBatch::new();
            let mut got = 0;
            for _ in 0..64 {
                let receive = std::future::poll_fn(|cx| rx.poll_recv(cx, &mut batch));
                match tokio::time::timeout(std::time::Duration::from_millis(500), receive).await {
                    Ok(Ok(count)) => got += batch.datagrams(count).count(),
                    _ => break,
                }
                if got == 64 {
                    break;
                }
            }
            assert_eq!(got, 64, "every datagram of the batch arrived");
        });
    }

    #[test]
    fn a_gro_batch_is_split_back_into_its_datagrams() {
        let mut batch = RecvBatch::new();
        batch.buffers[0][..10].copy_from_slice(b"aaaabbbbcc");
        batch.metas[0].len = 10;
        batch.metas[0].stride = 4;
        let datagrams: Vec<&[u8]> = batch.datagrams(1).map(|(_, d)| d).collect();
        assert_eq!(datagrams, vec![&b"aaaa"[..], b"bbbb", b"cc"]);
    }

    #[test]
    fn equal_datagrams_to_one_destination_go_out_together_and_arrive_apart() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (tx, rx) = (socket(), socket());
            let sockets = [Some(tx)];
            let mut sends = SendBatch::default();
            let to = rx.local_addr();
            for i in 0..5u8 {
                sends.push(&sockets, 0, to, &[i; 1200]);
            }
            sends.push(&sockets, 0, to, &[9; 100]);
            sends.flush(&sockets);
            let mut batch = RecvBatch::new();
            let mut got = Vec::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while got.len() < 6 && tokio::time::Instant::now() < deadline {
                let receive = std::future::poll_fn(|cx| rx.poll_recv(cx, &mut batch));
                if let Ok(Ok(count)) = tokio::time::timeout(std::time::Duration::from_millis(500), receive).await {
                    got.extend(batch.datagrams(count).map(|(_, d)| (d.len(), d[0])));
                }
            }
            assert_eq!(got, vec![(1200, 0), (1200, 1), (1200, 2), (1200, 3), (1200, 4), (100, 9)]);
        });
    }
}
