#!/usr/bin/env bash
# The real-kernel tier: boots Debian's own kernel under qemu (software
# emulation) and runs a command inside it, as root, on a copy-on-write view
# of this machine's file system. For what this machine's kernel lacks: the
# ipip and vxlan link types every real node uses.
#
#   scripts/kernel-test.sh [--mem MiB] -- COMMAND [ARGS...]
#   scripts/kernel-test.sh                 # the tier: builds and runs the suite
#
# With a command: runs it in the VM (from the current directory), prints
# what it prints, and exits with its exit status. Without one: runs the
# tier's tests (tests/tests/kernel_tier.rs), each of which boots the VM.
#
# How: the kernel package (linux-image-amd64's current dependency) is
# downloaded with `apt-get download` and unpacked -- not installed -- into
# /var/cache/calico-rs/kernel/VERSION, with a module index made by busybox
# depmod. A small initramfs (busybox and the virtio/9p/overlay modules)
# mounts this machine's / read-only over 9p, lays a tmpfs overlay on it so
# the guest may write (nothing it writes reaches the host), points the
# kernel's module loader at the guest's modules, and runs the command in a
# chroot. The guest's console is the command's output; its last line
# carries the exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/sbin:/sbin:$PATH"

mem=3072
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "kernel-test: unknown option $1" >&2; exit 2 ;;
  esac
done

die() { echo "kernel-test: $*" >&2; exit 1; }

for f in /usr/bin/qemu-system-x86_64 /bin/busybox; do
  [ -x "$f" ] || die "$f is missing (scripts/install-deps.sh installs it)"
done

cache=/var/cache/calico-rs/kernel

# The kernel: the image package linux-image-amd64 depends on today.
prepare_kernel() {
  local pkg ver dir tmp
  image_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
  }
  pkg=$(image_pkg)
  if [ -z "$pkg" ]; then
    # A machine whose package lists were never fetched.
    apt-get update -qq || true
    pkg=$(image_pkg)
  fi
  [ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64, even after apt-get update"
  ver=${pkg#linux-image-}
  dir="$cache/$ver"
  if [ ! -e "$dir/ready" ]; then
    echo "kernel-test: fetching $pkg (downloaded and unpacked, not installed)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    tmp=$(mktemp -d)
    # apt drops privileges to _apt, which cannot write into mktemp's 0700 dir.
    chmod 0755 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) \
      || (apt-get update -qq && cd "$tmp" && apt-get download -q "$pkg" >/dev/null) \
      || die "apt-get download $pkg failed"
    dpkg-deb -x "$tmp"/*.deb "$dir/root"
    rm -rf "$tmp"
    busybox depmod -b "$dir/root" "$ver"
    make_initramfs "$dir" "$ver"
    touch "$dir/ready"
  fi
  kdir="$dir"
  kver="$ver"
}

# The initramfs: busybox, the modules that reach the host's files, /init.
make_initramfs() {
  local dir="$1" ver="$2" mods="$1/root/lib/modules/$2" ird m dep
  ird=$(mktemp -d)
  mkdir -p "$ird"/{bin,sbin,proc,sys,dev,host,rw,newroot,mods,lib/modules}
  cp /bin/busybox "$ird/bin/busybox"
  ln -s busybox "$ird/bin/sh"
  # The kernel's module loader runs /sbin/modprobe in this (pid 1's) root.
  ln -s ../bin/busybox "$ird/sbin/modprobe"
  : >"$ird/mods/order"
  # Each module after what it needs (modules.dep lists needs last-first).
  for m in virtio_pci 9pnet_virtio 9p overlay; do
    dep=$(grep -E "/$m\.ko:" "$mods/modules.dep")
    for d in $(echo "${dep#*:}" | tr ' ' '\n' | tac) "${dep%%:*}"; do
      [ -n "$d" ] || continue
      grep -qx "$(basename "$d")" "$ird/mods/order" && continue
      cp "$mods/$d" "$ird/mods/"
      basename "$d" >>"$ird/mods/order"
    done
  done
  cat >"$ird/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "kernel-test: insmod $m failed"; done
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
kdir=$(arg calico.kdir)
run=$(arg calico.run)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576,cache=loose hostroot /host \
  || { echo "kernel-test: cannot mount the host over 9p"; poweroff -f; }
mount --bind "/host$kdir/root/lib/modules" /lib/modules
echo /sbin/modprobe >/proc/sys/kernel/modprobe
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || { echo "kernel-test: overlay over 9p failed"; poweroff -f; }
mkdir -p /newroot/lib/modules
mount --bind /lib/modules /newroot/lib/modules
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
mount -t tmpfs tmpfs /newroot/tmp
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up
# The guest has no modprobe of its own (kmod is not installed on the host).
[ -e /newroot/usr/sbin/modprobe ] || ln -s /bin/busybox /newroot/usr/sbin/modprobe
echo "kernel-test: $(uname -r) up"
chroot /newroot /bin/bash "$run"
echo "kernel-test: exit status $?"
poweroff -f
EOF
  chmod +x "$ird/init"
  (cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initramfs.gz"
  rm -rf "$ird"
}

kdir=""
kver=""
prepare_kernel

# No command: the tier's own suite, tests/tests/kernel_tier.rs (each of its
# tests boots the VM and runs itself in there).
if [ $# -eq 0 ]; then
  # Meant to reuse the test build's artifacts, but a clean-clone run still
  # recompiled 22 crates here (a target filter resolves features apart
  # from the full `cargo test --workspace` build; not yet solved).
  exec cargo test --workspace --locked --test kernel_tier -- --test-threads=1
fi

# The command, as a script the guest runs from this directory.
# (Not under /tmp: the guest mounts its own /tmp.)
mkdir -p "$cache/runs"
run=$(mktemp "$cache/runs/run.XXXXXX")
trap 'rm -f "$run"' EXIT
{
  echo "set -e"
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  echo "export HOME=/root CALICO_KERNEL_VM=1"
  for v in RUST_LOG RUST_BACKTRACE CALICO_K8S_BIN CARGO_TARGET_DIR; do
    [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
  done
  printf 'cd %q\n' "$PWD"
  printf '%q ' "$@"
  echo
} >"$run"
chmod 0644 "$run"

# Software emulation: this machine's /dev/kvm cannot run an unmodified
# kernel. Two virtual CPUs run on two host threads (multi-threaded TCG).
log=$(mktemp /tmp/kernel-test-log.XXXXXX)
trap 'rm -f "$run" "$log"' EXIT
set +e
timeout --foreground 3000 qemu-system-x86_64 \
  -machine q35,accel=tcg -cpu max -smp 2 -m "$mem" \
  -nographic -no-reboot -nic none \
  -kernel "$kdir/root/boot/vmlinuz-$kver" -initrd "$kdir/initramfs.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 calico.kdir=$kdir calico.run=$run" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  </dev/null 2>&1 | tee "$log"
qemu_status=${PIPESTATUS[0]}
set -e
status=$(sed -n 's/^kernel-test: exit status \([0-9]*\).*/\1/p' "$log" | tail -1)
if [ -z "$status" ]; then
  echo "kernel-test: the guest ended without an exit status (qemu exit $qemu_status)" >&2
  exit 1
fi
exit "$status"
