//! DataplaneConfigService: confd tells felix the pools, this node's
//! address, blocks and tunnel address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use ippool_crd::EncapMode;
use proto::felix::dataplane_config_service_server::DataplaneConfigService;
use proto::felix::{self as pb, ApplyDataplaneReply, DataplaneConfig};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::calc::Pool;

fn encap(m: i32) -> EncapMode {
    match pb::EncapMode::try_from(m) {
        Ok(pb::EncapMode::Always) => EncapMode::Always,
        Ok(pb::EncapMode::CrossSubnet) => EncapMode::CrossSubnet,
        _ => EncapMode::Never,
    }
}

/// The plain-data view of one push, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: String,
    /// `None` on an IPv6-only node.
    pub node_ip: Option<Ipv4Network>,
    pub pools: Vec<Pool>,
    pub local_blocks: Vec<IpNetwork>,
    pub tunnel: Option<Ipv4Addr>,
    /// This node's VXLAN tunnel endpoint.
    pub vxlan: Option<crate::VxlanLocal>,
    /// Every other node's.
    pub vteps: Vec<crate::Vtep>,
    /// IPv6 VXLAN: the node's IPv6 address, its IPv6 VTEP, the others'.
    pub v6: crate::dataplane::Vxlan6Input,
    /// BGPPeer `reachableBy`: (peer, gateway), same family.
    pub peer_routes: Vec<(IpAddr, IpAddr)>,
}

/// One `Vtep` off the wire: addresses of `A`'s family, a 6-byte MAC,
/// prefixes.
fn vtep<A: crate::vxlan::VtepAddr>(v: &pb::Vtep) -> Result<crate::Vtep<A>, String> {
    let fam = if A::HOST_PREFIX == 32 { "IPv4" } else { "IPv6" };
    let v4 = |a: &Option<proto::common::IpAddress>, what: &str| -> Result<A, String> {
        match a.as_ref().map(IpAddr::try_from) {
            Some(Ok(a)) => A::from_ip(a).ok_or_else(|| format!("{what} {a} is not {fam}")),
            Some(Err(e)) => Err(format!("{what}: {e}")),
            None => Err(format!("{what} missing")),
        }
    };
    let mac: [u8; 6] = v
        .mac
        .as_slice()
        .try_into()
        .map_err(|_| format!("MAC of {} bytes, not 6", v.mac.len()))?;
    let blocks = v
        .blocks
        .iter()
        .map(IpNetwork::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("block: {e}"))?;
    Ok(crate::Vtep {
        node: v.node.clone(),
        node_ip: v4(&v.node_ip, "node_ip")?,
        tunnel_addr: v4(&v.tunnel_addr, "tunnel_addr")?,
        mac,
        blocks,
    })
}

