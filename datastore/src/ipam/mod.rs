//! IPAM, modelled on Calico's.
//!
//! Each node claims blocks (a /26 by default) of an enabled pool whose
//! nodeSelector matches it, and hands out pod addresses from its own blocks
//! by *handle* (`k8s-pod-network.<containerID>` for a pod). Every write is a
//! compare-and-swap; a lost race re-reads and retries, a bounded number of
//! times, so contention shows up as an error and never as a hang.
//!
//! Claiming a block is two-phase, so a crash at any point leaves nothing
//! that a later claim cannot repair:
//! 1. create the node's affinity to the block, state `pending`;
//! 2. create the block itself, affine to the node (if another node created
//!    it first, delete our pending affinity and try another block);
//! 3. mark the affinity `confirmed`. Only confirmed blocks are used (and
//!    later advertised over BGP).
//!
//! Allocating writes the handle *before* the block: a crash in between
//! leaves a handle that counts an address its block does not hold, which
//! releasing the handle cleans up. The other order could leave an address
//! allocated with no handle to release it by — a leak.
//!
//! Borrowing (allocating from another node's block when no block is left)
//! is off by default: strict affinity, so every pod address lies in a block
//! its own node advertises. An `IPAMConfiguration` with `strictAffinity:
//! false` turns it on, as in Calico.

pub mod block;
pub mod pools;
mod tunnel;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnetwork::IpNetwork;
use ippool_crd::{
    AffinityState, AllowedUse, BlockAffinitySpec, IPAMBlockSpec, IPAMConfigurationSpec,
    IPAMHandleSpec, IPPool, Node, PoolConfig,
};

use crate::{Client, Error, Key, ListKey, Versioned};
use block::{Block, CorruptBlock};
pub use pools::Family;
use pools::Skipped;

/// Calico's handle prefix for pod addresses.
pub const POD_HANDLE_PREFIX: &str = "k8s-pod-network.";

/// The handle of a pod's addresses, from its container ID.
pub fn pod_handle(container_id: &str) -> String {
    format!("{POD_HANDLE_PREFIX}{container_id}")
}

