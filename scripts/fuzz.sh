#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ for a given time each and fails on any
# crash. Usage: scripts/fuzz.sh [-t SECONDS_PER_TARGET] [TARGET...]
#
#   router_process   Router::process, two packets with virtio-net headers
#   wire_parse       wire::parse and what may follow it (rewrites, replies,
#                    virtio-net header checks, GSO segmentation)
#   kube_protobuf    api::kube::protobuf::decode
#   strategic_merge  api::kube::strategic_merge::apply on two JSON documents
#
# Prints, per target, `fuzz.<target>.execs: N` and `fuzz.<target>.crashes: N`
# (a panic, abort, timeout or out-of-memory is a crash; libFuzzer stops at the
# first, so N is 0 or 1), and the path of each crash's input. Reproduce one
# with `cd fuzz && cargo fuzz run --sanitizer none <target> <path>`.
#
# Stable Rust: `--sanitizer none` makes cargo fuzz pass only stable flags
# (-Cpasses=sancov-module and -Cllvm-args for the coverage counters, --cfg
# fuzzing); AddressSanitizer would need nightly and safe Rust gains little
# from it. Installs cargo-fuzz when missing. The corpus grows in
# fuzz/corpus/<target> (not committed) from the seeds in fuzz/seeds/<target>
# (written by `cargo test --lib write_fuzz_seeds -- --ignored`).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
while getopts "t:" opt; do
    case $opt in
        t) seconds=$OPTARG ;;
        *) echo "usage: scripts/fuzz.sh [-t SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(router_process wire_parse kube_protobuf strategic_merge)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

# podnet's own target directory: the fuzz build is for an explicit --target,
# so its instrumented crates sit apart, and the build scripts are shared.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cd fuzz
# All targets in one build: one compilation of podnet with coverage counters.
cargo fuzz build --sanitizer none

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t")
    rc=0
    cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$logs/$t" 2>&1 || rc=$?
    execs=$(awk '/^stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$logs/$t")
    if [ "$execs" -eq 0 ]; then
        # No final statistics after a crash: the last status line's count.
        execs=$(grep -oE '^#[0-9]+' "$logs/$t" | tail -1 | tr -d '#' || true)
        execs=${execs:-0}
    fi
    new=$(comm -13 <(echo "$before") <(ls "artifacts/$t") | sed '/^$/d' || true)
    crashes=$(printf '%s' "$new" | grep -c . || true)
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1 # exited with an error but wrote no input: show the log
    fi
    echo "fuzz.$t.execs: $execs"
    echo "fuzz.$t.crashes: $crashes"
    if [ "$crashes" -ne 0 ]; then
        failed=1
        grep -E -A12 "panicked at|ERROR: libFuzzer|SUMMARY" "$logs/$t" | head -40 >&2 || tail -40 "$logs/$t" >&2
        for a in $new; do
            echo "fuzz.$t.artifact: fuzz/artifacts/$t/$a"
        done
    fi
done
exit $failed
