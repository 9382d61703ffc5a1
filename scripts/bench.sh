#!/usr/bin/env bash
# Runs one calico-rs benchmark; results are recorded in BENCHMARKS.md.
#
#   scripts/bench.sh fib [--routes N] [--resyncs K]
#       felix's route reconciler vs `ip -batch`: N (default 100000)
#       remote-block routes into a fresh network namespace each, plus the
#       time of a no-change resync of those N routes.
#
#   scripts/bench.sh vxlan [--seconds N] [--runs K] [--streams P]
#                          [--underlay-mtu M] [--wire true|false] [--kernel true|false]
#       The same as ipip with VXLAN (pool vxlanMode: Always): direct vs
#       felix's userspace VTEP, and vs the kernel's vxlan device as a
#       reference (--kernel false skips it). Defaults: 10 s per run, 3 runs.
#
#   scripts/bench.sh ipip [--seconds N] [--runs K] [--backend B] [--streams P]
#                         [--underlay-mtu M] [--wire true|false]
#       TCP throughput (iperf3) pod -> pod across two nodes in different
#       subnets: routed directly vs through felix's IPIP tunnel (backend
#       userspace by default), plus the direct path without segmentation
#       offload for context. Defaults: 10 s per run, 3 runs.
#
#   scripts/bench.sh cni [--pods N]
#       Pod add / delete latency through the real CNI plugin on one lab
#       node with etcd, confd and felix running: N (default 200) pods added
#       one after another, then deleted; p50 / p99 of each.
#
#   scripts/bench.sh policy [--policies N] [--local N] [--remote N] [--repeat K]
#                           [--set-addresses N] [--seconds S] [--rounds R]
#       felix's nftables policy dataplane in a fresh network namespace:
#       N (default 1000) policies over 100 local endpoints programmed from
#       cold, one changed policy (in-process libnftables, then the nft
#       binary), one remote pod added, a no-change resync, the process's
#       memory; then pod-to-pod TCP throughput (R rounds of S seconds) with
#       no table, felix's table without policy, and the N policies over
#       10,000 addresses in sets. Each number beside issue 17's target.
#
#   scripts/bench.sh bgp-ingest [--routes N] [--per-update K] [--runs R]
#                               [--only ours|bird]
#       our bird vs BIRD 2 in the same run: N (default 1000000) distinct
#       IPv4 prefixes, pre-encoded, sent over one eBGP session into each
#       daemon in fresh namespaces; time until all are in the Loc-RIB,
#       time until all are withdrawn, and the daemon's peak RSS (VmHWM),
#       medians of R (default 3) runs, side by side with ratios.
#
#   scripts/bench.sh converge [--nodes N] [--iterations K] [--datastore etcd|kubernetes]
#       In a calico-lab of N-1 nodes (default N=20, 2 subnets, CrossSubnet
#       IPIP): a pod made on node-0 through the CNI plugin, pinged from a
#       pod on a node in the other subnet until the first echo reply, K
#       (default 100) times (p50 / p99 of the time after ADD returns);
#       then node N joins and the time until it has every other node's
#       blocks, and until every node routes its block. The datastore's
#       processes' CPU while the nodes started and converged, and their
#       memory, are printed beside it. --datastore kubernetes: Calico's
#       resources in a real kube-apiserver (binaries built by
#       scripts/k8s-build.sh, or CALICO_K8S_BIN).
#
#   scripts/bench.sh policy-lab [--nodes N] [--iterations K] [--datastore etcd|kubernetes]
#       In a calico-lab of N (default 20) nodes: a GlobalNetworkPolicy
#       selecting every pod has a rule's port changed K (default 100)
#       times, timed from the datastore write until every node's kernel
#       holds it; then K pods made on node-0 through the CNI plugin, timed
#       from the ADD's return until every other node's selector set holds
#       the pod's address. Each node's `nft monitor` stamps the commits.
#
#   scripts/bench.sh scale [--nodes N] [--route-reflectors K] [--datastore etcd|kubernetes]
#       A calico-lab of N (default 50) nodes on 2 subnets, one pod each, as
#       a full BGP mesh and then again with K (default 2) route reflectors:
#       time from the last calico-node's start to full convergence (every
#       session up, every block routed everywhere), then per node the RSS
#       of calico-node, confd, bird and felix and the route count, and the
#       datastore's processes (etcd; kube-apiserver and its
#       controller-manager with --datastore kubernetes) CPU and memory.
#
# Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/sbin:/sbin:$PATH"

usage() {
  sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
}

if [ "$#" -lt 1 ]; then
  usage >&2
  exit 2
fi

