//! TAP devices.

use tun_rs::{AsyncDevice, DeviceBuilder, Layer, SyncDevice};

use super::IoError;
use super::netlink::Netlink;

/// Creates a TAP device, sets it up, and joins it to `bridge` if given. The device is removed
/// when it is dropped (braid never makes it persistent).
///
/// # Errors
/// [`IoError`] naming the device if the kernel refuses (no CAP_NET_ADMIN, a name in use, …).
pub async fn open(
    name: &str,
    mtu: u16,
    mac: Option<[u8; 6]>,
    bridge: Option<&str>,
    netlink: &Netlink,
) -> Result<AsyncDevice, IoError> {
    let device = open_unregistered(name, mtu, mac, bridge, netlink).await?;
    register(name, device)
}

/// As [`open`], for another thread's runtime to [`register`].
///
/// # Errors
/// As [`open`].
pub async fn open_unregistered(
    name: &str,
    mtu: u16,
    mac: Option<[u8; 6]>,
    bridge: Option<&str>,
    netlink: &Netlink,
) -> Result<SyncDevice, IoError> {
    let mut builder = DeviceBuilder::new().name(name).layer(Layer::L2).mtu(mtu).enable(true);
    if let Some(mac) = mac {
        builder = builder.mac_addr(mac);
    }
    let device = builder.build_sync().map_err(|e| IoError::new(format!("creating TAP {name}"), e))?;
    if let Some(bridge) = bridge {
        netlink.join_bridge(name, bridge).await?;
    }
    tracing::info!(tap = name, mtu, bridge, "TAP up");
    Ok(device)
}

/// Hands a TAP opened by [`open_unregistered`] to the runtime this is called on.
///
/// # Errors
/// [`IoError`] naming the device if it cannot be made non-blocking or registered.
pub fn register(name: &str, device: SyncDevice) -> Result<AsyncDevice, IoError> {
    AsyncDevice::new(device).map_err(|e| IoError::new(format!("registering TAP {name}"), e))
}
