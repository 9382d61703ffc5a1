//! What a stored object is and where it lives.
//!
//! A [`Key`] names one object independently of the backend; each backend
//! maps it to its own location. The etcd mapping is Calico's, so a calico-rs
//! node can read a datastore written by Calico and vice versa:
//!
//! | key | etcd path |
//! |---|---|
//! | resource | `/calico/resources/v3/projectcalico.org/<plural>/<name>` |
//! | namespaced resource | `/calico/resources/v3/projectcalico.org/<plural>/<namespace>/<name>` |
//! | IPAM block | `/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26` |
//! | block affinity | `/calico/ipam/v2/host/<node>/ipv4/block/10.65.0.0-26` |
//! | IPAM handle | `/calico/ipam/v2/handle/<handle id>` |
//! | IPAM config | `/calico/ipam/v2/config` |

use std::fmt;

use ipnetwork::IpNetwork;

use crate::Error;

/// The named (non-IPAM) resource kinds the datastore stores.
///
/// The policy kinds: Calico's NetworkPolicy, GlobalNetworkPolicy,
/// WorkloadEndpoint and Profile are stored in both datastores' Calico
/// layout (the last two only in etcd: with Kubernetes, Calico derives them
/// from Pods and Namespaces); Kubernetes' own NetworkPolicy, Pod and
/// Namespace exist only in the Kubernetes datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    IPPool,
    BGPPeer,
    BGPConfiguration,
    BGPFilter,
    Node,
    /// Calico's namespaced NetworkPolicy.
    NetworkPolicy,
    GlobalNetworkPolicy,
    /// Addresses auto-assignment skips.
    IPReservation,
    /// etcd only.
    WorkloadEndpoint,
    /// etcd only.
    Profile,
    /// `networking.k8s.io/v1` NetworkPolicy; Kubernetes only.
    KubernetesNetworkPolicy,
    /// core/v1 Pod; Kubernetes only.
    Pod,
    /// core/v1 Namespace; Kubernetes only.
    Namespace,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 13] = [
        ResourceKind::IPPool,
        ResourceKind::BGPPeer,
        ResourceKind::BGPConfiguration,
        ResourceKind::BGPFilter,
        ResourceKind::Node,
        ResourceKind::NetworkPolicy,
        ResourceKind::GlobalNetworkPolicy,
        ResourceKind::IPReservation,
        ResourceKind::WorkloadEndpoint,
        ResourceKind::Profile,
        ResourceKind::KubernetesNetworkPolicy,
        ResourceKind::Pod,
        ResourceKind::Namespace,
    ];

    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::IPPool => "IPPool",
            ResourceKind::BGPPeer => "BGPPeer",
            ResourceKind::BGPConfiguration => "BGPConfiguration",
            ResourceKind::BGPFilter => "BGPFilter",
            ResourceKind::Node => "Node",
            ResourceKind::NetworkPolicy => "NetworkPolicy",
            ResourceKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            ResourceKind::IPReservation => "IPReservation",
            ResourceKind::WorkloadEndpoint => "WorkloadEndpoint",
            ResourceKind::Profile => "Profile",
            ResourceKind::KubernetesNetworkPolicy => "NetworkPolicy (networking.k8s.io)",
            ResourceKind::Pod => "Pod",
            ResourceKind::Namespace => "Namespace",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::IPPool => "ippools",
            ResourceKind::BGPPeer => "bgppeers",
            ResourceKind::BGPConfiguration => "bgpconfigurations",
            ResourceKind::BGPFilter => "bgpfilters",
            ResourceKind::Node => "nodes",
            ResourceKind::NetworkPolicy | ResourceKind::KubernetesNetworkPolicy => {
                "networkpolicies"
            }
            ResourceKind::GlobalNetworkPolicy => "globalnetworkpolicies",
            ResourceKind::IPReservation => "ipreservations",
            ResourceKind::WorkloadEndpoint => "workloadendpoints",
            ResourceKind::Profile => "profiles",
            ResourceKind::Pod => "pods",
            ResourceKind::Namespace => "namespaces",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::NetworkPolicy
                | ResourceKind::WorkloadEndpoint
                | ResourceKind::KubernetesNetworkPolicy
                | ResourceKind::Pod
        )
    }

    /// Whether Calico's etcd layout has this kind (Kubernetes' own
    /// objects are not in etcd).
    pub fn in_etcd(self) -> bool {
        !matches!(
            self,
            ResourceKind::KubernetesNetworkPolicy | ResourceKind::Pod | ResourceKind::Namespace
        )
    }

    fn from_plural(p: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.in_etcd() && k.plural() == p)
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `namespace` is set exactly for [`ResourceKind::namespaced`] kinds.
    Resource {
        kind: ResourceKind,
        name: String,
        namespace: Option<String>,
    },
    Block {
        cidr: IpNetwork,
    },
    Affinity {
        host: String,
        cidr: IpNetwork,
    },
    Handle {
        id: String,
    },
    IpamConfig,
}

