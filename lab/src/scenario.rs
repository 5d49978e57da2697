//! The lab's scenarios as data: one [`Scenario`] value says what runs (mode, latency budget,
//! the three uplinks' profiles, the stream, a timeline of actions, the windows measured after
//! events) and what it must show (its bounds). The same value drives both backends: the netns lab
//! (`scripts/lab.sh`, through `braid-labtool plan`) and, for scenarios whose stream and actions
//! it models, the seeded simulator ([`crate::sim`], feature `sim`).
//!
//! Figures are named once, the same in both backends: `sent`, `lost`, `dup`, `reordered`,
//! `app_lost` (the lab's only: iperf3's server),
//! `max_gap_ms`, `loss_pct`, `extra_pct`, and for each window `W`: `gap_after_W_ms` (the
//! longest stall that began in it), `sent_after_W` and `lost_after_W` (by send time).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use braid_engine::{FecConfig, Mode};

use crate::Profile;

/// The lab's uplinks, in order: what each scenario's `links` profiles are given to.
pub const UPLINKS: [&str; 3] = ["dsl", "lte-good", "lte-bad"];

/// The presets' rates added up (20 + 10 + 8 Mbit/s): what bonding can at best carry.
pub const SUM_MBPS: f64 = 38.0;

/// iperf3's UDP payload in the lab's streams, in bytes.
pub const DATAGRAM: usize = 1200;

/// A scripted change to the network, at a time from the stream's start. Uplinks are numbered
/// from 0 in [`UPLINKS`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// The uplink's interface loses carrier.
    CarrierDown(u8),
    /// Carrier returns (and the modem's default route with it).
    CarrierUp(u8),
    /// Everything on the uplink is dropped; carrier stays up.
    Blackhole(u8),
    /// The blackhole ends.
    Restore(u8),
    /// The ISP's NAT forgets its mapping: the uplink's next packet leaves from a new port.
    Rebind(u8),
    /// The uplink's impairment changes to a profile (`braid-impair`'s `preset=NAME key=value`).
    SetProfile(u8, &'static str),
    /// Blackholed for 200 ms and restored for 200 ms, `times` over. The packets the edge sent on
    /// the link meanwhile are the figure `flap_packets`.
    Flap {
        /// The uplink.
        link: u8,
        /// How many blackhole/restore cycles.
        times: u32,
    },
    /// The gateway is killed (SIGKILL) and started again.
    KillGateway,
    /// The first gateway of a pair loses its daemon for good (SIGKILL): under keepalived
    /// ([`Topology::VrrpPair`]) the virtual IP moves to the other one; with a standby
    /// ([`Topology::StandbyPair`]) the edge moves the stream to it.
    KillMaster,
    /// The internet stops reaching the first gateway of a pair, which keeps running.
    CutFirstGateway,
    /// The internet reaches it again.
    RestoreFirstGateway,
    /// `braid-gateway drain` on the pair's first gateway.
    DrainFirstGateway,
    /// An attacker on the internet sends garbage, replayed tunnel packets and handshake
    /// initiations at the gateway's port for 10 s.
    Attack,
}

impl Action {
    /// The lab's verb and arguments for it (`scripts/lab.sh` runs `act_VERB ARGS`).
    pub fn verb(&self) -> String {
        let n = |l: &u8| u32::from(*l) + 1;
        match self {
            Self::CarrierDown(l) => format!("carrier_down {}", n(l)),
            Self::CarrierUp(l) => format!("carrier_up {}", n(l)),
            Self::Blackhole(l) => format!("blackhole {}", n(l)),
            Self::Restore(l) => format!("restore {}", n(l)),
            Self::Rebind(l) => format!("rebind {}", n(l)),
            Self::SetProfile(l, p) => format!("set_profile {} {}", n(l), p.replace(' ', ",")),
            Self::Flap { link, times } => format!("flap {} {times}", n(link)),
            Self::KillGateway => "kill_gateway".to_owned(),
            Self::KillMaster => "kill_master".to_owned(),
            Self::CutFirstGateway => "cut_first_gateway".to_owned(),
            Self::RestoreFirstGateway => "restore_first_gateway".to_owned(),
            Self::DrainFirstGateway => "drain_first_gateway".to_owned(),
            Self::Attack => "attack".to_owned(),
        }
    }

    /// Whether the simulator models it (a gateway restart or takeover and an attack need the
    /// real daemons; the engine's gateway redundancy has simulations of its own in
    /// `tests/gateways.rs`).
    pub const fn simulated(&self) -> bool {
        !matches!(
            self,
            Self::KillGateway
                | Self::KillMaster
                | Self::CutFirstGateway
                | Self::RestoreFirstGateway
                | Self::DrainFirstGateway
                | Self::Attack
        )
    }
}

/// What traffic the scenario measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stream {
    /// iperf3 UDP of [`DATAGRAM`]-byte datagrams at a rate, camera to ingest, with ping beside it.
    Udp {
        /// Mbit/s of UDP payload.
        mbps: f64,
        /// Seconds.
        secs: u32,
    },
    /// A measurement of its own in `scripts/lab.sh` (`measure_NAME`): TCP, video or path MTU.
    /// The simulator does not run these.
    Custom,
}

/// The link topology a scenario needs beside the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Three uplinks through `braid-impair`.
    #[default]
    Impaired,
    /// Plain veths instead of the impairment, and a direct routed path beside the tunnel.
    DirectBeside,
    /// Impaired, and the first seconds of tunnel traffic captured for an attacker to replay.
    Captured,
    /// Impaired, with two gateways under keepalived (VRRPv3) sharing the virtual IP the edge is
    /// given, both bridged into the ingest switch.
    VrrpPair,
    /// Impaired, with two gateways, each with its own address and key, that the edge lists
    /// (`gateways:`): the first carries the stream, the second is its standby; both are bridged
    /// into the ingest switch.
    StandbyPair,
    /// Its own: three etcd members, three gateways in a fleet and six rigs of two NATed uplinks
    /// each, built and measured by `braid-labtool fleet`.
    Fleet,
    /// Its own: one gateway, a namespace of many rigs in one process (`braid-labtool rigs`) and
    /// an ingest host, built and measured by `braid-labtool many-rigs`.
    ManyRigs,
}

/// A stretch of the run measured on its own, in seconds from the stream's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Its name in figures: `gap_after_NAME_ms`, `sent_after_NAME`, `lost_after_NAME`.
    pub name: &'static str,
    /// From (inclusive).
    pub from: f64,
    /// To (exclusive).
    pub to: f64,
    /// An uplink whose return after the window is measured: `back_after_NAME_ms`, from the
    /// window's end until the edge has it `up` (0 if it already is); and, if the edge took it
    /// down inside the window, `down_after_NAME_ms`, from the window's start.
    pub link: Option<u8>,
}

/// How a figure is tested.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// At most a number.
    AtMost(f64),
    /// At least a number.
    AtLeast(f64),
    /// Exactly a number.
    Equals(f64),
    /// At least this share of the datagrams the stream's rate sends in its time.
    ShareOfStream(f64),
    /// Greater than another figure.
    Above(&'static str),
    /// At most another figure.
    AtMostFigure(&'static str),
    /// The text contains a word.
    Contains(&'static str),
    /// The text is one of these.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of `n` numbers, each within `[lo, hi]`.
    EachWithin {
        /// How many numbers.
        n: usize,
        /// Least.
        lo: f64,
        /// Most.
        hi: f64,
    },
}

/// A bound on one figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The figure's name.
    pub figure: &'static str,
    /// The test.
    pub test: Test,
}

const fn at_most(figure: &'static str, v: f64) -> Bound {
    Bound { figure, test: Test::AtMost(v) }
}
const fn at_least(figure: &'static str, v: f64) -> Bound {
    Bound { figure, test: Test::AtLeast(v) }
}
const fn zero(figure: &'static str) -> Bound {
    Bound { figure, test: Test::Equals(0.0) }
}
/// At least 95% of the datagrams the stream should send: a stream that never started cannot pass
/// for a lossless one.
const SENT_IN_FULL: Bound = Bound { figure: "sent", test: Test::ShareOfStream(0.95) };

/// A bound the scenario is measured against but not yet held to, with why it is not met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// The bound.
    pub bound: Bound,
    /// Why it is not met (yet, or at all).
    pub why: &'static str,
}

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Its name (`scripts/lab.sh run NAME`).
    pub name: &'static str,
    /// One line on what it shows.
    pub describe: &'static str,
    /// The tunnel's mode.
    pub mode: Mode,
    /// The latency budget, ms.
    pub budget_ms: u64,
    /// Each uplink's profile, in [`UPLINKS`] order (`braid-impair`'s `preset=NAME key=value`).
    pub links: [&'static str; 3],
    /// The network around the tunnel.
    pub topology: Topology,
    /// The traffic.
    pub stream: Stream,
    /// What happens when, in seconds from the stream's start.
    pub timeline: &'static [(f64, Action)],
    /// The stretches measured on their own.
    pub windows: &'static [Window],
    /// What every run must show, in both backends (a backend that does not measure a figure
    /// reports it as not measured).
    pub bounds: &'static [Bound],
    /// What it should show and does not yet: reported, not asserted.
    pub goals: &'static [Goal],
    /// Why its bounds fail on some simulated seed while the lab holds them, if they do: what the
    /// simulation shows. The simulation test fails if this is wrong either way.
    pub fails_in_simulation: Option<&'static str>,
    /// Whether the edge's bitrate feed is recorded through the stream (`feed_samples`).
    pub feed: bool,
    /// Which uplinks are metered (`uplinks[].metered`); their bytes are then recorded through
    /// the stream (`byte_samples`).
    pub metered: [bool; 3],
    /// Figures printed with the verdict and not tested (each run's record holds every figure).
    pub reported: &'static [&'static str],
    /// The edge's `gateway_return_after_s`, if the scenario sets it (with two gateways).
    pub return_after_s: Option<u32>,
    /// The edge's forward error correction (`fec:`), if the scenario turns it on.
    pub fec: Option<FecConfig>,
}

