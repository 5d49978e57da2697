#!/usr/bin/env bash
# Compares the goodput of one TCP stream through `bond` over three unimpaired, uncapped links
# between this checkout and another revision, both built and run on this machine in turns (B, A,
# B, A, ...), so that what the machine does meanwhile weighs on both alike. Each revision runs
# its own lab with its own binaries (their configs differ between revisions): this checkout its
# `bond-uncapped`; the other its `bond-uncapped` if it has one, else its `baseline` switched to
# `bond` (the same links, the same stream and the direct path beside it). Prints each run's
# goodput and its share of the direct path measured in the same run, then the ratio of this
# checkout's median goodput to the other's.
#
#   scripts/throughput-compare.sh REV [ROUNDS]     e.g. scripts/throughput-compare.sh acb4ef4 3
#
# Needs root, as the lab. The other revision is checked out and built in a scratch directory,
# removed on exit; OTHER_TARGET names a target directory to build it in instead (kept, so a
# second comparison skips the build). BIN, as the lab's, gives this checkout's binaries prebuilt.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "needs root (the lab builds network namespaces)" >&2; exit 2; }
DEFAULT_ROUNDS=3
# shellcheck source=lib/other-revision.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/other-revision.sh"
OTHER_TARGET=${OTHER_TARGET:-$SCRATCH/target-other}
# The machine's own TCP congestion control on both sides: older labs know no LAB_TCP_CC and
# leave their streams to it.
LAB_TCP_CC=$(sysctl -n net.ipv4.tcp_congestion_control)
export LAB_TCP_CC

echo "building $REV and this checkout (release)"
(cd "$SCRATCH/other" && CARGO_TARGET_DIR=$OTHER_TARGET cargo build --release --workspace --bins --quiet)
OTHER_BIN=$OTHER_TARGET/release
if [[ -z ${BIN:-} ]]; then
    cargo build --release --workspace --bins --quiet
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi

# The other revision's scenario: its bond-uncapped, or its baseline in bond mode.
OTHER_SCENARIO=bond-uncapped
if ! (cd "$SCRATCH/other" && bash scripts/lab.sh list) | grep -qx bond-uncapped; then
    OTHER_SCENARIO=baseline
    lab=$SCRATCH/other/scripts/lab.sh
    grep -q '^        baseline) IMPAIR=0 DIRECT=1 ;;$' "$lab" ||
        { echo "$REV has neither bond-uncapped nor a baseline this script can switch to bond" >&2; exit 2; }
    sed -i 's/^        baseline) IMPAIR=0 DIRECT=1 ;;$/        baseline) IMPAIR=0 DIRECT=1 MODE=bond ;;/' "$lab"
fi

# One run of `scenario` with the lab of `dir` and the binaries in `bin`: "goodput direct" in
# Mbit/s, or "- -" with the end of the lab's log on stderr if the run printed no result. A
# RESULT line gives either figure in bit/s (`goodput_bps`) or, in older labs, in Mbit/s
# (`goodput_mbps`).
run_once() { # dir bin scenario label
    local log=$SCRATCH/$4.log
    (cd "$1" && BIN=$2 LAB_RUN=$SCRATCH/run LAB_RESULTS=$SCRATCH/results timeout 300 bash scripts/lab.sh run "$3") >"$log" 2>&1 || true
    grep -q '^RESULT ' "$log" || { echo "$4: no result; the lab's log ends:" >&2; tail -n 15 "$log" >&2; }
    grep -m1 '^RESULT ' "$log" | tr ' ' '\n' | awk -F= '
        $1 == "goodput_bps" { g = $2 / 1e6 } $1 == "goodput_mbps" { g = $2 }
        $1 == "direct_goodput_bps" { d = $2 / 1e6 } $1 == "direct_goodput_mbps" { d = $2 }
        END { if (g != "" && d != "") printf "%.1f %.1f\n", g, d; else print "- -" }'
}

median() { sort -n | awk '{v[NR] = $1} END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print "-" }'; }

: >"$SCRATCH/this.txt"
: >"$SCRATCH/other.txt"
printf '%-6s %-14s %14s %14s %8s\n' round revision goodput_mbps direct_mbps of_direct
for round in $(seq 1 "$ROUNDS"); do
    for side in this other; do
        if [[ $side == this ]]; then
            read -r goodput direct <<<"$(run_once "$PWD" "$BIN" bond-uncapped "this-$round")"
            name=$(git rev-parse --short HEAD)
        else
            read -r goodput direct <<<"$(run_once "$SCRATCH/other" "$OTHER_BIN" "$OTHER_SCENARIO" "other-$round")"
            name=$(git rev-parse --short "$REV")
        fi
        share=$(awk -v g="$goodput" -v d="$direct" 'BEGIN { if (g + 0 > 0 && d + 0 > 0) printf "%.3f", g / d; else print "-" }')
        printf '%-6s %-14s %14s %14s %8s\n' "$round" "$name" "$goodput" "$direct" "$share"
        [[ $goodput == - ]] || echo "$goodput" >>"$SCRATCH/$side.txt"
    done
done
this=$(median <"$SCRATCH/this.txt")
other=$(median <"$SCRATCH/other.txt")
echo "median goodput: this checkout $this Mbit/s, $REV $other Mbit/s"
if [[ $this == - || $other == - ]]; then
    echo "no run of one side printed a result" >&2
    exit 1
fi
awk -v a="$this" -v b="$other" -v r="$REV" 'BEGIN { printf "ratio: %.2fx %s\n", a / b, r }'
