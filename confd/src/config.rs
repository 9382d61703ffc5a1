//! The configuration one node's bird and felix run with, computed from the
//! cluster state.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::{PoolConfig, ResolvedPrefixAdvertisement, defaults};

use crate::peers::{self, Peer};
use crate::state::ClusterState;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node {0:?} is not registered in the datastore; start calico-node on it first")]
    UnknownNode(String),
    #[error(
        "node {0:?} has no IPv4 BGP address (spec.bgp.ipv4Address) to be its BGP router ID; set IP or IP_AUTODETECTION_METHOD for calico-node, or for an IPv6-only node CALICO_ROUTER_ID (an IPv4 address, or hash)"
    )]
    NoAddress(String),
    #[error(
        "node {0:?} has neither an IPv4 nor an IPv6 BGP address; set IP or IP_AUTODETECTION_METHOD (or IP6) for calico-node"
    )]
    NoAddressAtAll(String),
}

/// What bird needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub node: String,
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub listen_port: u16,
    /// Set when this node is a route reflector.
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub mesh_enabled: bool,
    pub peers: Vec<Peer>,
    /// This node's confirmed blocks in pools that are exported over BGP,
    /// the addresses it borrowed in other nodes' blocks (/32, /128), and
    /// the Service addresses it advertises ([`crate::services`]).
    pub advertise: Vec<IpNetwork>,
    /// Every pool CIDR: routes inside these from a non-node peer are
    /// refused, so a router cannot hijack pod addresses.
    pub pool_cidrs: Vec<IpNetwork>,
    /// `bindMode: NodeIP`: bird listens on the node's IPv4 address only
    /// (and its IPv6 one, `listen_address_v6`, on a dual-stack node);
    /// `None`: on every address.
    pub listen_address: Option<std::net::IpAddr>,
    pub listen_address_v6: Option<std::net::IpAddr>,
    /// `logSeverityScreen`: bird's and confd's log severity.
    pub log_severity: String,
    /// `ignoredInterfaces`: interfaces bird does not read as the node's.
    pub ignored_interfaces: Vec<String>,
    /// BGPConfiguration `prefixAdvertisements`, names resolved: advertised
    /// prefixes inside each CIDR carry its communities.
    pub prefix_communities: Vec<ResolvedPrefixAdvertisement>,
    /// The `prefixAdvertisements` entries left out, with why (shown in the
    /// rendering and logged, never sent).
    pub invalid_prefix_advertisements: Vec<String>,
}

/// What felix needs (besides the routes bird streams to it).
#[derive(Debug, Clone, PartialEq)]
pub struct FelixConfig {
    pub node: String,
    /// The node's underlay address with its subnet (CrossSubnet decisions);
    /// `None` on an IPv6-only node.
    pub node_ip: Option<Ipv4Network>,
    pub pools: Vec<PoolConfig>,
    /// Pools that failed validation, with why (shown, never used).
    pub invalid_pools: Vec<(String, String)>,
    pub local_blocks: Vec<IpNetwork>,
    pub ipip_tunnel_addr: Option<Ipv4Addr>,
    /// This node's VXLAN tunnel endpoint (address and MAC), once
    /// calico-node has recorded both on the Node.
    pub vxlan: Option<(Ipv4Addr, [u8; 6])>,
    /// Every other node's VXLAN tunnel endpoint with its blocks, while
    /// any pool uses VXLAN (felix routes VXLAN pools' blocks from these,
    /// not from BGP, as Calico does).
    pub vteps: Vec<Vtep>,
    /// The node's IPv6 underlay address with its subnet, if it has one.
    pub node_ipv6: Option<Ipv6Network>,
    /// This node's IPv6 VXLAN tunnel endpoint (address and MAC).
    pub vxlan_v6: Option<(Ipv6Addr, [u8; 6])>,
    /// Every other node's IPv6 VTEP with its IPv6 blocks, while any IPv6
    /// pool uses VXLAN.
    pub vteps_v6: Vec<Vtep<Ipv6Addr>>,
    /// BGPPeer `reachableBy`: (peer, gateway) of this node's peers.
    pub peer_routes: Vec<(std::net::IpAddr, std::net::IpAddr)>,
}

