#!/usr/bin/env bash
# Runs every podnet test: formatting, lints, unit, property, in-process and
# root (network namespace) tests. Installs what it needs when missing.
# Must run as root: the root tests fail, never skip, without it.
# Usage: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/netns.sh
source scripts/lib/netns.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: the tests build network namespaces and TUN devices and must run as root (sudo scripts/test.sh)" >&2
    exit 1
fi
pn_ensure_tools
pn_ensure_kube_clients
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then
    rustup component add rustfmt clippy
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
bash scripts/lib/netns-selftest.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log"
# The daemon's tests again with TUN offloads off, which stays a supported mode.
PODNET_TEST_DAEMON_FLAGS=--no-offload cargo test --no-fail-fast --test daemon_connectivity --test daemon_services \
    --test daemon_lifecycle --test daemon_cli 2>&1 | tee -a "$log"
# A short fuzzing run: every target 20 s, failing on any crash.
bash scripts/fuzz.sh -t 20
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
