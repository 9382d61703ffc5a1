//! Import and export policy as plain functions over plain data: what the
//! RIB accepts from a peer (loop checks, the pool import guard, the
//! import policy for routes outside the pools and for next hops), when a
//! peer has sent too much (max-prefix), and which communities our own
//! blocks carry.
//!
//! Calico's rules, as its BIRD configuration applies them:
//! - a peer that is not a calico node (a ToR router) cannot announce
//!   anything inside an IP pool: pod addresses are only ever routed to the
//!   node that owns their block. Routes *covering* a pool (a default
//!   route, an aggregate) pass the guard; they lose to the blocks by
//!   longest match;
//! - beyond Calico: a default route and routes inside the node's own
//!   networks are refused unless configured ([`check_prefix`]), and so
//!   are next hops that are pod addresses, our own, unusable or, from a
//!   directly connected external peer, not on a shared network
//!   ([`check_next_hop`]);
//! - `prefixAdvertisements` attach communities to the advertised prefixes
//!   inside their CIDR.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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
    /// This node's interface addresses with their prefix lengths
    /// (`10.0.0.2/24`): the underlay subnets and the host addresses. Empty
    /// when unknown, which turns off the checks that need them.
    pub node_networks: Vec<IpNetwork>,
    /// The same networks with their interfaces' names, when read from the
    /// kernel (empty when the configuration names the networks): which
    /// interface a next hop is reached over, for filter rules with an
    /// `interface`.
    pub node_interfaces: Vec<(String, IpNetwork)>,
    /// What the import policy accepts beyond its defaults.
    pub import: ImportOptions,
}

/// Opt-ins of the import policy for routes outside the pools (the
/// defaults refuse them; see [`check_prefix`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Accept a default route (`0.0.0.0/0`, `::/0`) from peers.
    pub accept_default_route: bool,
    /// Accept routes equal to or inside this node's own networks
    /// (`node_networks`), host routes to its addresses included.
    pub accept_node_networks: bool,
}

impl LocalPolicy {
    pub fn new(asn: u32, router_id: Ipv4Addr) -> LocalPolicy {
        LocalPolicy {
            asn,
            router_id,
            cluster_id: None,
            pools: Vec::new(),
            communities: Vec::new(),
            node_networks: Vec::new(),
            node_interfaces: Vec::new(),
            import: ImportOptions::default(),
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
    /// Send every route with our address as its next hop, reflected
    /// internal routes too (BGPPeer `nextHopMode: Self`).
    pub next_hop_self: bool,
    /// External, non-node peer: also send pod routes learned from other
    /// peers (by default it only gets this node's blocks).
    pub export_learned: bool,
    /// Accepted prefixes beyond which the session is cut; `None` is the
    /// default of the peer's kind ([`effective_max_prefixes`]).
    pub max_prefixes: Option<u32>,
    /// How many times our AS may appear in a received AS_PATH.
    pub allow_local_as: u32,
    /// The AS we speak as on this session (BGPPeer `localASNumber`);
    /// `None`: the node's. See [`PeerPolicy::local_as`].
    pub local_asn: Option<u32>,
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
    /// BGPFilter rules on what this peer sends us, in order (see
    /// [`filter_verdict`]).
    pub import_filter: Arc<[FilterRule]>,
    /// BGPFilter rules on what we send this peer, in order.
    pub export_filter: Arc<[FilterRule]>,
}

/// What a matching filter rule does with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    Accept,
    Reject,
}

/// How a rule compares the route's prefix with its CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchOp {
    /// The prefix is the CIDR.
    Equal,
    /// Any prefix but the CIDR.
    NotEqual,
    /// The prefix is inside the CIDR (or is it), its length within the
    /// rule's bounds.
    In,
    /// Not `In`.
    NotIn,
}

