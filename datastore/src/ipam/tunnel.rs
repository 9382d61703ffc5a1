//! The node's IP-in-IP tunnel address (`tunl0`'s only address), allocated
//! like Calico's tunnel address allocator does: one IPv4 address from a
//! pool that allows `Tunnel` use, held by the handle
//! `ipip-tunnel-addr-<node>`, kept for as long as its pool still allows
//! tunnels.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ippool_crd::AllowedUse;

use super::{AssignRequest, Ipam, IpamError, ipip_tunnel_handle};

impl Ipam {
    /// The node's tunnel address: the one its handle already holds, or a
    /// new one. Idempotent, and safe to call from two places at once: if
    /// both allocate, both keep the lowest address and release the rest.
    /// An address whose pool was deleted or no longer allows `Tunnel` use
    /// is released and replaced.
    pub async fn ensure_tunnel_address(&self, host: &str) -> Result<IpAddr, IpamError> {
        let handle = ipip_tunnel_handle(host);
        if let Some(ip) = self.settle_tunnel_handle(&handle).await? {
            return Ok(ip);
        }
        let req = AssignRequest {
            handle: handle.clone(),
            host: host.to_string(),
            num_v4: 1,
            attrs: BTreeMap::from([
                ("node".to_string(), host.to_string()),
                ("type".to_string(), "ipipTunnelAddress".to_string()),
            ]),
            used_for: Some(AllowedUse::Tunnel),
            ..AssignRequest::default()
        };
        let got = self.auto_assign(&req).await?;
        // Another caller may have allocated at the same time.
        match self.settle_tunnel_handle(&handle).await? {
            Some(ip) => Ok(ip),
            None => got.v4.first().copied().ok_or_else(|| IpamError::NoPool {
                family: super::Family::V4,
                host: host.to_string(),
                reasons: String::new(),
            }),
        }
    }

    /// Keeps the lowest usable address of `handle` and releases the others;
    /// returns it, or `None` if the handle holds no usable address.
    async fn settle_tunnel_handle(&self, handle: &str) -> Result<Option<IpAddr>, IpamError> {
        let mut held = self.ips_by_handle(handle).await?;
        if held.is_empty() {
            return Ok(None);
        }
        held.sort();
        let pools = self.pools().await?;
        let keep = held.iter().copied().find(|ip| {
            ip.is_ipv4()
                && pools
                    .iter()
                    .any(|p| p.cidr.contains(*ip) && p.allows(AllowedUse::Tunnel))
        });
        let extra: Vec<IpAddr> = held.into_iter().filter(|ip| Some(*ip) != keep).collect();
        if !extra.is_empty() {
            tracing::info!(handle, released = ?extra, "releasing surplus or unusable tunnel addresses");
            self.release_ips(&extra).await?;
        }
        Ok(keep)
    }
}
