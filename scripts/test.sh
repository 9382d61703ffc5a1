#!/usr/bin/env bash
# Runs every check calico-rs has: formatting, lints, and all tests (unit,
# real-etcd integration, network-namespace tests). Needs root for the
# namespace tests; installs its own Debian dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

export PATH="/usr/sbin:/sbin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
mkdir -p target
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "== FAILED (exit $status); failing tests:"
  grep -E '^test .* FAILED$|^---- ' target/test.log || true
  exit "$status"
fi
echo "== all tests passed"