/// One rule of a BGPFilter (Calico's `exportV4` ... lists, flattened in
/// the order the BGPPeer names its filters). Every condition set must hold
/// for the rule to match; a rule with none matches every route of its
/// family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    pub action: FilterAction,
    /// Only routes of this family (`Some(true)`: IPv4); `None`: both.
    /// Set from the CIDR's family when the rule has one.
    #[serde(default, rename = "family", deserialize_with = "de_family")]
    pub ipv4: Option<bool>,
    #[serde(default, rename = "match")]
    pub op: Option<MatchOp>,
    #[serde(default)]
    pub cidr: Option<IpNetwork>,
    /// Inclusive bounds on the prefix length, for `In` / `NotIn`
    /// (defaults: the CIDR's length, and the family's maximum).
    #[serde(default)]
    pub min_len: Option<u8>,
    #[serde(default)]
    pub max_len: Option<u8>,
    /// Export only: match only routes learned from peers, not our blocks.
    #[serde(default)]
    pub remote_peers_only: bool,
    /// Import only: the interface the route's next hop is reached over
    /// (the interface on whose network it lies; `*` wildcards). Unknown
    /// (the next hop on no interface's network, or the node networks named
    /// by the configuration rather than read from the kernel): the rule
    /// does not match.
    #[serde(default)]
    pub interface: Option<String>,
}

fn de_family<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::Deserialize;
    match String::deserialize(d)?.as_str() {
        "ipv4" => Ok(Some(true)),
        "ipv6" => Ok(Some(false)),
        other => Err(serde::de::Error::custom(format!(
            "family {other:?}: use \"ipv4\" or \"ipv6\""
        ))),
    }
}

impl FilterRule {
    /// Whether the rule is consistent: an operator exactly with a CIDR of
    /// the rule's family, length bounds only with In / NotIn and within the
    /// family's width, min not above max.
    pub fn check(&self) -> Result<(), String> {
        if self.op.is_some() != self.cidr.is_some() {
            return Err("match and cidr go together".into());
        }
        if let (Some(c), Some(v4)) = (self.cidr, self.ipv4)
            && c.is_ipv4() != v4
        {
            return Err(format!("cidr {c} is not of the rule's family"));
        }
        let v4 = self.cidr.map_or(self.ipv4 == Some(true), |c| c.is_ipv4());
        let width = if v4 { 32 } else { 128 };
        if (self.min_len.is_some() || self.max_len.is_some())
            && !matches!(self.op, Some(MatchOp::In | MatchOp::NotIn))
        {
            return Err("min_len and max_len need match = \"in\" or \"not-in\"".into());
        }
        if self
            .min_len
            .into_iter()
            .chain(self.max_len)
            .any(|l| l > width)
        {
            return Err(format!("prefix lengths go up to {width}"));
        }
        if let (Some(lo), Some(hi)) = (self.min_len, self.max_len)
            && lo > hi
        {
            return Err(format!("min_len {lo} is above max_len {hi}"));
        }
        Ok(())
    }

    /// Whether the rule matches `net`; `learned`: the route came from a
    /// peer (not one of our blocks); `interface`: where it arrived, if
    /// known.
    pub fn matches(&self, net: &IpNetwork, learned: bool, interface: Option<&str>) -> bool {
        let ipv4 = self.ipv4.or(self.cidr.map(|c| c.is_ipv4()));
        if ipv4.is_some_and(|v4| v4 != net.is_ipv4()) {
            return false;
        }
        if self.remote_peers_only && !learned {
            return false;
        }
        if let Some(pattern) = &self.interface
            && !interface.is_some_and(|i| glob_match(pattern, i))
        {
            return false;
        }
        let Some(cidr) = self.cidr else {
            return true;
        };
        let width = if net.is_ipv4() { 32 } else { 128 };
        let inside = || {
            within(net, &cidr)
                && net.prefix() >= self.min_len.unwrap_or(cidr.prefix())
                && net.prefix() <= self.max_len.unwrap_or(width)
        };
        match self.op {
            Some(MatchOp::Equal) | None => *net == cidr,
            Some(MatchOp::NotEqual) => *net != cidr,
            Some(MatchOp::In) => inside(),
            Some(MatchOp::NotIn) => !inside(),
        }
    }
}

/// `*` matches any run of characters; everything else itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

/// The action of the first rule that matches, or `None` when none does
/// (the route then gets the default policy). Filters named one after the
/// other are one list: a filter none of whose rules match falls through to
/// the next.
pub fn filter_verdict(
    rules: &[FilterRule],
    net: &IpNetwork,
    learned: bool,
    interface: Option<&str>,
) -> Option<FilterAction> {
    rules
        .iter()
        .find(|r| r.matches(net, learned, interface))
        .map(|r| r.action)
}