pub fn parse(c: &DataplaneConfig) -> Result<Config, Status> {
    let node_ip = match c.node_ip.as_ref().map(IpNetwork::try_from).transpose()? {
        None => None,
        Some(IpNetwork::V4(v4)) => Some(v4),
        Some(IpNetwork::V6(_)) => return Err(Status::invalid_argument("node_ip must be IPv4")),
    };
    if node_ip.is_none() && c.node_ipv6.is_none() {
        return Err(Status::invalid_argument(
            "neither node_ip nor node_ipv6: the node has no address",
        ));
    }
    let mut pools = Vec::with_capacity(c.pools.len());
    for p in &c.pools {
        let cidr = IpNetwork::try_from(
            proto::convert::required(&p.cidr, "pool.cidr").map_err(Status::from)?,
        )?;
        pools.push(Pool {
            name: p.name.clone(),
            cidr,
            ipip_mode: if cidr.is_ipv4() {
                encap(p.ipip_mode)
            } else {
                EncapMode::Never
            },
            vxlan_mode: encap(p.vxlan_mode),
            nat_outgoing: p.nat_outgoing,
        });
    }
    let local_blocks = c
        .local_blocks
        .iter()
        .map(IpNetwork::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let tunnel = match &c.ipip_tunnel_addr {
        None => None,
        Some(a) => match IpAddr::try_from(a)? {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => return Err(Status::invalid_argument("tunnel address must be IPv4")),
        },
    };
    let vxlan = match &c.vxlan {
        None => None,
        Some(v) => {
            let v = vtep::<Ipv4Addr>(v).map_err(|e| {
                Status::invalid_argument(format!("this node's VXLAN tunnel endpoint: {e}"))
            })?;
            Some(crate::VxlanLocal {
                tunnel_addr: v.tunnel_addr,
                mac: v.mac,
            })
        }
    };
    // A malformed endpoint of another node costs that node's routes, not
    // the whole configuration.
    let vteps = c
        .vteps
        .iter()
        .filter_map(|v| match vtep::<Ipv4Addr>(v) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(node = %v.node, error = %e, "VXLAN tunnel endpoint ignored");
                None
            }
        })
        .collect();
    let node6 = match &c.node_ipv6 {
        None => None,
        Some(p) => match IpNetwork::try_from(p)? {
            IpNetwork::V6(n) => Some(n),
            IpNetwork::V4(_) => return Err(Status::invalid_argument("node_ipv6 must be IPv6")),
        },
    };
    let local6 = match &c.vxlan_v6 {
        None => None,
        Some(v) => {
            let v = vtep::<Ipv6Addr>(v).map_err(|e| {
                Status::invalid_argument(format!("this node's IPv6 VXLAN tunnel endpoint: {e}"))
            })?;
            Some(crate::VxlanLocal {
                tunnel_addr: v.tunnel_addr,
                mac: v.mac,
            })
        }
    };
    let vteps6 = c
        .vteps_v6
        .iter()
        .filter_map(|v| match vtep::<Ipv6Addr>(v) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(node = %v.node, error = %e, "IPv6 VXLAN tunnel endpoint ignored");
                None
            }
        })
        .collect();
    let mut peer_routes = Vec::with_capacity(c.peer_routes.len());
    for r in &c.peer_routes {
        let peer = IpAddr::try_from(
            proto::convert::required(&r.peer, "peer_routes.peer").map_err(Status::from)?,
        )?;
        let via = IpAddr::try_from(
            proto::convert::required(&r.via, "peer_routes.via").map_err(Status::from)?,
        )?;
        if peer.is_ipv4() != via.is_ipv4() {
            return Err(Status::invalid_argument(format!(
                "peer route to {peer} via {via}: different address families"
            )));
        }
        peer_routes.push((peer, via));
    }
    Ok(Config {
        node: c.node.clone(),
        node_ip,
        pools,
        local_blocks,
        tunnel,
        vxlan,
        vteps,
        v6: crate::dataplane::Vxlan6Input {
            node: node6,
            local: local6,
            vteps: vteps6,
        },
        peer_routes,
    })
}

pub struct ConfigService(pub Shared);

