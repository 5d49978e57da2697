#!/usr/bin/env bash
# braid's lab: a field rig and a datacenter in network namespaces on this machine, real clients
# (iperf3, ffmpeg, srt-live-transmit, ping) through the tunnel, uplinks impaired and cut on a
# schedule, and one RESULT line per scenario.
#
#   scripts/lab.sh demo        the README's demo: redundant mode over 3 impaired uplinks, one cut,
#                              one blackholed, both restored; live link state; a result table
#   scripts/lab.sh list        the scenarios
#   scripts/lab.sh run NAME... run scenarios (each ends with a RESULT line)
#   scripts/lab.sh repeat N NAME...
#                              run each scenario N times, with seeds 1..N, and print the tally
#                              (a failed run's directory is kept as RUN-failed-NAME-SEED)
#   scripts/lab.sh up | down   build the topology and leave it running | tear it down
#
# Topology (every address lives in namespaces this script creates; all are removed on exit):
#   cam ─ br-lan ─ braid0 [edge] ═ upN ─ [ispN: braid-impair ta⇄tb, NAT] ─ inet ─ [gw] braid-rig ─ br-ing ─ ing
#                                                                  attacker ─┘
# With PAIR=1, a second gateway gw2 beside gw: both on one segment of inet (bridge brw), sharing
# the virtual IP under keepalived (VRRPv3), both bridged into the ingest switch (ing's eth0 is a
# bridge then). With PAIR=2, the same, but each gateway has its own address and key and the edge
# lists both (`gateways:`): gw carries the stream, gw2 is its standby.
# Needs root. Impairment is braid-impair (userspace, seeded): this kernel has no netem.
#
# Environment: SEED (impairment seed, default 1); LAB_PREFIX and LAB_RUN (namespace prefix and
# scratch directory, so two labs can coexist; a second lab with a prefix in use refuses to
# start); BIN (prebuilt binaries: skips the build);
# LAB_TCP_CC (the congestion control of every TCP stream the camera sends, rather than the
# machine's default, so that a TCP figure means the same on every machine: cubic, Linux's and
# Windows' default, unless set; bbr, say, to try another);
# LAB_TUNE (engine tunables for both daemons, space-separated section.field=value, as `--tune`;
# `braid-edge tuning` lists them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
P=${LAB_PREFIX:-blab}              # namespace prefix
TUNE_ARGS=()
for tune in ${LAB_TUNE:-}; do TUNE_ARGS+=(--tune "$tune"); done
RUN=${LAB_RUN:-/tmp/braid-lab}     # configs, keys, logs, captures
BIN=${BIN:-}
TCP_CC=${LAB_TCP_CC:-cubic}
UPLINKS=3
PROFILES=(dsl lte-good lte-bad)
SEED=${SEED:-1}
IMPAIR=1                           # 0: plain veths instead of braid-impair (baseline)
GW_PUBLIC=10.200.0.2
GW2_PUBLIC=10.200.0.3              # the second gateway of a pair
VIP=10.200.0.100                   # the pair's virtual IP, which the edge is given
PAIR=0                             # 1: two gateways under keepalived share VIP (vrrp-pair); 2: a standby
GW_NS=gw                           # the namespace of the gateway that carries the stream
INGEST=10.77.0.20