/// 50 rigs through one gateway of one worker (`braid-labtool many-rigs`).
const MANY_RIGS: Scenario = Scenario {
    name: "many-rigs",
    describe: "50 rigs of two links at 2 Mbit/s each through one gateway",
    topology: Topology::ManyRigs,
    mode: Mode::Bond,
    stream: Stream::Custom,
    // Each rig is the engine's edge with its own key, sockets and handshake (all in one
    // `braid-labtool rigs` process); after 3 s to connect, each offers 2 Mbit/s of 1242-byte
    // frames for 15 s (3,020 frames) to a sink on the ingest host, which counts each rig's
    // distinct sequences: lost is what was offered and never arrived, whether the tunnel
    // refused it (refused) or lost it on the way. The gateway's CPU over the run is reported,
    // as a share of one core and per Gbit/s delivered.
    bounds: &[
        Bound { figure: "connected", test: Test::OneOf(&["50"]) },
        at_least("offered_min", 2868.0),
        zero("refused"),
        zero("lost"),
        zero("dup"),
        zero("panicked"),
    ],
    reported: &[
        "delivered_mbps",
        "gateway_cpu_pct",
        "gateway_cpu_s_per_gbit",
        "rigs_cpu_pct",
        "rigs_cpu_s_per_gbit",
        "rigs_with_loss",
        "lost_max",
        "offered",
        "send_errors",
        "workers",
        "handshakes_forwarded",
        "sessions",
    ],
    ..BASE
};

const FIELD: [&str; 3] = ["preset=dsl", "preset=lte-good", "preset=lte-bad"];

/// A carrier cut, a blackhole, both back, a NAT rebind.
const CUTS: &[(f64, Action)] = &[
    (5.0, Action::CarrierDown(0)),
    (10.0, Action::Blackhole(1)),
    (15.0, Action::CarrierUp(0)),
    (15.0, Action::Restore(1)),
    (20.0, Action::Rebind(2)),
];

/// The stall each of [`CUTS`]' events causes: the one that begins in the second after it.
const CUT_WINDOWS: &[Window] = &[
    Window { name: "carrier", from: 5.0, to: 6.0, link: None },
    Window { name: "blackhole", from: 10.0, to: 11.0, link: None },
    Window { name: "restore", from: 15.0, to: 16.0, link: None },
    Window { name: "rebind", from: 20.0, to: 21.0, link: None },
];

/// Five +500 ms delay spikes of 1 to 2 s on `lte-good`, as LTE handovers and scheduling cause.
const SPIKE: &str = "preset=lte-good delay_ms=540";
/// The spikes' timeline, after any actions given first.
macro_rules! spikes {
    ($($first:expr),*) => {
        &[
            $($first,)*
            (4.0, Action::SetProfile(1, SPIKE)),
            (5.0, Action::SetProfile(1, FIELD[1])),
            (9.0, Action::SetProfile(1, SPIKE)),
            (11.0, Action::SetProfile(1, FIELD[1])),
            (14.0, Action::SetProfile(1, SPIKE)),
            (15.5, Action::SetProfile(1, FIELD[1])),
            (19.0, Action::SetProfile(1, SPIKE)),
            (20.0, Action::SetProfile(1, FIELD[1])),
            (24.0, Action::SetProfile(1, SPIKE)),
            (26.0, Action::SetProfile(1, FIELD[1])),
        ]
    };
}
const SPIKES: &[(f64, Action)] = spikes!();
/// The same, with `dsl` out of carrier from the start: two links left.
const SPIKES_WITHOUT_DSL: &[(f64, Action)] = spikes!((0.0, Action::CarrierDown(0)));
/// Each spike, with `lte-good`'s return after it.
const SPIKE_WINDOWS: &[Window] = &[
    Window { name: "spike1", from: 4.0, to: 5.0, link: Some(1) },
    Window { name: "spike2", from: 9.0, to: 11.0, link: Some(1) },
    Window { name: "spike3", from: 14.0, to: 15.5, link: Some(1) },
    Window { name: "spike4", from: 19.0, to: 20.0, link: Some(1) },
    Window { name: "spike5", from: 24.0, to: 26.0, link: Some(1) },
];

const NOTHING_LOST: [Bound; 3] = [zero("lost"), zero("dup"), zero("reordered")];

/// One TCP stream over three unimpaired, uncapped links, the direct path (kernel routing) beside
/// it as the reference.
const UNCAPPED: Scenario =
    Scenario { links: ["preset=clean"; 3], topology: Topology::DirectBeside, stream: Stream::Custom, ..BASE };

/// The least goodput one stream over [`UNCAPPED`] links may show on a 2-core machine, and below
/// the direct path's.
const UNCAPPED_GOODPUT: [Bound; 2] =
    [at_least("goodput_mbps", 200.0), Bound { figure: "direct_goodput_mbps", test: Test::Above("goodput_mbps") }];

const BASE: Scenario = Scenario {
    name: "",
    describe: "",
    mode: Mode::Redundant,
    budget_ms: 500,
    links: FIELD,
    topology: Topology::Impaired,
    stream: Stream::Udp { mbps: 4.0, secs: 30 },
    timeline: &[],
    windows: &[],
    bounds: &[],
    goals: &[],
    fails_in_simulation: None,
    feed: false,
    metered: [false; 3],
    reported: &[],
    return_after_s: None,
    fec: None,
};

