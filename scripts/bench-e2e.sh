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
#   e2e.forwarder_tcp4_gbps / e2e.tcp4_ratio_to_forwarder  the same, forwarder
#   e2e.tcp4_machine_cpu_per_gbit / e2e.kernel_... / e2e.forwarder_...
#       the whole machine's busy CPU seconds (/proc/stat) per Gbit in those runs,
#       and e2e.tcp4_busy_pct / e2e.kernel_... / e2e.forwarder_...: how busy the
#       CPUs were while iperf3 ran (100: every core; other jobs count too)
#   e2e.cpu_per_gbit
#       podnetd's CPU seconds (user + system, all threads, /proc/PID/stat) per
#       Gbit moved in the one-stream TCP runs, median; beside it
#       e2e.softirq_per_gbit (the host's softirq seconds in those runs, all
#       CPUs, /proc/stat) and e2e.kernel_softirq_per_gbit (the same in the
#       kernel path's runs, where all its forwarding happens)
#   e2e.podip_tcp_gbps / e2e.kernel_podip_tcp_gbps / e2e.podip_tcp_ratio
#       one TCP stream pod -> pod by its IP (no service)
#   e2e.host_tcp_gbps / e2e.kernel_host_tcp_gbps / e2e.host_tcp_ratio
#       one TCP stream from the node (host namespace: podnet0, or the kernel
#       node's own DNAT in OUTPUT) -> cluster IP -> pod
#   e2e.host2_tcp_gbps / e2e.host2_speedup
#       two TCP streams at once from the node to two services whose pods two
#       different workers serve (podnet0 has a queue per worker), and their
#       sum over one such stream measured in turns with it
#   e2e.crr_per_s / e2e.kernel_crr_per_s / e2e.crr_ratio
#       new TCP connections per second pod -> cluster IP -> nginx pod, one
#       HTTP request per connection (wrk -c 16, Connection: close)
# Usage: sudo scripts/bench-e2e.sh [-t SECS] [-r RUNS] [-n PODS] [-p PARTS] [-- PODNETD-FLAGS...]
#   defaults 5, 3, 20 and tcp,tcp4,podip,host,crr,udp,attach (PARTS: a comma-separated subset)
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

all_parts=tcp,tcp4,podip,host,crr,udp,attach
secs=5 runs=3 pods=20 parts=$all_parts
while getopts "t:r:n:p:h" opt; do
    case $opt in
        t) secs=$OPTARG ;;
        r) runs=$OPTARG ;;
        n) pods=$OPTARG ;;
        p) parts=$OPTARG ;;
        *) sed -n '/^# Usage/,/^#   defaults/p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
for p in ${parts//,/ }; do
    [[ ",$all_parts," == *",$p,"* ]] || { pn_err "unknown part '$p' ($all_parts)"; exit 2; }
done
runs() { [[ ",$parts," == *",$1,"* ]]; }
# report_ab A B RATIO — e2e.A and e2e.B: the medians of bench_alternate's first two commands, e2e.RATIO: A / B.
report_ab() {
    echo "e2e.$1: $BENCH_MEDIAN_A"
    echo "e2e.$2: $BENCH_MEDIAN_B"
    echo "e2e.$3: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_B")"
}
# report_c C RATIO — e2e.C: the median of its third command, e2e.RATIO: the first's over it.
report_c() {
    echo "e2e.$1: $BENCH_MEDIAN_C"
    echo "e2e.$2: $(pn_ratio "$BENCH_MEDIAN_A" "$BENCH_MEDIAN_C")"
}
pn_require_root
pn_ensure_tools
bench_ensure_tools
podnet_build

id=$$
work=$(mktemp -d "${TMPDIR:-/tmp}/pnbench-e2e.XXXXXX")
pn_cleanup_register rm -rf "$work"
BENCH_CPU_DIR=$work
podnet_up "pnb$id" "$@"
bench_note "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Devices go to workers round robin (podnet0's queues first): the server and
# the client land on different workers, as on the kernel path where sender
# and receiver run on different CPUs. The client pod serves iperf3 too, for
# the two-stream figure from the node.
pn --quiet pod run "ipf$id" --label app=ipf$id -- iperf3 -s -p 5201 >/dev/null
pn --quiet pod run "cli$id" --label app=cli$id -- iperf3 -s -p 5202 >/dev/null
nginx_conf=$(bench_nginx_conf "$work/nginx" 8080)
pn --quiet pod run "web$id" --label app=web$id -- nginx -c "$nginx_conf" -p "$work/nginx" >/dev/null
pn --quiet service create "ipf$id" --selector app=ipf$id --port 5201 --port 5201/udp >/dev/null
pn --quiet service create "cli$id" --selector app=cli$id --port 5202 >/dev/null
pn --quiet service create "web$id" --selector app=web$id --port 8080 >/dev/null
vip=$(pn service get "ipf$id" -o json | pn_json 'j["spec"]["clusterIP"]')
vip_cli=$(pn service get "cli$id" -o json | pn_json 'j["spec"]["clusterIP"]')
vip_web=$(pn service get "web$id" -o json | pn_json 'j["spec"]["clusterIP"]')
ipf_ip=$(pn pod get "ipf$id" -o json | pn_json 'j["status"]["podIP"]')
pn_wait_tcp "default.cli$id" "$vip" 5201 10
pn_wait_tcp "pnb$id" "$vip_cli" 5202 10
pn_wait_tcp "default.cli$id" "$vip_web" 8080 10
ref_topology_up "pnr$id"
ref_http_up "$work/ref-nginx"
ref_forwarder_up "pnf$id"