#[tonic::async_trait]
impl DataplaneConfigService for ConfigService {
    async fn apply(
        &self,
        req: Request<DataplaneConfig>,
    ) -> Result<Response<ApplyDataplaneReply>, Status> {
        let cfg = parse(req.get_ref())?;
        let s = &self.0;
        if !s.node.is_empty() && cfg.node != s.node {
            return Err(Status::invalid_argument(format!(
                "configuration is for node {:?} but this felix runs node {:?}",
                cfg.node, s.node
            )));
        }
        // Identical pushes (confd sends the current configuration again on
        // every new connection) change nothing.
        {
            let mut last = s.last_config.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() == Some(&cfg) {
                return Ok(Response::new(ApplyDataplaneReply {}));
            }
            *last = Some(cfg.clone());
        }
        let dp = &s.dataplane;
        let unavailable = |e: crate::dataplane::DataplaneError| Status::unavailable(e.to_string());
        dp.set_node(cfg.node_ip).map_err(unavailable)?;
        dp.set_pool_modes(cfg.pools.clone()).map_err(unavailable)?;
        dp.set_local_blocks(cfg.local_blocks.clone())
            .map_err(unavailable)?;
        dp.set_tunnel_address(cfg.tunnel).map_err(unavailable)?;
        dp.set_vxlan_local(cfg.vxlan).map_err(unavailable)?;
        dp.set_vteps(cfg.vteps.clone()).map_err(unavailable)?;
        dp.set_vxlan_v6(cfg.v6.clone()).map_err(unavailable)?;
        dp.set_peer_routes(cfg.peer_routes.clone())
            .map_err(unavailable)?;
        tracing::info!(pools = cfg.pools.len(), blocks = cfg.local_blocks.len(),
            tunnel = ?cfg.tunnel, vxlan = ?cfg.vxlan.map(|v| v.tunnel_addr),
            vteps = cfg.vteps.len(), "configuration applied");
        s.configured.send_replace(true);
        Ok(Response::new(ApplyDataplaneReply {}))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proto::common::{IpAddress, IpPrefix};

    fn addr(s: &str) -> Option<IpAddress> {
        Some(IpAddress::from(s.parse::<IpAddr>().unwrap()))
    }

    fn wire_vtep(node: &str, ip: &str, mac: Vec<u8>) -> pb::Vtep {
        pb::Vtep {
            node: node.into(),
            node_ip: addr(ip),
            tunnel_addr: addr("10.66.0.65"),
            mac,
            blocks: vec![IpPrefix::from(
                "10.66.0.64/26".parse::<IpNetwork>().unwrap(),
            )],
        }
    }

    fn config(vxlan: Option<pb::Vtep>, vteps: Vec<pb::Vtep>) -> DataplaneConfig {
        DataplaneConfig {
            node: "a".into(),
            node_ip: Some(IpPrefix::from("10.0.0.1/24".parse::<IpNetwork>().unwrap())),
            vxlan,
            vteps,
            ..DataplaneConfig::default()
        }
    }

    #[test]
    fn vteps_are_read_and_a_malformed_one_costs_only_itself() {
        let c = parse(&config(
            Some(wire_vtep("a", "10.0.0.1", vec![0x66, 0, 0, 0, 0, 1])),
            vec![
                wire_vtep("b", "10.0.1.2", vec![0x66, 0, 0, 0, 0, 2]),
                wire_vtep("c", "10.0.1.3", vec![0x66, 0, 0]),
                wire_vtep("d", "fd00::4", vec![0x66, 0, 0, 0, 0, 4]),
            ],
        ))
        .unwrap();
        assert_eq!(
            c.vxlan,
            Some(crate::VxlanLocal {
                tunnel_addr: "10.66.0.65".parse().unwrap(),
                mac: [0x66, 0, 0, 0, 0, 1],
            })
        );
        assert_eq!(c.vteps.len(), 1, "{:?}", c.vteps);
        assert_eq!(c.vteps[0].node, "b");
        assert_eq!(c.vteps[0].node_ip.to_string(), "10.0.1.2");
        assert_eq!(c.vteps[0].blocks[0].to_string(), "10.66.0.64/26");
    }

    #[test]
    fn a_malformed_own_vtep_is_refused_with_why() {
        let err = parse(&config(
            Some(wire_vtep("a", "10.0.0.1", vec![1, 2])),
            vec![],
        ))
        .unwrap_err();
        assert!(err.message().contains("MAC of 2 bytes"), "{err}");
    }

    #[test]
    fn an_ipv6_only_node_has_no_ipv4_address_and_a_node_needs_one_of_them() {
        let mut c = config(None, vec![]);
        c.node_ip = None;
        c.node_ipv6 = Some(IpPrefix::from("fd00:1::1/64".parse::<IpNetwork>().unwrap()));
        let parsed = parse(&c).unwrap();
        assert_eq!(parsed.node_ip, None);
        assert!(parsed.v6.node.is_some());
        c.node_ipv6 = None;
        let err = parse(&c).unwrap_err();
        assert!(err.message().contains("no address"), "{err}");
    }

    #[test]
    fn ipv6_vteps_are_read_with_the_node_ipv6_address() {
        let v6 = |node: &str, ip: &str, tunnel: &str, mac: u8| pb::Vtep {
            node: node.into(),
            node_ip: addr(ip),
            tunnel_addr: addr(tunnel),
            mac: vec![0x66, 0, 0, 0, 6, mac],
            blocks: vec![IpPrefix::from(
                "fd00:66::40/122".parse::<IpNetwork>().unwrap(),
            )],
        };
        let mut c = config(None, vec![]);
        c.node_ipv6 = Some(IpPrefix::from("fd00:1::1/64".parse::<IpNetwork>().unwrap()));
        c.vxlan_v6 = Some(v6("a", "fd00:1::1", "fd00:66::1", 1));
        c.vteps_v6 = vec![
            v6("b", "fd00:2::2", "fd00:66::41", 2),
            // An IPv4 underlay address in an IPv6 VTEP: that VTEP only.
            v6("c", "10.0.0.3", "fd00:66::81", 3),
        ];
        c.pools = vec![pb::Pool {
            name: "p6".into(),
            cidr: Some(IpPrefix::from(
                "fd00:66::/112".parse::<IpNetwork>().unwrap(),
            )),
            vxlan_mode: pb::EncapMode::Always as i32,
            ..pb::Pool::default()
        }];
        let got = parse(&c).unwrap();
        assert_eq!(got.pools[0].vxlan_mode, EncapMode::Always);
        assert_eq!(got.v6.node.unwrap().to_string(), "fd00:1::1/64");
        assert_eq!(
            got.v6.local,
            Some(crate::VxlanLocal {
                tunnel_addr: "fd00:66::1".parse().unwrap(),
                mac: [0x66, 0, 0, 0, 6, 1],
            })
        );
        assert_eq!(got.v6.vteps.len(), 1, "{:?}", got.v6.vteps);
        assert_eq!(got.v6.vteps[0].node_ip.to_string(), "fd00:2::2");
        // An IPv4 node_ipv6 is refused.
        c.node_ipv6 = Some(IpPrefix::from("10.0.0.1/24".parse::<IpNetwork>().unwrap()));
        assert!(parse(&c).is_err());
    }
}
