//! The policy source: watches the datastore's policy resources and
//! endpoints, keeps an [`Index`] of them, and after each batch of events
//! publishes a complete [`PolicySnapshot`] on a `tokio::sync::watch`
//! channel for the nftables dataplane.
//!
//! ```text
//!  Kubernetes: NetworkPolicy (networking.k8s.io), Calico NetworkPolicy,
//!              GlobalNetworkPolicy, Pods, Namespaces
//!  etcd:       Calico NetworkPolicy, GlobalNetworkPolicy,
//!              WorkloadEndpoints, Profiles
//!     │ one resumable watch per kind (datastore crate: list, watch,
//!     │ resume, relist with a fresh Snapshot)
//!     ▼
//!  events ──► batch (what arrives together: ≤ 1 ms apart, ≤ 5 ms in all)
//!         ──► Index::apply ──changed?──► Index::snapshot ──► watch<Arc<PolicySnapshot>>
//! ```
//!
//! - Event-driven: the first event of a batch is applied at once; the
//!   batch closes when nothing more arrives within [`QUIET`] or after
//!   [`BATCH_MAX`]. A batch that changes nothing (a pod's status
//!   heartbeat) publishes nothing.
//! - `synced` only once every kind has been listed; nothing is published
//!   before (the receiver holds the default, unsynced snapshot).
//! - A broken watch resumes or relists in the datastore crate; a relist
//!   arrives as one complete Snapshot of its kind, so no partial view is
//!   ever published. The interruptions are logged, once per distinct
//!   error until the watch answers again.
//! - A policy that does not convert is logged once per change and left
//!   out; it is in the snapshot's `errors`.
//! - `local`: the endpoints on this node, with their host interface
//!   (`cali` + hash, [`crate::workload::naming`]; in etcd, the endpoint's
//!   `interfaceName`).
//!
//! In etcd mode felix also writes the WorkloadEndpoint of each pod it adds
//! ([`wep`]); see there for where the labels come from.

mod index;
pub mod wep;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::kubernetes::objects::{Namespace, Pod};
use datastore::{Client, DatastoreType, Resource, ResourceEvent};
use futures::stream::{BoxStream, SelectAll};
use futures::{StreamExt, TryStreamExt};
use ippool_crd::{GlobalNetworkPolicy, NetworkPolicy, Profile, WorkloadEndpoint};
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use tokio::sync::watch;

pub use index::{Change, Feed, Index};

use super::PolicySnapshot;

/// A batch closes when no event follows within this.
pub const QUIET: Duration = Duration::from_millis(1);
/// ... or this long after its first event.
pub const BATCH_MAX: Duration = Duration::from_millis(5);
/// At most this many events in one batch (a relist of a big cluster is
/// one event).
const BATCH_EVENTS: usize = 10_000;

/// What the source is told.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// This node's name: endpoints on it are `local`.
    pub node: String,
    /// The host-side interface prefix (`cali`).
    pub iface_prefix: String,
}

/// Starts the policy source on `client` (a `datastore` of that type).
/// The receiver holds an unsynced empty snapshot until every kind has
/// been listed, then the newest snapshot. The task ends when every
/// receiver is dropped.
pub fn spawn(
    client: Client,
    datastore: DatastoreType,
    cfg: SourceConfig,
) -> watch::Receiver<Arc<PolicySnapshot>> {
    let (tx, rx) = watch::channel(Arc::new(PolicySnapshot::default()));
    tokio::spawn(run(client, datastore, cfg, tx));
    rx
}

type Item = (Feed, Result<Change, datastore::Error>);

async fn open<R: Resource>(
    client: &Client,
    feed: Feed,
    wrap: fn(ResourceEvent<R>) -> Change,
) -> Result<BoxStream<'static, Item>, datastore::Error> {
    let w = client.watch::<R>(None).await?;
    Ok(w.map_ok(wrap).map(move |r| (feed, r)).boxed())
}

