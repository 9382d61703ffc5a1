//! What a lab is made of, recorded on disk as it is built, so `status`,
//! `exec`, `down` (and a later `up` after a crash) find everything.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::kube::ControlPlane;

/// Every lab name starts with this, so every namespace a lab makes
/// carries the prefix in `ip netns list`.
pub const LAB_PREFIX: &str = "calico-lab";

/// Where labs keep their state unless `CALICO_LAB_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/calico-lab";

/// IP-in-IP mode of the lab's pool (`CALICO_IPV4POOL_IPIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Ipip {
    Always,
    #[default]
    CrossSubnet,
    Never,
}

impl Ipip {
    pub fn as_calico(self) -> &'static str {
        match self {
            Ipip::Always => "Always",
            Ipip::CrossSubnet => "CrossSubnet",
            Ipip::Never => "Never",
        }
    }

    /// Whether traffic between nodes on these subnets is encapsulated.
    pub fn encapsulates(self, subnet_a: usize, subnet_b: usize) -> bool {
        match self {
            Ipip::Always => true,
            Ipip::CrossSubnet => subnet_a != subnet_b,
            Ipip::Never => false,
        }
    }
}

/// A `--ipip` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPIP mode; use always, crosssubnet or never")]
pub struct UnknownIpip(pub String);

impl std::str::FromStr for Ipip {
    type Err = UnknownIpip;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Ipip::Always),
            "crosssubnet" | "cross-subnet" => Ok(Ipip::CrossSubnet),
            "never" => Ok(Ipip::Never),
            _ => Err(UnknownIpip(s.to_string())),
        }
    }
}

/// Where the lab keeps Calico's resources (calico-node's
/// `DATASTORE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Datastore {
    /// etcd v3 (Debian's etcd-server), `DATASTORE_TYPE=etcdv3`.
    #[default]
    Etcd,
    /// A real kube-apiserver (on etcd 3.6), the CRDs of `deploy/crds.yaml`,
    /// `DATASTORE_TYPE=kubernetes`.
    Kubernetes,
}

impl Datastore {
    pub fn as_str(self) -> &'static str {
        match self {
            Datastore::Etcd => "etcd",
            Datastore::Kubernetes => "kubernetes",
        }
    }
}

/// A `--datastore` value that names no datastore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a datastore; use etcd or kubernetes")]
pub struct UnknownDatastore(pub String);

impl std::str::FromStr for Datastore {
    type Err = UnknownDatastore;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "etcd" | "etcdv3" => Ok(Datastore::Etcd),
            "kubernetes" | "k8s" | "kdd" => Ok(Datastore::Kubernetes),
            _ => Err(UnknownDatastore(s.to_string())),
        }
    }
}

/// The lab's IPv6 (`--ipv6`): none (IPv4 only, the default), dual
/// stack (every node gets an IPv6 underlay address too, calico-node
/// `IP6` and `CALICO_IPV6POOL_CIDR` ([`DEFAULT_POOL6`]), every pod an
/// IPv6 address beside its IPv4 one, and IPv6 BGP sessions beside the
/// IPv4 ones), or IPv6 only (Calico's "IPv6 only" set-up: the nodes'
/// uplinks, the router's bridges and etcd have IPv6 addresses only;
/// calico-node `IP=none`, `IP6`, `CALICO_ROUTER_ID=hash`; pods get one
/// IPv6 address and no IPv4 one; BGP runs over IPv6 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Ipv6Mode {
    #[default]
    Off,
    Dual,
    Only,
}

/// The IPv6 pool of a dual-stack lab (`CALICO_IPV6POOL_CIDR`; Calico's
/// default IPv6 block size, /122).
pub const DEFAULT_POOL6: Ipv6Network =
    match Ipv6Network::new_checked(Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 0), 48) {
        Some(n) => n,
        None => panic!("fd00:65::/48 is a network"),
    };

