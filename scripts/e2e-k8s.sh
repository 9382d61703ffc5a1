#!/usr/bin/env bash
# calico-rs end to end on real kubelets (issue 16). The shipped manifests,
# deploy/crds.yaml and deploy/calico-node.yaml, applied with kubectl to a real
# Kubernetes control plane whose node runs its own containerd and kubelet, with
# the calico-rs image built from our release binaries (scripts/oci-image.sh)
# and imported into that containerd. Only the image name is substituted.
#
#   scripts/e2e-k8s.sh up      build, start the control plane and the node(s),
#                              apply the manifests, wait for calico-node Ready
#   scripts/e2e-k8s.sh test    the checks (stage 1); each prints
#                              "e2e: ok: <what> (<seconds>s)", any failure exits 1
#   scripts/e2e-k8s.sh down    stop and remove everything (also after a failed
#                              up, or kill -9 of kubelet/containerd); then check
#   scripts/e2e-k8s.sh run     up + test + down; down always runs
#   scripts/e2e-k8s.sh check   list anything of the e2e still left behind
#   scripts/e2e-k8s.sh kubectl ARGS...   kubectl against the e2e API server
#   scripts/e2e-k8s.sh node N CMD...     CMD in node N's network + mount namespaces
#
# Stage 1 of issue 16 (one node). The node loop is there for stage 2
# (CALICO_E2E_NODES, not supported above 1 yet).
#
# Environment:
#   CALICO_K8S_BIN     Kubernetes binaries (default: scripts/k8s-build.sh's)
#   CALICO_E2E_BIN     the binaries for the image (default target/release,
#                      built with `cargo build --release --locked --bins` first
#                      unless CALICO_E2E_NO_BUILD=1; tests/tests/e2e_k8s.rs
#                      passes its own profile's, target/debug)
#   CALICO_E2E_LOGS    daemon logs and the README output, kept after down
#                      (default target/e2e-k8s)
#
# Needs root, and Debian's containerd, runc, containernetworking-plugins,
# busybox-static, nftables, iproute2, openssl, jq (installed by
# `CALICO_E2E_DEPS=1 scripts/install-deps.sh`, which `up` runs).
#
# Layout. Nothing is added to the host's network namespace; nothing is
# mounted in the host's mount namespace but each node's mount-namespace file
# and its private parent bind:
#   netns calico-e2e-cp      etcd, kube-apiserver ($API_IP:6443 on its lo),
#                            kube-controller-manager, kube-scheduler; the
#                            router of the node links
#   netns calico-e2e-nodeN   containerd + kubelet at 10.251.N.2/24, gateway
#                            10.251.N.1 (calico-e2e-cp), in the node's own
#                            mount namespace; calico-node runs here
#                            (hostNetwork), pods get their own netns
#   cgroups                  /calico-e2e-nodeN/... in every v1 hierarchy
#   $BASE (/var/lib/calico-e2e), $RUN (/run/calico-e2e): all state
# Kubelet rewrites host-global sysctls when it starts (KUBELET_SYSCTLS): they
# are saved before and restored as soon as it has written them, and in down.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$0")/.."
REPO=$PWD

PREFIX=calico-e2e
BASE=/var/lib/$PREFIX
RUN=/run/$PREFIX
LOGS="${CALICO_E2E_LOGS:-$REPO/target/e2e-k8s}"
NODES="${CALICO_E2E_NODES:-1}"
CP_NS=$PREFIX-cp
API_IP=10.251.0.1
API_PORT=6443
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
CALICO_IMAGE=localhost/calico-rs:e2e
PAUSE_IMAGE=localhost/calico-rs/pause:e2e
TEST_IMAGE=localhost/calico-rs/busybox:e2e
# The default pool of deploy/calico-node.yaml (CALICO_IPV4POOL_CIDR).
POOL_CIDR=192.168.0.0/16
PKI=$BASE/pki
KUBECONFIG_ADMIN=$PKI/admin.kubeconfig
SYSCTL_SAVE=$BASE/sysctl.saved
TIMINGS=$RUN/timings
# Host-global sysctls kubelet sets at start-up (setupKernelTunables with
# protectKernelDefaults=false), and the values it sets. Not per network
# namespace: they change the whole machine.
KUBELET_SYSCTLS="vm.overcommit_memory=1 vm.panic_on_oom=0 kernel.panic=10 kernel.panic_on_oops=1 kernel.keys.root_maxkeys=1000000 kernel.keys.root_maxbytes=25000000"

