//! Import and export policy as plain functions over plain data: what the
//! RIB accepts from a peer (loop checks, the pool import guard), when a
//! peer has sent too much (max-prefix), and which communities our own
//! blocks carry.
//!
//! Calico's rules, as its BIRD configuration applies them:
//! - a peer that is not a calico node (a ToR router) cannot announce
//!   anything inside an IP pool: pod addresses are only ever routed to the
//!   node that owns their block. Routes *covering* a pool (a default
//!   route, an aggregate) stay acceptable; they lose to the blocks by
//!   longest match;
//! - `prefixAdvertisements` attach communities to the advertised prefixes
//!   inside their CIDR.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::packet::attributes::PathAttrs;

/// Speaker-wide settings the RIB decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPolicy {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Set when this speaker is a route reflector (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// Every IP pool: the import guard, and which learned routes are pod
    /// routes worth passing on.
    pub pools: Vec<IpNetwork>,
    pub communities: Vec<PrefixCommunities>,
}

impl LocalPolicy {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> LocalPolicy {
        LocalPolicy {
            asn,
            router_id,
            cluster_id: None,
            pools: Vec::new(),
            communities: Vec::new(),
        }
    }
}

/// Communities for advertised prefixes inside `cidr` (BGPConfiguration
/// `prefixAdvertisements`, names already resolved to values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrefixCommunities {
    pub cidr: IpNetwork,
    /// Standard communities, `(aa << 16) | nn`.
    pub communities: Vec<u32>,
    /// Large communities (RFC 8092).
    pub large: Vec<[u32; 3]>,
}

/// One peer's policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub address: IpAddr,
    pub asn: u32,
    /// We reflect routes to this internal peer (RFC 4456 client).
    pub rr_client: bool,
    /// The peer is a calico node: its pool routes are accepted, and it
    /// gets the pod routes we learned.
    pub calico_node: bool,
    /// External peer: send learned routes with their next hop unchanged.
    pub keep_next_hop: bool,
    /// External, non-node peer: also send pod routes learned from other
    /// peers (by default it only gets this node's blocks).
    pub export_learned: bool,
    /// Accepted prefixes beyond which the session is cut.
    pub max_prefixes: Option<u32>,
    /// How many times our AS may appear in a received AS_PATH.
    pub allow_local_as: u32,
    /// LOCAL_PREF of our blocks towards an internal peer (default 100).
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC of our blocks.
    pub med: Option<u32>,
    /// Next hops of our blocks when the session has no address of the
    /// family.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Cost to reach this peer's next hops, when known.
    pub igp_cost: Option<u32>,
}

impl PeerPolicy {
    pub fn new(address: IpAddr, asn: u32) -> PeerPolicy {
        PeerPolicy {
            address,
            asn,
            rr_client: false,
            calico_node: false,
            keep_next_hop: false,
            export_learned: false,
            max_prefixes: None,
            allow_local_as: 0,
            local_pref: None,
            med: None,
            next_hop_v4: None,
            next_hop_v6: None,
            igp_cost: None,
        }
    }
}

/// Why a route was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Our AS is in the AS_PATH (RFC 4271 section 9.1.2).
    AsLoop,
    /// RFC 4456 section 8: "A router that recognizes the ORIGINATOR_ID
    /// attribute SHOULD ignore a route received with its BGP Identifier as
    /// the ORIGINATOR_ID."
    OwnOriginator,
    /// RFC 4456 section 8: "If the local CLUSTER_ID is found in the
    /// CLUSTER_LIST, the advertisement received SHOULD be ignored."
    ClusterLoop,
    /// Inside an IP pool, from a peer that is not a calico node.
    PoolGuard,
}

/// Checks a received attribute set (once per UPDATE, not per prefix).
pub fn check_path(local: &LocalPolicy, peer: &PeerPolicy, a: &PathAttrs) -> Result<(), Rejection> {
    let ours = a
        .as_path
        .segments
        .iter()
        .flat_map(|s| s.asns.iter())
        .filter(|&&x| x == local.asn)
        .count();
    if ours > peer.allow_local_as as usize {
        return Err(Rejection::AsLoop);
    }
    if a.originator_id == Some(local.router_id) {
        return Err(Rejection::OwnOriginator);
    }
    if let Some(id) = local.cluster_id
        && a.cluster_list.contains(&id)
    {
        return Err(Rejection::ClusterLoop);
    }
    Ok(())
}

/// Whether `net` lies within `outer` (same family, at least as long).
pub fn within(net: &IpNetwork, outer: &IpNetwork) -> bool {
    match (net, outer) {
        (IpNetwork::V4(n), IpNetwork::V4(o)) => n.prefix() >= o.prefix() && o.contains(n.network()),
        (IpNetwork::V6(n), IpNetwork::V6(o)) => n.prefix() >= o.prefix() && o.contains(n.network()),
        _ => false,
    }
}

/// The import guard, per prefix.
pub fn check_prefix(
    local: &LocalPolicy,
    peer: &PeerPolicy,
    net: &IpNetwork,
) -> Result<(), Rejection> {
    if !peer.calico_node && local.pools.iter().any(|p| within(net, p)) {
        return Err(Rejection::PoolGuard);
    }
    Ok(())
}

