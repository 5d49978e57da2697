#!/usr/bin/env bash
# braid's lab: a field rig and a datacenter in network namespaces on this machine, real clients
# (iperf3, ping) through the tunnel, uplinks impaired and cut on a schedule.
#
#   scripts/lab.sh demo        the README's demo: redundant mode over 3 impaired uplinks, one cut,
#                              one blackholed, both restored; live link state; a result table
#   scripts/lab.sh list        the scenarios
#   scripts/lab.sh run NAME... run scenarios (each ends with a RESULT line)
#   scripts/lab.sh up | down   build the topology and leave it running | tear it down
#
# Topology (every address lives in namespaces this script creates; all are removed on exit):
#   cam ─ br-lan ─ braid0 [edge] ═ upN ─ [ispN: braid-impair ta⇄tb, NAT] ─ inet ─ [gw] braid-rig ─ br-ing ─ ing
# Needs root. Impairment is braid-impair (userspace, seeded): this kernel has no netem.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
P=blab                         # namespace prefix
RUN=/tmp/braid-lab             # configs, keys, logs, profiles
BIN="$ROOT/target/release"
UPLINKS=3
PROFILES=(dsl lte-good lte-bad)
SEED=${SEED:-1}

ns() { echo "$P-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
log() { printf '[lab %s] %s\n' "$(date +%T)" "$*"; }
die() { printf 'lab: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, TAP, NAT): run it with sudo"; }

ensure_tools() {
    local missing=()
    for cmd in ip nft iperf3 ping jq; do command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]} (iproute2 nftables iperf3 iputils-ping jq)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        iproute2 nftables iperf3 iputils-ping jq >/dev/null
}

build() {
    log "building (release)"
    cargo build --release --workspace --quiet
}

