#!/usr/bin/env bash
# The edges of the node, podnet beside its reference in the same run (root):
#   ingress.rps / ingress.p99_ms          wrk (keep-alive, 64 connections) from an outside namespace
#                                         through podnet's ingress to two nginx pods (small answers)
#   ingress.nginx_rps / ingress.nginx_p99_ms
#                                         the same through Debian's nginx as the reverse proxy to the
#                                         same pods (upstream keep-alive), in the node's namespace
#   ingress.ratio                         ingress.rps / ingress.nginx_rps (target >= 1.0)
#   ingress.cpu_us_per_req / ingress.nginx_cpu_us_per_req / ingress.cpu_ratio
#                                         CPU time (user + system) per plain request of podnet's
#                                         ingress threads and of nginx's workers, from /proc: on a
#                                         shared machine a steadier figure than requests per second
#   ingress.tls_rps / ingress.nginx_tls_rps / ingress.tls_ratio
#                                         the same over TLS (one certificate, SNI my-app.com)
#   nodeport.tcp_gbps / nodeport.kernel_tcp_gbps / nodeport.ratio
#                                         one iperf3 TCP stream from outside to a pod through a
#                                         NodePort, beside iptables DNAT on a veth to a namespace
#   egress.conn_per_s / egress.kernel_conn_per_s / egress.ratio
#                                         new TCP connections per second (wrk, Connection: close)
#                                         from a pod to an outside nginx through podnet's masquerade,
#                                         beside iptables MASQUERADE from a namespace on a veth
# Each figure is the median of ROUNDS rounds, podnet and its reference alternated.
# Usage: sudo scripts/bench-edge.sh [-d SECONDS] [-r ROUNDS] [-p PARTS]
#   defaults 5, 3 and ingress,tls,nodeport,egress (PARTS: a comma-separated subset)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/podnet.sh
. "$here/lib/podnet.sh"

secs=5 rounds=3 parts=ingress,tls,nodeport,egress
while getopts "d:r:p:h" opt; do
    case $opt in
        d) secs=$OPTARG ;;
        r) rounds=$OPTARG ;;
        p) parts=$OPTARG ;;
        *) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    esac
done
for p in ${parts//,/ }; do
    case $p in
        ingress | tls | nodeport | egress) ;;
        *) pn_err "unknown part '$p' (ingress, tls, nodeport, egress)"; exit 2 ;;
    esac
done
runs() { [[ ",$parts," == *",$1,"* ]]; }
pn_require_root
pn_ensure_tools
pn_ensure_kube_clients
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    # No service may start on the host: policy-rc.d says no while installing
    # (one the host already has is left as it is).
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    installed=1
    { apt-get install -y -qq nginx-light wrk >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null; }; } || installed=
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ -n "$installed" ] || { pn_err "cannot install nginx-light and wrk"; exit 1; }
fi
podnet_build

