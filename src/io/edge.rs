//! The edge's driver loop.

use std::future::poll_fn;
use std::io;
use std::time::Duration;

use tracing::{info, warn};

use super::batch::{BatchSocket, poll_recv_any};
use super::driver::{self, Buffers, Sinks};
use super::feed::Feed;
use super::netlink::{NetEvent, Netlink};
use super::status::{Body, EdgeBody, Flat, GatewayView, Observer, Recorder, Status, by_reason, tick};
use super::udp::bind_uplink;
use super::usage::{self, Crossing, Usage};
use super::{IoError, now, os_seed, shutdown_signal, sleep_until, tap, unix_nanos};
use crate::config::{EdgeReload, EdgeSettings, UplinkSettings, load_edge};
use crate::endpoint::edge::{Edge, Unreachable};
use crate::monitor::LinkState;
use crate::scheduler::Spend;
use crate::session::{LinkEvent, Transmit};
use crate::{LinkId, MAX_LINKS};

/// How often uplinks without a socket (interface missing, no address yet) are tried again.
pub const UPLINK_RETRY: Duration = Duration::from_secs(1);

/// One uplink as the driver sees it.
#[derive(Debug)]
struct Uplink {
    settings: UplinkSettings,
    index: Option<u32>,
    carrier: bool,
    /// What it used in its cap period (metered uplinks).
    usage: Usage,
}

impl Uplink {
    /// What the scheduler may spend it on: past its cap, only as a backup.
    fn spend(&self) -> Spend {
        if self.usage.past(self.settings.cap) {
            Spend::BackupOnly
        } else if self.settings.metered {
            Spend::Metered
        } else {
            Spend::Free
        }
    }
}

/// Counts each metered uplink's use from the session's link counters, logs the cap thresholds
/// it crosses, and moves an uplink past its cap to backup-only (and back in a new period).
fn account_usage(edge: &mut Edge, uplinks: &mut [Option<Uplink>]) {
    for uplink in uplinks.iter_mut().flatten().filter(|u| u.settings.metered) {
        let id = uplink.settings.id;
        let Some(stats) = edge.session().and_then(|s| s.link_stats(id)) else { continue };
        let period = usage::current_period(uplink.settings.cap);
        let before = uplink.spend();
        let crossing = uplink.usage.observe(stats.tx_bytes + stats.rx_bytes, period, uplink.settings.cap);
        let (name, used, cap) = (&uplink.settings.name, uplink.usage.bytes, uplink.settings.cap.map(|c| c.bytes));
        match crossing {
            Some(Crossing::Nearing) => warn!(uplink = %name, used, cap, "uplink has used 80% of its data cap"),
            Some(Crossing::Reached) => {
                warn!(uplink = %name, used, cap, "uplink used its data cap: backup only until the period ends");
            }
            Some(Crossing::NewPeriod) => info!(uplink = %name, "new data cap period: the uplink is in use again"),
            None => {}
        }
        if uplink.spend() != before {
            edge.set_link_spend(id, uplink.spend());
        }
    }
}

/// Saves the metered uplinks' use to the state directory, if there is one.
fn save_usage(uplinks: &[Option<Uplink>]) {
    let Some(path) = usage::state_file() else { return };
    let entries: Vec<(String, u64, u64)> = uplinks
        .iter()
        .flatten()
        .filter(|u| u.settings.metered)
        .map(|u| (u.settings.name.clone(), u.usage.period, u.usage.bytes))
        .collect();
    if let Err(error) = usage::save(&path, &entries) {
        warn!(%error, path = %path.display(), "could not save the uplinks' data use");
    }
}

