#!/usr/bin/env bash
# Scale figures of `podnetd` (issue: the Kubernetes API, "Scale"), in a node
# namespace this script creates and removes (root), with the Python
# `kubernetes` client; pods are real processes in their own namespaces:
#   scale.create_pod_ms_at_LOW / _at_HIGH   POST -> Running, ready, with an IP, with LOW or
#                                           HIGH pods running; median of 50, one watch open throughout
#   scale.delete_all_s_at_1000 / _at_HIGH   deletecollection of every pod -> a watch sees the last one go;
#                                           median of 5, each filled again and settled 5 s first
#   scale.idle_cpu_pct_at_HIGH_pods         podnetd's CPU over 10 s with HIGH pods, idle
#   scale.create_service_ms_at_SLOW / _at_SHIGH
#                                           POST of a service with SLOW or SHIGH services; median of 50
#   api.watch_latency_ms_at_SHIGH_services  a ready pod deleted -> a watcher sees its endpoint
#                                           not ready, with SHIGH services; median of 10
#   scale.reset_s_at_RESET                  `podnet reset --force` with RESET pods -> podnetd gone
#   scale.delete_ratio                      scale.delete_all_s_at_HIGH / scale.delete_all_s_at_1000
#   scale.kernel_delete_all_s_at_1000 / _at_HIGH / scale.kernel_delete_ratio
#                                           the kernel's part of those deletions without podnetd (after
#                                           it stopped): as many processes in their own namespaces with a
#                                           TUN each, pinned, killed, reaped, unpinned; median of 5
#   daemon.rss_mb_at_SHIGH_services         podnetd's resident memory then
# Usage: sudo scripts/bench-scale.sh [-p LOW,HIGH] [-s SLOW,SHIGH] [-r RESET]
#        (defaults 100,4000  100,10000  2000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

pods=100,4000 services=100,10000 reset=2000
while getopts "p:s:r:h" opt; do
    case $opt in
        p) pods=$OPTARG ;;
        s) services=$OPTARG ;;
        r) reset=$OPTARG ;;
        *) sed -n '/^# Usage/,/^#  /p' "$0" >&2; exit 2 ;;
    esac
done
pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
podnet_build

node="pnscale$$"
kns="scale$$"
dir=$(mktemp -d "${TMPDIR:-/tmp}/podnet-scale.XXXXXX")
cleanup_scale() {
    [ -n "${daemon:-}" ] && { kill -9 "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    pn_pods_del "$kns"
    rm -rf "$dir"
    # A kernel reference stopped hard leaves its pins (its processes die with it).
    local d p
    for d in /run/podnet-kernel-ref.*; do
        [ -d "$d" ] && ! kill -0 "${d##*.}" 2>/dev/null || continue
        for p in "$d"/*; do umount -l "$p" 2>/dev/null || true; done
        umount -l "$d" 2>/dev/null || true
        rm -rf "$d"
    done
}
pn_cleanup_register cleanup_scale
pn_ns_add "$node"

start_daemon() {
    nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" --state-dir "$dir/state" \
        --socket "$dir/podnet.sock" --admin-kubeconfig "$dir/admin.kubeconfig" \
        --api-listen 127.0.0.1:6443 --node-name scale-node --node-subnet 10.244.0.0/20 \
        >>"$dir/podnetd.log" 2>&1 &
    daemon=$!
    export KUBECONFIG=$dir/admin.kubeconfig
    local i
    for ((i = 0; i < 600; i++)); do
        [ -f "$KUBECONFIG" ] && nsenter --net="/var/run/netns/$node" kubectl get nodes >/dev/null 2>&1 && break
        kill -0 "$daemon" 2>/dev/null || { pn_err "podnetd exited: $(tail -5 "$dir/podnetd.log")"; exit 1; }
        sleep 0.1
    done
    printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$kns" |
        nsenter --net="/var/run/netns/$node" kubectl apply -f - >/dev/null
}
driver() {
    nsenter --net="/var/run/netns/$node" python3 "$here/lib/scale_bench.py" "$kns" "$daemon" "$@"
}

start_daemon
driver pods "${pods%,*}" "${pods#*,}" | tee "$dir/pods.out"
# figure FILE NAME — the value of the (last) line `NAME: VALUE` in FILE.
figure() { awk -v k="$2:" '$1 == k { v = $2 } END { print v }' "$1"; }
high=${pods#*,}
echo "scale.delete_ratio: $(pn_ratio "$(figure "$dir/pods.out" "scale.delete_all_s_at_$high")" \
    "$(figure "$dir/pods.out" scale.delete_all_s_at_1000)")"
driver services "${services%,*}" "${services#*,}"
echo "daemon.rss_mb_at_${services#*,}_services: $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$daemon/status")"
driver fill "$reset"
t0=$(date +%s.%N)
nsenter --net="/var/run/netns/$node" "$PN_BIN/podnet" --socket "$dir/podnet.sock" reset --force >/dev/null
while kill -0 "$daemon" 2>/dev/null; do sleep 0.05; done
wait "$daemon" 2>/dev/null || true
daemon=
awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$reset" 'BEGIN { printf "scale.reset_s_at_%d: %.2f\n", n, b - a }'
left=$(ip netns list | awk '{print $1}' | grep -c "^$kns\\." || true)
echo "scale.netns_left_after_reset: $left"

# The kernel's part alone, with the daemon gone, at the same sizes.
for n in $(printf '%s\n' 1000 "$high" | sort -un); do
    python3 "$here/lib/kernel_delete_ref.py" "$n" 5 | tee -a "$dir/kernel.out"
done
echo "scale.kernel_delete_ratio: $(pn_ratio "$(figure "$dir/kernel.out" "scale.kernel_delete_all_s_at_$high")" \
    "$(figure "$dir/kernel.out" scale.kernel_delete_all_s_at_1000)")"