/// Every scenario, in the order `scripts/lab.sh list` shows them.
pub static ALL: &[Scenario] = &[
    Scenario {
        name: "baseline",
        describe: "iperf3 through the tunnel and beside it, unimpaired links: what the tunnel costs",
        // The most ping latency a build may show besides.
        bounds: &[UNCAPPED_GOODPUT[0], UNCAPPED_GOODPUT[1], at_most("p99_ms", 10.0)],
        reported: &["tcp_cc"],
        ..UNCAPPED
    },
    Scenario {
        name: "bond-uncapped",
        describe: "one TCP stream through bond and beside it, unimpaired links: the most one flow gets through",
        // As baseline, with one copy of each frame: what a single flow's goodput costs in the
        // tunnel's own work, on a 2-core machine that also runs the links and both ends.
        mode: Mode::Bond,
        bounds: &UNCAPPED_GOODPUT,
        reported: &["goodput_ratio", "p50_ms", "p99_ms", "tcp_cc"],
        ..UNCAPPED
    },
    Scenario {
        name: "redundant-cuts",
        describe: "the demo's timeline: a carrier cut, a blackhole, both back, a NAT rebind; nothing may be lost",
        timeline: CUTS,
        windows: CUT_WINDOWS,
        bounds: &[at_least("sent", 12_000.0), NOTHING_LOST[0], NOTHING_LOST[1], NOTHING_LOST[2]],
        ..BASE
    },
    Scenario {
        name: "active-backup-cuts",
        describe: "active-backup through a blackholed and a cut primary, and a flapping one",
        mode: Mode::ActiveBackup,
        timeline: &[
            (5.0, Action::CarrierDown(0)),
            (10.0, Action::Blackhole(1)),
            (15.0, Action::CarrierUp(0)),
            (15.0, Action::Restore(1)),
            (20.0, Action::Rebind(2)),
            (22.0, Action::Flap { link: 0, times: 12 }),
        ],
        windows: &[
            Window { name: "carrier", from: 5.0, to: 6.0, link: None },
            // lte-good carries from the carrier cut on; the edge must take it down and move the
            // stream (and what it swallowed) to lte-bad.
            Window { name: "blackhole", from: 10.0, to: 11.0, link: Some(1) },
            Window { name: "restore", from: 15.0, to: 16.0, link: None },
            Window { name: "rebind", from: 20.0, to: 21.0, link: None },
        ],
        bounds: &[
            at_most("down_after_blackhole_ms", 300.0),
            at_most("gap_after_carrier_ms", 100.0),
            // Probes, replies and reports come to ~40 packets a second over the flap's 4.8 s;
            // the stream alone is ~420 a second.
            at_most("flap_packets", 600.0),
        ],
        goals: &[Goal {
            bound: at_most("gap_after_blackhole_ms", 300.0),
            why: "lte-bad carries alone after the blackhole; a burst that takes a re-sent copy costs one more of its \
                  round trips (~170 ms): 4 of 40 simulated seeds stall past 300 ms (FEC's to cover)",
        }],
        ..BASE
    },
    Scenario {
        name: "ffmpeg-redundant",
        describe: "ffmpeg over UDP and SRT through the cuts: no continuity errors, no freezes",
        stream: Stream::Custom,
        timeline: CUTS,
        bounds: &[
            zero("cc_errors"),
            zero("freezes"),
            // Every frame sent is decoded: over SRT, the sender connects before the picture
            // starts and stays for SRT's latency after it ends (scripts/lab.sh, ffmpeg_stream).
            zero("missing_frames"),
            // SRT's set-up through the tunnel (0 over UDP).
            at_most("connect_ms", 2000.0),
        ],
        ..BASE
    },
    Scenario {
        name: "gateway-restart",
        describe: "the gateway is killed and restarted mid-stream: the edge comes back by itself",
        stream: Stream::Udp { mbps: 4.0, secs: 14 },
        timeline: &[(6.0, Action::KillGateway)],
        windows: &[Window { name: "restart", from: 6.0, to: 7.0, link: None }],
        // The new process answers the old session's data with its "no such session" token, the
        // edge handshakes at once and re-sends what the old one may not have delivered, which
        // the ingest may see twice (dup, reported).
        bounds: &[at_most("resumed_after_listen_ms", 100.0), zero("lost"), at_most("gap_after_restart_ms", 2000.0)],
        reported: &["dup"],
        ..BASE
    },
    Scenario {
        name: "vrrp-pair",
        describe: "two gateways share a virtual IP under keepalived; the master's gateway is killed",
        topology: Topology::VrrpPair,
        stream: Stream::Udp { mbps: 4.0, secs: 12 },
        timeline: &[(5.0, Action::KillMaster)],
        windows: &[Window { name: "takeover", from: 5.0, to: 6.0, link: None }],
        // keepalived tracks the master's TAP, which dies with its gateway, and hands over with a
        // priority-0 advert (vrrp_ms, reported); gw2's gateway, on the same key, answers the
        // edge's data with "no such session" and the edge handshakes again and re-sends
        // (resumed_after_vrrp_ms, reported).
        // The edge announces the camera's address through the new gateway, so the ingest's
        // pings find it behind gw2 at once (down_gap_ms).
        bounds: &[at_most("gap_after_takeover_ms", 1000.0), zero("lost"), at_most("down_gap_ms", 1000.0)],
        reported: &["vrrp_ms", "resumed_after_vrrp_ms", "dup"],
        ..BASE
    },
    Scenario {
        name: "gateway-failover",
        describe: "the edge lists two gateways; the one carrying the stream is killed",
        topology: Topology::StandbyPair,
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 12 },
        timeline: &[(5.0, Action::KillMaster)],
        windows: &[Window { name: "takeover", from: 5.0, to: 6.0, link: None }],
        // The edge's session with the standby is up and probed before the kill; once the first
        // gateway answers on no uplink it moves the stream there with what the first may not
        // have delivered (dup, reported), and announces the camera through it, so the ingest's
        // pings find it behind gw2 at once (down_gap_ms).
        bounds: &[at_most("gap_after_takeover_ms", 300.0), zero("lost"), at_most("down_gap_ms", 300.0)],
        reported: &["takeover_ms", "dup"],
        ..BASE
    },
    Scenario {
        name: "gateway-failover-ffmpeg",
        describe: "an MPEG-TS stream (ffmpeg, 6 Mbit/s over UDP) while the gateway carrying it is killed",
        topology: Topology::StandbyPair,
        mode: Mode::Auto,
        stream: Stream::Custom,
        timeline: &[(5.0, Action::KillMaster)],
        // What the dead gateway may not have delivered goes to the standby: no frame is
        // missing, and the ~0.2 s stall is within a decoder's buffer (no freeze).
        bounds: &[zero("freezes"), zero("missing_frames")],
        reported: &["dup_frames"],
        goals: &[Goal {
            bound: zero("cc_errors"),
            why: "the frames a killed gateway delivered after its last report reached the edge are sent again \
                  through the standby, and a TS datagram seen twice breaks the continuity counters: at 6 Mbit/s \
                  about 3 datagrams per 10 ms of report lag, which no edge can tell from the lost ones",
        }],
        ..BASE
    },
    Scenario {
        name: "gateway-partition",
        describe: "the internet stops reaching the gateway carrying the stream, then reaches it again",
        topology: Topology::StandbyPair,
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 14 },
        timeline: &[(5.0, Action::CutFirstGateway), (8.0, Action::RestoreFirstGateway)],
        windows: &[Window { name: "takeover", from: 5.0, to: 6.0, link: None }],
        // As gateway-failover, and the first gateway, back, stays a standby: the stream does not
        // move back (active_gateway, takeovers) and the first gateway puts nothing of the rig's
        // on the ingest LAN from a second after the cut on, once what it held is out
        // (first_delivered_after_cut), and, told it is a standby, its bridge forgets the rig's
        // addresses (first_bridge_rig_entries).
        bounds: &[
            at_most("gap_after_takeover_ms", 300.0),
            zero("lost"),
            at_most("down_gap_ms", 300.0),
            Bound { figure: "active_gateway", test: Test::OneOf(&["second"]) },
            Bound { figure: "takeovers", test: Test::OneOf(&["1"]) },
            zero("first_delivered_after_cut"),
            zero("first_bridge_rig_entries"),
        ],
        reported: &["takeover_ms", "dup"],
        ..BASE
    },
    Scenario {
        name: "gateway-drain",
        describe: "`braid-gateway drain` on the gateway carrying the stream",
        topology: Topology::StandbyPair,
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 12 },
        timeline: &[(5.0, Action::DrainFirstGateway)],
        windows: &[Window { name: "drain", from: 5.0, to: 6.0, link: None }],
        // The edge hears the drain on the next probe and moves make-before-break: the frames not
        // yet sent go to the standby, the first gateway delivers what it was sent and answers
        // its NAKs, so nothing is lost or repeated; takeover_ms (reported) is from the command
        // to the move. The drained gateway, a standby now, forgets the rig's addresses on its
        // bridge (first_bridge_rig_entries).
        bounds: &[
            at_most("gap_after_drain_ms", 50.0),
            zero("lost"),
            zero("dup"),
            at_most("down_gap_ms", 300.0),
            zero("first_bridge_rig_entries"),
        ],
        reported: &["takeover_ms"],
        ..BASE
    },
    Scenario {
        name: "gateway-return",
        describe: "the gateway carrying the stream is cut off and comes back: the stream returns after the hold-down",
        topology: Topology::StandbyPair,
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 24 },
        timeline: &[(4.0, Action::CutFirstGateway), (6.0, Action::RestoreFirstGateway)],
        windows: &[Window { name: "return", from: 9.0, to: 24.0, link: None }],
        return_after_s: Some(5),
        // The stream moves to the standby at the cut; the first gateway, back at 6 s, answers
        // again once its uplinks are probed up (at the standby's pace), and 5 s of hold-down
        // later the stream returns to it make-before-break: a short stall at most
        // (gap_after_return_ms), nothing lost from 9 s on (lost_after_return), and the first
        // gateway carries it at the end. The cut's own takeover is gateway-partition's to hold;
        // here its losses are reported with the run's (lost). returned_after_restore_ms
        // (reported) is from the restore to the move back.
        bounds: &[
            zero("lost_after_return"),
            at_most("gap_after_return_ms", 50.0),
            Bound { figure: "active_gateway", test: Test::OneOf(&["first"]) },
            Bound { figure: "takeovers", test: Test::OneOf(&["2"]) },
        ],
        reported: &["returned_after_restore_ms", "lost", "dup"],
        ..BASE
    },
    Scenario {
        name: "fleet",
        describe: "three gateways in a fleet on a three-member etcd, six rigs; a gateway killed, etcd lost and back, a forged redirect",
        topology: Topology::Fleet,
        stream: Stream::Custom,
        // Each rig streams 2 Mbit/s of 1200-byte UDP for 75 s (15,625 datagrams; iperf3's server
        // counts them) with a 10 ms ping beside it. The first `fleet add-edge` is allowed on
        // all three gateways within a second (admit_ms); the rigs, started 2.5 s apart, are
        // placed 2/2/2. An attacker holding the address of rig 1's gateway sends it forged
        // placements onto another pinned gateway (sealed with a random key under a captured
        // session index) and replays of captured packets: every one is dropped while it runs
        // (attack_rejected: failed to open, replays, too old), none is followed, the stream does
        // not move. The gateway carrying rig 6 is SIGKILLed: its two
        // rigs take over on their standbys (moved_stall_ms, their longest ping silence) and
        // the fleet ends 3/3. One etcd member stops (still reachable), then all three (every
        // gateway reports it), then all come back. The killed gateway returns and gets rigs
        // back one at a time until 2/2/2, all while the streams run (phases_done_s). No rig's
        // iperf3 server misses a datagram (iperf_lost), and every rig's pings are answered
        // (ping_loss_max_pct: a rig whose way back broke would lose them for as long).
        bounds: &[
            at_most("admit_ms", 1000.0),
            Bound { figure: "placement", test: Test::EachWithin { n: 3, lo: 2.0, hi: 2.0 } },
            Bound { figure: "attack_sent", test: Test::AtMostFigure("attack_rejected") },
            at_least("attack_sent", 1200.0),
            Bound { figure: "edge_drops_during_attack", test: Test::Contains("open_failed") },
            zero("forged_followed"),
            Bound { figure: "forged_moved", test: Test::OneOf(&["no"]) },
            Bound { figure: "victim_rigs", test: Test::OneOf(&["2"]) },
            Bound { figure: "after_kill", test: Test::EachWithin { n: 2, lo: 3.0, hi: 3.0 } },
            at_most("moved_stall_ms", 300.0),
            Bound { figure: "etcd_one_down_reachable", test: Test::OneOf(&["yes"]) },
            Bound { figure: "etcd_all_down_reported", test: Test::OneOf(&["yes"]) },
            Bound { figure: "etcd_back", test: Test::OneOf(&["yes"]) },
            Bound { figure: "placement_after_return", test: Test::EachWithin { n: 3, lo: 2.0, hi: 2.0 } },
            at_most("returned_step_max", 1.0),
            zero("iperf_lost"),
            Bound { figure: "iperf_packets_each", test: Test::EachWithin { n: 6, lo: 14_844.0, hi: 15_700.0 } },
            at_most("ping_loss_max_pct", 1.0),
            at_most("phases_done_s", 70.0),
            zero("panicked"),
        ],
        reported: &[
            "forged_sent",
            "replayed_sent",
            "victim",
            "returned_edges_over_time",
            "iperf_lost_each",
            "ping_stall_ms_each",
        ],
        ..BASE
    },
    MANY_RIGS,
    Scenario {
        name: "many-rigs-workers",
        describe: "many-rigs through a gateway of two workers",
        // As many-rigs, with the gateway's `workers: 2`: each rig's session lives on the worker
        // its key hashes to, the kernel steers each datagram by its session index, and worker 0
        // hands the other's initiations over (handshakes_forwarded). A datagram steered to the
        // wrong worker finds no session there and is lost, so lost = 0 over 50 rigs says the
        // steering holds.
        bounds: &[
            Bound { figure: "workers", test: Test::OneOf(&["2"]) },
            Bound { figure: "sessions", test: Test::OneOf(&["50"]) },
            at_least("handshakes_forwarded", 1.0),
            Bound { figure: "connected", test: Test::OneOf(&["50"]) },
            at_least("offered_min", 2868.0),
            zero("lost"),
            zero("refused"),
            zero("dup"),
            zero("panicked"),
        ],
        reported: &[
            "delivered_mbps",
            "gateway_cpu_pct",
            "gateway_cpu_s_per_gbit",
            "rigs_cpu_pct",
            "rigs_cpu_s_per_gbit",
            "rigs_with_loss",
            "lost_max",
            "offered",
            "send_errors",
        ],
        ..MANY_RIGS
    },
    Scenario {
        name: "workers-gain",
        describe: "50 rigs at 28 Mbit/s each through a gateway of one worker and of two, in turns",
        // Two rounds of a run with `workers: 1` then one with `workers: 2`, 10 s each: what each
        // delivered, its loss and the gateway's CPU per Gbit/s, and the ratio of the mean
        // delivered. The 1.4 Gbit/s offered is more than either carries on a 2-core machine, so
        // what each delivers is what it can carry.
        bounds: &[
            Bound { figure: "workers", test: Test::OneOf(&["2"]) },
            Bound { figure: "connected_each", test: Test::EachWithin { n: 4, lo: 50.0, hi: 50.0 } },
        ],
        goals: &[Goal {
            bound: at_least("workers_ratio", 1.7),
            why: "a second worker adds no core: the rigs' generator runs on the same two cores as the gateway \
                  (rigs_cpu_pct), so two workers can gain at most what the machine leaves idle with one \
                  (docs/lab.md)",
        }],
        reported: &[
            "rigs",
            "mbps_each",
            "rounds",
            "delivered_mbps_one",
            "lost_pct_one",
            "gateway_cpu_s_per_gbit_one",
            "rigs_cpu_pct_one",
            "delivered_mbps_many",
            "lost_pct_many",
            "gateway_cpu_s_per_gbit_many",
            "rigs_cpu_pct_many",
        ],
        ..MANY_RIGS
    },
    Scenario {
        name: "hostile",
        describe: "an attacker replays and floods the gateway's port during a stream",
        topology: Topology::Captured,
        stream: Stream::Udp { mbps: 4.0, secs: 20 },
        timeline: &[(5.0, Action::Attack)],
        bounds: &[
            zero("lost"),
            Bound { figure: "gateway_alive", test: Test::OneOf(&["yes"]) },
            Bound { figure: "gateway_drops", test: Test::Contains("bad_header") },
            Bound { figure: "gateway_drops", test: Test::Contains("replay") },
            Bound { figure: "gateway_drops", test: Test::Contains("unknown_peer") },
        ],
        ..BASE
    },
    Scenario {
        name: "flap",
        describe: "a link flapping every 200 ms under redundant mode",
        stream: Stream::Udp { mbps: 4.0, secs: 16 },
        timeline: &[(4.0, Action::Flap { link: 0, times: 25 })],
        bounds: &NOTHING_LOST,
        ..BASE
    },
    Scenario {
        name: "mtu",
        describe: "1420-byte paths: each link finds its path MTU, and a 1500-byte packet with DF crosses",
        links: ["preset=dsl mtu=1420", "preset=lte-good mtu=1420", "preset=lte-bad mtu=1420"],
        stream: Stream::Custom,
        bounds: &[
            zero("ping_1500_df_loss_pct"),
            // The largest UDP payload a 1420-byte IPv4 path carries is 1392 bytes; the search
            // must end on it or at most 8 bytes below.
            Bound { figure: "probed_datagram", test: Test::EachWithin { n: 3, lo: 1384.0, hi: 1392.0 } },
        ],
        goals: &[Goal {
            bound: at_least("of_ceiling", 0.97),
            why: "one CUBIC stream fills lte-good's queue: the edge refuses frames at its entry once that queue \
                  has stood past its limit for 200 ms, and at times the link's 200 ms queue overflows first \
                  (braid-impair dropped 6 and 113 of some 8,400 frames in two runs), which braid repairs by NAK \
                  and TCP sees as a round trip's stall rather than a loss",
        }],
        reported: &["tcp_cc", "goodput_share"],
        ..BASE
    },
    Scenario {
        name: "bond-tcp",
        describe: "one and four TCP streams over bond: their share of the links' sum",
        mode: Mode::Bond,
        stream: Stream::Custom,
        goals: &[
            Goal {
                bound: at_least("of_ceiling1", 0.90),
                why: "one CUBIC stream is held by its congestion window (tcp_window1): bond's drops at the entry, \
                      where a link's queue stands, cost it about 400 retransmissions in 15 s, and its frames ride \
                      links of 15, 40 and 70 ms, which swing its smoothed RTT between about 60 and 170 ms",
            },
            Goal {
                bound: at_least("of_ceiling4", 0.97),
                why: "the links' congestion control leaves lte-bad, under its burst loss, short of its 8 Mbit/s (a \
                      rate of 3.6-8.5 Mbit/s under one stream, seed 1), and what it does not carry the others have \
                      no room for",
            },
        ],
        reported: &["tcp_cc", "share1", "share4", "tcp_window1", "tcp_rtt1_min_ms", "tcp_rtt1_max_ms"],
        ..BASE
    },
    Scenario {
        name: "bond-latency",
        describe: "bond's added latency at the 99th percentile against the links' delay spread",
        mode: Mode::Bond,
        stream: Stream::Udp { mbps: 28.0, secs: 15 },
        bounds: &[SENT_IN_FULL],
        goals: &[Goal {
            bound: Bound { figure: "added_p99_ms", test: Test::AtMostFigure("bound_ms") },
            why: "most of the datagrams over the bound are sent in the stream's first seconds, while the links' rates \
                  are still being found; after that, each burst loss on lte-bad holds the stream for a re-sent copy, a \
                  round trip past the bound",
        }],
        ..BASE
    },
    Scenario {
        name: "bond-udp-loss",
        describe: "bond over links with 2% random loss: what is lost and what it costs",
        mode: Mode::Bond,
        links: ["preset=dsl loss=0.02", "preset=lte-good loss=0.02", "preset=lte-bad loss=0.02"],
        stream: Stream::Udp { mbps: 28.5, secs: 20 },
        bounds: &[SENT_IN_FULL, at_most("loss_pct", 0.01), at_most("extra_pct", 12.0)],
        ..BASE
    },
    Scenario {
        name: "bond-fec-loss",
        describe: "bond at 40% of the sum over links with 2% random loss, with forward error correction: a lost frame is rebuilt before its NAK could return",
        mode: Mode::Bond,
        links: ["preset=dsl loss=0.02", "preset=lte-good loss=0.02", "preset=lte-bad loss=0.02"],
        stream: Stream::Udp { mbps: 15.0, secs: 15 },
        fec: Some(FecConfig { block: 16, parity: 2, max_delay: Duration::from_millis(10) }),
        bounds: &[
            SENT_IN_FULL,
            at_most("loss_pct", 0.01),
            Bound { figure: "added_p99_ms", test: Test::AtMostFigure("bound_ms") },
            at_most("extra_pct", 20.0),
        ],
        reported: &["gw_rebuilt", "gw_recovered", "fec_pct"],
        ..BASE
    },
    Scenario {
        // Cutting `dsl` (20 Mbit/s) would leave less than the stream: the cuts leave it, and
        // never two links out at once.
        name: "bond-cut",
        describe: "bond through a carrier cut and a blackhole",
        mode: Mode::Bond,
        budget_ms: 300,
        stream: Stream::Udp { mbps: 19.0, secs: 20 },
        timeline: &[(5.0, Action::CarrierDown(2)), (10.0, Action::CarrierUp(2)), (15.0, Action::Blackhole(1))],
        windows: &[
            Window { name: "carrier", from: 5.0, to: 10.0, link: None },
            Window { name: "restore", from: 10.0, to: 15.0, link: None },
            Window { name: "blackhole", from: 15.0, to: 21.0, link: None },
        ],
        bounds: &[
            SENT_IN_FULL,
            zero("lost_after_carrier"),
            // 19 Mbit/s for the last 5 s, less 5%.
            at_least("sent_after_blackhole", 19.0e6 / (DATAGRAM as f64 * 8.0) * 5.0 * 0.95),
            at_most("loss_pct_after_blackhole", 0.01),
        ],
        ..BASE
    },
    Scenario {
        name: "fec-burst",
        // auto's duplicates on spare capacity already hold these bounds without the correction
        // (lab and simulation): this shows the two together cost the stream nothing.
        describe: "auto with forward error correction, and bursts of about ten consecutive losses on the link that carries the stream about once a second: nothing lost, the added p99 within the links' spread plus 30 ms",
        mode: Mode::Auto,
        links: ["preset=dsl burst=0.002,0.1,1", "preset=lte-good", "preset=lte-bad"],
        stream: Stream::Udp { mbps: 6.0, secs: 15 },
        fec: Some(FecConfig { block: 16, parity: 2, max_delay: Duration::from_millis(10) }),
        bounds: &[SENT_IN_FULL, zero("lost"), Bound { figure: "added_p99_ms", test: Test::AtMostFigure("bound_ms") }],
        reported: &["gw_rebuilt", "gw_recovered", "fec_pct", "extra_pct"],
        ..BASE
    },
    Scenario {
        name: "auto-cut",
        describe: "auto mode (the default) through the cuts",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 30 },
        timeline: CUTS,
        windows: CUT_WINDOWS,
        bounds: &[SENT_IN_FULL],
        goals: &[Goal { bound: zero("lost"), why: "a cut sometimes loses frames sent just before it is noticed" }],
        ..BASE
    },
    Scenario {
        name: "lte-spikes",
        describe: "five +500 ms delay spikes of 1-2 s on lte-good under auto: a spike is not an outage",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 30 },
        timeline: SPIKES,
        windows: SPIKE_WINDOWS,
        bounds: &[
            SENT_IN_FULL,
            zero("lost"),
            at_most("max_gap_ms", 50.0),
            // Back in use within 1.5 s of each spike's end.
            at_most("back_after_spike1_ms", 1500.0),
            at_most("back_after_spike2_ms", 1500.0),
            at_most("back_after_spike3_ms", 1500.0),
            at_most("back_after_spike4_ms", 1500.0),
            at_most("back_after_spike5_ms", 1500.0),
        ],
        ..BASE
    },
    Scenario {
        name: "lte-spikes-two-links",
        describe: "the same spikes with dsl out of carrier: two links left, lte-good spiking",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 30 },
        timeline: SPIKES_WITHOUT_DSL,
        windows: SPIKE_WINDOWS,
        bounds: &[SENT_IN_FULL],
        goals: &[
            Goal {
                bound: zero("lost"),
                why: "at the first spike lte-bad's rate may not yet have grown to the stream, and the edge then \
                      drops at its entry what it cannot carry (edge_drops over_capacity: 7 frames in 1 of 5 lab \
                      runs)",
            },
            Goal {
                bound: at_most("max_gap_ms", 150.0),
                why: "during a spike lte-bad carries the stream alone, and a frame its bursty loss takes is \
                  repaired by a NAK over lte-bad and a re-sent copy over it: two of its one-way delays \
                  (70 ms ± 25 each, 140 ms on average) after the loss is noticed, so most repairs stall \
                  the stream 150-200 ms; only redundancy sent ahead (FEC) can cover such a loss sooner",
            },
        ],
        ..BASE
    },
    Scenario {
        name: "bitrate-feed",
        describe: "the edge's bitrate feed through a cut of dsl and its return, against what the uplinks carry",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 30 },
        timeline: &[(10.0, Action::CarrierDown(0)), (20.0, Action::CarrierUp(0))],
        bounds: &[
            SENT_IN_FULL,
            // Every second, under what the uplinks that had carrier in it deliver.
            zero("feed_over_capacity"),
            // Down within a second of the cut, and up again after dsl's return.
            at_most("feed_down_ms", 1000.0),
            at_most("feed_back_ms", 5000.0),
        ],
        feed: true,
        reported: &["feed_mbps", "capacity_mbps"],
        ..BASE
    },
    Scenario {
        name: "metered",
        describe: "auto mode through the cuts with both LTE links metered: duplicates go on dsl, not on LTE",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 6.0, secs: 30 },
        timeline: CUTS,
        metered: [false, true, true],
        reported: &["link_mbytes", "extra_pct"],
        bounds: &[
            SENT_IN_FULL,
            zero("lost"),
            // The metered uplinks' bytes while dsl is up, as a share of the stream's.
            at_most("metered_share", 0.10),
        ],
        ..BASE
    },
    Scenario {
        name: "auto-overload",
        describe: "auto mode offered 90% of the links' sum",
        mode: Mode::Auto,
        stream: Stream::Udp { mbps: 34.2, secs: 20 },
        bounds: &[SENT_IN_FULL, at_least("share", 0.85)],
        ..BASE
    },
];

