#!/usr/bin/env bash
# Kubernetes API figures of `podnetd`, in a node namespace this
# script creates and removes (root), with the Python `kubernetes` client
# and kubectl (installed when missing):
#   api.create_pod_ms (and _p90)   POST of a pod -> Running, ready, with an IP (a real
#                                  process in its own namespace), seen by a watch; median
#   api.list_pods_ms / api.list_pods_table_ms
#                                  listing N pods' objects (bound to another node, so
#                                  only the API works), JSON and Table; median of 20
#   api.watch_latency_ms           a pod deleted -> a watcher sees its endpoint not ready;
#                                  median of 10
#   api.fast_path_latency_ms       a pod deleted -> the NAT table (/podnet/v1/nat) no
#                                  longer has the pod as a ready backend; median of 10
#   api.apply_100_objects_s        kubectl apply -f of 100 ConfigMaps
#   exec.roundtrip_ms              kubectl exec POD -- true, median of 20, beside
#                                  exec.kubectl_get_ms (kubectl get pod POD: kubectl's start)
#   rollout.failed_requests        requests to a cluster IP that failed while its 10 pods
#                                  were rolled (target 0), beside rollout.requests and rollout.s
#   daemon.rss_mb                  podnetd's resident memory at the end
# -s POLICY (or PODNET_STORE_SYNC) runs podnetd with `store-sync = "POLICY"` (always,
# periodic) in a config file; without it podnetd runs with its default (and no config
# file, so that binaries older than the key can be measured too).
# Usage: sudo scripts/bench-api.sh [-p PODS] [-l LIST_OBJECTS] [-s always|periodic]   (defaults 50, 1000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"
# shellcheck source=scripts/lib/rollout_bench.sh
. "$here/lib/rollout_bench.sh"

pods=50 list=1000 store_sync=${PODNET_STORE_SYNC:-}
while getopts "p:l:s:h" opt; do
    case $opt in
        p) pods=$OPTARG ;;
        l) list=$OPTARG ;;
        s) store_sync=$OPTARG ;;
        *) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    esac
done
pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
podnet_build

node="pnapi$$"
kns="bench$$"
dir=$(mktemp -d "${TMPDIR:-/tmp}/podnet-api.XXXXXX")
cleanup_api() {
    [ -n "${daemon:-}" ] && { kill -9 "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    pn_pods_del "$kns"
    rm -rf "$dir"
}
pn_cleanup_register cleanup_api
config=()
if [ -n "$store_sync" ]; then
    printf 'store-sync = "%s"\n' "$store_sync" >"$dir/podnetd.toml"
    config=(--config "$dir/podnetd.toml")
fi
pn_ns_add "$node"
nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" "${config[@]}" --state-dir "$dir/state" \
    --socket "$dir/podnet.sock" --admin-kubeconfig "$dir/admin.kubeconfig" \
    --api-listen 127.0.0.1:6443 --node-name bench-node >"$dir/podnetd.log" 2>&1 &
daemon=$!
export KUBECONFIG=$dir/admin.kubeconfig
for ((i = 0; i < 300; i++)); do
    [ -f "$KUBECONFIG" ] && nsenter --net="/var/run/netns/$node" kubectl get nodes >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { pn_err "podnetd exited: $(tail -5 "$dir/podnetd.log")"; exit 1; }
    sleep 0.1
done
printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$kns" |
    nsenter --net="/var/run/netns/$node" kubectl apply -f - >/dev/null
echo "api.store_sync: ${store_sync:-default}"
nsenter --net="/var/run/netns/$node" python3 "$here/lib/api_bench.py" "$kns" "$pods" "$list"
rollout_bench "$node" "$kns"
echo "daemon.rss_mb: $(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$daemon/status")"
