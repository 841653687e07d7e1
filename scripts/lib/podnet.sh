#!/usr/bin/env bash
# Helpers to run podnetd inside a network namespace made for it (so its
# device and routes never touch the host's) and drive it with the CLI.
# Source after scripts/lib/netns.sh.

PN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# podnet_build — build podnetd and podnet (release) unless PODNET_BIN is set; sets PN_BIN.
podnet_build() {
    if [ -n "${PODNET_BIN:-}" ]; then
        PN_BIN=$PODNET_BIN
        return 0
    fi
    (cd "$PN_ROOT" && cargo build --release --bins -q) || { pn_err "cargo build failed"; return 1; }
    PN_BIN="$PN_ROOT/target/release"
}

# podnet_up NODE [PODNETD-FLAGS...] — namespace NODE, podnetd in it (state, socket and admin
# kubeconfig in a temp dir; its Kubernetes API on 127.0.0.1:6443 inside NODE);
# sets PN_NODE, PN_DIR, PN_SOCK, PN_KUBECONFIG; registers a cleanup that resets podnet and stops the daemon.
podnet_up() {
    local node=${1:?podnet_up: NODE missing} i
    shift
    pn_ns_add "$node"
    PN_NODE=$node
    PN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/podnet-$node.XXXXXX")
    PN_SOCK=$PN_DIR/podnet.sock
    PN_KUBECONFIG=$PN_DIR/admin.kubeconfig
    pn_cleanup_register rm -rf "$PN_DIR"
    # nsenter, not `ip netns exec`: the daemon must share the host's mount
    # namespace so the pod namespaces it bind-mounts are visible to `ip netns`.
    # A script's daemon never forwards names to the host's resolvers
    # unless the script names an upstream.
    local -a dns=(--dns-upstream none)
    [[ " $* " == *" --dns-upstream"* ]] && dns=()
    nsenter --net="/var/run/netns/$node" "$PN_BIN/podnetd" --state-dir "$PN_DIR/state" \
        --socket "$PN_SOCK" --admin-kubeconfig "$PN_KUBECONFIG" "${dns[@]}" "$@" >"$PN_DIR/podnetd.log" 2>&1 &
    PN_DAEMON_PID=$!
    pn_cleanup_register podnet_down
    for ((i = 0; i < 100; i++)); do
        pn --quiet pod list >/dev/null 2>&1 && return 0
        kill -0 "$PN_DAEMON_PID" 2>/dev/null || { pn_err "podnetd exited: $(tail -5 "$PN_DIR/podnetd.log")"; return 1; }
        sleep 0.1
    done
    pn_err "podnetd did not answer on $PN_SOCK within 10 s"
    return 1
}

# pn ARGS... — the podnet CLI pointed at this daemon (--quiet drops stderr).
pn() {
    if [ "${1:-}" = --quiet ]; then
        shift
        "$PN_BIN/podnet" --socket "$PN_SOCK" "$@" 2>/dev/null
    else
        "$PN_BIN/podnet" --socket "$PN_SOCK" "$@"
    fi
}

# podnet_down — podnet reset (pods, namespaces, state), then make sure the daemon is gone.
podnet_down() {
    [ -n "${PN_DAEMON_PID:-}" ] || return 0
    pn_timeout 20 "$PN_BIN/podnet" --socket "$PN_SOCK" reset --force >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$PN_DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    pn_kill "$PN_DAEMON_PID" 2>/dev/null || true
    PN_DAEMON_PID=
}

# pn_pods_del KNS — remove what the pods of Kubernetes namespace KNS leave when their
# daemon was killed: their processes, their network namespaces and their pinned
# mount/UTS namespaces under /run/podnet/ns. One pass over /proc for all of them
# (`ip netns pids` per namespace reads every process: thousands of pods took an hour).
pn_pods_del() {
    local kns=${1:?pn_pods_del: KNS missing} n names
    names=$(ip netns list | awk '{print $1}' | grep "^$kns\." || true)
    if [ -n "$names" ]; then
        python3 - "$names" <<'PY' || true
import os, signal, sys, time
names = sys.argv[1].split()
inodes = set()
for n in names:
    try:
        inodes.add(os.stat(f"/var/run/netns/{n}").st_ino)
    except OSError:
        pass
def members():
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes and int(pid) != os.getpid():
                out.append(int(pid))
        except OSError:
            pass
    return out
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in members():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    for _ in range(20):
        if not members():
            sys.exit(0)
        time.sleep(0.1)
PY
        # shellcheck disable=SC2086 # one name per word
        printf 'netns del %s\n' $names | ip -force -batch - 2>/dev/null || true
    fi
    for n in /run/podnet/ns/"$kns".*; do
        [ -d "$n" ] || continue
        umount -l "$n/mnt" "$n/uts" 2>/dev/null || true
        rm -rf "$n"
    done
}

# pn_pod_netns POD [NAMESPACE] — the network namespace name of a pod, as `ip netns` lists it.
pn_pod_netns() {
    echo "${2:-default}.${1:?pn_pod_netns: POD missing}"
}

# pn_pod_pid POD — the pid of a running pod's process, from its containerID (podnet://PID-START).
pn_pod_pid() {
    local id
    id=$(pn pod get "${1:?pn_pod_pid: POD missing}" -o json | pn_json 'j["status"]["containerStatuses"][0]["containerID"]')
    id=${id#podnet://}
    id=${id%%-*}
    case $id in
    '' | *[!0-9]*)
        # A daemon that does not name the pid yet: the pod's process is its namespace's oldest.
        ip netns pids "$(pn_pod_netns "$1")" | sort -n | head -1
        ;;
    *) echo "$id" ;;
    esac
}

# pn_json EXPR — `pn ... -o json` output on stdin, print the Python expression EXPR of it (j is the object).
pn_json() {
    python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"
}