/// Whether `accepted` prefixes exceed the peer's limit (RFC 4486: the
/// speaker "decides to terminate its peering [...] because the number of
/// address prefixes received from the neighbor exceeds a locally
/// configured upper bound").
pub fn max_prefixes_exceeded(peer: &PeerPolicy, accepted: usize) -> bool {
    peer.max_prefixes
        .is_some_and(|limit| accepted > limit as usize)
}

/// The communities of an advertised prefix: the union of every rule whose
/// CIDR contains it, sorted.
pub fn communities_for(net: &IpNetwork, rules: &[PrefixCommunities]) -> (Vec<u32>, Vec<[u32; 3]>) {
    let mut std = Vec::new();
    let mut large = Vec::new();
    for r in rules.iter().filter(|r| within(net, &r.cidr)) {
        std.extend_from_slice(&r.communities);
        large.extend_from_slice(&r.large);
    }
    std.sort_unstable();
    std.dedup();
    large.sort_unstable();
    large.dedup();
    (std, large)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::aspath::AsPath;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn local() -> LocalPolicy {
        let mut l = LocalPolicy::new(64512, Ipv4Addr::new(10, 0, 0, 1));
        l.pools = vec![net("10.65.0.0/16"), net("fd65::/48")];
        l
    }

    fn tor() -> PeerPolicy {
        PeerPolicy::new("10.0.0.254".parse().unwrap(), 65000)
    }

    #[test]
    fn import_guard_refuses_pool_routes_from_a_router_but_not_from_a_node() {
        let l = local();
        let mut p = tor();
        assert_eq!(
            check_prefix(&l, &p, &net("10.65.3.0/26")),
            Err(Rejection::PoolGuard)
        );
        assert_eq!(
            check_prefix(&l, &p, &net("10.65.0.0/16")),
            Err(Rejection::PoolGuard)
        );
        assert_eq!(
            check_prefix(&l, &p, &net("fd65:0:0:1::/64")),
            Err(Rejection::PoolGuard)
        );
        // Covering routes and routes outside the pools are fine.
        assert_eq!(check_prefix(&l, &p, &net("0.0.0.0/0")), Ok(()));
        assert_eq!(check_prefix(&l, &p, &net("10.0.0.0/8")), Ok(()));
        assert_eq!(check_prefix(&l, &p, &net("10.66.0.0/26")), Ok(()));
        p.calico_node = true;
        assert_eq!(check_prefix(&l, &p, &net("10.65.3.0/26")), Ok(()));
    }

    #[test]
    fn own_as_in_the_path_is_a_loop_unless_allowed() {
        let l = local();
        let mut p = tor();
        let a = PathAttrs {
            as_path: AsPath::sequence([65000, 64512, 65001]),
            ..Default::default()
        };
        assert_eq!(check_path(&l, &p, &a), Err(Rejection::AsLoop));
        p.allow_local_as = 1;
        assert_eq!(check_path(&l, &p, &a), Ok(()));
    }

    #[test]
    fn reflected_route_with_our_originator_id_or_cluster_id_is_dropped() {
        let mut l = local();
        let p = PeerPolicy::new("10.0.0.2".parse().unwrap(), 64512);
        let mut a = PathAttrs {
            originator_id: Some(l.router_id),
            ..Default::default()
        };
        assert_eq!(check_path(&l, &p, &a), Err(Rejection::OwnOriginator));
        a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 9));
        a.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1)];
        assert_eq!(check_path(&l, &p, &a), Ok(()), "not a reflector");
        l.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        assert_eq!(check_path(&l, &p, &a), Err(Rejection::ClusterLoop));
    }

    #[test]
    fn max_prefixes_trips_above_the_limit_only() {
        let mut p = tor();
        assert!(!max_prefixes_exceeded(&p, 1_000_000));
        p.max_prefixes = Some(5);
        assert!(!max_prefixes_exceeded(&p, 5));
        assert!(max_prefixes_exceeded(&p, 6));
    }

    #[test]
    fn communities_are_the_union_of_the_matching_rules() {
        let rules = vec![
            PrefixCommunities {
                cidr: net("10.65.0.0/16"),
                communities: vec![(65000 << 16) | 100],
                large: vec![],
            },
            PrefixCommunities {
                cidr: net("10.65.1.0/24"),
                communities: vec![(65000 << 16) | 200, (65000 << 16) | 100],
                large: vec![[65000, 1, 2]],
            },
        ];
        let (c, l) = communities_for(&net("10.65.1.64/26"), &rules);
        assert_eq!(c, vec![(65000 << 16) | 100, (65000 << 16) | 200]);
        assert_eq!(l, vec![[65000, 1, 2]]);
        let (c, l) = communities_for(&net("10.65.2.0/26"), &rules);
        assert_eq!((c.len(), l.len()), (1, 0));
        assert_eq!(
            communities_for(&net("10.66.0.0/26"), &rules),
            (vec![], vec![])
        );
    }
}
