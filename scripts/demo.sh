#!/usr/bin/env bash
# The main job: build a cluster of network namespaces on this machine, show
# BGP sessions, routes and a pod-to-pod ping matrix, then tear it down.
#
#   scripts/demo.sh                          on etcd
#   scripts/demo.sh --datastore kubernetes   on a real kube-apiserver in the
#                                            lab; builds the Kubernetes
#                                            binaries first (scripts/k8s-build.sh:
#                                            several minutes the first time,
#                                            nothing after)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="/usr/sbin:/sbin:$PATH"

# Only the Kubernetes datastore needs the Go-built binaries; an etcd demo
# never waits for (or needs the toolchain of) that build.
datastore=etcd
prev=""
for arg in "$@"; do
  case "$arg" in
    --datastore=*) datastore="${arg#--datastore=}" ;;
  esac
  if [ "$prev" = "--datastore" ]; then datastore="$arg"; fi
  prev="$arg"
done
if [ "$datastore" = "kubernetes" ] && [ -z "${CALICO_K8S_BIN:-}" ]; then
  CALICO_K8S_BIN="$(scripts/k8s-build.sh | tail -1)"
  export CALICO_K8S_BIN
fi

cargo build --release --locked --bins
exec target/release/calico-lab demo "$@"
