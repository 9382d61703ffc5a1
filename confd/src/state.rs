//! What confd knows of the cluster: the resources it watches, as plain
//! data, and the per-node facts derived from them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::{
    BGPConfiguration, BGPFilter, BGPPeer, IPPool, Node, ResolvedPrefixAdvertisement, defaults,
};

use crate::secrets::Secrets;

/// Everything confd renders from. Keys are object names.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub nodes: BTreeMap<String, Node>,
    /// `default` is the cluster-wide one; `node.<name>` overrides for one node.
    pub bgp_configs: BTreeMap<String, BGPConfiguration>,
    pub bgp_peers: BTreeMap<String, BGPPeer>,
    /// The BGPFilters BGPPeers name in `spec.filters`.
    pub bgp_filters: BTreeMap<String, BGPFilter>,
    pub pools: BTreeMap<String, IPPool>,
    /// Confirmed blocks per node (pending claims never appear here).
    pub blocks: BTreeMap<String, Vec<IpNetwork>>,
    /// Per node, the addresses it holds in blocks affine to another node
    /// (borrowed, `strictAffinity: false`), as /32 or /128: it advertises
    /// them, as Calico does, so they are reachable.
    pub borrowed: BTreeMap<String, Vec<IpNetwork>>,
    /// The Secrets BGP passwords are read from.
    pub secrets: Secrets,
    /// Kubernetes Services and their endpoints' nodes, while service
    /// advertisement is configured (empty otherwise).
    pub services: crate::services::ServiceState,
    /// `CALICO_ROUTER_ID` of this node's calico-node: a local setting, not
    /// the datastore's.
    pub router_id: Option<RouterId>,
}

/// `CALICO_ROUTER_ID`: the BGP router ID to use instead of the node's
/// IPv4 address (which an IPv6-only node does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterId {
    /// `hash`: derived from the node's name (32-bit FNV-1a), the same on
    /// every start.
    Hash,
    Fixed(std::net::Ipv4Addr),
}

impl std::str::FromStr for RouterId {
    type Err = String;
    fn from_str(s: &str) -> Result<RouterId, String> {
        match s.trim() {
            "hash" => Ok(RouterId::Hash),
            other => other.parse().map(RouterId::Fixed).map_err(|_| {
                format!("CALICO_ROUTER_ID {other:?}: use an IPv4 address or \"hash\"")
            }),
        }
    }
}

impl RouterId {
    /// The router ID of node `node`.
    pub fn of(self, node: &str) -> std::net::Ipv4Addr {
        match self {
            RouterId::Fixed(a) => a,
            RouterId::Hash => {
                let mut h: u32 = 0x811c_9dc5;
                for b in node.bytes() {
                    h ^= u32::from(b);
                    h = h.wrapping_mul(0x0100_0193);
                }
                // 0.0.0.0 is no router ID.
                std::net::Ipv4Addr::from(if h == 0 { 1 } else { h })
            }
        }
    }
}

/// The BGP-relevant facts of one node, with cluster defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub ipv4: Option<Ipv4Network>,
    pub ipv6: Option<Ipv6Network>,
    /// The node's own AS, else the cluster's.
    pub asn: u32,
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub labels: BTreeMap<String, String>,
    /// From the node's `node.<name>` BGPConfiguration, else the cluster's,
    /// else `None` (the default port, [`defaults::LISTEN_PORT`]).
    pub listen_port: Option<u16>,
}

impl ClusterState {
    /// The cluster-wide BGPConfiguration (`default`), if any.
    pub fn global_bgp(&self) -> Option<&BGPConfiguration> {
        self.bgp_configs.get("default")
    }

    fn node_bgp(&self, node: &str) -> Option<&BGPConfiguration> {
        self.bgp_configs.get(&format!("node.{node}"))
    }

    /// The cluster AS: the default BGPConfiguration's, else
    /// [`defaults::AS_NUMBER`].
    pub fn global_asn(&self) -> u32 {
        self.global_bgp()
            .and_then(|c| c.spec.as_number)
            .unwrap_or(defaults::AS_NUMBER)
    }

