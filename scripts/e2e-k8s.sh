#!/usr/bin/env bash
# calico-rs end to end on real kubelets (issue 16). The shipped manifests,
# deploy/crds.yaml and deploy/calico-node.yaml, applied with kubectl to a real
# Kubernetes control plane whose nodes each run their own containerd and
# kubelet, with the calico-rs image built from our binaries
# (scripts/oci-image.sh) and imported into each node's containerd. Only the
# image name is substituted.
#
#   scripts/e2e-k8s.sh up      build, start the control plane, the ToR and the
#                              nodes, apply the manifests, wait for calico-node
#                              Ready; the cluster stays up for kubectl
#   scripts/e2e-k8s.sh test    the checks of stages 1-3; each prints
#                              "e2e: ok: <what> (<seconds>s)", any failure exits 1
#                              (stage 3 starts kube-proxy on every node)
#   scripts/e2e-k8s.sh kube-proxy   start kube-proxy on every node (what stage 3
#                              does first), for a cluster left up for a user
#   scripts/e2e-k8s.sh down    stop and remove everything (also after a failed
#                              up, or kill -9 of kubelet/containerd); then check
#   scripts/e2e-k8s.sh run     up + test + down; down always runs
#   scripts/e2e-k8s.sh check   list anything of the e2e still left behind
#   scripts/e2e-k8s.sh show    the README's output (pods, pools, calico-node status)
#   scripts/e2e-k8s.sh kubectl ARGS...   kubectl against the e2e API server
#   scripts/e2e-k8s.sh node N CMD...     CMD in node N's network + mount namespaces
#   scripts/e2e-k8s.sh tor CMD...        birdc CMD on the ToR (e.g. show protocols)
#
# Stage 1 (every node): install-cni, the probes, a pod's address and its
# release, the API server through the kubernetes-services-endpoint ConfigMap,
# and (on node 1) a liveness restart. Stage 2 (3 nodes): pod-to-pod paths,
# direct within a subnet and IPIP across, the ToR's BGP sessions, pings
# through a rollout restart and an image change, a drain and uncordon with
# IPAM checked. Stage 3: kube-proxy (iptables mode; IPVS tried first), a
# ClusterIP Service from a pod on a third node, a NodePort from the router;
# service advertisement to the ToR: the service ranges from every node (a
# ClusterIP reached from the router through the ToR), a Local LoadBalancer
# address only from the nodes with its endpoints, and following its only
# endpoint to another node.
#
# Environment:
#   CALICO_K8S_BIN     Kubernetes binaries (default: scripts/k8s-build.sh's)
#   CALICO_E2E_BIN     the binaries for the image (default target/release,
#                      built with `cargo build --release --locked --bins` first
#                      unless CALICO_E2E_NO_BUILD=1; tests/tests/e2e_k8s.rs
#                      passes its own profile's, target/debug)
#   CALICO_E2E_LOGS    daemon logs and the README output, kept after down
#                      (default target/e2e-k8s)
#   CALICO_E2E_NODES   3 (default: stages 1-3) or 1 (stage 1 only)
#   CALICO_E2E_PREFIX  the name of everything the run creates (default
#                      calico-e2e): netns, node names, cgroups, /var/lib/PREFIX,
#                      /run/PREFIX. Two runs with different prefixes do not
#                      share a name (kubelet's host-global sysctls and the
#                      empty mount points made on the host they do share).
#
# Needs root, and Debian's containerd, runc, containernetworking-plugins,
# busybox-static, bird2, iptables, nftables, iproute2, openssl, jq (installed by
# `CALICO_E2E_DEPS=1 scripts/install-deps.sh`, which `up` runs).
#
# Layout. Nothing is added to the host's network namespace; nothing is
# mounted in the host's mount namespace but each node's mount-namespace file
# and its private parent bind:
#   netns PREFIX-cp          etcd, kube-apiserver ($API_IP:6443 on its lo),
#                            kube-controller-manager, kube-scheduler; and the
#                            router between the node subnets: bridge br1
#                            10.251.1.1/24 (nodes 1 and 2), bridge br2
#                            10.251.2.1/24 (node 3), and the ToR, BIRD 2 in
#                            AS 64513, eBGP with every node (BGPPeers
#                            selecting the nodes by their rack label)
#   netns PREFIX-nodeN       containerd + kubelet (+ kube-proxy in stage 3) at
#                            10.251.S.(N+1)/24 on subnet S, gateway 10.251.S.1,
#                            in the node's own mount namespace; calico-node
#                            runs here (hostNetwork), pods get their own netns
#   cgroups                  /PREFIX-nodeN/... in every v1 hierarchy
#   $BASE (/var/lib/PREFIX), $RUN (/run/PREFIX): all state
# Kubelet rewrites host-global sysctls when it starts (KUBELET_SYSCTLS): they
# are saved before and restored as soon as it has written them, and in down.
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$0")/.."
REPO=$PWD

