#!/usr/bin/env bash
# Pod start and volume figures of `podnetd`, in a node namespace this script creates and
# removes (root), with the Python `kubernetes` client (installed when missing):
#   pod.start_ms                create -> Running seen by a watch, no volumes; median of N
#   pod.start_with_volumes_ms   the same with a configMap, a secret and an emptyDir volume
#   configmap.propagation_ms    ConfigMap patched -> the file changed as read inside the
#                               pod's mount namespace (polled every 5 ms); median of N
# Usage: sudo scripts/bench-volumes.sh [-n N]   (default 10; PODNET_BIN=DIR skips the release build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

runs=10
while getopts "n:h" opt; do
    case $opt in
        n) runs=$OPTARG ;;
        *) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    esac
done
pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
podnet_build

node="pnvol$$"
kns="vol$$"
dir=$(mktemp -d "${TMPDIR:-/tmp}/podnet-vol.XXXXXX")
cleanup_vol() {
    [ -n "${daemon:-}" ] && { kill -9 "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    pn_pods_del "$kns"
    rm -rf "$dir"
}
pn_cleanup_register cleanup_vol
pn_ns_add "$node"
nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" --state-dir "$dir/state" \
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
echo "volumes.runs: $runs"
nsenter --net="/var/run/netns/$node" python3 "$here/lib/volume_bench.py" "$kns" "$runs" "$dir/mnt"
