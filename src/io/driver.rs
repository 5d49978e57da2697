//! What the edge's and the gateway's driver loops share: the runtime they run on, the status
//! endpoint, their buffers, and draining the engine after every input (datagrams to the
//! sockets, frames to the TAPs, events to the log and the status recorders). Each driver keeps
//! only its own select loop: which inputs it waits for, and what it does with each.

use std::future::Future;
use std::time::Instant;

use tracing::{debug, info, warn};
use tun_rs::AsyncDevice;

use super::batch::{BatchSocket, RecvBatch, SendBatch};
use super::status::{Board, Observer, Recorder};
use super::{IoError, http, now, unix_millis};
use crate::LinkId;
use crate::config::StatusSettings;
use crate::endpoint::edge::Edge;
use crate::endpoint::gateway::{Gateway, PeerId};
use crate::session::{Delivered, Event, TakeoverReason, Transmit};
use crate::tuning::Tuning;

/// Large enough for any datagram or jumbo frame.
pub const BUFFER: usize = 65_536;

/// An engine endpoint as a driver drains it: frames and events belong to a peer, numbered from
/// 0 (the edge has one, its gateway; the gateway one per allowed edge).
pub trait Endpoint {
    /// The next datagram to send.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;
    /// The next frame for a peer's TAP.
    fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(usize, Delivered)>;
    /// The next event, and the peer it concerns.
    fn poll_event(&mut self) -> Option<(usize, Event)>;
}

impl Endpoint for Edge {
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        Self::poll_transmit(self, now, buf)
    }

    fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(usize, Delivered)> {
        Self::poll_frame(self, now, buf).map(|d| (0, d))
    }

    fn poll_event(&mut self) -> Option<(usize, Event)> {
        Self::poll_event(self).map(|e| (0, e))
    }
}

impl Endpoint for Gateway {
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        Self::poll_transmit(self, now, buf)
    }

    fn poll_frame(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(usize, Delivered)> {
        Self::poll_frame(self, now, buf).map(|(PeerId(i), d)| (i, d))
    }

    fn poll_event(&mut self) -> Option<(usize, Event)> {
        Self::poll_event(self).map(|(PeerId(i), e)| (i, e))
    }
}

/// Runs a driver's loop on a current-thread tokio runtime, after raising the open-file limit
/// and logging the engine tunables that differ from their defaults.
///
/// # Errors
/// [`IoError`] if the runtime cannot start, or what the loop returns.
pub fn run(tuning: Tuning, driver: impl Future<Output = Result<(), IoError>>) -> Result<(), IoError> {
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IoError::new("starting the tokio runtime", e))?;
    let tuned = tuning.changed();
    if !tuned.is_empty() {
        info!(tuned = %tuned.join(" "), "engine tunables changed from their defaults");
    }
    runtime.block_on(driver)
}

/// Raises the soft limit on open files to the hard limit: an uplink that comes back must be able
/// to open its socket whatever else holds files (the status endpoint never holds more than
/// [`http::MAX_CONNECTIONS`]).
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => debug!(from = ?limit.current, to = ?limit.maximum, "open-file limit raised"),
            Err(error) => warn!(%error, current = ?limit.current, "the open-file limit could not be raised"),
        }
    }
}

/// Serves the status endpoint, if enabled: its thread reads the snapshots the returned observer
/// publishes.
///
/// # Errors
/// [`IoError`] if the endpoint cannot listen.
pub fn observer(status: &StatusSettings, role: &'static str) -> Result<Option<Observer>, IoError> {
    if !status.enabled {
        return Ok(None);
    }
    let board = Board::default();
    let bound = http::spawn(status.listen, status.token.clone(), board.clone(), role)?;
    info!(%bound, token = status.token.is_some(), "status, metrics and dashboard served");
    Ok(Some(Observer::new(board, now(), unix_millis())))
}

/// The buffers a driver loop reuses.
#[derive(Debug)]
pub struct Buffers {
    /// One frame read from a TAP.
    pub tap: Vec<u8>,
    /// Datagrams read from the sockets.
    pub batch: RecvBatch,
    /// Datagrams to send, batched per socket.
    pub sends: SendBatch,
    /// What the engine writes: a datagram or a frame.
    pub out: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Self {
        Self {
            tap: vec![0u8; BUFFER],
            batch: RecvBatch::new(),
            sends: SendBatch::default(),
            out: Vec::with_capacity(BUFFER),
        }
    }
}

/// What else hears each engine event, with the peer's index.
pub type EventHook<'a> = dyn FnMut(usize, &Event) + 'a;

/// Where a drain puts what the endpoint emits, by peer.
pub struct Sinks<'a, S, T, N, L> {
    /// The sockets datagrams go out on.
    pub sockets: &'a [Option<BatchSocket>],
    /// The socket a datagram goes out on.
    pub socket_for: S,
    /// A peer's TAP.
    pub tap: T,
    /// A peer's name, for the log.
    pub name: N,
    /// A link's name, for the log and the status.
    pub link_name: L,
    /// The status recorders, one per peer, while the status endpoint is on.
    pub recorders: Option<&'a mut [Recorder]>,
    /// What else hears each event, by peer.
    pub on_event: Option<&'a mut EventHook<'a>>,
}

impl<S, T, N, L> core::fmt::Debug for Sinks<'_, S, T, N, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sinks").field("sockets", &self.sockets.len()).finish_non_exhaustive()
    }
}