/// A set of objects to list or watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListKey {
    Resources(ResourceKind),
    Blocks,
    /// All affinities, or those of one host.
    Affinities {
        host: Option<String>,
    },
    Handles,
}

const RESOURCES: &str = "/calico/resources/v3/projectcalico.org/";
const BLOCKS: &str = "/calico/ipam/v2/assignment/";
const HOSTS: &str = "/calico/ipam/v2/host/";
const HANDLES: &str = "/calico/ipam/v2/handle/";
const IPAM_CONFIG: &str = "/calico/ipam/v2/config";

/// Checks that a name can be one path segment: non-empty, no '/', no
/// whitespace or control characters, at most 253 bytes (a DNS subdomain).
pub fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidKey(format!("{what} must not be empty")));
    }
    if name.len() > 253 {
        return Err(Error::InvalidKey(format!(
            "{what} {name:?} is longer than 253 characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidKey(format!(
            "{what} {name:?} contains {c:?}, which cannot be stored"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::InvalidKey(format!("{what} must not be {name:?}")));
    }
    Ok(())
}

fn cidr_segment(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix())
}

fn family(cidr: &IpNetwork) -> u8 {
    if cidr.is_ipv4() { 4 } else { 6 }
}

fn parse_cidr_segment(seg: &str) -> Option<IpNetwork> {
    let (ip, len) = seg.rsplit_once('-')?;
    let net = IpNetwork::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    // Only the canonical (masked) form is a valid key.
    (net.network() == net.ip()).then_some(net)
}

impl Key {
    /// A cluster-scoped resource.
    pub fn resource(kind: ResourceKind, name: impl Into<String>) -> Key {
        Key::Resource {
            kind,
            name: name.into(),
            namespace: None,
        }
    }

