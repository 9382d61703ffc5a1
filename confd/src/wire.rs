//! NodeConfig → the protobuf messages bird and felix take.

use std::net::IpAddr;

use ippool_crd::{AllowedUse, BFDAuthType, EncapMode, PoolConfig, ResolvedPrefixAdvertisement};
use proto::bgpconfig as bgp;
use proto::common::{IpAddress, IpPrefix};
use proto::community::Community;
use proto::felix as fx;

use crate::config::{BgpConfig, FelixConfig};
use crate::peers::{Peer, PeerKind};

fn addr(ip: impl Into<IpAddr>) -> IpAddress {
    IpAddress::from(ip.into())
}

fn secs(d: Option<std::time::Duration>) -> u32 {
    d.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

// The proto grows additively (new fields default to off), hence the
// struct-update syntax even where every current field is set.
#[allow(clippy::needless_update)]
fn peer(p: &Peer) -> bgp::BgpPeerConfig {
    bgp::BgpPeerConfig {
        name: p.name(),
        address: Some(addr(p.address)),
        port: u32::from(p.port.unwrap_or(0)),
        asn: p.asn,
        kind: match p.kind {
            PeerKind::Mesh => bgp::PeerKind::Mesh,
            PeerKind::Global => bgp::PeerKind::Global,
            PeerKind::NodeSpecific => bgp::PeerKind::NodeSpecific,
        } as i32,
        passive: p.passive,
        source_address: p.source_address.map(addr),
        password: p.password.clone().unwrap_or_default(),
        password_unavailable: p.password_unavailable.clone().unwrap_or_default(),
        restart_time_secs: secs(p.restart_time),
        keepalive_time_secs: secs(p.keepalive_time),
        rr_client: p.rr_client,
        keep_next_hop: p.keep_next_hop,
        next_hop_self: p.next_hop_self,
        ttl_security: u32::from(p.ttl_security.unwrap_or(0)),
        num_allow_local_as: p.num_allow_local_as,
        local_asn: p.local_asn.unwrap_or(0),
        calico_node: p.calico_node,
        max_prefixes: p.max_prefixes.unwrap_or(0),
        bfd: p.bfd.map(|(interval, multiplier)| bgp::BfdConfig {
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            multiplier: u32::from(multiplier),
            multihop: p.remote_subnet,
            auth_type: match p.bfd_auth.as_ref().map(|a| a.kind) {
                None => bgp::BfdAuthType::Unspecified,
                Some(BFDAuthType::KeyedSHA1) => bgp::BfdAuthType::KeyedSha1,
                Some(BFDAuthType::MeticulousKeyedSHA1) => bgp::BfdAuthType::MeticulousKeyedSha1,
            } as i32,
            auth_key_id: p.bfd_auth.as_ref().map_or(0, |a| u32::from(a.key_id)),
            auth_key: p
                .bfd_auth
                .as_ref()
                .map(|a| a.key.clone())
                .unwrap_or_default(),
        }),
        import_filter: p.import_filter.iter().map(filter_rule).collect(),
        export_filter: p.export_filter.iter().map(filter_rule).collect(),
        ..Default::default()
    }
}

fn filter_rule(r: &crate::peers::FilterRule) -> bgp::FilterRule {
    use ippool_crd::bgpfilter::{FilterAction, MatchOperator};
    let c = &r.rule;
    bgp::FilterRule {
        action: match c.action {
            FilterAction::Accept => bgp::FilterAction::Accept,
            FilterAction::Reject => bgp::FilterAction::Reject,
        } as i32,
        ipv4: r.ipv4,
        match_operator: match c.prefix.map(|(op, _)| op) {
            None => bgp::MatchOperator::Unspecified,
            Some(MatchOperator::Equal) => bgp::MatchOperator::Equal,
            Some(MatchOperator::NotEqual) => bgp::MatchOperator::NotEqual,
            Some(MatchOperator::In) => bgp::MatchOperator::In,
            Some(MatchOperator::NotIn) => bgp::MatchOperator::NotIn,
        } as i32,
        cidr: c.prefix.map(|(_, n)| IpPrefix::from(n)),
        min_len: c.min_len.map(u32::from),
        max_len: c.max_len.map(u32::from),
        remote_peers_only: c.remote_peers_only,
        interface: c.interface.clone().unwrap_or_default(),
    }
}

fn prefix_communities(a: &ResolvedPrefixAdvertisement) -> bgp::PrefixCommunities {
    let mut out = bgp::PrefixCommunities {
        cidr: Some(IpPrefix::from(a.cidr)),
        ..Default::default()
    };
    for c in &a.communities {
        match *c {
            Community::Standard(v) => out.communities.push(v),
            Community::Large([global_admin, local_data1, local_data2]) => {
                out.large_communities.push(bgp::LargeCommunity {
                    global_admin,
                    local_data1,
                    local_data2,
                })
            }
        }
    }
    out
}

#[allow(clippy::needless_update)]
pub fn bgp_config(c: &BgpConfig) -> bgp::BgpConfig {
    bgp::BgpConfig {
        node: c.node.clone(),
        router_id: Some(addr(c.router_id)),
        asn: c.asn,
        listen_port: u32::from(c.listen_port),
        rr_cluster_id: c.rr_cluster_id.map(addr),
        peers: c.peers.iter().map(peer).collect(),
        advertise: c.advertise.iter().map(|b| IpPrefix::from(*b)).collect(),
        pool_cidrs: c.pool_cidrs.iter().map(|b| IpPrefix::from(*b)).collect(),
        listen_address: c.listen_address.map(addr),
        listen_address_v6: c.listen_address_v6.map(addr),
        log_severity: c.log_severity.clone(),
        ignored_interfaces: c.ignored_interfaces.clone(),
        prefix_communities: c
            .prefix_communities
            .iter()
            .map(prefix_communities)
            .collect(),
        ..Default::default()
    }
}

fn encap(m: EncapMode) -> i32 {
    (match m {
        EncapMode::Never => fx::EncapMode::Never,
        EncapMode::Always => fx::EncapMode::Always,
        EncapMode::CrossSubnet => fx::EncapMode::CrossSubnet,
    }) as i32
}

fn pool(p: &PoolConfig) -> fx::Pool {
    fx::Pool {
        name: p.name.clone(),
        cidr: Some(IpPrefix::from(p.cidr)),
        block_size: u32::from(p.block_size),
        ipip_mode: encap(p.ipip_mode),
        vxlan_mode: encap(p.vxlan_mode),
        nat_outgoing: p.nat_outgoing,
        disabled: p.disabled,
        disable_bgp_export: p.disable_bgp_export,
        allowed_uses: p
            .allowed_uses
            .iter()
            .map(|u| {
                match u {
                    AllowedUse::Workload => "Workload",
                    AllowedUse::Tunnel => "Tunnel",
                    AllowedUse::LoadBalancer => "LoadBalancer",
                }
                .to_string()
            })
            .collect(),
    }
}

pub fn dataplane_config(c: &FelixConfig) -> fx::DataplaneConfig {
    fx::DataplaneConfig {
        node: c.node.clone(),
        node_ip: c
            .node_ip
            .map(|n| IpPrefix::from(ipnetwork::IpNetwork::V4(n))),
        pools: c.pools.iter().map(pool).collect(),
        local_blocks: c.local_blocks.iter().map(|b| IpPrefix::from(*b)).collect(),
        ipip_tunnel_addr: c.ipip_tunnel_addr.map(addr),
        vxlan: c.vxlan.map(|(a, mac)| fx::Vtep {
            node: c.node.clone(),
            node_ip: c.node_ip.map(|n| addr(n.ip())),
            tunnel_addr: Some(addr(a)),
            mac: mac.to_vec(),
            blocks: c.local_blocks.iter().map(|b| IpPrefix::from(*b)).collect(),
        }),
        vteps: c
            .vteps
            .iter()
            .map(|v| fx::Vtep {
                node: v.node.clone(),
                node_ip: Some(addr(v.node_ip)),
                tunnel_addr: Some(addr(v.tunnel_addr)),
                mac: v.mac.to_vec(),
                blocks: v.blocks.iter().map(|b| IpPrefix::from(*b)).collect(),
            })
            .collect(),
        node_ipv6: c
            .node_ipv6
            .map(|n| IpPrefix::from(ipnetwork::IpNetwork::V6(n))),
        vxlan_v6: c.vxlan_v6.zip(c.node_ipv6).map(|((a, mac), n)| fx::Vtep {
            node: c.node.clone(),
            node_ip: Some(addr(n.ip())),
            tunnel_addr: Some(addr(a)),
            mac: mac.to_vec(),
            blocks: c
                .local_blocks
                .iter()
                .filter(|b| b.is_ipv6())
                .map(|b| IpPrefix::from(*b))
                .collect(),
        }),
        vteps_v6: c
            .vteps_v6
            .iter()
            .map(|v| fx::Vtep {
                node: v.node.clone(),
                node_ip: Some(addr(v.node_ip)),
                tunnel_addr: Some(addr(v.tunnel_addr)),
                mac: v.mac.to_vec(),
                blocks: v.blocks.iter().map(|b| IpPrefix::from(*b)).collect(),
            })
            .collect(),
        peer_routes: c
            .peer_routes
            .iter()
            .map(|(peer, via)| fx::PeerRoute {
                peer: Some(addr(*peer)),
                via: Some(addr(*via)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ClusterState;
    use ipnetwork::IpNetwork;
    use ippool_crd::{CalicoResource, parse_manifests};

    #[test]
    fn node_config_maps_onto_the_wire_types() {
        let yaml = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: a\nspec:\n  bgp:\n    ipv4Address: 10.0.0.1/24\n    ipv4IPIPTunnelAddr: 10.65.0.1\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: b\nspec:\n  bgp:\n    ipv4Address: 10.0.0.2/24\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.65.0.0/16\n  ipipMode: CrossSubnet\n  natOutgoing: true\n";
        // No pool uses VXLAN: no VTEPs, whatever the Nodes say.
        let mut s = ClusterState::default();
        for r in parse_manifests(yaml).unwrap() {
            match r {
                CalicoResource::Node(n) => {
                    s.nodes.insert(n.metadata.name.clone().unwrap(), n);
                }
                CalicoResource::IPPool(p) => {
                    s.pools.insert(p.metadata.name.clone().unwrap(), p);
                }
                _ => unreachable!(),
            }
        }
        s.blocks
            .insert("a".into(), vec!["10.65.0.0/26".parse().unwrap()]);
        let cfg = crate::compute(&s, "a").unwrap();
        let b = bgp_config(&cfg.bgp);
        assert_eq!(b.asn, 64512);
        assert_eq!(b.listen_port, 179);
        assert_eq!(b.peers.len(), 1);
        let p = &b.peers[0];
        assert_eq!(p.name, "Mesh_10_0_0_2");
        assert_eq!(p.kind, bgp::PeerKind::Mesh as i32);
        assert_eq!(p.restart_time_secs, 120);
        let a: IpAddr = p.address.as_ref().unwrap().try_into().unwrap();
        assert_eq!(a.to_string(), "10.0.0.2");
        let adv: IpNetwork = (&b.advertise[0]).try_into().unwrap();
        assert_eq!(adv.to_string(), "10.65.0.0/26");

        let f = dataplane_config(&cfg.felix);
        let ip: IpNetwork = f.node_ip.as_ref().unwrap().try_into().unwrap();
        assert_eq!(ip.to_string(), "10.0.0.1/24", "address and subnet length");
        assert_eq!(f.pools[0].ipip_mode, fx::EncapMode::CrossSubnet as i32);
        assert!(f.pools[0].nat_outgoing);
        let t: IpAddr = f.ipip_tunnel_addr.as_ref().unwrap().try_into().unwrap();
        assert_eq!(t.to_string(), "10.65.0.1");
        assert!(f.vxlan.is_none() && f.vteps.is_empty(), "{f:?}");
    }

    /// The Nodes and IPPools of a manifest as confd's state.
    fn nodes_and_pools(yaml: &str) -> ClusterState {
        let mut s = ClusterState::default();
        for r in parse_manifests(yaml).unwrap() {
            match r {
                CalicoResource::Node(n) => {
                    s.nodes.insert(n.metadata.name.clone().unwrap(), n);
                }
                CalicoResource::IPPool(p) => {
                    s.pools.insert(p.metadata.name.clone().unwrap(), p);
                }
                _ => unreachable!(),
            }
        }
        s
    }

    #[test]
    fn vteps_reach_felix_with_their_blocks_while_a_pool_uses_vxlan() {
        let node = |name: &str, ip: &str, vtep: &str, mac: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  bgp:\n    ipv4Address: {ip}\n{vtep}{mac}---\n"
            )
        };
        let yaml = [
            node("a", "10.0.0.1/24", "  ipv4VXLANTunnelAddr: 10.66.0.1\n", "  vxlanTunnelMACAddr: 66:00:00:00:00:0a\n"),
            node("b", "10.0.1.2/24", "  ipv4VXLANTunnelAddr: 10.66.0.65\n", "  vxlanTunnelMACAddr: 66:00:00:00:00:0B\n"),
            // No MAC yet (calico-node has not finished): not a VTEP.
            node("c", "10.0.0.3/24", "  ipv4VXLANTunnelAddr: 10.66.0.129\n", ""),
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.66.0.0/16\n  vxlanMode: Always\n".to_string(),
        ]
        .concat();
        let mut s = nodes_and_pools(&yaml);
        s.blocks
            .insert("a".into(), vec!["10.66.0.0/26".parse().unwrap()]);
        s.blocks.insert(
            "b".into(),
            vec![
                "10.66.0.64/26".parse().unwrap(),
                "10.66.1.0/26".parse().unwrap(),
            ],
        );
        let f = dataplane_config(&crate::compute(&s, "a").unwrap().felix);
        let own = f.vxlan.as_ref().unwrap();
        let own_addr: IpAddr = own.tunnel_addr.as_ref().unwrap().try_into().unwrap();
        assert_eq!(own_addr.to_string(), "10.66.0.1");
        assert_eq!(own.mac, vec![0x66, 0, 0, 0, 0, 0x0a]);
        assert_eq!(f.vteps.len(), 1, "{:?}", f.vteps);
        let b = &f.vteps[0];
        assert_eq!(b.node, "b");
        let ip: IpAddr = b.node_ip.as_ref().unwrap().try_into().unwrap();
        assert_eq!(ip.to_string(), "10.0.1.2");
        assert_eq!(b.mac, vec![0x66, 0, 0, 0, 0, 0x0b]);
        let blocks: Vec<String> = b
            .blocks
            .iter()
            .map(|p| IpNetwork::try_from(p).unwrap().to_string())
            .collect();
        assert_eq!(blocks, ["10.66.0.64/26", "10.66.1.0/26"]);

        // b borrows an address in a's block: b's VTEP carries it as a
        // host route (felix's longest match sends it to b, not a).
        s.borrowed
            .insert("b".into(), vec!["10.66.0.9/32".parse().unwrap()]);
        let f = dataplane_config(&crate::compute(&s, "a").unwrap().felix);
        let blocks: Vec<String> = f.vteps[0]
            .blocks
            .iter()
            .map(|p| IpNetwork::try_from(p).unwrap().to_string())
            .collect();
        assert_eq!(blocks, ["10.66.0.9/32", "10.66.0.64/26", "10.66.1.0/26"]);
    }

    #[test]
    fn ipv6_vteps_carry_the_ipv6_underlay_address_and_the_v6_mac() {
        let node = |name: &str, ip4: &str, ip6: &str, extra: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  bgp:\n    ipv4Address: {ip4}\n    ipv6Address: {ip6}\n{extra}---\n"
            )
        };
        let yaml = [
            node("a", "10.0.0.1/24", "fd00:1::1/64", "  ipv6VXLANTunnelAddr: fd00:66::1\n  vxlanTunnelMACAddrV6: 66:00:00:00:06:0a\n"),
            node("b", "10.0.1.2/24", "fd00:2::2/64", "  ipv6VXLANTunnelAddr: fd00:66::41\n  vxlanTunnelMACAddrV6: 66:00:00:00:06:0b\n  ipv4VXLANTunnelAddr: 10.66.0.65\n  vxlanTunnelMACAddr: 66:00:00:00:00:0b\n"),
            // No v6 MAC yet: not an IPv6 VTEP.
            node("c", "10.0.0.3/24", "fd00:1::3/64", "  ipv6VXLANTunnelAddr: fd00:66::81\n"),
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p6\nspec:\n  cidr: fd00:66::/112\n  blockSize: 122\n  vxlanMode: Always\n".to_string(),
        ]
        .concat();
        let mut s = nodes_and_pools(&yaml);
        s.blocks.insert(
            "b".into(),
            vec![
                "fd00:66::40/122".parse().unwrap(),
                "10.66.0.64/26".parse().unwrap(),
            ],
        );
        let cfg = crate::compute(&s, "a").unwrap();
        assert!(cfg.felix.vteps.is_empty(), "no IPv4 VXLAN pool");
        let f = dataplane_config(&cfg.felix);
        let n6: IpNetwork = f.node_ipv6.as_ref().unwrap().try_into().unwrap();
        assert_eq!(n6.to_string(), "fd00:1::1/64");
        let own = f.vxlan_v6.as_ref().unwrap();
        let own_addr: IpAddr = own.tunnel_addr.as_ref().unwrap().try_into().unwrap();
        assert_eq!(own_addr.to_string(), "fd00:66::1");
        assert_eq!(own.mac, vec![0x66, 0, 0, 0, 6, 0x0a]);
        assert_eq!(f.vteps_v6.len(), 1, "{:?}", f.vteps_v6);
        let b = &f.vteps_v6[0];
        assert_eq!(b.node, "b");
        let ip: IpAddr = b.node_ip.as_ref().unwrap().try_into().unwrap();
        assert_eq!(ip.to_string(), "fd00:2::2");
        assert_eq!(b.mac, vec![0x66, 0, 0, 0, 6, 0x0b]);
        let blocks: Vec<String> = b
            .blocks
            .iter()
            .map(|p| IpNetwork::try_from(p).unwrap().to_string())
            .collect();
        assert_eq!(blocks, ["fd00:66::40/122"]);
        let text = crate::render::render(&cfg);
        assert!(text.contains("vxlan-v6 peers 1"), "{text}");
    }
}