/// Another node's VXLAN tunnel endpoint (IPv4, or with `A = Ipv6Addr` the
/// IPv6 one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep<A = Ipv4Addr> {
    pub node: String,
    /// Its underlay address (the outer destination).
    pub node_ip: A,
    pub tunnel_addr: A,
    pub mac: [u8; 6],
    /// Its confirmed blocks of the VTEP's family.
    pub blocks: Vec<IpNetwork>,
}

/// The VXLAN tunnel endpoint of `node`, if it has a complete one.
fn vtep_of(state: &ClusterState, node: &str) -> Option<(Ipv4Addr, Ipv4Addr, [u8; 6])> {
    let n = state.nodes.get(node)?;
    Some((
        n.bgp_ipv4()?.ip(),
        n.vxlan_tunnel_addr_v4()?,
        n.vxlan_tunnel_mac()?,
    ))
}

/// The IPv6 VXLAN tunnel endpoint of `node` (IPv6 underlay address, v6
/// tunnel address, v6 MAC), if it has a complete one.
fn vtep_v6_of(state: &ClusterState, node: &str) -> Option<(Ipv6Addr, Ipv6Addr, [u8; 6])> {
    let n = state.nodes.get(node)?;
    Some((
        n.bgp_ipv6()?.ip(),
        n.vxlan_tunnel_addr_v6()?,
        n.vxlan_tunnel_mac_v6()?,
    ))
}

/// Every node but `me` with a complete VTEP, when a pool uses VXLAN.
fn vteps(state: &ClusterState, me: &str, pools: &[PoolConfig]) -> Vec<Vtep> {
    vteps_of(state, me, pools, true, vtep_of)
}

/// Every node but `me` with a complete IPv6 VTEP, when an IPv6 pool uses
/// VXLAN.
fn vteps_v6(state: &ClusterState, me: &str, pools: &[PoolConfig]) -> Vec<Vtep<Ipv6Addr>> {
    vteps_of(state, me, pools, false, vtep_v6_of)
}

/// A node's VTEP of one family: (underlay address, tunnel address, MAC).
type VtepOf<A> = fn(&ClusterState, &str) -> Option<(A, A, [u8; 6])>;

fn vteps_of<A>(
    state: &ClusterState,
    me: &str,
    pools: &[PoolConfig],
    v4: bool,
    of: VtepOf<A>,
) -> Vec<Vtep<A>> {
    if !pools
        .iter()
        .any(|p| p.cidr.is_ipv4() == v4 && p.vxlan_mode.is_enabled() && !p.disabled)
    {
        return Vec::new();
    }
    state
        .nodes
        .keys()
        .filter(|n| n.as_str() != me)
        .filter_map(|n| {
            let (node_ip, tunnel_addr, mac) = of(state, n)?;
            // Its blocks, and the addresses it borrowed in other nodes'
            // blocks (/32, /128: the longer prefix wins over the owner's
            // block), as BGP advertises them for the other pools.
            let mut blocks: Vec<IpNetwork> = state
                .blocks
                .get(n)
                .into_iter()
                .flatten()
                .chain(state.borrowed.get(n).into_iter().flatten())
                .filter(|b| b.is_ipv4() == v4)
                .copied()
                .collect();
            blocks.sort();
            blocks.dedup();
            Some(Vtep {
                node: n.clone(),
                node_ip,
                tunnel_addr,
                mac,
                blocks,
            })
        })
        .collect()
}

/// Both halves, as confd renders them for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub bgp: BgpConfig,
    pub felix: FelixConfig,
}

/// Valid pools, and the invalid ones with their errors. Overlapping pools
/// are reported on both sides and neither is used.
pub fn pools(state: &ClusterState) -> (Vec<PoolConfig>, Vec<(String, String)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (name, p) in &state.pools {
        match p.config() {
            Ok(c) => ok.push(c),
            Err(e) => bad.push((name.clone(), e.to_string())),
        }
    }
    let overlapping: Vec<String> = ok
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            ok[i + 1..]
                .iter()
                .filter(|b| ippool_crd::overlaps(&a.cidr, &b.cidr))
                .flat_map(|b| [a.name.clone(), b.name.clone()])
                .collect::<Vec<_>>()
        })
        .collect();
    ok.retain(|p| {
        if overlapping.contains(&p.name) {
            bad.push((
                p.name.clone(),
                format!(
                    "IPPool {:?}: spec.cidr {} overlaps another pool",
                    p.name, p.cidr
                ),
            ));
            false
        } else {
            true
        }
    });
    (ok, bad)
}

