#!/usr/bin/env bash
# The Kubernetes way, as a short demo (root): builds podnet, starts
# `podnetd` inside a network namespace made for it (so nothing
# touches this host's routes), and drives it with the official kubectl and
# nothing but KUBECONFIG: a Deployment and a Service from a manifest, a
# rollout, requests through the cluster IP, a deleted pod replaced while a
# client keeps sending, a rolling update. Everything is removed on exit.
# Usage: sudo scripts/demo-kube.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
podnet_build

id=$$
node="pnkdemo$id"
kns="demo$id"
dir=$(mktemp -d "${TMPDIR:-/tmp}/podnet-kdemo.XXXXXX")
cleanup_demo() {
    [ -n "${daemon:-}" ] && { kill -9 "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    pn_pods_del "$kns"
    rm -rf "$dir"
}
pn_cleanup_register cleanup_demo
pn_ns_add "$node"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_node() { nsenter --net="/var/run/netns/$node" "$@"; }

nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" --state-dir "$dir/state" \
    --socket "$dir/podnet.sock" --admin-kubeconfig "$dir/admin.kubeconfig" --node-name demo-node \
    >"$dir/podnetd.log" 2>&1 &
daemon=$!
export KUBECONFIG=$dir/admin.kubeconfig
for ((i = 0; i < 300; i++)); do
    [ -f "$KUBECONFIG" ] && in_node kubectl get nodes >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { pn_err "podnetd exited: $(tail -5 "$dir/podnetd.log")"; exit 1; }
    sleep 0.1
done

step "podnetd in namespace $node; KUBECONFIG=$KUBECONFIG"
in_node kubectl version
in_node kubectl get nodes -o wide

step "kubectl apply -f: a Deployment of three web pods and a Service"
in_node kubectl create namespace "$kns"
in_node kubectl apply -n "$kns" -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: python:3
        command: ["python3", "$here/lib/whoami.py", "8080"]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
YAML
in_node kubectl rollout status -n "$kns" deployment/web --timeout=120s
in_node kubectl get -n "$kns" pods,svc,endpointslices -o wide
vip=$(in_node kubectl get -n "$kns" svc web -o jsonpath='{.spec.clusterIP}')

step "requests to http://$vip/ from the node"
for i in 1 2 3 4 5 6; do
    in_node curl -s -m 2 "http://$vip/"; echo
done

victim=$(in_node kubectl get -n "$kns" pods -o jsonpath='{.items[0].metadata.name}')
step "kubectl delete pod $victim, then a rolling update (kubectl set env), while requests keep going"
ok=0 failed=0
in_node kubectl delete -n "$kns" pod "$victim" --wait=false
in_node kubectl set env -n "$kns" deployment/web DEMO=1
start=$(date +%s%N)
while (( $(date +%s%N) - start < 8000000000 )); do
    if in_node curl -s -m 2 -o /dev/null "http://$vip/"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
done
in_node kubectl rollout status -n "$kns" deployment/web --timeout=120s
echo "requests meanwhile: $ok succeeded, $failed failed"
in_node kubectl get -n "$kns" pods -o wide
in_node kubectl rollout history -n "$kns" deployment/web
in_node kubectl get -n "$kns" events --sort-by=.lastTimestamp | tail -8

step "done: the namespace, podnetd and its state are removed on exit"