# The Kubernetes binaries, for --datastore kubernetes only (an etcd run
# never waits for that build).
k8s_for() {
  case "$1" in
    etcd) ;;
    kubernetes)
      if [ -z "${CALICO_K8S_BIN:-}" ]; then
        CALICO_K8S_BIN="$(scripts/k8s-build.sh | tail -1)"
        export CALICO_K8S_BIN
      fi
      ;;
    *) echo "bench.sh: --datastore is etcd or kubernetes, not '$1'" >&2; exit 2 ;;
  esac
}

# Where cargo puts the release build (it honours CARGO_TARGET_DIR).
rel="${CARGO_TARGET_DIR:-target}/release"

# converge and policy-lab: their options (--nodes N, default 20;
# --iterations K, default 100; --datastore), the release build, and a lab
# named $2 of N minus $3 nodes over 2 subnets with CrossSubnet IPIP, one
# pod each, removed on exit. Sets $lab and $iterations for the caller.
lab_bench() {
  local bench="$1" name="$2" spare="$3"
  shift 3
  local nodes=20 datastore=etcd
  iterations=100
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --nodes) nodes="$2"; shift 2 ;;
      --iterations) iterations="$2"; shift 2 ;;
      --datastore) datastore="$2"; shift 2 ;;
      *) echo "bench.sh $bench: unknown option $1" >&2; exit 2 ;;
    esac
  done
  scripts/install-deps.sh
  k8s_for "$datastore"
  cargo build --release --quiet --locked --bins
  lab="$rel"/calico-lab
  export CALICO_LAB_NAME="$name"
  trap '$lab down >/dev/null 2>&1 || true' EXIT
  $lab down >/dev/null 2>&1 || true
  $lab up --datastore "$datastore" --nodes "$((nodes - spare))" --subnets 2 --pods-per-node 1 --ipip crosssubnet |
    grep -E '^(building|etcd|kube-apiserver|calico-node|[0-9]+ pods|converged|datastore)'
}

bench="$1"
shift
case "$bench" in
  fib)
    cargo build --release --quiet -p tests --example fib_bench
    exec "$rel"/examples/fib_bench "$@"
    ;;
  ipip)
    cargo build --release --quiet -p tests --example ipip_bench
    exec "$rel"/examples/ipip_bench "$@"
    ;;
  vxlan)
    cargo build --release --quiet -p tests --example vxlan_bench
    exec "$rel"/examples/vxlan_bench "$@"
    ;;
  bgp-ingest)
    if ! [ -x /usr/sbin/bird ]; then
      echo "bench.sh: bgp-ingest needs BIRD 2 (/usr/sbin/bird); run scripts/install-deps.sh" >&2
      exit 1
    fi
    cargo build --release --quiet -p bird --bin bird && cargo build --release --quiet -p tests --example bgp_ingest
    exec "$rel"/examples/bgp_ingest --bird-bin "$rel"/bird "$@"
    ;;
  policy)
    cargo build --release --quiet -p tests --example policy_nft_bench
    exec "$rel"/examples/policy_nft_bench "$@"
    ;;
  cni)
    cargo build --release --quiet -p tests --example cni_bench
    exec "$rel"/examples/cni_bench "$@"
    ;;
  converge)
    lab_bench converge calico-lab-bench 1 "$@"
    $lab converge --iterations "$iterations" --new-nodes 1
    ;;
  scale)
    nodes=50
    rrs=2
    datastore=etcd
    while [ "$#" -gt 0 ]; do
      case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --route-reflectors) rrs="$2"; shift 2 ;;
        --datastore) datastore="$2"; shift 2 ;;
        *) echo "bench.sh scale: unknown option $1" >&2; exit 2 ;;
      esac
    done
    scripts/install-deps.sh
    k8s_for "$datastore"
    cargo build --release --quiet --locked --bins
    lab="$rel"/calico-lab
    export CALICO_LAB_NAME=calico-lab-scale
    trap '$lab down >/dev/null 2>&1 || true' EXIT
    for mode in mesh rr; do
      $lab down >/dev/null 2>&1 || true
      extra=()
      if [ "$mode" = rr ]; then extra=(--route-reflectors "$rrs"); fi
      echo "== $nodes nodes, $([ "$mode" = rr ] && echo "$rrs route reflectors" || echo "full mesh"), datastore $datastore"
      $lab up --datastore "$datastore" --nodes "$nodes" --subnets 2 --pods-per-node 1 "${extra[@]}" |
        grep -E '^(building|converged|datastore)'
      sleep 5  # let start-up allocations settle before measuring memory
      $lab stats
      $lab down >/dev/null
    done
    ;;
  policy-lab)
    lab_bench policy-lab calico-lab-policy 0 "$@"
    $lab policy-bench --iterations "$iterations"
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
