//! Link and address events from rtnetlink: carrier loss reaches the engine at once, an address
//! change makes the edge rebind that uplink's socket, and an interface that appears (a modem
//! plugged in) gets its socket.

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourState};
use rtnetlink::sys::SocketAddr as NetlinkAddr;
use rtnetlink::{Handle, LinkUnspec, MulticastGroup, new_multicast_connection};

use super::IoError;
use std::io;
use tokio::sync::mpsc::UnboundedSender;

/// What the kernel said about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// An interface exists, with or without carrier.
    Link {
        /// Its name.
        name: String,
        /// Its index.
        index: u32,
        /// Administratively up and with carrier (IFF_UP and IFF_LOWER_UP).
        carrier: bool,
    },
    /// An interface went away.
    Gone {
        /// Its index.
        index: u32,
    },
    /// An address was added to or removed from an interface.
    Address {
        /// The interface's index.
        index: u32,
        /// The address, when the message carried one.
        address: Option<std::net::IpAddr>,
    },
}

/// A netlink connection: requests through the handle, events from the multicast groups.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, NetlinkAddr)>,
}

impl Netlink {
    /// Opens the connection and subscribes to link and address events. Must run inside tokio.
    ///
    /// # Errors
    /// [`IoError`] if the netlink socket cannot be opened.
    pub fn open() -> Result<Self, IoError> {
        let (connection, handle, messages) =
            new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
                .map_err(|e| IoError::new("opening the rtnetlink socket", e))?;
        tokio::spawn(connection);
        Ok(Self { handle, messages })
    }

    /// The current state of the interface called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Option<NetEvent> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        let link = links.try_next().await.ok().flatten()?;
        link_event(&link)
    }

    /// Joins interface `device` to `bridge`.
    ///
    /// # Errors
    /// [`IoError`] if either is missing or the kernel refuses.
    pub async fn join_bridge(&self, device: &str, bridge: &str) -> Result<(), IoError> {
        let index = |name: &str| {
            let name = name.to_string();
            async move {
                match self.link(&name).await {
                    Some(NetEvent::Link { index, .. }) => Ok(index),
                    _ => Err(IoError::new(
                        format!("joining {device} to bridge {bridge}"),
                        std::io::Error::new(std::io::ErrorKind::NotFound, format!("no interface {name}")),
                    )),
                }
            }
        };
        let (device_index, bridge_index) = (index(device).await?, index(bridge).await?);
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(device_index).controller(bridge_index).up().build())
            .execute()
            .await
            .map_err(|e| IoError::new(format!("joining {device} to bridge {bridge}"), std::io::Error::other(e)))
    }

    /// A queue of devices whose bridge should forget the addresses it learned behind them,
    /// worked off by a task of its own: sending never waits on the kernel.
    pub fn forgetter(&self) -> UnboundedSender<String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let handle = self.handle.clone();
        tokio::spawn(async move {
            while let Some(device) = rx.recv().await {
                match forget_learned(&handle, &device).await {
                    Ok(count) => tracing::info!(device, count, "the bridge forgot the addresses learned behind it"),
                    Err(error) => tracing::warn!(device, %error, "could not clear the bridge's learned addresses"),
                }
            }
        });
        tx
    }

    /// The next event, skipping messages braid has no use for; `None` if the connection closed.
    pub async fn next(&mut self) -> Option<NetEvent> {
        loop {
            let (message, _) = self.messages.next().await?;
            let NetlinkPayload::InnerMessage(message) = message.payload else { continue };
            let event = match message {
                RouteNetlinkMessage::NewLink(link) => link_event(&link),
                RouteNetlinkMessage::DelLink(link) => Some(NetEvent::Gone { index: link.header.index }),
                RouteNetlinkMessage::NewAddress(message) | RouteNetlinkMessage::DelAddress(message) => {
                    let address = message.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    });
                    Some(NetEvent::Address { index: message.header.index, address })
                }
                _ => None,
            };
            if let Some(event) = event {
                return Some(event);
            }
        }
    }
}

fn link_event(link: &LinkMessage) -> Option<NetEvent> {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })?;
    let flags = link.header.flags;
    let carrier = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
    Some(NetEvent::Link { name, index: link.header.index, carrier })
}

/// Deletes the entries the bridge learned behind `device` (not static or permanent ones), so
/// frames for those addresses go where they are announced next instead of into `device`;
/// returns how many.
async fn forget_learned(handle: &Handle, device: &str) -> Result<usize, IoError> {
    let error =
        |e: rtnetlink::Error| IoError::new(format!("clearing the bridge entries of {device}"), io::Error::other(e));
    let mut links = handle.link().get().match_name(device.to_string()).execute();
    let Some(link) = links.try_next().await.map_err(error)? else { return Ok(0) };
    let index = link.header.index;
    let mut entries = handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    let mut learned = Vec::new();
    while let Some(entry) = entries.try_next().await.map_err(error)? {
        let header = &entry.header;
        // The bridge's own entries name it (NDA_MASTER); the device's own list does not.
        let bridged = entry.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Controller(_)));
        if header.ifindex == index
            && bridged
            && matches!(header.state, NeighbourState::Reachable | NeighbourState::Stale)
        {
            learned.push(entry);
        }
    }
    let count = learned.len();
    for entry in learned {
        handle.neighbours().del(entry).execute().await.map_err(error)?;
    }
    Ok(count)
}