/// The scenario of that name.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

impl Scenario {
    /// The uplinks' profiles, parsed.
    ///
    /// # Errors
    /// A profile that does not parse (a scenario test catches it).
    pub fn profiles(&self) -> Result<[Profile; 3], crate::ProfileError> {
        Ok([Profile::parse(self.links[0])?, Profile::parse(self.links[1])?, Profile::parse(self.links[2])?])
    }

    /// Whether its bounds or goals name the latency bonding adds (`added_p99_ms`): the lab then
    /// measures each link's round trip alone before the stream.
    pub fn measures_latency(&self) -> bool {
        self.bounds.iter().chain(self.goals.iter().map(|g| &g.bound)).any(|b| b.figure == "added_p99_ms")
    }

    /// Why the simulator cannot run it, or `None` if it can.
    pub fn unsimulated(&self) -> Option<String> {
        if self.stream == Stream::Custom {
            return Some("its measurement (TCP, video or path MTU) needs real clients".to_owned());
        }
        let actions: Vec<String> =
            self.timeline.iter().filter(|(_, a)| !a.simulated()).map(|(_, a)| format!("{a:?}")).collect();
        (!actions.is_empty()).then(|| format!("the simulator does not model {}", actions.join(", ")))
    }

    /// What the uplinks that carry at `t` seconds from the stream's start deliver, Mbit/s, as
    /// their profiles' rates: summed in bond and auto, the least in redundant mode, the most in
    /// active-backup. An uplink carries unless the timeline has taken its carrier or
    /// blackholed it.
    pub fn capacity_mbps(&self, t: f64) -> f64 {
        let Ok(profiles) = self.profiles() else { return 0.0 };
        let rates = (0..3u8)
            .filter(|&l| self.carrying(l, t))
            .filter_map(|l| profiles[usize::from(l)].rate_bps)
            .map(|bps| bps as f64 / 1e6);
        match self.mode {
            Mode::Bond | Mode::Auto => rates.sum(),
            Mode::Redundant => rates.reduce(f64::min).unwrap_or(0.0),
            Mode::ActiveBackup => rates.fold(0.0, f64::max),
        }
    }

