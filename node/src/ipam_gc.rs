//! IPAM garbage collection, once per cluster (run by the leader of the
//! cluster tasks, [`crate::cluster_tasks`]), as Calico's kube-controllers
//! do it:
//!
//! - an address whose pod no longer exists, or a tunnel address whose node
//!   no longer exists ([`datastore::ipam::leaks`]), is released once it has
//!   been seen leaking in every round for the grace period — never at first
//!   sight, so a pod whose ADD is still under way (in etcd, its
//!   WorkloadEndpoint is written after its address) is left alone;
//! - a deleted node's blocks are freed once no address remains in them,
//!   with their affinities;
//! - a handle that holds no address is deleted after the same grace;
//! - in etcd, a deleted node's WorkloadEndpoints are deleted after the
//!   same grace (as `calicoctl delete node` does in Calico): nothing else
//!   would, and felix puts every endpoint's addresses in the policy sets
//!   its selectors match, so a stale one would let its labels follow its
//!   addresses to the next pod that gets them.
//!
//! A round that cannot read all of IPAM, the pods and the nodes releases
//! nothing: a partial view would call live addresses leaks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use datastore::Client;
use datastore::ipam::{Ipam, IpamError};
use tokio::time::Instant;

/// Timing of the collector.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a round runs.
    pub interval: Duration,
    /// How long an address (or empty handle) must be seen leaking, round
    /// after round, before it is released. Calico's default: 15 minutes.
    pub grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            interval: Duration::from_secs(60),
            grace: Duration::from_secs(15 * 60),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Leaked addresses released.
    pub released: Vec<IpAddr>,
    /// Leaks seen but still inside their grace period.
    pub waiting: usize,
    /// Blocks of deleted nodes freed.
    pub blocks_freed: Vec<String>,
    /// Empty handles deleted.
    pub handles_deleted: Vec<String>,
    /// Deleted nodes' WorkloadEndpoints deleted, as `namespace/name`.
    pub endpoints_deleted: Vec<String>,
}

/// The collector's memory: when each leak was first seen (in a row).
#[derive(Debug, Default)]
pub struct Collector {
    leaks: HashMap<(IpAddr, Option<String>), Instant>,
    handles: HashMap<String, Instant>,
    endpoints: HashMap<(String, String), Instant>,
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    /// One round at `now`.
    pub async fn round(
        &mut self,
        ipam: &Ipam,
        grace: Duration,
        now: Instant,
    ) -> Result<Round, IpamError> {
        let report = ipam.leak_report().await?;
        let mut round = Round::default();

        // A leak that was not seen this round starts over if it comes back.
        let current: HashMap<(IpAddr, Option<String>), ()> = report
            .leaked_addresses
            .iter()
            .map(|a| ((a.ip, a.handle.clone()), ()))
            .collect();
        self.leaks.retain(|k, _| current.contains_key(k));
        for a in &report.leaked_addresses {
            let first = *self.leaks.entry((a.ip, a.handle.clone())).or_insert(now);
            if now.duration_since(first) < grace {
                round.waiting += 1;
                continue;
            }
            // By handle: everything the dead pod held, and nothing handed
            // to another pod since (that has another handle).
            let freed = match &a.handle {
                Some(h) => ipam.release_by_handle(h).await?,
                None => ipam.release_ips(&[a.ip]).await?,
            };
            tracing::info!(ip = %a.ip, handle = ?a.handle, attributes = ?a.attributes,
                freed = ?freed, "IPAM GC: released a leaked address");
            round.released.extend(freed);
            self.leaks.remove(&(a.ip, a.handle.clone()));
        }

        let empty: HashMap<&str, ()> = report
            .handles_without_addresses
            .iter()
            .map(|h| (h.as_str(), ()))
            .collect();
        self.handles.retain(|h, _| empty.contains_key(h.as_str()));
        for h in &report.handles_without_addresses {
            let first = *self.handles.entry(h.clone()).or_insert(now);
            if now.duration_since(first) >= grace && ipam.delete_empty_handle(h).await? {
                tracing::info!(handle = %h, "IPAM GC: deleted a handle that held no address");
                round.handles_deleted.push(h.clone());
                self.handles.remove(h);
            }
        }

        // A deleted node's WorkloadEndpoints.
        let stale = ipam.endpoints_of_deleted_nodes().await?;
        let seen: HashMap<(&str, &str), ()> = stale
            .iter()
            .map(|(ns, n, _)| ((ns.as_str(), n.as_str()), ()))
            .collect();
        self.endpoints
            .retain(|(ns, n), _| seen.contains_key(&(ns.as_str(), n.as_str())));
        for (ns, name, rev) in &stale {
            let key = (ns.clone(), name.clone());
            let first = *self.endpoints.entry(key.clone()).or_insert(now);
            if now.duration_since(first) >= grace
                && ipam.delete_endpoint(ns, name, rev.as_deref()).await?
            {
                tracing::info!(namespace = %ns, endpoint = %name,
                    "IPAM GC: deleted a deleted node's workload endpoint");
                round.endpoints_deleted.push(format!("{ns}/{name}"));
                self.endpoints.remove(&key);
            }
        }

        // A deleted node's blocks, once empty (the leaks above empty them).
        for node in &report.affinities_of_deleted_nodes {
            for cidr in ipam.release_empty_blocks(node).await? {
                tracing::info!(%node, block = %cidr, "IPAM GC: freed a deleted node's block");
                round.blocks_freed.push(cidr.to_string());
            }
        }
        Ok(round)
    }
}

/// Runs rounds until the task is dropped; errors are logged and the next
/// round tries again.
pub async fn run(client: Client, opts: Options) {
    let ipam = Ipam::new(client);
    let mut gc = Collector::new();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match gc.round(&ipam, opts.grace, Instant::now()).await {
            Ok(r) if r != Round::default() => {
                tracing::info!(
                    released = r.released.len(),
                    waiting = r.waiting,
                    blocks_freed = r.blocks_freed.len(),
                    handles_deleted = r.handles_deleted.len(),
                    endpoints_deleted = r.endpoints_deleted.len(),
                    "IPAM GC round"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "IPAM GC round failed; nothing was released"),
        }
    }
}
