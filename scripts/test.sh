#!/usr/bin/env bash
# The project's one test command, run by developers and by CI (.ci/run).
#
#   scripts/test.sh           both tiers
#   scripts/test.sh --fast    the fast tier only
#
# The fast tier: formatting, clippy, the engine built alone with no runtime dependency, and the
# tests that need neither root nor real time (unit, doc, property, simulation, security and gateway
# tests). The root tier: system packages for the lab (and cargo-deb), the netns end-to-end,
# observability (browser included), Debian package and lab tests, then clippy on the fuzz
# targets and a 10-second fuzz smoke run of each.
# Stops at the first failing step. With CI=true, a skipped fuzz run or root test is a failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

FAST_ONLY=false
case "${1:-}" in
    "") ;;
    --fast) FAST_ONLY=true ;;
    *)
        echo "usage: $0 [--fast]" >&2
        exit 2
        ;;
esac

FUZZ_SECONDS=${FUZZ_SECONDS:-10}
# A run of this script builds from scratch or nearly: incremental compilation only adds work.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
FUZZ_TARGETS=(datagram session handshake)

step_no=0
started=$SECONDS
step_started=$SECONDS
step_took() {
    printf '(step %d took %ds)\n' "$step_no" $((SECONDS - step_started))
}
banner() {
    [[ $step_no -gt 0 ]] && step_took
    step_no=$((step_no + 1))
    step_started=$SECONDS
    printf '\n==== [%d] %s ====\n' "$step_no" "$*"
}

fail() {
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
}

# The netns lab drives real clients (iperf3, ffmpeg), checks the wire format with tshark and
# impairs links with ip and nft; the dashboard test drives headless Chromium through
# chromedriver. A failed install warns here; the tests that need a missing tool then skip
# (and fail under CI=true).
# Each command the tests run, and the Debian package that provides it.
NEEDED=(iperf3:iperf3 ffmpeg:ffmpeg ffprobe:ffmpeg tshark:tshark dumpcap:wireshark-common ip:iproute2
    nft:nftables ping:iputils-ping jq:jq srt-live-transmit:srt-tools conntrack:conntrack keepalived:keepalived
    chromium:chromium chromedriver:chromium-driver lintian:lintian etcd:etcd-server etcdctl:etcd-client)

ensure_packages() {
    local missing=() packages=() pair
    for pair in "${NEEDED[@]}"; do
        if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
            missing+=("${pair%%:*}")
            [[ " ${packages[*]} " == *" ${pair#*:} "* ]] || packages+=("${pair#*:}")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all present: ${NEEDED[*]%%:*}"
        return 0
    fi
    echo "missing commands: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "not root: not installing (run as root, or apt-get install ${packages[*]})"
        return 0
    fi
    echo "installing ${packages[*]} with apt-get"
    # tshark's postinst asks whether non-root users may capture; answer no, without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    local log
    log=$(mktemp)
    if DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}" >>"$log" 2>&1; then
        echo "installed ($(grep -c '^Setting up ' "$log" || true) packages set up)"
    else
        tail -n 20 "$log"
        echo "WARNING: apt-get install failed; the lab will not run on this machine"
    fi
    rm -f "$log"
}

ensure_rust_components() {
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: install the Rust toolchain (rust-version is in Cargo.toml)"
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        echo "adding rustfmt and clippy"
        rustup component add rustfmt clippy
    fi
}

# etcd-client's build generates its gRPC code with protoc, which needs the well-known types
# (google/protobuf/*.proto) that Debian ships apart, in libprotobuf-dev.
PROTO_PACKAGES=(protobuf-compiler libprotobuf-dev)
ensure_protoc() {
    command -v protoc >/dev/null 2>&1 && [[ -f /usr/include/google/protobuf/descriptor.proto ]] && return 0
    [[ $(id -u) -eq 0 ]] ||
        fail "protoc or its well-known types not found: the build needs them (apt-get install ${PROTO_PACKAGES[*]})"
    echo "installing ${PROTO_PACKAGES[*]} with apt-get (the build needs protoc)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PROTO_PACKAGES[@]}" >/dev/null 2>&1 ||
        { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PROTO_PACKAGES[@]}" >/dev/null 2>&1; } ||
        fail "installing ${PROTO_PACKAGES[*]} failed: the build needs protoc"
}