/// Drains `endpoint` after an input: datagrams to the sockets (batched, then flushed), frames
/// to their peer's TAP, events to the log and the peer's recorder.
pub fn drain<'t, 'n, 'l, E, S, T, N, L>(
    endpoint: &mut E,
    out: &mut Vec<u8>,
    sends: &mut SendBatch,
    mut sinks: Sinks<'_, S, T, N, L>,
) where
    E: Endpoint,
    S: Fn(&Transmit) -> Option<usize>,
    T: Fn(usize) -> Option<&'t AsyncDevice>,
    N: Fn(usize) -> &'n str,
    L: Fn(LinkId) -> &'l str,
{
    let now = now();
    while let Some(transmit) = endpoint.poll_transmit(now, out) {
        if let Some(slot) = (sinks.socket_for)(&transmit) {
            sends.push(sinks.sockets, slot, transmit.destination, out);
        }
    }
    sends.flush(sinks.sockets);
    while let Some((peer, delivered)) = endpoint.poll_frame(now, out) {
        if let Some(recorder) = sinks.recorders.as_deref_mut().and_then(|r| r.get_mut(peer)) {
            recorder.on_delivered(delivered.held);
        }
        if let Some(tap) = (sinks.tap)(peer)
            && let Err(error) = tap.try_send(out)
        {
            tracing::trace!(%error, "TAP write failed");
        }
    }
    while let Some((peer, event)) = endpoint.poll_event() {
        log_event((sinks.name)(peer), &event, &sinks.link_name);
        if let Some(recorder) = sinks.recorders.as_deref_mut().and_then(|r| r.get_mut(peer)) {
            record_event(recorder, &event, &sinks.link_name);
        }
        if let Some(on_event) = sinks.on_event.as_deref_mut() {
            on_event(peer, &event);
        }
    }
}

/// Logs an engine event at INFO, naming the edge and the link. A link state change carries
/// what the dashboard's log shows: from, to, the reason, and the RTT and loss at the time.
pub fn log_event<'a>(edge: &str, event: &Event, name: impl Fn(LinkId) -> &'a str) {
    match event {
        Event::LinkState { link, transition, quality } => info!(
            edge,
            link = name(*link),
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            reason = transition.reason.as_str(),
            rtt_ms = quality.srtt.map(|rtt| (rtt.as_secs_f64() * 1e4).round() / 10.0),
            tx_loss = quality.tx_loss,
            rx_loss = quality.rx_loss,
            "link state"
        ),
        Event::Handshake { index, resumed, peer, carrying } => {
            info!(edge, ?index, resumed, %peer, standby = !carrying, "handshake complete");
        }
        Event::PathChanged { link, from, to } => info!(edge, link = name(*link), ?from, %to, "path moved"),
        Event::PeerStandby { standby: true } => {
            info!(edge, "the edge keeps this gateway as a standby: its frames from the LAN stop here");
        }
        Event::PeerStandby { standby: false } => info!(edge, "the edge carries its stream through this gateway"),
        Event::NoSession { link, gateway } => warn!(
            edge,
            %gateway,
            link = name(*link),
            "the gateway has no session for this edge (it restarted): handshaking again at once"
        ),
        Event::GatewayTakeover { from, to, frames, reason: TakeoverReason::Silent } => warn!(
            edge,
            %from,
            %to,
            frames,
            "the gateway stopped answering on every uplink while a standby answers: the stream moved to it"
        ),
        Event::GatewayTakeover { from, to, frames, reason: TakeoverReason::Drained } => {
            info!(edge, %from, %to, frames, "the gateway is being drained: the stream moved to a standby");
        }
        Event::GatewayTakeover { from, to, frames, reason: TakeoverReason::Returned } => info!(
            edge,
            %from,
            %to,
            frames,
            "a gateway earlier in the list has answered for the hold-down: the stream moved back to it"
        ),
        Event::GatewayTakeover { from, to, frames, reason: TakeoverReason::Redirected } => {
            info!(edge, %from, %to, frames, "the gateway's fleet placed this edge on another gateway: the stream moved to it");
        }
        Event::HandshakeTrouble { trouble, gateway, links, waited, attempts } => warn!(
            edge,
            %gateway,
            uplinks = %links.iter().map(&name).collect::<Vec<_>>().join(","),
            cause = trouble.as_str(),
            waited_s = (waited.as_secs_f64() * 10.0).round() / 10.0,
            attempts,
            "handshake not completing: {}",
            trouble.advice()
        ),
    }
}

/// Hands an engine event to an edge's recorder: a link state change for the log in `/status`,
/// a fresh session (the peer restarted) to restart the rates.
pub fn record_event<'a>(recorder: &mut Recorder, event: &Event, name: impl Fn(LinkId) -> &'a str) {
    match event {
        Event::LinkState { link, .. } => recorder.on_event(unix_millis(), event, name(*link)),
        // A standby's handshake says nothing of the stream's session.
        Event::Handshake { resumed, carrying: true, .. } => {
            recorder.handshake_completed();
            if !resumed {
                recorder.session_restarted();
            }
        }
        Event::Handshake { carrying: false, .. } => {}
        Event::HandshakeTrouble { trouble, gateway, links, waited, attempts } => {
            recorder.on_handshake_problem(super::status::HandshakeProblem {
                cause: trouble.as_str().to_owned(),
                advice: trouble.advice().to_owned(),
                gateway: gateway.to_string(),
                uplinks: links.iter().map(|l| name(l).to_owned()).collect(),
                waited_s: waited.as_secs_f64(),
                attempts: *attempts,
                time_unix_ms: unix_millis(),
                ongoing: true,
            });
        }
        Event::GatewayTakeover { .. } => recorder.session_restarted(),
        Event::PathChanged { .. } | Event::NoSession { .. } | Event::PeerStandby { .. } => {}
    }
}
