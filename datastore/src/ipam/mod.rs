//! IPAM, modelled on Calico's.
//!
//! Each node claims blocks (a /26 by default) of an enabled pool whose
//! nodeSelector matches it, and hands out pod addresses from its own blocks
//! by *handle* (`k8s-pod-network.<containerID>` for a pod). Every write is a
//! compare-and-swap; a lost race re-reads and retries after a jittered
//! back-off, within one bound for the whole operation (see `retry`), so
//! contention shows up as an error and never as a hang.
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
//! is on by default, as in Calico (`strictAffinity: false`): the borrowing
//! node advertises each borrowed address as a /32 (/128), so it stays
//! reachable (confd). An `IPAMConfiguration` with `strictAffinity: true`
//! turns it off: then every pod address lies in a block its own node
//! advertises.
//!
//! One file per concept: `claim` (affinities and the two-phase claim),
//! `assign` (allocating by handle), `handle` (the per-handle counts),
//! `release`, `audit`; `block` and `pools` are the pure arithmetic under
//! them, `tunnel` the node's IPIP address, `retry` the one bound on
//! compare-and-swap retries.

mod assign;
mod audit;
pub mod block;
mod claim;
mod handle;
pub mod leaks;
pub mod pools;
mod release;
mod retry;
pub mod select;
mod tunnel;
pub use tunnel::TunnelKind;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnetwork::IpNetwork;
use ippool_crd::{
    AffinityState, AllowedUse, BlockAffinitySpec, IPAMConfigurationSpec, IPPool, IPReservation,
    Node, PoolConfig,
};

use crate::{Client, Error, Key};
pub use audit::{Allocation, Audit};
use block::CorruptBlock;
pub use pools::Family;
use retry::Budget;
pub use retry::DEFAULT_MAX_RETRIES;

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

/// The handle of a node's VXLAN tunnel (VTEP) address.
pub fn vxlan_tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// The IPAM handle of `node`'s IPv6 VXLAN tunnel address (Calico's).
pub fn vxlan_v6_tunnel_handle(node: &str) -> String {
    format!("vxlan-v6-tunnel-addr-{node}")
}

#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Blocks one node may own per IP family, unless the datastore's
    /// IPAMConfiguration says otherwise.
    pub max_blocks_per_host: usize,
    /// No borrowing from other nodes' blocks, unless the datastore's
    /// IPAMConfiguration says otherwise.
    pub strict_affinity: bool,
    /// Retries after a lost compare-and-swap race that one operation
    /// (`auto_assign`, `assign_ip`, `release_by_handle`, `release_ips`) may
    /// make in all, over every write it nests, before it gives up with
    /// [`IpamError::Contention`]. See [`DEFAULT_MAX_RETRIES`].
    pub max_attempts: usize,
    /// How long a claim on a tunnel address handle may stand with no
    /// address before another caller takes it over (its claimer died
    /// between claiming and allocating).
    pub tunnel_claim_timeout: std::time::Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_blocks_per_host: 20,
            strict_affinity: ippool_crd::defaults::STRICT_AFFINITY,
            max_attempts: DEFAULT_MAX_RETRIES,
            tunnel_claim_timeout: std::time::Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(
        "no {family} pool can serve node {host:?}{reasons}; create a pool or fix its nodeSelector / namespaceSelector / assignmentMode / disabled / allowedUses"
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
    /// Other writers kept changing the IPAM objects this operation needed
    /// until its retries ran out. `resource` is the one it lost on last.
    #[error(
        "gave up {what} after {attempts} conflicting writes, the last to {resource}: other writers kept changing it first; retry the request, and if this keeps happening look for two nodes sharing one NODENAME or another tool rewriting Calico's IPAM objects"
    )]
    Contention {
        what: String,
        resource: String,
        attempts: usize,
    },
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
    /// The labels of the pod's namespace, for pools' `namespaceSelector`;
    /// `None` when unknown (a pool with a namespaceSelector is then not
    /// used).
    pub namespace_labels: Option<BTreeMap<String, String>>,
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

    /// The retries one operation may make, shared by every write it nests.
    fn budget(&self, what: impl Into<String>) -> Budget {
        Budget::new(what, self.opts.max_attempts)
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

    /// Every address an IPReservation holds back from auto-assignment
    /// (invalid entries are skipped with a warning).
    pub async fn reserved(&self) -> Result<Vec<IpNetwork>, IpamError> {
        let mut out = Vec::new();
        for r in self.client.list::<IPReservation>().await? {
            if let Err(e) = r.validate() {
                tracing::warn!(error = %e, "ignoring invalid IPReservation entries");
            }
            out.extend(r.cidrs());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// felix awaits these in tonic handlers and spawned tasks, which must
    /// be `Send`, and every one holds a `&Budget` across its awaits. Never
    /// called: it is checked when it compiles.
    #[allow(dead_code)]
    fn operations_are_send(ipam: &Ipam, req: &AssignRequest, ip: IpAddr) {
        is_send(&ipam.auto_assign(req));
        is_send(&ipam.assign_ip(ip, "h", "n", &BTreeMap::new()));
        is_send(&ipam.release_by_handle("h"));
        is_send(&ipam.release_ips(&[ip]));
        is_send(&ipam.ensure_tunnel_address("n"));
    }
}
