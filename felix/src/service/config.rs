//! DataplaneConfigService: confd tells felix the pools, this node's
//! address, blocks and tunnel address.

use std::net::{IpAddr, Ipv4Addr};

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
    pub node_ip: Ipv4Network,
    pub pools: Vec<Pool>,
    pub local_blocks: Vec<IpNetwork>,
    pub tunnel: Option<Ipv4Addr>,
}

pub fn parse(c: &DataplaneConfig) -> Result<Config, Status> {
    let node_ip = match proto::convert::required(&c.node_ip, "node_ip")
        .map_err(Status::from)
        .and_then(|p| IpNetwork::try_from(p).map_err(Status::from))?
    {
        IpNetwork::V4(v4) => v4,
        IpNetwork::V6(_) => return Err(Status::invalid_argument("node_ip must be IPv4")),
    };
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
            vxlan_mode: if cidr.is_ipv4() {
                encap(p.vxlan_mode)
            } else {
                EncapMode::Never
            },
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
    Ok(Config {
        node: c.node.clone(),
        node_ip,
        pools,
        local_blocks,
        tunnel,
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
        dp.set_node(Some(cfg.node_ip)).map_err(unavailable)?;
        dp.set_pool_modes(cfg.pools.clone()).map_err(unavailable)?;
        dp.set_local_blocks(cfg.local_blocks.clone())
            .map_err(unavailable)?;
        dp.set_tunnel_address(cfg.tunnel).map_err(unavailable)?;
        tracing::info!(pools = cfg.pools.len(), blocks = cfg.local_blocks.len(),
            tunnel = ?cfg.tunnel, "configuration applied");
        s.configured.send_replace(true);
        Ok(Response::new(ApplyDataplaneReply {}))
    }
}