id=$$
node="pneN$id" out="pneO$id" kern="pneK$id" kns="edge$id"
node_ip=192.0.2.1 out_ip=192.0.2.2
dir=$(mktemp -d "${TMPDIR:-/tmp}/podnet-edge.XXXXXX")
cleanup_edge() {
    [ -n "${daemon:-}" ] && { kill -9 "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
    pn_pods_del "$kns"
    rm -rf "/etc/netns/$out" "$dir"
}
pn_cleanup_register cleanup_edge
pn_ns_add "$node"
pn_ns_add "$out"
pn_ns_add "$kern"
inN() { nsenter --net="/var/run/netns/$node" "$@"; }
inO() { nsenter --net="/var/run/netns/$out" "$@"; }
inK() { nsenter --net="/var/run/netns/$kern" "$@"; }

# Underlay: node <-> outside; the kernel's reference pod on a veth of the node.
ip link add "en$id" netns "$node" type veth peer name "eo$id" netns "$out"
ip -n "$node" addr add "$node_ip/24" dev "en$id" && ip -n "$node" link set "en$id" up
ip -n "$out" addr add "$out_ip/24" dev "eo$id" && ip -n "$out" link set "eo$id" up
ip -n "$node" route add default via "$out_ip"
ip link add "kn$id" netns "$node" type veth peer name "kk$id" netns "$kern"
ip -n "$node" addr add 10.250.0.1/30 dev "kn$id" && ip -n "$node" link set "kn$id" up
ip -n "$kern" addr add 10.250.0.2/30 dev "kk$id" && ip -n "$kern" link set "kk$id" up
ip -n "$kern" route add default via 10.250.0.1
# The kernel's paths, in the node's namespace only: DNAT of port 30202 to
# the reference pod, and masquerade of its traffic to the outside.
inN sysctl -qw net.ipv4.ip_forward=1
inN iptables -t nat -A PREROUTING -d "$node_ip" -p tcp --dport 30202 -j DNAT --to-destination 10.250.0.2:5201
inN iptables -t nat -A POSTROUTING -s 10.250.0.0/30 -o "en$id" -j MASQUERADE

# nsenter execs the program (no fork for a network namespace alone), so
# $! is the program itself: killed at cleanup, its CPU time counted.
nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" --state-dir "$dir/state" --socket "$dir/podnet.sock" \
    --admin-kubeconfig "$dir/admin.kubeconfig" --api-listen 127.0.0.1:6443 \
    --node-name edge-node --dns-upstream none >"$dir/podnetd.log" 2>&1 &
daemon=$!
export KUBECONFIG=$dir/admin.kubeconfig
k() { inN kubectl "$@"; }
for ((i = 0; i < 600; i++)); do
    [ -f "$KUBECONFIG" ] && k get nodes >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { pn_err "podnetd exited: $(tail -5 "$dir/podnetd.log")"; exit 1; }
    sleep 0.1
done

# A certificate for my-app.com; the outside resolves it to the node
# (`ip netns exec` binds /etc/netns/NS/hosts over /etc/hosts).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=my-app.com \
    -addext subjectAltName=DNS:my-app.com -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
mkdir -p "/etc/netns/$out"
printf '127.0.0.1 localhost\n%s my-app.com\n' "$node_ip" >"/etc/netns/$out/hosts"

# The pods: nginx answering "ok" (config from a ConfigMap, its files in an
# emptyDir), iperf3, and a client to run wrk from.
k create namespace "$kns" >/dev/null
k -n "$kns" create secret tls my-app-tls --cert="$dir/tls.crt" --key="$dir/tls.key" >/dev/null
k -n "$kns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: nginx}
data:
  nginx.conf: |
    worker_processes 1;
    user root;
    pid /var/lib/pn-bench/nginx.pid;
    error_log stderr;
    events { worker_connections 4096; }
    http {
      access_log off;
      client_body_temp_path /var/lib/pn-bench/body;
      proxy_temp_path /var/lib/pn-bench/proxy;
      fastcgi_temp_path /var/lib/pn-bench/fastcgi;
      uwsgi_temp_path /var/lib/pn-bench/uwsgi;
      scgi_temp_path /var/lib/pn-bench/scgi;
      keepalive_requests 1000000;
      server { listen 8080 reuseport; location / { return 200 "ok\n"; } }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx
        command: [nginx, -c, /etc/pn-bench/nginx.conf, -g, "daemon off;"]
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        volumeMounts:
        - {name: conf, mountPath: /etc/pn-bench}
        - {name: run, mountPath: /var/lib/pn-bench}
      volumes:
      - {name: conf, configMap: {name: nginx}}
      - {name: run, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [my-app.com], secretName: my-app-tls}]
  rules:
  - host: my-app.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: iperf}
spec:
  replicas: 1
  selector: {matchLabels: {app: iperf}}
  template:
    metadata: {labels: {app: iperf}}
    spec:
      containers:
      - {name: iperf, image: iperf3, command: [iperf3, -s, -p, "5201"]}
---
apiVersion: v1
kind: Service
metadata: {name: iperf}
spec:
  type: NodePort
  selector: {app: iperf}
  ports: [{port: 5201, targetPort: 5201, nodePort: 30201}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: client, image: wrk, command: [sleep, infinity]}
