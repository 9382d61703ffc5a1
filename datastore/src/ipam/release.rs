//! Giving addresses back: by handle (CNI DEL), by address (rollback of a
//! partial allocation), and a departed node's empty blocks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{IPAMBlockSpec, IPAMHandleSpec};

use super::block::Block;
use super::retry::Budget;
use super::{Ipam, IpamError, block_key};
use crate::{Error, Key, ListKey};

impl Ipam {
    /// Releases everything a handle holds; returns the addresses freed. A
    /// handle that does not exist releases nothing and is not an error (CNI
    /// DEL must be idempotent).
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        key.validate()?;
        let budget = self.budget(format!("releasing handle {handle}"));
        let mut freed = Vec::new();
        loop {
            let Some(h) = self.client.get_value::<IPAMHandleSpec>(&key).await? else {
                return Ok(freed);
            };
            for cidr in h.value.block.keys() {
                let Ok(cidr) = cidr.parse::<IpNetwork>() else {
                    tracing::warn!(handle, block = %cidr, "handle names an unparsable block");
                    continue;
                };
                freed.extend(self.release_handle_in_block(&budget, handle, cidr).await?);
            }
            match self.client.delete_key(&key, Some(&h.revision)).await {
                Ok(()) | Err(Error::NotFound { .. }) => return Ok(freed),
                Err(Error::Conflict { .. }) => budget.conflict(&key).await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn release_handle_in_block(
        &self,
        budget: &Budget,
        handle: &str,
        cidr: IpNetwork,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        loop {
            let Some(v) = self.client.get_value::<IPAMBlockSpec>(&key).await? else {
                return Ok(Vec::new());
            };
            let mut b = Block::parse(v.value)?;
            let ips = b.ips_of(handle);
            if ips.is_empty() {
                return Ok(ips);
            }
            b.release_handle(handle);
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => return Ok(ips),
                Err(Error::Conflict { .. }) => budget.conflict(&key).await?,
                Err(Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Releases specific addresses (and their handles' counts); returns
    /// those that were allocated.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let pools = self.pools().await?;
        let mut by_block: BTreeMap<IpNetwork, Vec<IpAddr>> = BTreeMap::new();
        for &ip in ips {
            // Blocks outside any current pool (pool deleted) are found by
            // listing, below.
            if let Some(p) = pools.iter().find(|p| p.cidr.contains(ip))
                && let Ok(b) = IpNetwork::new(ip, p.block_size)
                    .and_then(|b| IpNetwork::new(b.network(), p.block_size))
            {
                by_block.entry(b).or_default().push(ip);
                continue;
            }
            if let Some(b) = self.find_block(ip).await? {
                by_block.entry(b).or_default().push(ip);
            }
        }
        let budget = self.budget(format!("releasing {ips:?}"));
        let mut freed = Vec::new();
        for (cidr, ips) in by_block {
            freed.extend(self.release_in_block(&budget, cidr, &ips).await?);
        }
        Ok(freed)
    }

    async fn find_block(&self, ip: IpAddr) -> Result<Option<IpNetwork>, IpamError> {
        let (items, _) = self.client.backend().list(&ListKey::Blocks).await?;
        Ok(items.into_iter().find_map(|kv| match kv.key {
            Key::Block { cidr } if cidr.contains(ip) => Some(cidr),
            _ => None,
        }))
    }

    async fn release_in_block(
        &self,
        budget: &Budget,
        cidr: IpNetwork,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        loop {
            let Some(v) = self.client.get_value::<IPAMBlockSpec>(&key).await? else {
                return Ok(Vec::new());
            };
            let mut b = Block::parse(v.value)?;
            // Remember whose addresses these were, to fix the handles after.
            let mut per_handle: BTreeMap<String, i64> = BTreeMap::new();
            for (ip, h) in b.allocations() {
                if ips.contains(&ip)
                    && let Some(h) = h
                {
                    *per_handle.entry(h.to_string()).or_default() += 1;
                }
            }
            let freed = b.release_ips(ips);
            if freed.is_empty() {
                return Ok(freed);
            }
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => {
                    for (h, n) in per_handle {
                        self.adjust_handle(budget, &h, cidr, -n).await?;
                    }
                    return Ok(freed);
                }
                Err(Error::Conflict { .. }) => budget.conflict(&key).await?,
                Err(Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Gives up a node's empty blocks (block and affinity deleted), e.g.
    /// when the node leaves. Blocks still holding addresses are kept.
    /// Returns the blocks released.
    pub async fn release_empty_blocks(&self, host: &str) -> Result<Vec<IpNetwork>, IpamError> {
        let mut released = Vec::new();
        for cidr in self.host_blocks(host).await? {
            let key = block_key(cidr);
            let Some(v) = self.client.get_value::<IPAMBlockSpec>(&key).await? else {
                continue;
            };
            if !Block::parse(v.value)?.is_empty() {
                continue;
            }
            match self.client.delete_key(&key, Some(&v.revision)).await {
                Ok(()) => {
                    let aff = Key::Affinity {
                        host: host.to_string(),
                        cidr,
                    };
                    match self.client.delete_key(&aff, None).await {
                        Ok(()) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    released.push(cidr);
                }
                // Someone allocated in it meanwhile: keep it.
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(released)
    }
}
