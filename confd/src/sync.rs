//! Keeps a [`ClusterState`] in step with the datastore and publishes the
//! node's [`NodeConfig`] whenever it changes.
//!
//! ```text
//!  datastore watches (IPPool, BGPPeer, BGPConfiguration, Node,
//!  every block affinity)          password Secrets the peerings name
//!        │ one task each, events → mpsc     │ one reader each (secret_watch),
//!        │                                  │ started and stopped by the loop
//!        ▼                                  ▼
//!  sync loop: apply to ClusterState ─► recompute ─► watch::Sender<Published>
//!        (debounced a few ms so a burst            (bird pusher, felix pusher,
//!         of events is one recompute)               file writer subscribe)
//! ```
//!
//! Nothing is published until every watch has delivered its first
//! snapshot, and every named password Secret has been read once (or
//! failed to be): a config computed from half the cluster, or without a
//! password it names, would tear down real BGP sessions. After that, each
//! change is published as soon as the debounce window closes. A datastore
//! outage leaves the last published config in place (the dataplane keeps
//! running) and the watches resume where they stopped; a Secret already
//! read keeps its value through an outage too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use datastore::services::{KubeServices, ServicesEvent};
use datastore::{Client, Key, ListKey, Resource, ResourceEvent, WatchEvent};
use futures::StreamExt;
use ippool_crd::{BGPConfiguration, BGPFilter, BGPPeer, BlockAffinitySpec, IPPool, Node};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{NodeConfig, compute};
use crate::secret_watch::{SecretReaders, SecretSource};
use crate::secrets::{self, SecretUpdate};
use crate::state::ClusterState;

/// How long to wait for more events before recomputing.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub node: String,
    /// Where BGP passwords are read from.
    pub secrets: SecretSource,
    /// Where Kubernetes Services are read from for service advertisement
    /// (the Kubernetes API); `None`: service ranges are still advertised,
    /// but no Service's own address is.
    pub services: Option<KubeServices>,
    /// `CALICO_ROUTER_ID`, if set.
    pub router_id: Option<crate::state::RouterId>,
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
    Filters(ResourceEvent<BGPFilter>),
    Pools(ResourceEvent<IPPool>),
    Affinities(WatchEvent),
    /// IPAM blocks: where a node holds addresses in another node's block.
    Blocks(WatchEvent),
    /// News of a password Secret.
    Secret(String, SecretUpdate),
    /// News of the Kubernetes Services (service advertisement).
    Services(ServicesEvent),
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