enum Input {
    Shutdown(&'static str),
    Reload,
    Net(NetEvent),
    Timeout,
    Retry,
    Tap(io::Result<usize>),
    Udp(usize, io::Result<usize>),
    Snapshot,
}

/// Runs an edge until SIGINT or SIGTERM, on a current-thread tokio runtime; SIGHUP reloads the
/// config ([`crate::config::EdgeReload`]). The TAP is removed on the way out.
///
/// # Errors
/// [`IoError`] if the TAP, netlink or the runtime cannot be set up, or the TAP fails.
pub fn run(settings: EdgeSettings) -> Result<(), IoError> {
    driver::run(settings.edge.session.tuning, drive(settings))
}

async fn drive(mut settings: EdgeSettings) -> Result<(), IoError> {
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| IoError::new("installing the SIGHUP handler", e))?;
    let mut netlink = Netlink::open()?;
    let tap =
        tap::open(&settings.tap.name, settings.tap.mtu, settings.tap.mac, settings.tap.bridge.as_deref(), &netlink)
            .await?;
    let ipv6 = settings.edge.session.links.first().is_some_and(|l| l.remote.is_ipv6());
    let mut edge = Edge::new(settings.edge.clone(), now(), unix_nanos(), os_seed()?)
        .map_err(|e| IoError::new("starting the edge", io::Error::other(e)))?;
    // Both by link id.
    let mut uplinks: Vec<Option<Uplink>> = (0..MAX_LINKS).map(|_| None).collect();
    let mut sockets: Vec<Option<BatchSocket>> = (0..MAX_LINKS).map(|_| None).collect();
    let saved = usage::state_file().and_then(|p| std::fs::read_to_string(p).ok()).map(|t| usage::parse(&t));
    for uplink in &settings.uplinks {
        start_uplink(&mut edge, &mut uplinks, &mut sockets, uplink.clone(), &netlink, ipv6).await;
        if let Some(u) = uplink.id.index().and_then(|i| uplinks[i].as_mut()) {
            let period = usage::current_period(u.settings.cap);
            let used = saved.iter().flatten().find(|(name, p, _)| *name == u.settings.name && *p == period);
            if let Some(&(_, _, bytes)) = used {
                u.usage = Usage::resumed(period, bytes);
                edge.set_link_spend(u.settings.id, u.spend());
            }
        }
    }
    let mut ticks = 0u64;
    let mut observer = driver::observer(&settings.status, "edge")?;
    let mut recorder = Recorder::new();
    let mut feed = settings.bitrate_feed.map(Feed::open).transpose()?;
    info!(edge = %settings.name, tap = %settings.tap.name, uplinks = settings.uplinks.len(), "edge running");

