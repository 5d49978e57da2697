//! A minimal status endpoint: a local TCP listener that answers every connection with one JSON
//! snapshot (schema version 1) and closes it. `braid-edge status` and `braid-gateway status`
//! print it. (Metrics, `--watch` and the dashboard come with the observability work.)

use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::IoError;
use crate::LinkId;
use crate::session::Session;

/// The schema version of the snapshot.
pub const SCHEMA_VERSION: u32 = 1;

/// Binds the status listener.
///
/// # Errors
/// [`IoError`] if the address cannot be bound.
pub async fn listen(address: SocketAddr) -> Result<TcpListener, IoError> {
    TcpListener::bind(address).await.map_err(|e| IoError::new(format!("serving status on {address}"), e))
}

/// Writes `snapshot` to a client and closes the connection, in a task of its own bounded by a
/// short timeout, so a stuck client never stalls the driver.
pub fn reply(mut stream: TcpStream, snapshot: String) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(snapshot.as_bytes())).await;
    });
}

/// Reads a snapshot from a running daemon.
///
/// # Errors
/// [`IoError`] if nothing answers at `address`.
pub fn fetch(address: SocketAddr) -> Result<String, IoError> {
    let what = || format!("reading status from {address} (is the daemon running?)");
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).map_err(|e| IoError::new(what(), e))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| IoError::new(what(), e))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| IoError::new(what(), e))?;
    Ok(text)
}

/// The edge's snapshot.
pub fn edge_json<'a>(session: Option<&Session>, name: impl Fn(LinkId) -> &'a str) -> String {
    let session = session.map_or_else(|| "null".to_string(), |s| session_json(s, name));
    format!("{{\"version\":{SCHEMA_VERSION},\"role\":\"edge\",\"session\":{session}}}\n")
}

/// The JSON object for one session: its counters and each link, named by `name`.
pub fn session_json<'a>(session: &Session, name: impl Fn(LinkId) -> &'a str) -> String {
    let stats = session.stats();
    let mut out = format!(
        "{{\"mode\":\"{}\",\"frames_in\":{},\"frames_delivered\":{},\"frames_lost\":{},\"frames_late\":{},\"duplicate_copies\":{},\"drops\":{},\"reorder_hold_ms\":{:.1},\"links\":[",
        session.mode().as_str(),
        stats.frames_in,
        stats.frames_delivered,
        stats.frames_lost,
        stats.frames_late,
        stats.duplicate_copies,
        stats.drops.total(),
        session.reorder_hold().as_secs_f64() * 1000.0
    );
    for (i, link) in session.links().enumerate() {
        let (Some(state), Some(quality), Some(counters)) =
            (session.link_state(link), session.link_quality(link), session.link_stats(link))
        else {
            continue;
        };
        if i > 0 {
            out.push(',');
        }
        let rtt = quality.srtt.map_or("null".to_string(), |r| format!("{:.1}", r.as_secs_f64() * 1000.0));
        let _ = write!(
            out,
            "{{\"id\":{},\"name\":\"{}\",\"state\":\"{}\",\"rtt_ms\":{rtt},\"tx_loss\":{:.4},\"rx_loss\":{:.4},\"tx_packets\":{},\"rx_packets\":{}}}",
            link.get(),
            escape(name(link)),
            state.as_str(),
            quality.tx_loss,
            quality.rx_loss,
            counters.tx_packets,
            counters.rx_packets
        );
    }
    out.push_str("]}");
    out
}

/// Escapes a string for a JSON string literal.
pub fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}
