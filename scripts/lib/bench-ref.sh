# shellcheck shell=bash
# End-to-end benchmark measurements: the generic iperf3 probes (usable against
# podnetd's pods as well) and the kernel / reference-CNI figures of issue 4,
# each measured in namespaces of its own. Source it after scripts/lib/netns.sh:
#
#   . scripts/lib/netns.sh; . scripts/lib/bench-ref.sh
#   ref_topology_up                 # node + two pods + iptables DNAT + iperf3 server
#   ref_tcp_gbps 5 3                # prints e2e.kernel_tcp_gbps, sets REF_TCP_GBPS
#   ref_udp_kpps 5 3                # prints e2e.kernel_udp_kpps, sets REF_UDP_KPPS
#   ref_cni_ms 20                   # prints e2e.cni_ref_ms, sets REF_CNI_MS
#   ref_forwarder_up                # two namespaces joined by the ceiling forwarder
#   bench_ensure_tools              # wrk and nginx for the connection-rate figures
#   ref_http_up                     # nginx in pod2 behind VIP:REF_HTTP_PORT
#
# The ref_* functions and bench_median_of keep their results in globals and
# register cleanups, so call them in the main shell, not inside $(...). The
# bench_iperf_* probes print one figure and are fine inside $(...).
# Progress and per-run figures go to stderr as "# ..." lines; stdout carries
# only "name: value" lines. For a ratio (podnet / kernel) on a shared, noisy
# machine, measure both sides in turns with bench_alternate rather than one
# block after the other.

if [ -n "${PN_BENCH_REF_SH_LOADED:-}" ]; then
    return 0
fi
PN_BENCH_REF_SH_LOADED=1

# Addresses live only inside the namespaces created here.
REF_VIP=${REF_VIP:-10.96.0.10}
REF_PORT=${REF_PORT:-5201}
REF_GW=10.244.0.1
REF_POD1_IP=10.244.0.2
REF_POD2_IP=10.244.0.3
REF_SERVICE_CIDR=10.96.0.0/12
REF_HTTP_PORT=${REF_HTTP_PORT:-8080}
REF_NODE=""
REF_POD1=""
REF_POD2=""

# bench_note TEXT — a progress / detail line on stderr, prefixed "# ".
bench_note() {
    echo "# $*" >&2
}

# bench_iperf_json NS OUTFILE IPERF3-ARGS... — run an iperf3 client in NS with -J into OUTFILE; fail with its error.
bench_iperf_json() {
    local ns=$1 out=$2 secs err
    shift 2
    secs=${BENCH_IPERF_SECS:-5}
    err=$(mktemp "${TMPDIR:-/tmp}/pnbench-err.XXXXXX")
    if ! pn_timeout $((secs + 20)) ip netns exec "$ns" iperf3 -J --connect-timeout 3000 "$@" >"$out" 2>"$err"; then
        # iperf3 -J reports its own errors in the JSON "error" field.
        local msg
        msg=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$out" 2>/dev/null || true)
        echo "iperf3 client failed (ns $ns, iperf3 $*): ${msg:-$(cat "$err")}${msg:+ $(cat "$err")}" >&2
        rm -f "$err"
        return 1
    fi
    rm -f "$err"
}

# bench_iperf_tcp_gbps NS IP PORT [SECS] [STREAMS] — iperf3 TCP (one stream unless STREAMS) from NS to
# IP:PORT; prints receiver Gbit/s, all streams together.
bench_iperf_tcp_gbps() {
    local ns=${1:?bench_iperf_tcp_gbps: NS missing} ip=${2:?IP missing} port=${3:?PORT missing}
    local secs=${4:-5} streams=${5:-1} out rc=0
    out=$(mktemp "${TMPDIR:-/tmp}/pnbench-tcp.XXXXXX")
    BENCH_IPERF_SECS=$secs bench_iperf_json "$ns" "$out" -c "$ip" -p "$port" -t "$secs" -P "$streams" || rc=$?
    if [ "$rc" -eq 0 ]; then
        python3 - "$out" <<'PY' || rc=$?
import json, sys
r = json.load(open(sys.argv[1]))
try:
    bps = r["end"]["sum_received"]["bits_per_second"]
except KeyError:
    sys.exit("iperf3 TCP result has no end.sum_received.bits_per_second: " + r.get("error", "?"))
print("%.3f" % (bps / 1e9))
PY
    fi
    rm -f "$out"
    return "$rc"
}

