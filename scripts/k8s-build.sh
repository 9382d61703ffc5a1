#!/usr/bin/env bash
# Builds real Kubernetes control-plane binaries from the Go module proxy, for
# the tests that need a genuine API server, kubelet, kube-proxy and kubectl.
#
#   scripts/k8s-build.sh              build (or reuse) the binaries; the last
#                                     line of stdout is their directory:
#                                       bin=$(scripts/k8s-build.sh | tail -1)
#   scripts/k8s-build.sh pin v1.34.N  regenerate k8s/go.mod and k8s/go.sum for
#                                     another Kubernetes release (then commit)
#
# What gets built, into ${CALICO_K8S_CACHE:-/var/cache/calico-rs/k8s}/<pin>/bin:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
#     from the wrapper module k8s/ (it requires k8s.io/kubernetes and lists
#     the commands as `tool` directives);
#   etcd etcdctl
#     from the wrapper module k8s/etcd/ (go.etcd.io/etcd/server/v3 and
#     etcdctl/v3, at the version Kubernetes' own go.mod uses for its etcd
#     client). Debian's etcd-server is 3.4.23: kube-apiserver 1.34 runs on
#     it, but logs "RequestWatchProgress feature is not supported" and then
#     serves consistent LISTs from etcd instead of its watch cache, unlike a
#     1.34 cluster on etcd 3.5/3.6. The 3.6 build takes under 10% of the time.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules
# (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with
# ./staging, so `go install k8s.io/kubernetes/cmd/...@v1.34.N` is refused.
# `pin` reads those replace lines from the upstream go.mod and points each
# staging module at its published v0.34.N instead; nothing is typed by hand.
#
# The build is skipped when the stamp in the bin directory matches the hash
# of the wrapper modules and the build recipe. The Go module cache and build
# cache live under the cache root too, so a rebuild after a pin change is
# warm for whatever did not change. Messages go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

say() { echo "k8s-build: $*" >&2; }
die() { say "error: $*"; exit 1; }

GO="${GO:-}"
if [ -z "$GO" ]; then
  if [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
  elif command -v go >/dev/null; then GO="$(command -v go)"
  else die "no Go toolchain (set GO=/path/to/go; Go >= 1.25 is needed)"; fi
fi

cache_root="${CALICO_K8S_CACHE:-/var/cache/calico-rs/k8s}"
mkdir -p "$cache_root" || die "cannot create the cache root $cache_root (set CALICO_K8S_CACHE)"
cache_root="$(cd "$cache_root" && pwd)"

# Everything Go downloads or compiles stays under the cache root, so a rerun
# (or another checkout on the same machine) is warm. -modcacherw keeps the
# module cache deletable with a plain rm -rf.
export GOPATH="$cache_root/go"
export GOMODCACHE="$cache_root/go/pkg/mod"
export GOCACHE="$cache_root/go-build"
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false"
export CGO_ENABLED=0

# Kubernetes' own release build tags (hack/lib/golang.sh).
tags="selinux,notest,grpcnotrace"
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
etcd_pkgs=(go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3)
# Bump when the way the binaries are built changes, to force a rebuild.
recipe="3 tags=$tags trimpath ldflags=-s,-w,version"

# upstream_gomod VERSION: path of k8s.io/kubernetes@VERSION's go.mod, fetched
# through the module proxy.
upstream_gomod() {
  local json file
  json="$(cd /tmp && GOFLAGS=-modcacherw "$GO" mod download -json "k8s.io/kubernetes@$1")" ||
    die "the module proxy does not serve k8s.io/kubernetes@$1"
  file="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  [ -f "$file" ] || die "no go.mod for k8s.io/kubernetes@$1 in: $json"
  echo "$file"
}

# pin VERSION: regenerate k8s/go.mod, k8s/go.sum, k8s/etcd/go.mod and
# k8s/etcd/go.sum from k8s.io/kubernetes@VERSION's go.mod.
pin() {
  local version="${1:-}"
  [[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] ||
    die "usage: $0 pin v1.MINOR.PATCH (the proxy's version list is incomplete: name the release)"
  local staging="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
  local upstream
  upstream="$(upstream_gomod "$version")"
  say "generating k8s/go.mod from $upstream"

  # The staging modules: every `k8s.io/X => ./staging/src/k8s.io/X` line,
  # inside a replace block or on a `replace` line of its own.
  local mods
  mods="$(awk '
    /=>[[:space:]]*\.\/staging\// {
      sub(/^[[:space:]]*replace[[:space:]]+/, "")
      sub(/^[[:space:]]+/, "")
      split($0, f, /[[:space:]]+/)
      print f[1]
    }' "$upstream" | sort -u)"
  [ -n "$mods" ] || die "no ./staging replace lines in $upstream"
  # The go version and the GODEBUG defaults Kubernetes builds its binaries
  # with (the main module's godebug lines decide them, so copy them).
  local goline godebug etcd_version
  goline="$(grep -E '^go [0-9.]+$' "$upstream")" || die "no go line in $upstream"
  godebug="$(grep -E '^godebug ' "$upstream" || true)"
  etcd_version="$(awk '$1 == "go.etcd.io/etcd/client/v3" { print $2; exit }' "$upstream")"
  [ -n "$etcd_version" ] || die "no go.etcd.io/etcd/client/v3 require in $upstream"

  mkdir -p k8s/etcd
  {
    echo "// Generated by scripts/k8s-build.sh pin $version from k8s.io/kubernetes@$version's go.mod."
    echo "// Do not edit; rerun the pin command instead."
    echo
    echo "module calico-rs/k8s"
    echo
    echo "$goline"
    [ -z "$godebug" ] || { echo; echo "$godebug"; }
    echo
    echo "tool ("
    local c
    for c in "${k8s_cmds[@]}"; do echo "	k8s.io/kubernetes/cmd/$c"; done
    echo ")"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "// Kubernetes replaces these with ./staging; use their published releases."
    echo "replace ("
    local m
    for m in $mods; do echo "	$m => $m $staging"; done
    echo ")"
  } >k8s/go.mod
  rm -f k8s/go.sum
  say "go mod tidy in k8s/ ($(wc -w <<<"$mods") staging modules at $staging)"
  (cd k8s && GOFLAGS="-modcacherw" "$GO" mod tidy)

  {
    echo "// Generated by scripts/k8s-build.sh pin $version: the etcd that"
    echo "// k8s.io/kubernetes@$version's go.mod uses for its client."
    echo "// Do not edit; rerun the pin command instead."
    echo
    echo "module calico-rs/k8s/etcd"
    echo
    echo "$goline"
    echo
    echo "tool ("
    local p
    for p in "${etcd_pkgs[@]}"; do echo "	$p"; done
    echo ")"
    echo
    echo "require ("
    for p in "${etcd_pkgs[@]}"; do echo "	$p $etcd_version"; done
    echo ")"
  } >k8s/etcd/go.mod
  rm -f k8s/etcd/go.sum
  say "go mod tidy in k8s/etcd/ (etcd $etcd_version)"
  (cd k8s/etcd && GOFLAGS="-modcacherw" "$GO" mod tidy)
  say "pinned Kubernetes $version and etcd $etcd_version; commit k8s/"
}

case "${1:-build}" in
  pin) shift; pin "$@"; exit 0 ;;
  build) ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown command '$1' (try --help)" ;;
