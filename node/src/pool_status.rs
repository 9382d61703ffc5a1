//! Keeps every IPPool's `status` current (the `Allocatable` condition and
//! block usage, computed by [`datastore::pool_status::pool_statuses`]).
//!
//! ```text
//!   IPPool watch ─┐
//!   block watch ──┼─► (debounce) ─► reconcile: list pools + blocks, compute,
//!   every minute ─┘                  write the pools whose status differs
//! ```
//!
//! One calico-node in the cluster runs it: the leader of the cluster
//! tasks ([`crate::cluster_tasks`]). Should two overlap for a moment (a
//! leader that has not yet noticed its loss), they still agree: the
//! computation is deterministic and a write is a compare-and-swap on the
//! pool's resourceVersion, so the first write of a change wins, the other
//! gets a conflict, re-reads, finds nothing left to change and writes
//! nothing.

use std::time::Duration;

use datastore::pool_status::{now, pool_statuses};
use datastore::{Client, Error, ListKey};
use futures::{FutureExt, StreamExt};
use ippool_crd::{IPAMBlockSpec, IPPool};

/// Timing of the writer.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reconcile at least this often, changes or not.
    pub interval: Duration,
    /// After a change, wait this long for more before reconciling.
    pub debounce: Duration,
    /// Compare-and-swap attempts per pool and round.
    pub attempts: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            interval: Duration::from_secs(60),
            debounce: Duration::from_secs(1),
            attempts: 5,
        }
    }
}

/// Runs until the task is dropped. Errors are logged and retried on the
/// next round; they never stop the writer.
pub async fn run(client: Client, opts: Options) {
    let pools = client.watch::<IPPool>(None).await;
    let blocks = client.watch_raw(&ListKey::Blocks, None).await;
    let mut changes = match (pools, blocks) {
        // Only events trigger a round; a watch's interruptions (reported
        // as errors while it reconnects) do not.
        (Ok(p), Ok(b)) => futures::stream::select(
            p.filter_map(|e| futures::future::ready(e.ok().map(|_| ()))),
            b.filter_map(|e| futures::future::ready(e.ok().map(|_| ()))),
        )
        .boxed(),
        (p, b) => {
            if let Some(e) = p.err().or(b.err()) {
                tracing::warn!(error = %e, "pool status: cannot watch; updating every {:?}", opts.interval);
            }
            futures::stream::pending().boxed()
        }
    };
    loop {
        match reconcile(&client, &opts).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pools = n, "updated IPPool status"),
            Err(e) => tracing::warn!(error = %e, "pool status: cannot update; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            Some(()) = changes.next() => {
                tokio::time::sleep(opts.debounce).await;
                // Take whatever else arrived meanwhile.
                while let Some(Some(())) = changes.next().now_or_never() {}
            }
        }
    }
}

/// One round: computes every pool's status and writes those that differ.
/// Returns how many were written.
pub async fn reconcile(client: &Client, opts: &Options) -> Result<usize, Error> {
    let mut pools: Vec<IPPool> = client.list().await?;
    let blocks: Vec<IPAMBlockSpec> = client
        .list_values::<IPAMBlockSpec>(&ListKey::Blocks)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    let mut written = 0;
    let mut wanted = pool_statuses(&pools, &blocks, &now());
    for i in 0..pools.len() {
        for attempt in 1..=opts.attempts {
            let name = pools[i].name().to_string();
            let Some(status) = wanted.get(&name) else {
                break;
            };
            if pools[i].status.as_ref() == Some(status) {
                break;
            }
            let mut next = pools[i].clone();
            next.status = Some(status.clone());
            match client.update_status(&next).await {
                Ok(_) => {
                    written += 1;
                    break;
                }
                Err(Error::Conflict { .. }) if attempt < opts.attempts => {
                    // Someone else wrote the pool: look again.
                    match client.get::<IPPool>(&name).await? {
                        Some(fresh) => pools[i] = fresh,
                        None => break,
                    }
                    // Its spec may have changed too (disabled, say).
                    wanted = pool_statuses(&pools, &blocks, &now());
                }
                Err(Error::NotFound { .. }) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(written)
}