    let mut buffers = Buffers::default();
    let Buffers { tap: tap_buf, batch, sends, out } = &mut buffers;
    let mut cursor = 0;
    let mut retry = tokio::time::interval(UPLINK_RETRY);
    loop {
        let deadline = edge.poll_timeout().map(|(at, _)| at);
        let input = tokio::select! {
            biased;
            signal = &mut shutdown => Input::Shutdown(signal),
            _ = hangup.recv() => Input::Reload,
            Some(event) = netlink.next() => Input::Net(event),
            () = sleep_until(deadline) => Input::Timeout,
            _ = retry.tick() => Input::Retry,
            () = tick(&mut observer) => Input::Snapshot,
            result = tap.recv(tap_buf) => Input::Tap(result),
            (slot, result) = poll_fn(|cx| poll_recv_any(cx, &sockets, batch, &mut cursor)) => Input::Udp(slot, result),
        };
        match input {
            Input::Shutdown(signal) => {
                info!(signal, "shutting down");
                save_usage(&uplinks);
                break;
            }
            Input::Timeout => edge.handle_timeout(now()),
            Input::Tap(Ok(len)) => {
                let _ = edge.handle_frame(now(), &tap_buf[..len]);
            }
            Input::Tap(Err(error)) => return Err(IoError::new("reading the TAP", error)),
            Input::Udp(slot, Ok(count)) => {
                let now = now();
                for (from, datagram) in batch.datagrams(count) {
                    let _ = edge.handle_datagram(now, LinkId::new(slot as u8), from, datagram);
                }
            }
            Input::Udp(slot, Err(error)) => {
                // An ICMP error (port unreachable while the gateway restarts) lands here, or on
                // a send: not fatal, and it tells why handshakes go unanswered (below).
                tracing::debug!(uplink = name_of(&uplinks, slot), %error, "receive error");
            }
            Input::Net(event) => on_net_event(&mut edge, &mut uplinks, &mut sockets, event, ipv6),
            Input::Snapshot => {
                if let Some(observer) = &observer {
                    observer.board.publish(snapshot(observer, &edge, &settings.name, &uplinks, &mut recorder));
                }
            }
            Input::Reload => match load_edge(&settings.path) {
                Ok(new) => {
                    let plan = settings.reload_to(&new);
                    apply_reload(&mut edge, &mut uplinks, &mut sockets, &plan, &netlink, ipv6).await?;
                    if plan.settings.bitrate_feed != feed.as_ref().map(Feed::target) {
                        feed = plan.settings.bitrate_feed.map(Feed::open).transpose()?;
                    }
                    settings = plan.settings;
                }
                Err(error) => warn!(%error, "reload refused; the edge runs on as it was"),
            },
            Input::Retry => {
                account_usage(&mut edge, &mut uplinks);
                ticks += 1;
                if ticks.is_multiple_of(60) {
                    save_usage(&uplinks);
                }
                for (slot, uplink) in uplinks.iter_mut().enumerate() {
                    let Some(uplink) = uplink else { continue };
                    if sockets[slot].is_none() && uplink.carrier {
                        sockets[slot] = open_socket(uplink, ipv6);
                    }
                }
            }
        }
        for (slot, socket) in sockets.iter().enumerate() {
            let Some(socket) = socket.as_ref().filter(|s| s.take_icmp_pending()) else { continue };
            for icmp in socket.icmp_errors() {
                if let Some(what) = unreachable(icmp.raw_errno) {
                    edge.handle_unreachable(now(), LinkId::new(slot as u8), icmp.addr, what);
                }
            }
        }
        let link_name = |link: LinkId| name_of(&uplinks, usize::from(link.get()));
        let sinks = Sinks {
            sockets: &sockets,
            socket_for: |transmit: &Transmit| transmit.link.index(),
            tap: |_| Some(&tap),
            name: |_| settings.name.as_str(),
            link_name,
            recorders: observer.is_some().then_some(std::slice::from_mut(&mut recorder)),
            on_event: None,
        };
        driver::drain(&mut edge, out, sends, sinks);
        if let Some(feed) = feed.as_mut() {
            feed.offer(now(), || {
                let Some(s) = edge.session() else { return (0, 0) };
                (s.safe_bitrate(), s.links().filter(|&l| s.link_state(l) == Some(LinkState::Up)).count())
            });
        }
    }
    Ok(())
}

/// The edge's status as of now.
fn snapshot(
    observer: &Observer,
    edge: &Edge,
    name: &str,
    uplinks: &[Option<Uplink>],
    recorder: &mut Recorder,
) -> Status {
    let now = now();
    let names = |link: LinkId| name_of(uplinks, usize::from(link.get()));
    let stats = edge.stats();
    let mut view = recorder.view(now, name, edge.session(), names);
    for link in view.session.iter_mut().flat_map(|s| s.links.iter_mut()) {
        let Some(uplink) = uplinks.get(usize::from(link.id)).and_then(Option::as_ref) else { continue };
        link.metered = uplink.settings.metered;
        link.period_bytes = uplink.settings.metered.then_some(uplink.usage.bytes);
        link.cap_bytes = uplink.settings.cap.map(|c| c.bytes);
        link.cap_period = uplink.settings.cap.map(|c| c.period.as_str().to_owned());
    }
    observer.status(
        now,
        Body::Edge(Box::new(EdgeBody {
            edge: view,
            counters: Flat(stats),
            drops: stats.drops.total(),
            drops_by_reason: by_reason(&stats.drops),
            gateways: edge
                .gateways()
                .map(|(address, session)| GatewayView::of(address, session, address == edge.active_gateway(), names))
                .collect(),
        })),
    )
}

/// What an ICMP error's errno says of the gateway's address (a path-MTU error says nothing).
fn unreachable(errno: i32) -> Option<Unreachable> {
    match io::Error::from_raw_os_error(errno).kind() {
        io::ErrorKind::ConnectionRefused => Some(Unreachable::Port),
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Some(Unreachable::Host),
        _ => None,
    }
}