esac

[ -f k8s/go.mod ] && [ -f k8s/go.sum ] || die "k8s/go.mod or k8s/go.sum is missing (run: $0 pin v1.34.N)"
[ -f k8s/etcd/go.mod ] && [ -f k8s/etcd/go.sum ] || die "k8s/etcd/go.mod or go.sum is missing (run: $0 pin v1.34.N)"
# The pin: k8s.io/kubernetes's require line (tidy files it among the
# indirect requires, as the module is only used through its tools).
version="$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "k8s.io/kubernetes" { print $2; exit }' k8s/go.mod)"
[[ "$version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "no k8s.io/kubernetes v1.X.Y require in k8s/go.mod"
major=1 minor="${BASH_REMATCH[1]}"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2; exit }' k8s/etcd/go.mod)"
[ -n "$etcd_version" ] || die "no go.etcd.io/etcd/server/v3 require in k8s/etcd/go.mod"
# A hand-edited pin would leave the staging modules at another release.
stale="$(awk -v want="v0.$minor.${BASH_REMATCH[2]}" \
  '$2 == "=>" && $1 ~ /^k8s\.io\// && $4 != want { print $1 " " $4 }' k8s/go.mod)"
[ -z "$stale" ] || die "k8s/go.mod replaces staging modules at another release than $version:
$stale
rerun: $0 pin $version"

go_version="$("$GO" env GOVERSION)"
hash="$( { cat k8s/go.mod k8s/go.sum k8s/etcd/go.mod k8s/etcd/go.sum; echo "$recipe $go_version"; } |
  sha256sum | cut -c1-16)"
bin="$cache_root/$version/bin"
all_bins=("${k8s_cmds[@]}" etcd etcdctl)

fresh() {
  [ "$(cat "$bin/.stamp" 2>/dev/null)" = "$hash" ] || return 1
  local b
  for b in "${all_bins[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

# One build at a time per cache root; a second caller waits, then reuses.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  say "another k8s-build holds $cache_root/.lock; waiting"
  flock 9
fi

if fresh; then
  say "Kubernetes $version and etcd $etcd_version are up to date (stamp $hash)"
  echo "$bin"
  exit 0
fi

say "building Kubernetes $version (${k8s_cmds[*]}) and etcd $etcd_version with $go_version"
say "cache: $cache_root (stamp $hash)"
start=$SECONDS
tmp="$cache_root/$version/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

# What `kubectl version` and /version report: set the way Kubernetes' release
# build does (hack/lib/version.sh), for both version packages. The commit is
# not known from a module zip; the build date is the release's proxy time,
# so the binaries are reproducible.
info="$(cd k8s && "$GO" mod download -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')" || true
release_time="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null || true)"
[ -n "$release_time" ] || { say "warning: no release time for $version; build date 1970-01-01"; release_time="1970-01-01T00:00:00Z"; }
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version"
  ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=$release_time"
done

pkgs=()
for c in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
say "go build ${k8s_cmds[*]}"
(cd k8s && "$GO" build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") ||
  die "building Kubernetes $version failed (see the go output above)"
k8s_done=$SECONDS
say "Kubernetes built in $((k8s_done - start))s"

# etcd's version is compiled in from its module (go.etcd.io/etcd/api/v3/version).
(cd k8s/etcd && "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 &&
  "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/etcdctl" go.etcd.io/etcd/etcdctl/v3) ||
  die "building etcd $etcd_version failed (see the go output above)"
say "etcd built in $((SECONDS - k8s_done))s"

for b in "${all_bins[@]}"; do [ -x "$tmp/$b" ] || die "the build left no $b"; done
echo "$hash" >"$tmp/.stamp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
say "built in $((SECONDS - start))s total:"
(cd "$bin" && ls -l "${all_bins[@]}" | awk '{ printf "k8s-build:   %-24s %4d MB\n", $9, $5 / 1048576 }') >&2
echo "$bin"