PREFIX="${CALICO_E2E_PREFIX:-calico-e2e}"
case $PREFIX in
  [a-z]*) [ -z "${PREFIX//[a-z0-9-]/}" ] && [ ${#PREFIX} -le 20 ] || { echo "CALICO_E2E_PREFIX: a-z, 0-9 and -, at most 20" >&2; exit 2; } ;;
  *) echo "CALICO_E2E_PREFIX must start with a letter" >&2; exit 2 ;;
esac
BASE=/var/lib/$PREFIX
RUN=/run/$PREFIX
LOGS="${CALICO_E2E_LOGS:-$REPO/target/e2e-k8s}"
NODES="${CALICO_E2E_NODES:-3}"
CP_NS=$PREFIX-cp
API_IP=10.251.0.1
API_PORT=6443
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
CALICO_IMAGE=localhost/calico-rs:e2e
PAUSE_IMAGE=localhost/calico-rs/pause:e2e
TEST_IMAGE=localhost/calico-rs/busybox:e2e
# The same image under a second tag, for the image change of stage 2.
CALICO_IMAGE2=localhost/calico-rs:e2e-retag
# The ToR: BIRD 2 in the router (control-plane) namespace.
TOR_AS=64513
TOR_SOCK=/run/$PREFIX/tor-bird.ctl
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
  # The demo's shape: nodes 1 and 2 share subnet 1 (rack a), the others are
  # on subnet 2 (rack b), the router between them.
  if [ "$I" -le 2 ]; then SUBNET=1 RACK=a; else SUBNET=2 RACK=b; fi
  NODE_IP=10.251.$SUBNET.$((I + 1))
  NODE_GW=10.251.$SUBNET.1
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
# Every node something of is left (netns, state, cgroup), and node_list's:
# what down removes, whatever CALICO_E2E_NODES says now.
nodes_present() {
  {
    node_list
    ip netns list | sed -n "s/^$PREFIX-node\([0-9][0-9]*\)\b.*/\1/p"
    for d in "$BASE"/node[0-9]* "$RUN"/node[0-9]* /sys/fs/cgroup/*/"$PREFIX"-node[0-9]*; do
      [ -e "$d" ] && echo "${d##*node}"
    done
  } | sort -un
}
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
  # kube-proxy as the user the default system:node-proxier binding names.
  cert kube-proxy "/CN=system:kube-proxy" "" clientAuth
  kubeconfig system:kube-proxy cert=kube-proxy >"$PKI/kube-proxy.kubeconfig"
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
  # The control-plane namespace routes between the node subnets.
  ip netns exec $CP_NS sysctl -qw net.ipv4.ip_forward=1
  # Its bridges are the subnets' switches: with br_netfilter loaded, bridged
  # frames would go through its IP hooks and conntrack, which no switch does
  # (the keys exist only with the module loaded).
  local k
  for k in iptables ip6tables arptables; do
    ip netns exec $CP_NS sysctl -qw net.bridge.bridge-nf-call-$k=0 2>/dev/null || true
  done
}

# The ToR: BIRD 2 in the router namespace, eBGP with every node from the
# router's address on the node's subnet. What it learns (the nodes' pod
# blocks) goes into the router's kernel table; it sends nothing back.
write_tor_config() {
  local i
  {
    echo "# The e2e's top-of-rack router: BIRD 2, AS $TOR_AS, eBGP with every node."
    echo "router id $API_IP;"
    echo "protocol device { }"
    echo "protocol kernel { ipv4 { import none; export all; }; }"
    echo "template bgp node { local as $TOR_AS; hold time 30; graceful restart on; ipv4 { import all; export none; }; }"
    for i in $(node_list); do
      node_vars "$i"
      echo "protocol bgp node$I from node { source address $NODE_GW; neighbor $NODE_IP as 64512; }"
    done
  } >"$BASE/tor-bird.conf"
}
# The nodes' side: one BGPPeer per rack, selecting the rack's nodes by the
# label kubelet registers them with, peering with the router's address on
# their subnet.
bgppeers() {
  local rack gw
  for rack in a b; do
    if [ $rack = a ]; then gw=10.251.1.1; else gw=10.251.2.1; fi
    cat <<EOF
---
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {name: tor-rack-$rack}
spec:
  nodeSelector: rack == '$rack'
  peerIP: $gw
  asNumber: $TOR_AS
EOF
  done
}
birdc_tor() { nsenter --net=/run/netns/$CP_NS -- birdc -s "$TOR_SOCK" "$@"; }
make_node_netns() { # node_vars set
  ip netns add $NODE_NS
  # Created directly between the two namespaces: nothing in the host's.
  # The subnet: a bridge in the router (control-plane) namespace.
  if ! ip -n $CP_NS link show "br$SUBNET" >/dev/null 2>&1; then
    ip -n $CP_NS link add "br$SUBNET" type bridge
    ip -n $CP_NS addr add $NODE_GW/24 dev "br$SUBNET"
    ip -n $CP_NS link set "br$SUBNET" up
  fi
  ip -n $CP_NS link add "n$I" type veth peer name eth0 netns $NODE_NS
  ip -n $CP_NS link set "n$I" master "br$SUBNET" up
  ip -n $NODE_NS addr add $NODE_IP/24 dev eth0
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
  case $NODES in 1|3) ;; *) die "CALICO_E2E_NODES=$NODES: 3 (stages 1-3) or 1 (stage 1 only)" ;; esac
  CALICO_E2E_DEPS=1 "$REPO/scripts/install-deps.sh"
  k8s_bin
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
    [ -x "$K8S_BIN/$b" ] || die "no $K8S_BIN/$b (scripts/k8s-build.sh)"
  done
  for b in containerd containerd-shim-runc-v2 runc ctr openssl nsenter unshare jq bird birdc iptables; do
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

  # ---- the ToR
  write_tor_config
  start tor-bird $CP_NS "" bird -f -c "$BASE/tor-bird.conf" -s "$TOR_SOCK"
  wait_for 20 "the ToR's BIRD" birdc_tor show status || die "BIRD 2 (the ToR) did not start (see $LOGS/tor-bird.log)"

  # ---- nodes, in parallel (each waits for its containerd and kubelet)
  t=$(now)
  for i in $(node_list); do node_vars "$i"; make_node_mountns; make_cgroup_root; done
  local pids=() failed=0 p
  for i in $(node_list); do node_up "$i" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ $failed = 0 ] || die "a node did not come up"
  say "nodes registered: $(since "$t")s"; timing nodes "$(since "$t")"

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
  # The ToR, as a user declares it: BGPPeers (the CRDs are established by now:
  # apply waits for nothing, so retry until they are served).
  bgppeers >"$BASE/bgppeers.yaml"
  wait_for 30 "BGPPeers applied" kubectl apply -f "$BASE/bgppeers.yaml" || die "could not apply the BGPPeers"
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

node_up() { # after make_node_mountns and make_cgroup_root
  local t
  node_vars "$1"
  write_containerd_config
  t=$(now)
  start containerd-$NODE $NODE_NS "$NODE_MNT" containerd --config "$N/containerd.toml"
  wait_for 60 "containerd of $NODE" ctr --address "$CTRD_SOCK" version || die "containerd did not start (see $LOGS/containerd-$NODE.log)"
  say "$NODE: containerd up: $(since "$t")s"
  t=$(now); ctr_ images import "$BASE/images.oci.tar" >/dev/null
  # A second tag of the calico-rs image: stage 2 changes the DaemonSet to it.
  ctr_ images tag "$CALICO_IMAGE" "$CALICO_IMAGE2" >/dev/null
  say "$NODE: images imported: $(since "$t")s ($(ctr_ images ls -q | tr '\n' ' '))"
  write_kubelet_config
  # One kubelet starts at a time (the nodes come up in parallel): kubelet
  # writes its host-global sysctls once, when its container manager starts,
  # and each is seen doing so and undone before the next starts.
  exec 9>"$RUN/kubelet-start.lock"
  flock 9
  t=$(now)
  # --hostname-override: all nodes share the machine's hostname.
  # --node-ip: the node link's address, not whatever the default route picks.
  start kubelet-$NODE $NODE_NS "$NODE_MNT" "$K8S_BIN/kubelet" \
    --config="$N/kubelet.yaml" --kubeconfig="$PKI/kubelet-$NODE.kubeconfig" \
    --root-dir="$N/kubelet" --cert-dir="$N/kubelet/pki" \
    --hostname-override=$NODE --node-ip=$NODE_IP --node-labels=rack=$RACK --v=1
  wait_for 120 "node $NODE registered" kubectl get node $NODE || die "kubelet did not register $NODE (see $LOGS/kubelet-$NODE.log)"
  say "$NODE: kubelet registered the node: $(since "$t")s after start"
  # Wait for kubelet's sysctls (if it has anything to change), then put the
  # machine's back.
  if ! kubelet_wrote_sysctls; then
    wait_for 60 "kubelet's sysctls" kubelet_wrote_sysctls || say "warning: kubelet did not set its sysctls within 60 s"
  fi
  restore_sysctls
  flock -u 9
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
    # The README's output, with the test pod running (with 3 nodes, at the
    # end of stage 3 instead).
    if [ "$NODES" = 1 ]; then
      show >"$LOGS/readme-output.txt" 2>&1 || true
      cat "$LOGS/readme-output.txt"
    fi

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
  #    is made unable to start again (calico-node's executable, which the
  #    supervisor starts felix from, moved away in the container's own root
  #    filesystem; the running calico-node is unaffected) and killed; the
  #    supervisor's
  #    restarts fail, /liveness turns 503, kubelet's probe fails 6 times and
  #    kubelet restarts the container, with a fresh root filesystem from the
  #    image. On node 1 only: it takes two and a half minutes, and is the same
  #    on every node.
  for i in $(node_list | head -1); do
    node_vars "$i"
    pod=$(calico_pod $NODE) || true
    [ -n "$pod" ] || continue
    t=$(now)
    r0=$(restarts_of "$pod")
    kubectl -n kube-system exec "$pod" -c calico-node -- sh -c 'mv /usr/local/bin/calico-node /usr/local/bin/calico-node.moved && kill $(pidof felix)' ||
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

# ---------------------------------------------------------------- stage 2
SLEEPER='trap "exit 0" TERM; sleep 2147483647 & wait'
pod_on() { # name node role command
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: default, labels: {e2e: $3}}
spec:
  nodeName: $2
  terminationGracePeriodSeconds: 2
  containers:
  - name: bb
    image: $TEST_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, '$4']
EOF
}
pod_ip() { kubectl get pod "$1" -o jsonpath='{.status.podIP}'; }
tunl0_tx() { # netns -> packets sent into tunl0 (0 without one)
  ip -n "$1" -s -j link show tunl0 2>/dev/null | jq '.[0].stats64.tx.packets // 0' 2>/dev/null || echo 0
}
# Pings from pod $1 to $2 in the background, inside the pod, every 0.2 s;
# ping_stop prints "<lost> <sent>": replies missing for every request but
# the last one, which may still be in flight when it is stopped.
ping_start() { # pod ip tag
  kubectl exec "$1" -- sh -c "ping -i 0.2 $2 >/tmp/ping-$3 2>&1 & echo \$! >/tmp/ping-$3.pid"
}
ping_stop() { # pod tag
  kubectl exec "$1" -- sh -c "kill -INT \$(cat /tmp/ping-$2.pid); for i in 1 2 3 4 5 6 7 8 9 10; do grep -q 'packets transmitted' /tmp/ping-$2 && break; sleep 0.2; done; cat /tmp/ping-$2" |
    awk '/ seq=/ { for (i = 1; i <= NF; i++) if ($i ~ /^seq=/) got[substr($i, 5)] = 1 }
         /packets transmitted/ { tx = $1 }
         END { lost = 0; for (i = 0; i < tx - 1; i++) if (!(i in got)) lost++; print lost, tx + 0 }'
}
# IP addresses the IPAM blocks allocate, with their handles: "<ip> <handle>".
ipam_allocations() {
  kubectl get ipamblocks -o json | jq -r '
    def n: split(".") | map(tonumber) | .[0]*16777216 + .[1]*65536 + .[2]*256 + .[3];
    def ip: [(. / 16777216 | floor) % 256, (. / 65536 | floor) % 256, (. / 256 | floor) % 256, . % 256] | map(tostring) | join(".");
    .items[] | .spec as $s | ($s.cidr | split("/")[0] | n) as $b
    | range(0; $s.allocations | length) as $o | select($s.allocations[$o] != null)
    | "\(($b + $o) | ip) \($s.attributes[$s.allocations[$o]].handle_id // "?")"' | sort
}
# IPAM is clean when the addresses allocated are exactly the pods' (not on
# the host network) and the nodes' tunnel addresses, and the IPAMHandles
# exactly the allocations' handles.
ipam_clean() {
  local alloc want handles
  alloc=$(ipam_allocations)
  want=$( { kubectl get pods -A -o json | jq -r '.items[] | select(.spec.hostNetwork != true) | .status.podIP // empty'
            kubectl get nodes -o json | jq -r '.items[].metadata.annotations["projectcalico.org/IPv4IPIPTunnelAddr"] // empty'; } | sort)
  handles=$(kubectl get ipamhandles -o json | jq -r '.items[].spec.handleID' | sort)
  IPAM_STATE="$(echo "$alloc" | grep -c .) addresses allocated, $(echo "$want" | grep -c .) wanted (pods and tunnel addresses), $(echo "$handles" | grep -c .) IPAMHandles"
  IPAM_DETAIL="allocated: $(echo "$alloc" | tr '\n' ' ')| wanted: $(echo "$want" | tr '\n' ' ')| handles: $(echo "$handles" | tr '\n' ' ')"
  [ "$(echo "$alloc" | awk '{ print $1 }')" = "$want" ] &&
    [ "$(echo "$alloc" | awk '{ print $2 }' | sort)" = "$handles" ]
}
ready_pods() { kubectl wait --for=condition=Ready --timeout="$1" "${@:2}" >/dev/null; }

test_stage2() {
  local T t i a b ipb r tx0 tx1 out want
  T=$(now)
  # Test pods on every node.
  t=$(now)
  for i in $(node_list); do node_vars "$i"; pod_on "e2e-p$i" $NODE path "$SLEEPER"; done
  local pods=()
  for i in $(node_list); do pods+=("pod/e2e-p$i"); done
  ready_pods 120s "${pods[@]}" ||
    { fail "test pods not Ready: $(kubectl get pods -o wide 2>&1 | tr '\n' ' ')"; return 1; }
  declare -gA PIP
  for i in $(node_list); do PIP[$i]=$(pod_ip "e2e-p$i"); done
  ok "test pods e2e-p1..3 Running: $(for i in $(node_list); do node_vars "$i"; echo -n "e2e-p$i ${PIP[$i]} on $NODE ($NODE_IP, subnet $SUBNET); "; done)" "$t"

  # Every pair: the route on the source node, direct via the other node
  # within a subnet and via tunl0 across, the ping, and tunl0's counter
  # (moved by the pings across subnets only).
  for a in $(node_list); do
    for b in $(node_list); do
      [ "$a" = "$b" ] && continue
      t=$(now)
      node_vars "$b"; ipb=${PIP[$b]}; local nipb=$NODE_IP sb=$SUBNET
      node_vars "$a"
      r=$(ip -n $NODE_NS route get "$ipb" 2>&1 | head -1)
      if [ "$sb" = "$SUBNET" ]; then want="via $nipb dev eth0"; else want="via $nipb dev tunl0"; fi
      tx0=$(tunl0_tx $NODE_NS)
      out=$(kubectl exec "e2e-p$a" -- ping -c 2 -W 2 "$ipb" 2>&1 | grep 'packets transmitted') || true
      tx1=$(tunl0_tx $NODE_NS)
      if [[ "$r" == *"$want"* ]] && [[ "$out" == *" 2 packets received"* ]] &&
        { { [ "$sb" = "$SUBNET" ] && [ "$tx1" = "$tx0" ]; } || { [ "$sb" != "$SUBNET" ] && [ $((tx1 - tx0)) -ge 2 ]; }; }; then
        ok "e2e-p$a -> e2e-p$b ($ipb): $([ "$sb" = "$SUBNET" ] && echo direct || echo tunnelled): route on $NODE '$r'; 2 of 2 pings answered; tunl0 tx +$((tx1 - tx0))" "$t"
      else
        fail "e2e-p$a -> e2e-p$b ($ipb): route '$r' (want '$want'), ping '$out', tunl0 tx $tx0 -> $tx1"
      fi
    done
  done

  # The ToR: an Established session with every node, and every node's pod
  # block in the router's table via that node.
  t=$(now)
  local est routes ok_routes=1
  est=$(birdc_tor show protocols | awk '$1 ~ /^node[0-9]/ && $NF == "Established"' | wc -l)
  routes=$(ip -n $CP_NS route show proto bird)
  for i in $(node_list); do
    node_vars "$i"
    ip -n $CP_NS route get "${PIP[$i]}" | grep -q "via $NODE_IP " || ok_routes=0
  done
  if [ "$est" = "$NODES" ] && [ $ok_routes = 1 ]; then
    ok "ToR (BIRD 2, AS $TOR_AS): $est sessions Established (BGPPeers tor-rack-a/b); router's table: $(echo "$routes" | tr '\n' ';')" "$t"
  else
    fail "ToR: $est of $NODES sessions Established: $(birdc_tor show protocols | tr '\n' ';'); routes: $(echo "$routes" | tr '\n' ';')"
  fi

  # Rollout restart, then an image change: pings on a direct path and on a
  # tunnelled one, both ways, all along.
  local what
  for what in restart image; do
    t=$(now)
    ping_start e2e-p1 "${PIP[2]}" d12; ping_start e2e-p2 "${PIP[1]}" d21
    ping_start e2e-p1 "${PIP[3]}" t13; ping_start e2e-p3 "${PIP[1]}" t31
    sleep 1   # a few pings before the first calico-node stops
    if [ $what = restart ]; then
      kubectl -n kube-system rollout restart daemonset/calico-node >/dev/null
    else
      kubectl -n kube-system set image daemonset/calico-node calico-node=$CALICO_IMAGE2 install-cni=$CALICO_IMAGE2 >/dev/null
    fi
    local rolled=1 t_done recovered=1
    kubectl -n kube-system rollout status daemonset/calico-node --timeout=300s >/dev/null || rolled=0
    t_done=$(now)
    # The tunnelled paths come back once felix has its tunnel again.
    tunnel_back() { kubectl exec e2e-p1 -- ping -c 1 -W 1 "${PIP[3]}" && kubectl exec e2e-p3 -- ping -c 1 -W 1 "${PIP[1]}"; }
    wait_for 60 "tunnelled pings back" tunnel_back || recovered=0
    local back_after; back_after=$(since "$t_done")
    local d12 d21 t13 t31
    d12=$(ping_stop e2e-p1 d12); d21=$(ping_stop e2e-p2 d21)
    t13=$(ping_stop e2e-p1 t13); t31=$(ping_stop e2e-p3 t31)
    local images; images=$(kubectl -n kube-system get pods -l k8s-app=calico-node -o jsonpath='{range .items[*]}{.spec.containers[0].image}{" "}{end}')
    echo "e2e: pings during $what: direct e2e-p1->e2e-p2 lost ${d12% *} of ${d12#* }, e2e-p2->e2e-p1 lost ${d21% *} of ${d21#* }; tunnelled e2e-p1->e2e-p3 lost ${t13% *} of ${t13#* }, e2e-p3->e2e-p1 lost ${t31% *} of ${t31#* } (answered again ${back_after}s after the rollout finished)"
    if [ $rolled = 1 ] && [ $recovered = 1 ] && [ "${d12% *}" = 0 ] && [ "${d21% *}" = 0 ] &&
      [ "${d12#* }" -gt 5 ] && [ "${d21#* }" -gt 5 ] &&
      { [ $what = restart ] || [ "$(echo $images | tr ' ' '\n' | sort -u)" = "$CALICO_IMAGE2" ]; }; then
      ok "$([ $what = restart ] && echo "kubectl rollout restart daemonset/calico-node" || echo "kubectl set image daemonset/calico-node $CALICO_IMAGE2 (images now: $images)"): 0 direct pings lost (${d12#* } + ${d21#* } sent), tunnelled lost ${t13% *} + ${t31% *} and answered again" "$t"
    else
      fail "$what: rolled out $rolled, tunnels recovered $recovered, direct lost ${d12% *}/${d12#* } and ${d21% *}/${d21#* }, images '$images'"
    fi
  done
  timing stage2_rollouts "$(since "$T")"

  # A drain of node 3 evicts its pod (CNI DEL: the address and handle go),
  # uncordon brings it back; a new pod there gets an address; IPAM is clean.
  t=$(now)
  node_vars 3
  local ip3=${PIP[3]} h3
  h3=$(ipam_allocations | awk -v ip="$ip3" '$1 == ip { print $2 }')
  if kubectl drain $NODE --ignore-daemonsets --force --grace-period=2 --timeout=120s >/dev/null 2>&1 &&
    wait_for 30 "release of $ip3" released "$ip3" "$h3" &&
    [ "$(kubectl get node $NODE -o jsonpath='{.spec.unschedulable}')" = true ]; then
    kubectl uncordon $NODE >/dev/null
    pod_on e2e-p3 $NODE path "$SLEEPER"
    # The runtime removes the old sandbox later (kubelet's garbage
    # collection), with one more CNI DEL of it: the new pod, whose interface
    # has the same name, must keep its network through that.
    old_sandbox_gone() { ! ctr_ containers ls -q | grep -qx "${h3#k8s-pod-network.}"; }
    local eth0=""
    if ready_pods 60s pod/e2e-p3 && PIP[3]=$(pod_ip e2e-p3) && [ -n "${PIP[3]}" ] &&
      wait_for 30 "IPAM clean" ipam_clean && kubectl exec e2e-p1 -- ping -c 2 -W 2 "${PIP[3]}" >/dev/null &&
      wait_for 120 "removal of the old sandbox of e2e-p3" old_sandbox_gone &&
      eth0=$(kubectl exec e2e-p3 -- ip -4 -o addr show dev eth0 2>&1) && [[ "$eth0" == *"inet ${PIP[3]}/"* ]] &&
      kubectl exec e2e-p1 -- ping -c 2 -W 2 "${PIP[3]}" >/dev/null && ipam_clean; then
      ok "kubectl drain $NODE evicted e2e-p3 and released $ip3 (handle $h3 gone); uncordon: a new e2e-p3 got ${PIP[3]}, kept it when the runtime removed the old sandbox ($(since "$t")s), e2e-p1 pings it; IPAM clean: ${IPAM_STATE}" "$t"
    else
      fail "after the drain of $NODE: e2e-p3 '${PIP[3]}', its eth0 '$eth0'; IPAM: ${IPAM_DETAIL:-}"
    fi
  else
    fail "drain of $NODE: $ip3 still allocated: '$(allocated "$ip3")'; $(kubectl get node $NODE 2>&1 | tail -1)"
    kubectl uncordon $NODE >/dev/null 2>&1 || true
  fi
  say "stage 2 took $(since "$T")s"; timing stage2 "$(since "$T")"
}

# ---------------------------------------------------------------- stage 3
kube_proxy_config() { # mode
  cat <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $PKI/kube-proxy.kubeconfig
hostnameOverride: $NODE
mode: $1
clusterCIDR: $POOL_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# -999 cannot be set without CAP_SYS_RESOURCE.
oomScoreAdj: 0
# nf_conntrack_max is the whole machine's: left alone, as are the timeouts.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}
kube_proxy_healthy() { in_node busybox timeout 3 busybox wget -qO- http://127.0.0.1:10256/healthz; }
# IPVS where the kernel has it: kube-proxy in ipvs mode on node 1, for at
# most 20 s. Sets IPVS_RESULT.
try_ipvs() {
  node_vars 1
  kube_proxy_config ipvs >"$N/kube-proxy-ipvs.yaml"
  local rc=0
  in_node timeout 20 "$K8S_BIN/kube-proxy" --config="$N/kube-proxy-ipvs.yaml" --v=1 >"$LOGS/kube-proxy-ipvs-$NODE.log" 2>&1 || rc=$?
  if [ $rc = 124 ]; then
    IPVS_RESULT="IPVS mode ran on $NODE (kube-proxy still running after 20 s)"
  else
    IPVS_RESULT="IPVS mode unavailable: kube-proxy --mode ipvs exited ($rc): $(grep -iE 'ipvs|error' "$LOGS/kube-proxy-ipvs-$NODE.log" | tail -2 | cut -c1-300 | tr '\n' ' ')"
    if [ -r /proc/config.gz ]; then IPVS_RESULT="$IPVS_RESULT; kernel: $(zcat /proc/config.gz | grep -E '^(# )?CONFIG_IP_VS[ =]' | head -1)"; fi
  fi
}
kube_proxy_up() {
  local i
  k8s_bin
  for i in $(node_list); do
    node_vars "$i"
    pid_of kube-proxy-$NODE kube-proxy >/dev/null && continue
    kube_proxy_config iptables >"$N/kube-proxy.yaml"
    start kube-proxy-$NODE $NODE_NS "$NODE_MNT" "$K8S_BIN/kube-proxy" --config="$N/kube-proxy.yaml" --v=1
  done
  for i in $(node_list); do
    node_vars "$i"
    wait_for 60 "kube-proxy on $NODE" kube_proxy_healthy || { say "kube-proxy on $NODE not healthy (see $LOGS/kube-proxy-$NODE.log)"; return 1; }
  done
}

test_stage3() {
  local T t i out seen np cip
  T=$(now)
  t=$(now)
  try_ipvs
  echo "e2e: $IPVS_RESULT"
  if kube_proxy_up; then
    local modes=""
    for i in $(node_list); do
      node_vars "$i"
      modes="$modes $NODE:$(in_node busybox wget -qO- http://127.0.0.1:10249/proxyMode 2>/dev/null)"
    done
    ok "kube-proxy on every node, healthy (127.0.0.1:10256/healthz), mode:$modes" "$t"
  else
    fail "kube-proxy did not become healthy"; return 1
  fi

  # Backends on nodes 1 and 2, a ClusterIP and a NodePort Service.
  t=$(now)
  local web='mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www'
  node_vars 1; pod_on e2e-w1 $NODE web "$web"
  node_vars 2; pod_on e2e-w2 $NODE web "$web"
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: e2e-web, namespace: default}
spec:
  selector: {e2e: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: e2e-web-np, namespace: default}
spec:
  type: NodePort
  selector: {e2e: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
EOF
  ready_pods 60s pod/e2e-w1 pod/e2e-w2 || fail "web pods not Ready"
  cip=$(kubectl get service e2e-web -o jsonpath='{.spec.clusterIP}')
  # From the pod on node 3 (the other subnet): both backends answer. The
  # EndpointSlice lists both ready first; kube-proxy may be a sync (or, on
  # a loaded machine, several seconds) behind, so requests go in rounds of
  # 10, a second apart, until both have answered (15 rounds at most).
  two_endpoints() {
    [ "$(kubectl get endpointslices -l kubernetes.io/service-name=e2e-web \
      -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | grep -c .)" = 2 ]
  }
  svc_answers() { kubectl exec e2e-p3 -- timeout 3 wget -qO- "http://$cip/"; }
  both_seen() { echo "$out" | grep -qx e2e-w1 && echo "$out" | grep -qx e2e-w2; }
  out=""
  local rounds=0
  if wait_for 60 "two endpoints of e2e-web" two_endpoints && wait_for 60 "ClusterIP $cip from e2e-p3" svc_answers; then
    while [ $rounds -lt 15 ] && ! both_seen; do
      [ $rounds -gt 0 ] && sleep 1
      out="$out
$(kubectl exec e2e-p3 -- sh -c "for i in \$(seq 10); do timeout 3 wget -qO- http://$cip/; done" 2>&1)" || true
      rounds=$((rounds + 1))
    done
  fi
  seen=$(echo "$out" | grep -E '^e2e-w[12]$' | sort | uniq -c | awk '{ printf "%s x%s ", $2, $1 }')
  if both_seen; then
    ok "ClusterIP Service e2e-web $cip:80 (endpoints on $PREFIX-node1 and $PREFIX-node2) from e2e-p3 on $PREFIX-node3: $((rounds * 10)) requests answered by $seen" "$t"
  else
    fail "ClusterIP $cip from e2e-p3: '$(echo "$out" | tr '\n' ' ')'; endpoints: $(kubectl get endpointslices -l kubernetes.io/service-name=e2e-web -o wide 2>&1 | tr '\n' ' ')"
  fi
  # The kubernetes Service works now (it led nowhere in stage 1).
  t=$(now)
  if kubectl exec e2e-p3 -- timeout 3 nc $KUBERNETES_SVC_IP 443 </dev/null >/dev/null 2>&1; then
    ok "the kubernetes Service $KUBERNETES_SVC_IP:443 answers from e2e-p3 (kube-proxy)" "$t"
  else
    fail "the kubernetes Service $KUBERNETES_SVC_IP:443 does not answer from e2e-p3"
  fi

  # The NodePort, from the router namespace, on every node.
  for i in $(node_list); do
    t=$(now)
    node_vars "$i"
    np_answers() { np=$(nsenter --net=/run/netns/$CP_NS -- busybox timeout 3 busybox wget -qO- "http://$NODE_IP:30080/") && [ -n "$np" ]; }
    np=""
    if wait_for 30 "NodePort on $NODE" np_answers; then
      ok "NodePort $NODE_IP:30080 ($NODE) from the router namespace: answered by $np" "$t"
    else
      fail "NodePort $NODE_IP:30080 ($NODE) from the router namespace: no answer"
    fi
  done
  test_service_advertisement
  say "stage 3 took $(since "$T")s"; timing stage3 "$(since "$T")"
}

# Service advertisement to the ToR (BGPConfiguration serviceClusterIPs and
# serviceLoadBalancerIPs): the cluster IP range from every node, reached
# from the router namespace through the ToR's BGP route; a Local
# LoadBalancer Service's address only from the nodes with its endpoints;
# and the address of a Service whose only endpoint moves follows it.
LB_CIDR=198.51.100.0/24
tor_vias() { # prefix -> the next hops the ToR has for it, sorted, space-separated
  birdc_tor show route "$1" 2>/dev/null | awk '$1 == "via" { print $2 }' | sort | tr '\n' ' '
}
node_ips() { # node numbers... -> their addresses, sorted, space-separated
  local i; for i in "$@"; do node_vars "$i"; echo "$NODE_IP"; done | sort | tr '\n' ' '
}
# A LoadBalancer Service with externalTrafficPolicy Local over the pods
# labelled e2e=ROLE, its address set as a load-balancer controller would.
local_lb_service() { # name role ip
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {e2e: $2}
  ports: [{port: 80, targetPort: 8080}]
EOF
  kubectl patch service "$1" --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$3\"}]}}}" >/dev/null
}
from_router() { nsenter --net=/run/netns/$CP_NS -- busybox timeout 3 busybox wget -qO- "http://$1/"; }
# Sets out to what $1 answers from the router; fails on no answer.
router_gets() { out=$(from_router "$1") && [ -n "$out" ]; }
test_service_advertisement() {
  local t cip out solo=198.51.100.81 lb=198.51.100.80 t0 t_slice t_tor every w12 n1 n3 moved
  local web='mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 8080 -h /www'
  t=$(now)
  kubectl apply -f - >/dev/null <<EOF
apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: $SERVICE_CIDR}]
  serviceLoadBalancerIPs: [{cidr: $LB_CIDR}]
EOF
  every=$(node_ips $(node_list))
  cip=$(kubectl get service e2e-web -o jsonpath='{.spec.clusterIP}')
  ranges_out() { [ "$(tor_vias $SERVICE_CIDR)" = "$every" ] && [ "$(tor_vias $LB_CIDR)" = "$every" ]; }
  out=""
  # kube-proxy may program a Service a sync after the routes are out.
  if wait_for 30 "the ToR's routes to $SERVICE_CIDR and $LB_CIDR from every node" ranges_out \
    && wait_for 30 "ClusterIP $cip from the router" router_gets "$cip"; then
    ok "service ranges $SERVICE_CIDR and $LB_CIDR advertised to the ToR by every node ($every); ClusterIP $cip:80 from the router namespace through the ToR: answered by $out" "$t"
  else
    fail "service ranges: the ToR has $SERVICE_CIDR via '$(tor_vias $SERVICE_CIDR)', $LB_CIDR via '$(tor_vias $LB_CIDR)' (want '$every'); ClusterIP $cip from the router: '$out'"
  fi

  # A LoadBalancer Service with externalTrafficPolicy Local over e2e-w1 and
  # e2e-w2, its address set as a load-balancer controller would.
  t=$(now)
  local_lb_service e2e-web-lb web "$lb"
  w12=$(node_ips 1 2)
  lb_out() { [ "$(tor_vias $lb/32)" = "$w12" ]; }
  out=""
  if wait_for 30 "$lb/32 at the ToR from the nodes with e2e-web's endpoints" lb_out \
    && wait_for 30 "LoadBalancer $lb from the router" router_gets "$lb"; then
    ok "LoadBalancer $lb (externalTrafficPolicy Local) advertised as /32 by $PREFIX-node1 and $PREFIX-node2 only ($w12); from the router namespace: answered by $out" "$t"
  else
    fail "LoadBalancer $lb: the ToR has it via '$(tor_vias $lb/32)' (want '$w12'); from the router: '$out'"
  fi

  # The only endpoint of a Local Service moves from node 1 to node 3: its
  # /32 follows, timed from the EndpointSlice naming node 3 ready to the
  # ToR's route through node 3 alone.
  t=$(now)
  node_vars 1; pod_on e2e-solo $NODE solo "$web"
  local_lb_service e2e-solo solo "$solo"
  n1=$(node_ips 1); n3=$(node_ips 3)
  solo_on() { [ "$(tor_vias $solo/32)" = "$1" ]; }
  if ! { ready_pods 60s pod/e2e-solo && wait_for 30 "$solo/32 via $PREFIX-node1" solo_on "$n1"; }; then
    fail "e2e-solo: the ToR has $solo/32 via '$(tor_vias $solo/32)' (want '$n1')"
    return 0
  fi
  kubectl delete pod e2e-solo --wait=true >/dev/null 2>&1 || true
  node_vars 3; pod_on e2e-solo $NODE solo "$web"
  slice_on3() {
    kubectl get endpointslices -l kubernetes.io/service-name=e2e-solo \
      -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.nodeName}{"\n"}{end}' | grep -qx "$NODE"
  }
  t0=$(now); t_slice=""; t_tor=""
  while awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a < 90) }'; do
    [ -z "$t_slice" ] && slice_on3 2>/dev/null && t_slice=$(now)
    [ -n "$t_slice" ] && solo_on "$n3" && { t_tor=$(now); break; }
    sleep 0.1
  done
  out=""
  if [ -n "$t_tor" ]; then
    moved=$(awk -v a="$t_slice" -v b="$t_tor" 'BEGIN { printf "%.1f", b - a }')
    timing solo_move "$moved"
    if wait_for 30 "LoadBalancer $solo from the router" router_gets "$solo" && [ "$out" = e2e-solo ]; then
      ok "the only endpoint of e2e-solo moved to $PREFIX-node3: $solo/32 at the ToR via $PREFIX-node3 alone ${moved}s after its EndpointSlice named it ready (polled every 0.1 s); answered from the router by $out" "$t"
    else
      fail "e2e-solo moved: $solo from the router: '$out'"
    fi
  else
    fail "e2e-solo moved to $PREFIX-node3: the ToR has $solo/32 via '$(tor_vias $solo/32)' (want '$n3'); EndpointSlice ready on node 3: ${t_slice:-never}"
  fi
}

test_all() {
  local T rc=0; T=$(now)
  test_stage1 || rc=1
  timing stage1 "$(since "$T")"
  if [ "$NODES" -ge 3 ]; then
    if [ $rc = 0 ]; then
      T_FAILED=0; test_stage2 || true
      if [ $T_FAILED = 0 ]; then say "all stage 2 checks passed"; else rc=1; fi
    fi
    if [ $rc = 0 ]; then
      T_FAILED=0; test_stage3 || true
      if [ $T_FAILED = 0 ]; then say "all stage 3 checks passed"; else rc=1; fi
    fi
    # The README's output, with the cluster's pods running.
    show >"$LOGS/readme-output.txt" 2>&1 || true
    cat "$LOGS/readme-output.txt"
  else
    say "CALICO_E2E_NODES=$NODES: stages 2 and 3 need 3 nodes; not run"
  fi
  say "timings (s): $(tr '\n' ' ' <"$TIMINGS")"
  [ $rc = 0 ] || say "some checks failed; logs in $LOGS"
  return $rc
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
  stop kube-proxy-$NODE kube-proxy 10
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
  # 2. The nodes (also those of a failed up: every node anything is left of),
  #    in parallel.
  local pids=() p
  for i in $(nodes_present); do node_down "$i" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || say "warning: node_down failed"; done
  if grep -q " $RUN/mnt " /proc/mounts; then umount "$RUN/mnt" || umount -l "$RUN/mnt"; fi
  { grep -E " ($BASE|$RUN)[/ ]" /proc/mounts || true; } | awk '{ print $2 }' | sort -r | while read -r m; do
    say "unmounting leftover $m"; umount "$m" 2>/dev/null || umount -l "$m" || say "warning: cannot unmount $m"
  done
  # 3. Control plane, its netns.
  # (In parallel: the API server alone takes seconds to drain.)
  stop kube-scheduler kube-scheduler 10 & stop kube-controller-manager kube-controller-manager 10 &
  stop kube-apiserver kube-apiserver 20 & stop tor-bird "bird -f" 10 & wait
  stop etcd etcd 10
  say "control plane stopped: $(since "$t")s"
  if ip netns list | grep -qw "^$CP_NS"; then ip netns del $CP_NS; fi
  # 4. The empty mount points created on the host (only if still empty, and
  #    not a mount point in another mount namespace, such as another run's
  #    node: removing it would detach that mount there).
  if [ -f "$RUN/created-paths" ]; then
    sort -ru "$RUN/created-paths" | while read -r d; do
      if awk -v d="$d" '$5 == d { found = 1; exit } END { exit !found }' /proc/[0-9]*/mountinfo 2>/dev/null; then
        say "$d is a mount point elsewhere (another run?): left"; continue
      fi
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
  x=$(for p in $(pgrep -x kubelet; pgrep -x kube-proxy; pgrep -x containerd; pgrep -x bird; pgrep -f "containerd-shim|^runc|kube-apiserver|kube-scheduler|kube-controller|etcd"); do
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
  test) test_all ;;
  kube-proxy) kube_proxy_up ;;
  tor) shift; birdc_tor "$@" ;;
  down) down ;;
  run) run ;;
  check) check ;;
  show) show ;;
  kubectl) shift; kubectl "$@" ;;
  node) node_vars "$2"; shift 2; in_node "$@" ;;
  *) echo "usage: $0 up|test|kube-proxy|down|run|check|show|kubectl ARGS|node N CMD|tor CMD" >&2; exit 2 ;;
esac