    /// A namespaced resource.
    pub fn namespaced(
        kind: ResourceKind,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Key {
        Key::Resource {
            kind,
            name: name.into(),
            namespace: Some(namespace.into()),
        }
    }

    /// Checks the names inside the key can be stored.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Key::Resource {
                kind,
                name,
                namespace,
            } => {
                match (kind.namespaced(), namespace) {
                    (true, Some(ns)) => check_name("namespace", ns)?,
                    (true, None) => {
                        return Err(Error::InvalidKey(format!(
                            "{} {name:?} needs a namespace",
                            kind.kind()
                        )));
                    }
                    (false, Some(ns)) => {
                        return Err(Error::InvalidKey(format!(
                            "{} {name:?} is cluster-wide; it has no namespace (got {ns:?})",
                            kind.kind()
                        )));
                    }
                    (false, None) => {}
                }
                check_name(kind.kind(), name)
            }
            Key::Affinity { host, .. } => check_name("node name", host),
            Key::Handle { id } => check_name("IPAM handle", id),
            Key::Block { .. } | Key::IpamConfig => Ok(()),
        }
    }

    /// The etcd path (Calico's layout).
    pub fn etcd_path(&self) -> String {
        match self {
            Key::Resource {
                kind,
                name,
                namespace: None,
            } => format!("{RESOURCES}{}/{name}", kind.plural()),
            Key::Resource {
                kind,
                name,
                namespace: Some(ns),
            } => format!("{RESOURCES}{}/{ns}/{name}", kind.plural()),
            Key::Block { cidr } => {
                format!("{BLOCKS}ipv{}/block/{}", family(cidr), cidr_segment(cidr))
            }
            Key::Affinity { host, cidr } => format!(
                "{HOSTS}{host}/ipv{}/block/{}",
                family(cidr),
                cidr_segment(cidr)
            ),
            Key::Handle { id } => format!("{HANDLES}{id}"),
            Key::IpamConfig => IPAM_CONFIG.to_string(),
        }
    }

    /// The inverse of [`Key::etcd_path`]; `None` for paths that are not ours
    /// or not well formed (they are skipped, never guessed at).
    pub fn from_etcd_path(path: &str) -> Option<Key> {
        if path == IPAM_CONFIG {
            return Some(Key::IpamConfig);
        }
        if let Some(rest) = path.strip_prefix(RESOURCES) {
            let (plural, name) = rest.split_once('/')?;
            let kind = ResourceKind::from_plural(plural)?;
            let key = if kind.namespaced() {
                let (ns, name) = name.split_once('/')?;
                Key::namespaced(kind, ns, name)
            } else {
                Key::resource(kind, name)
            };
            return key.validate().is_ok().then_some(key);
        }
        if let Some(rest) = path.strip_prefix(BLOCKS) {
            let (fam, rest) = rest.split_once("/block/")?;
            let cidr = parse_cidr_segment(rest)?;
            return (fam == format!("ipv{}", family(&cidr))).then_some(Key::Block { cidr });
        }
        if let Some(rest) = path.strip_prefix(HOSTS) {
            let (host, rest) = rest.split_once('/')?;
            let (fam, seg) = rest.split_once("/block/")?;
            let cidr = parse_cidr_segment(seg)?;
            let key = Key::Affinity {
                host: host.to_string(),
                cidr,
            };
            return (fam == format!("ipv{}", family(&cidr)) && key.validate().is_ok())
                .then_some(key);
        }
        if let Some(id) = path.strip_prefix(HANDLES) {
            let key = Key::Handle { id: id.to_string() };
            return key.validate().is_ok().then_some(key);
        }
        None
    }

    /// Which kind of value the key holds, for error messages.
    pub fn value_kind(&self) -> &'static str {
        match self {
            Key::Resource { kind, .. } => kind.kind(),
            Key::Block { .. } => "IPAMBlock",
            Key::Affinity { .. } => "BlockAffinity",
            Key::Handle { .. } => "IPAMHandle",
            Key::IpamConfig => "IPAMConfiguration",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Resource {
                kind,
                name,
                namespace: None,
            } => write!(f, "{} {name:?}", kind.kind()),
            Key::Resource {
                kind,
                name,
                namespace: Some(ns),
            } => write!(f, "{} \"{ns}/{name}\"", kind.kind()),
            Key::Block { cidr } => write!(f, "IPAM block {cidr}"),
            Key::Affinity { host, cidr } => write!(f, "affinity of block {cidr} to node {host:?}"),
            Key::Handle { id } => write!(f, "IPAM handle {id:?}"),
            Key::IpamConfig => write!(f, "IPAM configuration"),
        }
    }
}

