#!/usr/bin/env bash
# Fast-path benchmarks (criterion, single thread, medians) printed as
# `name: value` lines. Usage: scripts/bench-fastpath.sh [MEASUREMENT_SECONDS]
#
#   fastpath.hit_ns               64-byte TCP packet of an established flow:
#                                 conntrack hit, rewrite, checksums (Worker path)
#   fastpath.hit_unbatched_ns     the same through Router::process
#   fastpath.gso_rewrite_ns       the same flow's 64 KiB TSO super-packet with
#                                 a partial checksum (NEEDS_CSUM): headers and
#                                 seed rewritten, the payload untouched
#   fastpath.new_flow_ns          SYN of a new flow: miss, service lookup,
#                                 Maglev, conntrack insert, rewrite
#   policy.new_flow_ns            the same with 1,000 NetworkPolicies loaded
#                                 (the backends isolated, the clients let in
#                                 by an ipBlock rule)
#   policy.new_flow_ratio         policy.new_flow_ns / fastpath.new_flow_ns,
#                                 paired per run (target <= 1.2)
#   fastpath.hit_ns_under_updates hit while another thread publishes 1,000
#                                 endpoint changes per second
#   fastpath.update_slowdown      hit_ns_under_updates / hit_ns
#   snapshot.update_us            one service's endpoints changed with
#                                 10,000 services x 10 endpoints loaded
#   maglev.build_ms               Maglev table for 1,000 backends
#   conntrack.bytes_per_flow      heap bytes per flow with 1,000,000 flows
#   fastpath.new_flow_instructions  instructions per new flow (callgrind)
#   fastpath.hit_instructions     instructions per conntrack hit (callgrind)
#   fastpath.new_flow_cache_misses  last-level misses per new flow, reads
#                                 and writes, callgrind simulating a 2 MiB
#                                 cache (one core's L2 here); prefetches
#                                 are not modelled, so this overstates what
#                                 the hardware waits for
#
# hit_ns, new_flow_ns, policy.new_flow_ns, hit_ns_under_updates,
# update_slowdown and policy.new_flow_ratio are medians
# over RUNS (default 5) criterion runs, each printed with its range
# (NAME_range: min-max): on a shared VM one run's median moves by a quarter
# from minute to minute. The callgrind counts do not move.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
crit="$target/criterion"

args=(--warm-up-time 1 --measurement-time "$secs" --noplot)
median() { # criterion directory -> median in ns
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$crit/$1/new/estimates.json"
}
fmt() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.{sys.argv[3]}f}")' "$@"; }
# stats NAME VALUES... -> "NAME: median" and "NAME_range: min-max"
stats() {
    python3 -c 'import statistics,sys
n=sys.argv[1]; d=int(sys.argv[2]); v=[float(x) for x in sys.argv[3:]]
print(f"{n}: {statistics.median(v):.{d}f}")
if len(v) > 1: print(f"{n}_range: {min(v):.{d}f}-{max(v):.{d}f}")' "$@"
}

# The everything run, then more runs of the figures that move.
cargo bench --bench fastpath -- "${args[@]}" >&2
cargo bench --bench maglev -- "${args[@]}" '^maglev/build_1000$' >&2
echo "fastpath.hit_unbatched_ns: $(fmt "$(median fastpath_hit_unbatched)" 1 1)"
echo "fastpath.gso_rewrite_ns: $(fmt "$(median fastpath_gso_rewrite)" 1 1)"
echo "snapshot.update_us: $(fmt "$(median snapshot_update)" 1000 2)"
echo "maglev.build_ms: $(fmt "$(median maglev/build_1000)" 1000000 2)"
hit=() under=() slowdown=() new_flow=() policy_flow=() policy_ratio=()
for run in $(seq "${RUNS:-5}"); do
    if [ "$run" -gt 1 ]; then
        cargo bench --bench fastpath -- "${args[@]}" '^(fastpath/(hit|hit_under_updates|new_flow)|policy/new_flow)$' >&2
    fi
    h=$(median fastpath_hit) u=$(median fastpath_hit_under_updates)
    n=$(median fastpath_new_flow) p=$(median policy_new_flow)
    hit+=("$h") under+=("$u") new_flow+=("$n") policy_flow+=("$p")
    policy_ratio+=("$(fmt "$p" "$n" 4)")
    slowdown+=("$(fmt "$u" "$h" 4)")
done
stats fastpath.hit_ns 1 "${hit[@]}"
stats fastpath.new_flow_ns 1 "${new_flow[@]}"
stats policy.new_flow_ns 1 "${policy_flow[@]}"
stats policy.new_flow_ratio 3 "${policy_ratio[@]}"
stats fastpath.hit_ns_under_updates 1 "${under[@]}"
# Paired per run (both measured back to back), then the median.
stats fastpath.update_slowdown 3 "${slowdown[@]}"
cargo bench --bench conntrack_memory 2>/dev/null | grep '^conntrack.bytes_per_flow:'

# Instruction and cache-miss counts per new flow under callgrind.
if ! command -v valgrind >/dev/null; then
    apt-get install -y valgrind >&2 || { apt-get update >&2 && apt-get install -y valgrind >&2; }
fi
cargo bench --bench new_flow_count --no-run >&2
count_bin=$(cargo bench --bench new_flow_count --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="new_flow_count" and m.get("executable"): print(m["executable"])')
out=$(mktemp) hits_out=$(mktemp)
trap 'rm -f "$out" "$hits_out"' EXIT
rounds=40
sim=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64)
valgrind --tool=callgrind "${sim[@]}" --toggle-collect='new_flow_count::one_packet' \
    --callgrind-out-file="$out" "$count_bin" --bench "$rounds" >&2 2>/dev/null
valgrind --tool=callgrind "${sim[@]}" --toggle-collect='new_flow_count::one_hit' \
    --callgrind-out-file="$hits_out" "$count_bin" --bench "$rounds" >&2 2>/dev/null
python3 - "$out" "$hits_out" "$rounds" <<'PY'
import sys
def counts(path):
    events, totals = None, None
    for line in open(path):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("totals:") or line.startswith("summary:"):
            totals = [int(x) for x in line.split()[1:]]
    return dict(zip(events, totals))
c = counts(sys.argv[1])
flows = int(sys.argv[3]) * 4096
print(f"fastpath.new_flow_instructions: {c['Ir'] / flows:.0f}")
print(f"fastpath.new_flow_cache_misses: {(c['DLmr'] + c['DLmw']) / flows:.2f}")
h = counts(sys.argv[2])
print(f"fastpath.hit_instructions: {h['Ir'] / 100_000:.0f}")
PY
