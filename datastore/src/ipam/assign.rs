//! Allocating addresses by handle: from the node's own blocks first
//! (claiming another when they are full, up to `maxBlocksPerHost`), from
//! other nodes' blocks only when strict affinity is off, and one specific
//! address on request. Every allocation writes the handle before the block
//! (see the module docs of [`super`] for why).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{AllowedUse, IPAMBlockSpec, PoolConfig};

use super::block::Block;
use super::claim::ClaimError;
use super::pools::{self, Family, Skipped};
use super::retry::Budget;
use super::{AssignRequest, Assigned, Effective, Ipam, IpamError, block_key};
use crate::{Error, Key, ListKey};

impl Ipam {
    /// Allocates addresses for a handle on a node. All or nothing: if any
    /// part fails, what was taken is given back before the error returns.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Assigned, IpamError> {
        crate::key::check_name("IPAM handle", &req.handle)?;
        crate::key::check_name("node name", &req.host)?;
        let eff = self.effective().await?;
        let pools = self.pools().await?;
        let labels = self.node_labels(&req.host).await?;
        let reserved = self.reserved().await?;
        let used_for = req.used_for.unwrap_or(AllowedUse::Workload);
        let budget = self.budget(format!("allocating for {}", req.handle));
        let mut out = Assigned::default();
        let families = [
            (Family::V4, req.num_v4, &req.pools_v4),
            (Family::V6, req.num_v6, &req.pools_v6),
        ];
        for (family, n, requested) in families {
            if n == 0 {
                continue;
            }
            let (ok, skipped) = pools::eligible(
                &pools,
                family,
                used_for,
                &labels,
                req.namespace_labels.as_ref(),
                requested,
            );
            let result = if ok.is_empty() {
                Err(no_pool(family, &req.host, &skipped, requested))
            } else {
                self.assign_family(&budget, family, n, req, (&ok, &reserved), eff)
                    .await
            };
            match result {
                Ok(ips) => match family {
                    Family::V4 => out.v4 = ips,
                    Family::V6 => out.v6 = ips,
                },
                Err(e) => {
                    let taken: Vec<IpAddr> = out.v4.iter().chain(&out.v6).copied().collect();
                    if !taken.is_empty()
                        && let Err(re) = self.release_ips(&taken).await
                    {
                        tracing::error!(handle = %req.handle, error = %re,
                                "could not roll back a partial allocation; `audit` will show it");
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    async fn assign_family(
        &self,
        budget: &Budget,
        family: Family,
        n: usize,
        req: &AssignRequest,
        (pools, reserved): (&[&PoolConfig], &[IpNetwork]),
        eff: Effective,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut got: Vec<IpAddr> = Vec::with_capacity(n);
        let hint_key = (req.host.clone(), family == Family::V4);
        loop {
            let mut affine = self.affine_blocks(budget, &req.host, family, pools).await?;
            let hint = self
                .hint
                .lock()
                .ok()
                .and_then(|h| h.get(&hint_key).copied());
            if let Some(h) = hint
                && let Some(pos) = affine.iter().position(|b| *b == h)
            {
                affine[..=pos].rotate_right(1);
            }
            for cidr in &affine {
                let want = n - got.len();
                let ips = match self
                    .assign_in_block(budget, *cidr, want, req, Some(&req.host), reserved)
                    .await
                {
                    Ok(ips) => ips,
                    Err(e) => {
                        self.release_quietly(&got).await;
                        return Err(e);
                    }
                };
                if !ips.is_empty()
                    && let Ok(mut h) = self.hint.lock()
                {
                    h.insert(hint_key.clone(), *cidr);
                }
                got.extend(ips);
                if got.len() == n {
                    return Ok(got);
                }
            }
            if affine.len() >= eff.max_blocks {
                if !eff.strict
                    && self
                        .borrow(budget, &mut got, n, req, pools, reserved)
                        .await?
                {
                    return Ok(got);
                }
                self.release_quietly(&got).await;
                return Err(IpamError::BlockLimit {
                    family,
                    host: req.host.clone(),
                    limit: eff.max_blocks,
                });
            }
            // Go round again to use the block claimed, or to try another
            // after losing one to another node.
            let again = match self.claim_block(budget, &req.host, pools).await {
                Ok(Some(cidr)) => budget.again(&block_key(cidr)),
                Err(ClaimError::Lost(cidr)) => budget.conflict(&block_key(cidr)).await,
                Ok(None) => {
                    if !eff.strict
                        && self
                            .borrow(budget, &mut got, n, req, pools, reserved)
                            .await?
                    {
                        return Ok(got);
                    }
                    self.release_quietly(&got).await;
                    return Err(IpamError::Exhausted {
                        family,
                        host: req.host.clone(),
                        pools: pools
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        hint: if eff.strict {
                            " (borrowing from other nodes' blocks is off: strictAffinity)"
                        } else {
                            ""
                        },
                    });
                }
                Err(ClaimError::Ipam(e)) => {
                    self.release_quietly(&got).await;
                    return Err(e);
                }
            };
            if let Err(e) = again {
                self.release_quietly(&got).await;
                return Err(e);
            }
        }
    }

    pub(super) async fn release_quietly(&self, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        if let Err(e) = self.release_ips(ips).await {
            tracing::error!(error = %e, "could not release a partial allocation; `audit` will show it");
        }
    }

    /// Takes addresses from any non-full block of the eligible pools
    /// (borrowing). True once `n` are held.
    async fn borrow(
        &self,
        budget: &Budget,
        got: &mut Vec<IpAddr>,
        n: usize,
        req: &AssignRequest,
        pools: &[&PoolConfig],
        reserved: &[IpNetwork],
    ) -> Result<bool, IpamError> {
        for (key, v) in self
            .client
            .list_values::<IPAMBlockSpec>(&ListKey::Blocks)
            .await?
        {
            let Key::Block { cidr } = key else { continue };
            if !pools.iter().any(|p| p.cidr.contains(cidr.network()))
                || v.value.unallocated.is_empty()
            {
                continue;
            }
            got.extend(
                self.assign_in_block(budget, cidr, n - got.len(), req, None, reserved)
                    .await?,
            );
            if got.len() == n {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Allocates up to `want` addresses in one block, none inside
    /// `reserved`. With `owner`, only if the block is still affine to that
    /// node.
    pub(super) async fn assign_in_block(
        &self,
        budget: &Budget,
        cidr: IpNetwork,
        want: usize,
        req: &AssignRequest,
        owner: Option<&str>,
        reserved: &[IpNetwork],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        loop {
            let Some(v) = self.client.get_value::<IPAMBlockSpec>(&key).await? else {
                return Ok(Vec::new());
            };
            let mut b = match Block::parse(v.value) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "skipping corrupt block");
                    return Ok(Vec::new());
                }
            };
            if owner.is_some() && b.host() != owner {
                return Ok(Vec::new());
            }
            let ips = b.assign_skipping(want, &req.handle, &req.attrs, reserved);
            if ips.is_empty() {
                return Ok(ips);
            }
            self.adjust_handle(budget, &req.handle, cidr, ips.len() as i64)
                .await?;
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => return Ok(ips),
                Err(e) if ambiguous(&e) => {
                    return self
                        .settle_ambiguous(budget, &key, cidr, &req.handle, &ips, e)
                        .await
                        .map(|()| ips);
                }
                Err(e) => {
                    if let Err(he) = self
                        .adjust_handle(budget, &req.handle, cidr, -(ips.len() as i64))
                        .await
                    {
                        tracing::warn!(handle = %req.handle, error = %he,
                            "could not undo a handle count; releasing the handle cleans it up");
                    }
                    match e {
                        Error::Conflict { .. } => budget.conflict(&key).await?,
                        Error::NotFound { .. } => return Ok(Vec::new()),
                        other => return Err(other.into()),
                    }
                }
            }
        }
    }

    /// Allocates one specific address (e.g. a requested pod IP).
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle: &str,
        host: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), IpamError> {
        crate::key::check_name("IPAM handle", handle)?;
        let pools = self.pools().await?;
        let pool = pools
            .iter()
            .find(|p| p.cidr.contains(ip))
            .ok_or(IpamError::NotInPool(ip))?;
        let cidr = IpNetwork::new(ip, pool.block_size).map_err(|_| IpamError::NotInPool(ip))?;
        let cidr = IpNetwork::new(cidr.network(), pool.block_size)
            .map_err(|_| IpamError::NotInPool(ip))?;
        let key = block_key(cidr);
        let budget = self.budget(format!("allocating {ip}"));
        loop {
            let existing = self.client.get_value::<IPAMBlockSpec>(&key).await?;
            let Some(v) = existing else {
                // Claim the block, then go round again to allocate in it.
                match self.claim(&budget, host, cidr).await {
                    Ok(_) => budget.again(&key)?,
                    Err(ClaimError::Lost(_)) => budget.conflict(&key).await?,
                    Err(ClaimError::Ipam(e)) => return Err(e),
                }
                continue;
            };
            let mut b = Block::parse(v.value)?;
            if !b.assign_ip(ip, handle, attrs) {
                return Err(IpamError::InUse(ip));
            }
            self.adjust_handle(&budget, handle, cidr, 1).await?;
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => return Ok(()),
                Err(e) if ambiguous(&e) => {
                    return self
                        .settle_ambiguous(&budget, &key, cidr, handle, &[ip], e)
                        .await;
                }
                Err(e) => {
                    let _ = self.adjust_handle(&budget, handle, cidr, -1).await;
                    match e {
                        Error::Conflict { .. } | Error::NotFound { .. } => {
                            budget.conflict(&key).await?
                        }
                        other => return Err(other.into()),
                    }
                }
            }
        }
    }
}

fn no_pool(family: Family, host: &str, skipped: &[Skipped], requested: &[String]) -> IpamError {
    let mut reasons = String::new();
    if !requested.is_empty() && skipped.is_empty() {
        reasons = format!(" (requested pools {} do not exist)", requested.join(", "));
    }
    for s in skipped {
        reasons.push_str(&match s {
            Skipped::Disabled(p) => format!("; pool {p} is disabled"),
            Skipped::NotSelected(p) => format!("; pool {p}'s nodeSelector does not match the node"),
            Skipped::UseNotAllowed(p) => format!("; pool {p}'s allowedUses excludes this use"),
            Skipped::Manual(p) => {
                format!("; pool {p} is assignmentMode Manual (request it by name)")
            }
            Skipped::NamespaceNotSelected(p) => {
                format!("; pool {p}'s namespaceSelector does not select the pod's namespace")
            }
        });
    }
    IpamError::NoPool {
        family,
        host: host.to_string(),
        reasons,
    }
}

/// A write error after which the write may or may not have been applied:
/// the datastore did not answer in time, or the connection dropped with
/// the request sent. (A Conflict or NotFound says for sure it was not.)
fn ambiguous(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Backend { .. })
}