# bench_iperf_udp_kpps NS IP PORT [SECS] [LEN] — iperf3 UDP from NS to IP:PORT, LEN-byte payloads (default 64),
# unlimited rate; prints thousands of packets per second delivered to the receiver (packets - lost) / seconds.
bench_iperf_udp_kpps() {
    local ns=${1:?bench_iperf_udp_kpps: NS missing} ip=${2:?IP missing} port=${3:?PORT missing}
    local secs=${4:-5} len=${5:-64} out rc=0
    out=$(mktemp "${TMPDIR:-/tmp}/pnbench-udp.XXXXXX")
    BENCH_IPERF_SECS=$secs bench_iperf_json "$ns" "$out" -c "$ip" -p "$port" -t "$secs" \
        -u -l "$len" -b 0 || rc=$?
    if [ "$rc" -eq 0 ]; then
        python3 - "$out" <<'PY' || rc=$?
import json, sys
r = json.load(open(sys.argv[1]))
# The receiver's report, which the client fetches at the end of the test:
# packets is the count the sender numbered, lost_packets the gaps the
# receiver saw (end.sum carries the same figures before iperf3 3.11).
end = r.get("end", {})
srv = end.get("sum_received") or end.get("sum")
if not srv or "packets" not in srv:
    sys.exit("iperf3 UDP result has no end.sum_received.packets: " + r.get("error", "?"))
delivered = srv["packets"] - srv.get("lost_packets", 0)
secs = srv["seconds"]
if secs <= 0:
    sys.exit("iperf3 UDP server report covers 0 seconds")
print("%.1f" % (delivered / secs / 1e3))
PY
    fi
    rm -f "$out"
    return "$rc"
}

# bench_iperf_tcp2_gbps NS IP1 PORT1 IP2 PORT2 [SECS] — two iperf3 TCP streams from NS at once, to IP1:PORT1
# and IP2:PORT2; prints their receiver Gbit/s together.
bench_iperf_tcp2_gbps() {
    local ns=${1:?bench_iperf_tcp2_gbps: NS missing} ip1=${2:?} port1=${3:?} ip2=${4:?} port2=${5:?} secs=${6:-5}
    local f1 f2 p1 p2 rc=0
    f1=$(mktemp "${TMPDIR:-/tmp}/pnbench-tcp2.XXXXXX")
    f2=$(mktemp "${TMPDIR:-/tmp}/pnbench-tcp2.XXXXXX")
    bench_iperf_tcp_gbps "$ns" "$ip1" "$port1" "$secs" >"$f1" &
    p1=$!
    bench_iperf_tcp_gbps "$ns" "$ip2" "$port2" "$secs" >"$f2" &
    p2=$!
    wait "$p1" || rc=1
    wait "$p2" || rc=1
    [ "$rc" -eq 0 ] && awk '{ s += $1 } END { printf "%.3f\n", s }' "$f1" "$f2"
    rm -f "$f1" "$f2"
    return "$rc"
}

# bench_median_of RUNS CMD [ARG...] — run CMD RUNS times (each prints one number); sets BENCH_RUNS and BENCH_MEDIAN.
bench_median_of() {
    local runs=${1:?bench_median_of: RUNS missing} i v
    shift
    BENCH_RUNS=""
    for ((i = 1; i <= runs; i++)); do
        v=$("$@") || { echo "bench: run $i of $* failed" >&2; return 1; }
        BENCH_RUNS+="${BENCH_RUNS:+ }$v"
    done
    BENCH_MEDIAN=$(pn_median <<<"$BENCH_RUNS")
}

