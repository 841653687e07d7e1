#!/usr/bin/env bash
# Durable pod address allocation: podnet's IPAM beside the reference CNI
# host-local plugin, in the same run, on the same filesystem (a temp dir).
# Prints ipam.alloc_us, ipam.hostlocal_us (medians per allocation) and
# ipam.speedup. Usage: scripts/bench-ipam.sh [N]   (default 200 allocations)
# No network traffic: host-local only writes files in its data dir.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
host_local=/usr/lib/cni/host-local

if [ ! -x "$host_local" ]; then
    echo "bench-ipam: installing containernetworking-plugins for $host_local" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ipam.XXXXXX")
trap 'rm -rf "$work"' EXIT

# podnet: N allocations in one process, each durable before it returns.
ours=$(cargo bench --quiet --bench ipam -- --dir "$work/podnet" --n "$n" | grep '^ipam.alloc_us:')
echo "$ours"

# host-local: one plugin process per allocation, as a container runtime runs it.
cat >"$work/hostlocal.json" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "bench",
  "type": "host-local",
  "ipam": {
    "type": "host-local",
    "dataDir": "$work/hostlocal",
    "ranges": [[{ "subnet": "10.244.0.0/16" }]]
  }
}
JSON
: >"$work/hostlocal.us"
for i in $(seq 1 "$n"); do
    start=$EPOCHREALTIME
    CNI_COMMAND=ADD CNI_CONTAINERID="bench-$i" CNI_NETNS=/var/run/netns/bench-ipam-unused \
        CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$host_local" <"$work/hostlocal.json" >/dev/null
    end=$EPOCHREALTIME
    echo "$start $end" | awk '{ printf "%.1f\n", ($2 - $1) * 1e6 }' >>"$work/hostlocal.us"
done
theirs=$(sort -n "$work/hostlocal.us" | awk -v n="$n" 'NR == int(n / 2) + 1 { print; exit }')
echo "ipam.hostlocal_us: $theirs"
echo "${ours#ipam.alloc_us: } $theirs" | awk '{ printf "ipam.speedup: %.1f\n", $2 / $1 }'