    /// The listen port set cluster-wide, if set.
    pub fn global_listen_port(&self) -> Option<u16> {
        self.global_bgp()
            .and_then(|c| c.spec.listen_port)
            .and_then(|p| u16::try_from(p).ok())
    }

    /// A setting of `node`'s own BGPConfiguration (`node.<name>`) if it
    /// sets it, else the cluster's.
    fn node_or_global<T>(
        &self,
        node: &str,
        get: impl Fn(&BGPConfiguration) -> Option<T>,
    ) -> Option<T> {
        self.node_bgp(node)
            .and_then(&get)
            .or_else(|| self.global_bgp().and_then(&get))
    }

    /// Which addresses `node`'s bird listens on (`bindMode`).
    pub fn bind_mode(&self, node: &str) -> ippool_crd::BindMode {
        self.node_or_global(node, |c| c.spec.bind_mode)
            .unwrap_or_default()
    }

    /// The BGP components' log severity (`logSeverityScreen`), else Info.
    pub fn log_severity(&self, node: &str) -> String {
        self.node_or_global(node, |c| {
            c.spec.log_severity_screen.clone().filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| ippool_crd::defaults::LOG_SEVERITY_SCREEN.to_string())
    }

    /// `ignoredInterfaces`.
    pub fn ignored_interfaces(&self, node: &str) -> Vec<String> {
        self.node_or_global(node, |c| c.spec.ignored_interfaces.clone())
            .unwrap_or_default()
    }

    pub fn mesh_enabled(&self) -> bool {
        self.global_bgp()
            .map(|c| c.spec.node_to_node_mesh_enabled())
            .unwrap_or(true)
    }

    /// The communities this node attaches to advertised prefixes: its
    /// `node.<name>` BGPConfiguration's `prefixAdvertisements` when that
    /// sets them, else the cluster's. Names resolve against the same
    /// configuration's `communities`, then the cluster's. Entries that do
    /// not resolve are left out and returned as errors, one line each,
    /// naming the BGPConfiguration.
    pub fn prefix_advertisements(
        &self,
        node: &str,
    ) -> (Vec<ResolvedPrefixAdvertisement>, Vec<String>) {
        let global = self.global_bgp();
        let own = self
            .node_bgp(node)
            .filter(|c| c.spec.prefix_advertisements.is_some());
        let Some(cfg) = own.or(global) else {
            return (Vec::new(), Vec::new());
        };
        let fallback = match (own, global) {
            (Some(_), Some(g)) => g.spec.communities.as_deref().unwrap_or_default(),
            _ => &[],
        };
        let (ok, errors) = cfg.spec.resolve_prefix_advertisements(fallback);
        let name = cfg.metadata.name.as_deref().unwrap_or_default();
        let errors = errors
            .into_iter()
            .map(|e| format!("BGPConfiguration {name:?}: {e}"))
            .collect();
        (ok, errors)
    }

    pub fn facts(&self, name: &str) -> Option<NodeFacts> {
        let node = self.nodes.get(name)?;
        let listen_port = self
            .node_bgp(name)
            .and_then(|c| c.spec.listen_port)
            .and_then(|p| u16::try_from(p).ok())
            .or_else(|| self.global_listen_port());
        Some(NodeFacts {
            name: name.to_string(),
            ipv4: node.bgp_ipv4(),
            ipv6: node.bgp_ipv6(),
            asn: node.asn_or(self.global_asn()),
            rr_cluster_id: node.route_reflector_cluster_id(),
            labels: node.labels().clone(),
            listen_port,
        })
    }

    /// Facts of every node, by name.
    pub fn all_facts(&self) -> BTreeMap<String, NodeFacts> {
        self.nodes
            .keys()
            .filter_map(|n| self.facts(n).map(|f| (n.clone(), f)))
            .collect()
    }
}