# bench_alternate RUNS CMD_A CMD_B [CMD_C] — run the command lines CMD_A and CMD_B (and CMD_C; each prints one
# number) in turns, A B A B ..., so machine load hits them alike; sets BENCH_RUNS_A/B/C and BENCH_MEDIAN_A/B/C.
# Use it for ratios:
#   bench_alternate 3 "bench_iperf_tcp_gbps $POD_A $SVC_IP 5201 5" "bench_iperf_tcp_gbps $REF_POD1 $REF_VIP 5201 5"
bench_alternate() {
    local runs=${1:?bench_alternate: RUNS missing} a=${2:?CMD_A missing} b=${3:?CMD_B missing} c=${4:-} i v
    BENCH_RUNS_A=""
    BENCH_RUNS_B=""
    BENCH_RUNS_C=""
    for ((i = 1; i <= runs; i++)); do
        v=$(eval "$a") || { echo "bench: run $i of '$a' failed" >&2; return 1; }
        BENCH_RUNS_A+="${BENCH_RUNS_A:+ }$v"
        v=$(eval "$b") || { echo "bench: run $i of '$b' failed" >&2; return 1; }
        BENCH_RUNS_B+="${BENCH_RUNS_B:+ }$v"
        if [ -n "$c" ]; then
            v=$(eval "$c") || { echo "bench: run $i of '$c' failed" >&2; return 1; }
            BENCH_RUNS_C+="${BENCH_RUNS_C:+ }$v"
        fi
    done
    # shellcheck disable=SC2034 # results for the caller
    BENCH_MEDIAN_A=$(pn_median <<<"$BENCH_RUNS_A")
    # shellcheck disable=SC2034
    BENCH_MEDIAN_B=$(pn_median <<<"$BENCH_RUNS_B")
    if [ -n "$c" ]; then
        # shellcheck disable=SC2034
        BENCH_MEDIAN_C=$(pn_median <<<"$BENCH_RUNS_C")
    fi
}

# ref_topology_up [PREFIX] — node ns + pod1/pod2 ns on routed veths, VIP DNAT to pod2, iperf3 server in pod2.
# Sets REF_NODE, REF_POD1, REF_POD2 (names), REF_VIP, REF_PORT. No-op if already up.
ref_topology_up() {
    [ -n "$REF_NODE" ] && return 0
    local p=${1:-pnref$$} proto
    pn_require_root
    REF_NODE=$p-node
    REF_POD1=$p-pod1
    REF_POD2=$p-pod2
    bench_note "kernel reference topology: $REF_NODE, $REF_POD1 ($REF_POD1_IP), $REF_POD2 ($REF_POD2_IP), VIP $REF_VIP:$REF_PORT"
    pn_ns_add "$REF_NODE"
    pn_ns_add "$REF_POD1"
    pn_ns_add "$REF_POD2"
    ip netns exec "$REF_NODE" sysctl -qw net.ipv4.ip_forward=1
    local pod ip host_if
    for pod in 1 2; do
        if [ "$pod" = 1 ]; then ip=$REF_POD1_IP; else ip=$REF_POD2_IP; fi
        local ns=$p-pod$pod
        host_if=veth-pod$pod
        # As the ptp plugin and Calico do it: a /32 in the pod, the gateway
        # address on every host-side veth, a /32 route per pod on the node.
        pn_veth "$REF_NODE" "$host_if" "$ns" eth0
        ip -n "$REF_NODE" addr add "$REF_GW/32" dev "$host_if"
        ip -n "$REF_NODE" route add "$ip/32" dev "$host_if" src "$REF_GW"
        ip -n "$ns" addr add "$ip/32" dev eth0
        ip -n "$ns" route add "$REF_GW/32" dev eth0 scope link
        ip -n "$ns" route add default via "$REF_GW" dev eth0 src "$ip"
    done
    # kube-proxy iptables mode reduced to its one rule per service port.
    for proto in tcp udp; do
        ref_dnat "$proto" "$REF_PORT" || return 1
    done
    # The node reaches the VIP too (host -> service): kube-proxy's rules sit
    # in OUTPUT as well as PREROUTING, and a node has a route the VIP's
    # packets leave by (its default route) before DNAT sends them to the pod.
    ip -n "$REF_NODE" route add "$REF_SERVICE_CIDR" dev veth-pod2 src "$REF_GW"
    pn_bg "$REF_POD2" iperf3 -s -p "$REF_PORT" --idle-timeout 300
    if ! pn_wait_tcp "$REF_POD1" "$REF_VIP" "$REF_PORT" 10; then
        echo "ref_topology_up: iperf3 server not reachable from $REF_POD1 through VIP $REF_VIP:$REF_PORT" >&2
        return 1
    fi
}