down() {
    local pids
    pids=$(pgrep -f "$RUN/" || true)
    [[ -n $pids ]] && kill $pids 2>/dev/null || true
    sleep 0.3
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
        ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$n" 2>/dev/null || true
    done
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

set_profile() { # link text
    echo "$2" >"$(profile_file "$1")"
    pkill -HUP -f "braid-impair --a ta$1 " || true
}

up() {
    down
    rm -rf "$RUN" && mkdir -p "$RUN"
    for n in inet gw edge cam ing; do add_ns "$n"; done
    veth inet gw0 10.200.0.1/24 gw wan 10.200.0.2/24
    in_ns gw ip route add default via 10.200.0.1
    in_ns inet sysctl -qw net.ipv4.ip_forward=1
    for u in $(seq 1 "$UPLINKS"); do
        local isp="isp$u"
        add_ns "$isp"
        veth inet "i$u" "10.201.$u.1/24" "$isp" ext0 "10.201.$u.2/24"
        in_ns "$isp" ip route add default via "10.201.$u.1"
        in_ns "$isp" sysctl -qw net.ipv4.ip_forward=1
        in_ns "$isp" nft add table ip nat
        in_ns "$isp" nft add chain ip nat post '{ type nat hook postrouting priority 100 ; }'
        in_ns "$isp" nft add rule ip nat post oifname ext0 masquerade
        # The modem: edge's upN ⇄ e0, bridged with TAP ta; braid-impair moves frames ta⇄tb; tb
        # is the ISP's router interface.
        veth edge "up$u" "192.168.$u.2/24" "$isp" e0 ""
        echo "preset=${PROFILES[$((u - 1))]}" >"$(profile_file "$u")"
        in_ns "$isp" "$BIN/braid-impair" --a "ta$u" --b tb --up "$(profile_file "$u")" --down "$(profile_file "$u")" \
            --seed "$((SEED * 10 + u))" >"$RUN/impair$u.log" 2>&1 &
        for _ in $(seq 50); do in_ns "$isp" ip link show tb >/dev/null 2>&1 && break; sleep 0.1; done
        in_ns "$isp" ip link add bre type bridge
        in_ns "$isp" ip link set bre up
        in_ns "$isp" ip link set e0 master bre
        in_ns "$isp" ip link set "ta$u" master bre
        in_ns "$isp" ip addr add "192.168.$u.1/24" dev tb
        in_ns edge ip route add default via "192.168.$u.1" dev "up$u" metric "$((u * 10))"
    done
    veth cam eth0 10.77.0.10/24 edge lan ""
    veth ing eth0 10.77.0.20/24 gw lan0 ""
    in_ns edge ip link add br-lan type bridge; in_ns edge ip link set br-lan up; in_ns edge ip link set lan master br-lan
    in_ns gw ip link add br-ing type bridge; in_ns gw ip link set br-ing up; in_ns gw ip link set lan0 master br-ing

    local gw_pub edge_pub uplinks=""
    gw_pub=$("$BIN/braid-gateway" keygen --out "$RUN/gateway.key")
    edge_pub=$("$BIN/braid-edge" keygen --out "$RUN/edge.key")
    for u in $(seq 1 "$UPLINKS"); do uplinks+="  - name: ${PROFILES[$((u - 1))]}
    interface: up$u
"; done
    cat >"$RUN/edge.yaml" <<EOF
private_key_file: $RUN/edge.key
gateway:
  address: 10.200.0.2:4754
  public_key: $gw_pub
mode: ${MODE:-redundant}
tap:
  name: braid0
  bridge: br-lan
uplinks:
$uplinks
EOF
    cat >"$RUN/gateway.yaml" <<EOF
private_key_file: $RUN/gateway.key
listen: ["10.200.0.2:4754"]
mode: ${MODE:-redundant}
edges:
  - name: rig
    public_key: $edge_pub
    tap: braid-rig
    bridge: br-ing
EOF
    in_ns gw "$BIN/braid-gateway" run --config "$RUN/gateway.yaml" >"$RUN/gateway.log" 2>&1 &
    in_ns edge "$BIN/braid-edge" run --config "$RUN/edge.yaml" >"$RUN/edge.log" 2>&1 &
    for _ in $(seq 100); do in_ns cam ping -c1 -W1 10.77.0.20 >/dev/null 2>&1 && { log "tunnel up"; return 0; }; sleep 0.2; done
    tail -20 "$RUN/edge.log" "$RUN/gateway.log" >&2
    die "the tunnel did not come up"
}

link_states() {
    in_ns edge "$BIN/braid-edge" status --config "$RUN/edge.yaml" 2>/dev/null |
        jq -r '[.session.links[] | "\(.name)=\(.state)\(if .rtt_ms then "(\(.rtt_ms|floor)ms)" else "" end)"] | join("  ")' 2>/dev/null || echo "(no status)"
}

# Runs iperf3 UDP at RATE for SECS while the timeline runs; prints a RESULT line and a table.
stream_with_timeline() { # name rate secs timeline-function
    local name=$1 rate=$2 secs=$3 timeline=$4
    in_ns ing iperf3 -s -1 -J >"$RUN/iperf-server.json" 2>/dev/null &
    local server=$!
    sleep 0.5
    in_ns cam ping -D -i 0.02 -w "$secs" 10.77.0.20 >"$RUN/ping.txt" 2>&1 &
    in_ns cam iperf3 -c 10.77.0.20 -u -b "$rate" -l 1200 -t "$secs" -J >"$RUN/iperf-client.json" 2>/dev/null &
    local client=$!
    "$timeline" "$secs"
    wait "$client" || true
    wait "$server" || true
    local sent lost ooo p50 p99 gap
    sent=$(jq '.end.sum.packets // 0' "$RUN/iperf-server.json")
    lost=$(jq '.end.sum.lost_packets // 0' "$RUN/iperf-server.json")
    ooo=$(jq '[.intervals[].streams[0].out_of_order // 0] | add // 0' "$RUN/iperf-server.json")
    read -r p50 p99 < <(grep -o 'time=[0-9.]*' "$RUN/ping.txt" | cut -d= -f2 | sort -n |
        awk '{v[NR]=$1} END {if (NR) printf "%.1f %.1f\n", v[int(NR*0.5)+(NR*0.5>int(NR*0.5))], v[int(NR*0.99)+(NR*0.99>int(NR*0.99))]; else print "- -"}')
    # The longest silence between two ping replies (every 20 ms): how long the stream stalled.
    gap=$(grep -o '^\[[0-9.]*\]' "$RUN/ping.txt" | tr -d '[]' |
        awk 'NR > 1 { d = ($1 - p) * 1000; if (d > m) m = d } { p = $1 } END { printf "%.0f", m }')
    echo
    echo "RESULT scenario=$name mode=${MODE:-redundant} sent=$sent lost=$lost dup=- reordered=$ooo max_gap_ms=$gap p50_ms=$p50 p99_ms=$p99 goodput_mbps=- cc_errors=-"
    printf '\n%-18s %-14s %8s %6s %10s %11s %8s %8s\n' scenario mode sent lost reordered max_gap_ms p50_ms p99_ms
    printf '%-18s %-14s %8s %6s %10s %11s %8s %8s\n' "$name" "${MODE:-redundant}" "$sent" "$lost" "$ooo" "$gap" "$p50" "$p99"
}

cuts_timeline() { # secs
    local t=0 secs=$1
    while ((t < secs)); do
        case $t in
            6) log "cut: ${PROFILES[0]} loses carrier"; in_ns edge ip link set up1 down ;;
            12) log "cut: ${PROFILES[1]} blackholed"; set_profile 2 "preset=${PROFILES[1]} blackhole=1" ;;
            18) log "restore both"; restore_uplink 1; set_profile 2 "preset=${PROFILES[1]}" ;;
        esac
        ((t % 2 == 0)) && log "links: $(link_states)"
        sleep 1
        t=$((t + 1))
    done
}