impl PeerPolicy {
    pub fn new(address: IpAddr, asn: u32) -> PeerPolicy {
        PeerPolicy {
            address,
            asn,
            rr_client: false,
            calico_node: false,
            keep_next_hop: false,
            next_hop_self: false,
            export_learned: false,
            max_prefixes: None,
            allow_local_as: 0,
            local_asn: None,
            local_pref: None,
            med: None,
            next_hop_v4: None,
            next_hop_v6: None,
            igp_cost: None,
            import_filter: Arc::from([]),
            export_filter: Arc::from([]),
        }
    }

    /// The AS we are to this peer: its own `local_asn`, else the node's.
    pub fn local_as(&self, node_as: u32) -> u32 {
        self.local_asn.unwrap_or(node_as)
    }

    /// Whether the session is internal (iBGP).
    pub fn internal(&self, node_as: u32) -> bool {
        self.asn == self.local_as(node_as)
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
    /// A default route, not accepted by configuration.
    DefaultRoute,
    /// Equal to or inside one of this node's own networks.
    NodeNetwork,
    /// The next hop is not a usable unicast address (unspecified,
    /// multicast, loopback, an IPv6 link-local address as the global next
    /// hop, or a second IPv6 next hop that is not link-local).
    NextHopUnusable,
    /// The next hop is inside an IP pool: a pod address.
    NextHopInPool,
    /// The next hop is one of this node's own addresses.
    NextHopLocal,
    /// A directly connected external peer gave a next hop on no network
    /// this node is attached to.
    NextHopNotConnected,
    /// A Reject rule of the peer's import filters.
    Filtered,
}

/// Checks a received attribute set (once per UPDATE, not per prefix).
pub fn check_path(local: &LocalPolicy, peer: &PeerPolicy, a: &PathAttrs) -> Result<(), Rejection> {
    let ours = a
        .as_path
        .segments
        .iter()
        .flat_map(|s| s.asns.iter())
        .filter(|&&x| x == peer.local_as(local.asn))
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

/// The import guard, per prefix, for every peer:
/// - inside a pool: only a calico node may announce it (the pool guard);
/// - a default route is refused unless `accept_default_route`: a peer
///   would otherwise replace the node's own default route;
/// - a prefix equal to or inside one of the node's networks (its underlay
///   subnets, host routes to its own or its neighbours' addresses, the API
///   server's when it shares the subnet) is refused unless
///   `accept_node_networks`: it would divert the node's own traffic.
///   Aggregates *covering* a node network are accepted: the connected
///   route is longer and keeps winning, and refusing them would refuse
///   every data-centre aggregate a router sends.
pub fn check_prefix(
    local: &LocalPolicy,
    peer: &PeerPolicy,
    net: &IpNetwork,
) -> Result<(), Rejection> {
    if local.pools.iter().any(|p| within(net, p)) {
        return if peer.calico_node {
            Ok(())
        } else {
            Err(Rejection::PoolGuard)
        };
    }
    if net.prefix() == 0 && !local.import.accept_default_route {
        return Err(Rejection::DefaultRoute);
    }
    if !local.import.accept_node_networks && local.node_networks.iter().any(|n| within(net, n)) {
        return Err(Rejection::NodeNetwork);
    }
    Ok(())
}

/// The import policy of one prefix: the peer's import filters first (a
/// Reject refuses it; an Accept overrides the refusal of default routes
/// and of node networks, which are configurable defaults, but never the
/// pool guard, which keeps a router from hijacking pod addresses), then
/// [`check_prefix`] when no rule matched.
pub fn check_import(
    local: &LocalPolicy,
    peer: &PeerPolicy,
    net: &IpNetwork,
    interface: Option<&str>,
) -> Result<(), Rejection> {
    match filter_verdict(&peer.import_filter, net, true, interface) {
        Some(FilterAction::Reject) => Err(Rejection::Filtered),
        Some(FilterAction::Accept) => match check_prefix(local, peer, net) {
            Err(Rejection::PoolGuard) => Err(Rejection::PoolGuard),
            _ => Ok(()),
        },
        None => check_prefix(local, peer, net),
    }
}

/// The interface a next hop is reached over: the one whose network holds
/// it (the longest such network), if known. Only looked up for peers
/// whose import rules name an interface.
pub fn import_interface(local: &LocalPolicy, peer: &PeerPolicy, a: &PathAttrs) -> Option<String> {
    if !peer.import_filter.iter().any(|r| r.interface.is_some()) {
        return None;
    }
    let nh = a.next_hop?.to_canonical();
    local
        .node_interfaces
        .iter()
        .filter(|(_, n)| n.contains(nh))
        .max_by_key(|(_, n)| n.prefix())
        .map(|(name, _)| name.clone())
}

/// What the next-hop check needs to know of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    /// Same AS.
    pub internal: bool,
    /// Our end of the connection.
    pub local_addr: Option<IpAddr>,
}

/// Whether `ip` can be a next hop at all: a unicast address that is not
/// unspecified, loopback, broadcast or (IPv6) link-local. A link-local
/// IPv6 next hop is only meaningful with its interface, which BGP does
/// not carry; RFC 2545 sends it as the second next hop, after a global
/// one.
fn usable_next_hop(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped()
                    .is_some_and(|m| !usable_next_hop(IpAddr::V4(m))))
        }
    }
}