async fn open_feed(
    client: &Client,
    feed: Feed,
) -> Result<BoxStream<'static, Item>, datastore::Error> {
    match feed {
        Feed::KubernetesPolicies => {
            open::<KubeNetworkPolicy>(client, feed, Change::KubernetesPolicy).await
        }
        Feed::CalicoPolicies => open::<NetworkPolicy>(client, feed, Change::CalicoPolicy).await,
        Feed::GlobalPolicies => {
            open::<GlobalNetworkPolicy>(client, feed, Change::GlobalPolicy).await
        }
        Feed::Pods => open::<Pod>(client, feed, Change::Pod).await,
        Feed::Namespaces => open::<Namespace>(client, feed, Change::Namespace).await,
        Feed::WorkloadEndpoints => {
            open::<WorkloadEndpoint>(client, feed, Change::WorkloadEndpoint).await
        }
        Feed::Profiles => open::<Profile>(client, feed, Change::Profile).await,
    }
}

/// The last error each feed reported, so a datastore that stays down is
/// logged once, not at every retry.
#[derive(Default)]
struct Complaints(BTreeMap<Feed, String>);

impl Complaints {
    fn report(&mut self, feed: Feed, e: &datastore::Error) {
        let text = e.to_string();
        if self.0.get(&feed) != Some(&text) {
            tracing::warn!(watch = feed.name(), error = %text,
                "policy watch interrupted; it resumes by itself (nothing is enforced from a partial view)");
            self.0.insert(feed, text);
        }
    }

    fn answered(&mut self, feed: Feed) {
        if self.0.remove(&feed).is_some() {
            tracing::info!(watch = feed.name(), "policy watch answering again");
        }
    }
}

async fn run(
    client: Client,
    datastore: DatastoreType,
    cfg: SourceConfig,
    tx: watch::Sender<Arc<PolicySnapshot>>,
) {
    let kubernetes = datastore == DatastoreType::Kubernetes;
    let mut index = Index::new(&cfg.node, &cfg.iface_prefix, kubernetes);
    let mut feeds: SelectAll<BoxStream<'static, Item>> = SelectAll::new();
    for feed in index.feeds() {
        match open_feed(&client, *feed).await {
            Ok(s) => feeds.push(s),
            // Only a request the datastore can never serve fails here
            // (the watch itself retries); the view never syncs.
            Err(e) => tracing::error!(watch = feed.name(), error = %e,
                "cannot watch; policy will not be enforced"),
        }
    }
    let mut complaints = Complaints::default();
    let mut apply = |index: &mut Index, (feed, r): Item| -> bool {
        match r {
            Ok(change) => {
                complaints.answered(feed);
                index.apply(change)
            }
            Err(e) => {
                complaints.report(feed, &e);
                false
            }
        }
    };
    loop {
        let first = tokio::select! {
            ev = feeds.next() => ev,
            _ = tx.closed() => return,
        };
        let Some(first) = first else {
            tracing::error!("every policy watch has ended; policy stays as last published");
            tx.closed().await;
            return;
        };
        let started = Instant::now();
        let mut changed = apply(&mut index, first);
        let mut events = 1;
        while events < BATCH_EVENTS {
            let left = BATCH_MAX.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(QUIET.min(left), feeds.next()).await {
                Ok(Some(item)) => {
                    changed |= apply(&mut index, item);
                    events += 1;
                }
                _ => break,
            }
        }
        if changed && index.synced() {
            let snapshot = index.snapshot();
            if !tx.borrow().synced {
                tracing::info!(
                    endpoints = snapshot.endpoints.len(),
                    local = snapshot.local.len(),
                    policies = snapshot.policies.policies().len(),
                    errors = snapshot.errors.len(),
                    "policy source in sync: every kind listed"
                );
            }
            tracing::debug!(
                events,
                endpoints = snapshot.endpoints.len(),
                local = snapshot.local.len(),
                policies = snapshot.policies.policies().len(),
                errors = snapshot.errors.len(),
                took = ?started.elapsed(),
                "policy snapshot"
            );
            tx.send_replace(Arc::new(snapshot));
        }
    }
}
