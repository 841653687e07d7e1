#!/usr/bin/env bash
# The main job on defaults, as a short demo (root): builds podnet, starts
# podnetd with its default configuration inside a network namespace made for
# it (so nothing touches this host's routes), deploys three web pods behind a
# service with the `podnet` CLI (shortcuts over podnetd's Kubernetes API),
# sends requests through the cluster IP, kills a pod's process with SIGKILL
# and shows the requests keep succeeding while the pod leaves the service and
# is restarted in place, then deletes a pod and shows the deployment replace
# it with a new one at a new address. Everything is removed on exit.
# Usage: sudo scripts/demo.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

pn_require_root
pn_ensure_tools
podnet_build

id=$$
node="pndemo$id"
podnet_up "$node"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
client="client$id"
client_ns=$(pn_pod_netns "$client")
web_pods() {
    pn pod list -o json | pn_json '"\n".join(p["metadata"]["name"] for p in j["items"]
        if p["metadata"].get("labels", {}).get("app") == "web" and not p["metadata"].get("deletionTimestamp"))'
}
# backends — the service's backends in the fast path (`podnet nat list`).
backends() {
    pn nat list -o json | pn_json "sum(len(r['backends']) for r in j if r['service'] == 'default/web$id')"
}
# requests SECONDS — requests through the cluster IP for SECONDS, counted.
requests() {
    local ok=0 failed=0 start
    start=$(date +%s%N)
    while (($(date +%s%N) - start < $1 * 1000000000)); do
        if ip netns exec "$client_ns" curl -s -m 1 -o /dev/null "http://$vip/"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
    done
    echo "requests in $1 s: $ok succeeded, $failed failed"
}

step "podnetd is running in namespace $node (log: $PN_DIR/podnetd.log; KUBECONFIG=$PN_KUBECONFIG)"
nsenter --net="/var/run/netns/$node" ip -brief addr show dev podnet0
nsenter --net="/var/run/netns/$node" ip route

step "a deployment of three web pods, and a service in front of them"
pn deployment create "web$id" --replicas 3 --label app=web -- python3 "$here/lib/whoami.py" 8080
pn service create "web$id" --selector app=web --port 80:8080
pn pod run "$client" -- sleep infinity
vip=$(pn service get "web$id" -o json | pn_json 'j["spec"]["clusterIP"]')
for ((i = 0; i < 600; i++)); do
    [ "$(backends)" = 3 ] && break
    sleep 0.1
done
pn pod list -o wide
pn deployment list
pn service list
pn nat list

step "requests to http://$vip/ from pod $client"
for i in 1 2 3 4 5 6; do
    ip netns exec "$client_ns" curl -s -m 2 "http://$vip/"
done

victim=$(web_pods)
victim=${victim%%$'\n'*}
pid=$(pn_pod_pid "$victim")
step "kill -9 $victim (pid $pid) while requests keep going"
kill -9 "$pid"
requests 3
pn nat list
echo "$victim left the service; the kubelet restarts it in place after its back-off:"
for ((i = 0; i < 600; i++)); do
    [ "$(backends)" = 3 ] && [ "$(pn pod get "$victim" -o json | pn_json 'j["status"]["containerStatuses"][0]["restartCount"]')" -ge 1 ] && break
    sleep 0.1
done
pn pod get "$victim" -o wide

old_ip=$(pn pod get "$victim" -o json | pn_json 'j["status"]["podIP"]')
step "delete $victim ($old_ip) while requests keep going"
pn pod delete "$victim" --wait=false
requests 3
for ((i = 0; i < 600; i++)); do
    [ "$(web_pods | wc -l)" = 3 ] && [ "$(backends)" = 3 ] && break
    sleep 0.1
done
pn pod list -o wide
echo "the deployment replaced $victim with a new pod at a new address; $old_ip was ${victim}'s"

step "the service still answers from three pods"
for i in 1 2 3 4 5 6; do
    ip netns exec "$client_ns" curl -s -m 2 "http://$vip/"
done
pn conntrack list | head -5

step "done: podnet reset removes pods, namespaces, devices and state"
