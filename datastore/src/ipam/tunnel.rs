//! The node's tunnel addresses, allocated like Calico's tunnel address
//! allocator does: one IPv4 address per kind from a pool that allows
//! `Tunnel` use, held by the handle `ipip-tunnel-addr-<node>` (`tunl0`'s
//! only address) or `vxlan-tunnel-addr-<node>` (`vxlan.calico`'s, from a
//! pool with VXLAN on), and one IPv6 address held by
//! `vxlan-v6-tunnel-addr-<node>` (`vxlan-v6.calico`'s, from an IPv6 pool
//! with VXLAN on), kept for as long as its pool still qualifies.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use ippool_crd::{AllowedUse, IPAMHandleSpec, PoolConfig};

use crate::Revision;
use crate::{Error, Key};

use super::{
    AssignRequest, Ipam, IpamError, ipip_tunnel_handle, vxlan_tunnel_handle, vxlan_v6_tunnel_handle,
};

/// How long a caller waits for someone else's claim in all.
const CLAIM_DEADLINE: Duration = Duration::from_secs(60);
const CLAIM_POLL: Duration = Duration::from_millis(50);

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

    /// The family of this kind's address.
    fn family(self) -> super::Family {
        if self.is_v4() {
            super::Family::V4
        } else {
            super::Family::V6
        }
    }

    /// Whether this kind's address is IPv4 (else IPv6).
    pub fn is_v4(self) -> bool {
        !matches!(self, TunnelKind::VxlanV6)
    }
}

impl Ipam {
    /// The node's tunnel address: the one its handle already holds, or a
    /// new one. Idempotent, and safe to call from two places at once: the
    /// first claims the handle and allocates, the second waits for that
    /// address (taking the claim over if it stands empty for 10 s).
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
        let key = Key::Handle { id: handle.clone() };
        key.validate()?;
        let deadline = Instant::now() + CLAIM_DEADLINE + self.opts.tunnel_claim_timeout;
        // The claim we are waiting on, and since when.
        let mut waiting: Option<(Revision, Instant)> = None;
        loop {
            if let Some(ip) = self.settle_tunnel_handle(&handle, kind).await? {
                return Ok(ip);
            }
            // Nothing usable yet. Claim the handle (an empty one) before
            // allocating: a second caller sees the claim and waits for our
            // address instead of allocating one of its own, which one of
            // the two would later have to give up after returning it.
            let claim = IPAMHandleSpec {
                handle_id: handle.clone(),
                block: BTreeMap::new(),
                deleted: false,
            };
            match self.client.create_value(&key, &claim).await {
                Ok(_) => {
                    return self
                        .allocate_tunnel_address(host, kind, &handle, &key)
                        .await;
                }
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                return Err(IpamError::Contention {
                    what: format!("allocating the tunnel address of {host}"),
                    resource: key.to_string(),
                    attempts: 0,
                });
            }
            match self.client.get_value::<IPAMHandleSpec>(&key).await? {
                // Released meanwhile, or holding an address whose block is
                // still being written: look again.
                None => continue,
                Some(v) if !v.value.block.is_empty() => waiting = None,
                Some(v) => match &waiting {
                    Some((rev, since)) if *rev == v.revision => {
                        let timeout = self.opts.tunnel_claim_timeout;
                        if since.elapsed() > timeout {
                            // The claimer died between claiming and
                            // allocating: take its claim over.
                            tracing::warn!(
                                handle,
                                "taking over a tunnel address claim left empty for {timeout:?}"
                            );
                            match self.client.delete_key(&key, Some(&v.revision)).await {
                                Ok(()) | Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
                                Err(e) => return Err(e.into()),
                            }
                            waiting = None;
                            continue;
                        }
                    }
                    _ => waiting = Some((v.revision.clone(), Instant::now())),
                },
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// Allocates the address of `key`'s handle, which this caller claimed.
    async fn allocate_tunnel_address(
        &self,
        host: &str,
        kind: TunnelKind,
        handle: &str,
        key: &Key,
    ) -> Result<IpAddr, IpamError> {
        let got = match self.auto_assign_tunnel(host, kind, handle).await {
            Ok(got) => got,
            Err(e) => {
                // Give the claim back, unless an address arrived meanwhile.
                if let Ok(Some(v)) = self.client.get_value::<IPAMHandleSpec>(key).await
                    && v.value.block.is_empty()
                {
                    let _ = self.client.delete_key(key, Some(&v.revision)).await;
                }
                return Err(e);
            }
        };
        // A claim taken over from a caller that was only slow can still
        // leave two addresses: keep one.
        match self.settle_tunnel_handle(handle, kind).await? {
            Some(ip) => Ok(ip),
            None => got.ok_or_else(|| IpamError::NoPool {
                family: kind.family(),
                host: host.to_string(),
                reasons: String::new(),
            }),
        }
    }

    async fn auto_assign_tunnel(
        &self,
        host: &str,
        kind: TunnelKind,
        handle: &str,
    ) -> Result<Option<IpAddr>, IpamError> {
        let family = kind.family();
        let fam_name = if kind.is_v4() { "IPv4" } else { "IPv6" };
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
            handle: handle.to_string(),
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
        Ok((if v4 { &got.v4 } else { &got.v6 }).first().copied())
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