    /// The instants of `[from, to]` at which what the timeline sets can differ: both ends, and
    /// each action's time in `(from, to]`.
    fn instants(&self, from: f64, to: f64) -> impl Iterator<Item = f64> + '_ {
        [from, to].into_iter().chain(self.timeline.iter().map(|(t, _)| *t).filter(move |t| *t > from && *t <= to))
    }

    /// Whether uplink `link` carries at `t` seconds from the stream's start: unless the timeline
    /// has taken its carrier or blackholed it.
    pub fn carrying(&self, link: u8, t: f64) -> bool {
        self.timeline.iter().filter(|(at, _)| *at <= t).fold(true, |up, (_, action)| match *action {
            Action::CarrierDown(l) | Action::Blackhole(l) if l == link => false,
            Action::CarrierUp(l) | Action::Restore(l) if l == link => true,
            _ => up,
        })
    }

    /// The stream's duration, s (0 for a custom measurement).
    pub fn secs(&self) -> u32 {
        match self.stream {
            Stream::Udp { secs, .. } => secs,
            Stream::Custom => 0,
        }
    }

    /// Shell assignments for `scripts/lab.sh`: the mode, budget, topology, link profiles,
    /// stream, timeline (`EVENTS`, `SECONDS:VERB ARGS`) and windows (`NAME:FROM:TO`).
    pub fn plan(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let list = |items: Vec<String>| items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(" ");
        let (rate, secs) = match self.stream {
            Stream::Udp { mbps, secs } => (format!("{mbps}M"), secs),
            Stream::Custom => (String::new(), 0),
        };
        let topology = match self.topology {
            Topology::Impaired => "impaired",
            Topology::DirectBeside => "direct",
            Topology::Captured => "captured",
            Topology::VrrpPair => "vrrp-pair",
            Topology::StandbyPair => "standby-pair",
            Topology::Fleet => "fleet",
            Topology::ManyRigs => "many-rigs",
        };
        format!(
            "MODE={}\nBUDGET={}\nTOPOLOGY={topology}\nLINKS=({})\nRATE={rate}\nSECS={secs}\nEVENTS=({})\nWINDOWS=({})\nMETERED=({})\nRETURN_AFTER={}\nFEC={}\nLATENCY={}\n",
            self.mode.as_str(),
            self.budget_ms,
            list(self.links.iter().map(|l| (*l).to_owned()).collect()),
            list(self.timeline.iter().map(|(t, a)| format!("{t}:{}", a.verb())).collect()),
            list(self.windows.iter().map(|w| format!("{}:{}:{}", w.name, w.from, w.to)).collect()),
            self.metered.iter().map(|&m| u8::from(m).to_string()).collect::<Vec<_>>().join(" "),
            self.return_after_s.map_or(String::new(), |s| s.to_string()),
            self.fec.map_or(String::new(), |f| format!("{}:{}:{}", f.block, f.parity, f.max_delay.as_millis())),
            u8::from(self.measures_latency()),
        )
    }

    /// The datagrams its stream sends in full.
    pub fn datagrams(&self) -> f64 {
        match self.stream {
            Stream::Udp { mbps, secs } => mbps * 1e6 / (DATAGRAM as f64 * 8.0) * f64::from(secs),
            Stream::Custom => 0.0,
        }
    }

    /// Tests every bound (and goal) against a run's figures. A lab run that checked its
    /// impairment (`impair_check`) is also held to it: figures from traffic that bypassed the
    /// emulated links would prove nothing. A run that has the receiving application's own loss
    /// (`app_lost`, iperf3's server) is measured against losing no more than the capture on the
    /// ingest LAN shows (`lost`), as a goal: the engine paces what a gap held, but a default
    /// socket buffer holds about 30 ms of a 28 Mbit/s stream, and a receiver descheduled that long
    /// on a busy host overflows it whatever the tunnel does.
    pub fn check(&self, figures: &Figures) -> Checked {
        const IMPAIRED: Bound = Bound { figure: "impair_check", test: Test::OneOf(&["ok"]) };
        const APP_LOSES_NO_MORE: Bound = Bound { figure: "app_lost", test: Test::AtMostFigure("lost") };
        let test = |b: &Bound| Outcome {
            bound: *b,
            value: figures.text(b.figure).map(str::to_owned),
            pass: b.holds(self, figures),
        };
        let checked_impairment = figures.text(IMPAIRED.figure).is_some().then_some(&IMPAIRED);
        let app_loss = figures.number(APP_LOSES_NO_MORE.figure).is_some().then_some(&APP_LOSES_NO_MORE);
        Checked {
            bounds: self.bounds.iter().chain(checked_impairment).map(test).collect(),
            goals: self.goals.iter().map(|g| &g.bound).chain(app_loss).map(test).collect(),
        }
    }
}