/// How often, and how far apart, a block whose write had an unknown
/// outcome is read again to learn it.
const SETTLE_READS: usize = 5;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Ipam {
    /// After a block write with an unknown outcome (`e`), reads the block
    /// again: if it holds `ips` for `handle`, the write was applied and the
    /// allocation stands (`Ok`). If it does not, the handle's count is
    /// undone and `e` returned. If the block cannot be read either, the
    /// handle keeps its count and `e` is returned: a handle counting more
    /// than its block holds is harmless (releasing the handle settles it),
    /// while undoing a write that did happen would leak the addresses.
    pub(super) async fn settle_ambiguous(
        &self,
        budget: &Budget,
        key: &crate::Key,
        cidr: IpNetwork,
        handle: &str,
        ips: &[IpAddr],
        e: Error,
    ) -> Result<(), IpamError> {
        for attempt in 0..SETTLE_READS {
            if attempt > 0 {
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            match self.client.get_value::<IPAMBlockSpec>(key).await {
                Ok(Some(v)) => {
                    let held = Block::parse(v.value)
                        .map(|b| b.ips_of(handle))
                        .unwrap_or_default();
                    if ips.iter().all(|ip| held.contains(ip)) {
                        tracing::info!(handle, block = %cidr, error = %e,
                            "a block write's answer was lost, but the write was applied; the allocation stands");
                        return Ok(());
                    }
                    break;
                }
                Ok(None) => break,
                Err(re) if attempt + 1 == SETTLE_READS => {
                    tracing::warn!(handle, block = %cidr, error = %e, reread = %re,
                        "a block write's outcome is unknown and the block cannot be read; \
                         the handle keeps its count (releasing the handle settles it)");
                    return Err(e.into());
                }
                Err(_) => {}
            }
        }
        // Not applied: undo the handle's count.
        if let Err(he) = self
            .adjust_handle(budget, handle, cidr, -(ips.len() as i64))
            .await
        {
            tracing::warn!(handle, error = %he,
                "could not undo a handle count; releasing the handle cleans it up");
        }
        Err(e.into())
    }
}
