#!/usr/bin/env bash
# Builds container images without Docker, buildah or a registry: an OCI image
# layout archive, written with tar and sha256sum, that containerd imports
# (`ctr -n k8s.io images import ARCHIVE`). The registry-less way to get the
# image the Dockerfile describes onto a node.
#
#   scripts/oci-image.sh [--bin DIR] [--calico NAME] [--pause NAME]
#                        [--busybox NAME] OUT.tar
#
#   --bin DIR       where the release binaries are (default target/release,
#                   from `cargo build --release --locked --bins`)
#   --calico NAME   the calico-rs image (default localhost/calico-rs:latest);
#                   "" leaves it out (then no release binaries are needed)
#   --pause NAME    a pod sandbox ("pause") image, for containerd's
#                   sandbox_image; "" (the default) leaves it out
#   --busybox NAME  a busybox test image (Cmd sh); "" (the default) leaves it
#                   out
#   --keep-debug    keep the binaries' debug sections (the release profile's
#                   line tables, about 3/4 of their size); by default they are
#                   removed with `strip --strip-debug` (symbols stay, so
#                   backtraces still name functions)
#
# Every image's name goes into the archive as io.containerd.image.name, which
# is the name `ctr images import` gives it. Names under localhost/ are kept as
# they are by containerd's reference normalisation, so a pod's `image:` can
# name them exactly (with imagePullPolicy IfNotPresent or Never).
#
# Layers (uncompressed, reproducible: sorted, owner 0, mtime 0, so the same
# inputs give the same digests):
#   base    Debian's busybox-static as /bin/busybox with its applet links,
#           /etc/passwd and /etc/group, /tmp. Shared by all three images.
#   calico  /usr/local/bin/{calico-node,confd,bird,felix,calico}; nft
#           (felix's NAT table: it runs `nft` from PATH) and ip (for
#           operators, as in the Dockerfile) at their Debian paths; the
#           shared libraries all of these load (their ldd closure, glibc's
#           loader included) at the paths ldd names, and an /etc/ld.so.cache
#           made for that root by ldconfig. /etc/iproute2 and
#           /etc/ssl/certs/ca-certificates.crt when the build host has them.
# Images:
#   calico  base + calico; Entrypoint /usr/local/bin/calico-node, Cmd run
#           (as the Dockerfile). install-cni runs /bin/sh from it.
#   pause   base; a shell as the sandbox's PID 1 that exits on SIGTERM/SIGINT
#           and otherwise waits (PID 1 has no default signal actions, so a
#           plain `sleep` would ignore kubelet's stop). It reaps nothing,
#           which is fine while pods do not share a PID namespace.
#   busybox base; Cmd sh.
#
# Needs: bash, GNU tar, coreutils, ldd and ldconfig (libc-bin), and on the
# build host /bin/busybox (busybox-static), /usr/sbin/nft (nftables),
# /usr/bin/ip (iproute2). Messages go to stderr; the archive's path is the
# last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

say() { echo "oci-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

BIN=target/release
CALICO=localhost/calico-rs:latest
PAUSE=""
BUSYBOX=""
OUT=""
STRIP=1
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --calico) CALICO=$2; shift 2 ;;
    --pause) PAUSE=$2; shift 2 ;;
    --busybox) BUSYBOX=$2; shift 2 ;;
    --keep-debug) STRIP=0; shift ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$OUT" ] || die "one output archive only"; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || die "usage: $0 [--bin DIR] [--calico NAME] [--pause NAME] [--busybox NAME] OUT.tar"
[ -n "$CALICO$PAUSE$BUSYBOX" ] || die "no image asked for"
CALICO_BINS="calico-node confd bird felix calico"
[ -x /bin/busybox ] || die "no /bin/busybox (apt-get install busybox-static)"
if [ -n "$CALICO" ]; then
  for b in $CALICO_BINS; do
    [ -x "$BIN/$b" ] || die "no $BIN/$b: run cargo build --release --locked --bins first"
  done
  for f in /usr/sbin/nft /usr/bin/ip; do [ -x "$f" ] || die "no $f (apt-get install nftables iproute2)"; done
  if [ $STRIP = 1 ]; then command -v strip >/dev/null || die "no strip (apt-get install binutils), or pass --keep-debug"; fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/oci-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
oci=$tmp/oci
mkdir -p "$oci/blobs/sha256"