impl Bound {
    /// Whether the figures hold it: `None` if the figure (or the one it is compared with) was
    /// not measured.
    pub fn holds(&self, scenario: &Scenario, figures: &Figures) -> Option<bool> {
        let text = figures.text(self.figure)?;
        let number = || figures.number(self.figure);
        Some(match self.test {
            Test::AtMost(v) => number()? <= v,
            Test::AtLeast(v) => number()? >= v,
            Test::Equals(v) => number()? == v,
            Test::ShareOfStream(share) => number()? >= scenario.datagrams() * share,
            Test::Above(other) => number()? > figures.number(other)?,
            Test::AtMostFigure(other) => number()? <= figures.number(other)?,
            Test::Contains(word) => text.split([',', '=', ':']).any(|w| w == word),
            Test::OneOf(words) => words.contains(&text),
            Test::EachWithin { n, lo, hi } => {
                let values: Vec<Option<f64>> = text.split(',').map(|v| v.parse().ok()).collect();
                values.len() == n && values.iter().all(|v| v.is_some_and(|v| (lo..=hi).contains(&v)))
            }
        })
    }
}

/// A bound's number as a reader wants it: no more than three decimals, none trailing.
fn num(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.figure;
        let v = |v: f64| num(v);
        match self.test {
            Test::AtMost(n) => write!(f, "{name} ≤ {}", v(n)),
            Test::AtLeast(n) => write!(f, "{name} ≥ {}", v(n)),
            Test::Equals(n) => write!(f, "{name} = {}", v(n)),
            Test::ShareOfStream(s) => write!(f, "{name} ≥ {s} of the stream's datagrams"),
            Test::Above(other) => write!(f, "{name} > {other}"),
            Test::AtMostFigure(other) => write!(f, "{name} ≤ {other}"),
            Test::Contains(word) => write!(f, "{name} has {word}"),
            Test::OneOf(words) => write!(f, "{name} is {}", words.join(" or ")),
            Test::EachWithin { n, lo, hi } => write!(f, "{name}: {n} values, each {}..={}", v(lo), v(hi)),
        }
    }
}

/// One bound tested.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The bound.
    pub bound: Bound,
    /// The figure's value, if measured.
    pub value: Option<String>,
    /// Whether it held; `None` if not measured.
    pub pass: Option<bool>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.pass {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "not measured",
        };
        write!(f, "{} ({}): {mark}", self.bound, self.value.as_deref().unwrap_or("-"))
    }
}

/// When (seconds from the stream's start at the epoch `start`) the timeline's event at `offset`
/// took hold, from the lab's record of impairment changes (`(offset, epoch)` pairs, from
/// `braid-impair`'s own word); `offset` itself if the record has none for it.
pub fn took_hold(applied: &[(f64, f64)], start: f64, offset: f64) -> f64 {
    applied.iter().find(|(o, _)| (o - offset).abs() < 1e-3).map_or(offset, |(_, at)| at - start)
}

/// How long after `start` (ms) a link went down, from its state changes (seconds from the
/// stream's start, new state); `None` if it did not before `until`.
pub fn down_after(changes: &[(f64, &str)], start: f64, until: f64) -> Option<f64> {
    changes.iter().find(|(t, s)| *t >= start && *t < until && *s == "down").map(|(t, _)| (t - start) * 1000.0)
}

/// How long after `end` (seconds from the stream's start) a link was back `up`, in ms, from its
/// state changes (seconds from the stream's start, and the state's name, in time order; `up`
/// before the first). 0 if it was up at `end`; until `run_end` if it never came back.
pub fn back_after(changes: &[(f64, &str)], end: f64, run_end: f64) -> f64 {
    let at_end = changes.iter().rev().find(|(t, _)| *t <= end).map_or("up", |(_, s)| *s);
    if at_end == "up" {
        return 0.0;
    }
    let back = changes.iter().find(|(t, s)| *t > end && *s == "up").map_or(run_end, |(t, _)| *t);
    (back - end) * 1000.0
}

/// A run's bounds and goals, tested.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The bounds, in the scenario's order.
    pub bounds: Vec<Outcome>,
    /// The goals, in the scenario's order.
    pub goals: Vec<Outcome>,
}

impl Checked {
    /// Every bound held. A backend that must measure every figure (the lab) also fails on one
    /// not measured; the simulator passes over those it does not model.
    pub fn pass(&self, every_figure: bool) -> bool {
        self.bounds.iter().all(|o| o.pass.unwrap_or(!every_figure))
    }

    /// The verdict in words: `PASS: ...` or `FAIL: ...`, naming each bound and its figure.
    pub fn verdict(&self, every_figure: bool) -> String {
        let list = |o: &[Outcome]| o.iter().map(Outcome::to_string).collect::<Vec<_>>().join("; ");
        let mut out = if self.pass(every_figure) { "PASS: " } else { "FAIL: " }.to_owned();
        out +=
            &if self.bounds.is_empty() { "no bounds (figures reported only)".to_owned() } else { list(&self.bounds) };
        if !self.goals.is_empty() {
            out += &format!(" | goals, reported: {}", list(&self.goals));
        }
        out
    }
}

/// A run's figures by name, as text (a figure that could not be measured is absent).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures(pub BTreeMap<String, String>);

