//! The once-per-cluster tasks: run by the one calico-node that leads the
//! election ([`datastore::leader`], lock
//! [`CLUSTER_TASKS_LOCK`](datastore::leader::CLUSTER_TASKS_LOCK)), in
//! either datastore: IPPool status ([`pool_status`]) and the IPAM
//! garbage collector ([`ipam_gc`]: leaked addresses, deleted nodes'
//! blocks and tunnel addresses).
//!
//! ```text
//!   Elector ── watch<Leadership> ──► run: leading ─► JoinSet { pool_status::run, ... }
//!                                         lost, or a new term ─► abort them all, wait
//! ```
//!
//! A new term restarts the tasks even if this node never saw itself stop
//! leading: another node may have led in between, and the tasks start
//! from a fresh look at the datastore rather than from what they knew.

use datastore::Client;
use datastore::leader::Leadership;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{ipam_gc, pool_status};

/// Runs the tasks whenever `leadership` says this node leads; stops them
/// when it no longer does. Returns when the election ends.
pub async fn run(
    mut leadership: watch::Receiver<Leadership>,
    client: Client,
    node: String,
    gc: ipam_gc::Options,
) {
    loop {
        let term = match leadership.wait_for(|l| l.leading).await {
            Ok(l) => l.term,
            Err(_) => return,
        };
        tracing::info!(%node, term, "leading the cluster tasks: this node now writes IPPool status and collects IPAM garbage");
        let mut tasks = JoinSet::new();
        start(&mut tasks, &client, &gc);
        let ended = leadership
            .wait_for(|l| !l.leading || l.term != term)
            .await
            .is_err();
        tasks.shutdown().await;
        tracing::info!(%node, term, "cluster tasks stopped: this node no longer leads");
        if ended {
            return;
        }
    }
}

/// The tasks one leader runs.
fn start(tasks: &mut JoinSet<()>, client: &Client, gc: &ipam_gc::Options) {
    tasks.spawn(pool_status::run(
        client.clone(),
        pool_status::Options::default(),
    ));
    tasks.spawn(ipam_gc::run(client.clone(), gc.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn leading(term: u64) -> Leadership {
        Leadership {
            leading: true,
            term,
            holder: Some("n".into()),
        }
    }

    /// A client whose datastore refuses at once: the pool status writer
    /// runs (and fails its rounds) without anything to talk to.
    async fn client() -> Client {
        datastore::connect_etcd("http://127.0.0.1:1")
            .await
            .expect("client")
    }

    #[tokio::test]
    async fn the_tasks_follow_the_leadership_and_stop_with_the_election() {
        let (tx, rx) = watch::channel(Leadership::default());
        let runner = tokio::spawn(run(
            rx,
            client().await,
            "n".into(),
            ipam_gc::Options::default(),
        ));
        tx.send_replace(leading(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(Leadership::default());
        tx.send_replace(leading(2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!runner.is_finished());
        // The elector goes away (dropped): the runner ends, tasks stopped.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("the runner ends with the election")
            .expect("no panic");
    }
}
