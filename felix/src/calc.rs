//! The pure half of the dataplane: from the pools, this node's underlay
//! address, the local blocks and the remote blocks (each with the address
//! of the node that owns it), the routes felix wants, the NAT-outgoing
//! sets and whether IP-in-IP is in use. No I/O; [`crate::dataplane`]
//! feeds it and applies the result.
//!
//! Encapsulation follows the pool a remote block belongs to (Calico's
//! rule, `ipipMode` of the IPPool):
//!
//! - `Never`: `<block> via <node>` over the underlay;
//! - `Always`: `<block> via <node> dev tunl0 onlink`;
//! - `CrossSubnet`: direct when the remote node's address lies inside this
//!   node's own underlay subnet, through the tunnel otherwise.
//!
//! A learned route whose next hop is a pod address is not installed
//! ([`via_pod_address`]).
//!
//! A direct route's next hop that is not on a connected subnet (an iBGP
//! mesh peer in another subnet, with nothing to tunnel through: an IPv6
//! pool) is resolved recursively, as Calico's BIRD does (`gateway
//! recursive`): the route goes via the gateway of the kernel's route to
//! that next hop ([`Inputs::resolved`], looked up by the dataplane). The
//! kernel refuses `via` a gateway that is not on a connected subnet.
//!
//! VXLAN pools (`vxlanMode`, IPv4) are routed from the VTEP table, not
//! from BGP (Calico's rule): each other node's [`Vtep`] brings its blocks,
//! and a block of a VXLAN pool goes `via <vtep tunnel addr> dev
//! vxlan.calico onlink` (`Always`, or `CrossSubnet` to a node outside this
//! node's subnet) or `via <node>` (`CrossSubnet` inside it). A block of a
//! VXLAN pool that only BGP announces is not routed at all: the VTEP
//! table wins, and a node without a VTEP has no VXLAN path.
//!
//! IPv6 pools with `vxlanMode` are routed the same way from the IPv6 VTEP
//! table (`via <vtep v6 addr> dev vxlan-v6.calico onlink`; CrossSubnet
//! compares the nodes' IPv6 subnets).
//!
//! A block outside every pool is routed directly, and so is every IPv6
//! block of a pool without VXLAN (IP-in-IP carries IPv4 only). A block that is both local and
//! remote (its affinity moving between nodes) is routed as local, a
//! blackhole, so the pods this node still has stay reachable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use ippool_crd::{EncapMode, PoolConfig};

use crate::routes::{NextHops, Route, RouteTarget, RouteUpdate};
use crate::vxlan::{Vtep, VtepAddr};

/// The bytes an IP-in-IP outer header adds.
pub const IPIP_OVERHEAD: u32 = 20;

/// The bytes VXLAN over IPv4 adds: outer IPv4 (20), UDP (8), VXLAN (8)
/// and the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The bytes VXLAN over IPv6 adds: outer IPv6 (40), UDP (8), VXLAN (8)
/// and the inner Ethernet header (14).
pub const VXLAN6_OVERHEAD: u32 = 70;

/// What the dataplane needs of an IPPool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNetwork,
    pub ipip_mode: EncapMode,
    /// `vxlanMode` (an IPv6 pool's goes over `vxlan-v6.calico`).
    pub vxlan_mode: EncapMode,
    pub nat_outgoing: bool,
}

impl From<&PoolConfig> for Pool {
    fn from(p: &PoolConfig) -> Pool {
        Pool {
            name: p.name.clone(),
            cidr: p.cidr,
            // Calico refuses IP-in-IP on IPv6 pools; be safe if one slips by.
            ipip_mode: if p.cidr.is_ipv4() {
                p.ipip_mode
            } else {
                EncapMode::Never
            },
            vxlan_mode: p.vxlan_mode,
            nat_outgoing: p.nat_outgoing,
        }
    }
}

/// Everything the calculation reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub pools: &'a [Pool],
    /// This node's underlay address and subnet; `None` until known (then
    /// CrossSubnet pools tunnel everything, the safe choice: a direct
    /// route to a node that is not a neighbour does not work).
    pub node: Option<Ipv4Network>,
    pub local_blocks: &'a BTreeSet<IpNetwork>,
    /// Remote block (any prefix learned over BGP) → the address of the
    /// node that owns it, or the next hops of its equal best paths.
    pub remote_blocks: &'a BTreeMap<IpNetwork, NextHops>,
    /// The tunnel device's ifindex, once it exists.
    pub tunnel: Option<u32>,
    /// The other nodes' VTEPs (already checked, see
    /// [`crate::vxlan::usable`]; the first VTEP claiming a block wins).
    pub vteps: &'a [&'a Vtep],
    /// The VXLAN device's ifindex, once it exists and is configured.
    pub vxlan: Option<u32>,
    /// This node's IPv6 underlay address and subnet (IPv6 CrossSubnet).
    pub node6: Option<Ipv6Network>,
    /// The other nodes' IPv6 VTEPs (checked like `vteps`).
    pub vteps6: &'a [&'a Vtep<Ipv6Addr>],
    /// `vxlan-v6.calico`'s ifindex, once it exists and is configured.
    pub vxlan6: Option<u32>,
    /// BGPPeer `reachableBy`: (peer, gateway). Each peer gets a host route
    /// via its gateway, replacing whatever BGP learned for that host.
    pub peer_routes: &'a [(IpAddr, IpAddr)],
    /// BGP next hops that are not on a connected subnet → the gateway of
    /// the kernel's route to them (recursive next-hop resolution). A next
    /// hop not in here is used as it is.
    pub resolved: &'a BTreeMap<IpAddr, IpAddr>,
}

/// The NAT-outgoing sets (IPv4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatSpec {
    /// Pools with `natOutgoing: true` (IPv4 and IPv6): their traffic is
    /// masqueraded...
    pub masq_pools: Vec<IpNetwork>,
    /// ...unless it goes to an address in any pool (of its family).
    pub all_pools: Vec<IpNetwork>,
}

