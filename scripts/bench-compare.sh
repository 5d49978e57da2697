#!/usr/bin/env bash
# Compares the engine's criterion benchmarks of this checkout with another revision, in one run
# on one machine: this checkout's benches/engine.rs is built against both (so only the engine
# differs), then the two run in turns (A, B, A, B, ...), so that what the machine does meanwhile
# weighs on both alike. Prints, per benchmark, the median over the
# rounds of this checkout's time per iteration divided by the other's (below 1: this one is
# faster).
#
#   scripts/bench-compare.sh REV [ROUNDS]     e.g. scripts/bench-compare.sh main~3 5
#
# The other revision is checked out in a scratch worktree, removed on exit. Needs jq.
set -euo pipefail

command -v jq >/dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 2; }
DEFAULT_ROUNDS=5
# shellcheck source=lib/other-revision.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/other-revision.sh"
# Both run this checkout's benchmark code, so that only the engine under it differs.
cp benches/engine.rs "$SCRATCH/other/benches/engine.rs"

# The bench executable of the checkout in $1, built into the target directory $2.
bench_binary() {
    (cd "$1" && CARGO_TARGET_DIR=$2 cargo bench --bench engine --no-run --message-format=json 2>/dev/null) |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "engine" and .executable != null) | .executable' |
        tail -n 1
}
echo "building $REV and this checkout"
BASE_BIN=$(bench_binary "$SCRATCH/other" "$SCRATCH/target-base")
HEAD_BIN=$(bench_binary "$PWD" "${CARGO_TARGET_DIR:-$PWD/target}")
[[ -x $BASE_BIN ]] || { echo "benches/engine.rs does not build against $REV" >&2; exit 1; }
[[ -x $HEAD_BIN ]] || { echo "benches/engine.rs does not build" >&2; exit 1; }

# Mean time per iteration (ns) of every benchmark one run of $1 measured, as "id ns" lines.
run_once() {
    local home
    home=$(mktemp -d -p "$SCRATCH")
    CRITERION_HOME=$home "$1" --bench --warm-up-time 1 --measurement-time 3 >"$home.log" 2>&1 ||
        { tail -n 20 "$home.log" >&2; echo "the benchmark $1 failed" >&2; exit 1; }
    find "$home" -path '*/new/estimates.json' | while read -r file; do
        local id=${file#"$home"/}
        printf '%s %s\n' "${id%/new/estimates.json}" "$(jq '.mean.point_estimate' "$file")"
    done
}

: >"$SCRATCH/ratios"
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS"
    run_once "$BASE_BIN" | sort >"$SCRATCH/other.txt"
    run_once "$HEAD_BIN" | sort >"$SCRATCH/head.txt"
    join "$SCRATCH/other.txt" "$SCRATCH/head.txt" | awk '{ printf "%s %.4f\n", $1, $3 / $2 }' >>"$SCRATCH/ratios"
done

echo
echo "benchmark: median of (this checkout / $REV) over $ROUNDS rounds, and the range"
sort -k1,1 -k2,2n "$SCRATCH/ratios" | awk '
    { id = $1; v[id, ++n[id]] = $2 }
    END {
        for (id in n) {
            k = n[id]; mid = (k % 2) ? v[id, (k + 1) / 2] : (v[id, k / 2] + v[id, k / 2 + 1]) / 2
            printf "%-40s %.3f  (%.3f-%.3f)\n", id, mid, v[id, 1], v[id, k]
        }
    }' | sort
