#!/usr/bin/env bash
# Self-test of scripts/lib/netns.sh: namespaces, a veth pair, an HTTP server,
# pn_wait_tcp, curl through the pair, pn_median / pn_ratio, and that cleanup
# leaves nothing behind on a normal exit, on a failure (set -e) and on SIGTERM.
# Usage (root): scripts/lib/netns-selftest.sh    Exit 0 and "selftest: ok" on success.
# Traffic stays between two namespaces this script creates (10.244.254.0/30).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/netns.sh"

pn_require_root
pn_ensure_tools

fail() {
    echo "selftest: FAIL: $*" >&2
    exit 1
}

# Nothing named with this prefix may remain: no namespace, no process.
assert_gone() {
    local prefix=$1 what=$2
    if ip netns list | grep -q "^$prefix"; then
        fail "$what: namespaces left behind: $(ip netns list | grep "^$prefix" | tr '\n' ' ')"
    fi
    if pgrep -f "http.server 1809[0-9]" >/dev/null; then
        fail "$what: http.server processes left behind: $(pgrep -af 'http.server 1809[0-9]')"
    fi
}

# A child script that sources the library, builds a two-namespace topology
# with a server, and ends as $3 says: normally, on an error, or waiting to be
# killed. Args: library path, name prefix, ending.
# shellcheck disable=SC2016 # expanded by the child
child_body='
    set -euo pipefail
    . "$1"
    p=$2
    pn_ns_add "${p}a"
    pn_ns_add "${p}b"
    pn_veth "${p}a" eth0 "${p}b" eth0
    pn_http_server "${p}b" 18091 /
    echo ready
    case $3 in
        normal) exit 0 ;;
        error) false ;;
        killed) sleep 30 & wait $! ;; # wait, unlike sleep, lets the trap run at once
    esac'

main() {
    local p="pnst$$" out body
    echo "selftest: namespaces ${p}a, ${p}b"
    pn_ns_add "${p}a"
    pn_ns_add "${p}b"
    if pn_ns_add "${p}a" 2>/dev/null; then fail "pn_ns_add accepted a duplicate name"; fi
    pn_veth "${p}a" eth0 "${p}b" eth0
    ip -n "${p}a" addr add 10.244.254.1/30 dev eth0
    ip -n "${p}b" addr add 10.244.254.2/30 dev eth0

    local www
    www=$(mktemp -d "${TMPDIR:-/tmp}/pnst.XXXXXX")
    pn_cleanup_register rm -rf "$www"
    echo "hello from ${p}b" >"$www/index.html"

    # Nothing listens yet: the wait must fail within its timeout.
    local t0=$SECONDS
    if pn_wait_tcp "${p}a" 10.244.254.2 18090 1 2>/dev/null; then fail "pn_wait_tcp succeeded with no server"; fi
    ((SECONDS - t0 <= 4)) || fail "pn_wait_tcp overran its 1 s timeout ($((SECONDS - t0)) s)"

    pn_http_server "${p}b" 18090 "$www"
    local server=$PN_BG_PID
    pn_wait_tcp "${p}a" 10.244.254.2 18090 10 || fail "http server in ${p}b never accepted"
    body=$(pn_timeout 5 ip netns exec "${p}a" curl -sS --max-time 3 http://10.244.254.2:18090/index.html) ||
        fail "curl through the veth pair failed"
    [ "$body" = "hello from ${p}b" ] || fail "unexpected body: $body"
    echo "selftest: http through veth ok"

    out=$(printf '5\n1 3\n' | pn_median)
    [ "$out" = 3 ] || fail "pn_median 5 1 3 = $out, want 3"
    out=$(printf '4 1 2 3' | pn_median)
    [ "$out" = 2.5 ] || fail "pn_median 4 1 2 3 = $out, want 2.5"
    out=$(pn_ratio 1 4)
    [ "$out" = 0.250 ] || fail "pn_ratio 1 4 = $out, want 0.250"
    if pn_ratio 1 0 2>/dev/null; then fail "pn_ratio 1 0 succeeded"; fi
    echo "selftest: median, ratio ok"

    pn_cleanup_run
    kill -0 "$server" 2>/dev/null && fail "http server $server survived cleanup"
    assert_gone "$p" "cleanup"
    echo "selftest: cleanup ok"

    # A script that ends normally, fails, or is killed leaves nothing behind.
    bash -c "$child_body" child "$here/netns.sh" "${p}n" normal >/dev/null || fail "child topology (normal) failed"
    assert_gone "${p}n" "normal exit"
    if bash -c "$child_body" child "$here/netns.sh" "${p}e" error >/dev/null 2>&1; then fail "child with an error exited 0"; fi
    assert_gone "${p}e" "exit on error"
    local fifo
    fifo=$(mktemp -u "${TMPDIR:-/tmp}/pnst.fifo.XXXXXX")
    mkfifo "$fifo"
    pn_cleanup_register rm -f "$fifo"
    bash -c "$child_body" child "$here/netns.sh" "${p}k" killed >"$fifo" &
    local child=$!
    pn_cleanup_register pn_kill "$child"
    read -r -t 20 out <"$fifo" || fail "killed child never got ready"
    [ "$out" = ready ] || fail "killed child said $out"
    kill -TERM "$child"
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$child" 2>/dev/null && fail "child ignored SIGTERM"
    assert_gone "${p}k" "SIGTERM"
    echo "selftest: nothing left after normal exit, error, SIGTERM"
    echo "selftest: ok"
}

main "$@"