fn open_socket(uplink: &Uplink, ipv6: bool) -> Option<BatchSocket> {
    if !uplink.carrier {
        return None;
    }
    let socket = bind_uplink(&uplink.settings.interface, uplink.settings.source, ipv6)
        .and_then(|s| BatchSocket::new(s).map_err(|e| IoError::new("enabling batched I/O", e)))
        .and_then(|s| {
            // ICMP errors tell why handshakes go unanswered (a closed port, an unreachable host).
            s.report_icmp().map_err(|e| IoError::new("enabling ICMP error reports", e))?;
            Ok(s)
        });
    match socket {
        Ok(socket) => {
            info!(uplink = %uplink.settings.name, interface = %uplink.settings.interface, "uplink socket ready");
            Some(socket)
        }
        Err(error) => {
            warn!(uplink = %uplink.settings.name, %error, "uplink not usable yet; retrying");
            None
        }
    }
}

/// The name of the uplink in `slot`, for the log.
fn name_of(uplinks: &[Option<Uplink>], slot: usize) -> &str {
    uplinks.get(slot).and_then(Option::as_ref).map_or("?", |u| u.settings.name.as_str())
}

/// Takes an uplink into use: finds its interface, tells the edge if it has no carrier, and
/// opens its socket.
async fn start_uplink(
    edge: &mut Edge,
    uplinks: &mut [Option<Uplink>],
    sockets: &mut [Option<BatchSocket>],
    settings: UplinkSettings,
    netlink: &Netlink,
    ipv6: bool,
) {
    let Some(slot) = settings.id.index() else { return };
    let usage = Usage::new(usage::current_period(settings.cap));
    let mut uplink = Uplink { settings, index: None, carrier: false, usage };
    edge.set_link_spend(uplink.settings.id, uplink.spend());
    if let Some(NetEvent::Link { index, carrier, .. }) = netlink.link(&uplink.settings.interface).await {
        uplink.index = Some(index);
        uplink.carrier = carrier;
    } else {
        warn!(uplink = %uplink.settings.name, interface = %uplink.settings.interface, "interface missing; waiting for it");
    }
    if !uplink.carrier {
        edge.handle_link_event(now(), uplink.settings.id, LinkEvent::CarrierDown);
    }
    sockets[slot] = open_socket(&uplink, ipv6);
    uplinks[slot] = Some(uplink);
}

/// Applies a reload: uplinks removed and added, priorities and the mode on the running session;
/// a new session if the gateway, the keys, the cipher or the budget changed; and a WARN naming
/// what only a restart applies.
///
/// # Errors
/// [`IoError`] if the new session cannot be set up.
async fn apply_reload(
    edge: &mut Edge,
    uplinks: &mut [Option<Uplink>],
    sockets: &mut [Option<BatchSocket>],
    plan: &EdgeReload,
    netlink: &Netlink,
    ipv6: bool,
) -> Result<(), IoError> {
    let now = now();
    let removed: Vec<&str> = plan.removed.iter().map(|l| name_of(uplinks, usize::from(l.get()))).collect();
    let removed = removed.join(",");
    for &id in &plan.removed {
        edge.remove_link(now, id);
        if let Some(slot) = id.index() {
            sockets[slot] = None;
            uplinks[slot] = None;
        }
    }
    for &(id, priority) in &plan.priorities {
        edge.set_link_priority(id, priority);
    }
    if let Some(mode) = plan.mode {
        edge.set_mode(mode);
    }
    for (uplink, link) in &plan.added {
        if let Err(error) = edge.add_link(now, *link) {
            warn!(uplink = %uplink.name, %error, "uplink not added");
            continue;
        }
        start_uplink(edge, uplinks, sockets, uplink.clone(), netlink, ipv6).await;
    }
    // Kept uplinks take their new settings (metered, cap); each is spent as they say.
    for new in &plan.settings.uplinks {
        if let Some(uplink) = new.id.index().and_then(|i| uplinks[i].as_mut()) {
            uplink.settings = new.clone();
        }
    }
    if !plan.new_session.is_empty() {
        // The tunnel starts afresh with the new settings: a new handshake, on the same links.
        *edge = Edge::new(plan.settings.edge.clone(), now, unix_nanos(), os_seed()?)
            .map_err(|e| IoError::new("starting the edge anew", io::Error::other(e)))?;
        for uplink in uplinks.iter().flatten().filter(|u| !u.carrier) {
            edge.handle_link_event(now, uplink.settings.id, LinkEvent::CarrierDown);
        }
        warn!(keys = %plan.new_session.join(", "), "the config changed keys that need a new session: starting one");
    }
    for uplink in uplinks.iter().flatten() {
        edge.set_link_spend(uplink.settings.id, uplink.spend());
    }
    info!(
        uplinks = %plan.settings.uplinks.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(","),
        added = %plan.added.iter().map(|(u, _)| u.name.as_str()).collect::<Vec<_>>().join(","),
        %removed,
        mode = plan.settings.edge.session.mode.as_str(),
        "config reloaded"
    );
    if !plan.restart_only.is_empty() {
        warn!(
            keys = %plan.restart_only.join(", "),
            "the config changed keys a reload does not apply: they take effect at the next restart"
        );
    }
    Ok(())
}

