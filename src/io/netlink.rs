//! Link and address events from rtnetlink: carrier loss reaches the engine at once, an address
//! change makes the edge rebind that uplink's socket, and an interface that appears (a modem
//! plugged in) gets its socket.

use futures_channel::mpsc::UnboundedReceiver;
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::sys::SocketAddr as NetlinkAddr;
use rtnetlink::{Handle, LinkUnspec, MulticastGroup, new_multicast_connection};

use super::IoError;

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