# ref_dnat PROTO PORT — the reference node's DNAT of REF_VIP:PORT to pod2:PORT, for pods (PREROUTING) and
# for the node itself (OUTPUT), as kube-proxy's iptables mode has it.
ref_dnat() {
    local proto=${1:?ref_dnat: PROTO missing} port=${2:?ref_dnat: PORT missing} chain
    for chain in PREROUTING OUTPUT; do
        if ! ip netns exec "$REF_NODE" iptables -w 5 -t nat -A "$chain" -d "$REF_VIP/32" -p "$proto" \
            --dport "$port" -j DNAT --to-destination "$REF_POD2_IP:$port"; then
            echo "ref_dnat: iptables DNAT rule ($chain $proto $port) failed in $REF_NODE (nat table / conntrack missing?)" >&2
            return 1
        fi
    done
}

# bench_ensure_tools — wrk and nginx (the connection-rate figures), from their Debian packages when missing.
bench_ensure_tools() {
    local -a need=()
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
    [ ${#need[@]} -eq 0 ] && return 0
    pn_require_root || return 1
    echo "podnet-bench: installing ${need[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive pn_timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
        pn_timeout 300 apt-get update -qq || { echo "bench_ensure_tools: apt-get update failed" >&2; return 1; }
        DEBIAN_FRONTEND=noninteractive pn_timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null || {
            echo "bench_ensure_tools: apt-get install ${need[*]} failed" >&2
            return 1
        }
    fi
}

# bench_nginx_conf DIR PORT — write DIR/nginx.conf: nginx in the foreground, one worker, no logs, answering
# every request with 3 bytes and closing the connection (keepalive off); prints the file's path.
bench_nginx_conf() {
    local dir=${1:?bench_nginx_conf: DIR missing} port=${2:?bench_nginx_conf: PORT missing}
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 0;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen $port reuseport backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
CONF
    echo "$dir/nginx.conf"
}

# bench_wrk_crr NS IP PORT [SECS] [CONNS] — wrk from NS to http://IP:PORT/, one request per connection
# (Connection: close; CONNS at once, default 16); prints connections per second. Fails on connect errors
# or non-2xx answers.
bench_wrk_crr() {
    local ns=${1:?bench_wrk_crr: NS missing} ip=${2:?IP missing} port=${3:?PORT missing}
    local secs=${4:-5} conns=${5:-16} out
    out=$(pn_timeout $((secs + 20)) ip netns exec "$ns" wrk -t1 -c"$conns" -d"${secs}s" \
        -H 'Connection: close' "http://$ip:$port/" 2>&1) || { echo "wrk failed (ns $ns, $ip:$port): $out" >&2; return 1; }
    if grep -q 'Non-2xx' <<<"$out" || grep -Eq 'Socket errors: connect [1-9]' <<<"$out"; then
        echo "wrk (ns $ns, $ip:$port): errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2
        return 1
    fi
    awk '/^Requests\/sec:/ { printf "%.0f\n", $2; found = 1 } END { exit !found }' <<<"$out" ||
        { echo "wrk (ns $ns): no Requests/sec in: $out" >&2; return 1; }
}

# ref_http_up [DIR] — nginx (bench_nginx_conf) in the reference pod2 on REF_HTTP_PORT, behind REF_VIP:REF_HTTP_PORT.
REF_HTTP_UP=""
ref_http_up() {
    [ -n "$REF_HTTP_UP" ] && return 0
    local dir=${1:-} conf
    [ -n "$dir" ] || { dir=$(mktemp -d "${TMPDIR:-/tmp}/pnref-http.XXXXXX"); pn_cleanup_register rm -rf "$dir"; }
    ref_topology_up "pnref$$"
    ref_dnat tcp "$REF_HTTP_PORT" || return 1
    conf=$(bench_nginx_conf "$dir" "$REF_HTTP_PORT")
    pn_bg "$REF_POD2" nginx -c "$conf" -p "$dir"
    pn_wait_tcp "$REF_POD1" "$REF_VIP" "$REF_HTTP_PORT" 10 || { echo "ref_http_up: nginx not reachable through the VIP" >&2; return 1; }
    REF_HTTP_UP=1
}

# bench_cpu NAME PID SECS CMD... — run CMD (prints one Gbit/s figure, as bench_iperf_tcp_gbps does) and print
# its figure; append to $BENCH_CPU_DIR/NAME one line "GBPS PID_CPU_S SOFTIRQ_S BUSY_S WALL_S": the CPU
# seconds (user + system) of process PID's threads (skipped when PID is -), the host's softirq seconds and
# its busy seconds (/proc/stat, all CPUs: bench_busy) while it ran, and how long it ran.
bench_cpu() {
    local name=${1:?bench_cpu: NAME missing} pid=${2:?PID missing} secs=${3:?SECS missing} v c0 c1 s0 s1 b0 b1 t0 t1
    shift 3
    c0=$(bench_proc_cpu "$pid")
    s0=$(bench_softirq)
    b0=$(bench_busy)
    t0=$(date +%s.%N)
    v=$("$@") || return 1
    t1=$(date +%s.%N)
    c1=$(bench_proc_cpu "$pid")
    s1=$(bench_softirq)
    b1=$(bench_busy)
    echo "$v $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }') $(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.3f", b - a }') $(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.3f", b - a }') $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
        >>"${BENCH_CPU_DIR:?bench_cpu: BENCH_CPU_DIR unset}/$name"
    echo "$v"
}

