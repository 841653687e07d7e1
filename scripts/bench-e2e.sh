#!/usr/bin/env bash
# End-to-end benchmarks of podnetd beside their references, in one run, in
# namespaces this script creates and removes (root):
#   e2e.tcp_gbps / e2e.kernel_tcp_gbps / e2e.tcp_ratio
#       one iperf3 TCP stream pod -> cluster IP -> pod through podnetd, and the
#       same through routed veths + an iptables DNAT rule (kube-proxy's
#       iptables mode); runs alternate between the two; medians
#   e2e.forwarder_tcp_gbps / e2e.tcp_ratio_to_forwarder
#       the same stream between two namespaces joined by the ceiling forwarder
#       (bench/ceiling_forwarder.rs: TUN to TUN with offloads, no parsing or
#       NAT), in turns with the two above
#   e2e.udp_kpps / e2e.kernel_udp_kpps / e2e.udp_ratio
#       64-byte-payload UDP, thousands of packets per second delivered
#   e2e.forwarder_udp_kpps / e2e.udp_ratio_to_forwarder  the same, forwarder
#   e2e.attach_ms / e2e.cni_ref_ms / e2e.attach_speedup
#       connecting an existing namespace as a pod (TUN, address, routes, IPAM,
#       fast-path registration; timed at the API), and the reference CNI
#       plugins ptp + host-local adding a namespace; medians
#   e2e.pod_run_ms    creating a pod with its namespace and process, median
#   e2e.tcp4_gbps / e2e.kernel_tcp4_gbps / e2e.tcp4_ratio
#       four parallel iperf3 TCP streams, pod -> cluster IP -> pod and kernel
# Usage: sudo scripts/bench-e2e.sh [-t SECS] [-r RUNS] [-n PODS] [-- PODNETD-FLAGS...]   (defaults 5, 3, 20)
# PODNETD-FLAGS go to the daemon under test (e.g. -- --no-offload); PODNET_BIN
# names a directory with prebuilt podnetd and podnet (another build to compare).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/bench-ref.sh
. "$here/lib/bench-ref.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

secs=5 runs=3 pods=20
while getopts "t:r:n:h" opt; do
    case $opt in
        t) secs=$OPTARG ;;
        r) runs=$OPTARG ;;
        n) pods=$OPTARG ;;
        *) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
pn_require_root
pn_ensure_tools
podnet_build

id=$$
podnet_up "pnb$id" "$@"
pn --quiet pod run "ipf$id" --label app=ipf$id -- iperf3 -s -p 5201 >/dev/null
pn --quiet pod run "cli$id" -- sleep infinity >/dev/null
pn --quiet service create "ipf$id" --selector app=ipf$id --port 5201 --port 5201/udp >/dev/null
vip=$(pn service get "ipf$id" -o json | pn_json 'j["spec"]["clusterIP"]')
pn_wait_tcp "cli$id" "$vip" 5201 10
ref_topology_up "pnr$id"
ref_forwarder_up "pnf$id"

bench_alternate "$runs" "bench_iperf_tcp_gbps cli$id $vip 5201 $secs" \
    "bench_iperf_tcp_gbps $REF_POD1 $REF_VIP $REF_PORT $secs" \
    "bench_iperf_tcp_gbps $REF_FWD_A $REF_FWD_B_IP $REF_PORT $secs"
echo "# tcp runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; forwarder $BENCH_RUNS_C" >&2
echo "e2e.tcp_gbps: $BENCH_MEDIAN_A"
echo "e2e.kernel_tcp_gbps: $BENCH_MEDIAN_B"
echo "e2e.tcp_ratio: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_B")"
echo "e2e.forwarder_tcp_gbps: $BENCH_MEDIAN_C"
echo "e2e.tcp_ratio_to_forwarder: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_C")"

bench_alternate "$runs" "bench_iperf_tcp_gbps cli$id $vip 5201 $secs 4" \
    "bench_iperf_tcp_gbps $REF_POD1 $REF_VIP $REF_PORT $secs 4"
echo "# tcp4 runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B" >&2
echo "e2e.tcp4_gbps: $BENCH_MEDIAN_A"
echo "e2e.kernel_tcp4_gbps: $BENCH_MEDIAN_B"
echo "e2e.tcp4_ratio: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_B")"

bench_alternate "$runs" "bench_iperf_udp_kpps cli$id $vip 5201 $secs" \
    "bench_iperf_udp_kpps $REF_POD1 $REF_VIP $REF_PORT $secs" \
    "bench_iperf_udp_kpps $REF_FWD_A $REF_FWD_B_IP $REF_PORT $secs"
echo "# udp runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; forwarder $BENCH_RUNS_C" >&2
echo "e2e.udp_kpps: $BENCH_MEDIAN_A"
echo "e2e.kernel_udp_kpps: $BENCH_MEDIAN_B"
echo "e2e.udp_ratio: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_B")"
echo "e2e.forwarder_udp_kpps: $BENCH_MEDIAN_C"
echo "e2e.udp_ratio_to_forwarder: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_C")"

# Attach: namespaces made beforehand, as a container runtime hands them to CNI.
for ((i = 0; i < pods; i++)); do
    pn_ns_add "pna$id-$i"
done
attach=$(python3 "$here/lib/api_time.py" "$PN_SOCK" attach "pna$id" "$pods")
python3 "$here/lib/api_time.py" "$PN_SOCK" delete "pna$id" "$pods"
run=$(python3 "$here/lib/api_time.py" "$PN_SOCK" run "pnp$id" "$pods")
python3 "$here/lib/api_time.py" "$PN_SOCK" delete "pnp$id" "$pods"
attach_ms=$(pn_median <<<"$attach")
echo "# attach ms: $(echo $attach)" >&2
echo "e2e.attach_ms: $attach_ms"
echo "e2e.pod_run_ms: $(pn_median <<<"$run")"
ref_cni_ms "$pods" "pnc$id"
echo "e2e.attach_speedup: $(pn_ratio "$REF_CNI_MS" "$attach_ms")"
