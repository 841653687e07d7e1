#!/usr/bin/env bash
# The main job on defaults, as a short demo (root): builds podnet, starts
# podnetd with its default configuration inside a network namespace made for
# it (so nothing touches this host's routes), deploys three web pods behind a
# service, sends requests through the cluster IP, kills a pod with SIGKILL and
# shows the requests keep succeeding while the deployment replaces it.
# Everything is removed on exit. Usage: sudo scripts/demo.sh
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

step "podnetd is running in namespace $node (log: $PN_DIR/podnetd.log)"
nsenter --net="/var/run/netns/$node" ip -brief addr show dev podnet0
nsenter --net="/var/run/netns/$node" ip route

step "a deployment of three web pods, and a service in front of them"
pn deployment create "web$id" --replicas 3 --label app=web -- python3 "$here/lib/whoami.py" 8080
pn service create "web$id" --selector app=web --port 80:8080
pn pod run "client$id" -- sleep infinity
vip=$(pn service get "web$id" -o json | pn_json 'j["clusterIP"]')
for ((i = 0; i < 50; i++)); do
    [ "$(pn service get "web$id" -o json | pn_json 'len(j["endpoints"])')" = 3 ] && break
    sleep 0.1
done
pn pod list
pn service list
pn nat list

step "requests to http://$vip/ from pod client$id"
for i in 1 2 3 4 5 6; do
    ip netns exec "client$id" curl -s -m 2 "http://$vip/"
done

victim=$(pn deployment get "web$id" -o json | pn_json 'j["pods"][0]')
pid=$(pn pod get "$victim" -o json | pn_json 'j["pid"]')
old_ip=$(pn pod get "$victim" -o json | pn_json 'j["ip"]')
step "kill -9 $victim ($old_ip) while requests keep going"
ok=0 failed=0
kill -9 "$pid"
start=$(date +%s%N)
while (( $(date +%s%N) - start < 3000000000 )); do
    if ip netns exec "client$id" curl -s -m 1 -o /dev/null "http://$vip/"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
done
echo "requests in the 3 s after the kill: $ok succeeded, $failed failed"
pn pod list
echo "the replacement has a new address; $old_ip was ${victim}'s"

step "the service still answers from three pods"
for i in 1 2 3 4 5 6; do
    ip netns exec "client$id" curl -s -m 2 "http://$vip/"
done
pn conntrack list | head -5

step "done: podnet reset removes pods, namespaces, devices and state"