EOF
for d in web iperf; do k -n "$kns" rollout status "deployment/$d" --timeout=300s >/dev/null; done
k -n "$kns" wait --for=condition=Ready pod/client --timeout=300s >/dev/null
pods=$(k -n "$kns" get pods -l app=web -o jsonpath='{.items[*].status.podIP}')

# The references: nginx as the same reverse proxy in the node's namespace
# (an access log line per request, as podnet's ingress writes one), nginx
# as the outside server, iperf3 in the kernel's namespace.
ref_conf() { # NAME LISTEN-LINES LOCATION ACCESS-LOG -> config file
    mkdir -p "$dir/$1"
    cat >"$dir/$1/nginx.conf" <<EOF
worker_processes 2;
user root;
pid $dir/$1/nginx.pid;
error_log $dir/$1/error.log;
events { worker_connections 4096; }
http {
  access_log $4;
  client_body_temp_path $dir/$1/body;
  proxy_temp_path $dir/$1/proxy;
  fastcgi_temp_path $dir/$1/fastcgi;
  uwsgi_temp_path $dir/$1/uwsgi;
  scgi_temp_path $dir/$1/scgi;
  keepalive_requests 1000000;
  upstream pods {
$(for p in $pods; do echo "    server $p:8080;"; done)
    keepalive 64;
  }
  server {
$2
    location / { $3 }
  }
}
EOF
    echo "$dir/$1/nginx.conf"
}
proxy=$(ref_conf proxy "    listen $node_ip:8081; listen $node_ip:8443 ssl;
    ssl_certificate $dir/tls.crt; ssl_certificate_key $dir/tls.key;" \
    'proxy_pass http://pods; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host;' \
    "$dir/proxy/access.log")
server=$(ref_conf server "    listen $out_ip:8000 reuseport;" 'return 200 "ok\n";' off)
nsenter --net="/var/run/netns/$node" nginx -c "$proxy" -g 'daemon off;' &
proxy_master=$!
inO nginx -c "$server" -g 'daemon off;' &
inK iperf3 -s -p 5201 >/dev/null 2>&1 &
sleep 1

# wrk's Requests/sec and 99th percentile (ms) of its output on stdin.
wrk_rps() { awk '/^Requests\/sec/ {print $2}'; }
wrk_p99() {
    awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        printf "%.2f", v }'
}
wrk_run() { # NS-RUNNER URL [HEADER] -> the output
    local runner=$1 url=$2
    shift 2
    $runner wrk -t2 -c64 -d"${secs}s" --latency "$@" "$url" 2>&1
}
ipO() { ip netns exec "$out" "$@"; }
in_client() { nsenter --net="/var/run/netns/$kns.client" "$@"; }
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x]; print(f"{statistics.median(v):.2f}" if v else "nan")' "$@"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.3f}" if b else "nan")' "$1" "$2"; }
# wrk's request count of its output on stdin.
wrk_requests() { awk '/ requests in / {print $1}'; }
# User + system CPU time, in clock ticks, of the threads of PIDs whose name
# starts with PREFIX.
cpu_ticks() { # PREFIX PID...
    python3 - "$@" <<'PY'
import glob, sys
prefix, total = sys.argv[1], 0
for pid in sys.argv[2:]:
    for path in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            stat = open(path).read()
        except OSError:
            continue
        if not stat[stat.index("(") + 1 : stat.rindex(")")].startswith(prefix):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
print(total)
PY
}
# Microseconds of CPU per request: TICKS-BEFORE TICKS-AFTER REQUESTS.
us_per_req() {
    python3 -c 'import os, sys
a, b, n = (float(x or 0) for x in sys.argv[1:])
hz = os.sysconf("SC_CLK_TCK")
print(f"{(b - a) * 1e6 / hz / n:.2f}" if n else "nan")' "$@"
}
# wrk from outside through a proxy whose CPU is counted: wrk's output goes
# to the variable o, the proxy's CPU per request to cpu.
wrk_cpu() { # PREFIX "PID..." URL
    local before after
    # shellcheck disable=SC2086 # one PID per word
    before=$(cpu_ticks "$1" $2)
    o=$(wrk_run ipO "$3")
    # shellcheck disable=SC2086
    after=$(cpu_ticks "$1" $2)
    cpu=$(us_per_req "$before" "$after" "$(wrk_requests <<<"$o")")
}
iperf_gbps() { python3 -c 'import json,sys; b=json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print("%.2f" % (b / 1e9))'; }

