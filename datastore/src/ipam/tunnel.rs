//! The node's tunnel addresses, allocated like Calico's tunnel address
//! allocator does: one IPv4 address per kind from a pool that allows
//! `Tunnel` use, held by the handle `ipip-tunnel-addr-<node>` (`tunl0`'s
//! only address) or `vxlan-tunnel-addr-<node>` (`vxlan.calico`'s, from a
//! pool with VXLAN on), and one IPv6 address held by
//! `vxlan-v6-tunnel-addr-<node>` (`vxlan-v6.calico`'s, from an IPv6 pool
//! with VXLAN on), kept for as long as its pool still qualifies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ippool_crd::{AllowedUse, PoolConfig};

use super::{
    AssignRequest, Ipam, IpamError, ipip_tunnel_handle, vxlan_tunnel_handle, vxlan_v6_tunnel_handle,
};

/// Which tunnel an address is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    Ipip,
    Vxlan,
    /// The IPv6 VTEP (`vxlan-v6.calico`).
    VxlanV6,
}

impl TunnelKind {
    /// The IPAM handle holding `node`'s address of this kind.
    pub fn handle(self, node: &str) -> String {
        match self {
            TunnelKind::Ipip => ipip_tunnel_handle(node),
            TunnelKind::Vxlan => vxlan_tunnel_handle(node),
            TunnelKind::VxlanV6 => vxlan_v6_tunnel_handle(node),
        }
    }

    /// The `type` attribute stored with the address (Calico's).
    fn attr_type(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipipTunnelAddress",
            TunnelKind::Vxlan => "vxlanTunnelAddress",
            TunnelKind::VxlanV6 => "vxlanV6TunnelAddress",
        }
    }

    /// Whether an address may come from (and stay in) `pool`. Every kind
    /// needs `Tunnel` use; a VXLAN address also a pool with VXLAN on (the
    /// VTEP's address is routed like the pool's blocks).
    fn eligible(self, pool: &PoolConfig) -> bool {
        pool.cidr.is_ipv4() == self.is_v4()
            && pool.allows(AllowedUse::Tunnel)
            && match self {
                TunnelKind::Ipip => true,
                TunnelKind::Vxlan | TunnelKind::VxlanV6 => {
                    pool.vxlan_mode.is_enabled() && !pool.disabled
                }
            }
    }

    /// Whether this kind's address is IPv4 (else IPv6).
    pub fn is_v4(self) -> bool {
        !matches!(self, TunnelKind::VxlanV6)
    }
}

impl Ipam {
    /// The node's tunnel address: the one its handle already holds, or a
    /// new one. Idempotent, and safe to call from two places at once: if
    /// both allocate, both keep the lowest address and release the rest.
    /// An address whose pool was deleted or no longer allows `Tunnel` use
    /// is released and replaced.
    pub async fn ensure_tunnel_address(&self, host: &str) -> Result<IpAddr, IpamError> {
        self.ensure_tunnel_address_of(host, TunnelKind::Ipip).await
    }

    /// [`Ipam::ensure_tunnel_address`] for either kind of tunnel.
    pub async fn ensure_tunnel_address_of(
        &self,
        host: &str,
        kind: TunnelKind,
    ) -> Result<IpAddr, IpamError> {
        let handle = kind.handle(host);
        if let Some(ip) = self.settle_tunnel_handle(&handle, kind).await? {
            return Ok(ip);
        }
        let (family, fam_name) = if kind.is_v4() {
            (super::Family::V4, "IPv4")
        } else {
            (super::Family::V6, "IPv6")
        };
        let pools = match kind {
            TunnelKind::Ipip => Vec::new(),
            TunnelKind::Vxlan | TunnelKind::VxlanV6 => {
                let names: Vec<String> = self
                    .pools()
                    .await?
                    .iter()
                    .filter(|p| kind.eligible(p))
                    .map(|p| p.name.clone())
                    .collect();
                if names.is_empty() {
                    return Err(IpamError::NoPool {
                        family,
                        host: host.to_string(),
                        reasons: format!(
                            "no enabled {fam_name} pool has vxlanMode on and allows Tunnel use"
                        ),
                    });
                }
                names
            }
        };
        let v4 = kind.is_v4();
        let (pools_v4, pools_v6) = if v4 {
            (pools, Vec::new())
        } else {
            (Vec::new(), pools)
        };
        let req = AssignRequest {
            handle: handle.clone(),
            host: host.to_string(),
            num_v4: usize::from(v4),
            num_v6: usize::from(!v4),
            attrs: BTreeMap::from([
                ("node".to_string(), host.to_string()),
                ("type".to_string(), kind.attr_type().to_string()),
            ]),
            pools_v4,
            pools_v6,
            used_for: Some(AllowedUse::Tunnel),
            namespace_labels: None,
        };
        let got = self.auto_assign(&req).await?;
        // Another caller may have allocated at the same time.
        match self.settle_tunnel_handle(&handle, kind).await? {
            Some(ip) => Ok(ip),
            None => (if v4 { &got.v4 } else { &got.v6 })
                .first()
                .copied()
                .ok_or_else(|| IpamError::NoPool {
                    family,
                    host: host.to_string(),
                    reasons: String::new(),
                }),
        }
    }

    /// Keeps the lowest usable address of `handle` and releases the others;
    /// returns it, or `None` if the handle holds no usable address.
    async fn settle_tunnel_handle(
        &self,
        handle: &str,
        kind: TunnelKind,
    ) -> Result<Option<IpAddr>, IpamError> {
        let mut held = self.ips_by_handle(handle).await?;
        if held.is_empty() {
            return Ok(None);
        }
        held.sort();
        let pools = self.pools().await?;
        let keep = held.iter().copied().find(|ip| {
            ip.is_ipv4() == kind.is_v4()
                && pools
                    .iter()
                    .any(|p| p.cidr.contains(*ip) && kind.eligible(p))
        });
        let extra: Vec<IpAddr> = held.into_iter().filter(|ip| Some(*ip) != keep).collect();
        if !extra.is_empty() {
            tracing::info!(handle, released = ?extra, "releasing surplus or unusable tunnel addresses");
            self.release_ips(&extra).await?;
        }
        Ok(keep)
    }
}
