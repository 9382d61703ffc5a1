//! Handles: the count, per block, of the addresses one handle (a pod, a
//! tunnel) holds, kept beside the blocks so a handle's addresses can be
//! found and released without reading every block.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use ippool_crd::{IPAMBlockSpec, IPAMHandleSpec};

use super::block::Block;
use super::retry::Budget;
use super::{Ipam, IpamError, block_key};
use crate::{Error, Key};

impl Ipam {
    /// Addresses held by a handle.
    pub async fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        key.validate()?;
        let Some(h) = self.client.get_value::<IPAMHandleSpec>(&key).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in h
            .value
            .block
            .keys()
            .filter_map(|c| c.parse::<IpNetwork>().ok())
        {
            if let Some(b) = self
                .client
                .get_value::<IPAMBlockSpec>(&block_key(cidr))
                .await?
            {
                out.extend(Block::parse(b.value)?.ips_of(handle));
            }
        }
        Ok(out)
    }

    /// Adds `delta` to the handle's count for a block, creating the handle
    /// or deleting it when nothing is left.
    pub(super) async fn adjust_handle(
        &self,
        budget: &Budget,
        handle: &str,
        cidr: IpNetwork,
        delta: i64,
    ) -> Result<(), IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        let block = cidr.to_string();
        loop {
            match self.client.get_value::<IPAMHandleSpec>(&key).await? {
                None => {
                    if delta <= 0 {
                        return Ok(());
                    }
                    let spec = IPAMHandleSpec {
                        handle_id: handle.to_string(),
                        block: BTreeMap::from([(block.clone(), delta as usize)]),
                        deleted: false,
                    };
                    match self.client.create_value(&key, &spec).await {
                        Ok(_) => return Ok(()),
                        Err(Error::AlreadyExists { .. }) => budget.conflict(&key).await?,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(mut v) => {
                    let count = v.value.block.get(&block).copied().unwrap_or(0) as i64 + delta;
                    if count > 0 {
                        v.value.block.insert(block.clone(), count as usize);
                    } else {
                        v.value.block.remove(&block);
                    }
                    let r = if v.value.block.is_empty() {
                        self.client.delete_key(&key, Some(&v.revision)).await
                    } else {
                        self.client
                            .update_value(&key, &v.value, &v.revision)
                            .await
                            .map(|_| ())
                    };
                    match r {
                        Ok(()) => return Ok(()),
                        Err(Error::Conflict { .. } | Error::NotFound { .. }) => {
                            budget.conflict(&key).await?
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}