# Runs `cargo test` with the given target selection, keeps its output, and adds its per-binary
# "test result" lines to the totals.
tests_passed=0
tests_failed=0
tests_ignored=0
skipped=()
run_tests() {
    local log rc=0 passed=0 failed=0 ignored=0
    log=$(mktemp)
    cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?
    if grep -q '^test result: ' "$log"; then
        read -r passed failed ignored < <(
            sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored;.*/\1 \2 \3/p' "$log" |
                awk '{ p += $1; f += $2; i += $3 } END { print p + 0, f + 0, i + 0 }'
        )
    fi
    mapfile -t -O "${#skipped[@]}" skipped < <(grep -E '^SKIP ' "$log" || true)
    if [[ $rc -ne 0 ]]; then
        # What failed, once more at the end where a truncated log still shows it: each panic with
        # its message, and each lab or simulation verdict that failed.
        echo "==== what failed"
        grep -aE -A2 'panicked at' "$log" | cut -c1-2000 || true
        grep -aE '\] FAIL: ' "$log" | cut -c1-2000 || true
    fi
    rm -f "$log"
    tests_passed=$((tests_passed + passed))
    tests_failed=$((tests_failed + failed))
    tests_ignored=$((tests_ignored + ignored))
    if [[ $rc -ne 0 ]]; then
        echo "${tests_passed} passed, ${tests_failed} failed"
        fail "cargo test $* (exit $rc)"
    fi
}

# The test targets of each tier. Every test target of the workspace is in one of them (checked
# below), so a new one cannot be left out of both.
FAST_TESTS=(--lib --bins --test wire_props --test simulation --test security --test gateways --test emulator --test check_config
    --test keygen --test docs_links --test scenarios)
ROOT_TESTS=(--test netns --test fleet --test observability --test packages --test lab)