impl Figures {
    /// The figures of a `RESULT key=value ...` line (values `-` are figures not measured).
    pub fn from_result_line(line: &str) -> Self {
        let body = line.trim().strip_prefix("RESULT").unwrap_or(line);
        Self(
            body.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter(|(_, v)| *v != "-" && !v.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// Sets a figure.
    pub fn set(&mut self, name: &str, value: impl fmt::Display) {
        self.0.insert(name.to_owned(), value.to_string());
    }

    /// A figure's text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A figure as a number.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.text(name)?.parse().ok()
    }

    /// Samples (`T:V[:V...],...`, seconds from the stream's start and the values then); a
    /// sample that does not parse is left out.
    fn samples(&self, name: &str) -> Option<Vec<(f64, Vec<f64>)>> {
        let parse = |(t, v): (&str, &str)| {
            Some((t.parse().ok()?, v.split(':').map(|b| b.parse().ok()).collect::<Option<_>>()?))
        };
        Some(self.text(name)?.split(',').filter_map(|s| s.split_once(':')).filter_map(parse).collect())
    }

    /// A list of numbers (`a,b,c`), if every item is one.
    fn numbers(&self, name: &str) -> Option<Vec<f64>> {
        self.text(name)?.split(',').map(|v| v.parse().ok()).collect()
    }

    /// Sets a figure that is a ratio, `None` (not measured) when the divisor is not positive.
    fn set_ratio(&mut self, name: &str, a: Option<f64>, b: Option<f64>, decimals: usize) {
        if let (Some(a), Some(b)) = (a, b)
            && b > 0.0
        {
            self.set(name, format!("{:.decimals$}", a / b));
        }
    }

    /// Adds the figures computed from the measured ones, the same for both backends and every
    /// scenario that measured their inputs:
    /// * `X_mbps` from each `X_bps`, `X_ms` from each `X_us`;
    /// * `loss_pct`, and `loss_pct_after_W` for each window, from `lost` and `sent`;
    /// * `extra_pct` from the edge's `data_bytes_extra` and `data_bytes_first`, and `fec_pct`
    ///   (of them, recovery shards) from its `fec_bytes`;
    /// * `goodput_mbps` from the `unique` datagrams received over the sender's `sender_secs`,
    ///   and `share` of [`SUM_MBPS`] for a UDP stream;
    /// * TCP: `wire_ceiling` (the most goodput the headers leave for `tcp_mss`: MSS / (MSS + 146),
    ///   see docs/lab.md), `goodput_ratio` (through the tunnel over `direct_goodput_mbps`),
    ///   `share1`/`share4` of [`SUM_MBPS`], `of_ceiling1`/`of_ceiling4`, `ratio_to_single`,
    ///   `goodput_share` of `link_rate_mbps` and `of_ceiling`;
    /// * latency: `link_owd_ms` (half of each `link_rtt_p50_ms`), `spread_ms`, `bound_ms`
    ///   ([`owd_bound`]) and `added_p99_ms` (`owd_p99_ms` above the fastest link's delay);
    /// * `flap_packets` from `flap_tx_before`/`flap_tx_after`, `missing_frames` from
    ///   `expected_frames` and `frames`, and `gateway_drops` merged from the gateway's own
    ///   (`gateway_drops_endpoint`) and its sessions' (`gateway_drops_session`).
    pub fn derive(&mut self, scenario: &Scenario) {
        let raw: Vec<(String, String)> = self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (name, value) in &raw {
            let Ok(v) = value.parse::<f64>() else { continue };
            if let Some(base) = name.strip_suffix("_bps") {
                self.set(&format!("{base}_mbps"), format!("{:.1}", v / 1e6));
            } else if let Some(base) = name.strip_suffix("_us") {
                self.set(&format!("{base}_ms"), format!("{:.1}", v / 1e3));
            }
        }
        let pct = |lost: Option<f64>, sent: Option<f64>| match (lost, sent) {
            (Some(l), Some(s)) if s > 0.0 => Some(format!("{:.4}", l * 100.0 / s)),
            _ => None,
        };
        if let Some(p) = pct(self.number("lost"), self.number("sent")) {
            self.set("loss_pct", p);
        }
        for w in scenario.windows {
            let lost = self.number(&format!("lost_after_{}", w.name));
            if let Some(p) = pct(lost, self.number(&format!("sent_after_{}", w.name))) {
                self.set(&format!("loss_pct_after_{}", w.name), p);
            }
        }
        if self.text("extra_pct").is_none() {
            let (extra, first) = (self.number("data_bytes_extra"), self.number("data_bytes_first"));
            self.set_ratio("extra_pct", extra.map(|e| e * 100.0), first, 2);
        }
        if self.text("fec_pct").is_none() {
            let (fec, first) = (self.number("fec_bytes"), self.number("data_bytes_first"));
            self.set_ratio("fec_pct", fec.map(|e| e * 100.0), first, 2);
        }
        if self.text("goodput_mbps").is_none() {
            let bits = self.number("unique").map(|u| u * DATAGRAM as f64 * 8.0 / 1e6);
            self.set_ratio("goodput_mbps", bits, self.number("sender_secs"), 2);
        }
        let goodput = self.number("goodput_mbps");
        if let Stream::Udp { .. } = scenario.stream {
            self.set_ratio("share", goodput, Some(SUM_MBPS), 3);
        }
        if let Some(mss) = self.number("tcp_mss").filter(|m| *m > 0.0) {
            let ceiling = mss / (mss + 146.0);
            self.set("wire_ceiling", format!("{ceiling:.3}"));
            if self.text("goodput4_mbps").is_some() {
                self.set_ratio("of_ceiling1", goodput, Some(SUM_MBPS * ceiling), 3);
                self.set_ratio("of_ceiling4", self.number("goodput4_mbps"), Some(SUM_MBPS * ceiling), 3);
            }
            let rate = self.number("link_rate_mbps");
            self.set_ratio("of_ceiling", goodput, rate.map(|r| r * ceiling), 3);
        }
        self.set_ratio("goodput_ratio", goodput, self.number("direct_goodput_mbps"), 3);
        if scenario.stream == Stream::Custom && self.text("goodput4_mbps").is_some() {
            self.set_ratio("share1", goodput, Some(SUM_MBPS), 3);
            self.set_ratio("share4", self.number("goodput4_mbps"), Some(SUM_MBPS), 3);
        }
        self.set_ratio("ratio_to_single", goodput, self.number("single_mbps"), 3);
        self.set_ratio("goodput_share", goodput, self.number("link_rate_mbps"), 2);
        if let Some(rtts) = self.numbers("link_rtt_p50_ms") {
            let owds: Vec<String> = rtts.iter().map(|r| format!("{:.1}", r / 2.0)).collect();
            self.set("link_owd_ms", owds.join(","));
            if let Some(bound) = owd_bound(&rtts) {
                self.set("spread_ms", format!("{:.1}", bound.spread_ms));
                self.set("bound_ms", format!("{:.1}", bound.bound_ms));
                if let Some(p99) = self.number("owd_p99_ms") {
                    self.set("added_p99_ms", format!("{:.1}", p99 - bound.fastest_ms));
                }
            }
        }
        if let Some(rtts) = self.numbers("link_rtt_p99_ms") {
            let owds: Vec<String> = rtts.iter().map(|r| format!("{:.1}", r / 2.0)).collect();
            self.set("link_owd_p99_ms", owds.join(","));
        }
        if let (Some(before), Some(after)) = (self.number("flap_tx_before"), self.number("flap_tx_after")) {
            self.set("flap_packets", after - before);
        }
        if let (Some(expected), Some(frames)) = (self.number("expected_frames"), self.number("frames")) {
            self.set("missing_frames", expected - frames);
        }
        let mut drops: BTreeMap<String, u64> = BTreeMap::new();
        for list in ["gateway_drops_endpoint", "gateway_drops_session"].iter().filter_map(|k| self.text(k)) {
            for (reason, n) in list.split(',').filter_map(|kv| kv.split_once(':')) {
                *drops.entry(reason.to_owned()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
        if !drops.is_empty() {
            let merged: Vec<String> = drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
            self.set("gateway_drops", merged.join(","));
        }
        if let Some(samples) = self.samples("byte_samples") {
            self.set_metered(scenario, &samples);
        }
        if let Some(samples) = self.samples("feed_samples") {
            let samples: Vec<(f64, f64)> = samples.into_iter().filter_map(|(t, v)| Some((t, *v.first()?))).collect();
            self.set_feed(scenario, &samples);
        }
    }

    /// The metered uplinks' figures from each uplink's bytes sent, sampled through the stream
    /// (seconds from its start, bytes per uplink):
    /// * `link_mbytes`: each uplink's megabytes sent over the stream;
    /// * `metered_share`: the metered uplinks' bytes over the stretches between samples in which
    ///   every unmetered uplink carried throughout, as a share of the stream's bytes in them.
    fn set_metered(&mut self, scenario: &Scenario, samples: &[(f64, Vec<f64>)]) {
        let Stream::Udp { mbps, .. } = scenario.stream else { return };
        let free_carries = |from: f64, to: f64| {
            (0..3u8)
                .filter(|&l| !scenario.metered[usize::from(l)])
                .all(|l| scenario.instants(from, to).all(|t| scenario.carrying(l, t)))
        };
        let (mut metered, mut secs) = (0.0, 0.0);
        for pair in samples.windows(2) {
            let ((from, a), (to, b)) = (&pair[0], &pair[1]);
            if *from < 0.0 || *to > f64::from(scenario.secs()) || a.len() != b.len() || !free_carries(*from, *to) {
                continue;
            }
            secs += to - from;
            metered +=
                (0..a.len()).filter(|&i| scenario.metered.get(i) == Some(&true)).map(|i| b[i] - a[i]).sum::<f64>();
        }
        if secs > 0.0 {
            self.set("metered_share", format!("{:.4}", metered / (mbps * 1e6 / 8.0 * secs)));
        }
        if let (Some((_, first)), Some((_, last))) = (samples.first(), samples.last()) {
            let mbytes: Vec<String> = first.iter().zip(last).map(|(a, b)| format!("{:.1}", (b - a) / 1e6)).collect();
            self.set("link_mbytes", mbytes.join(","));
        }
    }

    /// The bitrate feed's figures from its samples (seconds from the stream's start, bit/s),
    /// set against what the uplinks with carrier deliver ([`Scenario::capacity_mbps`]):
    /// * `feed_mbps` and `capacity_mbps`, at the end of each second: the feed in effect, and the
    ///   most the uplinks delivered in that second (a cut is allowed a second to show);
    /// * `feed_over_capacity`: the seconds the feed stood above it;
    /// * `feed_down_ms`: from each carrier loss until the feed is at most what is left (the
    ///   longest);
    /// * `feed_back_ms`: from each carrier return until the feed is above what the uplinks
    ///   carried without it, at the engine's advised share (the longest; the rest of the run if
    ///   it never is).
    fn set_feed(&mut self, scenario: &Scenario, samples: &[(f64, f64)]) {
        let secs = f64::from(scenario.secs());
        let at = |t: f64| samples.iter().rev().find(|(s, _)| *s <= t).map_or(0.0, |(_, v)| *v / 1e6);
        let (mut feed, mut capacity, mut over) = (Vec::new(), Vec::new(), 0);
        for s in 1..=scenario.secs() {
            let (from, to) = (f64::from(s) - 1.0, f64::from(s));
            let most = scenario.instants(from, to).map(|t| scenario.capacity_mbps(t)).fold(0.0, f64::max);
            over += usize::from(at(to) > most);
            feed.push(format!("{:.1}", at(to)));
            capacity.push(format!("{most:.1}"));
        }
        self.set("feed_mbps", feed.join(","));
        self.set("capacity_mbps", capacity.join(","));
        self.set("feed_over_capacity", over);
        let first_after = |from: f64, holds: &dyn Fn(f64) -> bool| {
            std::iter::once(from)
                .chain(samples.iter().map(|(t, _)| *t).filter(|t| *t > from))
                .find(|t| holds(at(*t)))
                .map_or((secs - from) * 1e3, |t| (t - from) * 1e3)
        };
        let mut down: Option<f64> = None;
        let mut back: Option<f64> = None;
        for &(t, action) in scenario.timeline {
            match action {
                Action::CarrierDown(_) | Action::Blackhole(_) => {
                    let left = scenario.capacity_mbps(t + 1e-3);
                    down = Some(down.unwrap_or(0.0).max(first_after(t, &|v| v <= left)));
                }
                Action::CarrierUp(_) | Action::Restore(_) => {
                    let before = scenario.capacity_mbps(t - 1e-3) * braid_engine::session::SAFE_BITRATE_SHARE;
                    back = Some(back.unwrap_or(0.0).max(first_after(t, &|v| v > before)));
                }
                _ => {}
            }
        }
        if let Some(ms) = down {
            self.set("feed_down_ms", format!("{ms:.0}"));
        }
        if let Some(ms) = back {
            self.set("feed_back_ms", format!("{ms:.0}"));
        }
    }
}

/// The bound on the latency bonding adds (`bond-latency`), from each link's round trip measured
/// alone: one-way delays are half of them; the bound is their spread plus 30 ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OwdBound {
    /// The fastest link's one-way delay, ms.
    pub fastest_ms: f64,
    /// The slowest less the fastest, ms.
    pub spread_ms: f64,
    /// What bonding may add at the 99th percentile, ms.
    pub bound_ms: f64,
}

impl OwdBound {
    /// The one-way delay past which a datagram added more than the bound, ms.
    pub fn limit_ms(&self) -> f64 {
        self.fastest_ms + self.bound_ms
    }
}

/// The bound for links with these round trips (ms); `None` without any.
pub fn owd_bound(link_rtts_ms: &[f64]) -> Option<OwdBound> {
    let owds = link_rtts_ms.iter().map(|r| r / 2.0);
    let fastest = owds.clone().min_by(f64::total_cmp)?;
    let slowest = owds.max_by(f64::total_cmp)?;
    let spread = slowest - fastest;
    Some(OwdBound { fastest_ms: fastest, spread_ms: spread, bound_ms: spread + 30.0 })
}

/// The nearest-rank percentiles 50 and 99 of ping's round trips (`time=X ms` in its output).
pub fn ping_percentiles(output: &str) -> Option<(f64, f64)> {
    let mut times: Vec<f64> = output.split_whitespace().filter_map(|w| w.strip_prefix("time=")?.parse().ok()).collect();
    times.sort_by(f64::total_cmp);
    let rank = |p: f64| times.get(((times.len() as f64 * p).ceil() as usize).clamp(1, times.len().max(1)) - 1).copied();
    Some((rank(0.5)?, rank(0.99)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_named_once_and_its_profiles_and_timeline_are_sound() {
        let mut names = std::collections::BTreeSet::new();
        for s in ALL {
            assert!(names.insert(s.name), "{} is named twice", s.name);
            assert!(!s.describe.is_empty(), "{} has no description", s.name);
            s.profiles().unwrap_or_else(|e| panic!("{}: {e}", s.name));
            for (t, a) in s.timeline {
                assert!(*t >= 0.0 && *t < f64::from(s.secs().max(30)), "{}: {a:?} at {t} s is outside the run", s.name);
                if let Action::SetProfile(_, p) = a {
                    Profile::parse(p).unwrap_or_else(|e| panic!("{}: {e}", s.name));
                }
            }
            assert!(s.timeline.windows(2).all(|p| p[0].0 <= p[1].0), "{}: the timeline is out of order", s.name);
            for w in s.windows {
                assert!(w.from < w.to, "{}: window {} is empty", s.name, w.name);
            }
            assert!(!s.bounds.is_empty() || !s.goals.is_empty(), "{} asserts nothing", s.name);
        }
    }

    #[test]
    fn a_plan_is_shell_assignments_with_verbs_and_windows() {
        let plan = find("redundant-cuts").expect("exists").plan();
        assert!(plan.contains("MODE=redundant\nBUDGET=500\n"), "{plan}");
        assert!(
            plan.contains(
                "EVENTS=('5:carrier_down 1' '10:blackhole 2' '15:carrier_up 1' '15:restore 2' '20:rebind 3')"
            ),
            "{plan}"
        );
        assert!(plan.contains("WINDOWS=('carrier:5:6' "), "{plan}");
        assert!(plan.contains("RATE=4M\nSECS=30\n"), "{plan}");
    }

    #[test]
    fn bounds_pass_fail_or_are_not_measured() {
        let s = find("redundant-cuts").expect("exists");
        let mut f = Figures::from_result_line("RESULT scenario=x sent=15000 lost=0 dup=0 reordered=- p99_ms=3");
        let checked = s.check(&f);
        assert_eq!(
            checked.bounds.iter().map(|o| o.pass).collect::<Vec<_>>(),
            [Some(true), Some(true), Some(true), None]
        );
        assert!(checked.pass(false) && !checked.pass(true), "{}", checked.verdict(true));
        f.set("reordered", 2);
        let verdict = s.check(&f).verdict(false);
        assert!(verdict.starts_with("FAIL: ") && verdict.contains("reordered = 0 (2): FAILED"), "{verdict}");
    }

    #[test]
    fn tcp_latency_and_drop_figures_are_derived_from_what_was_measured() {
        let tcp = find("bond-tcp").expect("exists");
        let mut f = Figures::from_result_line(
            "RESULT goodput_bps=27500000 goodput4_bps=30600000 single_bps=17600000 tcp_mss=1348 tcp_rtt1_us=61234",
        );
        f.derive(tcp);
        let got = |k: &str| f.text(k).unwrap_or("-").to_owned();
        assert_eq!(
            (got("goodput_mbps"), got("share1"), got("share4")),
            ("27.5".into(), "0.724".into(), "0.805".into())
        );
        assert_eq!(
            (got("wire_ceiling"), got("of_ceiling1"), got("ratio_to_single")),
            ("0.902".into(), "0.802".into(), "1.562".into())
        );
        assert_eq!(got("tcp_rtt1_ms"), "61.2");
        let mut f = Figures::from_result_line("RESULT goodput_bps=8600000 link_rate_mbps=10 tcp_mss=1284");
        f.derive(find("mtu").expect("exists"));
        let got = |k: &str| f.text(k).map(str::to_owned);
        assert_eq!(
            (got("goodput_share"), got("of_ceiling"), got("of_ceiling1")),
            (Some("0.86".into()), Some("0.958".into()), None)
        );
        let latency = find("bond-latency").expect("exists");
        let mut f = Figures::from_result_line("RESULT link_rtt_p50_ms=31.0,80.0,141.0 owd_p99_ms=150.5");
        f.derive(latency);
        assert_eq!(f.text("link_owd_ms"), Some("15.5,40.0,70.5"));
        assert_eq!(
            (f.text("spread_ms"), f.text("bound_ms"), f.text("added_p99_ms")),
            (Some("55.0"), Some("85.0"), Some("135.0"))
        );
        assert_eq!(owd_bound(&[31.0, 80.0, 141.0]).map(|b| b.limit_ms()), Some(100.5));
        let mut f = Figures::from_result_line(
            "RESULT gateway_drops_endpoint=bad_header:5,unknown_peer:2 gateway_drops_session=replay:9,bad_header:1",
        );
        f.derive(find("hostile").expect("exists"));
        assert_eq!(f.text("gateway_drops"), Some("bad_header=6,replay=9,unknown_peer=2"));
        let mut f = Figures::from_result_line(
            "RESULT sent=100 lost=0 unique=71250 sender_secs=20.0 data_bytes_extra=5 data_bytes_first=200",
        );
        f.derive(find("auto-overload").expect("exists"));
        assert_eq!(
            (f.text("goodput_mbps"), f.text("share"), f.text("extra_pct")),
            (Some("34.20"), Some("0.900"), Some("2.50"))
        );
    }

    #[test]
    fn ping_percentiles_are_nearest_rank() {
        let out =
            "64 bytes from x: icmp_seq=1 ttl=64 time=3.1 ms\n64 bytes: time=1.0 ms\n time=2.0 ms\nrtt min/avg = 1/2";
        assert_eq!(ping_percentiles(out), Some((2.0, 3.1)));
        assert_eq!(ping_percentiles("100% packet loss"), None);
    }

    #[test]
    fn a_link_is_back_when_it_is_next_up_after_the_window() {
        let changes = [(4.3, "down"), (4.9, "probing"), (5.6, "degraded"), (6.2, "up"), (9.2, "down")];
        assert_eq!(back_after(&changes, 5.0, 30.0).round(), 1200.0);
        assert_eq!(back_after(&changes, 7.0, 30.0), 0.0);
        assert_eq!(back_after(&changes, 3.0, 30.0), 0.0);
        assert_eq!(back_after(&changes, 10.0, 30.0).round(), 20_000.0);
    }

    #[test]
    fn a_window_starts_when_its_impairment_took_hold() {
        let applied = [(10.0, 1_000_010.15), (15.0, 1_000_015.02)];
        assert!((took_hold(&applied, 1_000_000.0, 10.0) - 10.15).abs() < 1e-6);
        assert!((took_hold(&applied, 1_000_000.0, 15.0) - 15.02).abs() < 1e-6);
        assert_eq!(took_hold(&applied, 1_000_000.0, 5.0), 5.0);
        assert_eq!(took_hold(&[], 1_000_000.0, 10.0), 10.0);
    }

    #[test]
    fn derived_figures_are_computed_once_from_the_measured_ones() {
        let s = find("bond-cut").expect("exists");
        let mut f =
            Figures::from_result_line("RESULT sent=49000 lost=4 sent_after_blackhole=10000 lost_after_blackhole=1");
        f.derive(s);
        assert_eq!(f.text("loss_pct"), Some("0.0082"));
        assert_eq!(f.text("loss_pct_after_blackhole"), Some("0.0100"));
        assert_eq!(s.check(&f).bounds[3].pass, Some(true));
        let words = Figures::from_result_line(
            "RESULT gateway_drops=bad_header=3,replay=9,unknown_peer=1 gateway_alive=yes lost=0",
        );
        assert!(find("hostile").expect("exists").check(&words).pass(false));
    }
}