impl Ipv6Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipv6Mode::Off => "off",
            Ipv6Mode::Dual => "dual",
            Ipv6Mode::Only => "only",
        }
    }

    /// Whether the lab has IPv6 (dual stack or IPv6 only).
    pub fn has_ipv6(self) -> bool {
        self != Ipv6Mode::Off
    }

    /// Whether the nodes and pods have IPv4 (off or dual stack).
    pub fn has_ipv4(self) -> bool {
        self != Ipv6Mode::Only
    }
}

/// A `--ipv6` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv6 mode; use off, dual or only")]
pub struct UnknownIpv6Mode(pub String);

impl std::str::FromStr for Ipv6Mode {
    type Err = UnknownIpv6Mode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" | "none" | "no" => Ok(Ipv6Mode::Off),
            "dual" | "dual-stack" | "dualstack" => Ok(Ipv6Mode::Dual),
            "only" | "ipv6-only" | "v6only" => Ok(Ipv6Mode::Only),
            _ => Err(UnknownIpv6Mode(s.to_string())),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    /// `calico-lab` or `calico-lab-<suffix>`; namespaces are
    /// `<name>-router`, `<name>-etcd`, `<name>-node-<k>`,
    /// `<name>-pod-<k>-<j>`.
    pub name: String,
    pub nodes: usize,
    pub subnets: usize,
    pub pods_per_node: usize,
    pub ipip: Ipip,
    pub nat_outgoing: bool,
    /// BIRD 2 in the router namespace, eBGP with every node.
    pub tor: bool,
    /// Nodes `node-0 .. node-<K-1>` are route reflectors (one cluster ID)
    /// and the node-to-node mesh is off; 0: full mesh.
    #[serde(default)]
    pub route_reflectors: usize,
    /// BFD on the node-to-node sessions.
    #[serde(default)]
    pub bfd: bool,
    pub pool: Ipv4Network,
    /// The pool's block size (`CALICO_IPV4POOL_BLOCK_SIZE`); `None`:
    /// Calico's 26.
    #[serde(default)]
    pub block_size: Option<u8>,
    #[serde(default)]
    pub datastore: Datastore,
    /// felix's IP-in-IP backend per node (`FELIX_IPIPBACKEND`: auto,
    /// kernel or userspace), repeated over the nodes; empty: felix's
    /// default (auto). `[kernel, userspace]` mixes the two.
    #[serde(default)]
    pub ipip_backends: Vec<String>,
    /// felix's VXLAN backend per node (`FELIX_VXLANBACKEND`), repeated
    /// over the nodes like `ipip_backends`.
    #[serde(default)]
    pub vxlan_backends: Vec<String>,
    /// VXLAN on the pool instead of IP-in-IP (`--vxlan`): Always or
    /// CrossSubnet; `None`: no VXLAN.
    #[serde(default)]
    pub vxlan: Option<Ipip>,
    /// `CALICO_NETWORKING_BACKEND` of every node: `bird` (default),
    /// `vxlan` or `none` (no BGP at all).
    #[serde(default)]
    pub networking_backend: Option<String>,
    /// `--ipv6 dual`: both families; `--ipv6 only`: IPv6 alone
    /// ([`Ipv6Mode`]).
    #[serde(default)]
    pub ipv6: Ipv6Mode,
}

impl LabSpec {
    /// Whether the nodes run BGP (`--backend bird`, the default).
    pub fn runs_bgp(&self) -> bool {
        matches!(self.networking_backend.as_deref(), None | Some("bird"))
    }

    /// The IPv6 pool, in a dual-stack or IPv6-only lab.
    pub fn pool6(&self) -> Option<Ipv6Network> {
        self.ipv6.has_ipv6().then_some(DEFAULT_POOL6)
    }

    /// Whether nodes and pods have IPv4 addresses (not `--ipv6 only`).
    pub fn has_ipv4(&self) -> bool {
        self.ipv6.has_ipv4()
    }