quiet_timeline() { sleep "$1"; }

# The first uplink is blackholed for 200 ms, then restored for 200 ms, for 10 s from 4 s on.
flap_timeline() { # secs
    sleep 4
    log "flap: ${PROFILES[0]} every 200 ms for 10 s"
    for _ in $(seq 25); do
        set_profile 1 "preset=${PROFILES[0]} blackhole=1"; sleep 0.2
        set_profile 1 "preset=${PROFILES[0]}"; sleep 0.2
    done
    log "links: $(link_states)"
    sleep $(($1 - 14))
}

# The gateway is killed (SIGKILL: no goodbye) at 6 s and started again right away.
restart_timeline() { # secs
    sleep 6
    log "gateway: SIGKILL and restart"
    pkill -9 -f "braid-gateway run --config $RUN/gateway.yaml" || true
    sleep 0.2
    in_ns gw "$BIN/braid-gateway" run --config "$RUN/gateway.yaml" >>"$RUN/gateway.log" 2>&1 &
    for t in $(seq 2 2 $(($1 - 8))); do sleep 2; log "links: $(link_states)"; done
}

scenario_baseline() { stream_with_timeline baseline 4M 10 quiet_timeline; }
scenario_redundant_cuts() { stream_with_timeline redundant-cuts 4M 26 cuts_timeline; }
scenario_active_backup_cuts() { stream_with_timeline active-backup-cuts 4M 26 cuts_timeline; }
scenario_flap() { stream_with_timeline flap 4M 20 flap_timeline; }
scenario_gateway_restart() { stream_with_timeline gateway-restart 4M 16 restart_timeline; }

SCENARIOS=(baseline redundant-cuts active-backup-cuts flap gateway-restart)

# The mode a scenario runs in.
mode_of() { [[ $1 == active-backup-* ]] && echo active-backup || echo redundant; }

case ${1:-} in
    list) printf '%s\n' "${SCENARIOS[@]}" ;;
    down) need_root; down; log "down" ;;
    up) need_root; ensure_tools; build; up; log "running; 'scripts/lab.sh down' removes it. Logs: $RUN" ;;
    run)
        shift
        [[ $# -gt 0 ]] || die "run which scenario? ($(printf '%s ' "${SCENARIOS[@]}"))"
        need_root; ensure_tools; build
        trap down EXIT
        for name in "$@"; do
            [[ " ${SCENARIOS[*]} " == *" $name "* ]] || die "no scenario $name (try: scripts/lab.sh list)"
            MODE=$(mode_of "$name")
            up
            "scenario_${name//-/_}"
        done
        ;;
    demo)
        need_root; ensure_tools; build
        trap down EXIT
        up
        log "streaming 4 Mbit/s of UDP over ${PROFILES[*]} in redundant mode for 26 s"
        scenario_redundant_cuts
        ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