# bench_proc_cpu PID — user + system CPU seconds of PID (all its threads) so far; 0 for "-".
bench_proc_cpu() {
    [ "$1" = - ] && { echo 0; return 0; }
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

# bench_softirq — softirq CPU seconds so far, all CPUs (/proc/stat).
bench_softirq() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.3f\n", $8 / hz }' /proc/stat
}

# bench_busy — CPU seconds so far of the whole machine, all CPUs, not idle (user, nice, system, irq,
# softirq; /proc/stat): what every process and the kernel spent, whoever they were.
bench_busy() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.3f\n", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}

# bench_per_gbit FILE SECS COLUMN — median over FILE's runs (lines of bench_cpu) of COLUMN (2: process CPU,
# 3: softirq, 4: the whole machine) seconds per Gbit moved (GBPS * SECS).
bench_per_gbit() {
    local file=${1:?} secs=${2:?} col=${3:?}
    awk -v s="$secs" -v c="$col" '$1 > 0 { printf "%.4f\n", $c / ($1 * s) }' "$file" | pn_median
}

# ref_tcp_gbps [SECS] [RUNS] — e2e.kernel_tcp_gbps: median of RUNS single-stream TCP runs pod1 -> VIP -> pod2.
ref_tcp_gbps() {
    local secs=${1:-5} runs=${2:-3}
    ref_topology_up "pnref$$"
    bench_median_of "$runs" bench_iperf_tcp_gbps "$REF_POD1" "$REF_VIP" "$REF_PORT" "$secs"
    REF_TCP_GBPS=$BENCH_MEDIAN
    bench_note "e2e.kernel_tcp_gbps runs: $BENCH_RUNS (${secs}s each)"
    echo "e2e.kernel_tcp_gbps: $REF_TCP_GBPS"
}

# ref_udp_kpps [SECS] [RUNS] — e2e.kernel_udp_kpps: median of RUNS 64-byte UDP runs pod1 -> VIP -> pod2.
ref_udp_kpps() {
    local secs=${1:-5} runs=${2:-3}
    ref_topology_up "pnref$$"
    bench_median_of "$runs" bench_iperf_udp_kpps "$REF_POD1" "$REF_VIP" "$REF_PORT" "$secs" 64
    REF_UDP_KPPS=$BENCH_MEDIAN
    bench_note "e2e.kernel_udp_kpps runs: $BENCH_RUNS (${secs}s each)"
    echo "e2e.kernel_udp_kpps: $REF_UDP_KPPS"
}