/// Computes the whole configuration of `node`.
pub fn compute(state: &ClusterState, node: &str) -> Result<NodeConfig, ConfigError> {
    let facts = state
        .facts(node)
        .ok_or_else(|| ConfigError::UnknownNode(node.to_string()))?;
    let node_ip = facts.ipv4;
    if node_ip.is_none() && facts.ipv6.is_none() {
        return Err(ConfigError::NoAddressAtAll(node.to_string()));
    }
    let router_id = match (state.router_id, node_ip) {
        (Some(r), _) => r.of(node),
        (None, Some(ip)) => ip.ip(),
        (None, None) => return Err(ConfigError::NoAddress(node.to_string())),
    };
    let (pools, invalid_pools) = pools(state);
    let mut local_blocks = state.blocks.get(node).cloned().unwrap_or_default();
    local_blocks.sort();
    local_blocks.dedup();
    // Its blocks, and the addresses it borrowed from others' blocks (the
    // longer prefix wins over the owner's block everywhere).
    let advertise = local_blocks
        .iter()
        .chain(state.borrowed.get(node).into_iter().flatten())
        .filter(|b| {
            pools
                .iter()
                .any(|p| p.cidr.contains(b.network()) && !p.disable_bgp_export)
        })
        .copied()
        .chain(crate::services::routes(
            state.global_bgp(),
            &state.services,
            node,
        ))
        .collect();
    let (prefix_communities, invalid_prefix_advertisements) = state.prefix_advertisements(node);
    let bgp = BgpConfig {
        node: node.to_string(),
        router_id,
        asn: facts.asn,
        listen_port: facts.listen_port.unwrap_or(defaults::LISTEN_PORT),
        rr_cluster_id: facts.rr_cluster_id,
        mesh_enabled: state.mesh_enabled() && facts.rr_cluster_id.is_none(),
        peers: peers::compute(state, node),
        advertise,
        pool_cidrs: pools.iter().map(|p| p.cidr).collect(),
        // bindMode NodeIP: the node's addresses, IPv4 first (an
        // IPv6-only node's IPv6 address alone).
        listen_address: match (node_ip, facts.ipv6) {
            _ if state.bind_mode(node) != ippool_crd::BindMode::NodeIP => None,
            (Some(v4), _) => Some(std::net::IpAddr::V4(v4.ip())),
            (None, v6) => v6.map(|n| std::net::IpAddr::V6(n.ip())),
        },
        listen_address_v6: facts
            .ipv6
            .filter(|_| state.bind_mode(node) == ippool_crd::BindMode::NodeIP && node_ip.is_some())
            .map(|n| std::net::IpAddr::V6(n.ip())),
        log_severity: state.log_severity(node),
        ignored_interfaces: state.ignored_interfaces(node),
        prefix_communities,
        invalid_prefix_advertisements,
    };
    let peer_routes = bgp
        .peers
        .iter()
        .filter_map(|p| Some((p.address, p.reachable_by?)))
        .collect();
    let vteps = vteps(state, node, &pools);
    let vteps_v6 = vteps_v6(state, node, &pools);
    let felix = FelixConfig {
        node: node.to_string(),
        node_ip,
        vxlan: vtep_of(state, node).map(|(_, addr, mac)| (addr, mac)),
        vteps,
        node_ipv6: facts.ipv6,
        vxlan_v6: vtep_v6_of(state, node).map(|(_, addr, mac)| (addr, mac)),
        vteps_v6,
        pools,
        invalid_pools,
        local_blocks,
        ipip_tunnel_addr: state.nodes.get(node).and_then(|n| n.ipip_tunnel_addr()),
        peer_routes,
    };
    Ok(NodeConfig { bgp, felix })
}