/// Checks the next hop of a received attribute set (once per UPDATE and
/// family, not per prefix): NEXT_HOP for IPv4 NLRI, the MP_REACH_NLRI
/// next hop(s) otherwise, by the same rules.
///
/// The check lives here, at import, not in felix: only the speaker knows
/// the session (the peer's AS and address, our end of the connection)
/// and can refuse a route before it is selected, reflected or streamed.
/// felix still refuses, on its own, a route whose gateway is one of its
/// local pods (see `felix::calc`).
///
/// - not usable at all ([`usable_next_hop`]; the second IPv6 next hop
///   must be link-local): refused;
/// - inside an IP pool: a pod address; refused from every peer (calico
///   nodes announce their blocks with their own underlay address);
/// - one of this node's addresses (the session's local address, the
///   node networks' host addresses): refused, it would loop;
/// - from an external peer that is directly connected (its address is on
///   one of the node networks), a next hop on none of the node networks
///   of its family is unreachable: refused (RFC 4271 section 5.1.3 allows
///   a third-party next hop only on the shared subnet). Internal and
///   multihop external peers give next hops resolved through the routing
///   table, which bird does not hold: those are accepted, and a gateway
///   the kernel cannot reach is refused by the kernel when felix installs
///   the route. With no node networks known the check is skipped.
pub fn check_next_hop(
    local: &LocalPolicy,
    peer: &PeerPolicy,
    session: SessionView,
    a: &PathAttrs,
) -> Result<(), Rejection> {
    let Some(nh) = a.next_hop else {
        return Ok(());
    };
    if !usable_next_hop(nh) {
        return Err(Rejection::NextHopUnusable);
    }
    if let Some(ll) = a.link_local_next_hop
        && !ll.is_unicast_link_local()
    {
        return Err(Rejection::NextHopUnusable);
    }
    if local.pools.iter().any(|p| p.contains(nh)) {
        return Err(Rejection::NextHopInPool);
    }
    if session.local_addr.map(|l| l.to_canonical()) == Some(nh.to_canonical())
        || local.node_networks.iter().any(|n| n.ip() == nh)
    {
        return Err(Rejection::NextHopLocal);
    }
    let direct = !session.internal
        && local
            .node_networks
            .iter()
            .any(|n| n.contains(peer.address.to_canonical()));
    let same_family: Vec<&IpNetwork> = local
        .node_networks
        .iter()
        .filter(|n| n.is_ipv4() == nh.is_ipv4())
        .collect();
    if direct && !same_family.is_empty() && !same_family.iter().any(|n| n.contains(nh)) {
        return Err(Rejection::NextHopNotConnected);
    }
    Ok(())
}

