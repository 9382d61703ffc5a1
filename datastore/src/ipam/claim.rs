//! Block affinity and the two-phase claim (see the module docs of
//! [`super`]): which blocks a node holds, claiming a new one, and repairing
//! a claim a crash interrupted.

use std::collections::HashSet;

use ipnetwork::IpNetwork;
use ippool_crd::{AffinityState, BlockAffinitySpec, IPAMBlockSpec, PoolConfig};

use super::block::{self, Block};
use super::pools::{self, Family};
use super::retry::Budget;
use super::{Ipam, IpamError, affinity_confirmed, block_key};
use crate::{Error, Key, ListKey, Versioned};

impl Ipam {
    /// The node's confirmed blocks: what it advertises over BGP and
    /// blackholes locally. Pending claims are never included.
    pub async fn host_blocks(&self, host: &str) -> Result<Vec<IpNetwork>, IpamError> {
        let affs = self
            .client
            .list_values::<BlockAffinitySpec>(&ListKey::Affinities {
                host: Some(host.to_string()),
            })
            .await?;
        let mut out: Vec<IpNetwork> = affs
            .into_iter()
            .filter(|(_, v)| affinity_confirmed(&v.value))
            .filter_map(|(k, _)| match k {
                Key::Affinity { cidr, .. } => Some(cidr),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Confirmed blocks of `host` in the given pools and family. A pending
    /// affinity whose block exists and is ours (a claim interrupted after
    /// step 2) is confirmed here.
    pub(super) async fn affine_blocks(
        &self,
        budget: &Budget,
        host: &str,
        family: Family,
        pools: &[&PoolConfig],
    ) -> Result<Vec<IpNetwork>, IpamError> {
        let affs = self
            .client
            .list_values::<BlockAffinitySpec>(&ListKey::Affinities {
                host: Some(host.to_string()),
            })
            .await?;
        let mut out = Vec::new();
        for (key, v) in affs {
            let Key::Affinity { cidr, .. } = key else {
                continue;
            };
            if Family::of(&cidr) != family || !pools.iter().any(|p| p.cidr.contains(cidr.network()))
            {
                continue;
            }
            if affinity_confirmed(&v.value) {
                out.push(cidr);
            } else if v.value.state == AffinityState::Pending
                && let Some(b) = self
                    .client
                    .get_value::<IPAMBlockSpec>(&block_key(cidr))
                    .await?
                && b.value.affinity.as_deref() == Some(block::host_affinity(host).as_str())
            {
                self.confirm(budget, host, cidr, v).await?;
                out.push(cidr);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn confirm(
        &self,
        budget: &Budget,
        host: &str,
        cidr: IpNetwork,
        mut aff: Versioned<BlockAffinitySpec>,
    ) -> Result<(), IpamError> {
        let key = Key::Affinity {
            host: host.to_string(),
            cidr,
        };
        aff.value.state = AffinityState::Confirmed;
        match self
            .client
            .update_value(&key, &aff.value, &aff.revision)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Conflict { .. }) => {
                // Someone else (another task on this node) moved it; fine if
                // it is now confirmed.
                match self.client.get_value::<BlockAffinitySpec>(&key).await? {
                    Some(v) if affinity_confirmed(&v.value) => Ok(()),
                    _ => Err(budget.give_up(&key)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Claims one unclaimed block from the pools (two-phase, see the module
    /// docs). `Ok(None)`: no block is left.
    pub(super) async fn claim_block(
        &self,
        budget: &Budget,
        host: &str,
        pools: &[&PoolConfig],
    ) -> Result<Option<IpNetwork>, ClaimError> {
        let taken: HashSet<IpNetwork> = self
            .client
            .backend()
            .list(&ListKey::Blocks)
            .await
            .map_err(IpamError::from)?
            .0
            .into_iter()
            .filter_map(|kv| match kv.key {
                Key::Block { cidr } => Some(cidr),
                _ => None,
            })
            .collect();
        for pool in pools {
            let in_pool: HashSet<IpNetwork> = taken
                .iter()
                .filter(|b| pool.cidr.contains(b.network()))
                .copied()
                .collect();
            if let Some(cidr) = pools::free_blocks(pool, host, &in_pool, 1)
                .into_iter()
                .next()
            {
                return self.claim(budget, host, cidr).await.map(Some);
            }
        }
        Ok(None)
    }

    pub(super) async fn claim(
        &self,
        budget: &Budget,
        host: &str,
        cidr: IpNetwork,
    ) -> Result<IpNetwork, ClaimError> {
        let aff_key = Key::Affinity {
            host: host.to_string(),
            cidr,
        };
        let pending = BlockAffinitySpec::pending(host, &cidr);
        // Phase 1: pending affinity. One that exists already is ours, from
        // an interrupted claim or a concurrent one on this node: reuse it.
        match self.client.create_value(&aff_key, &pending).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(IpamError::from(e).into()),
        }
        // Phase 2: the block.
        let block = Block::new(cidr, host);
        match self
            .client
            .create_value(&block_key(cidr), &block.spec)
            .await
        {
            Ok(_) => {}
            Err(Error::AlreadyExists { .. }) => {
                let existing = self
                    .client
                    .get_value::<IPAMBlockSpec>(&block_key(cidr))
                    .await
                    .map_err(IpamError::from)?;
                let ours = existing.is_some_and(|b| {
                    b.value.affinity.as_deref() == Some(block::host_affinity(host).as_str())
                });
                if !ours {
                    tracing::debug!(%cidr, host, "block claimed by another node first");
                    if let Err(e) = self.client.delete_key(&aff_key, None).await {
                        tracing::warn!(%cidr, error = %e, "could not remove our pending affinity");
                    }
                    return Err(ClaimError::Lost(cidr));
                }
            }
            Err(e) => return Err(IpamError::from(e).into()),
        }
        // Phase 3: confirm.
        let current = self
            .client
            .get_value::<BlockAffinitySpec>(&aff_key)
            .await
            .map_err(IpamError::from)?;
        match current {
            Some(v) if affinity_confirmed(&v.value) => {}
            Some(v) => self.confirm(budget, host, cidr, v).await?,
            None => {
                // Our affinity vanished (released concurrently): recreate it
                // confirmed, the block is ours.
                let mut conf = pending;
                conf.state = AffinityState::Confirmed;
                match self.client.create_value(&aff_key, &conf).await {
                    Ok(_) | Err(Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(IpamError::from(e).into()),
                }
            }
        }
        tracing::info!(%cidr, host, "claimed block");
        Ok(cidr)
    }
}

pub(super) enum ClaimError {
    /// Another node won this block; try again.
    Lost(IpNetwork),
    Ipam(IpamError),
}

impl From<IpamError> for ClaimError {
    fn from(e: IpamError) -> Self {
        ClaimError::Ipam(e)
    }
}