if runs tcp; then
    bench_alternate "$runs" "bench_cpu podnet_tcp $PN_DAEMON_PID $secs bench_iperf_tcp_gbps default.cli$id $vip 5201 $secs" \
        "bench_cpu kernel_tcp - $secs bench_iperf_tcp_gbps $REF_POD1 $REF_VIP $REF_PORT $secs" \
        "bench_iperf_tcp_gbps $REF_FWD_A $REF_FWD_B_IP $REF_PORT $secs"
    echo "# tcp runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; forwarder $BENCH_RUNS_C; load $(cut -d' ' -f1 /proc/loadavg)" >&2
    echo "# tcp runs (Gbit/s, podnetd CPU s, softirq s): podnet $(paste -sd, "$work/podnet_tcp"); kernel $(paste -sd, "$work/kernel_tcp")" >&2
    report_ab tcp_gbps kernel_tcp_gbps tcp_ratio
    report_c forwarder_tcp_gbps tcp_ratio_to_forwarder
    echo "e2e.cpu_per_gbit: $(bench_per_gbit "$work/podnet_tcp" "$secs" 2)"
    echo "e2e.softirq_per_gbit: $(bench_per_gbit "$work/podnet_tcp" "$secs" 3)"
    echo "e2e.kernel_softirq_per_gbit: $(bench_per_gbit "$work/kernel_tcp" "$secs" 3)"
fi

if runs tcp4; then
    bench_alternate "$runs" "bench_cpu podnet_tcp4 - $secs bench_iperf_tcp_gbps default.cli$id $vip 5201 $secs 4" \
        "bench_cpu kernel_tcp4 - $secs bench_iperf_tcp_gbps $REF_POD1 $REF_VIP $REF_PORT $secs 4" \
        "bench_cpu forwarder_tcp4 - $secs bench_iperf_tcp_gbps $REF_FWD_A $REF_FWD_B_IP $REF_PORT $secs 4"
    echo "# tcp4 runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; forwarder $BENCH_RUNS_C; load $(cut -d' ' -f1 /proc/loadavg)" >&2
    report_ab tcp4_gbps kernel_tcp4_gbps tcp4_ratio
    report_c forwarder_tcp4_gbps tcp4_ratio_to_forwarder
    # What each path costs the whole machine (every process and the kernel)
    # per Gbit, and how busy its runs kept the CPUs: where both paths use
    # every core, the ratio of throughputs cannot pass the inverse ratio of
    # these costs.
    cpus=$(nproc)
    for p in podnet kernel forwarder; do
        prefix=${p/podnet/}
        echo "e2e.${prefix:+${prefix}_}tcp4_machine_cpu_per_gbit: $(bench_per_gbit "$work/${p}_tcp4" "$secs" 4)"
        echo "e2e.${prefix:+${prefix}_}tcp4_busy_pct: $(awk -v n="$cpus" '{ printf "%.1f\n", 100 * $4 / ($5 * n) }' "$work/${p}_tcp4" | pn_median)"
    done
fi

if runs podip; then
    bench_alternate "$runs" "bench_iperf_tcp_gbps default.cli$id $ipf_ip 5201 $secs" \
        "bench_iperf_tcp_gbps $REF_POD1 $REF_POD2_IP $REF_PORT $secs"
    echo "# pod ip runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; load $(cut -d' ' -f1 /proc/loadavg)" >&2
    report_ab podip_tcp_gbps kernel_podip_tcp_gbps podip_tcp_ratio
fi

if runs host; then
    bench_alternate "$runs" "bench_iperf_tcp_gbps pnb$id $vip 5201 $secs" \
        "bench_iperf_tcp_gbps $REF_NODE $REF_VIP $REF_PORT $secs" \
        "bench_iperf_tcp2_gbps pnb$id $vip 5201 $vip_cli 5202 $secs"
    echo "# host runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; podnet two streams $BENCH_RUNS_C; load $(cut -d' ' -f1 /proc/loadavg)" >&2
    report_ab host_tcp_gbps kernel_host_tcp_gbps host_tcp_ratio
    echo "e2e.host2_tcp_gbps: $BENCH_MEDIAN_C"
    echo "e2e.host2_speedup: $(pn_ratio "$BENCH_MEDIAN_C" "$BENCH_MEDIAN_A")"
fi

if runs crr; then
    bench_alternate "$runs" "bench_wrk_crr default.cli$id $vip_web 8080 $secs" \
        "bench_wrk_crr $REF_POD1 $REF_VIP $REF_HTTP_PORT $secs"
    echo "# crr runs (connections/s): podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; load $(cut -d' ' -f1 /proc/loadavg)" >&2
    report_ab crr_per_s kernel_crr_per_s crr_ratio
fi

if runs udp; then
    bench_alternate "$runs" "bench_iperf_udp_kpps default.cli$id $vip 5201 $secs" \
        "bench_iperf_udp_kpps $REF_POD1 $REF_VIP $REF_PORT $secs" \
        "bench_iperf_udp_kpps $REF_FWD_A $REF_FWD_B_IP $REF_PORT $secs"
    echo "# udp runs: podnet $BENCH_RUNS_A; kernel $BENCH_RUNS_B; forwarder $BENCH_RUNS_C" >&2
    report_ab udp_kpps kernel_udp_kpps udp_ratio
    report_c forwarder_udp_kpps udp_ratio_to_forwarder
fi

if runs attach; then
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
fi