/// Whether `accepted` prefixes exceed the peer's limit (RFC 4486: the
/// speaker "decides to terminate its peering [...] because the number of
/// address prefixes received from the neighbor exceeds a locally
/// configured upper bound").
pub fn max_prefixes_exceeded(peer: &PeerPolicy, accepted: usize) -> bool {
    accepted > effective_max_prefixes(peer) as usize
}

/// Accepted prefixes beyond which a calico node's session is cut when its
/// peering sets no limit: a route reflector sends every block of the
/// cluster, which is thousands of nodes times a few blocks each, well
/// under this.
pub const DEFAULT_MAX_PREFIXES_NODE: u32 = 100_000;

/// The same for any other peer (a router): room for a full IPv4 table,
/// and a bound on what one peer can make the RIB hold.
pub const DEFAULT_MAX_PREFIXES_ROUTER: u32 = 1_000_000;

/// The peer's limit: its configured `max_prefixes`, or the default for
/// its kind. Every peer has one.
pub fn effective_max_prefixes(peer: &PeerPolicy) -> u32 {
    peer.max_prefixes.unwrap_or(if peer.calico_node {
        DEFAULT_MAX_PREFIXES_NODE
    } else {
        DEFAULT_MAX_PREFIXES_ROUTER
    })
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
        // Covering routes and routes outside the pools pass the pool
        // guard (a default route where configured to be accepted).
        assert_eq!(
            check_prefix(&l, &p, &net("0.0.0.0/0")),
            Err(Rejection::DefaultRoute)
        );
        let mut l = l;
        l.import.accept_default_route = true;
        assert_eq!(check_prefix(&l, &p, &net("0.0.0.0/0")), Ok(()));
        assert_eq!(check_prefix(&l, &p, &net("10.0.0.0/8")), Ok(()));
        assert_eq!(check_prefix(&l, &p, &net("10.66.0.0/26")), Ok(()));
        p.calico_node = true;
        assert_eq!(check_prefix(&l, &p, &net("10.65.3.0/26")), Ok(()));
    }

    fn node() -> LocalPolicy {
        let mut l = local();
        l.node_networks = vec![net("192.168.1.2/24"), net("fd00:1::2/64")];
        l
    }

    #[test]
    fn default_route_and_node_networks_are_refused_unless_configured() {
        let mut l = node();
        let mut p = tor();
        for p in [
            &mut p,
            &mut PeerPolicy::new("192.168.1.3".parse().unwrap(), 64512),
        ] {
            p.calico_node = p.asn == 64512;
            assert_eq!(
                check_prefix(&l, p, &net("0.0.0.0/0")),
                Err(Rejection::DefaultRoute)
            );
            assert_eq!(
                check_prefix(&l, p, &net("::/0")),
                Err(Rejection::DefaultRoute)
            );
            for n in [
                "192.168.1.0/24",
                "192.168.1.128/25",
                "192.168.1.2/32",
                "fd00:1::/64",
                "fd00:1::2/128",
            ] {
                assert_eq!(
                    check_prefix(&l, p, &net(n)),
                    Err(Rejection::NodeNetwork),
                    "{n}"
                );
            }
            // Aggregates covering the node's subnet lose to the connected
            // route by longest match and stay acceptable, and so does
            // what lies elsewhere.
            for n in [
                "192.168.0.0/16",
                "10.0.0.0/8",
                "192.168.2.0/24",
                "fd00::/16",
            ] {
                assert_eq!(check_prefix(&l, p, &net(n)), Ok(()), "{n}");
            }
        }
        l.import.accept_default_route = true;
        assert_eq!(check_prefix(&l, &p, &net("0.0.0.0/0")), Ok(()));
        assert_eq!(
            check_prefix(&l, &p, &net("192.168.1.2/32")),
            Err(Rejection::NodeNetwork)
        );
        l.import.accept_node_networks = true;
        assert_eq!(check_prefix(&l, &p, &net("192.168.1.2/32")), Ok(()));
        // A pool route is still the pool guard's.
        assert_eq!(
            check_prefix(&l, &p, &net("10.65.3.0/26")),
            Err(Rejection::PoolGuard)
        );
    }

    fn nh(s: &str) -> PathAttrs {
        PathAttrs {
            next_hop: Some(s.parse().unwrap()),
            ..Default::default()
        }
    }

    const EBGP: SessionView = SessionView {
        internal: false,
        local_addr: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2))),
    };

    #[test]
    fn next_hops_in_pools_on_local_addresses_or_unusable_are_refused() {
        let l = node();
        let p = PeerPolicy::new("192.168.1.1".parse().unwrap(), 65000);
        let check = |a: &PathAttrs| check_next_hop(&l, &p, EBGP, a);
        assert_eq!(check(&nh("192.168.1.1")), Ok(()));
        assert_eq!(
            check(&nh("192.168.1.9")),
            Ok(()),
            "third party, same subnet"
        );
        assert_eq!(check(&nh("fd00:1::1")), Ok(()));
        for (n, why) in [
            ("10.65.1.5", Rejection::NextHopInPool),
            ("fd65::5", Rejection::NextHopInPool),
            ("192.168.1.2", Rejection::NextHopLocal),
            ("fd00:1::2", Rejection::NextHopLocal),
            ("0.0.0.0", Rejection::NextHopUnusable),
            ("224.0.0.5", Rejection::NextHopUnusable),
            ("255.255.255.255", Rejection::NextHopUnusable),
            ("127.0.0.1", Rejection::NextHopUnusable),
            ("::", Rejection::NextHopUnusable),
            ("ff02::1", Rejection::NextHopUnusable),
            ("::1", Rejection::NextHopUnusable),
            ("fe80::1", Rejection::NextHopUnusable),
            ("192.168.7.1", Rejection::NextHopNotConnected),
            ("fd00:7::1", Rejection::NextHopNotConnected),
        ] {
            assert_eq!(check(&nh(n)), Err(why), "{n}");
        }
        // RFC 2545: a link-local next hop only as the second one, after a
        // global address.
        let mut a = nh("fd00:1::1");
        a.link_local_next_hop = Some("fe80::1".parse().unwrap());
        assert_eq!(check(&a), Ok(()));
        a.link_local_next_hop = Some("fd00:1::5".parse().unwrap());
        assert_eq!(check(&a), Err(Rejection::NextHopUnusable));
    }

    #[test]
    fn next_hop_reachability_is_checked_only_for_directly_connected_external_peers() {
        let l = node();
        let far = nh("172.16.0.1");
        // Internal peers resolve next hops recursively.
        let ibgp = PeerPolicy::new("192.168.1.1".parse().unwrap(), 64512);
        let s = SessionView {
            internal: true,
            ..EBGP
        };
        assert_eq!(check_next_hop(&l, &ibgp, s, &far), Ok(()));
        // A multihop external peer (not on our networks): cannot be judged
        // without the kernel's table.
        let multihop = PeerPolicy::new("172.16.0.1".parse().unwrap(), 65000);
        assert_eq!(check_next_hop(&l, &multihop, EBGP, &far), Ok(()));
        // Node networks unknown: nothing to judge against.
        let direct = PeerPolicy::new("192.168.1.1".parse().unwrap(), 65000);
        assert_eq!(check_next_hop(&local(), &direct, EBGP, &far), Ok(()));
        assert_eq!(
            check_next_hop(&l, &direct, EBGP, &far),
            Err(Rejection::NextHopNotConnected)
        );
        // The session's own address counts as local even when the node
        // networks are unknown; a pool address everywhere.
        let s = SessionView {
            internal: true,
            local_addr: Some("10.9.9.9".parse().unwrap()),
        };
        assert_eq!(
            check_next_hop(&local(), &ibgp, s, &nh("10.9.9.9")),
            Err(Rejection::NextHopLocal)
        );
        assert_eq!(
            check_next_hop(&local(), &ibgp, s, &nh("10.65.0.1")),
            Err(Rejection::NextHopInPool)
        );
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
    fn every_peer_has_a_default_max_prefixes_nodes_included() {
        // Issue 19 item 8: no peer may grow the RIB without bound.
        let mut p = tor();
        assert_eq!(effective_max_prefixes(&p), DEFAULT_MAX_PREFIXES_ROUTER);
        assert!(!max_prefixes_exceeded(
            &p,
            DEFAULT_MAX_PREFIXES_ROUTER as usize
        ));
        assert!(max_prefixes_exceeded(
            &p,
            DEFAULT_MAX_PREFIXES_ROUTER as usize + 1
        ));
        p.calico_node = true;
        assert_eq!(effective_max_prefixes(&p), DEFAULT_MAX_PREFIXES_NODE);
        assert!(max_prefixes_exceeded(
            &p,
            DEFAULT_MAX_PREFIXES_NODE as usize + 1
        ));
        // A configured limit wins either way.
        p.max_prefixes = Some(u32::MAX);
        assert!(!max_prefixes_exceeded(
            &p,
            DEFAULT_MAX_PREFIXES_NODE as usize + 1
        ));
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

    fn r(action: FilterAction, op: Option<MatchOp>, cidr: Option<&str>) -> FilterRule {
        FilterRule {
            action,
            ipv4: None,
            op,
            cidr: cidr.map(net),
            min_len: None,
            max_len: None,
            remote_peers_only: false,
            interface: None,
        }
    }

    #[test]
    fn filter_operators_and_prefix_lengths_match_as_calico_documents() {
        use FilterAction::*;
        let n = net("10.65.1.0/26");
        let eq = r(Reject, Some(MatchOp::Equal), Some("10.65.1.0/26"));
        assert!(eq.matches(&n, true, None));
        assert!(!eq.matches(&net("10.65.1.0/27"), true, None));
        let ne = r(Reject, Some(MatchOp::NotEqual), Some("10.65.1.0/26"));
        assert!(!ne.matches(&n, true, None) && ne.matches(&net("10.65.2.0/26"), true, None));
        let mut inside = r(Reject, Some(MatchOp::In), Some("10.65.0.0/16"));
        assert!(inside.matches(&n, true, None));
        assert!(
            inside.matches(&net("10.65.0.0/16"), true, None),
            "the CIDR itself"
        );
        assert!(
            !inside.matches(&net("10.0.0.0/8"), true, None),
            "a covering prefix"
        );
        inside.min_len = Some(24);
        inside.max_len = Some(26);
        assert!(inside.matches(&n, true, None));
        assert!(!inside.matches(&net("10.65.1.0/28"), true, None));
        assert!(!inside.matches(&net("10.65.0.0/20"), true, None));
        let mut not_in = inside.clone();
        not_in.op = Some(MatchOp::NotIn);
        assert!(!not_in.matches(&n, true, None));
        assert!(not_in.matches(&net("10.65.1.0/28"), true, None));
        assert!(not_in.matches(&net("192.168.0.0/24"), true, None));
        // Families: a rule of the V4 lists never matches an IPv6 route.
        let mut all_v4 = r(Reject, None, None);
        all_v4.ipv4 = Some(true);
        assert!(all_v4.matches(&n, true, None));
        assert!(!all_v4.matches(&net("fd65::/64"), true, None));
        // source: RemotePeers.
        let mut remote = r(Reject, None, None);
        remote.remote_peers_only = true;
        assert!(remote.matches(&n, true, None) && !remote.matches(&n, false, None));
        // interface: only when known and matching.
        let mut iface = r(Reject, None, None);
        iface.interface = Some("eth*".into());
        assert!(iface.matches(&n, true, Some("eth0")));
        assert!(!iface.matches(&n, true, Some("ens3")) && !iface.matches(&n, true, None));
    }

    #[test]
    fn the_first_matching_rule_decides_across_filters_and_none_means_the_default() {
        use FilterAction::*;
        let rules = [
            // filter 1
            r(Accept, Some(MatchOp::Equal), Some("172.16.1.0/24")),
            // filter 2
            r(Reject, Some(MatchOp::In), Some("172.16.0.0/16")),
            r(Accept, None, None),
        ];
        assert_eq!(
            filter_verdict(&rules, &net("172.16.1.0/24"), true, None),
            Some(Accept)
        );
        assert_eq!(
            filter_verdict(&rules, &net("172.16.2.0/24"), true, None),
            Some(Reject)
        );
        assert_eq!(
            filter_verdict(&rules, &net("192.0.2.0/24"), true, None),
            Some(Accept)
        );
        assert_eq!(
            filter_verdict(&rules[..2], &net("192.0.2.0/24"), true, None),
            None
        );
        assert_eq!(filter_verdict(&[], &net("192.0.2.0/24"), true, None), None);
    }

    #[test]
    fn import_filters_reject_and_accept_but_never_open_the_pool_guard() {
        use FilterAction::*;
        let mut l = local();
        l.node_networks = vec![net("10.0.0.1/24")];
        let mut p = tor();
        p.import_filter = vec![
            r(Reject, Some(MatchOp::Equal), Some("172.16.1.0/24")),
            r(Accept, Some(MatchOp::In), Some("10.0.0.0/24")),
            r(Accept, Some(MatchOp::In), Some("10.65.0.0/16")),
        ]
        .into();
        assert_eq!(
            check_import(&l, &p, &net("172.16.1.0/24"), None),
            Err(Rejection::Filtered)
        );
        assert_eq!(
            check_import(&l, &p, &net("172.16.2.0/24"), None),
            Ok(()),
            "no rule: default"
        );
        // Accept opens the node-network default...
        assert_eq!(
            check_prefix(&l, &p, &net("10.0.0.0/25")),
            Err(Rejection::NodeNetwork)
        );
        assert_eq!(check_import(&l, &p, &net("10.0.0.0/25"), None), Ok(()));
        // ...never the pool guard.
        assert_eq!(
            check_import(&l, &p, &net("10.65.1.0/26"), None),
            Err(Rejection::PoolGuard)
        );
    }

    #[test]
    fn inconsistent_rules_are_refused() {
        let mut bad = r(FilterAction::Reject, Some(MatchOp::In), None);
        assert!(bad.check().is_err());
        bad.cidr = Some(net("10.0.0.0/8"));
        assert!(bad.check().is_ok());
        bad.min_len = Some(33);
        assert!(bad.check().is_err());
        bad.min_len = Some(24);
        bad.max_len = Some(16);
        assert!(bad.check().is_err());
        bad.max_len = None;
        bad.ipv4 = Some(false);
        assert!(bad.check().is_err(), "IPv4 CIDR in a V6 rule");
        let eq_len = FilterRule {
            min_len: Some(24),
            ..r(
                FilterAction::Reject,
                Some(MatchOp::Equal),
                Some("10.0.0.0/8"),
            )
        };
        assert!(eq_len.check().is_err());
    }

    #[test]
    fn import_interface_rules_match_the_interface_of_the_next_hop() {
        use FilterAction::*;
        let mut l = local();
        l.node_interfaces = vec![
            ("eth0".into(), net("10.0.0.1/24")),
            ("eth1".into(), net("192.168.1.2/24")),
            ("eth1".into(), net("192.168.1.2/28")),
        ];
        let mut p = tor();
        let attrs = |nh: &str| PathAttrs {
            next_hop: Some(nh.parse().unwrap()),
            ..Default::default()
        };
        // No rule names an interface: never looked up.
        assert_eq!(import_interface(&l, &p, &attrs("10.0.0.9")), None);
        let mut rule = r(Reject, Some(MatchOp::In), Some("172.16.0.0/12"));
        rule.interface = Some("eth1*".into());
        p.import_filter = vec![rule].into();
        assert_eq!(
            import_interface(&l, &p, &attrs("10.0.0.9")).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            import_interface(&l, &p, &attrs("192.168.1.5")).as_deref(),
            Some("eth1")
        );
        assert_eq!(import_interface(&l, &p, &attrs("203.0.113.1")), None);
        let via = |nh: &str| import_interface(&l, &p, &attrs(nh));
        assert_eq!(
            check_import(&l, &p, &net("172.16.1.0/24"), via("192.168.1.5").as_deref()),
            Err(Rejection::Filtered)
        );
        assert_eq!(
            check_import(&l, &p, &net("172.16.1.0/24"), via("10.0.0.9").as_deref()),
            Ok(())
        );
        assert_eq!(
            check_import(&l, &p, &net("172.16.1.0/24"), via("203.0.113.1").as_deref()),
            Ok(()),
            "unknown interface: no match"
        );
    }
}
