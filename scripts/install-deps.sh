#!/usr/bin/env bash
# Installs the Debian packages calico-rs needs to build and test, if missing.
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

# command -> Debian package
declare -A need=(
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [bird]=bird2
  [protoc]=protobuf-compiler
  [nft]=nftables
  [ip]=iproute2
  [iperf3]=iperf3
  [ping]=iputils-ping
  [ethtool]=ethtool
)

missing=()
for cmd in "${!need[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/sbin/$cmd" ]; then
    missing+=("${need[$cmd]}")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts packaged daemons on install where it can; our tests run their
# own instances on their own ports and must not race a system copy.
for svc in bird etcd; do
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