impl ListKey {
    /// The etcd prefix covering exactly this set.
    pub fn etcd_prefix(&self) -> String {
        match self {
            ListKey::Resources(kind) => format!("{RESOURCES}{}/", kind.plural()),
            ListKey::Blocks => BLOCKS.to_string(),
            ListKey::Affinities { host: None } => HOSTS.to_string(),
            ListKey::Affinities { host: Some(h) } => format!("{HOSTS}{h}/"),
            ListKey::Handles => HANDLES.to_string(),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        match self {
            ListKey::Affinities { host: Some(h) } => check_name("node name", h),
            _ => Ok(()),
        }
    }

    /// Whether `key` belongs to this set.
    pub fn contains(&self, key: &Key) -> bool {
        match (self, key) {
            (ListKey::Resources(k), Key::Resource { kind, .. }) => k == kind,
            (ListKey::Blocks, Key::Block { .. }) => true,
            (ListKey::Affinities { host: None }, Key::Affinity { .. }) => true,
            (ListKey::Affinities { host: Some(h) }, Key::Affinity { host, .. }) => h == host,
            (ListKey::Handles, Key::Handle { .. }) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ListKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListKey::Resources(ResourceKind::KubernetesNetworkPolicy) => {
                write!(f, "NetworkPolicies (networking.k8s.io)")
            }
            ListKey::Resources(ResourceKind::NetworkPolicy) => write!(f, "NetworkPolicies"),
            ListKey::Resources(k) => write!(f, "{}s", k.kind()),
            ListKey::Blocks => write!(f, "IPAM blocks"),
            ListKey::Affinities { host: None } => write!(f, "block affinities"),
            ListKey::Affinities { host: Some(h) } => write!(f, "block affinities of {h:?}"),
            ListKey::Handles => write!(f, "IPAM handles"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn paths_follow_calicos_etcd_layout() {
        let cases = [
            (
                Key::resource(ResourceKind::IPPool, "default-ipv4-ippool"),
                "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
            ),
            (
                Key::resource(ResourceKind::Node, "node-1"),
                "/calico/resources/v3/projectcalico.org/nodes/node-1",
            ),
            (
                Key::Block {
                    cidr: net("10.65.0.64/26"),
                },
                "/calico/ipam/v2/assignment/ipv4/block/10.65.0.64-26",
            ),
            (
                Key::Block {
                    cidr: net("fd00:10::40/122"),
                },
                "/calico/ipam/v2/assignment/ipv6/block/fd00:10::40-122",
            ),
            (
                Key::Affinity {
                    host: "node-1".into(),
                    cidr: net("10.65.0.64/26"),
                },
                "/calico/ipam/v2/host/node-1/ipv4/block/10.65.0.64-26",
            ),
            (
                Key::Handle {
                    id: "k8s-pod-network.abc123".into(),
                },
                "/calico/ipam/v2/handle/k8s-pod-network.abc123",
            ),
            (Key::IpamConfig, "/calico/ipam/v2/config"),
            (
                Key::namespaced(
                    ResourceKind::WorkloadEndpoint,
                    "prod",
                    "node--1-k8s-web--0-eth0",
                ),
                "/calico/resources/v3/projectcalico.org/workloadendpoints/prod/node--1-k8s-web--0-eth0",
            ),
            (
                Key::namespaced(ResourceKind::NetworkPolicy, "prod", "default.allow"),
                "/calico/resources/v3/projectcalico.org/networkpolicies/prod/default.allow",
            ),
            (
                Key::resource(ResourceKind::GlobalNetworkPolicy, "deny"),
                "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/deny",
            ),
            (
                Key::resource(ResourceKind::IPReservation, "gateways"),
                "/calico/resources/v3/projectcalico.org/ipreservations/gateways",
            ),
            (
                Key::resource(ResourceKind::Profile, "kns.prod"),
                "/calico/resources/v3/projectcalico.org/profiles/kns.prod",
            ),
        ];
        for (key, path) in cases {
            assert_eq!(key.etcd_path(), path);
            assert_eq!(Key::from_etcd_path(path), Some(key), "{path}");
        }
    }

    #[test]
    fn list_prefixes_contain_their_keys_only() {
        let aff = Key::Affinity {
            host: "node-1".into(),
            cidr: net("10.65.0.0/26"),
        };
        let mine = ListKey::Affinities {
            host: Some("node-1".into()),
        };
        let other = ListKey::Affinities {
            host: Some("node-10".into()),
        };
        assert!(aff.etcd_path().starts_with(&mine.etcd_prefix()));
        // "node-1/" must not match "node-10/": the prefix ends with '/'.
        assert!(!aff.etcd_path().starts_with(&other.etcd_prefix()));
        assert!(mine.contains(&aff));
        assert!(!other.contains(&aff));
    }

    #[test]
    fn foreign_or_malformed_paths_are_not_keys() {
        for p in [
            "/calico/resources/v3/projectcalico.org/networkpolicies/default",
            "/calico/resources/v3/projectcalico.org/networkpolicies/a/b/c",
            "/calico/resources/v3/projectcalico.org/pods/default/x",
            "/calico/ipam/v2/assignment/ipv4/block/10.65.0.1-26",
            "/calico/ipam/v2/assignment/ipv6/block/10.65.0.0-26",
            "/calico/ipam/v2/assignment/ipv4/block/garbage",
            "/calico/ipam/v2/host/node-1/ipv4/block/10.65.0.0-99",
            "/calico/ipam/v2/handle/",
            "/something/else",
        ] {
            assert_eq!(Key::from_etcd_path(p), None, "{p}");
        }
    }

    #[test]
    fn names_that_would_escape_their_path_are_rejected() {
        for bad in ["", "a/b", "..", "has space", "tab\t"] {
            assert!(
                Key::resource(ResourceKind::IPPool, bad).validate().is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Key::resource(ResourceKind::IPPool, "pool-1.example")
                .validate()
                .is_ok()
        );
        // A namespaced kind needs its namespace, and only those have one.
        assert!(
            Key::resource(ResourceKind::WorkloadEndpoint, "w")
                .validate()
                .is_err()
        );
        assert!(
            Key::namespaced(ResourceKind::IPPool, "ns", "p")
                .validate()
                .is_err()
        );
        assert!(
            Key::namespaced(ResourceKind::NetworkPolicy, "a/b", "p")
                .validate()
                .is_err()
        );
    }
}
