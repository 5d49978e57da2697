//! `/metrics`: the latest [`Status`] snapshot in the OpenMetrics text format, encoded by
//! `prometheus-client` at scrape time.
//!
//! Every series carries the labels `edge` and, per link, `link`. The names, types and labels are
//! listed in docs/observability.md. Counters come from the engine's own counters, so
//! they reset only when a session is replaced (a gateway restart) or the daemon restarts.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::status::{Board, Body, EdgeView, LinkView, SessionView, Status};
use crate::LinkState;
use crate::endpoint::edge::EdgeStats;
use crate::endpoint::gateway::GatewayStats;
use crate::stats::{Counters, DropReason, LinkStats, SessionStats};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes a snapshot (or, before the first one, only `braid_info`) as OpenMetrics text.
pub fn encode(status: Option<&Status>, role: &'static str) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { status: status.cloned().map(Arc::new), role }));
    let mut out = String::new();
    // Writing into a String cannot fail, and every value we encode is well-formed.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Encodes the latest snapshot on `board`.
pub fn encode_board(board: &Board, role: &'static str) -> String {
    let latest = board.latest();
    encode(latest.as_deref(), role)
}

#[derive(Debug)]
struct Snapshot {
    status: Option<Arc<Status>>,
    role: &'static str,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;
/// A family and how each series' value is read from what it describes.
type Reading<'a, T, From, R = T> = (Family<'a, T>, fn(&From) -> R);

/// One metric family being written: a name, a help text, a type, and its series.
struct Family<'a, T> {
    name: Cow<'static, str>,
    help: Cow<'static, str>,
    kind: MetricType,
    series: Vec<(Labels<'a>, T)>,
}

impl<'a, T> Family<'a, T> {
    fn new(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>, kind: MetricType) -> Self {
        Self { name: name.into(), help: help.into(), kind, series: Vec::new() }
    }

    fn push(&mut self, labels: Labels<'a>, value: T) {
        self.series.push((labels, value));
    }
}

fn write_gauges(encoder: &mut DescriptorEncoder<'_>, family: &Family<'_, f64>) -> Result<(), std::fmt::Error> {
    if family.series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
    for (labels, value) in &family.series {
        // A series without labels is written bare (`name 1`), not as `name{} 1`.
        if labels.is_empty() {
            return ConstGauge::new(*value).encode(metric);
        }
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn write_counters(encoder: &mut DescriptorEncoder<'_>, family: &Family<'_, u64>) -> Result<(), std::fmt::Error> {
    if family.series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
    for (labels, value) in &family.series {
        if labels.is_empty() {
            return ConstCounter::new(*value).encode(metric);
        }
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(name: &'static str, help: &'static str) -> Family<'static, f64> {
    Family::new(name, help, MetricType::Gauge)
}

fn counters(name: &'static str, help: &'static str) -> Family<'static, u64> {
    Family::new(name, help, MetricType::Counter)
}

/// The counter families of one set of engine counters ([`Counters::DEFS`]): each counter is
/// written as `{prefix}{metric}`, and counters that share a metric family are told apart by a
/// `direction` label. A counter declared in the engine is exported from its declaration alone.
struct CounterFamilies<'a> {
    families: Vec<Family<'a, u64>>,
    /// For each counter, its family.
    family_of: Vec<usize>,
}

impl<'a> CounterFamilies<'a> {
    fn of<T: Counters>(prefix: &str) -> Self {
        let mut families: Vec<Family<'a, u64>> = Vec::new();
        let mut family_of = Vec::with_capacity(T::DEFS.len());
        for def in T::DEFS {
            let name = format!("{prefix}{}", def.metric);
            let help = match def.direction {
                Some(direction) => format!("{direction}: {}", def.help()),
                None => def.help().to_owned(),
            };
            match families.iter().position(|f| f.name == name) {
                Some(i) => {
                    let family = &mut families[i];
                    family.help = format!("{} {help}", family.help).into();
                    family_of.push(i);
                }
                None => {
                    family_of.push(families.len());
                    families.push(Family::new(name, help, MetricType::Counter));
                }
            }
        }
        Self { families, family_of }
    }

    /// Adds one series per counter of `counters`, with `labels` (and its direction, if any).
    fn push<T: Counters>(&mut self, labels: &Labels<'a>, counters: &T) {
        for ((def, value), &i) in counters.entries().zip(&self.family_of) {
            let mut labels = labels.clone();
            labels.extend(def.direction.map(|d| ("direction", d)));
            self.families[i].push(labels, value);
        }
    }

    fn write(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.families.iter().try_for_each(|family| write_counters(encoder, family))
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let version = env!("CARGO_PKG_VERSION");
        let mut info = gauges("braid_info", "Always 1; the labels say which daemon and version this is.");
        info.push(vec![("role", self.role), ("version", version)], 1.0);
        write_gauges(&mut encoder, &info)?;
        let Some(status) = self.status.as_deref() else { return Ok(()) };
        let mut uptime = gauges("braid_uptime_seconds", "Seconds since the daemon started.");
        uptime.push(Vec::new(), status.uptime_s);
        write_gauges(&mut encoder, &uptime)?;
        match &status.body {
            Body::Edge(edge) => {
                let name = edge.edge.name.as_str();
                let mut own = CounterFamilies::of::<EdgeStats>("braid_edge_");
                own.push(&vec![("edge", name)], &edge.counters.0);
                own.write(&mut encoder)?;
                let mut drops =
                    counters("braid_edge_drops", "Datagrams the edge dropped outside its session, by reason.");
                for reason in DropReason::ALL {
                    let count = edge.drops_by_reason.get(reason.as_str()).copied().unwrap_or(0);
                    drops.push(vec![("edge", name), ("reason", reason.as_str())], count);
                }
                write_counters(&mut encoder, &drops)?;
            }
            Body::Gateway(gateway) => {
                let mut sessions = gauges("braid_gateway_sessions", "Edges with a live session.");
                sessions.push(Vec::new(), gateway.sessions as f64);
                write_gauges(&mut encoder, &sessions)?;
                let mut draining = gauges("braid_gateway_draining", "1 while the gateway is being drained.");
                draining.push(Vec::new(), f64::from(u8::from(gateway.draining)));
                write_gauges(&mut encoder, &draining)?;
                if let Some(fleet) = &gateway.fleet {
                    let mut reachable = gauges("braid_fleet_etcd_reachable", "1 while etcd answers the fleet agent.");
                    reachable.push(Vec::new(), f64::from(u8::from(fleet.etcd_reachable)));
                    write_gauges(&mut encoder, &reachable)?;
                    let mut members = gauges("braid_fleet_members", "Gateways registered in the fleet, as last seen.");
                    members.push(Vec::new(), fleet.members.len() as f64);
                    write_gauges(&mut encoder, &members)?;
                    let mut edges = gauges("braid_fleet_edges", "Edges on the fleet's allowlist, as last seen.");
                    edges.push(Vec::new(), fleet.edges as f64);
                    write_gauges(&mut encoder, &edges)?;
                    let mut outages = counters("braid_fleet_etcd_outages", "Times the fleet agent lost etcd.");
                    outages.push(Vec::new(), fleet.etcd_outages);
                    write_counters(&mut encoder, &outages)?;
                }
                let mut own = CounterFamilies::of::<GatewayStats>("braid_gateway_");
                own.push(&Vec::new(), &gateway.counters.0);
                own.write(&mut encoder)?;
                let mut drops =
                    counters("braid_gateway_drops", "Datagrams the gateway dropped outside any session, by reason.");
                for reason in DropReason::ALL {
                    let count = gateway.drops_by_reason.get(reason.as_str()).copied().unwrap_or(0);
                    drops.push(vec![("reason", reason.as_str())], count);
                }
                write_counters(&mut encoder, &drops)?;
            }
        }
        encode_edges(&mut encoder, &status.edges())
    }
}

/// The per-edge, per-session and per-link families, each written once for all edges.
fn encode_edges(encoder: &mut DescriptorEncoder<'_>, edges: &[&EdgeView]) -> Result<(), std::fmt::Error> {
    let mut session_up = gauges("braid_session_up", "1 while the edge has a session.");
    let mut safe = gauges("braid_stream_safe", "1 while two or more links are usable: losing any one is survived.");
    let mut usable = gauges("braid_stream_usable_links", "Links up or degraded.");
    let mut hold_limit = gauges("braid_session_reorder_hold_limit_seconds", "The reorder buffer's current hold limit.");
    let mut bitrate = gauges(
        "braid_session_safe_bitrate_bps",
        "The stream bitrate the links carry now with the mode's protection: what an encoder should stay under.",
    );
    let mut session_counters = CounterFamilies::of::<SessionStats>("braid_session_");
    let mut drops = counters("braid_session_drops", "Datagrams and frames the session dropped, by reason.");
    let mut state = gauges("braid_link_state", "1 for the link's current state, 0 for the others.");
    let mut link_gauges: Vec<Reading<'_, f64, LinkView, Option<f64>>> = vec![
        (gauges("braid_link_rtt_seconds", "Smoothed round-trip time."), |l| l.rtt_ms.map(|v| v / 1e3)),
        (gauges("braid_link_min_rtt_seconds", "Lowest round-trip time seen."), |l| l.min_rtt_ms.map(|v| v / 1e3)),
        (gauges("braid_link_jitter_seconds", "Interarrival jitter of the peer's packets."), |l| {
            Some(l.jitter_ms / 1e3)
        }),
        (
            gauges(
                "braid_link_max_datagram_bytes",
                "The largest datagram the link sends (its probed path MTU less IP and UDP).",
            ),
            |l| Some(l.max_datagram as f64),
        ),
        (gauges("braid_link_rate_bps", "The sending rate the link's congestion control allows."), |l| {
            Some(l.rate_bps as f64)
        }),
        (gauges("braid_link_period_bytes", "Bytes both ways in the data cap's current period (metered links)."), |l| {
            l.period_bytes.map(|b| b as f64)
        }),
        (gauges("braid_link_cap_bytes", "The link's data cap, bytes per period."), |l| l.cap_bytes.map(|b| b as f64)),
    ];
    let mut loss = gauges("braid_link_loss_ratio", "Packet loss over the quality window, per direction.");
    let mut share = gauges(
        "braid_link_stream_share_ratio",
        "tx: share of the frames handed in that the link carried; rx: share of delivered frames it delivered first.",
    );
    let mut engine_link_counters = CounterFamilies::of::<LinkStats>("braid_link_");
    let mut link_counters: Vec<Reading<'_, u64, LinkView>> = vec![
        (counters("braid_link_duplicates", "Copies received after another link delivered the frame."), |l| {
            l.duplicates
        }),
        (counters("braid_link_state_changes", "Link state changes."), |l| l.state_changes),
    ];
    let mut holds: Vec<(Labels<'_>, &SessionView)> = Vec::new();

    for edge in edges {
        let e = edge.name.as_str();
        session_up.push(vec![("edge", e)], if edge.session.is_some() { 1.0 } else { 0.0 });
        safe.push(vec![("edge", e)], if edge.safety.level == "safe" { 1.0 } else { 0.0 });
        usable.push(vec![("edge", e)], f64::from(edge.safety.usable_links));
        let Some(session) = &edge.session else { continue };
        hold_limit.push(vec![("edge", e)], session.reorder_hold_ms / 1e3);
        bitrate.push(vec![("edge", e)], session.safe_bitrate_bps as f64);
        session_counters.push(&vec![("edge", e)], &session.counters.0);
        for reason in DropReason::ALL {
            let count = session.drops_by_reason.get(reason.as_str()).copied().unwrap_or(0);
            drops.push(vec![("edge", e), ("reason", reason.as_str())], count);
        }
        holds.push((vec![("edge", e)], session));
        for link in &session.links {
            let l = link.name.as_str();
            for s in [LinkState::Probing, LinkState::Up, LinkState::Degraded, LinkState::Down] {
                let value = if link.state == s.as_str() { 1.0 } else { 0.0 };
                state.push(vec![("edge", e), ("link", l), ("state", s.as_str())], value);
            }
            for (family, value) in &mut link_gauges {
                if let Some(v) = value(link) {
                    family.push(vec![("edge", e), ("link", l)], v);
                }
            }
            for (family, value) in &mut link_counters {
                family.push(vec![("edge", e), ("link", l)], value(link));
            }
            engine_link_counters.push(&vec![("edge", e), ("link", l)], &link.counters.0);
            for (direction, lost, part) in [("tx", link.tx_loss, link.tx_share), ("rx", link.rx_loss, link.rx_share)] {
                let labels = vec![("edge", e), ("link", l), ("direction", direction)];
                loss.push(labels.clone(), lost);
                share.push(labels, part);
            }
        }
    }

    for family in [&session_up, &safe, &usable, &hold_limit, &bitrate] {
        write_gauges(encoder, family)?;
    }
    session_counters.write(encoder)?;
    write_counters(encoder, &drops)?;
    if !holds.is_empty() {
        let mut metric = encoder.encode_descriptor(
            "braid_session_reorder_hold_seconds",
            "How long delivered frames waited in the reorder buffer.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, session) in &holds {
            metric.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                session.hold.sum,
                session.hold.count(),
                &session.hold.buckets(),
                None,
            )?;
        }
    }
    write_gauges(encoder, &state)?;
    for (family, _) in &link_gauges {
        write_gauges(encoder, family)?;
    }
    for family in [&loss, &share] {
        write_gauges(encoder, family)?;
    }
    engine_link_counters.write(encoder)?;
    for (family, _) in &link_counters {
        write_counters(encoder, family)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use openmetrics_parser::OpenMetricsValue;
    use openmetrics_parser::openmetrics::parse_openmetrics;

    use super::*;
    use crate::io::status::{EdgeBody, Flat, GatewayBody, HoldHistogram, Safety, SessionView};

    pub(crate) fn link(id: u8, name: &str, state: &str) -> LinkView {
        LinkView {
            id,
            name: name.into(),
            state: state.into(),
            rtt_ms: Some(31.5),
            min_rtt_ms: Some(30.0),
            jitter_ms: 2.0,
            tx_loss: 0.01,
            rx_loss: 0.02,
            counters: Flat(LinkStats {
                tx_packets: 100 + u64::from(id),
                rx_packets: 90,
                tx_bytes: 150_000,
                rx_bytes: 120_000,
                tx_frames: 80,
                rx_frames: 70,
                rx_frames_first: 40,
                retransmits: 3,
                probes_sent: 20,
                mtu_probes_sent: 2,
            }),
            duplicates: 30,
            tx_bps: 1e6,
            rx_bps: 9e5,
            tx_share: 1.0,
            rx_share: 0.5,
            state_changes: 3,
            max_datagram: 1392,
            max_datagram_settled: true,
            rate_bps: 8_000_000,
            rate_measured: true,
            metered: true,
            period_bytes: Some(1_500_000_000),
            cap_bytes: Some(2_000_000_000),
            cap_period: Some("month".into()),
            spend: "metered".into(),
        }
    }

    pub(crate) fn session() -> SessionView {
        let mut hold = HoldHistogram::default();
        hold.observe(std::time::Duration::ZERO);
        hold.observe(std::time::Duration::from_millis(40));
        SessionView {
            mode: "redundant".into(),
            counters: Flat(SessionStats {
                frames_in: 500,
                frame_copies_sent: 1500,
                frames_delivered: 480,
                frames_lost: 2,
                frames_late: 1,
                frames_reordered: 5,
                duplicate_copies: 900,
                frames_nacked: 4,
                frames_retransmitted: 3,
                frames_recovered: 2,
                frames_fragmented: 6,
                frames_reassembled: 5,
                duplicate_pieces: 4,
                data_bytes_first: 600_000,
                data_bytes_extra: 1_200_000,
                ..SessionStats::default()
            }),
            drops: 7,
            drops_by_reason: BTreeMap::from([("replay".to_string(), 7)]),
            reorder_hold_ms: 45.0,
            safe_bitrate_bps: 12_000_000,
            links: vec![link(0, "dsl", "up"), link(1, "lte", "down")],
            hold,
        }
    }

    fn edge_status() -> Status {
        let session = session();
        let states = [LinkState::Up, LinkState::Down];
        Status {
            version: 2,
            time_unix_ms: 1,
            uptime_s: 12.5,
            body: Body::Edge(Box::new(EdgeBody {
                edge: EdgeView {
                    name: "van \"1\"".into(),
                    session: Some(session),
                    safety: Safety::of(Some(&states)),
                    transitions: Vec::new(),
                    handshake_problem: None,
                },
                counters: Flat(EdgeStats { handshakes_started: 2, handshakes_completed: 1, ..EdgeStats::default() }),
                drops: 0,
                drops_by_reason: BTreeMap::new(),
                gateways: Vec::new(),
            })),
        }
    }

    /// Every series of an exposition, parsed by a strict OpenMetrics parser: (family, labels, value).
    type Scrape = Vec<(String, BTreeMap<String, String>, OpenMetricsValue)>;

    fn parse(text: &str) -> Scrape {
        let exposition = parse_openmetrics(text).unwrap_or_else(|e| panic!("not OpenMetrics: {e:?}\n{text}"));
        let mut series = Vec::new();
        for (name, family) in exposition.families {
            for sample in family.iter_samples() {
                let set = sample.get_labelset().unwrap();
                let labels = set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                series.push((name.clone(), labels, sample.value.clone()));
            }
        }
        series
    }

    fn find<'a>(scrape: &'a Scrape, family: &str, labels: &[(&str, &str)]) -> &'a OpenMetricsValue {
        scrape
            .iter()
            .find(|(name, set, _)| {
                name == family && labels.iter().all(|(k, v)| set.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| value)
            .unwrap_or_else(|| panic!("no {family} {labels:?}"))
    }

    fn value(scrape: &Scrape, family: &str, labels: &[(&str, &str)]) -> f64 {
        match find(scrape, family, labels) {
            OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            other => panic!("{family} is not a gauge or counter: {other:?}"),
        }
    }

    #[test]
    fn an_edge_snapshot_encodes_every_link_and_session_series_with_its_labels() {
        let text = encode(Some(&edge_status()), "edge");
        let scrape = parse(&text);
        let dsl = [("edge", "van \"1\""), ("link", "dsl")];
        assert!(matches!(find(&scrape, "braid_link_bytes", &dsl), OpenMetricsValue::Counter(_)), "bytes are a counter");
        assert!(matches!(find(&scrape, "braid_link_rtt_seconds", &dsl), OpenMetricsValue::Gauge(_)));
        assert_eq!(value(&scrape, "braid_link_rtt_seconds", &dsl), 0.0315);
        assert_eq!(value(&scrape, "braid_link_state", &[dsl[0], dsl[1], ("state", "up")]), 1.0);
        assert_eq!(value(&scrape, "braid_link_state", &[dsl[0], dsl[1], ("state", "down")]), 0.0);
        assert_eq!(value(&scrape, "braid_link_state", &[dsl[0], ("link", "lte"), ("state", "down")]), 1.0);
        assert_eq!(value(&scrape, "braid_link_loss_ratio", &[dsl[0], dsl[1], ("direction", "rx")]), 0.02);
        assert_eq!(value(&scrape, "braid_link_bytes", &[dsl[0], dsl[1], ("direction", "tx")]), 150_000.0);
        assert_eq!(value(&scrape, "braid_link_packets", &[dsl[0], ("link", "lte"), ("direction", "tx")]), 101.0);
        assert_eq!(value(&scrape, "braid_link_stream_share_ratio", &[dsl[0], dsl[1], ("direction", "rx")]), 0.5);
        assert_eq!(value(&scrape, "braid_link_duplicates", &dsl), 30.0);
        assert_eq!(value(&scrape, "braid_link_retransmits", &dsl), 3.0);
        assert_eq!(value(&scrape, "braid_session_frames_recovered", &[dsl[0]]), 2.0);
        assert_eq!(value(&scrape, "braid_session_frames_reassembled", &[dsl[0]]), 5.0);
        assert_eq!(value(&scrape, "braid_session_data_bytes_first", &[dsl[0]]), 600_000.0);
        assert_eq!(value(&scrape, "braid_session_data_bytes_extra", &[dsl[0]]), 1_200_000.0);
        assert_eq!(value(&scrape, "braid_session_frames_lost", &[dsl[0]]), 2.0);
        assert_eq!(value(&scrape, "braid_session_drops", &[dsl[0], ("reason", "replay")]), 7.0);
        assert_eq!(value(&scrape, "braid_session_drops", &[dsl[0], ("reason", "open_failed")]), 0.0);
        assert_eq!(value(&scrape, "braid_stream_safe", &[dsl[0]]), 0.0, "one usable link is at risk");
        assert_eq!(value(&scrape, "braid_edge_handshakes_completed", &[dsl[0]]), 1.0);
        assert_eq!(value(&scrape, "braid_info", &[("role", "edge")]), 1.0);

        let OpenMetricsValue::Histogram(hold) = find(&scrape, "braid_session_reorder_hold_seconds", &[dsl[0]]) else {
            panic!("the reorder hold is not a histogram")
        };
        let at = |le: f64| hold.buckets.iter().find(|b| b.upper_bound == le).map(|b| b.count.as_f64());
        assert_eq!(at(0.001), Some(1.0));
        assert_eq!(at(0.02), Some(1.0));
        assert_eq!(at(0.05), Some(2.0));
        assert_eq!(at(f64::INFINITY), Some(2.0));
        assert_eq!(hold.count, Some(2));
        assert!(text.contains("braid_session_reorder_hold_seconds_count{edge=\"van \\\"1\\\"\"} 2"), "{text}");
    }

    #[test]
    fn a_gateway_snapshot_encodes_sessions_and_handshakes_and_every_edge() {
        let mut first = match edge_status().body {
            Body::Edge(edge) => edge.edge,
            Body::Gateway(_) => unreachable!(),
        };
        first.name = "van-1".into();
        let second = EdgeView {
            name: "van-2".into(),
            session: None,
            safety: Safety::of(None),
            transitions: Vec::new(),
            handshake_problem: None,
        };
        let status = Status {
            version: 2,
            time_unix_ms: 1,
            uptime_s: 3.0,
            body: Body::Gateway(Box::new(GatewayBody {
                counters: Flat(GatewayStats {
                    handshakes: 4,
                    cookies_sent: 1,
                    sessions_started: 2,
                    ..GatewayStats::default()
                }),
                sessions: 1,
                draining: false,
                drops: 3,
                drops_by_reason: BTreeMap::from([("bad_header".to_string(), 3)]),
                edges: vec![first, second],
                fleet: Some(crate::fleet::member::FleetView {
                    etcd_reachable: false,
                    etcd_outages: 2,
                    edges: 5,
                    ..Default::default()
                }),
            })),
        };
        let scrape = parse(&encode(Some(&status), "gateway"));
        assert_eq!(value(&scrape, "braid_fleet_etcd_reachable", &[]), 0.0);
        assert_eq!(value(&scrape, "braid_fleet_etcd_outages", &[]), 2.0);
        assert_eq!(value(&scrape, "braid_fleet_edges", &[]), 5.0);
        assert_eq!(value(&scrape, "braid_gateway_sessions", &[]), 1.0);
        assert_eq!(value(&scrape, "braid_gateway_draining", &[]), 0.0);
        assert_eq!(value(&scrape, "braid_gateway_handshakes", &[]), 4.0);
        assert_eq!(value(&scrape, "braid_gateway_drops", &[("reason", "bad_header")]), 3.0);
        assert_eq!(value(&scrape, "braid_session_up", &[("edge", "van-1")]), 1.0);
        assert_eq!(value(&scrape, "braid_session_up", &[("edge", "van-2")]), 0.0);
        assert_eq!(value(&scrape, "braid_link_rtt_seconds", &[("edge", "van-1"), ("link", "lte")]), 0.0315);
    }

    #[test]
    fn before_the_first_snapshot_only_the_info_series_is_served() {
        let text = encode(None, "gateway");
        let scrape = parse(&text);
        assert_eq!(scrape.len(), 1, "{text}");
        assert_eq!(value(&scrape, "braid_info", &[("role", "gateway")]), 1.0);
    }

    crate::counters! {
        /// A set of counters declared only in this test.
        struct Declared {
            /// Widgets made.
            widgets,
            /// Things sent.
            tx_things as "things" tx,
            /// Things received.
            rx_things as "things" rx,
        }
    }

    /// A counter declared once is in the status JSON and in `/metrics`, named and labelled from
    /// its declaration, with nothing else to write.
    #[test]
    fn a_counter_declared_once_is_exported_under_its_family_and_direction() {
        let declared = Declared { widgets: 3, tx_things: 5, rx_things: 7 };
        let json = serde_json::to_value(Flat(declared)).unwrap();
        assert_eq!(json, serde_json::json!({ "widgets": 3, "tx_things": 5, "rx_things": 7 }));
        let back: Flat<Declared> = serde_json::from_value(serde_json::json!({ "widgets": 3, "other": "x" })).unwrap();
        assert_eq!(back.0, Declared { widgets: 3, ..Declared::default() }, "unknown keys are left, missing ones are 0");

        #[derive(Debug)]
        struct One(Declared);
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let mut families = CounterFamilies::of::<Declared>("braid_test_");
                families.push(&vec![("edge", "e")], &self.0);
                families.write(&mut encoder)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(declared)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let scrape = parse(&text);
        assert_eq!(value(&scrape, "braid_test_widgets", &[("edge", "e")]), 3.0);
        assert_eq!(value(&scrape, "braid_test_things", &[("edge", "e"), ("direction", "tx")]), 5.0);
        assert_eq!(value(&scrape, "braid_test_things", &[("edge", "e"), ("direction", "rx")]), 7.0);
        assert!(text.contains("# HELP braid_test_things tx: Things sent. rx: Things received."), "{text}");
    }

    /// Every counter the engine declares for a session and a link is served, with its value.
    #[test]
    fn every_engine_counter_of_a_session_and_its_links_is_served() {
        let status = edge_status();
        let scrape = parse(&encode(Some(&status), "edge"));
        let edge = [("edge", "van \"1\"")];
        let session = status.edges()[0].session.as_ref().unwrap();
        for (def, expected) in session.counters.entries() {
            let family = format!("braid_session_{}", def.metric);
            assert_eq!(value(&scrape, &family, &edge), expected as f64, "{family}");
        }
        for (def, expected) in session.links[0].counters.entries() {
            let family = format!("braid_link_{}", def.metric);
            let mut labels = vec![edge[0], ("link", "dsl")];
            labels.extend(def.direction.map(|d| ("direction", d)));
            assert_eq!(value(&scrape, &family, &labels), expected as f64, "{family} {labels:?}");
        }
    }
}