/// The result of the calculation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// One route per block.
    pub routes: BTreeMap<IpNetwork, Route>,
    /// Remote IPv4 blocks that go through the tunnel → their node: the
    /// userspace tunnel's forwarding table.
    pub tunneled: BTreeMap<Ipv4Network, Ipv4Addr>,
    /// Blocks that need the tunnel while it does not exist yet (no route is
    /// programmed for them).
    pub waiting_for_tunnel: Vec<IpNetwork>,
    pub nat: NatSpec,
    /// Some IPv4 pool has `ipipMode` other than `Never`.
    pub ipip_enabled: bool,
    /// Remote blocks that go over VXLAN → the VTEP's tunnel address.
    pub vxlan_routed: BTreeMap<Ipv4Network, Ipv4Addr>,
    /// Blocks of VXLAN pools that are not routed yet: the VXLAN device is
    /// not there, or BGP announces the block but no VTEP holds it.
    pub waiting_for_vxlan: Vec<IpNetwork>,
    /// Some IPv4 pool has `vxlanMode` other than `Never`.
    pub vxlan_enabled: bool,
    /// Remote IPv6 blocks that go over `vxlan-v6.calico` → the VTEP's
    /// IPv6 tunnel address.
    pub vxlan6_routed: BTreeMap<Ipv6Network, Ipv6Addr>,
    /// Some IPv6 pool has `vxlanMode` other than `Never`.
    pub vxlan6_enabled: bool,
}

/// The pool holding `block` (the longest pool prefix containing it).
pub fn pool_of<'a>(pools: &'a [Pool], block: &IpNetwork) -> Option<&'a Pool> {
    pools
        .iter()
        .filter(|p| {
            p.cidr.is_ipv4() == block.is_ipv4()
                && p.cidr.prefix() <= block.prefix()
                && p.cidr.contains(block.network())
        })
        .max_by_key(|p| p.cidr.prefix())
}

/// Whether traffic to a remote block owned by `node_ip` goes through the
/// tunnel.
pub fn needs_tunnel(
    pools: &[Pool],
    block: &IpNetwork,
    node_ip: IpAddr,
    this_node: Option<Ipv4Network>,
) -> bool {
    let IpAddr::V4(node_ip) = node_ip else {
        return false;
    };
    if !block.is_ipv4() {
        return false;
    }
    match pool_of(pools, block).map(|p| p.ipip_mode) {
        None | Some(EncapMode::Never) => false,
        Some(EncapMode::Always) => true,
        Some(EncapMode::CrossSubnet) => !this_node.is_some_and(|n| n.contains(node_ip)),
    }
}

/// The `vxlanMode` of the pool holding `block`, if that pool uses VXLAN
/// (over IPv4 for an IPv4 block, over IPv6 for an IPv6 one).
pub fn vxlan_mode_of(pools: &[Pool], block: &IpNetwork) -> Option<EncapMode> {
    pool_of(pools, block)
        .map(|p| p.vxlan_mode)
        .filter(|m| *m != EncapMode::Never)
}

/// Whether any IPv4 pool uses VXLAN.
pub fn vxlan_enabled(pools: &[Pool]) -> bool {
    pools
        .iter()
        .any(|p| p.cidr.is_ipv4() && p.vxlan_mode != EncapMode::Never)
}

/// Whether any IPv6 pool uses VXLAN (`vxlan-v6.calico`).
pub fn vxlan6_enabled(pools: &[Pool]) -> bool {
    pools
        .iter()
        .any(|p| p.cidr.is_ipv6() && p.vxlan_mode != EncapMode::Never)
}

/// The outer-header bytes pods must leave room for: the largest of the
/// encapsulations in use anywhere (a pod does not know which peers are
/// across a subnet boundary, or in which pool).
pub fn encap_overhead(pools: &[Pool]) -> u32 {
    let ipip = if ipip_enabled(pools) {
        IPIP_OVERHEAD
    } else {
        0
    };
    let vxlan = if vxlan_enabled(pools) {
        VXLAN_OVERHEAD
    } else {
        0
    };
    let vxlan6 = if vxlan6_enabled(pools) {
        VXLAN6_OVERHEAD
    } else {
        0
    };
    ipip.max(vxlan).max(vxlan6)
}

/// Whether any IPv4 pool uses IP-in-IP.
pub fn ipip_enabled(pools: &[Pool]) -> bool {
    pools
        .iter()
        .any(|p| p.cidr.is_ipv4() && p.ipip_mode != EncapMode::Never)
}

/// The largest MTU a veth (or any Ethernet-like device) accepts. The
/// loopback device has 65536, which a pod interface cannot take.
pub const MAX_DEVICE_MTU: u32 = 65535;

/// The MTU for pod interfaces (and the tunnel devices): the underlay's,
/// less `overhead` (see [`encap_overhead`]), and never more than a device
/// can take.
pub fn pod_mtu(underlay_mtu: u32, overhead: u32) -> u32 {
    underlay_mtu.saturating_sub(overhead).min(MAX_DEVICE_MTU)
}

pub fn nat_spec(pools: &[Pool]) -> NatSpec {
    let mut masq: Vec<IpNetwork> = pools
        .iter()
        .filter(|p| p.nat_outgoing)
        .map(|p| p.cidr)
        .collect();
    let mut all: Vec<IpNetwork> = pools.iter().map(|p| p.cidr).collect();
    masq.sort();
    masq.dedup();
    all.sort();
    all.dedup();
    NatSpec {
        masq_pools: masq,
        all_pools: all,
    }
}

/// Whether `gateway` is a pod address (inside a pool or one of this
/// node's blocks). No route learned from BGP is installed through one:
/// traffic would go to whatever pod holds, or later gets, that address.
/// bird refuses such next hops at import already (it knows the session);
/// this keeps felix safe on its own.
pub fn via_pod_address(inp: Inputs<'_>, gateway: IpAddr) -> bool {
    inp.pools
        .iter()
        .map(|p| &p.cidr)
        .chain(inp.local_blocks)
        .any(|n| n.contains(gateway))
}

/// Every next hop of the remote blocks: what the dataplane resolves
/// (the connected ones resolve to nothing).
pub fn next_hops(remote_blocks: &BTreeMap<IpNetwork, NextHops>) -> BTreeSet<IpAddr> {
    remote_blocks
        .values()
        .flat_map(|h| h.as_slice().iter().copied())
        .collect()
}

