#!/usr/bin/env bash
# The main job: build a cluster of network namespaces on this machine, show
# BGP sessions, routes and a pod-to-pod ping matrix, then tear it down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="/usr/sbin:/sbin:$PATH"
cargo build --release --locked --bins
exec target/release/calico-lab demo "$@"
