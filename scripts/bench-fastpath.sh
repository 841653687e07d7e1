#!/usr/bin/env bash
# Fast-path benchmarks (criterion, single thread, medians) printed as
# `name: value` lines. Usage: scripts/bench-fastpath.sh [MEASUREMENT_SECONDS]
#
#   fastpath.hit_ns               64-byte TCP packet of an established flow:
#                                 conntrack hit, rewrite, checksums (Worker path)
#   fastpath.hit_unbatched_ns     the same through Router::process
#   fastpath.new_flow_ns          SYN of a new flow: miss, service lookup,
#                                 Maglev, conntrack insert, rewrite
#   fastpath.hit_ns_under_updates hit while another thread publishes 1,000
#                                 endpoint changes per second
#   fastpath.update_slowdown      hit_ns_under_updates / hit_ns
#   snapshot.update_us            one service's endpoints changed with
#                                 10,000 services x 10 endpoints loaded
#   maglev.build_ms               Maglev table for 1,000 backends
#   conntrack.bytes_per_flow      heap bytes per flow with 1,000,000 flows
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
crit="$target/criterion"

args=(--warm-up-time 1 --measurement-time "$secs" --noplot)
cargo bench --bench fastpath -- "${args[@]}" >&2
cargo bench --bench maglev -- "${args[@]}" '^maglev/build_1000$' >&2

median() { # criterion directory -> median in ns
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$crit/$1/new/estimates.json"
}
fmt() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.{sys.argv[3]}f}")' "$@"; }

hit=$(median fastpath_hit)
under=$(median fastpath_hit_under_updates)
echo "fastpath.hit_ns: $(fmt "$hit" 1 1)"
echo "fastpath.hit_unbatched_ns: $(fmt "$(median fastpath_hit_unbatched)" 1 1)"
echo "fastpath.new_flow_ns: $(fmt "$(median fastpath_new_flow)" 1 1)"
echo "fastpath.hit_ns_under_updates: $(fmt "$under" 1 1)"
echo "fastpath.update_slowdown: $(fmt "$under" "$hit" 3)"
echo "snapshot.update_us: $(fmt "$(median snapshot_update)" 1000 2)"
echo "maglev.build_ms: $(fmt "$(median maglev/build_1000)" 1000000 2)"
cargo bench --bench conntrack_memory 2>/dev/null | grep '^conntrack.bytes_per_flow:'
