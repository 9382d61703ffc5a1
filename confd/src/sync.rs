//! Keeps a [`ClusterState`] in step with the datastore and publishes the
//! node's [`NodeConfig`] whenever it changes.
//!
//! ```text
//!  datastore watches (IPPool, BGPPeer, BGPConfiguration, Node,
//!  this node's block affinities)
//!        │ one task each, events → mpsc
//!        ▼
//!  sync loop: apply to ClusterState ─► recompute ─► watch::Sender<Published>
//!        (debounced a few ms so a burst            (bird pusher, felix pusher,
//!         of events is one recompute)               file writer subscribe)
//! ```
//!
//! Nothing is published until every watch has delivered its first
//! snapshot: a config computed from half the cluster would tear down real
//! BGP sessions. After that, each change is published as soon as the
//! debounce window closes. A datastore outage leaves the last published
//! config in place (the dataplane keeps running) and the watches resume
//! where they stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use datastore::{Client, Key, ListKey, Resource, ResourceEvent, WatchEvent};
use futures::StreamExt;
use ippool_crd::{BGPConfiguration, BGPPeer, BlockAffinitySpec, IPPool, Node};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{NodeConfig, compute};
use crate::state::ClusterState;

/// How long to wait for more events before recomputing.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub node: String,
    /// Where BGP passwords live when the datastore is etcd: a directory
    /// laid out like a mounted Kubernetes secret volume,
    /// `<dir>/<secret name>/<key>`.
    pub secrets_dir: Option<PathBuf>,
}

/// What the sync loop publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Published {
    /// Not every watch has delivered its first snapshot yet.
    Syncing,
    /// The node's configuration.
    Config(Box<NodeConfig>),
    /// The datastore is synced but the node cannot be configured (it is
    /// not registered, has no address, ...).
    Error(String),
}

#[derive(Debug)]
enum Change {
    Nodes(ResourceEvent<Node>),
    Peers(ResourceEvent<BGPPeer>),
    Configs(ResourceEvent<BGPConfiguration>),
    Pools(ResourceEvent<IPPool>),
    Affinities(WatchEvent),
    /// A watch is interrupted (datastore down); it will resume.
    Interrupted(String),
}

