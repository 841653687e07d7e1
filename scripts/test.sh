#!/usr/bin/env bash
# Runs every podnet test: formatting, lints, unit, property and in-process tests.
# Installs what it needs when missing. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "test.sh: installing ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "test.sh: missing ${need_apt[*]}; run as root or install them" >&2
        exit 1
    fi
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