/// The handle of a node's IPIP tunnel address.
pub fn ipip_tunnel_handle(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Blocks one node may own per IP family, unless the datastore's
    /// IPAMConfiguration says otherwise.
    pub max_blocks_per_host: usize,
    /// No borrowing from other nodes' blocks, unless the datastore's
    /// IPAMConfiguration says otherwise.
    pub strict_affinity: bool,
    /// Compare-and-swap attempts per operation before giving up.
    pub max_attempts: usize,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_blocks_per_host: 20,
            strict_affinity: true,
            max_attempts: 200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(
        "no {family} pool can serve node {host:?}{reasons}; create a pool or fix its nodeSelector / disabled / allowedUses"
    )]
    NoPool {
        family: Family,
        host: String,
        reasons: String,
    },
    #[error(
        "{family} pool(s) {pools} have no free addresses for node {host:?}: every block is claimed and full{hint}"
    )]
    Exhausted {
        family: Family,
        host: String,
        pools: String,
        hint: &'static str,
    },
    #[error(
        "node {host:?} already owns {limit} {family} blocks (maxBlocksPerHost) and all are full; raise maxBlocksPerHost in the IPAMConfiguration or use a larger blockSize"
    )]
    BlockLimit {
        family: Family,
        host: String,
        limit: usize,
    },
    #[error("{0} is not inside any IP pool")]
    NotInPool(IpAddr),
    #[error("{0} is already allocated")]
    InUse(IpAddr),
    #[error(
        "gave up on {what} after {attempts} conflicting writes; the datastore is heavily contended, retry later"
    )]
    Contention { what: String, attempts: usize },
    #[error(transparent)]
    Corrupt(#[from] CorruptBlock),
    #[error(transparent)]
    Datastore(#[from] Error),
}

/// What to allocate.
#[derive(Debug, Clone, Default)]
pub struct AssignRequest {
    pub handle: String,
    pub host: String,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Stored with each address (Calico: `namespace`, `pod`, `node`).
    pub attrs: BTreeMap<String, String>,
    /// Pool names or CIDRs to use; empty means every eligible pool.
    pub pools_v4: Vec<String>,
    pub pools_v6: Vec<String>,
    /// `Workload` for pods, `Tunnel` for tunnel addresses.
    pub used_for: Option<AllowedUse>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    pub v4: Vec<IpAddr>,
    pub v6: Vec<IpAddr>,
}

/// The effective settings for one operation.
#[derive(Debug, Clone, Copy)]
struct Effective {
    max_blocks: usize,
    strict: bool,
}

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

/// IPAM over a datastore client. Cheap to clone.
#[derive(Clone)]
pub struct Ipam {
    client: Client,
    opts: IpamOptions,
    /// Last block per (host, family) that had room: tried first next time,
    /// so a node with many full blocks does not re-read them all per pod.
    hint: std::sync::Arc<Mutex<BTreeMap<(String, bool), IpNetwork>>>,
}

fn block_key(cidr: IpNetwork) -> Key {
    Key::Block { cidr }
}

fn affinity_confirmed(a: &BlockAffinitySpec) -> bool {
    a.state == AffinityState::Confirmed && !a.deleted
}

impl Ipam {
    pub fn new(client: Client) -> Self {
        Self::with_options(client, IpamOptions::default())
    }

    pub fn with_options(client: Client, opts: IpamOptions) -> Self {
        Ipam {
            client,
            opts,
            hint: Default::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn contention(&self, what: impl Into<String>) -> IpamError {
        IpamError::Contention {
            what: what.into(),
            attempts: self.opts.max_attempts,
        }
    }

    async fn effective(&self) -> Result<Effective, IpamError> {
        let cfg = self
            .client
            .get_value::<IPAMConfigurationSpec>(&Key::IpamConfig)
            .await?;
        Ok(match cfg {
            None => Effective {
                max_blocks: self.opts.max_blocks_per_host,
                strict: self.opts.strict_affinity,
            },
            Some(v) => Effective {
                // Calico: 0 means no limit.
                max_blocks: match v.value.max_blocks_per_host {
                    Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                    Some(_) => usize::MAX,
                    None => self.opts.max_blocks_per_host,
                },
                strict: v.value.strict_affinity,
            },
        })
    }

    /// Valid pools; an invalid one is skipped with a warning, so one bad
    /// pool cannot stop allocation from the good ones.
    pub async fn pools(&self) -> Result<Vec<PoolConfig>, IpamError> {
        let mut out = Vec::new();
        for p in self.client.list::<IPPool>().await? {
            match p.config() {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::warn!(pool = ?p.metadata.name, error = %e, "ignoring invalid IPPool")
                }
            }
        }
        Ok(out)
    }

    async fn node_labels(&self, host: &str) -> Result<BTreeMap<String, String>, IpamError> {
        Ok(self
            .client
            .get::<Node>(host)
            .await?
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default())
    }

    /// Allocates addresses for a handle on a node. All or nothing: if any
    /// part fails, what was taken is given back before the error returns.
    pub async fn auto_assign(&self, req: &AssignRequest) -> Result<Assigned, IpamError> {
        crate::key::check_name("IPAM handle", &req.handle)?;
        crate::key::check_name("node name", &req.host)?;
        let eff = self.effective().await?;
        let pools = self.pools().await?;
        let labels = self.node_labels(&req.host).await?;
        let used_for = req.used_for.unwrap_or(AllowedUse::Workload);
        let mut out = Assigned::default();
        let families = [
            (Family::V4, req.num_v4, &req.pools_v4),
            (Family::V6, req.num_v6, &req.pools_v6),
        ];
        for (family, n, requested) in families {
            if n == 0 {
                continue;
            }
            let (ok, skipped) = pools::eligible(&pools, family, used_for, &labels, requested);
            let result = if ok.is_empty() {
                Err(no_pool(family, &req.host, &skipped, requested))
            } else {
                self.assign_family(family, n, req, &ok, eff).await
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
        family: Family,
        n: usize,
        req: &AssignRequest,
        pools: &[&PoolConfig],
        eff: Effective,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let mut got: Vec<IpAddr> = Vec::with_capacity(n);
        let hint_key = (req.host.clone(), family == Family::V4);
        for _ in 0..self.opts.max_attempts {
            let mut affine = self.affine_blocks(&req.host, family, pools).await?;
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
                    .assign_in_block(*cidr, want, req, Some(&req.host))
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
                if !eff.strict && self.borrow(&mut got, n, req, pools).await? {
                    return Ok(got);
                }
                self.release_quietly(&got).await;
                return Err(IpamError::BlockLimit {
                    family,
                    host: req.host.clone(),
                    limit: eff.max_blocks,
                });
            }
            match self.claim_block(&req.host, pools).await {
                Ok(Some(_)) | Err(ClaimError::Lost) => continue,
                Ok(None) => {
                    if !eff.strict && self.borrow(&mut got, n, req, pools).await? {
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
            }
        }
        self.release_quietly(&got).await;
        Err(self.contention(format!("allocating for {}", req.handle)))
    }

    async fn release_quietly(&self, ips: &[IpAddr]) {
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
        got: &mut Vec<IpAddr>,
        n: usize,
        req: &AssignRequest,
        pools: &[&PoolConfig],
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
            got.extend(self.assign_in_block(cidr, n - got.len(), req, None).await?);
            if got.len() == n {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Confirmed blocks of `host` in the given pools and family. A pending
    /// affinity whose block exists and is ours (a claim interrupted after
    /// step 2) is confirmed here.
    async fn affine_blocks(
        &self,
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
                self.confirm(host, cidr, v).await?;
                out.push(cidr);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn confirm(
        &self,
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
                    _ => Err(self.contention(format!("confirming {key}"))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Allocates up to `want` addresses in one block. With `owner`, only if
    /// the block is still affine to that node.
    async fn assign_in_block(
        &self,
        cidr: IpNetwork,
        want: usize,
        req: &AssignRequest,
        owner: Option<&str>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        for _ in 0..self.opts.max_attempts {
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
            let ips = b.assign(want, &req.handle, &req.attrs);
            if ips.is_empty() {
                return Ok(ips);
            }
            self.adjust_handle(&req.handle, cidr, ips.len() as i64)
                .await?;
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => return Ok(ips),
                Err(e) => {
                    if let Err(he) = self
                        .adjust_handle(&req.handle, cidr, -(ips.len() as i64))
                        .await
                    {
                        tracing::warn!(handle = %req.handle, error = %he,
                            "could not undo a handle count; releasing the handle cleans it up");
                    }
                    match e {
                        Error::Conflict { .. } => continue,
                        Error::NotFound { .. } => return Ok(Vec::new()),
                        other => return Err(other.into()),
                    }
                }
            }
        }
        Err(self.contention(format!("allocating in block {cidr}")))
    }

    /// Adds `delta` to the handle's count for a block, creating the handle
    /// or deleting it when nothing is left.
    async fn adjust_handle(
        &self,
        handle: &str,
        cidr: IpNetwork,
        delta: i64,
    ) -> Result<(), IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        let block = cidr.to_string();
        for _ in 0..self.opts.max_attempts {
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
                        Err(Error::AlreadyExists { .. }) => continue,
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
                        Err(Error::Conflict { .. } | Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(self.contention(format!("updating handle {handle}")))
    }

    /// Claims one unclaimed block from the pools (two-phase, see the module
    /// docs). `Ok(None)`: no block is left.
    async fn claim_block(
        &self,
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
                return self.claim(host, cidr).await.map(Some);
            }
        }
        Ok(None)
    }

    async fn claim(&self, host: &str, cidr: IpNetwork) -> Result<IpNetwork, ClaimError> {
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
                    return Err(ClaimError::Lost);
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
            Some(v) => self.confirm(host, cidr, v).await?,
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
        for _ in 0..self.opts.max_attempts {
            let existing = self.client.get_value::<IPAMBlockSpec>(&key).await?;
            let Some(v) = existing else {
                match self.claim(host, cidr).await {
                    Ok(_) | Err(ClaimError::Lost) => continue,
                    Err(ClaimError::Ipam(e)) => return Err(e),
                }
            };
            let mut b = Block::parse(v.value)?;
            if !b.assign_ip(ip, handle, attrs) {
                return Err(IpamError::InUse(ip));
            }
            self.adjust_handle(handle, cidr, 1).await?;
            match self.client.update_value(&key, &b.spec, &v.revision).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let _ = self.adjust_handle(handle, cidr, -1).await;
                    match e {
                        Error::Conflict { .. } | Error::NotFound { .. } => continue,
                        other => return Err(other.into()),
                    }
                }
            }
        }
        Err(self.contention(format!("allocating {ip}")))
    }

    /// Releases everything a handle holds; returns the addresses freed. A
    /// handle that does not exist releases nothing and is not an error (CNI
    /// DEL must be idempotent).
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        let key = Key::Handle {
            id: handle.to_string(),
        };
        key.validate()?;
        let mut freed = Vec::new();
        for _ in 0..self.opts.max_attempts {
            let Some(h) = self.client.get_value::<IPAMHandleSpec>(&key).await? else {
                return Ok(freed);
            };
            for cidr in h.value.block.keys() {
                let Ok(cidr) = cidr.parse::<IpNetwork>() else {
                    tracing::warn!(handle, block = %cidr, "handle names an unparsable block");
                    continue;
                };
                freed.extend(self.release_handle_in_block(handle, cidr).await?);
            }
            match self.client.delete_key(&key, Some(&h.revision)).await {
                Ok(()) | Err(Error::NotFound { .. }) => return Ok(freed),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.contention(format!("releasing handle {handle}")))
    }

    async fn release_handle_in_block(
        &self,
        handle: &str,
        cidr: IpNetwork,
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        for _ in 0..self.opts.max_attempts {
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
                Err(Error::Conflict { .. }) => continue,
                Err(Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.contention(format!("releasing {handle} in block {cidr}")))
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
        let mut freed = Vec::new();
        for (cidr, ips) in by_block {
            freed.extend(self.release_in_block(cidr, &ips).await?);
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
        cidr: IpNetwork,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let key = block_key(cidr);
        for _ in 0..self.opts.max_attempts {
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
                        self.adjust_handle(&h, cidr, -n).await?;
                    }
                    return Ok(freed);
                }
                Err(Error::Conflict { .. }) => continue,
                Err(Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.contention(format!("releasing addresses in block {cidr}")))
    }

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

enum ClaimError {
    /// Another node won the block; try again.
    Lost,
    Ipam(IpamError),
}

impl From<IpamError> for ClaimError {
    fn from(e: IpamError) -> Self {
        ClaimError::Ipam(e)
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
        });
    }
    IpamError::NoPool {
        family,
        host: host.to_string(),
        reasons,
    }
}