/// The running watches and sync loop, publishing the node's
/// configuration; stops its tasks when dropped.
pub struct DatastoreSync {
    rx: watch::Receiver<Published>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DatastoreSync {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl DatastoreSync {
    /// A receiver of every published configuration (latest wins).
    pub fn subscribe(&self) -> watch::Receiver<Published> {
        self.rx.clone()
    }
}

fn spawn_watch<R, F>(client: Client, tx: mpsc::Sender<Change>, wrap: F) -> JoinHandle<()>
where
    R: Resource,
    F: Fn(ResourceEvent<R>) -> Change + Send + 'static,
{
    tokio::spawn(async move {
        // Creating the watch only fails on bad arguments; the stream itself
        // retries forever, reporting interruptions as Err items.
        let mut w = loop {
            match client.watch::<R>(None).await {
                Ok(w) => break w,
                Err(e) => {
                    let _ = tx.send(Change::Interrupted(e.to_string())).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(ev) = w.next().await {
            let change = match ev {
                Ok(ev) => wrap(ev),
                Err(e) => Change::Interrupted(e.to_string()),
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    })
}

fn spawn_affinity_watch(client: Client, node: String, tx: mpsc::Sender<Change>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let list = ListKey::Affinities { host: Some(node) };
        let mut w = loop {
            match client.watch_raw(&list, None).await {
                Ok(w) => break w,
                Err(e) => {
                    let _ = tx.send(Change::Interrupted(e.to_string())).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(ev) = w.next().await {
            let change = match ev {
                Ok(ev) => Change::Affinities(ev),
                Err(e) => Change::Interrupted(e.to_string()),
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    })
}

/// Starts watching and publishing for `opts.node`.
pub fn start(client: Client, opts: SyncOptions) -> DatastoreSync {
    let (tx, rx) = mpsc::channel(1024);
    let (pub_tx, pub_rx) = watch::channel(Published::Syncing);
    let mut tasks = vec![
        spawn_watch::<Node, _>(client.clone(), tx.clone(), Change::Nodes),
        spawn_watch::<BGPPeer, _>(client.clone(), tx.clone(), Change::Peers),
        spawn_watch::<BGPConfiguration, _>(client.clone(), tx.clone(), Change::Configs),
        spawn_watch::<IPPool, _>(client.clone(), tx.clone(), Change::Pools),
        spawn_affinity_watch(client, opts.node.clone(), tx),
    ];
    tasks.push(tokio::spawn(sync_loop(opts, rx, pub_tx)));
    DatastoreSync { rx: pub_rx, tasks }
}

/// Which watches have delivered their first snapshot.
#[derive(Default)]
struct Synced(BTreeSet<&'static str>);

impl Synced {
    const ALL: [&'static str; 5] = ["nodes", "peers", "configs", "pools", "affinities"];
    fn all(&self) -> bool {
        Self::ALL.iter().all(|k| self.0.contains(k))
    }
}

fn name_of<R: Resource>(r: &R) -> Option<String> {
    r.meta().name.clone()
}

/// Applies one event of a kind to its map, noting the kind as synced when
/// the event is its snapshot.
fn apply<R: Resource>(
    synced: &mut Synced,
    kind: &'static str,
    map: &mut BTreeMap<String, R>,
    ev: ResourceEvent<R>,
) {
    if matches!(ev, ResourceEvent::Snapshot { .. }) {
        synced.0.insert(kind);
    }
    match ev {
        ResourceEvent::Snapshot { items, .. } => {
            map.clear();
            for r in items {
                if let Some(n) = name_of(&r) {
                    map.insert(n, r);
                }
            }
        }
        ResourceEvent::Created(r) | ResourceEvent::Updated(r) => {
            if let Some(n) = name_of(&r) {
                map.insert(n, r);
            }
        }
        ResourceEvent::Deleted { name, .. } => {
            map.remove(&name);
        }
    }
}

fn affinity_block(kv: &datastore::Kv) -> Option<ipnetwork::IpNetwork> {
    let Key::Affinity { cidr, .. } = kv.key else {
        return None;
    };
    let spec: BlockAffinitySpec = serde_json::from_slice(&kv.value).ok()?;
    (spec.state == ippool_crd::AffinityState::Confirmed && !spec.deleted).then_some(cidr)
}

fn apply_affinities(blocks: &mut Vec<ipnetwork::IpNetwork>, ev: WatchEvent) {
    match ev {
        WatchEvent::Snapshot { items, .. } => {
            *blocks = items.iter().filter_map(affinity_block).collect();
        }
        WatchEvent::Created(kv) | WatchEvent::Updated(kv) => {
            let Key::Affinity { cidr, .. } = kv.key else {
                return;
            };
            blocks.retain(|b| *b != cidr);
            if let Some(b) = affinity_block(&kv) {
                blocks.push(b);
            }
        }
        WatchEvent::Deleted { key, .. } => {
            if let Key::Affinity { cidr, .. } = key {
                blocks.retain(|b| *b != cidr);
            }
        }
    }
    blocks.sort();
    blocks.dedup();
}

/// Reads the passwords BGPPeers and the mesh refer to from the secrets
/// directory.
fn load_secrets(state: &mut ClusterState, dir: &std::path::Path) {
    let mut wanted = Vec::new();
    for p in state.bgp_peers.values() {
        if let Some(sel) = p
            .spec
            .password
            .as_ref()
            .and_then(|pw| pw.secret_key_ref.as_ref())
        {
            wanted.push((sel.name.clone(), sel.key.clone()));
        }
    }
    for c in state.bgp_configs.values() {
        if let Some(sel) = c
            .spec
            .node_mesh_password
            .as_ref()
            .and_then(|pw| pw.secret_key_ref.as_ref())
        {
            wanted.push((sel.name.clone(), sel.key.clone()));
        }
    }
    state.secrets.clear();
    for (name, key) in wanted {
        // Names come from the datastore: keep them to one path segment.
        if [&name, &key]
            .iter()
            .any(|s| s.is_empty() || s.contains('/') || s.as_str() == "..")
        {
            continue;
        }
        match std::fs::read_to_string(dir.join(&name).join(&key)) {
            Ok(v) => {
                state
                    .secrets
                    .insert((name, key), v.trim_end_matches('\n').to_string());
            }
            Err(e) => {
                tracing::warn!(secret = %name, key = %key, error = %e, "cannot read BGP password");
            }
        }
    }
}

async fn sync_loop(
    opts: SyncOptions,
    mut rx: mpsc::Receiver<Change>,
    tx: watch::Sender<Published>,
) {
    let mut state = ClusterState::default();
    let mut synced = Synced::default();
    let mut blocks = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        // Debounce: gather whatever else arrives within the window.
        let deadline = tokio::time::Instant::now() + DEBOUNCE;
        while let Ok(Some(c)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.push(c);
        }
        let mut changed = false;
        for change in batch {
            match change {
                Change::Nodes(ev) => apply(&mut synced, "nodes", &mut state.nodes, ev),
                Change::Peers(ev) => apply(&mut synced, "peers", &mut state.bgp_peers, ev),
                Change::Configs(ev) => apply(&mut synced, "configs", &mut state.bgp_configs, ev),
                Change::Pools(ev) => apply(&mut synced, "pools", &mut state.pools, ev),
                Change::Affinities(ev) => {
                    if matches!(ev, WatchEvent::Snapshot { .. }) {
                        synced.0.insert("affinities");
                    }
                    apply_affinities(&mut blocks, ev);
                }
                Change::Interrupted(e) => {
                    tracing::warn!(error = %e, "datastore watch interrupted; keeping the last configuration");
                    continue;
                }
            }
            changed = true;
        }
        if !changed || !synced.all() {
            continue;
        }
        state.blocks = BTreeMap::from([(opts.node.clone(), blocks.clone())]);
        if let Some(dir) = &opts.secrets_dir {
            load_secrets(&mut state, dir);
        }
        let next = match compute(&state, &opts.node) {
            Ok(cfg) => Published::Config(Box::new(cfg)),
            Err(e) => Published::Error(e.to_string()),
        };
        tx.send_if_modified(|cur| {
            if *cur == next {
                false
            } else {
                *cur = next;
                true
            }
        });
    }
}
