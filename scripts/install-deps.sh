#!/usr/bin/env bash
# Installs the Debian packages calico-rs needs to build and test, if missing.
# Safe to run repeatedly; does nothing when everything is present.
#
# Each need is checked by the file the build or the tests actually use, not
# by a package name: a package installed without its recommends, or a
# command that exists in another flavour, is caught here instead of deep in
# a build script. protoc is not among them: Cargo brings its own
# (build/protoc, .cargo/config.toml).
set -euo pipefail

# file that must exist -> Debian package that provides it, and who uses it
needs=(
  "/usr/bin/cc gcc the linker of every Rust binary, and ring's C code"
  "/usr/include/stdio.h libc6-dev C headers for ring and libc's bindings"
  "/usr/bin/etcd etcd-server the etcd datastore of the tests and the lab"
  "/usr/bin/etcdctl etcd-client tests read and write etcd keys directly"
  "/usr/sbin/bird bird2 BIRD 2, the interop peer, ToR and benchmark anchor"
  "/usr/sbin/birdc bird2 BIRD 2's control client"
  "/usr/lib/frr/bgpd frr FRR's bgpd, the eBGP ToR of bird/tests/frr.rs"
  "/usr/bin/vtysh frr FRR's control client"
  "/usr/sbin/nft nftables felix's NAT table; the lab's link cuts"
  "/usr/bin/ip iproute2 namespaces, veths, routes"
  "/usr/bin/iperf3 iperf3 throughput benchmarks and tunnel tests"
  "/usr/bin/ping iputils-ping the lab's ping matrix"
  "/usr/sbin/ethtool ethtool offload switches of the tunnel tests"
  "/usr/bin/openssl openssl certificates of the etcd TLS test and the e2e cluster"
  "/usr/bin/qemu-system-x86_64 qemu-system-x86 the real-kernel tier's VM (scripts/kernel-test.sh)"
  "/bin/busybox busybox-static the real-kernel tier's initramfs; the e2e images' shell and tools"
)

# Only with CALICO_E2E_DEPS=1 (scripts/e2e-k8s.sh sets it): what the
# end-to-end run on real kubelets needs. The normal test run installs none of
# these.
if [ "${CALICO_E2E_DEPS:-0}" = 1 ]; then
  needs+=(
    "/usr/bin/containerd containerd each e2e node's container runtime (CRI plugin built in)"
    "/usr/bin/ctr containerd importing the e2e images into containerd"
    "/usr/sbin/runc runc the OCI runtime containerd starts containers with"
    "/usr/lib/cni/portmap containernetworking-plugins the portmap plugin Calico's conflist chains"
    "/usr/lib/cni/loopback containernetworking-plugins the pod's lo, set up by containerd's CRI"
    "/usr/bin/jq jq the e2e checks read IPAM blocks and the conflist"
    "/usr/bin/nsenter util-linux running the e2e daemons in their namespaces"
    "/usr/sbin/iptables iptables kube-proxy's rules on the e2e nodes (iptables mode)"
    "/usr/sbin/ipset ipset kube-proxy's IPVS mode, tried on an e2e node where the kernel has IPVS"
  )
fi

missing=()
for need in "${needs[@]}"; do
  read -r file pkg why <<<"$need"
  # iproute2 and friends live in /sbin or /bin on some layouts.
  if [ -e "$file" ] || [ -e "/sbin/$(basename "$file")" ] || [ -e "/bin/$(basename "$file")" ]; then
    continue
  fi
  echo "install-deps: $file is missing: installing $pkg ($why)" >&2
  case " ${missing[*]:-} " in
    *" $pkg "*) ;;
    *) missing+=("$pkg") ;;
  esac
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: installed ${missing[*]}" >&2
fi

# Debian starts packaged daemons on install where it can; our tests run their
# own instances on their own ports and must not race a system copy.
for svc in bird etcd frr; do
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop "$svc" >/dev/null 2>&1 || true
    systemctl disable "$svc" >/dev/null 2>&1 || true
  fi
done