    /// The `FELIX_IPIPBACKEND` of the `index`th node, if the lab sets one.
    pub fn ipip_backend(&self, index: usize) -> Option<&str> {
        if self.ipip_backends.is_empty() {
            return None;
        }
        Some(self.ipip_backends[index % self.ipip_backends.len()].as_str())
    }

    /// The `FELIX_VXLANBACKEND` of the `index`th node, if the lab sets one.
    pub fn vxlan_backend(&self, index: usize) -> Option<&str> {
        if self.vxlan_backends.is_empty() {
            return None;
        }
        Some(self.vxlan_backends[index % self.vxlan_backends.len()].as_str())
    }

    pub fn new(name: &str) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            nodes: 3,
            subnets: 2,
            pods_per_node: 2,
            ipip: Ipip::CrossSubnet,
            nat_outgoing: true,
            tor: false,
            route_reflectors: 0,
            bfd: false,
            datastore: Datastore::Etcd,
            ipip_backends: Vec::new(),
            vxlan_backends: Vec::new(),
            block_size: None,
            vxlan: None,
            networking_backend: None,
            ipv6: Ipv6Mode::Off,
            pool: Ipv4Network::new(Ipv4Addr::new(10, 65, 0, 0), 16)
                .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::UNSPECIFIED)),
        }
    }

    pub fn validate(&self) -> Result<(), ClusterError> {
        check_name(&self.name)?;
        if self.nodes == 0 || self.nodes > 100 {
            return Err(ClusterError::Spec(format!(
                "--nodes {} is out of range; a lab has 1-100 nodes",
                self.nodes
            )));
        }
        if self.subnets == 0 || self.subnets > 16 {
            return Err(ClusterError::Spec(format!(
                "--subnets {} is out of range; use 1-16",
                self.subnets
            )));
        }
        if self.route_reflectors > self.nodes {
            return Err(ClusterError::Spec(format!(
                "--route-reflectors {} is more than the {} nodes",
                self.route_reflectors, self.nodes
            )));
        }
        if let Some(b) = self
            .ipip_backends
            .iter()
            .find(|b| !["auto", "kernel", "userspace"].contains(&b.as_str()))
        {
            return Err(ClusterError::Spec(format!(
                "--ipip-backend {b:?} is not a backend; use auto, kernel or userspace"
            )));
        }
        if let Some(b) = self
            .vxlan_backends
            .iter()
            .find(|b| !["auto", "kernel", "userspace"].contains(&b.as_str()))
        {
            return Err(ClusterError::Spec(format!(
                "--vxlan-backend {b:?} is not a backend; use auto, kernel or userspace"
            )));
        }
        if let Some(b) = self.block_size
            && (b < self.pool.prefix() || !ippool_crd::defaults::BLOCK_SIZE_RANGE_V4.contains(&b))
        {
            return Err(ClusterError::Spec(format!(
                "--block-size {b} does not fit pool {}: use {}-32, not shorter than the pool's prefix",
                self.pool,
                self.pool
                    .prefix()
                    .max(*ippool_crd::defaults::BLOCK_SIZE_RANGE_V4.start())
            )));
        }
        if self.vxlan.is_some_and(|v| v != Ipip::Never) && self.ipip != Ipip::Never {
            return Err(ClusterError::Spec(
                "--vxlan and --ipip cannot both encapsulate; add --ipip never".into(),
            ));
        }
        match self.networking_backend.as_deref() {
            None | Some("bird") => {}
            Some("vxlan" | "none") if self.tor || self.route_reflectors > 0 || self.bfd => {
                return Err(ClusterError::Spec(
                    "--backend without BGP cannot have --tor, --route-reflectors or --bfd".into(),
                ));
            }
            Some("vxlan" | "none") => {}
            Some(b) => {
                return Err(ClusterError::Spec(format!(
                    "--backend {b:?}: use bird, vxlan or none"
                )));
            }
        }
        // IPv6 pools have no IP-in-IP: between subnets the router
        // forwards IPv6 pod traffic, which it learns over BGP as the ToR.
        let mode = self.ipv6.as_str();
        if self.ipv6.has_ipv6() && !self.runs_bgp() {
            return Err(ClusterError::Spec(format!(
                "--ipv6 {mode} needs BGP (--backend bird): the lab's IPv6 pool is routed, not VXLAN"
            )));
        }
        if self.ipv6.has_ipv6() && self.subnets > 1 && !self.tor {
            return Err(ClusterError::Spec(format!(
                "--ipv6 {mode} on more than one subnet needs --tor: IPv6 has no IP-in-IP, so the router (BIRD 2 as ToR) must learn the IPv6 blocks; or use --subnets 1"
            )));
        }
        // What the IPv6-only lab does not build (yet): an API server on an
        // IPv6 underlay, and route reflectors (their cluster ID and
        // peerings are written for IPv4 nodes).
        if self.ipv6 == Ipv6Mode::Only {
            if self.datastore == Datastore::Kubernetes {
                return Err(ClusterError::Spec(
                    "--ipv6 only runs on --datastore etcd; the lab's kube-apiserver is reached over IPv4".into(),
                ));
            }
            if self.route_reflectors > 0 {
                return Err(ClusterError::Spec(
                    "--ipv6 only has a full mesh; --route-reflectors needs IPv4 nodes in this lab"
                        .into(),
                ));
            }
            if self.vxlan.is_some() {
                return Err(ClusterError::Spec(
                    "--ipv6 only routes the IPv6 pool natively; --vxlan is for the IPv4 pool"
                        .into(),
                ));
            }
        }
        if self.pods_per_node > 50 {
            return Err(ClusterError::Spec(format!(
                "--pods-per-node {} is out of range; use 0-50",
                self.pods_per_node
            )));
        }
        Ok(())
    }
}