/// `hops` with each next hop replaced by the gateway it resolves to
/// ([`Inputs::resolved`]), unless that gateway is of the other family or
/// a pod address; duplicates merged (two next hops behind one gateway).
fn resolve(inp: Inputs<'_>, hops: NextHops) -> NextHops {
    if inp.resolved.is_empty() {
        return hops;
    }
    let via = |nh: IpAddr| match inp.resolved.get(&nh) {
        Some(&gw) if gw.is_ipv4() == nh.is_ipv4() && !via_pod_address(inp, gw) => gw,
        _ => nh,
    };
    NextHops::new(hops.as_slice().iter().map(|&nh| via(nh))).unwrap_or(hops)
}

/// The whole calculation.
pub fn desired(inp: Inputs<'_>) -> Desired {
    let mut out = Desired {
        nat: nat_spec(inp.pools),
        ipip_enabled: ipip_enabled(inp.pools),
        vxlan_enabled: vxlan_enabled(inp.pools),
        vxlan6_enabled: vxlan6_enabled(inp.pools),
        ..Desired::default()
    };
    let mut bgp_vxlan = Vec::new();
    for block in inp.local_blocks {
        out.routes.insert(*block, Route::blackhole(*block));
    }
    for (block, hops) in inp.remote_blocks {
        if inp.local_blocks.contains(block) {
            continue;
        }
        // Next hops of the other family, or pod addresses, are never
        // used; a route left with none is not installed.
        let Some(hops) =
            hops.filter(|nh| nh.is_ipv4() == block.is_ipv4() && !via_pod_address(inp, nh))
        else {
            continue;
        };
        // VXLAN pools are routed from the VTEP table below.
        if vxlan_mode_of(inp.pools, block).is_some() {
            bgp_vxlan.push(*block);
            continue;
        }
        // A tunnel goes to one node: an ECMP set behind a pool's block
        // (which one node owns) takes its first next hop.
        let node = &hops.first();
        if !needs_tunnel(inp.pools, block, *node, inp.node) {
            // Several next hops (two ToRs advertising one prefix): one
            // multipath route over all of them. Each through the gateway
            // it resolves to, when it is not a neighbour.
            out.routes
                .insert(*block, Route::via_all(*block, resolve(inp, hops)));
            continue;
        }
        if let (IpNetwork::V4(b), IpAddr::V4(n)) = (block, node) {
            out.tunneled.insert(*b, *n);
        }
        match inp.tunnel {
            Some(dev) => {
                out.routes.insert(
                    *block,
                    Route {
                        dst: *block,
                        target: RouteTarget::Tunnel {
                            dev,
                            gateway: *node,
                            onlink: true,
                        },
                        metric: 0,
                    },
                );
            }
            None => out.waiting_for_tunnel.push(*block),
        }
    }
    vxlan_routes(inp, &mut out);
    for block in bgp_vxlan {
        if !out.routes.contains_key(&block) && !out.waiting_for_vxlan.contains(&block) {
            out.waiting_for_vxlan.push(block);
        }
    }
    for &(peer, via) in inp.peer_routes {
        if peer.is_ipv4() != via.is_ipv4() {
            continue;
        }
        let dst = IpNetwork::from(peer);
        out.tunneled.retain(|b, _| IpNetwork::V4(*b) != dst);
        out.routes.insert(dst, Route::via(dst, via));
    }
    out
}

/// The routes of VXLAN pools' blocks, from the VTEPs (IPv4 and IPv6).
fn vxlan_routes(inp: Inputs<'_>, out: &mut Desired) {
    let node = inp.node;
    for (b, via) in vxlan_routes_of(
        inp,
        inp.vteps,
        |ip| node.is_some_and(|n| n.contains(ip)),
        inp.vxlan,
        out,
    ) {
        if let IpNetwork::V4(b4) = b {
            out.vxlan_routed.insert(b4, via);
        }
    }
    let node6 = inp.node6;
    for (b, via) in vxlan_routes_of(
        inp,
        inp.vteps6,
        |ip| node6.is_some_and(|n| n.contains(ip)),
        inp.vxlan6,
        out,
    ) {
        if let IpNetwork::V6(b6) = b {
            out.vxlan6_routed.insert(b6, via);
        }
    }
}

/// The routes of one family's VXLAN blocks: direct within the subnet for
/// CrossSubnet (`same_subnet`), else over the device `dev` (waiting while
/// it is not there). Returns the blocks that go over VXLAN with their
/// VTEP's tunnel address.
fn vxlan_routes_of<A: VtepAddr>(
    inp: Inputs<'_>,
    vteps: &[&Vtep<A>],
    same_subnet: impl Fn(A) -> bool,
    dev: Option<u32>,
    out: &mut Desired,
) -> Vec<(IpNetwork, A)> {
    let v4 = A::HOST_PREFIX == 32;
    let mut claimed: BTreeSet<IpNetwork> = BTreeSet::new();
    let mut routed = Vec::new();
    for vtep in vteps {
        for block in &vtep.blocks {
            if block.is_ipv4() != v4 {
                continue;
            }
            if inp.local_blocks.contains(block) || !claimed.insert(*block) {
                continue;
            }
            let Some(mode) = vxlan_mode_of(inp.pools, block) else {
                // Not a VXLAN pool's: BGP routes it, if anyone.
                continue;
            };
            let node_ip: IpAddr = vtep.node_ip.into();
            if via_pod_address(inp, node_ip) {
                continue;
            }
            if mode == EncapMode::CrossSubnet && same_subnet(vtep.node_ip) {
                out.routes.insert(*block, Route::via(*block, node_ip));
                continue;
            }
            routed.push((*block, vtep.tunnel_addr));
            match dev {
                Some(dev) => {
                    out.routes.insert(
                        *block,
                        Route {
                            dst: *block,
                            target: RouteTarget::Tunnel {
                                dev,
                                gateway: vtep.tunnel_addr.into(),
                                onlink: true,
                            },
                            metric: 0,
                        },
                    );
                }
                None => out.waiting_for_vxlan.push(*block),
            }
        }
    }
    routed
}