say() { echo "e2e: $*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
timing() { echo "$1=$2" >>"$TIMINGS"; }

K8S_BIN="${CALICO_K8S_BIN:-}"
k8s_bin() {
  if [ -z "$K8S_BIN" ]; then K8S_BIN=$("$REPO/scripts/k8s-build.sh" | tail -1); fi
}
kubectl() { k8s_bin; nsenter --net=/run/netns/$CP_NS -- "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
apiserver_ready() { kubectl get --raw /readyz 2>/dev/null | grep -q '^ok'; }

# ---------------------------------------------------------------- nodes
# node_vars I sets the names and paths of node I.
node_vars() {
  I=$1
  NODE=$PREFIX-node$I             # node name == netns name == cgroup root
  NODE_NS=$NODE
  NODE_IP=10.251.$I.2
  NODE_GW=10.251.$I.1
  N=$BASE/node$I
  NRUN=$RUN/node$I
  CTRD_SOCK=$NRUN/containerd.sock
  NODE_MNT=$RUN/mnt/node$I
  # Paths a real node has that cannot be configured per node, bound from the
  # node's own files in the node's mount namespace (see make_node_mountns):
  #   /opt/cni/bin, /etc/cni/net.d  install-cni's hostPaths, containerd's CNI dirs
  #   /var/lib/calico, /run/calico  calico-node's hostPaths, the conflist's felix_socket
  #   /run/xtables.lock             calico-node's hostPath (a file)
  #   /run/containerd               containerd 1.6's shim sockets, runc's state
  #   /var/log/containers           kubelet's log links
  #   /run/netns                    containerd 1.6's pod netns files
  NODE_BINDS="d:/opt/cni/bin:$N/cni/bin d:/etc/cni/net.d:$N/cni/net.d d:/var/lib/calico:$N/calico-lib
    d:/run/calico:$NRUN/calico f:/run/xtables.lock:$NRUN/xtables.lock d:/run/containerd:$NRUN/containerd-hardwired
    d:/var/log/containers:$N/log-containers d:/run/netns:$NRUN/netns"
}
node_list() { seq 1 "$NODES"; }
in_node() { nsenter --net=/run/netns/$NODE_NS --mount="$NODE_MNT" -- "$@"; }
ctr_() { ctr --address "$CTRD_SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------- processes
# Daemons run under nsenter (not `ip netns exec`, which remounts /sys and
# hides the cgroup hierarchies, and gives every command its own mount
# namespace). A node's containerd, kubelet and everything they start share
# the node's mount namespace.
start() { # name netns mountns-or-"" command...
  local name=$1 ns=$2 mnt=(); shift 2
  if [ -n "$1" ]; then mnt=(--mount="$1"); fi
  shift
  setsid nsenter --net=/run/netns/"$ns" "${mnt[@]}" -- "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
pid_of() { # name program-substring -> pid if running and still that program
  local f="$RUN/$1.pid" p
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  [ -d /proc/"$p" ] && tr '\0' ' ' </proc/"$p"/cmdline | grep -q -- "$2" && echo "$p"
}
stop() { # name program-substring [seconds]
  local p i
  p=$(pid_of "$1" "$2") || { rm -f "$RUN/$1.pid"; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq $((${3:-15} * 5))); do [ -d /proc/"$p" ] || break; sleep 0.2; done
  if [ -d /proc/"$p" ]; then say "$1 ($p) ignored SIGTERM; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$RUN/$1.pid"
}
wait_for() { # seconds description command...
  local limit=$1 what=$2 t0; shift 2; t0=$(now)
  until "$@" >/dev/null 2>&1; do
    awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }' && { say "$what: not within ${limit}s"; return 1; }
    sleep 0.5
  done
}

# ---------------------------------------------------------------- sysctls
save_sysctls() {
  [ -f "$SYSCTL_SAVE" ] && return 0     # a failed run's save is the original
  local kv
  for kv in $KUBELET_SYSCTLS; do echo "${kv%%=*}=$(sysctl -n "${kv%%=*}")"; done >"$SYSCTL_SAVE.tmp"
  mv "$SYSCTL_SAVE.tmp" "$SYSCTL_SAVE"
}
restore_sysctls() {
  [ -f "$SYSCTL_SAVE" ] || return 0
  local kv
  while read -r kv; do
    [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] ||
      { say "restoring $kv (kubelet set $(sysctl -n "${kv%%=*}"))"; sysctl -qw "$kv"; }
  done <"$SYSCTL_SAVE"
}
sysctls_as_saved() {
  local kv
  while read -r kv; do [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || return 1; done <"$SYSCTL_SAVE"
}
# True once every sysctl kubelet would change has its kubelet value.
kubelet_wrote_sysctls() {
  local kv
  for kv in $KUBELET_SYSCTLS; do [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || return 1; done
}

# ---------------------------------------------------------------- pki
cert() { # name subject san-or-empty eku
  local ext="extendedKeyUsage=$4
keyUsage=critical,digitalSignature,keyEncipherment"
  [ -n "$3" ] && ext="$ext
subjectAltName=$3"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/$1.key" \
    -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 7 -extfile <(echo "$ext") -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr"; chmod 600 "$PKI/$1.key"
}
kubeconfig() { # user token=T | cert=NAME
  local auth
  case $2 in
    token=*) auth="    token: ${2#token=}" ;;
    cert=*) auth="    client-certificate: $PKI/${2#cert=}.crt
    client-key: $PKI/${2#cert=}.key" ;;
  esac
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $PREFIX
  cluster:
    server: https://$API_IP:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
$auth
contexts:
- name: $1
  context: {cluster: $PREFIX, user: $1}
current-context: $1
EOF
}
make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=calico-rs e2e CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  # The API server is reached by its address (the kubernetes-services-endpoint
  # ConfigMap) and, where kube-proxy runs, by the kubernetes Service's ClusterIP.
  cert apiserver "/CN=kube-apiserver" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$API_IP,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP" serverAuth
  # What kube-apiserver presents to kubelet's :10250 (exec, logs).
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local token i; token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  echo "$token,admin,admin,\"system:masters\"" >"$PKI/tokens.csv"
  kubeconfig admin "token=$token" >"$KUBECONFIG_ADMIN"
  # Each kubelet under its own node identity (Node authorizer, NodeRestriction).
  for i in $(node_list); do
    node_vars "$i"
    cert "kubelet-$NODE" "/O=system:nodes/CN=system:node:$NODE" "" clientAuth
    kubeconfig "system:node:$NODE" "cert=kubelet-$NODE" >"$PKI/kubelet-$NODE.kubeconfig"
  done
  chmod 600 "$PKI"/*.key "$PKI"/*.kubeconfig "$PKI/tokens.csv"
}

# ---------------------------------------------------------------- network
make_cp_netns() {
  ip netns add $CP_NS
  ip -n $CP_NS link set lo up
  # The API server's address: on the control plane's loopback, routed to by
  # every node's link, so all nodes reach it at one address.
  ip -n $CP_NS addr add $API_IP/32 dev lo
  # The control-plane namespace routes between the node links.
  ip netns exec $CP_NS sysctl -qw net.ipv4.ip_forward=1
}
make_node_netns() { # node_vars set
  ip netns add $NODE_NS
  # Created directly between the two namespaces: nothing in the host's.
  ip -n $CP_NS link add "n$I" type veth peer name eth0 netns $NODE_NS
  ip -n $CP_NS addr add $NODE_GW/24 dev "n$I"
  ip -n $NODE_NS addr add $NODE_IP/24 dev eth0
  ip -n $CP_NS link set "n$I" up
  ip -n $NODE_NS link set lo up
  ip -n $NODE_NS link set eth0 up
  ip -n $NODE_NS route add default via $NODE_GW
}

# A persistent mount namespace per node: a bind mount of its nsfs file, on a
# private parent bind. Made from the host's, with NODE_BINDS bound in it; the
# mount points that do not exist on the host are created (empty) and
# recorded in $RUN/created-paths, which down removes.
make_node_mountns() {
  mkdir -p "$RUN/mnt"
  if ! grep -q " $RUN/mnt " /proc/mounts; then
    mount --bind "$RUN/mnt" "$RUN/mnt"; mount --make-private "$RUN/mnt"
  fi
  touch "$NODE_MNT"
  unshare --mount="$NODE_MNT" --propagation private true
  local b kind target src
  for b in $NODE_BINDS; do
    kind=${b%%:*}; b=${b#*:}; target=${b%%:*}; src=${b#*:}
    if [ "$kind" = f ]; then
      mkdir -p "$(dirname "$src")"; touch "$src"
      [ -e "$target" ] || { touch "$target"; echo "$target" >>"$RUN/created-paths"; }
    else
      mkdir -p "$src"
      [ -e "$target" ] || { mkdir -p "$target"; echo "$target" >>"$RUN/created-paths"; }
    fi
    nsenter --mount="$NODE_MNT" -- mount --bind "$src" "$target"
  done
  # Shared, as on a systemd host: a node's new mounts (containerd's pod netns
  # files) propagate into containers that mount them HostToContainer (which
  # containerd refuses on a private mount). New peer groups: nothing
  # propagates to or from the host's mount namespace, which stays as it was.
  nsenter --mount="$NODE_MNT" -- mount --make-rshared /
}

# ---------------------------------------------------------------- cgroups
cgroup_hierarchies() { local d; for d in /sys/fs/cgroup/*/; do d=${d%/}; [ -e "$d/cgroup.procs" ] && echo "$d"; done; return 0; }
# Kubelet's cgroupRoot must exist; made in every v1 hierarchy, cpuset's cpus
# and mems copied from the parent (a new v1 cpuset starts empty).
make_cgroup_root() {
  local d
  for d in $(cgroup_hierarchies); do
    [ "${d##*/}" = unified ] && continue
    mkdir -p "$d/$NODE"
    if [ -e "$d/cpuset.cpus" ]; then
      cat "$d/cpuset.cpus" >"$d/$NODE/cpuset.cpus"
      cat "$d/cpuset.mems" >"$d/$NODE/cpuset.mems"
    fi
  done
}

# ---------------------------------------------------------------- configs
write_containerd_config() {
  mkdir -p "$N/containerd" "$NRUN"
  cat >"$N/containerd.toml" <<EOF
version = 2
# Own root, state and socket per node.
root = "$N/containerd"
state = "$NRUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$N/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Imported, never pulled (no registry).
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  # Processes here lack CAP_SYS_RESOURCE: nothing can lower oom_score_adj,
  # and runc fails every sandbox kubelet asks -998 for ("can't get final
  # child's PID from pipe"). Clamped to containerd's own value instead.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    # The defaults, per node through the node mount namespace's binds; empty
    # until calico-node's install-cni writes the calico plugin and conflist.
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
EOF
  # What an operator installs on a node before Calico: the standard plugins
  # Calico's conflist chains (portmap) and containerd's CRI runs for the
  # pod's lo (loopback). Debian keeps them in /usr/lib/cni.
  mkdir -p "$N/cni/bin" "$N/cni/net.d"
  cp /usr/lib/cni/portmap /usr/lib/cni/loopback "$N/cni/bin/"
}

write_kubelet_config() {
  mkdir -p "$N/kubelet" "$N/pod-logs"
  cat >"$N/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CTRD_SOCK
# cgroup v1 (hybrid) without systemd: cgroupfs, as containerd's SystemdCgroup=false.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /$NODE
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
# -999 cannot be set without CAP_SYS_RESOURCE.
oomScoreAdj: 0
failSwapOn: false
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $N/pod-logs
staticPodPath: ""
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# Nothing can be pulled again: no image GC.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared disk: another build filling it must not evict the test's pods.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
serializeImagePulls: true
EOF
}

# ---------------------------------------------------------------- up
preflight() {
  [ "$(id -u)" = 0 ] || die "run as root (network namespaces, mounts, cgroups, containerd)"
  [ "$NODES" = 1 ] || die "CALICO_E2E_NODES=$NODES: only stage 1 (one node) is implemented"
  CALICO_E2E_DEPS=1 "$REPO/scripts/install-deps.sh"
  k8s_bin
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [ -x "$K8S_BIN/$b" ] || die "no $K8S_BIN/$b (scripts/k8s-build.sh)"
  done
  for b in containerd containerd-shim-runc-v2 runc ctr openssl nsenter unshare jq; do
    command -v $b >/dev/null || die "no $b (CALICO_E2E_DEPS=1 scripts/install-deps.sh)"
  done
  for b in /usr/lib/cni/portmap /usr/lib/cni/loopback /bin/busybox; do
    [ -x $b ] || die "no $b (CALICO_E2E_DEPS=1 scripts/install-deps.sh)"
  done
  [ "$(stat -fc %T /sys/fs/cgroup)" = tmpfs ] || say "warning: /sys/fs/cgroup is not cgroup v1/hybrid; this script was written for v1"
  if [ -e "$RUN" ] || [ -e "$BASE" ] || ip netns list | grep -q "^$PREFIX-"; then
    die "a previous e2e run is still there ($BASE, $RUN or netns $PREFIX-*): run '$0 down' first"
  fi
}

up() {
  preflight
  local T0 t i; T0=$(now)
  mkdir -p "$BASE" "$RUN" "$LOGS"
  rm -f "$LOGS"/*.log
  save_sysctls
  # Whatever fails from here, kubelet's sysctls go back.
  trap 'restore_sysctls; say "up failed: logs in $LOGS; run $0 down"' EXIT

  # ---- image
  local bin="${CALICO_E2E_BIN:-$REPO/target/release}"
  if [ "${CALICO_E2E_NO_BUILD:-0}" != 1 ] && [ -z "${CALICO_E2E_BIN:-}" ]; then
    t=$(now)
    cargo build --release --locked --bins >&2
    say "release binaries: $(since "$t")s"
  fi
  t=$(now)
  "$REPO/scripts/oci-image.sh" --bin "$bin" --calico $CALICO_IMAGE --pause $PAUSE_IMAGE \
    --busybox $TEST_IMAGE "$BASE/images.oci.tar" >/dev/null
  say "images built: $(since "$t")s, $(stat -c %s "$BASE/images.oci.tar") bytes"; timing image_build "$(since "$t")"

  t=$(now); make_pki; say "pki: $(since "$t")s"
  make_cp_netns
  for i in $(node_list); do node_vars "$i"; make_node_netns; done

  # ---- control plane
  t=$(now)
  start etcd $CP_NS "" "$K8S_BIN/etcd" --name $PREFIX --data-dir "$BASE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster $PREFIX=http://127.0.0.1:2380 --log-level warn --unsafe-no-fsync
  # --kubelet-client-*: exec and logs (kubelet's anonymous auth is off).
  # --kubelet-preferred-address-types: the node name does not resolve.
  start kube-apiserver $CP_NS "" "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=$API_IP --advertise-address=$API_IP --secure-port=$API_PORT \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=$SERVICE_CIDR --allow-privileged=true --profiling=false \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname
  wait_for 120 "kube-apiserver /readyz" apiserver_ready || die "the API server did not start (see $LOGS/kube-apiserver.log)"
  # The controller manager makes the default ServiceAccounts, the
  # kube-root-ca.crt ConfigMaps and the DaemonSet's pods; the scheduler binds them.
  start kube-controller-manager $CP_NS "" "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_ADMIN" --authentication-kubeconfig="$KUBECONFIG_ADMIN" \
    --authorization-kubeconfig="$KUBECONFIG_ADMIN" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 --profiling=false
  start kube-scheduler $CP_NS "" "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_ADMIN" \
    --authentication-kubeconfig="$KUBECONFIG_ADMIN" --authorization-kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0
  say "control plane ready: $(since "$t")s"; timing control_plane "$(since "$t")"

  # ---- nodes
  for i in $(node_list); do node_up "$i"; done

  # ---- Calico, as a user installs it. No kube-proxy runs, so the kubernetes
  # Service's ClusterIP leads nowhere: the API server's real address comes
  # from this ConfigMap, which the DaemonSet's containers read with envFrom.
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: kubernetes-services-endpoint, namespace: kube-system}
data:
  KUBERNETES_SERVICE_HOST: "$API_IP"
  KUBERNETES_SERVICE_PORT: "$API_PORT"
EOF
  sed "s#image: calico-rs:latest#image: $CALICO_IMAGE#" "$REPO/deploy/calico-node.yaml" >"$BASE/calico-node.yaml"
  grep -q "image: $CALICO_IMAGE" "$BASE/calico-node.yaml" || die "deploy/calico-node.yaml has no 'image: calico-rs:latest' to substitute"
  t=$(now)
  kubectl apply -f "$REPO/deploy/crds.yaml" -f "$BASE/calico-node.yaml" >&2
  wait_for 300 "calico-node pods Ready" calico_node_ready ||
    { kubectl get pods -A -o wide >&2; kubectl -n kube-system describe pods -l k8s-app=calico-node >&2 || true; die "calico-node did not become Ready"; }
  say "calico-node Ready: $(since "$t")s after kubectl apply"; timing calico_node_ready "$(since "$t")"
  for i in $(node_list); do
    node_vars "$i"
    wait_for 60 "node $NODE Ready" kubectl wait node/$NODE --for=condition=Ready --timeout=2s || die "node $NODE not Ready"
  done
  restore_sysctls
  trap - EXIT
  say "up in $(since "$T0")s"; timing up "$(since "$T0")"
  kubectl get pods -A -o wide >&2
}

calico_node_ready() {
  local want got
  want=$NODES
  got=$(kubectl -n kube-system get pods -l k8s-app=calico-node \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')
  [ "$got" -ge "$want" ]
}

node_up() {
  local t
  node_vars "$1"
  make_node_mountns
  make_cgroup_root
  write_containerd_config
  t=$(now)
  start containerd-$NODE $NODE_NS "$NODE_MNT" containerd --config "$N/containerd.toml"
  wait_for 60 "containerd of $NODE" ctr --address "$CTRD_SOCK" version || die "containerd did not start (see $LOGS/containerd-$NODE.log)"
  say "$NODE: containerd up: $(since "$t")s"
  t=$(now); ctr_ images import "$BASE/images.oci.tar" >/dev/null
  say "$NODE: images imported: $(since "$t")s ($(ctr_ images ls -q | tr '\n' ' '))"
  write_kubelet_config
  t=$(now)
  # --hostname-override: all nodes share the machine's hostname.
  # --node-ip: the node link's address, not whatever the default route picks.
  start kubelet-$NODE $NODE_NS "$NODE_MNT" "$K8S_BIN/kubelet" \
    --config="$N/kubelet.yaml" --kubeconfig="$PKI/kubelet-$NODE.kubeconfig" \
    --root-dir="$N/kubelet" --cert-dir="$N/kubelet/pki" \
    --hostname-override=$NODE --node-ip=$NODE_IP --v=1
  wait_for 120 "node $NODE registered" kubectl get node $NODE || die "kubelet did not register $NODE (see $LOGS/kubelet-$NODE.log)"
  say "$NODE: kubelet registered the node: $(since "$t")s after start"
  # Kubelet writes its sysctls once, when its container manager starts: wait
  # for that (if it has anything to change), then put the machine's back.
  if ! kubelet_wrote_sysctls; then
    wait_for 60 "kubelet's sysctls" kubelet_wrote_sysctls || say "warning: kubelet did not set its sysctls within 60 s"
  fi
  restore_sysctls
}

# ---------------------------------------------------------------- test
T_FAILED=0
ok() { echo "e2e: ok: $1 ($(since "$2")s)"; }
fail() { echo "e2e: FAIL: $*"; T_FAILED=1; }
calico_pod() { # node -> calico-node pod name on it
  kubectl -n kube-system get pods -l k8s-app=calico-node --field-selector spec.nodeName="$1" \
    -o jsonpath='{.items[0].metadata.name}'
}
restarts_of() { kubectl -n kube-system get pod "$1" -o jsonpath='{.status.containerStatuses[?(@.name=="calico-node")].restartCount}'; }
ip_in_pool() { # ip -> true if in POOL_CIDR (a /16)
  local p=${POOL_CIDR%/*}; [ "${1%.*.*}" = "${p%.*.*}" ]
}
# Allocations of IP in the cluster's IPAM blocks: "<block> <ordinal> <handle>"
# for every block whose allocations[] has IP's ordinal set.
allocated() {
  kubectl get ipamblocks -o json | jq -r --arg ip "$1" '
    def n: split(".") | map(tonumber) | .[0]*16777216 + .[1]*65536 + .[2]*256 + .[3];
    .items[] | .spec as $s | ($s.cidr | split("/")) as $c | (($ip | n) - ($c[0] | n)) as $o
    | select($o >= 0 and $o < ($s.allocations | length)) | select($s.allocations[$o] != null)
    | "\($s.cidr) \($o) \($s.attributes[$s.allocations[$o]].handle_id // "?")"'
}

test_stage1() {
  local i t pod ip cid handle out r0 body
  k8s_bin
  [ -f "$KUBECONFIG_ADMIN" ] || die "nothing is up: run '$0 up' first"
  for i in $(node_list); do
    node_vars "$i"
    pod=$(calico_pod $NODE) || true
    [ -n "$pod" ] || { fail "no calico-node pod on $NODE"; continue; }

    # 1. install-cni wrote the plugin and the conflist through its hostPaths
    #    into the node's CNI directories (not the host's).
    t=$(now)
    local img_sum host_sum
    img_sum=$(kubectl -n kube-system exec "$pod" -c calico-node -- sha256sum /usr/local/bin/calico 2>/dev/null | cut -d' ' -f1) || true
    host_sum=$(sha256sum "$N/cni/bin/calico" 2>/dev/null | cut -d' ' -f1) || true
    if [ -x "$N/cni/bin/calico" ] && [ -n "$img_sum" ] && [ "$img_sum" = "$host_sum" ] &&
      CNI_COMMAND=VERSION "$N/cni/bin/calico" </dev/null | jq -e '.supportedVersions | index("1.0.0")' >/dev/null &&
      jq -e '.plugins[0].type == "calico" and (.plugins[0].mtu | type) == "number" and .plugins[1].type == "portmap"' \
        "$N/cni/net.d/10-calico.conflist" >/dev/null &&
      in_node test -x /opt/cni/bin/calico && in_node test -f /etc/cni/net.d/10-calico.conflist &&
      [ ! -e /opt/cni/bin/calico ] && [ ! -e /etc/cni/net.d/10-calico.conflist ] &&
      kubectl -n kube-system logs "$pod" -c install-cni | grep -q "^installed /opt/cni/bin/calico"; then
      ok "$NODE: install-cni installed /opt/cni/bin/calico (the image's, sha256 ${img_sum:0:12}; CNI VERSION answers) and /etc/cni/net.d/10-calico.conflist (mtu substituted) in the node's CNI directories, not the host's" "$t"
    else
      fail "$NODE: install-cni: image sha256 '$img_sum', node's '$host_sum': $(ls -l "$N/cni/bin" "$N/cni/net.d" 2>&1 | tr '\n' ' ')"
    fi

    # 2. calico-node is Ready through its readiness probe: the pod's Ready
    #    condition, and the endpoint kubelet probes answering 200 on the
    #    node's loopback.
    t=$(now)
    body=$(in_node busybox wget -qO- http://127.0.0.1:9099/readiness 2>&1) || true
    if kubectl -n kube-system wait pod/"$pod" --for=condition=Ready --timeout=60s >/dev/null &&
      [ "$body" = ok ] && kubectl wait node/$NODE --for=condition=Ready --timeout=10s >/dev/null; then
      ok "$NODE: calico-node pod $pod Ready (readiness probe 127.0.0.1:9099/readiness says '$body'; $(grep '^calico_node_ready=' "$TIMINGS" 2>/dev/null | cut -d= -f2 || echo ?)s after apply), node Ready" "$t"
    else
      fail "$NODE: calico-node not Ready: /readiness says '$body'"
    fi

    # 3. calico-node reached the API server through the
    #    kubernetes-services-endpoint ConfigMap: its environment has the
    #    ConfigMap's address, the Service ClusterIP is unreachable from the
    #    node (no kube-proxy), and calico-node wrote the node's BGP address
    #    and the default pool through the API.
    t=$(now)
    out=$(kubectl -n kube-system exec "$pod" -c calico-node -- sh -c 'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"' 2>&1) || true
    local annot pool
    annot=$(kubectl get node $NODE -o jsonpath='{.metadata.annotations.projectcalico\.org/IPv4Address}' 2>/dev/null) || true
    pool=$(kubectl get ippools -o jsonpath='{.items[*].spec.cidr}' 2>/dev/null) || true
    if [ "$out" = "$API_IP:$API_PORT" ] && ! in_node busybox nc -w 2 $KUBERNETES_SVC_IP 443 </dev/null >/dev/null 2>&1 &&
      [ "${annot%/*}" = "$NODE_IP" ] && [ "$pool" = "$POOL_CIDR" ]; then
      ok "$NODE: calico-node reached the API server at $out from the kubernetes-services-endpoint ConfigMap (Service IP $KUBERNETES_SVC_IP unreachable: no kube-proxy); it set projectcalico.org/IPv4Address=$annot and created pool $pool" "$t"
    else
      fail "$NODE: API access: env '$out', node address '$annot', pools '$pool'"
    fi

    # 4. A test pod gets an address from the pool: kubelet -> containerd ->
    #    the calico CNI plugin -> felix -> IPAM.
    t=$(now)
    kubectl delete pod e2e-busybox --ignore-not-found --wait=true >/dev/null 2>&1 || true
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: e2e-busybox, namespace: default}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 2
  containers:
  - name: bb
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'ip -4 -o addr show dev eth0; trap "exit 0" TERM; sleep 2147483647 & wait']
EOF
    ip=""; cid=""; handle=""
    if kubectl wait pod/e2e-busybox --for=condition=Ready --timeout=120s >/dev/null; then
      ip=$(kubectl get pod e2e-busybox -o jsonpath='{.status.podIP}')
      cid=$(kubectl get pod e2e-busybox -o jsonpath='{.status.containerStatuses[0].containerID}')
      out=$(allocated "$ip")
      handle=$(echo "$out" | awk 'NR == 1 { print $3 }')
      local route; route=$(ip -n $NODE_NS route show "$ip/32" 2>/dev/null)
      if ip_in_pool "$ip" && [ -n "$out" ] && [ -n "$handle" ] && [ "$handle" != "?" ] &&
        kubectl get ipamhandles "$(echo "$handle" | tr 'A-Z' 'a-z')" >/dev/null 2>&1 &&
        [[ "$route" == *"dev cali"* ]] &&
        ip netns exec $NODE_NS ping -c 1 -W 2 "$ip" >/dev/null &&
        kubectl logs e2e-busybox | grep -q "inet $ip/"; then
        ok "pod e2e-busybox Running on $NODE with $ip from pool $POOL_CIDR (IPAM block $(echo "$out" | awk 'NR == 1 { print $1 " ordinal " $2 }'), handle $handle; route '$route'; the node pings it)" "$t"
      else
        fail "pod e2e-busybox: ip '$ip', allocation '$out', handle '$handle', route '$route'"
      fi
    else
      fail "pod e2e-busybox not Ready: $(kubectl describe pod e2e-busybox | tail -15)"
    fi
    # The README's output, with the test pod running.
    show >"$LOGS/readme-output.txt" 2>&1 || true
    cat "$LOGS/readme-output.txt"

    # 5. kubectl delete pod releases the address: no allocation of it in any
    #    block, its handle gone, its route gone.
    t=$(now)
    if [ -n "$ip" ]; then
      kubectl delete pod e2e-busybox --wait=true --timeout=60s >/dev/null
      if wait_for 30 "release of $ip" released "$ip" "$handle"; then
        ok "kubectl delete pod released $ip: no IPAM block allocates it, handle ${handle:-?} gone, route gone" "$t"
      else
        fail "after kubectl delete pod, $ip is still allocated: '$(allocated "$ip")'; handle: $(kubectl get ipamhandles 2>&1 | tr '\n' ' ')"
      fi
    else
      fail "no pod address to release"
    fi
  done

  # 6. A liveness failure restarts calico-node. calico-node's /liveness fails
  #    when a child has been down for over 60 s (node/src/health.rs): felix
  #    is made unable to start again (its binary moved away in the
  #    container's own root filesystem) and killed; the supervisor's
  #    restarts fail, /liveness turns 503, kubelet's probe fails 6 times and
  #    kubelet restarts the container, with a fresh root filesystem from the
  #    image.
  for i in $(node_list); do
    node_vars "$i"
    pod=$(calico_pod $NODE) || true
    [ -n "$pod" ] || continue
    t=$(now)
    r0=$(restarts_of "$pod")
    kubectl -n kube-system exec "$pod" -c calico-node -- sh -c 'mv /usr/local/bin/felix /usr/local/bin/felix.moved && kill $(pidof felix)' ||
      fail "could not stop felix in $pod"
    local seen=""
    liveness_failing() {
      local b; b=$(in_node busybox wget -qO- http://127.0.0.1:9099/liveness 2>&1) && return 1
      b=$(in_node sh -c 'printf "GET /liveness HTTP/1.0\r\n\r\n" | busybox nc -w 2 127.0.0.1 9099' 2>/dev/null | tail -1)
      seen=$b; [ -n "$b" ]
    }
    restarted() { [ "$(restarts_of "$pod")" -gt "$r0" ]; }
    if wait_for 120 "/liveness failing" liveness_failing && wait_for 150 "liveness restart" restarted &&
      kubectl -n kube-system wait pod/"$pod" --for=condition=Ready --timeout=120s >/dev/null &&
      kubectl get events -n kube-system --field-selector involvedObject.name="$pod" -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' |
        grep -q "failed liveness probe"; then
      ok "$NODE: liveness: felix made unable to restart -> /liveness '$seen' -> kubelet restarted calico-node (restartCount $r0 -> $(restarts_of "$pod")) -> Ready again" "$t"
    else
      fail "$NODE: liveness restart: /liveness '$seen', restarts $r0 -> $(restarts_of "$pod"); events: $(kubectl get events -n kube-system --field-selector involvedObject.name="$pod" -o jsonpath='{range .items[*]}{.message}{"; "}{end}')"
    fi
  done

  # Kubelet's host-global sysctls are the machine's own again.
  t=$(now)
  if sysctls_as_saved; then
    ok "host sysctls as before kubelet started: $(tr '\n' ' ' <"$SYSCTL_SAVE")" "$t"
  else
    fail "host sysctls changed: $(for kv in $(cat "$SYSCTL_SAVE"); do echo -n "${kv%%=*}=$(sysctl -n "${kv%%=*}") (was ${kv#*=}) "; done)"
  fi
  [ $T_FAILED = 0 ] || { say "some checks failed; logs in $LOGS"; return 1; }
  say "all stage 1 checks passed"
}

released() { # ip handle
  [ -z "$(allocated "$1")" ] || return 1
  if [ -n "$2" ]; then
    ! kubectl get ipamhandles "$(echo "$2" | tr 'A-Z' 'a-z')" >/dev/null 2>&1 || return 1
  fi
  [ -z "$(ip -n $NODE_NS route show "$1/32" 2>/dev/null)" ]
}

show() {
  local i pod
  echo "\$ kubectl get pods -A -o wide"
  kubectl get pods -A -o wide
  echo
  echo "\$ kubectl get ippools -o wide"
  kubectl get ippools -o wide
  for i in $(node_list); do
    node_vars "$i"
    pod=$(calico_pod $NODE)
    echo
    echo "\$ kubectl exec -n kube-system $pod -c calico-node -- calico-node status"
    kubectl exec -n kube-system "$pod" -c calico-node -- calico-node status
  done
}

# ---------------------------------------------------------------- down
shims_of() { # pids whose command line names the node's containerd socket
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "-address $CTRD_SOCK " && echo "${p#/proc/}"
  done
  return 0
}
cgroup_pids() {
  local d
  for d in $(cgroup_hierarchies); do
    if [ -d "$d/$NODE" ]; then find "$d/$NODE" -name cgroup.procs -exec cat {} + 2>/dev/null; fi
  done | sort -u
}
in_node_mountns() {
  local ino p
  ino=$(stat -L -c %i "$NODE_MNT" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %i "$p/ns/mnt" 2>/dev/null)" = "$ino" ] && echo "${p#/proc/}"
  done
  return 0
}
node_down() {
  local t p c d; t=$(now)
  node_vars "$1"
  stop kubelet-$NODE kubelet 20
  if ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; then
    for c in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
      ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true
      ctr_ containers delete "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd-$NODE "containerd --config" 20
  # Shims outlive containerd, containers outlive shims.
  for p in $( { in_node_mountns; shims_of; cgroup_pids; } | sort -un); do
    [ -d /proc/"$p" ] || continue
    say "$NODE: killing leftover $p: $(tr '\0' ' ' 2>/dev/null </proc/"$p"/cmdline | cut -c1-100)"
    kill -KILL "$p" 2>/dev/null || true
  done
  sleep 0.5
  # With no process left in it, releasing the node's mount namespace drops
  # every mount made in it (overlays, shm, volume tmpfs, pod netns, binds).
  if [ -e "$NODE_MNT" ]; then umount "$NODE_MNT" 2>/dev/null || true; fi
  for d in $(cgroup_hierarchies); do
    if [ -d "$d/$NODE" ]; then find "$d/$NODE" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    if [ -d "$d/$NODE" ]; then say "warning: cgroup $d/$NODE not removed"; fi
  done
  if ip netns list | grep -qw "^$NODE_NS"; then ip netns del "$NODE_NS"; fi
  say "$NODE down: $(since "$t")s"
}
down() {
  local t i m d; t=$(now)
  [ "$(id -u)" = 0 ] || die "run as root"
  mkdir -p "$RUN"
  # 1. Gracefully, while everything runs: test pods first (their CNI DEL
  #    needs calico-node's felix), then the DaemonSet, then what is left.
  if [ -f "$KUBECONFIG_ADMIN" ] && pid_of kube-apiserver kube-apiserver >/dev/null; then
    kubectl delete pods --all -n default --grace-period=2 --timeout=60s >/dev/null 2>&1 || true
    kubectl delete daemonsets,deployments,replicasets --all --all-namespaces --timeout=30s >/dev/null 2>&1 || true
    kubectl delete pods --all --all-namespaces --grace-period=2 --timeout=60s >/dev/null 2>&1 ||
      say "warning: pods not deleted gracefully"
    say "pods deleted: $(since "$t")s"
  fi
  # 2. The nodes (also those of a failed up: every node directory there is).
  for i in $(node_list); do node_down "$i"; done
  if grep -q " $RUN/mnt " /proc/mounts; then umount "$RUN/mnt" || umount -l "$RUN/mnt"; fi
  { grep -E " ($BASE|$RUN)[/ ]" /proc/mounts || true; } | awk '{ print $2 }' | sort -r | while read -r m; do
    say "unmounting leftover $m"; umount "$m" 2>/dev/null || umount -l "$m" || say "warning: cannot unmount $m"
  done
  # 3. Control plane, its netns.
  # (In parallel: the API server alone takes seconds to drain.)
  stop kube-scheduler kube-scheduler 10 & stop kube-controller-manager kube-controller-manager 10 &
  stop kube-apiserver kube-apiserver 20 & wait
  stop etcd etcd 10
  say "control plane stopped: $(since "$t")s"
  if ip netns list | grep -qw "^$CP_NS"; then ip netns del $CP_NS; fi
  # 4. The empty mount points created on the host (only if still empty).
  if [ -f "$RUN/created-paths" ]; then
    sort -ru "$RUN/created-paths" | while read -r d; do
      if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || say "warning: $d not empty, left"
      elif [ -f "$d" ] && [ ! -s "$d" ]; then rm -f "$d"
      fi
      rmdir "$(dirname "$d")" 2>/dev/null || true   # /etc/cni, /opt/cni
    done
  fi
  restore_sysctls
  rm -rf "$BASE" "$RUN"
  say "down in $(since "$t")s"
  check
}

check() {
  local left=0 x p c
  x=$(for p in $(pgrep -x kubelet; pgrep -x containerd; pgrep -f "containerd-shim|^runc|kube-apiserver|kube-scheduler|kube-controller|etcd"); do
      c=$(tr '\0' ' ' 2>/dev/null </proc/"$p"/cmdline) || continue
      case $c in *$BASE*|*$RUN*) echo "$p $c" ;; esac
    done) || true
  [ -n "$x" ] && { say "processes left:"; echo "$x" >&2; left=1; }
  x=$(grep -F "$PREFIX" /proc/mounts || true)
  [ -n "$x" ] && { say "mounts left:"; echo "$x" >&2; left=1; }
  x=$(ip netns list | grep -E "^$PREFIX" || true)
  [ -n "$x" ] && { say "netns left:"; echo "$x" >&2; left=1; }
  x=$(find /sys/fs/cgroup -maxdepth 2 -type d -name "$PREFIX*" 2>/dev/null || true)
  [ -n "$x" ] && { say "cgroups left:"; echo "$x" >&2; left=1; }
  x=$(ls -d "$BASE" "$RUN" 2>/dev/null || true)
  [ -n "$x" ] && { say "directories left:"; echo "$x" >&2; left=1; }
  if [ $left = 0 ]; then say "check: nothing of the e2e is left (processes, mounts, netns, cgroups, directories)"; fi
  return $left
}

run() {
  local T0 rc=0; T0=$(now)
  # up and test run as their own processes: errexit stays in force in them
  # (it is off inside a function called on the left of ||).
  trap 'down || true' EXIT
  "$SELF" up || rc=$?
  if [ $rc = 0 ]; then "$SELF" test || rc=$?; fi
  trap - EXIT
  local t; t=$(now)
  down || rc=1
  echo "e2e: down took $(since "$t")s"
  if [ $rc = 0 ]; then echo "e2e: run passed in $(since "$T0")s"; else echo "e2e: run FAILED (rc $rc) after $(since "$T0")s; logs in $LOGS"; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  test) test_stage1 ;;
  down) down ;;
  run) run ;;
  check) check ;;
  show) show ;;
  kubectl) shift; kubectl "$@" ;;
  node) node_vars "$2"; shift 2; in_node "$@" ;;
  *) echo "usage: $0 up|test|down|run|check|show|kubectl ARGS|node N CMD" >&2; exit 2 ;;
esac
