#!/usr/bin/env bash
# Runs one calico-rs benchmark; results are recorded in BENCHMARKS.md.
#
#   scripts/bench.sh fib [--routes N] [--resyncs K]
#       felix's route reconciler vs `ip -batch`: N (default 100000)
#       remote-block routes into a fresh network namespace each, plus the
#       time of a no-change resync of those N routes.
#
#   scripts/bench.sh ipip [--seconds N] [--runs K] [--backend B] [--streams P]
#                         [--underlay-mtu M] [--wire true|false]
#       TCP throughput (iperf3) pod -> pod across two nodes in different
#       subnets: routed directly vs through felix's IPIP tunnel (backend
#       userspace by default), plus the direct path without segmentation
#       offload for context. Defaults: 10 s per run, 3 runs.
#
# Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/sbin:/sbin:$PATH"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

if [ "$#" -lt 1 ]; then
  usage >&2
  exit 2
fi

bench="$1"
shift
case "$bench" in
  fib)
    cargo build --release --quiet -p felix --example fib_bench
    exec target/release/examples/fib_bench "$@"
    ;;
  ipip)
    cargo build --release --quiet -p felix --example ipip_bench
    exec target/release/examples/ipip_bench "$@"
    ;;
  -h|--help|help)
    usage
    ;;
  *)
    echo "bench.sh: unknown benchmark '$bench'" >&2
    usage >&2
    exit 2
    ;;
esac