# Warm both paths (the ingress' upstream pool, nginx's keep-alive).
ipO curl -s -o /dev/null "http://my-app.com/" || true
ipO curl -s -o /dev/null "http://my-app.com:8081/" || true

declare -A F
add() { F[$1]="${F[$1]:-} $2"; }
names=()
runs ingress && names+=(ingress.rps ingress.p99_ms ingress.nginx_rps ingress.nginx_p99_ms
    ingress.cpu_us_per_req ingress.nginx_cpu_us_per_req)
runs tls && names+=(ingress.tls_rps ingress.nginx_tls_rps)
runs nodeport && names+=(nodeport.tcp_gbps nodeport.kernel_tcp_gbps)
runs egress && names+=(egress.conn_per_s egress.kernel_conn_per_s)
for ((r = 0; r < rounds; r++)); do
    if runs ingress; then
        workers=$(pgrep -P "$proxy_master" | tr '\n' ' ')
        wrk_cpu podnet-ingress "$daemon" "http://my-app.com/"
        add ingress.rps "$(wrk_rps <<<"$o")"; add ingress.p99_ms "$(wrk_p99 <<<"$o")"
        add ingress.cpu_us_per_req "$cpu"
        wrk_cpu "" "$workers" "http://my-app.com:8081/"
        add ingress.nginx_rps "$(wrk_rps <<<"$o")"; add ingress.nginx_p99_ms "$(wrk_p99 <<<"$o")"
        add ingress.nginx_cpu_us_per_req "$cpu"
    fi
    if runs tls; then
        o=$(wrk_run ipO "https://my-app.com/"); add ingress.tls_rps "$(wrk_rps <<<"$o")"
        o=$(wrk_run ipO "https://my-app.com:8443/"); add ingress.nginx_tls_rps "$(wrk_rps <<<"$o")"
    fi
    if runs nodeport; then
        add nodeport.tcp_gbps "$(inO iperf3 -c "$node_ip" -p 30201 -t "$secs" -J | iperf_gbps)"
        add nodeport.kernel_tcp_gbps "$(inO iperf3 -c "$node_ip" -p 30202 -t "$secs" -J | iperf_gbps)"
    fi
    if runs egress; then
        o=$(wrk_run in_client "http://$out_ip:8000/" -H "Connection: close"); add egress.conn_per_s "$(wrk_rps <<<"$o")"
        o=$(wrk_run inK "http://$out_ip:8000/" -H "Connection: close"); add egress.kernel_conn_per_s "$(wrk_rps <<<"$o")"
    fi
done
for name in "${names[@]}"; do
    # shellcheck disable=SC2086 # one value per word
    F[$name]=$(median ${F[$name]})
    echo "$name: ${F[$name]}"
done
runs ingress && echo "ingress.ratio: $(ratio "${F[ingress.rps]}" "${F[ingress.nginx_rps]}")"
runs ingress && echo "ingress.cpu_ratio: $(ratio "${F[ingress.cpu_us_per_req]}" "${F[ingress.nginx_cpu_us_per_req]}")"
runs tls && echo "ingress.tls_ratio: $(ratio "${F[ingress.tls_rps]}" "${F[ingress.nginx_tls_rps]}")"
runs nodeport && echo "nodeport.ratio: $(ratio "${F[nodeport.tcp_gbps]}" "${F[nodeport.kernel_tcp_gbps]}")"
runs egress && echo "egress.ratio: $(ratio "${F[egress.conn_per_s]}" "${F[egress.kernel_conn_per_s]}")"
echo "edge.load_after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PN_BIN/podnet" --socket "$dir/podnet.sock" stats | awk '$1 ~ /^dropped\./ && $2 > 0 {print "edge.podnet_" $1 ": " $2}' || true