/// A raw watch on `list` whose events become `wrap(event)`: every node's
/// block affinities (this node's blocks go to bird and felix, the others'
/// to felix for VXLAN) and the IPAM blocks (borrowed addresses).
fn spawn_raw_watch(
    client: Client,
    list: ListKey,
    tx: mpsc::Sender<Change>,
    wrap: fn(WatchEvent) -> Change,
) -> JoinHandle<()> {
    tokio::spawn(async move {
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
                Ok(ev) => wrap(ev),
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
        // Not waited for before the first configuration (a cluster whose
        // CRDs predate BGPFilter still gets configured): a peer naming a
        // filter not seen yet is held down until it arrives.
        spawn_watch::<BGPFilter, _>(client.clone(), tx.clone(), Change::Filters),
        spawn_watch::<IPPool, _>(client.clone(), tx.clone(), Change::Pools),
        spawn_raw_watch(
            client.clone(),
            ListKey::Affinities { host: None },
            tx.clone(),
            Change::Affinities,
        ),
        spawn_raw_watch(client, ListKey::Blocks, tx.clone(), Change::Blocks),
    ];
    let readers = SecretReaders::new(opts.secrets.clone(), tx.clone(), Change::Secret);
    tasks.push(tokio::spawn(sync_loop(opts, readers, rx, tx, pub_tx)));
    DatastoreSync { rx: pub_rx, tasks }
}

/// Which watches have delivered their first snapshot.
#[derive(Default)]
struct Synced(BTreeSet<&'static str>);

impl Synced {
    const ALL: [&'static str; 6] = ["nodes", "peers", "configs", "pools", "affinities", "blocks"];
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

/// `(host, block)` of a confirmed, not deleted affinity.
fn affinity_block(kv: &datastore::Kv) -> Option<(String, ipnetwork::IpNetwork)> {
    let Key::Affinity { host, cidr } = &kv.key else {
        return None;
    };
    let spec: BlockAffinitySpec = serde_json::from_slice(&kv.value).ok()?;
    (spec.state == ippool_crd::AffinityState::Confirmed && !spec.deleted)
        .then(|| (host.clone(), *cidr))
}

type Blocks = BTreeMap<String, Vec<ipnetwork::IpNetwork>>;

fn apply_affinities(blocks: &mut Blocks, ev: WatchEvent) {
    let forget = |blocks: &mut Blocks, host: &str, cidr: ipnetwork::IpNetwork| {
        if let Some(b) = blocks.get_mut(host) {
            b.retain(|b| *b != cidr);
            if b.is_empty() {
                blocks.remove(host);
            }
        }
    };
    match ev {
        WatchEvent::Snapshot { items, .. } => {
            blocks.clear();
            for (host, cidr) in items.iter().filter_map(affinity_block) {
                blocks.entry(host).or_default().push(cidr);
            }
        }
        WatchEvent::Created(kv) | WatchEvent::Updated(kv) => {
            let Key::Affinity { host, cidr } = &kv.key else {
                return;
            };
            forget(blocks, host, *cidr);
            if let Some((host, b)) = affinity_block(&kv) {
                blocks.entry(host).or_default().push(b);
            }
        }
        WatchEvent::Deleted { key, .. } => {
            if let Key::Affinity { host, cidr } = key {
                forget(blocks, &host, cidr);
            }
        }
    }
    for b in blocks.values_mut() {
        b.sort();
        b.dedup();
    }
}

/// Per block, the addresses in it held for another node than the one
/// the block is affine to: `(node, address as /32 or /128)`.
type Borrowed = BTreeMap<ipnetwork::IpNetwork, Vec<(String, ipnetwork::IpNetwork)>>;

fn borrowed_in(
    kv: &datastore::Kv,
) -> Option<(ipnetwork::IpNetwork, Vec<(String, ipnetwork::IpNetwork)>)> {
    let Key::Block { cidr } = &kv.key else {
        return None;
    };
    let spec: ippool_crd::IPAMBlockSpec = serde_json::from_slice(&kv.value).ok()?;
    let block = datastore::ipam::block::Block::parse(spec).ok()?;
    let owner = block.host().map(str::to_string);
    let held = datastore::ipam::leaks::held_addresses(&block)
        .into_iter()
        .filter_map(|a| {
            let node = a.attributes.get("node")?.clone();
            (Some(&node) != owner.as_ref()).then(|| (node, ipnetwork::IpNetwork::from(a.ip)))
        })
        .collect();
    Some((*cidr, held))
}

fn apply_blocks(borrowed: &mut Borrowed, ev: WatchEvent) {
    match ev {
        WatchEvent::Snapshot { items, .. } => {
            borrowed.clear();
            borrowed.extend(items.iter().filter_map(borrowed_in));
        }
        WatchEvent::Created(kv) | WatchEvent::Updated(kv) => {
            if let Key::Block { cidr } = &kv.key {
                borrowed.remove(cidr);
            }
            if let Some((cidr, held)) = borrowed_in(&kv) {
                borrowed.insert(cidr, held);
            }
        }
        WatchEvent::Deleted { key, .. } => {
            if let Key::Block { cidr } = key {
                borrowed.remove(&cidr);
            }
        }
    }
}

/// The borrowed addresses per node.
fn borrowed_by_node(b: &Borrowed) -> BTreeMap<String, Vec<ipnetwork::IpNetwork>> {
    let mut out: BTreeMap<String, Vec<ipnetwork::IpNetwork>> = BTreeMap::new();
    for (node, ip) in b.values().flatten() {
        out.entry(node.clone()).or_default().push(*ip);
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// Forwards the Services watch into the sync loop; the watch stops when
/// the task is aborted or the sync loop is gone.
fn spawn_services_watch(k: &KubeServices, tx: mpsc::Sender<Change>) -> JoinHandle<()> {
    let mut w = k.watch();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = w.recv() => match ev {
                    Some(ev) => {
                        if tx.send(Change::Services(ev)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            }
        }
    })
}

/// Runs the Services watch exactly while the default BGPConfiguration
/// asks for service advertisement (so a cluster that does not use it
/// never lists every Service and EndpointSlice); forgets what it knew when
/// it stops. Returns whether the state changed.
fn steer_services_watch(
    opts: &SyncOptions,
    state: &mut ClusterState,
    running: &mut Option<JoinHandle<()>>,
    tx: &mpsc::Sender<Change>,
) -> bool {
    let wanted = crate::services::wanted(state.global_bgp());
    match (&opts.services, running.is_some(), wanted) {
        (Some(k), false, true) => {
            tracing::info!(
                "service advertisement configured: watching Services and EndpointSlices"
            );
            *running = Some(spawn_services_watch(k, tx.clone()));
            false
        }
        (_, true, false) => {
            if let Some(t) = running.take() {
                t.abort();
            }
            tracing::info!("service advertisement off: stopped watching Services");
            let had = state.services != Default::default();
            state.services = Default::default();
            had
        }
        _ => false,
    }
}

/// The same warning at most once a minute: a watch that keeps failing
/// (a CRD not installed, a datastore down) retries every second.
#[derive(Debug, Default)]
struct Repeats {
    last: std::collections::HashMap<String, tokio::time::Instant>,
}

impl Repeats {
    const EVERY: Duration = Duration::from_secs(60);

    /// Whether `msg` should be logged now.
    fn fresh(&mut self, msg: &str, now: tokio::time::Instant) -> bool {
        self.last
            .retain(|_, t| now.duration_since(*t) < Self::EVERY);
        match self.last.get(msg) {
            Some(_) => false,
            None => {
                self.last.insert(msg.to_string(), now);
                true
            }
        }
    }
}

async fn sync_loop(
    opts: SyncOptions,
    mut readers: SecretReaders<Change>,
    mut rx: mpsc::Receiver<Change>,
    changes: mpsc::Sender<Change>,
    tx: watch::Sender<Published>,
) {
    // Its task ends by itself when this loop ends (see
    // `spawn_services_watch`).
    let mut services_watch: Option<JoinHandle<()>> = None;
    let mut interruptions = Repeats::default();
    let mut state = ClusterState::default();
    state.secrets.origin = opts.secrets.origin();
    let mut synced = Synced::default();
    let mut blocks = Blocks::new();
    let mut borrowed = Borrowed::new();
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
                Change::Filters(ev) => apply(&mut synced, "filters", &mut state.bgp_filters, ev),
                Change::Pools(ev) => apply(&mut synced, "pools", &mut state.pools, ev),
                Change::Affinities(ev) => {
                    if matches!(ev, WatchEvent::Snapshot { .. }) {
                        synced.0.insert("affinities");
                    }
                    apply_affinities(&mut blocks, ev);
                }
                Change::Blocks(ev) => {
                    if matches!(ev, WatchEvent::Snapshot { .. }) {
                        synced.0.insert("blocks");
                    }
                    apply_blocks(&mut borrowed, ev);
                }
                Change::Secret(name, update) => {
                    // A late word from a reader already stopped.
                    if !readers.reads(&name) {
                        continue;
                    }
                    let next = secrets::apply_update(state.secrets.by_name.get(&name), update);
                    state.secrets.by_name.insert(name, next);
                }
                Change::Services(ServicesEvent::Failed(_)) => continue,
                Change::Services(ev) => {
                    // A late word from a watch already stopped.
                    if services_watch.is_none() || !state.services.apply(ev) {
                        continue;
                    }
                }
                Change::Interrupted(e) => {
                    if interruptions.fresh(&e, tokio::time::Instant::now()) {
                        tracing::warn!(error = %e, "datastore watch interrupted; keeping the last configuration");
                    }
                    continue;
                }
            }
            changed = true;
        }
        if steer_services_watch(&opts, &mut state, &mut services_watch, &changes) {
            changed = true;
        }
        if !changed || !synced.all() {
            continue;
        }
        let wanted = secrets::referenced(&state);
        for gone in readers.sync(&wanted) {
            state.secrets.by_name.remove(&gone);
        }
        if !matches!(opts.secrets, SecretSource::None)
            && wanted
                .iter()
                .any(|n| !state.secrets.by_name.contains_key(n))
        {
            // A reader has not answered yet; its first word (a value, an
            // absence or an error) comes within a request timeout.
            continue;
        }
        state.blocks = blocks.clone();
        state.borrowed = borrowed_by_node(&borrowed);
        state.router_id = opts.router_id;
        let next = match compute(&state, &opts.node) {
            Ok(cfg) => {
                proto::daemon::apply_log_severity(&cfg.bgp.log_severity);
                if let Published::Config(old) = &*tx.borrow() {
                    log_password_news(&password_news(Some(old), &cfg));
                    log_invalid_adverts(&old.bgp.invalid_prefix_advertisements, &cfg);
                } else {
                    log_password_news(&password_news(None, &cfg));
                    log_invalid_adverts(&[], &cfg);
                }
                Published::Config(Box::new(cfg))
            }
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

/// Logs each `prefixAdvertisements` entry newly left out (and says so when
/// all are fine again), once per change rather than once per push.
fn log_invalid_adverts(before: &[String], cfg: &NodeConfig) {
    let now = &cfg.bgp.invalid_prefix_advertisements;
    for why in now.iter().filter(|w| !before.contains(w)) {
        tracing::warn!(
            "prefix advertisement ignored (the rest of the configuration applies): {why}"
        );
    }
    if now.is_empty() && !before.is_empty() {
        tracing::info!("every prefixAdvertisements entry is valid again");
    }
}

/// What changed about one peer's password between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordNews {
    /// Its session is now held down, for this reason.
    HeldDown { peer: String, reason: String },
    /// It was held down and now has its password.
    Available { peer: String },
    /// Its password changed: bird re-keys that one session.
    Rotated { peer: String },
}

/// The password news from `old` (the configuration published before, if
/// any) to `new`, by peer name. Values never appear in it.
pub fn password_news(old: Option<&NodeConfig>, new: &NodeConfig) -> Vec<PasswordNews> {
    let before: BTreeMap<String, &crate::Peer> = old
        .map(|c| c.bgp.peers.iter().map(|p| (p.name(), p)).collect())
        .unwrap_or_default();
    let mut news = Vec::new();
    for p in &new.bgp.peers {
        let peer = p.name();
        let was = before.get(&peer);
        match (&p.password_unavailable, was) {
            (Some(reason), Some(w)) if w.password_unavailable.as_ref() == Some(reason) => {}
            (Some(reason), _) => news.push(PasswordNews::HeldDown {
                peer,
                reason: reason.clone(),
            }),
            (None, Some(w)) if w.password_unavailable.is_some() => {
                news.push(PasswordNews::Available { peer });
            }
            (None, Some(w))
                if w.password.is_some() && p.password.is_some() && w.password != p.password =>
            {
                news.push(PasswordNews::Rotated { peer });
            }
            (None, _) => {}
        }
    }
    news
}

fn log_password_news(news: &[PasswordNews]) {
    for n in news {
        match n {
            PasswordNews::HeldDown { peer, reason } => {
                tracing::warn!(%peer, %reason, "BGP session held down: its password is unavailable");
            }
            PasswordNews::Available { peer } => {
                tracing::info!(%peer, "BGP password available: the session may start");
            }
            PasswordNews::Rotated { peer } => {
                tracing::info!(%peer, "BGP password changed: that session is re-keyed");
            }
        }
    }
}

#[cfg(test)]
mod repeat_tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_a_minute_another_at_once() {
        let mut r = Repeats::default();
        let t = tokio::time::Instant::now();
        assert!(r.fresh("crd missing", t));
        assert!(!r.fresh("crd missing", t + Duration::from_secs(1)));
        assert!(r.fresh("etcd down", t + Duration::from_secs(2)));
        assert!(!r.fresh("crd missing", t + Duration::from_secs(59)));
        assert!(r.fresh("crd missing", t + Duration::from_secs(61)));
    }
}
