//! The consistency check over all of IPAM: every allocation with its
//! block and handle, and every place where blocks, handles and affinities
//! disagree.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{BlockAffinitySpec, IPAMBlockSpec, IPAMHandleSpec};

use super::block::Block;
use super::{Ipam, IpamError, affinity_confirmed};
use crate::{Key, ListKey};

/// One allocated address seen by [`Ipam::audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub block: IpNetwork,
    pub block_host: Option<String>,
    pub handle: Option<String>,
}

/// A consistency report over all of IPAM.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub blocks: Vec<(IpNetwork, Option<String>)>,
    pub allocations: Vec<Allocation>,
    /// Inconsistencies: handles counting addresses their blocks do not hold
    /// and vice versa, corrupt blocks, affinities without blocks.
    pub problems: Vec<String>,
}

impl Ipam {
    /// Reads all of IPAM and checks it: every allocated address, its block
    /// and handle; handles whose counts disagree with their blocks; blocks
    /// that are corrupt; confirmed affinities without a block.
    pub async fn audit(&self) -> Result<Audit, IpamError> {
        let mut audit = Audit::default();
        let blocks = self
            .client
            .list_values::<IPAMBlockSpec>(&ListKey::Blocks)
            .await?;
        let mut held: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (key, v) in blocks {
            let Key::Block { cidr } = key else { continue };
            let b = match Block::parse(v.value) {
                Ok(b) => b,
                Err(e) => {
                    audit.problems.push(e.to_string());
                    continue;
                }
            };
            let host = b.host().map(str::to_string);
            audit.blocks.push((cidr, host.clone()));
            for (ip, handle) in b.allocations() {
                if let Some(h) = handle {
                    *held.entry((h.to_string(), cidr.to_string())).or_default() += 1;
                }
                audit.allocations.push(Allocation {
                    ip,
                    block: cidr,
                    block_host: host.clone(),
                    handle: handle.map(str::to_string),
                });
            }
        }
        let handles = self
            .client
            .list_values::<IPAMHandleSpec>(&ListKey::Handles)
            .await?;
        let mut counted: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (key, v) in handles {
            let Key::Handle { id } = key else { continue };
            for (block, n) in v.value.block {
                counted.insert((id.clone(), block), n);
            }
        }
        for (k, n) in &held {
            let c = counted.get(k).copied().unwrap_or(0);
            if c != *n {
                audit.problems.push(format!(
                    "handle {} holds {n} addresses in block {} but counts {c}",
                    k.0, k.1
                ));
            }
        }
        for (k, c) in &counted {
            if !held.contains_key(k) {
                audit.problems.push(format!(
                    "handle {} counts {c} addresses in block {} that holds none for it",
                    k.0, k.1
                ));
            }
        }
        let block_set: HashSet<IpNetwork> = audit.blocks.iter().map(|(c, _)| *c).collect();
        let affs = self
            .client
            .list_values::<BlockAffinitySpec>(&ListKey::Affinities { host: None })
            .await?;
        for (key, v) in affs {
            if let Key::Affinity { host, cidr } = key
                && affinity_confirmed(&v.value)
                && !block_set.contains(&cidr)
            {
                audit.problems.push(format!(
                    "node {host} has a confirmed affinity to missing block {cidr}"
                ));
            }
        }
        Ok(audit)
    }
}
