#!/usr/bin/env bash
# Runs every check calico-rs has: formatting, lints, and all tests (unit,
# real-etcd and real-Kubernetes integration, network-namespace tests).
# Needs root for the namespace tests; installs its own Debian dependencies
# and builds the Kubernetes binaries it tests against (scripts/k8s-build.sh,
# cached outside the work tree). Prints how long each tier took.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="/usr/sbin:/sbin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A clean clone builds once: incremental state would only cost time and
# disk (it roughly doubles target/debug).
export CARGO_INCREMENTAL=0
mkdir -p target

timings=()
report() {
  local status=$?
  # The background Kubernetes build (below), if a tier failed before it
  # was waited for: its whole process group.
  [ -z "${k8s_pid:-}" ] || kill -- "-$k8s_pid" 2>/dev/null || true
  if [ "${#timings[@]}" -gt 0 ]; then
    echo "== time per tier"
    printf '%s\n' "${timings[@]}"
  fi
  exit "$status"
}
trap report EXIT

# record NAME START STATUS: the tier's line for the report.
record() {
  timings+=("$(printf '  %-28s %5ds%s' "$1" $((SECONDS - $2)) "$([ "$3" -eq 0 ] || echo "  FAILED (exit $3)")")")
}

# timed NAME COMMAND...: runs COMMAND, records how long it took.
timed() {
  local name="$1" start=$SECONDS status=0
  shift
  echo "== $name"
  "$@" || status=$?
  record "$name" "$start" "$status"
  return "$status"
}

# With CALICO_E2E_DEPS=1 also containerd, runc, the CNI plugins,
# busybox-static, iptables and ipset: tests/tests/e2e_k8s.rs runs the
# DaemonSet on three real kubelets, with kube-proxy (scripts/e2e-k8s.sh).
timed "install dependencies" env CALICO_E2E_DEPS=1 scripts/install-deps.sh

# kube-apiserver, kube-controller-manager, kubectl, kubelet, kube-proxy and
# etcd 3.6, built from the Go module proxy once per pin. On a cold machine
# that is minutes of downloads and Go compiles which need nothing of the
# Rust build: it runs in the background beside the format check, clippy and
# the test build (each fills the other's idle and single-threaded
# stretches), and the tests wait for it. Its messages are printed when it
# is waited for.
k8s_out=target/k8s-build.out
k8s_err=target/k8s-build.log
k8s_start=$SECONDS
# In a process group of its own, so that report can stop all of it.
setsid scripts/k8s-build.sh >"$k8s_out" 2>"$k8s_err" &
k8s_pid=$!
wait_k8s() {
  local status=0
  echo "== kubernetes binaries (built beside the Rust tiers since the start of them)"
  wait "$k8s_pid" || status=$?
  k8s_pid=""
  cat "$k8s_err"
  record "kubernetes binaries" "$k8s_start" "$status"
  [ "$status" -eq 0 ] || return "$status"
  CALICO_K8S_BIN="$(tail -1 "$k8s_out")"
  export CALICO_K8S_BIN
  echo "Kubernetes binaries in $CALICO_K8S_BIN"
}

# A machine whose toolchain lacks rustfmt or clippy still runs the tests,
# and says so loudly.
if cargo fmt --version >/dev/null 2>&1; then
  timed "cargo fmt --check" cargo fmt --all -- --check
else
  echo "!! cargo fmt is not installed: SKIPPING the format check (rustup component add rustfmt)" >&2
  timings+=("  cargo fmt --check             SKIPPED: rustfmt missing")
fi
if cargo clippy --version >/dev/null 2>&1; then
  timed "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "!! cargo clippy is not installed: SKIPPING lints (rustup component add clippy)" >&2
  timings+=("  cargo clippy                  SKIPPED: clippy missing")
fi

timed "build the tests" cargo test --workspace --locked --no-run
wait_k8s

run_tests() {
  local status
  set +e
  # The real-kernel tier's tests (vm_*) run below, on their own.
  cargo test --workspace --locked --no-fail-fast -- --skip vm_ 2>&1 | tee target/test.log
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "== FAILED (exit $status); failing tests:"
    grep -E '^test .* FAILED$|^---- ' target/test.log || true
  fi
  return "$status"
}
timed "cargo test" run_tests

# Debian's kernel under qemu, for the ipip and vxlan link types this
# machine's kernel lacks: felix's kernel tunnels and labs built on them
# (scripts/kernel-test.sh; the kernel package is fetched once).
timed "real-kernel tier (qemu)" scripts/kernel-test.sh
echo "== all tests passed"
