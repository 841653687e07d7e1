#!/usr/bin/env bash
# Cluster DNS figures of podnetd's built-in server, asked from inside a pod
# at the cluster DNS address (10.96.0.10, through the fast path like any
# service), with dnsperf (Debian's, installed when missing), in a node
# namespace this script creates and removes (root):
#   dns.qps             answers per second for cluster names (A and SRV of
#                       N services, PTR of their addresses), dnsperf at full
#                       load for -t SECS
#   dns.p99_ms          99th percentile of the answer time at a fixed
#                       -q QPS (dnsperf -v: each answer's latency), and
#                       dns.p50_ms beside it
#   dns.lost            queries dnsperf counted as lost in the full-load run
# The daemon has no upstream (--dns-upstream none): nothing leaves the
# namespace. Figures depend on the build (PODNET_BIN=target/debug measures
# a debug build) and on what else runs on the machine.
# Usage: sudo scripts/bench-dns.sh [-n SERVICES] [-t SECS] [-q QPS]   (defaults 50, 5, 2000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

services=50 secs=5 qps=2000
while getopts "n:t:q:h" opt; do
    case $opt in
        n) services=$OPTARG ;;
        t) secs=$OPTARG ;;
        q) qps=$OPTARG ;;
        *) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    esac
done
pn_require_root
pn_ensure_tools
podnet_build

id=$$
work=$(mktemp -d "${TMPDIR:-/tmp}/pnbench-dns.XXXXXX")
pn_cleanup_register rm -rf "$work"
podnet_up "pnd$id" --dns-upstream none
echo "dns.load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
pn --quiet pod run "cli$id" -- sh -c 'trap "exit 0" TERM; while true; do sleep 1; done' >/dev/null
: >"$work/queries"
for ((i = 0; i < services; i++)); do
    # Two ports: the CLI names them, so each has an SRV record.
    pn --quiet service create "s$i-$id" --selector "app=s$i-$id" --port 80 --port 443 >/dev/null
done
for ((i = 0; i < services; i++)); do
    pn service get "s$i-$id" -o json >"$work/svc.json"
    ip=$(pn_json 'j["spec"]["clusterIP"]' <"$work/svc.json")
    port=$(pn_json 'j["spec"]["ports"][0]["name"]' <"$work/svc.json")
    name="s$i-$id.default.svc.cluster.local"
    printf '%s A\n_%s._tcp.%s SRV\n' "$name" "$port" "$name" >>"$work/queries"
    printf '%s PTR\n' "$(echo "$ip" | awk -F. '{print $4"."$3"."$2"."$1".in-addr.arpa"}')" >>"$work/queries"
done
pod_ns=$(pn_pod_netns "cli$id")
for ((i = 0; i < 100; i++)); do
    [ -e "/var/run/netns/$pod_ns" ] && nsenter --net="/var/run/netns/$pod_ns" \
        dig @10.96.0.10 +short +time=1 +tries=1 "s0-$id.default.svc.cluster.local" 2>/dev/null | grep -q . && break
    sleep 0.2
done
((i < 100)) || { pn_err "the cluster DNS never answered from the pod"; exit 1; }

# Full load: throughput.
pn_timeout $((secs + 30)) nsenter --net="/var/run/netns/$pod_ns" dnsperf -s 10.96.0.10 \
    -d "$work/queries" -l "$secs" -c 4 -T 2 -q 200 >"$work/full.txt" 2>&1 || true
qps_got=$(awk '/Queries per second:/ {print $4}' "$work/full.txt")
lost=$(awk '/Queries lost:/ {print $3}' "$work/full.txt")
[ -n "$qps_got" ] || { pn_err "dnsperf gave no figure: $(tail -5 "$work/full.txt")"; exit 1; }
echo "dns.qps: ${qps_got%.*}"
echo "dns.lost: ${lost:-?}"

# Fixed rate: latency of each answer.
pn_timeout $((secs + 30)) nsenter --net="/var/run/netns/$pod_ns" dnsperf -s 10.96.0.10 \
    -d "$work/queries" -l "$secs" -Q "$qps" -c 2 -v >"$work/rate.txt" 2>&1 || true
awk '/^> NOERROR/ {print $NF}' "$work/rate.txt" | sort -g >"$work/lat.txt"
n=$(wc -l <"$work/lat.txt")
[ "$n" -gt 0 ] || { pn_err "dnsperf -v gave no latencies: $(tail -5 "$work/rate.txt")"; exit 1; }
pct() { awk -v p="$1" -v n="$n" 'NR == int((n - 1) * p / 100) + 1 {printf "%.3f", $1 * 1000; exit}' "$work/lat.txt"; }
echo "dns.rate_qps: $qps"
echo "dns.p50_ms: $(pct 50)"
echo "dns.p99_ms: $(pct 99)"
echo "dns.answers_timed: $n"
echo "dns.load_after: $(cut -d' ' -f1-3 /proc/loadavg)"