# Reproducible tar of a directory: fixed order, owner, group and times.
layer_tar() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu -C "$1" -cf "$2" .; }
# blob FILE -> "digest size", moving FILE into the layout's blobs.
blob() {
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  mv "$1" "$oci/blobs/sha256/$d"; echo "$d $s"
}

# ---- base layer: busybox
root=$tmp/base
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root,run,var}
ln -s ../run "$root/var/run"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
layer_tar "$root" "$tmp/base.tar"
read -r base_dig base_size < <(blob "$tmp/base.tar")
say "base layer (busybox): $base_size bytes"

# ---- calico layer
if [ -n "$CALICO" ]; then
  root=$tmp/calico
  mkdir -p "$root/usr/local/bin" "$root/usr/sbin" "$root/usr/bin" "$root/etc"
  for b in $CALICO_BINS; do
    cp "$BIN/$b" "$root/usr/local/bin/$b"
    if [ $STRIP = 1 ]; then strip --strip-debug "$root/usr/local/bin/$b"; fi
  done
  cp /usr/sbin/nft "$root/usr/sbin/nft"
  cp /usr/bin/ip "$root/usr/bin/ip"
  # The ldd closure, each library at the path the loader names (e.g.
  # /lib/x86_64-linux-gnu/libc.so.6, /lib64/ld-linux-x86-64.so.2), the
  # file's content resolved through symlinks.
  libs=$(for f in "$root"/usr/local/bin/* "$root/usr/sbin/nft" "$root/usr/bin/ip"; do
    ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
  done | sort -u)
  [ -n "$libs" ] || die "ldd found no libraries (are the binaries dynamic?)"
  for l in $libs; do
    mkdir -p "$root$(dirname "$l")"
    cp -L "$l" "$root$l"
  done
  # Where the loader looks, as a cache built for this root (no ldconfig runs
  # in the container).
  printf '%s\n' $(for l in $libs; do dirname "$l"; done | sort -u) >"$root/etc/ld.so.conf"
  ldconfig -r "$root" 2>/dev/null || say "warning: ldconfig -r failed; the loader's default paths apply"
  # Deterministic: ldconfig writes no auxiliary cache into the image.
  rm -rf "$root/var/cache/ldconfig"; rmdir "$root/var/cache" "$root/var" 2>/dev/null || true
  if [ -d /etc/iproute2 ]; then cp -rL /etc/iproute2 "$root/etc/iproute2"; fi
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"; cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  layer_tar "$root" "$tmp/calico.tar"
  read -r cal_dig cal_size < <(blob "$tmp/calico.tar")
  say "calico layer: $cal_size bytes ($(echo $libs | wc -w) shared libraries)"
fi

# ---- configs and manifests
manifests=()
image() { # name entrypoint-json cmd-json layer-digest:size...
  local name=$1 entry=$2 cmd=$3 diff_ids="" layers="" l c_dig c_size m_dig m_size; shift 3
  for l in "$@"; do
    diff_ids+="${diff_ids:+,}\"sha256:${l%%:*}\""
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:${l%%:*}\",\"size\":${l#*:}}"
  done
  printf '{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
    "$entry" "$cmd" "$diff_ids" >"$tmp/config.json"
  read -r c_dig c_size < <(blob "$tmp/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
    "$c_dig" "$c_size" "$layers" >"$tmp/manifest.json"
  read -r m_dig m_size < <(blob "$tmp/manifest.json")
  manifests+=("$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}' \
    "$m_dig" "$m_size" "$name" "${name##*:}")")
  say "image $name: manifest sha256:$m_dig"
}
if [ -n "$CALICO" ]; then
  image "$CALICO" '["/usr/local/bin/calico-node"]' '["run"]' "$base_dig:$base_size" "$cal_dig:$cal_size"
fi
if [ -n "$PAUSE" ]; then
  image "$PAUSE" '["/bin/sh","-c","trap \"exit 0\" TERM INT; sleep 2147483647 & wait"]' null "$base_dig:$base_size"
fi
if [ -n "$BUSYBOX" ]; then
  image "$BUSYBOX" null '["sh"]' "$base_dig:$base_size"
fi
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
  "$(IFS=,; echo "${manifests[*]}")" >"$oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"
mkdir -p "$(dirname "$OUT")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu -C "$oci" -cf "$OUT.tmp" oci-layout index.json blobs
mv -f "$OUT.tmp" "$OUT"
say "wrote $OUT ($(stat -c %s "$OUT") bytes)"
echo "$OUT"
