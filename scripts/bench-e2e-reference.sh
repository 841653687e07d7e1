#!/usr/bin/env bash
# The kernel and reference-CNI halves of issue 4's end-to-end benchmarks, each
# measured in namespaces this script creates and removes:
#   e2e.kernel_tcp_gbps  one iperf3 TCP stream pod1 -> service VIP -> pod2 over
#                        routed veths with an iptables DNAT rule (kube-proxy's
#                        iptables mode), receiver Gbit/s, median of RUNS
#   e2e.kernel_udp_kpps  64-byte-payload UDP through the same path, thousands of
#                        packets per second delivered to the receiver, median
#   e2e.cni_ref_ms       ptp + host-local CNI ADD into a fresh namespace, median ms
#                        (plus e2e.cni_ref_netns_ms, the `ip netns add` itself)
# Usage (root): scripts/bench-e2e-reference.sh [-t SECS] [-r RUNS] [-n CNI_PODS]
#   defaults: -t 5 -r 3 -n 20. Prints `name: value` lines on stdout, details on stderr.
# The functions live in scripts/lib/bench-ref.sh so scripts/bench-e2e.sh can
# measure podnet beside them in the same run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/bench-ref.sh
. "$here/lib/bench-ref.sh"

secs=5 runs=3 cni_pods=20
usage() {
    sed -n '/^# Usage/,/^#   defaults/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
while getopts "t:r:n:h" opt; do
    case $opt in
        t) secs=$OPTARG ;;
        r) runs=$OPTARG ;;
        n) cni_pods=$OPTARG ;;
        *) usage ;;
    esac
done
for v in "$secs" "$runs" "$cni_pods"; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-e2e-reference: -t, -r and -n take positive integers, got '$v'" >&2; exit 2; }
done

pn_require_root
pn_ensure_tools

ref_topology_up "pnref$$"
ref_tcp_gbps "$secs" "$runs"
ref_udp_kpps "$secs" "$runs"
ref_cni_ms "$cni_pods" "pncni$$"