# Fails if a test target of the workspace is in neither tier.
check_tiers() {
    local listed file name missing=()
    listed=" ${FAST_TESTS[*]} ${ROOT_TESTS[*]} "
    for file in tests/*.rs */tests/*.rs; do
        name=$(basename "$file" .rs)
        [[ $listed == *" --test $name "* ]] || missing+=("$name")
    done
    [[ ${#missing[@]} -eq 0 ]] || fail "test targets in neither tier of scripts/test.sh: ${missing[*]}"
}

# The sans-IO engine is a crate of its own; it builds by itself, and no I/O crate may appear
# among its normal dependencies, directly or through another crate.
ENGINE_FORBIDDEN=(tokio mio socket2 quinn-udp tun-rs rtnetlink netlink-proto clap axum hyper prometheus-client)

engine_boundary() {
    cargo check -p braid-engine --lib
    local tree name found=()
    tree=$(cargo tree -p braid-engine -e normal --prefix none --format '{p}')
    for name in "${ENGINE_FORBIDDEN[@]}"; do
        grep -qE "^${name} v" <<<"$tree" && found+=("$name")
    done
    [[ ${#found[@]} -eq 0 ]] || fail "braid-engine depends on I/O crates: ${found[*]}"
    echo "braid-engine: $(sort -u <<<"$tree" | wc -l) crates, none of: ${ENGINE_FORBIDDEN[*]}"
}

# The package test builds the Debian packages with cargo-deb.
ensure_cargo_deb() {
    if cargo deb --version >/dev/null 2>&1; then
        echo "cargo-deb: $(cargo deb --version 2>&1 | head -n 1)"
    elif [[ $(id -u) -eq 0 ]]; then
        echo "cargo-deb is not installed: cargo install cargo-deb --locked"
        cargo install cargo-deb --locked --quiet || echo "WARNING: installing cargo-deb failed; the package test will skip"
    fi
}

# The [profile.dev*] sections of a manifest, without comments or blank lines.
dev_profile() {
    awk '/^\[/ { on = /^\[profile\.dev/ } on && NF && !/^#/' "$1"
}

fuzz_smoke() {
    local reason=""
    if ! cargo +nightly --version >/dev/null 2>&1; then
        reason="no nightly toolchain (cargo-fuzz needs nightly: rustup toolchain install nightly)"
    elif ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked"
        cargo install cargo-fuzz --locked || reason="installing cargo-fuzz failed"
    fi
    if [[ -n $reason ]]; then
        echo "SKIP fuzz: $reason"
        [[ ${CI:-} == true ]] && fail "fuzz skipped under CI"
        return 0
    fi
    local target scratch
    for target in "${FUZZ_TARGETS[@]}"; do
        echo "--- fuzz $target for ${FUZZ_SECONDS}s"
        # libFuzzer writes new inputs into the first corpus directory only, so a scratch
        # directory goes first and the committed seeds are read, never changed.
        scratch=$(mktemp -d)
        # Every new input prints a NEW or REDUCE line; keep the log to pulses, stats and crashes.
        # No sanitizer: braid forbids unsafe code, and a panic (what the targets look for) is
        # caught without one; the build is faster and each second runs more inputs.
        if ! (cd fuzz && cargo +nightly fuzz run --sanitizer none "$target" "$scratch" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 |
            { grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE) ' || true; }); then
            rm -rf "$scratch"
            fail "fuzz target $target (the crashing input is under fuzz/artifacts/$target/)"
        fi
        rm -rf "$scratch"
    done
}

banner "fast tier: toolchain"
ensure_rust_components
ensure_protoc

banner "cargo fmt --check"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)
if ! diff <(dev_profile Cargo.toml) <(dev_profile fuzz/Cargo.toml); then
    fail "fuzz/Cargo.toml's [profile.dev] sections differ from Cargo.toml's (above): copy them, so that the fuzz crate's clippy reuses the workspace's build"
fi

banner "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

banner "the engine builds alone, with no runtime dependency"
engine_boundary

banner "fast tier: unit, doc, property, simulation and security tests"
check_tiers
run_tests "${FAST_TESTS[@]}"
run_tests --doc

if [[ $FAST_ONLY == false ]]; then
    banner "root tier: system packages"
    ensure_packages
    ensure_cargo_deb

    banner "root tier: netns, observability, package and lab tests"
    # Their captured output is shown, so that a test that skipped (it printed SKIP: not root,
    # or a tool missing) is listed by name below.
    run_tests "${ROOT_TESTS[@]}" -- --show-output
    if [[ ${#skipped[@]} -gt 0 ]]; then
        printf 'skipped: %s\n' "${skipped[@]#SKIP }"
        [[ ${CI:-} == true ]] && fail "${#skipped[@]} tests skipped, and CI=true allows no skip"
    fi

    banner "root tier: fuzz targets: clippy and a smoke run"
    # Here rather than in the fast tier: checking the fuzz crate (a workspace of its own) builds
    # libFuzzer's C++. In the main target directory it reuses what the workspace's check did.
    cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --all-targets -- -D warnings
    fuzz_smoke
fi

step_took
printf '\n==== all steps passed in %dm%02ds ====\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60))
[[ $tests_ignored -gt 0 ]] && echo "(${tests_ignored} ignored)"
[[ ${#skipped[@]} -gt 0 ]] && echo "(${#skipped[@]} skipped, listed above: run as root with the lab's tools to run them)"
echo "${tests_passed} passed, ${tests_failed} failed"
[[ $FAST_ONLY == true ]] && echo "(fast tier only: the root tier did not run)"
exit 0
