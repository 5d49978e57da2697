//! TAP devices.

use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

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
    let mut builder = DeviceBuilder::new().name(name).layer(Layer::L2).mtu(mtu).enable(true);
    if let Some(mac) = mac {
        builder = builder.mac_addr(mac);
    }
    let device = builder.build_async().map_err(|e| IoError::new(format!("creating TAP {name}"), e))?;
    if let Some(bridge) = bridge {
        netlink.join_bridge(name, bridge).await?;
    }
    tracing::info!(tap = name, mtu, bridge, "TAP up");
    Ok(device)
}