fn on_net_event(
    edge: &mut Edge,
    uplinks: &mut [Option<Uplink>],
    sockets: &mut [Option<BatchSocket>],
    event: NetEvent,
    ipv6: bool,
) {
    match event {
        NetEvent::Link { name, index, carrier } => {
            let Some(slot) = uplinks.iter().position(|u| u.as_ref().is_some_and(|u| u.settings.interface == name))
            else {
                return;
            };
            let Some(uplink) = uplinks[slot].as_mut() else { return };
            uplink.index = Some(index);
            if uplink.carrier == carrier {
                return;
            }
            uplink.carrier = carrier;
            info!(uplink = %uplink.settings.name, interface = %name, carrier, "carrier changed");
            let event = if carrier { LinkEvent::CarrierUp } else { LinkEvent::CarrierDown };
            edge.handle_link_event(now(), uplink.settings.id, event);
            if carrier && sockets[slot].is_none() {
                sockets[slot] = open_socket(uplink, ipv6);
            }
        }
        NetEvent::Gone { index } => {
            let Some(slot) = uplinks.iter().position(|u| u.as_ref().is_some_and(|u| u.index == Some(index))) else {
                return;
            };
            let Some(uplink) = uplinks[slot].as_mut() else { return };
            warn!(uplink = %uplink.settings.name, "interface removed; waiting for it to come back");
            uplink.index = None;
            uplink.carrier = false;
            sockets[slot] = None;
            edge.handle_link_event(now(), uplink.settings.id, LinkEvent::CarrierDown);
        }
        NetEvent::Address { index, address } => {
            let Some(uplink) = uplinks.iter().flatten().find(|u| u.index == Some(index)) else { return };
            let Some(slot) = uplink.settings.id.index() else { return };
            if !address_matters(&uplink.settings, address, ipv6) {
                return;
            }
            // A new address (a modem's new IP): a fresh socket picks it up; the gateway follows
            // the first authenticated packet from it.
            info!(uplink = %uplink.settings.name, ?address, "address changed; rebinding");
            sockets[slot] = open_socket(uplink, ipv6);
        }
    }
}

/// Whether an address change on an uplink calls for a new socket: the configured source address,
/// or a routable address of the gateway's family (a link-local IPv6 address appearing, say, does
/// not, and rebinding for it would only move the NAT mapping).
fn address_matters(uplink: &UplinkSettings, address: Option<std::net::IpAddr>, ipv6: bool) -> bool {
    match (uplink.source, address) {
        (Some(source), Some(address)) => source == address,
        (Some(_), None) | (None, None) => true,
        (None, Some(std::net::IpAddr::V4(_))) => !ipv6,
        (None, Some(std::net::IpAddr::V6(v6))) => ipv6 && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}
