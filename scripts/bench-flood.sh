#!/usr/bin/env bash
# One pod SYN-floods a six-port service (raw socket, every source port)
# while another pod opens 400 real TCP connections through the same cluster
# IP, with podnetd in namespaces made for the run (root). The
# scenario is the root test tests/root_flood.rs, built in release mode and
# run once; this script prints its figures as `name: value` lines:
#   flood.other_pod_success_ratio  connections of the other pod that got
#                                  their answer, out of 400 (>= 0.99 passes)
#   flood.rss_mb_peak              podnetd's peak resident memory (VmHWM)
#   flood.rss_mb_before            the same before the flood began
#   flood.conntrack_entries_at_share  table entries when the flood was first
#                                  refused (its share reached)
#   flood.max_per_source           entries one source may hold
# Everything (the node namespace, the pods' namespaces, their processes) is
# removed on exit, also when interrupted.
# Usage: sudo scripts/bench-flood.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"

pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
cd "$here/.."

bin=$(cargo test --release --test root_flood --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="root_flood" and m.get("executable"): print(m["executable"])')
[ -x "$bin" ] || { pn_err "cannot build tests/root_flood.rs"; exit 1; }

out=$(mktemp)
test_pid=
cleanup_flood() {
    # The test removes what it made when it ends by itself; interrupted, it
    # cannot: its namespaces are named after its pid (pnk-PID-N for the
    # node, tPIDkN.POD for the pods).
    if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
        kill -9 "$test_pid" 2>/dev/null || true
        wait "$test_pid" 2>/dev/null || true
    fi
    if [ -n "$test_pid" ]; then
        local n
        for n in $(ip netns list | awk '{print $1}' | grep -E "^(t${test_pid}k[0-9]+\\.|pnk-${test_pid}-)" || true); do
            pn_ns_del "$n"
        done
    fi
    rm -f "$out"
}
pn_cleanup_register cleanup_flood

"$bin" --nocapture --test-threads=1 >"$out" 2>&1 &
test_pid=$!
status=0
wait "$test_pid" || status=$?
# The test prints its figures with --nocapture, the first right after the
# test's name on the same line.
grep -oE 'flood\.[a-z_]+: [0-9.]+' "$out" || true
if [ "$status" -ne 0 ]; then
    tail -40 "$out" >&2
    pn_err "tests/root_flood.rs failed (exit $status)"
    exit "$status"
fi