# ref_cni_ms [N] [PREFIX] — e2e.cni_ref_ms: median ms of CNI ADD (ptp + host-local) into N fresh namespaces.
# The plugin runs inside a node namespace made here, so its host-side veths and
# routes land there, never in the host namespace. Also prints
# e2e.cni_ref_netns_ms, the median `ip netns add` time, for comparisons that
# include creating the namespace.
ref_cni_ms() {
    local n=${1:-20} p=${2:-pncni$$} ptp=/usr/lib/cni/ptp i
    pn_require_root
    [ -x "$ptp" ] || { echo "ref_cni_ms: $ptp missing (apt package containernetworking-plugins)" >&2; return 1; }
    local node=$p-node work
    work=$(mktemp -d "${TMPDIR:-/tmp}/pncni.XXXXXX")
    pn_cleanup_register rm -rf "$work"
    pn_ns_add "$node"
    cat >"$work/conf.json" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "pnref-bench",
  "type": "ptp",
  "ipMasq": false,
  "ipam": {
    "type": "host-local",
    "ranges": [[{ "subnet": "10.245.0.0/24" }]],
    "dataDir": "$work/ipam"
  }
}
JSON
    bench_note "reference CNI: ptp + host-local ADD into $n namespaces, plugin run in $node"
    local t0 t1 ns rc
    : >"$work/netns.ms"
    for ((i = 1; i <= n; i++)); do
        ns=$p-$i
        t0=$EPOCHREALTIME
        pn_ns_add "$ns"
        t1=$EPOCHREALTIME
        echo "$t0 $t1" | awk '{ printf "%.3f\n", ($2 - $1) * 1e3 }' >>"$work/netns.ms"
        # DEL before the namespace goes (newest cleanup runs first).
        pn_cleanup_register ref_cni_del "$node" "$ns" "$work/conf.json"
    done
    # The ADDs are timed by a shell inside the node namespace, as a runtime
    # would fork/exec the plugin: `ip netns exec` itself is not in the figure.
    # shellcheck disable=SC2016 # expanded by the inner bash
    ip netns exec "$node" bash -c '
        set -u
        p=$1 n=$2 work=$3 ptp=$4
        for ((i = 1; i <= n; i++)); do
            t0=$EPOCHREALTIME
            CNI_COMMAND=ADD CNI_CONTAINERID=$p-$i CNI_NETNS=/var/run/netns/$p-$i CNI_IFNAME=eth0 \
                CNI_PATH=/usr/lib/cni timeout 20 "$ptp" <"$work/conf.json" >"$work/add.$i.json" 2>"$work/add.$i.err"
            rc=$?
            t1=$EPOCHREALTIME
            echo "$i $rc $t0 $t1"
        done' ref-cni "$p" "$n" "$work" "$ptp" >"$work/add.times"
    local fail=0 ms=""
    while read -r i rc t0 t1; do
        if [ "$rc" -ne 0 ]; then
            echo "ref_cni_ms: ptp ADD into $p-$i failed (exit $rc): $(cat "$work/add.$i.err" "$work/add.$i.json")" >&2
            fail=1
            continue
        fi
        if ! python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