/// Lab names: `calico-lab` or `calico-lab-<[a-z0-9]{1,12}>`.
pub fn check_name(name: &str) -> Result<(), ClusterError> {
    let ok = name == LAB_PREFIX
        || name
            .strip_prefix(LAB_PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|s| {
                !s.is_empty()
                    && s.len() <= 12
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
    if ok {
        Ok(())
    } else {
        Err(ClusterError::Spec(format!(
            "lab name {name:?}: use {LAB_PREFIX} or {LAB_PREFIX}-<1-12 of a-z0-9>"
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub ns: String,
    /// The node's IPv4 underlay address. In an IPv6-only lab the node has
    /// none: this is then only the address the topology numbered the node
    /// by (its IPv6 address has the same host part), configured nowhere.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub subnet: usize,
    /// The router's address on the node's subnet (its gateway, the ToR;
    /// in an IPv6-only lab configured nowhere, as `ip`).
    pub gateway: Ipv4Addr,
    /// Dual stack: the node's IPv6 underlay address (a /64 of its subnet).
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// Dual stack: the router's IPv6 address on the node's subnet.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    pub run_dir: PathBuf,
    /// calico-node's pid.
    pub pid: Option<i32>,
}

impl NodeState {
    /// In Kubernetes mode, the kubeconfig calico-node runs with (its
    /// ServiceAccount's token; `KUBECONFIG`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.run_dir.join("kubeconfig")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// `pod-<node>-<j>`.
    pub name: String,
    /// Its Kubernetes namespace (`K8S_POD_NAMESPACE`).
    #[serde(default = "default_pod_namespace")]
    pub namespace: String,
    pub node: String,
    pub ns: String,
    pub ip: Option<Ipv4Addr>,
    /// Dual stack: its IPv6 address.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
}

fn default_pod_namespace() -> String {
    super::apiserver::POD_NAMESPACE.to_string()
}

/// The lab's Kubernetes control plane (Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeState {
    /// `<lab>-apiserver`: kube-apiserver and kube-controller-manager.
    pub ns: String,
    /// Its binaries, certificates, admin kubeconfig and command lines
    /// (kept to start the API server again after `chaos apiserver`).
    pub control_plane: ControlPlane,
    pub apiserver_pid: Option<i32>,
    pub controller_manager_pid: Option<i32>,
    /// calico-node's ServiceAccount, from `deploy/calico-node.yaml`.
    pub service_account: ServiceAccountRef,
}

/// A ServiceAccount by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// The user name its tokens authenticate as.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub spec: LabSpec,
    /// Where calico-node, felix, bird, confd and the CNI plugin are.
    pub bin_dir: PathBuf,
    pub subnets: Vec<Ipv4Network>,
    pub router_ns: String,
    pub etcd_ns: String,
    pub etcd_endpoint: String,
    pub etcd_pid: Option<i32>,
    pub tor_pid: Option<i32>,
    /// Kubernetes mode: the API server the nodes use instead of etcd
    /// (etcd then holds only the API server's data).
    #[serde(default)]
    pub kube: Option<KubeState>,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Set once `up` finished; an incomplete lab is an interrupted one.
    pub complete: bool,
}

impl LabState {
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether node `k` is a route reflector.
    pub fn is_route_reflector(&self, k: usize) -> bool {
        k < self.spec.route_reflectors
    }

    /// The nodes node `k` should have a BGP session with: every other
    /// node in a full mesh; the reflectors for a client; everyone for a
    /// reflector.
    pub fn expected_peers(&self, k: usize) -> Vec<&NodeState> {
        if !self.spec.runs_bgp() {
            return Vec::new();
        }
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                *i != k
                    && (self.spec.route_reflectors == 0
                        || self.is_route_reflector(k)
                        || self.is_route_reflector(*i))
            })
            .map(|(_, n)| n)
            .collect()
    }

    pub fn prefix(&self) -> String {
        format!("{}-", self.spec.name)
    }
}

/// The root directory of all labs.
pub fn root_dir() -> PathBuf {
    std::env::var_os("CALICO_LAB_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// The directory of lab `name`: state, logs, node run directories, etcd.
pub fn lab_dir(name: &str) -> PathBuf {
    root_dir().join(name)
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub fn save(dir: &Path, state: &LabState) -> Result<(), ClusterError> {
    let io = |source| ClusterError::Io {
        path: state_file(dir),
        source,
    };
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| ClusterError::Spec(format!("cannot encode the lab state: {e}")))?;
    // Unique per writer: the pod burst saves from several threads.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("state.json.{}.{seq}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, state_file(dir)).map_err(io)
}

/// The recorded state of lab `name`, if there is one.
pub fn load(name: &str) -> Result<Option<LabState>, ClusterError> {
    let path = state_file(&lab_dir(name));
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            ClusterError::Spec(format!(
                "{} is not a lab state file ({e}); remove the lab with `calico-lab down --name {name}`",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClusterError::Io { path, source }),
    }
}

/// Whether `ns` is one of lab `name`'s namespaces (by name alone: what
/// `down` removes even when the state file is lost).
pub fn is_lab_namespace(name: &str, ns: &str) -> bool {
    let Some(role) = ns.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let numbers = |s: &str, parts: usize| {
        let v: Vec<&str> = s.split('-').collect();
        v.len() == parts
            && v.iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    role == "router"
        || role == "etcd"
        || role == "apiserver"
        || role.strip_prefix("node-").is_some_and(|r| numbers(r, 1))
        || role.strip_prefix("pod-").is_some_and(|r| numbers(r, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_and_their_namespaces() {
        assert!(check_name("calico-lab").is_ok());
        assert!(check_name("calico-lab-t42").is_ok());
        assert!(check_name("lab").is_err());
        assert!(check_name("calico-lab-").is_err());
        assert!(check_name("calico-lab-A").is_err());
        assert!(check_name("calico-labx").is_err());
        assert!(is_lab_namespace("calico-lab", "calico-lab-node-3"));
        assert!(is_lab_namespace("calico-lab", "calico-lab-pod-3-0"));
        assert!(is_lab_namespace("calico-lab", "calico-lab-router"));
        assert!(is_lab_namespace("calico-lab", "calico-lab-etcd"));
        assert!(is_lab_namespace("calico-lab", "calico-lab-apiserver"));
        // Another lab's namespaces are not this one's.
        assert!(!is_lab_namespace("calico-lab", "calico-lab-t42-node-0"));
        assert!(!is_lab_namespace("calico-lab", "calico-lab-node-x"));
        assert!(!is_lab_namespace("calico-lab", "calico-lab-pod-1"));
        assert!(is_lab_namespace("calico-lab-t42", "calico-lab-t42-node-0"));
    }

    #[test]
    fn ipv6_only_has_the_ipv6_pool_no_ipv4_and_refuses_what_it_cannot_build() {
        let mut spec = LabSpec::new("calico-lab");
        spec.ipv6 = "only".parse().unwrap();
        assert_eq!(spec.ipv6, Ipv6Mode::Only);
        assert_eq!(spec.pool6(), Some(DEFAULT_POOL6));
        assert!(!spec.has_ipv4());
        assert!(LabSpec::new("calico-lab").has_ipv4());
        let e = spec.validate().unwrap_err().to_string();
        assert!(
            e.contains("--ipv6 only on more than one subnet needs --tor"),
            "{e}"
        );
        spec.tor = true;
        assert!(spec.validate().is_ok());
        spec.datastore = Datastore::Kubernetes;
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("--datastore etcd"), "{e}");
        spec.datastore = Datastore::Etcd;
        spec.route_reflectors = 1;
        assert!(spec.validate().is_err());
        let e = "triple".parse::<Ipv6Mode>().unwrap_err().to_string();
        assert!(e.contains("off, dual or only"), "{e}");
    }

    #[test]
    fn dual_stack_on_several_subnets_needs_the_tor_and_old_state_is_ipv4_only() {
        let mut spec = LabSpec::new("calico-lab");
        assert_eq!(spec.pool6(), None);
        spec.ipv6 = "dual".parse().unwrap();
        assert_eq!(
            spec.pool6().map(|p| p.to_string()),
            Some("fd00:65::/48".into())
        );
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("needs --tor"), "{e}");
        spec.tor = true;
        assert!(spec.validate().is_ok());
        spec.tor = false;
        spec.subnets = 1;
        assert!(spec.validate().is_ok());
        spec.networking_backend = Some("vxlan".into());
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("needs BGP")
        );
        assert!("triple".parse::<Ipv6Mode>().is_err());
        let mut old = serde_json::to_value(LabSpec::new("calico-lab")).unwrap();
        old.as_object_mut().unwrap().remove("ipv6");
        let old: LabSpec = serde_json::from_value(old).unwrap();
        assert_eq!(old.ipv6, Ipv6Mode::Off);
    }

    #[test]
    fn encapsulation_per_mode() {
        assert!(Ipip::CrossSubnet.encapsulates(0, 1));
        assert!(!Ipip::CrossSubnet.encapsulates(1, 1));
        assert!(Ipip::Always.encapsulates(0, 0));
        assert!(!Ipip::Never.encapsulates(0, 1));
        assert_eq!("CrossSubnet".parse::<Ipip>(), Ok(Ipip::CrossSubnet));
        assert!("sometimes".parse::<Ipip>().is_err());
    }

    #[test]
    fn datastores_by_name_and_a_state_file_of_before_is_etcd() {
        assert_eq!("kubernetes".parse::<Datastore>(), Ok(Datastore::Kubernetes));
        assert_eq!("etcdv3".parse::<Datastore>(), Ok(Datastore::Etcd));
        assert!("consul".parse::<Datastore>().is_err());
        let mut spec = serde_json::to_value(LabSpec::new("calico-lab")).unwrap();
        spec.as_object_mut().unwrap().remove("datastore");
        let old: LabSpec = serde_json::from_value(spec).unwrap();
        assert_eq!(old.datastore, Datastore::Etcd);
    }
}