ns() { echo "$P-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
# In the background, so that $! is the command itself (and a signal to $! reaches it).
bg_in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@" & }
log() { printf '[lab %s] %s\n' "$(date +%T)" "$*"; }
die() { printf 'lab: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, TAP, NAT): run it with sudo"; }

# One lab per namespace prefix at a time: a second would tear down and reuse the first's
# namespaces, and both would measure the other's traffic. The lock goes with the process.
lock_prefix() {
    mkdir -p /run/lock
    exec 9>"/run/lock/braid-lab-$P.lock"
    flock -n 9 || die "another lab with the namespace prefix '$P' is running; wait for it, or give this one its own LAB_PREFIX and LAB_RUN"
}

ensure_tools() {
    local missing=() cmd
    for cmd in ip nft iperf3 ping jq ffmpeg ffprobe tshark dumpcap srt-live-transmit conntrack keepalived; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    # The build needs protoc and the well-known types Debian ships apart (etcd-client's gRPC code).
    if [[ -z $BIN ]] && ! { command -v protoc >/dev/null 2>&1 && [[ -f /usr/include/google/protobuf/descriptor.proto ]]; }; then
        missing+=(protoc)
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing what provides ${missing[*]}"
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        iproute2 nftables iperf3 iputils-ping jq ffmpeg tshark srt-tools conntrack keepalived \
        protobuf-compiler libprotobuf-dev >/dev/null
}

build() {
    if [[ -n $BIN ]]; then
        for b in braid-edge braid-gateway braid-impair braid-labtool; do
            [[ -x $BIN/$b ]] || die "BIN=$BIN has no $b"
        done
        return 0
    fi
    BIN="$ROOT/target/release"
    log "building (release; a first build takes several minutes on 2 cores, later ones seconds)"
    cargo build --release --workspace --quiet
}

down() {
    local pids n
    pids=$(pgrep -f "$RUN/" || true)
    [[ -n $pids ]] && kill $pids 2>/dev/null || true
    sleep 0.3
    local pid
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^($P-|brt[0-9]+(fleet|rigs)-)" || true); do
        # The own namespaces of braid-labtool fleet and many-rigs go once their labtool is gone.
        pid=${n#brt}
        pid=${pid%%[a-z]*}
        [[ $n == "$P-"* || ! -d /proc/$pid ]] || continue
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
}

# On exit, however it comes: the teardown itself is not cut short by a second signal (`timeout`
# and a user's Ctrl-C may each send one).
cleanup() {
    trap '' INT TERM HUP
    down
}

veth() { # ns_a dev_a addr_a ns_b dev_b addr_b
    ip -n "$(ns "$1")" link add "$2" type veth peer name "$5" netns "$(ns "$4")"
    [[ -n $3 ]] && ip -n "$(ns "$1")" addr add "$3" dev "$2"
    [[ -n $6 ]] && ip -n "$(ns "$4")" addr add "$6" dev "$5"
    ip -n "$(ns "$1")" link set "$2" up
    ip -n "$(ns "$4")" link set "$5" up
}

profile_file() { echo "$RUN/link$1.profile"; }

# A namespace with loopback up. Bridged frames must not pass through netfilter (br_netfilter is
# loaded on many hosts): conntrack would see an ISP's frames on its bridge before routing, and
# then skip their NAT.
add_ns() {
    ip netns add "$(ns "$1")"
    ip -n "$(ns "$1")" link set lo up
    in_ns "$1" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true
}

# Restores an uplink's carrier, and its default route as the modem's DHCP would.
restore_uplink() {
    in_ns edge ip link set "up$1" up
    in_ns edge ip route replace default via "192.168.$1.1" dev "up$1" metric "$(($1 * 10))"
}

# Changes an uplink's impairment, and sets APPLIED to the instant the impairer says the new
# profile holds (empty if it did not say so within a second).
set_profile() { # link text
    local log="$RUN/impair$1.log" before line
    echo "$2" >"$(profile_file "$1")"
    before=$(grep -c '^applied at=' "$log" 2>/dev/null || true)
    # This lab's impairer only (another lab may run beside it, under another LAB_RUN).
    pkill -HUP -f "braid-impair --a ta$1 .*$RUN/" || true
    APPLIED=""
    for _ in $(seq 100); do
        line=$(grep '^applied at=' "$log" 2>/dev/null | sed -n "$((${before:-0} + 1))p")
        [[ -n $line ]] && { APPLIED=${line#applied at=}; return 0; }
        sleep 0.01
    done
    log "WARNING: uplink $1's impairer did not confirm its new profile"
}

# The ISP's NAT forgets its mappings: the uplink's next packet leaves from a new port (the
# masquerade picks ports at random), as when a carrier-grade NAT times out or a modem re-attaches.
rebind_uplink() {
    in_ns "isp$1" conntrack -F >/dev/null 2>&1 || true
}

up() {
    grep -qw -- "$TCP_CC" /proc/sys/net/ipv4/tcp_available_congestion_control ||
        die "LAB_TCP_CC=$TCP_CC: this kernel's TCP has $(cat /proc/sys/net/ipv4/tcp_available_congestion_control) (modprobe tcp_$TCP_CC may add it)"
    down
    rm -rf "$RUN" && mkdir -p "$RUN"
    for n in inet gw edge cam ing attacker; do add_ns "$n"; done
    GW_NS=gw
    if [[ $PAIR != 0 ]]; then
        add_ns gw2
        in_ns inet ip link add brw type bridge
        in_ns inet ip addr add 10.200.0.1/24 dev brw
        in_ns inet ip link set brw up
        veth inet gw0 "" gw wan "$GW_PUBLIC/24"
        veth inet gw0b "" gw2 wan "$GW2_PUBLIC/24"
        in_ns inet ip link set gw0 master brw
        in_ns inet ip link set gw0b master brw
        in_ns gw2 ip route add default via 10.200.0.1
    else
        veth inet gw0 10.200.0.1/24 gw wan "$GW_PUBLIC/24"
    fi
    in_ns gw ip route add default via 10.200.0.1
    in_ns inet sysctl -qw net.ipv4.ip_forward=1
    veth inet a0 10.202.0.1/24 attacker eth0 10.202.0.2/24
    in_ns attacker ip route add default via 10.202.0.1
    if [[ ${CAPTURE_TUNNEL:-0} == 1 ]]; then
        # The first seconds of tunnel traffic, handshakes included, for the attacker to replay.
        in_ns inet dumpcap -q -i gw0 -f "udp port 4754" -a duration:8 -P -w "$RUN/tunnel.pcap" 2>"$RUN/dumpcap-tunnel.log" &
        wait_for_capture "$RUN/dumpcap-tunnel.log"
    fi
    for u in $(seq 1 "$UPLINKS"); do
        local isp="isp$u"
        add_ns "$isp"
        veth inet "i$u" "10.201.$u.1/24" "$isp" ext0 "10.201.$u.2/24"
        in_ns "$isp" ip route add default via "10.201.$u.1"
        in_ns "$isp" sysctl -qw net.ipv4.ip_forward=1
        in_ns "$isp" nft add table ip nat
        in_ns "$isp" nft add chain ip nat post '{ type nat hook postrouting priority 100 ; }'
        in_ns "$isp" nft add rule ip nat post oifname ext0 masquerade random
        if [[ $IMPAIR == 1 ]]; then
            # The modem: edge's upN ⇄ e0, bridged with TAP ta; braid-impair moves frames ta⇄tb;
            # tb is the ISP's router interface.
            veth edge "up$u" "192.168.$u.2/24" "$isp" e0 ""
            echo "${LINKS[$((u - 1))]}" >"$(profile_file "$u")"
            in_ns "$isp" "$BIN/braid-impair" --a "ta$u" --b tb --up "$(profile_file "$u")" --down "$(profile_file "$u")" \
                --seed "$((SEED * 10 + u))" >"$RUN/impair$u.log" 2>&1 &
            for _ in $(seq 50); do in_ns "$isp" ip link show tb >/dev/null 2>&1 && break; sleep 0.1; done
            # The bridge must stay a plain wire: the ISP's kernel would otherwise answer the
            # edge's ARP for tb's address from the bridge (at once, before tb's own delayed
            # answer), and route frames sent to the bridge's MAC around the impairment.
            in_ns "$isp" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.default.arp_ignore=1
            in_ns "$isp" nft add table inet guard
            in_ns "$isp" nft add chain inet guard through '{ type filter hook forward priority 0 ; }'
            in_ns "$isp" nft add rule inet guard through iifname bre drop
            in_ns "$isp" ip link add bre type bridge
            in_ns "$isp" ip link set bre up
            in_ns "$isp" ip link set e0 master bre
            in_ns "$isp" ip link set "ta$u" master bre
            in_ns "$isp" ip addr add "192.168.$u.1/24" dev tb
        else
            veth edge "up$u" "192.168.$u.2/24" "$isp" e0 "192.168.$u.1/24"
        fi
        in_ns edge ip route add default via "192.168.$u.1" dev "up$u" metric "$((u * 10))"
    done
    veth cam eth0 10.77.0.10/24 edge lan ""
    if [[ $PAIR != 0 ]]; then
        # The ingest switch: both gateways' bridges are ports of it.
        in_ns ing ip link add eth0 type bridge
        in_ns ing ip addr add "$INGEST/24" dev eth0
        in_ns ing ip link set eth0 up
        veth ing p1 "" gw lan0 ""
        veth ing p2 "" gw2 lan0 ""
        in_ns ing ip link set p1 master eth0
        in_ns ing ip link set p2 master eth0
        in_ns gw2 ip link add br-ing type bridge; in_ns gw2 ip link set br-ing up; in_ns gw2 ip link set lan0 master br-ing
    else
        veth ing eth0 "$INGEST/24" gw lan0 ""
    fi
    in_ns edge ip link add br-lan type bridge; in_ns edge ip link set br-lan up; in_ns edge ip link set lan master br-lan
    in_ns gw ip link add br-ing type bridge; in_ns gw ip link set br-ing up; in_ns gw ip link set lan0 master br-ing
    if [[ ${DIRECT:-0} == 1 ]]; then
        # A plain routed path from cam to ing over uplink 1, beside the tunnel: the baseline's
        # yardstick.
        veth cam eth1 10.78.0.10/24 edge dcam 10.78.0.1/24
        veth ing eth1 10.79.0.20/24 gw ding 10.79.0.1/24
        in_ns cam ip route add 10.79.0.0/24 via 10.78.0.1
        in_ns ing ip route add default via 10.79.0.1
        in_ns edge sysctl -qw net.ipv4.ip_forward=1
        in_ns gw sysctl -qw net.ipv4.ip_forward=1
        in_ns inet ip route add 10.79.0.0/24 via "$GW_PUBLIC"
        in_ns isp1 ip route add 10.78.0.0/24 via 192.168.1.2
    fi

    local gw_pub edge_pub uplinks=""
    gw_pub=$("$BIN/braid-gateway" keygen --out "$RUN/gateway.key")
    edge_pub=$("$BIN/braid-edge" keygen --out "$RUN/edge.key")
    echo "$gw_pub" >"$RUN/gateway.pub"
    for u in $(seq 1 "$UPLINKS"); do
        uplinks+="  - name: ${PROFILES[$((u - 1))]}
    interface: up$u
"
        if [[ ${METERED[$((u - 1))]:-0} == 1 ]]; then uplinks+="    metered: true
"; fi
    done
    local gateways="gateway:
  address: $([[ $PAIR == 1 ]] && echo "$VIP" || echo "$GW_PUBLIC"):4754
  public_key: $gw_pub"
    if [[ $PAIR == 2 ]]; then
        local gw2_pub
        gw2_pub=$("$BIN/braid-gateway" keygen --out "$RUN/gateway2.key")
        gateways="gateways:
  - address: $GW_PUBLIC:4754
    public_key: $gw_pub
  - address: $GW2_PUBLIC:4754
    public_key: $gw2_pub
    priority: 1"
        if [[ -n ${RETURN_AFTER:-} ]]; then gateways+="
gateway_return_after_s: $RETURN_AFTER"; fi
    fi
    local fec=""
    if [[ -n ${FEC:-} ]]; then
        IFS=: read -r block parity max_delay <<<"$FEC"
        fec="fec: {block: $block, parity: $parity, max_delay_ms: $max_delay}"
    fi
    cat >"$RUN/edge.yaml" <<EOF
name: rig
private_key_file: $RUN/edge.key
$gateways
mode: ${MODE:-redundant}
path_mtu: ${PATH_MTU:-1500}
latency_budget_ms: ${BUDGET:-500}
$fec
bitrate_feed: 127.0.0.1:5600
tap:
  name: braid0
  bridge: br-lan
uplinks:
$uplinks
EOF
    cat >"$RUN/gateway.yaml" <<EOF
private_key_file: $RUN/gateway.key
listen: ["$([[ $PAIR == 1 ]] && echo "$VIP" || echo "$GW_PUBLIC"):4754"]
nonlocal_bind: $([[ $PAIR == 1 ]] && echo true || echo false)
mode: ${MODE:-redundant}
path_mtu: ${PATH_MTU:-1500}
latency_budget_ms: ${BUDGET:-500}
edges:
  - name: rig
    public_key: $edge_pub
    tap: braid-rig
    bridge: br-ing
EOF
    sed -e "s|$RUN/gateway.key|$RUN/gateway2.key|" -e "s|$GW_PUBLIC:4754|$GW2_PUBLIC:4754|" \
        "$RUN/gateway.yaml" >"$RUN/gateway2.yaml"
    start_gateway
    if [[ $PAIR == 1 ]]; then start_pair; fi
    if [[ $PAIR == 2 ]]; then
        in_ns gw2 "$BIN/braid-gateway" run --config "$RUN/gateway2.yaml" "${TUNE_ARGS[@]}" >>"$RUN/gateway2.log" 2>&1 &
    fi
    in_ns edge "$BIN/braid-edge" run --config "$RUN/edge.yaml" "${TUNE_ARGS[@]}" >"$RUN/edge.log" 2>&1 &
    for _ in $(seq 100); do in_ns cam ping -c1 -W1 "$INGEST" >/dev/null 2>&1 && break; sleep 0.2; done
    in_ns cam ping -c1 -W1 "$INGEST" >/dev/null 2>&1 || {
        tail -n 20 "$RUN/edge.log" "$RUN/gateway.log" >&2
        die "the tunnel did not come up"
    }
    if [[ $PAIR == 2 ]]; then
        # The standby's session must be up and answering before anything is cut.
        for _ in $(seq 100); do
            [[ $(edge_status | jq -r '[.gateways[].role] | join(",")' 2>/dev/null) == active,standby ]] && break
            sleep 0.1
        done
        [[ $(edge_status | jq -r '[.gateways[].role] | join(",")' 2>/dev/null) == active,standby ]] ||
            die "the standby gateway did not answer: $(tail -3 "$RUN/gateway2.log")"
    fi
    # The stream starts once every uplink is up, as an operator's does once the dashboard shows
    # them: a link whose first ARP or probes were lost is still coming up, which no scenario
    # measures. Past 10 s it starts anyway, and says so.
    local all_up=false
    for _ in $(seq 100); do
        all_up=$(edge_status | jq --argjson n "$UPLINKS" '.session.links | length == $n and all(.state == "up")' 2>/dev/null)
        [[ $all_up == true ]] && break
        sleep 0.1
    done
    [[ $all_up == true ]] || log "not every uplink is up after 10 s: $(link_states)"
    log "tunnel up"
}

edge_status() { in_ns edge "$BIN/braid-edge" status --json --config "$RUN/edge.yaml" 2>/dev/null; }
# The status of the gateway in namespace $1 (gw by default).
gateway_status() { in_ns "${1:-gw}" "$BIN/braid-gateway" status --json --config "$RUN/gateway.yaml" 2>/dev/null; }

start_gateway() {
    in_ns gw "$BIN/braid-gateway" run --config "$RUN/gateway.yaml" "${TUNE_ARGS[@]}" >>"$RUN/gateway.log" 2>&1 &
}

gateway_alive() { pgrep -f "braid-gateway run --config $RUN/gateway.yaml" >/dev/null; }

# The pair: gw2 runs the same config (the same key and allowlist: an edge pins one key), and
# keepalived runs in both. gw is the master (priority 200, gw2 100); neither takes the VIP back
# once it lost it (nopreempt). Each tracks its gateway's TAP, which exists only while
# braid-gateway runs: a killed gateway is a fault at once, and the master hands over with a
# priority-0 advert instead of going silent for three intervals. When gw2 becomes master, its
# time is the mark the stream's return is measured from (vrrp.mark: resumed_after_vrrp_ms).
start_pair() {
    in_ns gw2 "$BIN/braid-gateway" run --config "$RUN/gateway.yaml" "${TUNE_ARGS[@]}" >>"$RUN/gateway2.log" 2>&1 &
    local n prio note
    for n in gw gw2; do
        prio=$([[ $n == gw ]] && echo 200 || echo 100)
        note=$([[ $n == gw ]] && echo "$RUN/master-gw.time" || echo "$RUN/vrrp.mark")
        cat >"$RUN/keepalived-$n.conf" <<EOF
global_defs {
    router_id braid-$n
    vrrp_version 3
    script_user root
}
vrrp_instance braid {
    state BACKUP
    nopreempt
    interface wan
    virtual_router_id 54
    priority $prio
    advert_int 0.1
    virtual_ipaddress {
        $VIP/24 dev wan
    }
    track_interface {
        braid-rig
    }
    notify_master "/bin/sh -c 'date +%s.%N >$note'"
}
EOF
        in_ns "$n" keepalived --dont-fork --log-console --vrrp --use-file "$RUN/keepalived-$n.conf" \
            --pid "$RUN/keepalived-$n.pid" --vrrp_pid "$RUN/keepalived-$n-vrrp.pid" >"$RUN/keepalived-$n.log" 2>&1 &
        # gw takes the VIP before gw2's keepalived starts: both start as backups, and the first
        # whose timer runs out (gw by 39 ms of skew, which a busy host can eat) keeps it.
        [[ $n == gw ]] || break
        for _ in $(seq 100); do
            in_ns gw ip -4 addr show dev wan | grep -q "$VIP/" && break
            sleep 0.1
        done
        in_ns gw ip -4 addr show dev wan | grep -q "$VIP/" || {
            tail -n 20 "$RUN/keepalived-gw.log" >&2
            die "keepalived did not give gw the VIP"
        }
    done
}

wait_for_capture() { # dumpcap's log
    for _ in $(seq 100); do grep -q "Capturing on" "$1" 2>/dev/null && return 0; sleep 0.05; done
    die "dumpcap did not start: $(cat "$1")"
}

link_states() {
    edge_status |
        jq -r '[.session.links[] | "\(.name)=\(.state)\(if .rtt_ms then "(\(.rtt_ms|floor)ms)" else "" end)"] | join("  ")' 2>/dev/null || echo "(no status)"
}

# Frames sent on one link so far (data and probes), from the edge's status.
link_tx() { # name
    edge_status |
        jq -r --arg n "$1" '.session.links[] | select(.name == $n) | .tx_packets' 2>/dev/null || echo 0
}

# Sleeps until T0 + $1 seconds.
at() {
    local wait
    wait=$(awk -v t0="$T0" -v off="$1" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + off - now; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$wait"
}

# Runs the scenario's timeline (`EVENTS`: "SECONDS:VERB ARGS", in time order, from
# `braid-labtool plan`) for SECS seconds from T0, each event as `act_VERB ARGS` at its time; link
# state is printed every 2 s (every 5 s as a table for the demo).
run_timeline() { # secs
    local secs=$1 t entry
    for t in $(seq 1 "$secs"); do
        for entry in "${EVENTS[@]}"; do
            local when=${entry%%:*}
            [[ ${when%%.*} == $((t - 1)) ]] || continue
            at "$when"
            APPLIED=""
            # shellcheck disable=SC2086 # the verb and its arguments
            act_${entry#*:}
            # When an impairment change took hold, against its time on the timeline.
            [[ -z $APPLIED ]] || echo "$when $APPLIED" >>"$RUN/applied.times"
        done
        at "$t"
        if [[ ${VIEW:-line} == table ]]; then
            ((t % 5 == 0)) && { log "t=${t}s"; link_table; }
        else
            ((t % 2 == 0)) && log "t=${t}s links: $(link_states)"
        fi
    done
    return 0
}

link_table() {
    in_ns edge "$BIN/braid-edge" status --table --config "$RUN/edge.yaml" 2>/dev/null | sed 's/^/    /' || echo "    (no status)"
}

# The timeline's verbs (lab/src/scenario.rs, `Action::verb`). Uplinks are numbered from 1.
name_of() { echo "${PROFILES[$(($1 - 1))]}"; }
act_carrier_down() { log "cut: $(name_of "$1") loses carrier"; in_ns edge ip link set "up$1" down; }
act_carrier_up() { log "restore: $(name_of "$1") regains carrier"; restore_uplink "$1"; }
act_blackhole() { log "cut: $(name_of "$1") blackholed"; set_profile "$1" "${LINKS[$(($1 - 1))]} blackhole=1"; }
act_restore() { log "restore: $(name_of "$1")'s blackhole ends"; set_profile "$1" "${LINKS[$(($1 - 1))]}"; }
act_rebind() { log "NAT rebinding on $(name_of "$1")"; rebind_uplink "$1"; }
act_set_profile() { log "$(name_of "$1") becomes ${2//,/ }"; set_profile "$1" "${2//,/ }"; }
# The new process's first "gateway running" line (its sockets are bound by then) is the mark
# the stream's return is measured from (resumed_after_listen_ms).
act_kill_gateway() {
    log "gateway: SIGKILL and restart"
    local before
    before=$(grep -c "gateway running" "$RUN/gateway.log" || true)
    pkill -9 -f "braid-gateway run --config $RUN/gateway.yaml" || true
    sleep 0.2
    start_gateway
    for _ in $(seq 250); do
        (($(grep -c "gateway running" "$RUN/gateway.log" || true) > before)) && break
        sleep 0.02
    done
    local line
    line=$(grep "gateway running" "$RUN/gateway.log" | sed -n "$((before + 1))p")
    [[ -n $line ]] || die "the restarted gateway did not start: $(tail -3 "$RUN/gateway.log")"
    date -d "${line%% *}" +%s.%N >"$RUN/listen.mark"
}
# Blackholed for 200 ms and restored for 200 ms, N times, in the background; the packets the
# edge sent on the link meanwhile go to $RUN/flap.packets (the figure flap_packets).
act_flap() { # uplink times
    log "flap: $(name_of "$1") every 200 ms, $2 times"
    local before
    before=$(link_tx "$(name_of "$1")")
    (for _ in $(seq "$2"); do
        set_profile "$1" "${LINKS[$(($1 - 1))]} blackhole=1"; sleep 0.2
        set_profile "$1" "${LINKS[$(($1 - 1))]}"; sleep 0.2
    done
    echo "flap_tx_before=$before flap_tx_after=$(link_tx "$(name_of "$1")")" >"$RUN/flap.packets") &
}
act_attack() { attack; }
# The pair's first gateway dies for good (only gw's is killed). Under keepalived the VIP moves
# to gw2, whose gateway answers the edge's data with "no such session", and the edge handshakes
# again at once; with a standby, the edge moves the stream to it.
act_kill_master() {
    log "gateway: SIGKILL of the pair's first gateway"
    date +%s.%N >"$RUN/kill.time"
    local pid
    for pid in $(ip netns pids "$(ns gw)"); do
        grep -q "braid-gateway" "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid"
    done
    GW_NS=gw2
}

# The internet stops reaching the pair's first gateway (its port on inet's segment goes down);
# it keeps running. What it had delivered to the ingest a second later, when what it held when
# cut off is out, is noted (first-delivered.cut).
act_cut_first_gateway() {
    log "gateway: the internet stops reaching the first gateway"
    (sleep 1; first_delivered >"$RUN/first-delivered.cut") &
    date +%s.%N >"$RUN/kill.time"
    in_ns inet ip link set gw0 down
    GW_NS=gw2
}
# `braid-gateway drain` on the first gateway; its time is the mark the move is measured from.
act_drain_first_gateway() {
    log "gateway: braid-gateway drain on the first gateway"
    local pid
    pid=$(pgrep -f "braid-gateway run --config $RUN/gateway.yaml" | head -1)
    [[ -n $pid ]] || die "no first gateway to drain"
    date +%s.%N >"$RUN/kill.time"
    in_ns gw "$BIN/braid-gateway" drain --pid "$pid" >>"$RUN/drain.log" 2>&1 || die "drain failed: $(cat "$RUN/drain.log")"
}
act_restore_first_gateway() {
    log "gateway: the internet reaches the first gateway again"
    in_ns inet ip link set gw0 up
    date +%s.%N >"$RUN/restore.time"
}
# The frames gw's gateway has delivered to the ingest from the rig.
first_delivered() {
    gateway_status |
        jq -r '.edges[0].session.frames_delivered // 0' 2>/dev/null || echo 0
}

# Whether every datagram the edge sent on an uplink went through that uplink's impairment: each
# braid-impair's count of frames offered (SIGUSR1) against the edge's count of datagrams sent.
# A shortfall means traffic bypassed the emulated link, and the run's figures mean nothing.
# Leaves "ok" or "bypass:LINK=OFFERED/SENT,..." in IMPAIR_CHECK.
impair_check() {
    IMPAIR_CHECK=ok
    [[ $IMPAIR == 1 ]] || { IMPAIR_CHECK=-; return 0; }
    local u name sent offered bad=""
    pkill -USR1 -f "braid-impair --a ta[0-9]+ .*$RUN/" || true
    sleep 0.3
    for u in $(seq 1 "$UPLINKS"); do
        name=${PROFILES[$((u - 1))]}
        sent=$(link_tx "$name")
        offered=$(grep -o '^counters: up offered=[0-9]*' "$RUN/impair$u.log" | tail -1 | grep -o '[0-9]*$' || echo 0)
        # Probes and ARP make the impairer see a little more than the data; never much less.
        if ((${sent:-0} > 500 && ${offered:-0} * 10 < ${sent:-0} * 9)); then
            bad+="$name=$offered/$sent,"
        fi
    done
    [[ -z $bad ]] || { IMPAIR_CHECK="bypass:${bad%,}"; log "WARNING: traffic bypassed the impairment: ${bad%,}"; }
    return 0
}

# Percentiles of ping's RTTs: "p50 p99" ("- -" without any).
ping_percentiles() { # file
    labtool ping "$1"
}

# A RESULT line: the scenario's (or its part's) name, the mode, and key=value figures. Every
# figure is measured here and computed from the measurements by `braid-labtool check`.
result() { # name figures...
    local name=$1
    shift
    echo
    echo "RESULT scenario=$name mode=$MODE $*"
}

# iperf3 UDP at RATE for SECS while the timeline runs, captured on the ingest side; ping for
# latency. Leaves the figures in STREAM (the labtool's line) and PING (p50 p99).
udp_stream() { # rate secs
    local rate=$1 secs=$2
    bg_in_ns ing dumpcap -q -i eth0 -f "udp dst port 5201" -P -w "$RUN/stream.pcap" 2>"$RUN/dumpcap.log"
    local capture=$!
    wait_for_capture "$RUN/dumpcap.log"
    # Every client is bounded in time, however the tunnel behaves.
    local limit=$((secs + 20))
    in_ns ing timeout "$limit" iperf3 -s -1 -J >"$RUN/iperf-server.json" 2>/dev/null &
    local server=$!
    sleep 0.5
    T0=$(date +%s.%N)
    in_ns cam ping -D -i 0.02 -w "$secs" "$INGEST" >"$RUN/ping.txt" 2>&1 &
    in_ns cam timeout "$limit" iperf3 -c "$INGEST" -u -b "$rate" -l 1200 -t "$secs" -J >"$RUN/iperf-client.json" 2>/dev/null &
    local client=$!
    run_timeline "$secs"
    wait "$client" || true
    wait "$server" || true
    impair_check
    sleep 1
    kill -INT "$capture" 2>/dev/null || true
    wait "$capture" || true
    local sent
    sent=$(jq '.end.sum.packets // 0' "$RUN/iperf-client.json")
    local windows
    windows=$(IFS=,; echo "${WINDOWS[*]:-}")
    STREAM=$(tshark -r "$RUN/stream.pcap" -T fields -e frame.time_epoch -e udp.payload 2>/dev/null |
        "$BIN/braid-labtool" stream --sent "$sent" --start "$T0" --windows "$windows" --marks "$(marks)" ${OWD_LIMIT_MS:+--owd-limit-ms "$OWD_LIMIT_MS"})
    PING=$(ping_percentiles "$RUN/ping.txt")
    log "stream: $STREAM"
}

# The instants the stream's return is measured from: NAME=EPOCH for each $RUN/NAME.mark.
marks() {
    local f out=()
    for f in "$RUN"/*.mark; do
        [[ -f $f ]] && out+=("$(basename "$f" .mark)=$(cat "$f")")
    done
    (IFS=,; echo "${out[*]:-}")
}

field() { # key line
    grep -o "\b$1=[^ ]*" <<<"$2" | sed -n 1p | cut -d= -f2
}

# The RESULT line for a UDP stream: the stream's figures (labtool's, windows included), ping's,
# the edge's overhead, where losses went, and any extra figures.
stream_result() { # name extra
    local p50 p99 flap=""
    read -r p50 p99 <<<"$PING"
    [[ -f $RUN/flap.packets ]] && flap=$(cat "$RUN/flap.packets")
    # Each spiked or cut uplink's return, from the edge's link state log.
    local back
    back=$(labtool back "$1" --start "$T0" --applied "$RUN/applied.times" <"$RUN/edge.log" || true)
    echo
    echo "RESULT scenario=$1 mode=$MODE $STREAM app_lost=$(app_lost) p50_ms=$p50 p99_ms=$p99 $(edge_data_bytes) impair_check=$IMPAIR_CHECK $(engine_losses)${flap:+ $flap}${back:+ $back}${2:+ $2}"
}

# The datagrams the receiving application (iperf3's server, default socket buffer) missed, by its
# own count ("-" if it wrote no report).
app_lost() { jq -r '.end.sum.lost_packets // "-"' "$RUN/iperf-server.json" 2>/dev/null || echo -; }

# Where the stream's losses went, by the engines' own counts: the edge's drops by reason (at the
# entry: over_capacity, queue_full, ...), the copies it re-sent for NAKs and the NAKs it left
# unanswered as early; the gateway's frames given up (lost: a gap never filled; late: arrived
# after its gap was released), NAKs sent and gaps filled.
engine_losses() {
    local edge gw
    edge=$(edge_status |
        jq -r '.session | (.drops_by_reason // {} | to_entries | map(select(.value > 0) | "\(.key):\(.value)") | join(",") | if . == "" then "none" else . end) + " edge_resent=\(.frames_retransmitted // "-") edge_naks_early=\(.naks_early // "-")"' 2>/dev/null)
    gw=$(gateway_status "$GW_NS" |
        jq -r '.edges[0].session // {} | "gw_lost=\(.frames_lost // "-") gw_late=\(.frames_late // "-") gw_nacked=\(.frames_nacked // "-") gw_recovered=\(.frames_recovered // "-") gw_rebuilt=\(.frames_rebuilt // "-")"' 2>/dev/null)
    echo "edge_drops=${edge:-none edge_resent=- edge_naks_early=-} ${gw:-gw_lost=-}"
}

# One TCP stream through the tunnel in the scenario's mode, then the same over the direct path
# beside it, and ping both ways: what the tunnel costs a flow (baseline, bond-uncapped).
tunnel_beside_direct() { # scenario
    local tunnel direct ping_t ping_d
    log "TCP through braid ($MODE over 3 unimpaired, uncapped uplinks), then the direct path"
    tunnel=$(tcp_goodput 5215 8)
    direct=$(tcp_goodput_to 10.79.0.20 5216 8)
    in_ns cam ping -c 300 -i 0.01 -s 1200 "$INGEST" >"$RUN/ping-tunnel.txt"
    in_ns cam ping -c 300 -i 0.01 -s 1200 10.79.0.20 >"$RUN/ping-direct.txt"
    ping_t=$(ping_percentiles "$RUN/ping-tunnel.txt")
    ping_d=$(ping_percentiles "$RUN/ping-direct.txt")
    local p50 p99
    read -r p50 p99 <<<"$ping_t"
    result "$1" "p50_ms=$p50 p99_ms=$p99 goodput_bps=$tunnel direct_goodput_bps=$direct direct_p50_ms=${ping_d% *} direct_p99_ms=${ping_d#* } tcp_cc=$TCP_CC"
}

measure_baseline() { tunnel_beside_direct baseline; }
measure_bond_uncapped() { tunnel_beside_direct bond-uncapped; }

# A UDP stream scenario: the plan's RATE for SECS seconds through its timeline. A scenario may
# measure something first (`before_NAME`) and add figures of its own (`extra_NAME` prints
# key=value words).
measure_udp() { # name
    local hook=${1//-/_} extra=""
    if [[ ${LATENCY:-0} == 1 ]]; then latency_before; fi
    if declare -F "before_$hook" >/dev/null; then "before_$hook"; fi
    udp_stream "$RATE" "$SECS"
    if declare -F "extra_$hook" >/dev/null; then extra=$("extra_$hook"); fi
    if [[ ${LATENCY:-0} == 1 ]]; then extra+="${extra:+ }$(latency_figures)"; fi
    stream_result "$1" "$extra"
}

# Downstream beside the stream: the ingest host pings the camera every 20 ms.
before_vrrp_pair() {
    in_ns ing ping -D -i 0.02 -w "$((SECS + 3))" 10.77.0.10 >"$RUN/ping-down.txt" 2>&1 &
}

# How long keepalived took to give gw2 the VIP after the kill (the edge's part after that is
# resumed_after_vrrp_ms), and the longest wait between two replies to the ingest's pings
# (down_gap_ms): the ingest LAN must find the camera behind gw2 at once.
extra_vrrp_pair() {
    local kill vrrp down
    down=$(awk '/bytes from/ { gsub(/[][]/, "", $1); if (p != "") { g = ($1 - p) * 1000; if (g > m) m = g }; p = $1 }
        END { if (p == "") print "-"; else printf "%.0f", m }' "$RUN/ping-down.txt" 2>/dev/null || echo -)
    echo -n "down_gap_ms=$down "
    kill=$(cat "$RUN/kill.time" 2>/dev/null || true)
    vrrp=$(cat "$RUN/vrrp.mark" 2>/dev/null || true)
    if [[ -n $kill && -n $vrrp ]]; then
        awk -v k="$kill" -v v="$vrrp" 'BEGIN { printf "vrrp_ms=%.0f\n", (v - k) * 1000 }'
    else
        echo "vrrp_ms=-"
    fi
}

before_gateway_failover() { before_vrrp_pair; }
# A rig device gw's bridge learned that has been quiet since (no announcement moves it): only
# the gateway's own clearing removes it once the edge keeps gw as a standby.
before_gateway_drain() {
    before_vrrp_pair
    in_ns gw bridge fdb replace "$QUIET_RIG_MAC" dev braid-rig master dynamic
}
QUIET_RIG_MAC=02:00:00:00:0b:99
# As gateway-failover, and the addresses the first gateway's bridge still has learned behind the
# rig's TAP: none, once the edge keeps it as a standby.
extra_gateway_drain() { echo "$(extra_gateway_failover) first_bridge_rig_entries=$(first_bridge_rig_entries)"; }

# The addresses gw's bridge learned behind the rig's TAP (not its own permanent ones).
first_bridge_rig_entries() { in_ns gw bridge fdb show brport braid-rig 2>/dev/null | grep -vc permanent || true; }
before_gateway_partition() { before_gateway_drain; }

# How long after the kill (or the cut, or the drain) the edge moved the stream (its log's move
# line), and the longest wait between two replies to the ingest's pings (down_gap_ms).
extra_gateway_failover() {
    local down
    down=$(awk '/bytes from/ { gsub(/[][]/, "", $1); if (p != "") { g = ($1 - p) * 1000; if (g > m) m = g }; p = $1 }
        END { if (p == "") print "-"; else printf "%.0f", m }' "$RUN/ping-down.txt" 2>/dev/null || echo -)
    echo "$(ms_to_log_line takeover_ms kill.time "the stream moved to") down_gap_ms=$down"
}

# As gateway-drain, and after the first gateway is back: which gateway carries the stream
# (first or second), how many takeovers there were, and what the first delivered from a second
# after the cut on.
extra_gateway_partition() {
    local at_cut
    at_cut=$(cat "$RUN/first-delivered.cut" 2>/dev/null || echo 0)
    echo "$(extra_gateway_drain) $(gateway_roles) first_delivered_after_cut=$(($(first_delivered) - at_cut))"
}

# Which gateway carries the stream (first or second) and how many times it moved.
gateway_roles() {
    local status active
    status=$(edge_status)
    active=$(jq -r --arg a "$GW2_PUBLIC:4754" '.gateways[] | select(.role == "active") | if .address == $a then "second" else "first" end' <<<"$status" 2>/dev/null || true)
    echo "active_gateway=${active:--} takeovers=$(jq -r '.gateway_takeovers // "-"' <<<"$status" 2>/dev/null)"
}

# Which gateway carries the stream at the end, how many times it moved, and how long after the
# first gateway's restore the stream moved back to it (its log's line).
before_gateway_return() { before_vrrp_pair; }
extra_gateway_return() {
    echo "$(ms_to_log_line returned_after_restore_ms restore.time "moved back to it") $(gateway_roles)"
}

# NAME=the ms from the time in $RUN/MARK to the edge log's first line with PATTERN ("-" if
# either is missing).
ms_to_log_line() { # name mark pattern
    local mark line at
    mark=$(cat "$RUN/$2" 2>/dev/null || true)
    line=$(grep -m1 "$3" "$RUN/edge.log" || true)
    at=$([[ -n $line ]] && date -d "${line%% *}" +%s.%N || true)
    if [[ -n $mark && -n $at ]]; then
        echo "$1=$(awk -v m="$mark" -v a="$at" 'BEGIN { printf "%.0f", (a - m) * 1000 }')"
    else
        echo "$1=-"
    fi
}

extra_hostile() {
    local alive=yes drops attack
    gateway_alive || alive=no
    drops=$(gateway_status |
        jq -r '"gateway_drops_endpoint=" + (.drops_by_reason | to_entries | map("\(.key):\(.value)") | join(","))
            + " gateway_drops_session=" + ([.edges[]?.session.drops_by_reason // {} | to_entries[] | "\(.key):\(.value)"] | join(","))' \
            2>/dev/null || true)
    attack=$(for f in flood replay init; do printf '%s:%s,' "$f" "$(field sent "$(cat "$RUN/attack-$f.txt" 2>/dev/null)")"; done)
    echo "gateway_alive=$alive attack_sent=${attack%,} $drops"
}

# The attacker, on the internet side, for 10 s at once: random garbage at the gateway's port,
# the first seconds of captured tunnel traffic (handshakes included) replayed, and a flood of
# handshake initiations from keys on no allowlist.
attack() {
    log "attack: garbage, replayed tunnel packets and handshake initiations at $GW_PUBLIC:4754 for 10 s"
    tshark -r "$RUN/tunnel.pcap" -T fields -e udp.payload >"$RUN/tunnel.hex" 2>/dev/null || true
    local to="$GW_PUBLIC:4754"
    in_ns attacker "$BIN/braid-labtool" flood --to "$to" --pps 5000 --secs 10 --seed "$SEED" >"$RUN/attack-flood.txt" 2>&1 &
    in_ns attacker "$BIN/braid-labtool" replay --to "$to" --pps 3000 --secs 10 "$RUN/tunnel.hex" >"$RUN/attack-replay.txt" 2>&1 &
    in_ns attacker "$BIN/braid-labtool" initiations --to "$to" --gateway-key "$(cat "$RUN/gateway.pub")" \
        --pps 2000 --secs 10 --seed "$SEED" >"$RUN/attack-init.txt" 2>&1 &
}

# An ffmpeg test pattern, H.264 in constant-rate MPEG-TS at 6 Mbit/s (paced, as a broadcast
# encoder sends it) for 30 s, through the redundant cuts. Over UDP, the TS checked is what
# crossed the ingest LAN (captured there: braid's delivery, whatever the receiving socket's
# buffer); over SRT, what srt-live-transmit received. Continuity counters and decoded frames
# are checked, every frame sent against every frame decoded.
#
# Over SRT, the rig's sender is srt-live-transmit, fed by ffmpeg over the camera host's
# loopback, as a rig's SRT gateway runs: it connects before the picture starts (the time it
# takes is measured, connect_ms), and it stays connected for SRT's latency after the last
# frame. An SRT receiver discards what its latency buffer still holds when the sender closes,
# so an ffmpeg that spoke SRT itself would lose its last 1.2 s at every end of stream.
ffmpeg_stream() { # udp|srt [scenario seconds]
    local transport=$1 name=${2:-ffmpeg-redundant} secs=${3:-30} out="$RUN/ingest-$1.ts" url listen capture="" sender="" connect_ms=0
    case $transport in
        udp)
            listen="udp://:5000?rcvbuf=4194304"
            url="udp://$INGEST:5000?pkt_size=1316&bitrate=6000000&burst_bits=100000"
            bg_in_ns ing dumpcap -q -i eth0 -f "udp dst port 5000" -P -w "$RUN/ts.pcap" 2>"$RUN/dumpcap-ts.log"
            capture=$!
            wait_for_capture "$RUN/dumpcap-ts.log"
            ;;
        # SRT needs a latency above braid's budget (500 ms) plus a round trip: braid may hold a gap
        # that long, and SRT drops what comes later than its latency.
        srt)
            listen="srt://:5001?mode=listener&latency=1200"
            url="udp://127.0.0.1:5002?pkt_size=1316&bitrate=6000000&burst_bits=100000"
            ;;
    esac
    bg_in_ns ing srt-live-transmit -q "$listen" file://con >"$RUN/received-$transport.ts" 2>"$RUN/ingest-$transport.log"
    local ingest=$!
    sleep 0.5
    if [[ $transport == srt ]]; then
        local asked
        asked=$(date +%s%N)
        bg_in_ns cam srt-live-transmit "udp://127.0.0.1:5002" "srt://$INGEST:5001?mode=caller&latency=1200" \
            >"$RUN/srt-sender.log" 2>&1
        sender=$!
        for _ in $(seq 200); do
            grep -q "SRT target connected" "$RUN/srt-sender.log" 2>/dev/null && break
            sleep 0.025
        done
        grep -q "SRT target connected" "$RUN/srt-sender.log" || die "the SRT sender did not connect in 5 s: $(cat "$RUN/srt-sender.log")"
        connect_ms=$((($(date +%s%N) - asked) / 1000000))
        log "SRT connected through the tunnel in ${connect_ms} ms"
    fi
    T0=$(date +%s.%N)
    in_ns cam timeout $((secs + 20)) ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=1280x720:rate=30" -t "$secs" \
        -c:v libx264 -preset ultrafast -tune zerolatency -b:v 5M -maxrate 5M -bufsize 1M -g 30 \
        -f mpegts -muxrate 6M "$url" >"$RUN/ffmpeg-$transport.log" 2>&1 &
    local source=$!
    run_timeline "$secs"
    wait "$source" || true
    sleep 3 # SRT delivers up to its latency late
    if [[ -n $sender ]]; then
        kill "$sender" 2>/dev/null || true
        wait "$sender" 2>/dev/null || true
        sleep 0.5
    fi
    kill "$ingest" 2>/dev/null || true
    wait "$ingest" 2>/dev/null || true
    if [[ -n $capture ]]; then
        kill -INT "$capture" 2>/dev/null || true
        wait "$capture" || true
        tshark -r "$RUN/ts.pcap" -T fields -e udp.payload 2>/dev/null | "$BIN/braid-labtool" unhex >"$out"
    else
        cp "$RUN/received-$transport.ts" "$out"
    fi
    local ts pts frames decoded freezes
    ts=$("$BIN/braid-labtool" ts "$out")
    # Distinct frames by presentation time: a frame whose datagrams came twice (a gateway
    # takeover re-sends what the dead gateway may not have delivered) can decode twice, and is
    # still one frame of the picture (dup_frames counts the second decodings).
    pts=$(ffprobe -v error -select_streams v:0 -show_entries frame=pts -of csv=p=0 "$out" 2>/dev/null |
        cut -d, -f1 | grep -E '^[0-9]+$' || true)
    decoded=$(grep -c . <<<"$pts" || true)
    frames=$(sort -u <<<"$pts" | grep -c . || true)
    freezes=$(ffmpeg -hide_banner -i "$out" -vf "freezedetect=n=-50dB:d=0.2" -map 0:v -f null - 2>&1 | grep -c 'freeze_start' || true)
    log "$transport ingest: $ts frames=$frames/$((secs * 30)) freezes=$freezes"
    result "$name/$transport" "cc_errors=$(field cc_errors "$ts") ts_packets=$(field ts_packets "$ts") frames=$frames dup_frames=$((decoded - frames)) expected_frames=$((secs * 30)) freezes=$freezes connect_ms=$connect_ms"
}

measure_ffmpeg_redundant() {
    ffmpeg_stream udp
    ffmpeg_stream srt
}

measure_gateway_failover_ffmpeg() { ffmpeg_stream udp gateway-failover-ffmpeg 14; }

# A gateway fleet on etcd: three members, three gateways and six rigs in namespaces of its own
# (braid-labtool fleet builds, measures and removes them; lab/src/bin/labtool/fleet.rs).
measure_fleet() {
    log "fleet: etcd x3, gateways x3, rigs x6 at 2 Mbit/s; a forged redirect, a gateway killed, etcd lost and back"
    command -v etcd >/dev/null && command -v etcdctl >/dev/null || die "fleet needs etcd and etcdctl (apt-get install etcd-server etcd-client)"
    labtool fleet --out "$RUN/fleet" --seed "$SEED"
}

# Many rigs through one gateway: `braid-labtool rigs` runs 50 edges (the engine's, real keys,
# sockets and handshakes) in a namespace of their own, and a sink on the ingest host counts what
# each delivered (lab/src/bin/labtool/many_rigs.rs).
measure_many_rigs() {
    log "many-rigs: 50 rigs of two links at 2 Mbit/s for 15 s through one gateway"
    labtool many-rigs --out "$RUN/many-rigs" --count 50 --mbps 2 --secs 15
}

# The same through a gateway of two workers (`workers: 2`).
measure_many_rigs_workers() {
    log "many-rigs-workers: 50 rigs of two links at 2 Mbit/s for 15 s through a gateway of two workers"
    labtool many-rigs --name many-rigs-workers --out "$RUN/many-rigs-workers" --count 50 --mbps 2 --secs 15 --workers 2
}

# 50 rigs at 28 Mbit/s each through a gateway of one worker, then of two, twice over.
measure_workers_gain() {
    log "workers-gain: 50 rigs at 28 Mbit/s for 10 s, through one worker then two, twice"
    labtool many-rigs --name workers-gain --out "$RUN/workers-gain" --count 50 --mbps 28 --secs 10 --workers 2 --rounds 2
}

# Every uplink's path carries at most 1420-byte IP packets (an LTE path; larger ones vanish, as
# when ICMP is filtered), and braid is not told: each link probes its path (`path_mtu` stays at
# its 1500 default, the ceiling). A full 1500-byte packet must cross the TAP's 1500-byte MTU with
# DF set, in pieces inside the tunnel; TCP goodput over the one remaining link is reported
# against its rate, with the MTU each link found.
measure_mtu() {
    local ping_out loss probed
    # The links search while they come up; give them a moment to settle (bounded).
    for _ in $(seq 1 20); do
        probed=$(probed_datagrams)
        [[ $probed != *"?"* && -n $probed ]] && break
        sleep 0.25
    done
    ping_out=$(in_ns cam ping -M do -s 1472 -c 50 -i 0.02 "$INGEST" 2>&1 || true)
    loss=$(grep -o '[0-9.]*% packet loss' <<<"$ping_out" | cut -d% -f1)
    in_ns edge ip link set up1 down
    in_ns edge ip link set up3 down
    sleep 1
    result mtu "ping_1500_df_loss_pct=${loss:-100} probed_datagram=${probed:--} path_datagram=1392 link=${PROFILES[1]} link_rate_mbps=10 goodput_bps=$(tcp_goodput 5214 8) tcp_mss=$(tcp_mss 5214) tcp_cc=$TCP_CC"
}

# The largest datagram (UDP payload) each edge link's probing found, comma-separated, with "?"
# after one still searching. A 1420-byte IPv4 path carries 1392 (1420 − 20 − 8).
probed_datagrams() {
    edge_status |
        jq -r '[.session.links[] | "\(.max_datagram)\(if .max_datagram_settled then "" else "?" end)"] | join(",")' 2>/dev/null || true
}

# ---- bond and auto ----

# The edge's data bytes beyond the first copies (duplicates, retransmissions) and of the first
# copies, from its status: `braid-labtool check` makes the mode's overhead of them (extra_pct).
edge_data_bytes() {
    edge_status |
        jq -r '.session | "data_bytes_extra=\(.data_bytes_extra // "-") data_bytes_first=\(.data_bytes_first // "-") fec_bytes=\(.fec_bytes // "-")"' 2>/dev/null ||
        echo "data_bytes_extra=- data_bytes_first=- fec_bytes=-"
}

# iperf3 TCP goodput cam → ingest at the receiver, bit/s ("-" if the test failed, and iperf3's
# error in the log). A server of its own on PORT for each test, and both ends bounded in time
# however the tunnel behaves. tcp_goodput_to names the ingest's address (the direct path's,
# say); tcp_goodput sends through the tunnel.
tcp_goodput_to() { # host port secs [iperf3 client flags...]
    local host=$1 port=$2 secs=$3 json
    shift 3
    json=$RUN/iperf-tcp-$port.json
    in_ns ing timeout $((secs + 20)) iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
    local server=$!
    sleep 0.5
    in_ns cam timeout $((secs + 15)) iperf3 -c "$host" -p "$port" -t "$secs" -C "$TCP_CC" -J "$@" >"$json" 2>/dev/null || true
    wait "$server" || true
    local bps
    if ! bps=$(jq -e '.end.sum_received.bits_per_second' "$json" 2>/dev/null); then
        log "iperf3 to $host:$port failed: $(jq -r '.error // "no result"' "$json" 2>/dev/null || echo "no JSON")" >&2
        bps=-
    fi
    echo "$bps"
}
tcp_goodput() { tcp_goodput_to "$INGEST" "$@"; } # port secs [iperf3 client flags...]

# The MSS iperf3 reports from its run on `port`: `braid-labtool check` makes the most goodput
# the headers leave of it (wire_ceiling: each segment of `mss` payload bytes takes `mss` + 146
# on the wire; docs/lab.md, "Bounds that cannot be met as first asked").
tcp_mss() { # port
    jq '.start.tcp_mss_default // "-"' "$RUN/iperf-tcp-$1.json" 2>/dev/null || echo -
}

# TCP's own view of its run on `port`, from iperf3's JSON: segments retransmitted (all streams),
# then the first stream's mean, least and most smoothed RTT (µs) and the largest congestion and
# receive windows it had (bytes), "retr rtt_us min_us max_us cwnd rwnd" ("-" for each without a
# run).
tcp_view() { # port
    jq -r '.end.streams[0].sender as $s | [.end.sum_sent.retransmits, $s.mean_rtt, $s.min_rtt, $s.max_rtt,
        $s.max_snd_cwnd, $s.max_snd_wnd] | map(. // "-") | join(" ")' \
        "$RUN/iperf-tcp-$1.json" 2>/dev/null || echo "- - - - - -"
}

# Issue #6: bonded TCP. One stream for 15 s over all three links, then four in parallel, then
# the best single link (`dsl`, 20 Mbit/s) alone, the other two without carrier: the figures a
# bond must beat. Shares are of the links' 38 Mbit/s sum; `wire_ceiling` is the share the
# overhead leaves at best, and `of_ceiling1`/`of_ceiling4` are the goodputs as shares of that;
# `tcp_retr1`/`tcp_retr4` and `tcp_rtt1_ms`/`tcp_rtt4_ms` are what TCP itself saw (tcp_view);
# for the one stream, its RTT's range (`tcp_rtt1_min_ms`, `tcp_rtt1_max_ms`), its largest
# windows and which held it (`tcp_window1`: `cwnd`, its own congestion window, or `rwnd`, the
# receiver's, whichever grew less).
measure_bond_tcp() {
    local g1 g4 single
    log "TCP, 1 stream, 15 s, bond over ${PROFILES[*]}"
    g1=$(tcp_goodput 5211 15)
    log "TCP, 4 streams, 15 s"
    g4=$(tcp_goodput 5212 15 -P 4)
    impair_check
    log "TCP, 1 stream, 15 s, over ${PROFILES[0]} alone (${PROFILES[1]} and ${PROFILES[2]} lose carrier)"
    in_ns edge ip link set up2 down
    in_ns edge ip link set up3 down
    sleep 2
    log "links: $(link_states)"
    single=$(tcp_goodput 5213 15)
    local retr1 rtt1 retr4 rtt4 rtt1_min rtt1_max cwnd1 rwnd1 held1=-
    read -r retr1 rtt1 rtt1_min rtt1_max cwnd1 rwnd1 <<<"$(tcp_view 5211)"
    read -r retr4 rtt4 _ <<<"$(tcp_view 5212)"
    if [[ $cwnd1 =~ ^[0-9]+$ && $rwnd1 =~ ^[0-9]+$ ]]; then
        held1=$([[ $cwnd1 -lt $rwnd1 ]] && echo cwnd || echo rwnd)
    fi
    result bond-tcp "goodput_bps=$g1 goodput4_bps=$g4 single_bps=$single single_link=${PROFILES[0]} tcp_mss=$(tcp_mss 5211) tcp_retr1=$retr1 tcp_rtt1_us=$rtt1 tcp_retr4=$retr4 tcp_rtt4_us=$rtt4 tcp_rtt1_min_us=$rtt1_min tcp_rtt1_max_us=$rtt1_max tcp_cwnd1_max_bytes=$cwnd1 tcp_rwnd1_max_bytes=$rwnd1 tcp_window1=$held1 impair_check=$IMPAIR_CHECK tcp_cc=$TCP_CC"
}

# Each uplink's own round trip, with no stream yet: ping from the edge out of upN to its ISP's
# router (192.168.N.1, on braid-impair's far side), 50 times, 20 ms apart. The echo and its
# reply both cross that link's impairment (same profile each way) and nothing else, so the
# link's one-way delay is half its round trip. Leaves the medians in LINK_RTT ("a,b,c") and the
# 99th percentiles in LINK_RTT_P99. braid-impair never lets jitter reorder, so a frame waits
# for the one before it: a loaded link's delay drifts from its median towards its delay plus its
# jitter (p99 is the nearer).
link_rtts() {
    local u p50 p99 rtt=() rtt99=()
    for u in $(seq 1 "$UPLINKS"); do
        in_ns edge ping -n -c 50 -i 0.02 -W 1 -I "up$u" "192.168.$u.1" >"$RUN/ping-up$u.txt" 2>&1 || true
        read -r p50 p99 <<<"$(ping_percentiles "$RUN/ping-up$u.txt")"
        rtt+=("$p50")
        rtt99+=("$p99")
        log "${PROFILES[$((u - 1))]}: ping up$u → 192.168.$u.1 RTT p50 $p50 ms, p99 $p99 ms"
    done
    LINK_RTT=$(IFS=,; echo "${rtt[*]}")
    LINK_RTT_P99=$(IFS=,; echo "${rtt99[*]}")
}

# The latency bonding adds: each datagram's one-way latency is its capture time at the ingest
# minus the send time in its iperf3 header (one machine's clocks). The bound is the spread of the
# links' median one-way delays, measured before the stream, plus 30 ms; what bonding adds is the
# p99 above the fastest link's. link_owd_p99_ms shows how far each link's own delay reaches (see
# link_owds). over_bound_pct is the share of datagrams that added more than the bound (the p99
# allows 1%). Run for every scenario whose bounds or goals name the added latency (LATENCY=1).
latency_before() {
    link_rtts
    # Past this one-way delay a datagram added more than the bound (none if a link's delay could
    # not be measured).
    OWD_LIMIT_MS=$(labtool owd-limit --link-rtt-ms "$LINK_RTT")
    return 0
}

latency_figures() {
    echo "link_rtt_p50_ms=$LINK_RTT link_rtt_p99_ms=$LINK_RTT_P99 over_bound_pct=$(field owd_over_limit_pct "$STREAM" | grep . || echo -) budget_ms=$BUDGET"
}

# Goodput is the unique datagrams captured on the ingest LAN × 1200 bytes over the time iperf3
# spent sending them (its sender's duration). iperf3's own receiver figure is beside it; it
# counts what its socket read, so it is lower whenever the ingest's socket buffer overflows
# (braid releases the frames held behind a gap back to back), and it divides by the receiver's
# duration.
extra_auto_overload() {
    jq -r '"sender_secs=\(.end.sum_sent.seconds // "-") iperf3_rx_bps=\(.end.sum_received.bits_per_second // "-")"' \
        "$RUN/iperf-client.json" 2>/dev/null || echo "sender_secs=- iperf3_rx_bps=-"
}

# The edge's bitrate feed (UDP to 127.0.0.1:5600 in its namespace), recorded through the stream;
# `braid-labtool check` sets it against what the uplinks with carrier deliver, second by second.
before_bitrate_feed() {
    in_ns edge "$BIN/braid-labtool" feed --listen 127.0.0.1:5600 --secs $((SECS + 4)) >"$RUN/feed.txt" 2>"$RUN/feed.log" &
    FEED_PID=$!
    sleep 0.5
}

extra_bitrate_feed() {
    wait "$FEED_PID" 2>/dev/null || true
    echo "feed_samples=$(labtool samples --start "$T0" <"$RUN/feed.txt" | grep . || echo -)"
}

# Each uplink's bytes sent, every second through the stream, from the edge's status;
# `braid-labtool check` makes the metered uplinks' share of the stream while the unmetered one
# is up (`metered_share`) and the bytes per uplink.
before_metered() {
    (
        for _ in $(seq 1 $((SECS + 3))); do
            printf '%s %s\n' "$(date +%s.%N)" "$(edge_status |
                jq -r '[.session.links[].tx_bytes] | map(tostring) | join(":")' 2>/dev/null)"
            sleep 1
        done
    ) >"$RUN/bytes.txt" &
    BYTES_PID=$!
}

extra_metered() {
    kill "$BYTES_PID" 2>/dev/null || true
    wait "$BYTES_PID" 2>/dev/null || true
    echo "byte_samples=$(labtool samples --start "$T0" <"$RUN/bytes.txt" | grep . || echo -)"
}

labtool() { "$BIN/braid-labtool" "$@"; }

# The scenario's plan (lab/src/scenario.rs): MODE, BUDGET, TOPOLOGY, LINKS, RATE, SECS, EVENTS,
# WINDOWS, METERED, RETURN_AFTER, FEC and LATENCY; then the topology it needs.
configure() { # name
    local plan
    plan=$(labtool plan "$1") || die "no scenario $1 (try: scripts/lab.sh list)"
    eval "$plan"
    BUDGET=${LAB_BUDGET:-$BUDGET}
    FEC=${LAB_FEC-$FEC}
    IMPAIR=1 DIRECT=0 CAPTURE_TUNNEL=0 PATH_MTU=1500
    PAIR=0 OWN_TOPOLOGY=0
    case $TOPOLOGY in
        fleet | many-rigs | many-rigs-workers | workers-gain) OWN_TOPOLOGY=1 ;;
        direct) IMPAIR=0 DIRECT=1 ;;
        captured) CAPTURE_TUNNEL=1 ;;
        vrrp-pair) PAIR=1 ;;
        standby-pair) PAIR=2 ;;
    esac
}

# A UDP stream, or the scenario's own measurement.
measure() { # name
    if [[ -n $RATE ]]; then measure_udp "$1"; else "measure_${1//-/_}"; fi
}

# The run's verdict against the scenario's bounds, and its JSON record in LAB_RESULTS.
RESULTS=${LAB_RESULTS:-$ROOT/target/results}
verdict() { # name < the run's output
    labtool check "$1" --out "$RESULTS" --seed "$SEED" \
        --commit "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
}

case ${1:-} in
    list)
        if [[ -n $BIN ]]; then labtool list; else cargo run -q --release -p braid-lab --bin braid-labtool -- list; fi
        ;;
    down) need_root; lock_prefix; down; log "down" ;;
    up)
        need_root; lock_prefix; ensure_tools; build; configure "${2:-redundant-cuts}"
        [[ $OWN_TOPOLOGY == 0 ]] || die "${2} builds its own topology for its run only: scripts/lab.sh run ${2}"
        up; log "running; 'scripts/lab.sh down' removes it. Logs: $RUN"
        ;;
    run)
        shift
        [[ $# -gt 0 ]] || die "run which scenario? (scripts/lab.sh list names them)"
        need_root; lock_prefix; ensure_tools; build
        for name in "$@"; do labtool plan "$name" >/dev/null || die "no scenario $name (try: scripts/lab.sh list)"; done
        trap cleanup EXIT
        failed=()
        for name in "$@"; do
            configure "$name"
            log "=== $name ($MODE)"
            if [[ $OWN_TOPOLOGY == 1 ]]; then down && rm -rf "$RUN" && mkdir -p "$RUN"; else up; fi
            measure "$name" | tee "$RUN/$name.out"
            echo
            verdict "$name" <"$RUN/$name.out" || failed+=("$name")
        done
        [[ ${#failed[@]} -eq 0 ]] || die "failed their bounds: ${failed[*]}"
        ;;
    repeat)
        shift
        [[ ${1:-} =~ ^[1-9][0-9]?$ ]] || die "repeat how many times (1-99)? scripts/lab.sh repeat N NAME..."
        times=$1
        shift
        [[ $# -gt 0 ]] || die "repeat which scenarios? (scripts/lab.sh list names them)"
        need_root; lock_prefix; ensure_tools; build
        for name in "$@"; do labtool plan "$name" >/dev/null || die "no scenario $name (try: scripts/lab.sh list)"; done
        trap cleanup EXIT
        tally=() all_passed=1
        for name in "$@"; do
            passed=0 failed_seeds=""
            for SEED in $(seq 1 "$times"); do
                configure "$name"
                log "=== $name ($MODE): run $SEED of $times (seed $SEED)"
                if [[ $OWN_TOPOLOGY == 1 ]]; then down && rm -rf "$RUN" && mkdir -p "$RUN"; else up; fi
                measure "$name" >"$RUN/$name.out" 2>&1 || true
                if verdict "$name" <"$RUN/$name.out"; then
                    passed=$((passed + 1))
                else
                    failed_seeds+=" $SEED"
                    down
                    rm -rf "$RUN-failed-$name-$SEED" && cp -r "$RUN" "$RUN-failed-$name-$SEED"
                fi
            done
            [[ -z $failed_seeds ]] || all_passed=0
            tally+=("$name: $passed of $times passed${failed_seeds:+ (failed with seeds$failed_seeds)}")
        done
        echo
        printf 'TALLY %s\n' "${tally[@]}"
        [[ $all_passed == 1 ]] || die "not every run held its bounds"
        ;;
    demo)
        need_root; lock_prefix; ensure_tools; build
        trap cleanup EXIT
        configure redundant-cuts
        up
        log "streaming 4 Mbit/s of UDP over ${PROFILES[*]} in redundant mode for 30 s:"
        log "${PROFILES[0]} loses carrier at 5 s, ${PROFILES[1]} is blackholed at 10 s, both return at 15 s, ${PROFILES[2]}'s NAT rebinds at 20 s"
        VIEW=table measure_udp redundant-cuts | tee "$RUN/demo.out"
        echo
        verdict redundant-cuts <"$RUN/demo.out"
        ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