/// The updates that turn `old` routes into `new` ones.
pub fn route_updates(
    old: &BTreeMap<IpNetwork, Route>,
    new: &BTreeMap<IpNetwork, Route>,
) -> Vec<RouteUpdate> {
    let mut out: Vec<RouteUpdate> = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .map(|k| RouteUpdate::Remove(*k))
        .collect();
    out.extend(
        new.iter()
            .filter(|(k, r)| old.get(k) != Some(r))
            .map(|(_, r)| RouteUpdate::Set(r.clone())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool(cidr: &str, mode: EncapMode, nat: bool) -> Pool {
        Pool {
            name: cidr.replace(['/', '.', ':'], "-"),
            cidr: net(cidr),
            ipip_mode: mode,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: nat,
        }
    }

    fn vxlan_pool(cidr: &str, mode: EncapMode) -> Pool {
        Pool {
            vxlan_mode: mode,
            ..pool(cidr, EncapMode::Never, false)
        }
    }

    const TUN: u32 = 9;
    const VX: u32 = 11;

    struct Case {
        pools: Vec<Pool>,
        local: BTreeSet<IpNetwork>,
        remote: BTreeMap<IpNetwork, NextHops>,
        node: Option<Ipv4Network>,
        tunnel: Option<u32>,
        vteps: Vec<Vtep>,
        vxlan: Option<u32>,
        node6: Option<Ipv6Network>,
        vteps6: Vec<Vtep<Ipv6Addr>>,
        vxlan6: Option<u32>,
        peer_routes: Vec<(IpAddr, IpAddr)>,
        resolved: BTreeMap<IpAddr, IpAddr>,
    }

    const VX6: u32 = 12;

    impl Case {
        fn new(pools: Vec<Pool>) -> Case {
            Case {
                pools,
                local: BTreeSet::new(),
                remote: BTreeMap::new(),
                node: Some("172.30.0.1/24".parse().unwrap()),
                tunnel: Some(TUN),
                vteps: Vec::new(),
                vxlan: Some(VX),
                node6: Some("fd00:30::1/64".parse().unwrap()),
                vteps6: Vec::new(),
                vxlan6: Some(VX6),
                peer_routes: Vec::new(),
                resolved: BTreeMap::new(),
            }
        }

        /// The kernel's route to next hop `nh` goes via `gw`.
        fn resolved(mut self, nh: &str, gw: &str) -> Case {
            self.resolved.insert(ip(nh), ip(gw));
            self
        }

        /// An IPv6 VTEP.
        fn vtep6(mut self, name: &str, node_ip: &str, tunnel: &str, blocks: &[&str]) -> Case {
            let n = self.vteps6.len() as u8 + 1;
            self.vteps6.push(Vtep {
                node: name.into(),
                node_ip: node_ip.parse().unwrap(),
                tunnel_addr: tunnel.parse().unwrap(),
                mac: [0x66, 0, 0, 0, 6, n],
                blocks: blocks.iter().map(|b| net(b)).collect(),
            });
            self
        }

        /// Node `name` at `node_ip`, VTEP address `tunnel`, with `blocks`.
        fn vtep(mut self, name: &str, node_ip: &str, tunnel: &str, blocks: &[&str]) -> Case {
            let n = self.vteps.len() as u8 + 1;
            self.vteps.push(Vtep {
                node: name.into(),
                node_ip: node_ip.parse().unwrap(),
                tunnel_addr: tunnel.parse().unwrap(),
                mac: [0x66, 0, 0, 0, 0, n],
                blocks: blocks.iter().map(|b| net(b)).collect(),
            });
            self
        }

        fn remote(mut self, block: &str, node: &str) -> Case {
            self.remote.insert(net(block), node.parse().unwrap());
            self
        }

        fn run(&self) -> Desired {
            let vteps: Vec<&Vtep> = self.vteps.iter().collect();
            let vteps6: Vec<&Vtep<Ipv6Addr>> = self.vteps6.iter().collect();
            desired(Inputs {
                pools: &self.pools,
                node: self.node,
                local_blocks: &self.local,
                remote_blocks: &self.remote,
                tunnel: self.tunnel,
                vteps: &vteps,
                vxlan: self.vxlan,
                node6: self.node6,
                vteps6: &vteps6,
                vxlan6: self.vxlan6,
                peer_routes: &self.peer_routes,
                resolved: &self.resolved,
            })
        }
    }

    fn vxlan_route(block: &str, vtep: &str) -> Route {
        Route {
            dst: net(block),
            target: RouteTarget::Tunnel {
                dev: VX,
                gateway: ip(vtep),
                onlink: true,
            },
            metric: 0,
        }
    }

    #[test]
    fn a_reachable_by_peer_gets_a_host_route_via_its_gateway_over_bgps() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .remote("10.0.9.254/32", "172.30.0.7")
            .remote("10.65.1.0/26", "172.30.0.7");
        c.peer_routes = vec![
            (ip("10.0.9.254"), ip("172.30.0.254")),
            (ip("fd00:9::254"), ip("fd00:30::254")),
            // Mixed families are never installed.
            (ip("10.0.9.253"), ip("fd00:30::254")),
        ];
        let d = c.run();
        assert_eq!(
            d.routes[&net("10.0.9.254/32")],
            Route::via(net("10.0.9.254/32"), ip("172.30.0.254"))
        );
        assert_eq!(
            d.routes[&net("fd00:9::254/128")],
            Route::via(net("fd00:9::254/128"), ip("fd00:30::254"))
        );
        assert!(!d.routes.contains_key(&net("10.0.9.253/32")));
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.7"))
        );
    }

    #[test]
    fn an_address_borrowed_in_a_vxlan_pool_goes_to_the_borrowers_vtep() {
        // n1 owns 10.65.1.0/26; n2 borrowed 10.65.1.9 in it. This node
        // owns 10.65.0.0/26 and n2 borrowed 10.65.0.5 there too.
        let mut c = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::Always)])
            .vtep("n1", "172.30.0.2", "10.65.1.0", &["10.65.1.0/26"])
            .vtep(
                "n2",
                "172.30.1.1",
                "10.65.2.0",
                &["10.65.2.0/26", "10.65.1.9/32", "10.65.0.5/32"],
            );
        c.local.insert(net("10.65.0.0/26"));
        let d = c.run();
        assert_eq!(
            d.routes[&net("10.65.1.9/32")],
            vxlan_route("10.65.1.9/32", "10.65.2.0")
        );
        assert_eq!(
            d.routes[&net("10.65.0.5/32")],
            vxlan_route("10.65.0.5/32", "10.65.2.0")
        );
        assert_eq!(
            d.routes[&net("10.65.0.0/26")],
            Route::blackhole(net("10.65.0.0/26"))
        );
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            vxlan_route("10.65.1.0/26", "10.65.1.0")
        );
    }

    #[test]
    fn vxlan_always_routes_every_vtep_block_over_the_device() {
        let d = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::Always)])
            .vtep(
                "n1",
                "172.30.0.2",
                "10.65.1.0",
                &["10.65.1.0/26", "10.65.9.0/26"],
            )
            .vtep("n2", "172.30.1.1", "10.65.2.0", &["10.65.2.0/26"])
            .run();
        assert_eq!(d.routes.len(), 3);
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            vxlan_route("10.65.1.0/26", "10.65.1.0")
        );
        assert_eq!(
            d.routes[&net("10.65.9.0/26")],
            vxlan_route("10.65.9.0/26", "10.65.1.0")
        );
        assert_eq!(
            d.routes[&net("10.65.2.0/26")],
            vxlan_route("10.65.2.0/26", "10.65.2.0")
        );
        assert_eq!(d.vxlan_routed.len(), 3);
        assert!(d.vxlan_enabled && !d.ipip_enabled);
        assert!(d.tunneled.is_empty() && d.waiting_for_vxlan.is_empty());
    }

    #[test]
    fn vxlan_cross_subnet_is_direct_inside_the_subnet_and_vxlan_outside() {
        let d = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::CrossSubnet)])
            .vtep("n1", "172.30.0.2", "10.65.1.0", &["10.65.1.0/26"])
            .vtep("n2", "172.30.1.1", "10.65.2.0", &["10.65.2.0/26"])
            .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.2"))
        );
        assert_eq!(
            d.routes[&net("10.65.2.0/26")],
            vxlan_route("10.65.2.0/26", "10.65.2.0")
        );
        assert_eq!(d.vxlan_routed.len(), 1);
        // Own subnet unknown: everything over VXLAN.
        let mut c = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::CrossSubnet)]).vtep(
            "n1",
            "172.30.0.2",
            "10.65.1.0",
            &["10.65.1.0/26"],
        );
        c.node = None;
        assert_eq!(
            c.run().routes[&net("10.65.1.0/26")],
            vxlan_route("10.65.1.0/26", "10.65.1.0")
        );
    }

    #[test]
    fn vteps_do_not_route_blocks_of_pools_without_vxlan() {
        // Never pool: the VTEP's blocks are BGP's business.
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .vtep(
                "n1",
                "172.30.0.2",
                "10.65.1.0",
                &["10.65.1.0/26", "10.99.0.0/26"],
            )
            .remote("10.65.1.0/26", "172.30.0.2")
            .run();
        assert_eq!(d.routes.len(), 1);
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.2"))
        );
        assert!(!d.vxlan_enabled && d.vxlan_routed.is_empty());
    }

    #[test]
    fn bgp_blocks_of_vxlan_pools_are_ignored_the_vtep_table_wins() {
        let d = Case::new(vec![
            vxlan_pool("10.65.0.0/16", EncapMode::Always),
            pool("10.66.0.0/16", EncapMode::Always, false),
        ])
        // BGP announces a VXLAN pool's block whose node has a VTEP, one
        // whose node has none, and an IPIP pool's block.
        .remote("10.65.1.0/26", "172.30.0.2")
        .remote("10.65.7.0/26", "172.30.0.7")
        .remote("10.66.1.0/26", "172.30.0.2")
        .vtep("n1", "172.30.0.2", "10.65.1.0", &["10.65.1.0/26"])
        .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            vxlan_route("10.65.1.0/26", "10.65.1.0")
        );
        assert!(!d.routes.contains_key(&net("10.65.7.0/26")), "{d:?}");
        // ...and said so.
        assert_eq!(d.waiting_for_vxlan, vec![net("10.65.7.0/26")]);
        assert!(d.tunneled.keys().all(|b| b.to_string() == "10.66.1.0/26"));
        assert_eq!(
            d.routes[&net("10.66.1.0/26")],
            tunnel_route("10.66.1.0/26", "172.30.0.2")
        );
    }

    #[test]
    fn a_vtep_leaving_takes_its_routes_and_local_blocks_win() {
        let mut c = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::Always)])
            .vtep(
                "n1",
                "172.30.0.2",
                "10.65.1.0",
                &["10.65.1.0/26", "10.65.0.0/26"],
            )
            .vtep(
                "n2",
                "172.30.1.1",
                "10.65.2.0",
                &["10.65.2.0/26", "10.65.1.0/26"],
            );
        c.local.insert(net("10.65.0.0/26"));
        let before = c.run();
        assert_eq!(
            before.routes[&net("10.65.0.0/26")],
            Route::blackhole(net("10.65.0.0/26"))
        );
        // The first VTEP to claim a block keeps it.
        assert_eq!(
            before.routes[&net("10.65.1.0/26")],
            vxlan_route("10.65.1.0/26", "10.65.1.0")
        );
        c.vteps.remove(0);
        let after = c.run();
        let u = route_updates(&before.routes, &after.routes);
        assert_eq!(
            u,
            vec![RouteUpdate::Set(vxlan_route("10.65.1.0/26", "10.65.2.0"))]
        );
        c.vteps.clear();
        let none = c.run();
        let u = route_updates(&after.routes, &none.routes);
        assert_eq!(
            u,
            vec![
                RouteUpdate::Remove(net("10.65.1.0/26")),
                RouteUpdate::Remove(net("10.65.2.0/26"))
            ]
        );
    }

    #[test]
    fn vxlan_blocks_wait_for_the_device_and_ipv4_vteps_never_route_ipv6_blocks() {
        let mut c = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::Always)]).vtep(
            "n1",
            "172.30.1.2",
            "10.65.1.0",
            &["10.65.1.0/26", "fd00::/122"],
        );
        c.vxlan = None;
        let d = c.run();
        assert!(d.routes.is_empty(), "{d:?}");
        assert_eq!(d.waiting_for_vxlan, vec![net("10.65.1.0/26")]);
        let mut cfg = PoolConfig {
            name: "v6".into(),
            cidr: net("fd00:65::/48"),
            block_size: 122,
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Always,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            node_selector: ippool_crd::Selector::all(),
            allowed_uses: vec![ippool_crd::AllowedUse::Workload],
            namespace_selector: None,
            assignment_mode: ippool_crd::AssignmentMode::Automatic,
        };
        assert_eq!(Pool::from(&cfg).vxlan_mode, EncapMode::Always);
        cfg.cidr = net("10.65.0.0/16");
        assert_eq!(Pool::from(&cfg).vxlan_mode, EncapMode::Always);
    }

    fn vxlan6_route(block: &str, vtep: &str) -> Route {
        Route {
            dst: net(block),
            target: RouteTarget::Tunnel {
                dev: VX6,
                gateway: ip(vtep),
                onlink: true,
            },
            metric: 0,
        }
    }

    #[test]
    fn ipv6_vxlan_pools_route_over_the_v6_device_and_cross_subnet_compares_v6_subnets() {
        let pools = vec![
            vxlan_pool("10.65.0.0/16", EncapMode::Always),
            vxlan_pool("fd00:65::/48", EncapMode::CrossSubnet),
        ];
        let d = Case::new(pools.clone())
            .vtep6("n1", "fd00:30::2", "fd00:65::1:0", &["fd00:65::1:0/122"])
            .vtep6(
                "n2",
                "fd00:31::2",
                "fd00:65::2:0",
                &["fd00:65::2:0/122", "10.65.2.0/26"],
            )
            // BGP announces v6 blocks too: the VTEP table wins.
            .remote("fd00:65::1:0/122", "fd00:30::2")
            .remote("fd00:65::3:0/122", "fd00:31::3")
            .run();
        assert_eq!(
            d.routes[&net("fd00:65::1:0/122")],
            Route::via(net("fd00:65::1:0/122"), ip("fd00:30::2")),
            "same IPv6 subnet: direct"
        );
        assert_eq!(
            d.routes[&net("fd00:65::2:0/122")],
            vxlan6_route("fd00:65::2:0/122", "fd00:65::2:0")
        );
        assert!(
            !d.routes.contains_key(&net("10.65.2.0/26")),
            "an IPv6 VTEP routes no IPv4 block"
        );
        assert_eq!(d.vxlan6_routed.len(), 1);
        assert!(d.vxlan6_enabled && d.vxlan_enabled);
        assert_eq!(d.waiting_for_vxlan, vec![net("fd00:65::3:0/122")]);
        assert_eq!(encap_overhead(&pools), VXLAN6_OVERHEAD);
        assert_eq!(encap_overhead(&pools[..1]), VXLAN_OVERHEAD);

        // No device yet: the VXLAN block waits.
        let mut c = Case::new(vec![vxlan_pool("fd00:65::/48", EncapMode::Always)]).vtep6(
            "n1",
            "fd00:30::2",
            "fd00:65::1:0",
            &["fd00:65::1:0/122"],
        );
        c.vxlan6 = None;
        let d = c.run();
        assert!(d.routes.is_empty(), "{d:?}");
        assert_eq!(d.waiting_for_vxlan, vec![net("fd00:65::1:0/122")]);
        assert!(!d.vxlan_enabled && d.vxlan6_enabled);
    }

    #[test]
    fn switching_a_pool_from_vxlan_always_to_never_moves_routes_to_bgp() {
        let mut c = Case::new(vec![vxlan_pool("10.65.0.0/16", EncapMode::Always)])
            .vtep("n1", "172.30.0.2", "10.65.1.0", &["10.65.1.0/26"])
            .remote("10.65.1.0/26", "172.30.0.2");
        let before = c.run();
        c.pools[0].vxlan_mode = EncapMode::Never;
        let after = c.run();
        assert_eq!(
            route_updates(&before.routes, &after.routes),
            vec![RouteUpdate::Set(Route::via(
                net("10.65.1.0/26"),
                ip("172.30.0.2")
            ))]
        );
    }

    #[test]
    fn pod_mtu_leaves_room_for_the_largest_encapsulation_in_use() {
        let ipip = pool("10.65.0.0/16", EncapMode::Always, false);
        let vx = vxlan_pool("10.66.0.0/16", EncapMode::CrossSubnet);
        assert_eq!(encap_overhead(&[]), 0);
        assert_eq!(encap_overhead(std::slice::from_ref(&ipip)), 20);
        assert_eq!(encap_overhead(std::slice::from_ref(&vx)), 50);
        assert_eq!(encap_overhead(&[ipip, vx]), 50);
        assert_eq!(pod_mtu(1500, VXLAN_OVERHEAD), 1450);
    }

    fn tunnel_route(block: &str, node: &str) -> Route {
        Route {
            dst: net(block),
            target: RouteTarget::Tunnel {
                dev: TUN,
                gateway: ip(node),
                onlink: true,
            },
            metric: 0,
        }
    }

    #[test]
    fn a_learned_route_via_a_pod_address_is_never_installed() {
        // Issue 19 item 5: bird refuses such next hops, and felix does not
        // rely on it.
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .remote("192.168.9.0/24", "10.65.1.5")
            .remote("192.168.8.0/24", "10.66.0.5")
            .remote("192.168.7.0/24", "172.30.0.2");
        c.local.insert(net("10.66.0.0/26"));
        let d = c.run();
        assert!(
            !d.routes.contains_key(&net("192.168.9.0/24")),
            "via a pool address"
        );
        assert!(
            !d.routes.contains_key(&net("192.168.8.0/24")),
            "via a local block"
        );
        assert_eq!(
            d.routes[&net("192.168.7.0/24")],
            Route::via(net("192.168.7.0/24"), ip("172.30.0.2"))
        );
    }

    #[test]
    fn equal_best_paths_become_one_multipath_route_without_the_unusable_next_hops() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            // Two ToRs advertise one prefix.
            .remote("198.51.100.0/24", "172.30.0.3,172.30.0.2")
            // One of three next hops is a pod address: left out.
            .remote("198.51.101.0/24", "172.30.0.2,10.65.3.3,172.30.0.4")
            // Left with one usable next hop: a plain route.
            .remote("198.51.102.0/24", "172.30.0.2,10.65.3.3")
            // Only unusable ones (a pod address, the other family): none.
            .remote("198.51.103.0/24", "10.65.3.3,fd00::1")
            .remote("2001:db8::/32", "fd00::1,fd00::2")
            // A pool's block behind two next hops: the tunnel goes to one.
            .remote("10.65.1.0/26", "172.30.0.7,172.30.0.6");
        c.tunnel = Some(TUN);
        let d = c.run();
        assert_eq!(
            d.routes[&net("198.51.100.0/24")].target,
            RouteTarget::Multipath("172.30.0.2,172.30.0.3".parse().unwrap())
        );
        assert_eq!(
            d.routes[&net("198.51.101.0/24")].target,
            RouteTarget::Multipath("172.30.0.2,172.30.0.4".parse().unwrap())
        );
        assert_eq!(
            d.routes[&net("198.51.102.0/24")],
            Route::via(net("198.51.102.0/24"), ip("172.30.0.2"))
        );
        assert!(!d.routes.contains_key(&net("198.51.103.0/24")));
        assert_eq!(
            d.routes[&net("2001:db8::/32")].target,
            RouteTarget::Multipath("fd00::1,fd00::2".parse().unwrap())
        );
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            tunnel_route("10.65.1.0/26", "172.30.0.6")
        );
    }

    #[test]
    fn never_pool_routes_every_remote_block_directly() {
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .remote("10.65.1.0/26", "172.30.0.2")
            .remote("10.65.2.0/26", "172.30.1.1")
            .run();
        assert_eq!(
            d.routes[&net("10.65.2.0/26")],
            Route::via(net("10.65.2.0/26"), ip("172.30.1.1"))
        );
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.2"))
        );
        assert!(d.tunneled.is_empty());
        assert!(!d.ipip_enabled);
    }

    #[test]
    fn always_pool_tunnels_even_same_subnet_nodes() {
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            .remote("10.65.1.0/26", "172.30.0.2")
            .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            tunnel_route("10.65.1.0/26", "172.30.0.2")
        );
        assert_eq!(
            d.tunneled[&"10.65.1.0/26".parse().unwrap()],
            "172.30.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert!(d.ipip_enabled);
    }

    #[test]
    fn cross_subnet_is_direct_inside_the_subnet_and_tunnelled_outside() {
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::CrossSubnet, false)])
            .remote("10.65.1.0/26", "172.30.0.2")
            .remote("10.65.2.0/26", "172.30.1.1")
            .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.2"))
        );
        assert_eq!(
            d.routes[&net("10.65.2.0/26")],
            tunnel_route("10.65.2.0/26", "172.30.1.1")
        );
        assert_eq!(d.tunneled.len(), 1);
    }

    #[test]
    fn cross_subnet_without_a_known_own_subnet_tunnels() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::CrossSubnet, false)])
            .remote("10.65.1.0/26", "172.30.0.2");
        c.node = None;
        assert_eq!(
            c.run().routes[&net("10.65.1.0/26")],
            tunnel_route("10.65.1.0/26", "172.30.0.2")
        );
    }

    #[test]
    fn block_in_no_pool_is_direct() {
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            .remote("10.99.0.0/26", "172.30.1.1")
            .run();
        assert_eq!(
            d.routes[&net("10.99.0.0/26")],
            Route::via(net("10.99.0.0/26"), ip("172.30.1.1"))
        );
    }

    #[test]
    fn mode_is_per_pool() {
        let d = Case::new(vec![
            pool("10.65.0.0/16", EncapMode::Always, false),
            pool("10.66.0.0/16", EncapMode::Never, false),
        ])
        .remote("10.65.1.0/26", "172.30.1.1")
        .remote("10.66.1.0/26", "172.30.1.1")
        .run();
        assert!(matches!(
            d.routes[&net("10.65.1.0/26")].target,
            RouteTarget::Tunnel { .. }
        ));
        assert!(matches!(
            d.routes[&net("10.66.1.0/26")].target,
            RouteTarget::Gateway(_)
        ));
    }

    #[test]
    fn a_next_hop_off_every_connected_subnet_goes_via_the_gateway_of_its_route() {
        // node-1 in another subnet, IPv6 (no tunnel) and IPv4 Never: both
        // via the router the kernel routes node-1 through, as BIRD's
        // `gateway recursive` installs them.
        let d = Case::new(vec![
            pool("fd00:65::/48", EncapMode::Never, false),
            pool("10.65.0.0/16", EncapMode::Never, false),
        ])
        .remote("fd00:65::40/122", "fd00:30:1::1")
        .remote("fd00:65::80/122", "fd00:30::2")
        .remote("10.65.1.0/26", "172.30.1.1")
        .resolved("fd00:30:1::1", "fd00:30::fe")
        .resolved("172.30.1.1", "172.30.0.254")
        .run();
        assert_eq!(
            d.routes[&net("fd00:65::40/122")],
            Route::via(net("fd00:65::40/122"), ip("fd00:30::fe"))
        );
        // A neighbour's next hop is not in the table: used as it is.
        assert_eq!(
            d.routes[&net("fd00:65::80/122")],
            Route::via(net("fd00:65::80/122"), ip("fd00:30::2"))
        );
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.0.254"))
        );
        assert_eq!(
            next_hops(
                &Case::new(Vec::new())
                    .remote("fd00:65::40/122", "fd00:30:1::1")
                    .remote("10.65.1.0/26", "172.30.1.1")
                    .remote("10.65.2.0/26", "172.30.1.1")
                    .remote
            )
            .len(),
            2
        );
    }

    #[test]
    fn resolution_keeps_tunnels_merges_ecmp_and_never_goes_via_a_pod() {
        // IP-in-IP keeps the node itself as the onlink next hop.
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            .remote("10.65.1.0/26", "172.30.1.1")
            .resolved("172.30.1.1", "172.30.0.254")
            .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            tunnel_route("10.65.1.0/26", "172.30.1.1")
        );
        // Two next hops behind one gateway: one plain route.
        let mut c = Case::new(Vec::new())
            .resolved("172.30.1.1", "172.30.0.254")
            .resolved("172.30.1.2", "172.30.0.254");
        c.remote.insert(
            net("198.51.100.0/24"),
            "172.30.1.1,172.30.1.2".parse().unwrap(),
        );
        let d = c.run();
        assert_eq!(
            d.routes[&net("198.51.100.0/24")],
            Route::via(net("198.51.100.0/24"), ip("172.30.0.254"))
        );
        // A gateway inside a pool, or of the other family, is not used.
        let d = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .remote("10.65.1.0/26", "172.30.1.1")
            .remote("fd00:65::40/122", "fd00:30:1::1")
            .resolved("172.30.1.1", "10.65.9.9")
            .resolved("fd00:30:1::1", "172.30.0.254")
            .run();
        assert_eq!(
            d.routes[&net("10.65.1.0/26")],
            Route::via(net("10.65.1.0/26"), ip("172.30.1.1"))
        );
        assert_eq!(
            d.routes[&net("fd00:65::40/122")],
            Route::via(net("fd00:65::40/122"), ip("fd00:30:1::1"))
        );
    }

    #[test]
    fn ipv6_blocks_are_always_direct() {
        let d = Case::new(vec![pool("fd00:65::/48", EncapMode::Always, false)])
            .remote("fd00:65::40/122", "fd00:ff::2")
            .run();
        assert_eq!(
            d.routes[&net("fd00:65::40/122")],
            Route::via(net("fd00:65::40/122"), ip("fd00:ff::2"))
        );
        assert!(!d.ipip_enabled);
    }

    #[test]
    fn local_block_is_a_blackhole_and_wins_over_remote() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            .remote("10.65.0.0/26", "172.30.1.1");
        c.local.insert(net("10.65.0.0/26"));
        let d = c.run();
        assert_eq!(
            d.routes[&net("10.65.0.0/26")],
            Route::blackhole(net("10.65.0.0/26"))
        );
        assert!(d.tunneled.is_empty());
    }

    #[test]
    fn without_the_tunnel_device_tunnelled_blocks_wait() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Always, false)])
            .remote("10.65.1.0/26", "172.30.1.1");
        c.tunnel = None;
        let d = c.run();
        assert!(d.routes.is_empty());
        assert_eq!(d.waiting_for_tunnel, vec![net("10.65.1.0/26")]);
        // The forwarding table is ready for when the device comes.
        assert_eq!(d.tunneled.len(), 1);
    }

    #[test]
    fn switching_a_pool_mode_moves_routes_in_one_update() {
        let mut c = Case::new(vec![pool("10.65.0.0/16", EncapMode::Never, false)])
            .remote("10.65.1.0/26", "172.30.1.1")
            .remote("10.65.2.0/26", "172.30.0.2");
        let before = c.run();
        c.pools[0].ipip_mode = EncapMode::CrossSubnet;
        let after = c.run();
        let u = route_updates(&before.routes, &after.routes);
        assert_eq!(
            u,
            vec![RouteUpdate::Set(tunnel_route("10.65.1.0/26", "172.30.1.1"))]
        );
        c.pools[0].ipip_mode = EncapMode::Always;
        let always = c.run();
        assert_eq!(
            route_updates(&after.routes, &always.routes),
            vec![RouteUpdate::Set(tunnel_route("10.65.2.0/26", "172.30.0.2"))]
        );
        assert!(route_updates(&always.routes, &always.routes).is_empty());
    }

    #[test]
    fn withdrawn_blocks_are_removed() {
        let c = Case::new(vec![]).remote("10.65.1.0/26", "172.30.1.1");
        let before = c.run();
        let after = Case::new(vec![]).run();
        assert_eq!(
            route_updates(&before.routes, &after.routes),
            vec![RouteUpdate::Remove(net("10.65.1.0/26"))]
        );
    }

    #[test]
    fn nat_sets_hold_nat_pools_and_all_pools() {
        let pools = vec![
            pool("10.65.0.0/16", EncapMode::Never, true),
            pool("10.66.0.0/16", EncapMode::Never, false),
            pool("fd00:65::/48", EncapMode::Never, true),
        ];
        let n = nat_spec(&pools);
        let nets = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpNetwork>>()
        };
        // Both families; the table keeps them apart (ip / ip6 rules).
        assert_eq!(n.masq_pools, nets(&["10.65.0.0/16", "fd00:65::/48"]));
        assert_eq!(
            n.all_pools,
            nets(&["10.65.0.0/16", "10.66.0.0/16", "fd00:65::/48"])
        );
    }

    #[test]
    fn pod_mtu_subtracts_the_outer_header_only_with_ipip() {
        let ipip = |m| encap_overhead(&[pool("10.65.0.0/16", m, false)]);
        assert_eq!(pod_mtu(1500, ipip(EncapMode::Always)), 1480);
        assert_eq!(pod_mtu(1500, ipip(EncapMode::Never)), 1500);
        assert_eq!(pod_mtu(9000, ipip(EncapMode::CrossSubnet)), 8980);
    }

    #[test]
    fn pod_mtu_never_exceeds_what_a_veth_takes() {
        // A node address on lo (MTU 65536) must not break pod creation.
        assert_eq!(pod_mtu(65536, 0), 65535);
        assert_eq!(pod_mtu(65536, IPIP_OVERHEAD), 65516);
    }

    #[test]
    fn nested_pools_take_the_most_specific() {
        let pools = vec![
            pool("10.0.0.0/8", EncapMode::Never, false),
            pool("10.65.0.0/16", EncapMode::Always, false),
        ];
        assert_eq!(
            pool_of(&pools, &net("10.65.3.0/26")).unwrap().cidr,
            net("10.65.0.0/16")
        );
        assert!(pool_of(&pools, &net("11.0.0.0/26")).is_none());
    }
}