ips = [x.get("address", "") for x in r.get("ips", [])]
sys.exit(0 if any(a.startswith("10.245.0.") for a in ips) else 1)' "$work/add.$i.json" 2>/dev/null; then
            echo "ref_cni_ms: ptp ADD into $p-$i returned no 10.245.0.x address: $(cat "$work/add.$i.json")" >&2
            fail=1
            continue
        fi
        ms+="${ms:+ }$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) * 1e3 }')"
    done <"$work/add.times"
    [ "$(wc -l <"$work/add.times")" -eq "$n" ] || { echo "ref_cni_ms: expected $n ADD timings, got $(wc -l <"$work/add.times")" >&2; fail=1; }
    [ "$fail" -eq 0 ] || return 1
    # Sanity check of ptp's wiring, where ping exists: the node reaches pod 1.
    local addr
    addr=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/add.1.json")
    if command -v ping >/dev/null && ! pn_timeout 5 ip netns exec "$node" ping -c 1 -W 2 "$addr" >/dev/null 2>&1; then
        bench_note "warning: ptp pod 1 ($addr) does not answer ping from $node"
    fi
    REF_CNI_MS=$(pn_median <<<"$ms")
    bench_note "e2e.cni_ref_ms runs: $ms"
    echo "e2e.cni_ref_ms: $REF_CNI_MS"
    echo "e2e.cni_ref_netns_ms: $(pn_median <"$work/netns.ms")"
}

# ref_cni_del NODE NS CONF — CNI DEL (untimed) of ptp for NS, run in NODE; errors ignored (cleanup path).
ref_cni_del() {
    local node=$1 ns=$2 conf=$3
    [ -e "/var/run/netns/$ns" ] || return 0
    CNI_COMMAND=DEL CNI_CONTAINERID=$ns CNI_NETNS=/var/run/netns/$ns CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        pn_timeout 20 ip netns exec "$node" /usr/lib/cni/ptp <"$conf" >/dev/null 2>&1 || true
}

# ref_forwarder_up [PREFIX] [--no-offload] — the ceiling forwarder (bench/ceiling_forwarder.rs): namespaces
# PREFIX-a (REF_FWD_A_IP) and PREFIX-b (REF_FWD_B_IP), each with a TUN device the forwarder joins to the
# other's (offloads on unless --no-offload), iperf3 server in PREFIX-b. Sets REF_FWD_A, REF_FWD_B.
# The one-hop ceiling of a plain userspace design: no parsing, no NAT, one read and one write per packet.
REF_FWD_A_IP=10.251.0.1
REF_FWD_B_IP=10.251.0.2
REF_FWD_A=""
REF_FWD_B=""
ref_forwarder_up() {
    [ -n "$REF_FWD_A" ] && return 0
    local p=${1:-pnfwd$$} flag=${2:-} bin log i
    pn_require_root
    (cd "$PN_ROOT" && cargo bench --bench ceiling_forwarder --no-run -q) >&2 || {
        echo "ref_forwarder_up: building the ceiling forwarder failed" >&2
        return 1
    }
    bin=$(cd "$PN_ROOT" && cargo bench --bench ceiling_forwarder --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="ceiling_forwarder" and m.get("executable"): print(m["executable"])')
    [ -x "$bin" ] || { echo "ref_forwarder_up: no ceiling_forwarder executable" >&2; return 1; }
    REF_FWD_A=$p-a
    REF_FWD_B=$p-b
    pn_ns_add "$REF_FWD_A"
    pn_ns_add "$REF_FWD_B"
    log=$(mktemp "${TMPDIR:-/tmp}/pnfwd.XXXXXX")
    pn_cleanup_register rm -f "$log"
    # shellcheck disable=SC2086 # $flag is empty or one word
    "$bin" "$REF_FWD_A" "$REF_FWD_A_IP" "$REF_FWD_B" "$REF_FWD_B_IP" $flag </dev/null >"$log" 2>&1 &
    pn_cleanup_register pn_kill "$!"
    for ((i = 0; i < 100; i++)); do
        grep -q '^ready' "$log" && break
        sleep 0.1
    done
    grep -q '^ready' "$log" || { echo "ref_forwarder_up: forwarder not ready: $(cat "$log")" >&2; return 1; }
    bench_note "ceiling forwarder ${flag:-(offloads on)}: $REF_FWD_A ($REF_FWD_A_IP) <-> $REF_FWD_B ($REF_FWD_B_IP)"
    pn_bg "$REF_FWD_B" iperf3 -s -p "$REF_PORT" --idle-timeout 300
    pn_wait_tcp "$REF_FWD_A" "$REF_FWD_B_IP" "$REF_PORT" 10
}
