#!/usr/bin/env bash
# The long chaos cases, on a calico-lab of 5 nodes over 2 subnets (one
# pod each, CrossSubnet IPIP, BFD on the mesh); each prints what it
# measured:
#   - kill -9 bird, felix, confd and calico-node on node-1 in turn while
#     pods on every other node ping a pod on it (lost pings counted);
#   - each node's underlay link cut in turn: its blocks gone from every
#     other node's kernel (target 1 s), back after the link returns
#     (target 2 s), every BFD session protecting again (target 2 s); then
#     node-1's link (one single-hop and three multihop BFD sessions) cut
#     50 times in a row: the distribution of those three times;
#   - etcd stopped for 60 s: pod traffic unaffected, a pod add fails
#     cleanly, every node adds pods again once etcd is back;
#   - 500 pods added and deleted in a burst over the 5 nodes: no address
#     handed out twice, nothing left in IPAM (audit), no stale route;
#   - then on a 3-node lab on a real kube-apiserver (--datastore
#     kubernetes; scripts/k8s-build.sh builds it): the API server stopped
#     for 60 s: pod traffic unaffected, a pod add fails with "try again
#     later" (CNI code 11) and leaves nothing, adds work again within a
#     second of its return; and a 200-pod burst through the API server.
# The short versions run in `cargo test` (tests/tests/chaos.rs).
# Needs root. Exit status: non-zero if any case missed its target.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="/usr/sbin:/sbin:$PATH"
cargo build --release --quiet --locked --bins
lab=target/release/calico-lab
export CALICO_LAB_NAME=calico-lab-chaos
trap '$lab down >/dev/null 2>&1 || true' EXIT
$lab down >/dev/null 2>&1 || true
$lab up --nodes 5 --subnets 2 --pods-per-node 1 --bfd | grep -E '^(building|converged)'
failed=0
for c in bird confd felix calico-node; do
  $lab chaos kill --component "$c" --node node-1 --seconds 15 || failed=1
  sleep 5
done
for n in 0 1 2 3 4; do
  $lab chaos link --node "node-$n" --seconds 5 || failed=1
done
$lab chaos link --node node-1 --seconds 3 --rounds 50 | grep -v '^  round ' || failed=1
$lab chaos etcd --seconds 60 || failed=1
$lab chaos burst --pods 500 || failed=1
$lab check | tail -1 || failed=1
$lab down >/dev/null

CALICO_K8S_BIN="${CALICO_K8S_BIN:-$(scripts/k8s-build.sh | tail -1)}"
export CALICO_K8S_BIN
$lab up --datastore kubernetes --nodes 3 --subnets 2 --pods-per-node 1 | grep -E '^(building|kube-apiserver|converged)'
$lab chaos apiserver --seconds 60 || failed=1
$lab chaos burst --pods 200 || failed=1
$lab check | tail -1 || failed=1
exit "$failed"
