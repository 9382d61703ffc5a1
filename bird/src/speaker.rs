//! The speaker put together: the RIB task, the peers and the BGP
//! listener, and [`Speaker::apply`], the one path by which configuration
//! arrives (the TOML file at start-up, then confd's pushes). Applying
//! carries out a [`plan`]: new peers start, removed ones stop
//! with Cease / Peer De-configured and their routes are flushed, peers
//! with new session parameters restart, a policy-only change is applied
//! in place, and the same configuration again does nothing. The control
//! services around it are put together in [`crate::daemon`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bfd;
use crate::config::{Config, ConfigError, PeerConfig};
use crate::listener::Listener;
use crate::network;
use crate::packet::notification::{Notification, cease_sub};
use crate::plan::{self, ApplyPlan, ApplyReport, PeerChange};
use crate::policy::LocalPolicy;
use crate::rib::{PeerId, PeerKey, Rib};
use crate::rib_task::{self, RibEvent, RibGone, RibHandle};
use crate::session::{self, Local, PeerHandle};
use crate::tasks::PeerCommand;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "cannot listen for BGP on {addr}: {source} (is another BGP daemon running, or is the address not local?)"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("too many peers: at most {} are supported", PeerId::MAX)]
    TooManyPeers,
    #[error(transparent)]
    Rib(#[from] RibGone),
    #[error(transparent)]
    Control(#[from] proto::UdsError),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::Config(_) | Error::TooManyPeers => {
                tonic::Status::invalid_argument(e.to_string())
            }
            Error::Rib(_) => tonic::Status::unavailable(e.to_string()),
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}

/// One configured peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    /// The current configuration (policy changes land here without a new
    /// session).
    pub config: Arc<PeerConfig>,
    pub handle: Arc<PeerHandle>,
}

/// The peers of a running speaker, shared with the listener and the
/// control service.
#[derive(Debug, Default)]
pub struct PeerTable {
    pub list: Vec<PeerEntry>,
}

impl PeerTable {
    pub fn find(&self, ip: IpAddr) -> Option<&PeerEntry> {
        let ip = network::canonical(ip);
        self.list
            .iter()
            .find(|p| network::canonical(p.config.address()) == ip)
    }
}

#[derive(Default)]
struct State {
    cfg: Option<Config>,
    listener: Option<Listener>,
    epoch: u32,
    free_ids: Vec<u16>,
    next_id: u16,
    /// Started when the first peer asks for BFD.
    bfd: Option<bfd::Bfd>,
    bfd_peers: HashMap<IpAddr, BfdPeer>,
}

/// A peer's BFD session and the task that turns its changes into
/// commands for the peer's BGP task.
struct BfdPeer {
    timing: bfd::Timing,
    multihop: bool,
    protection: bfd::Protection,
    status: tokio::sync::watch::Receiver<bfd::Status>,
    commands: tokio::sync::mpsc::Sender<PeerCommand>,
    follower: JoinHandle<()>,
}

impl Drop for BfdPeer {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// BFD Up → the path works: connect now (a peer with BFD opens no
/// connection of its own before that); Up → not Up → the path failed:
/// reset the BGP session (Hard Reset: the peer is unreachable, its routes
/// must go, not be kept as stale) and wait for BFD again.
async fn follow_bfd(
    peer: IpAddr,
    mut status: tokio::sync::watch::Receiver<bfd::Status>,
    commands: tokio::sync::mpsc::Sender<PeerCommand>,
) {
    let mut up = false;
    while status.changed().await.is_ok() {
        let st = *status.borrow_and_update();
        if st.state == bfd::State::Up && !up {
            up = true;
            let _ = commands.send(PeerCommand::Kick).await;
        } else if st.state != bfd::State::Up && up && st.neighbor_admin_down {
            // RFC 5882 section 3.2: the neighbour stopped BFD on purpose
            // (maintenance); the path may be fine. BGP keeps its session
            // (its own hold timer still guards it); BFD Up again later is
            // a Kick, harmless on an established session.
            up = false;
            info!(%peer, "BFD session administratively down at the neighbour: the BGP session stays");
        } else if st.state != bfd::State::Up && up {
            up = false;
            warn!(
                %peer,
                diag = bfd::packet::diag::describe(st.diag),
                "BFD session down: resetting the BGP session"
            );
            let _ = commands
                .send(PeerCommand::PathDown(Notification::cease(
                    cease_sub::BFD_DOWN,
                )))
                .await;
        }
    }
}

impl State {
    fn key(&mut self) -> Result<PeerKey, Error> {
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                if self.next_id >= PeerId::MAX {
                    return Err(Error::TooManyPeers);
                }
                self.next_id += 1;
                self.next_id
            }
        };
        self.epoch += 1;
        Ok(PeerKey {
            id: PeerId(id),
            epoch: self.epoch,
        })
    }
}

/// A running speaker; shared by the control services.
pub struct Speaker {
    state: tokio::sync::Mutex<State>,
    peers: Arc<RwLock<PeerTable>>,
    /// Each BFD session's state, by peer address, for status output.
    bfd_status: RwLock<HashMap<IpAddr, tokio::sync::watch::Receiver<bfd::Status>>>,
    rib: RibHandle,
    health: proto::health_service::HealthReporter,
    _rib_task: JoinHandle<()>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").finish_non_exhaustive()
    }
}

impl Speaker {
    /// A speaker with no configuration yet: no listener, no peers. The
    /// start-up deferral (see [`crate::rib`]) counts from now.
    pub fn new(startup_deferral: Duration) -> Arc<Speaker> {
        let rib = Rib::new(
            LocalPolicy::new(0, std::net::Ipv4Addr::UNSPECIFIED),
            Instant::now() + startup_deferral,
        );
        let (rib, task) = rib_task::spawn(rib);
        Speaker::with_rib(rib, task)
    }

    /// A speaker whose RIB events go to `rib`, run by `task`.
    pub(crate) fn with_rib(rib: RibHandle, task: JoinHandle<()>) -> Arc<Speaker> {
        Arc::new(Speaker {
            state: tokio::sync::Mutex::new(State::default()),
            peers: Arc::new(RwLock::new(PeerTable::default())),
            bfd_status: RwLock::new(HashMap::new()),
            rib,
            health: proto::health_service::HealthReporter::new("bird"),
            _rib_task: task,
        })
    }

    pub fn peers(&self) -> Arc<RwLock<PeerTable>> {
        self.peers.clone()
    }

    pub fn rib(&self) -> &RibHandle {
        &self.rib
    }

    pub fn health(&self) -> &proto::health_service::HealthReporter {
        &self.health
    }

    /// The running configuration, if any yet.
    pub async fn config(&self) -> Option<Config> {
        self.state.lock().await.cfg.clone()
    }

    pub async fn local(&self) -> Option<Local> {
        let st = self.state.lock().await;
        st.cfg.as_ref().map(|c| Local {
            asn: c.asn,
            router_id: c.router_id,
        })
    }

    fn snapshot(&self) -> Vec<PeerEntry> {
        self.peers
            .read()
            .map(|t| t.list.clone())
            .unwrap_or_default()
    }

    fn set_peers(&self, list: Vec<PeerEntry>) {
        if let Ok(mut t) = self.peers.write() {
            t.list = list;
        }
    }

    /// Makes `cfg` the running configuration, carrying out
    /// [`plan`](crate::plan::plan)'s decisions.
    pub async fn apply(&self, cfg: Config) -> Result<ApplyReport, Error> {
        cfg.validate()?;
        let mut st = self.state.lock().await;
        let plan = plan::plan(st.cfg.as_ref(), &cfg);
        if plan.unchanged {
            // No routes re-originated, no session touched, no log line;
            // BFD is looked at as after every apply (it is retried if it
            // could not start).
            self.sync_bfd(&mut st).await;
            return Ok(ApplyReport::default());
        }
        // The listener first: if it cannot be bound, nothing changes.
        self.sync_listener(&mut st, &cfg).await?;
        self.rib
            .send(RibEvent::Local(node_local_policy(&cfg)))
            .await?;
        let peers = self.apply_peers(&mut st, &plan, &cfg).await?;
        self.set_peers(peers);
        self.sync_bfd(&mut st).await;
        self.rib.send(RibEvent::Originate(cfg.originated())).await?;
        let report = plan.report();
        if plan.first {
            info!(router_id = %cfg.router_id, asn = cfg.asn, peers = cfg.peers.len(), "BGP speaker configured");
        } else {
            info!(
                added = report.added,
                removed = report.removed,
                changed = report.changed,
                "configuration applied"
            );
        }
        st.cfg = Some(cfg);
        self.health.set_ready();
        Ok(report)
    }

    /// Binds the listener for `cfg`, or brings the running one's TCP-MD5
    /// keys and TTL up to date. A new address (bindMode changed) closes
    /// the old socket first, as the two may overlap on the port; if the
    /// new one cannot be bound the old address is bound again, so a bad
    /// push never leaves bird deaf.
    async fn sync_listener(&self, st: &mut State, cfg: &Config) -> Result<(), Error> {
        if let Some(l) = st.listener.as_mut()
            && l.addrs() == cfg.listen_addrs()
        {
            l.update(cfg);
            return Ok(());
        }
        let peers = self.peers.clone();
        let lookup: crate::listener::PeerLookup = Arc::new(move |ip| {
            let t = peers.read().ok()?;
            t.find(ip).map(|e| e.handle.commands())
        });
        let old = match st.listener.take() {
            Some(l) => {
                let addrs = l.addrs();
                l.close().await;
                Some(addrs)
            }
            None => None,
        };
        match Listener::bind(cfg, lookup.clone()) {
            Ok(l) => {
                st.listener = Some(l);
                Ok(())
            }
            Err(source) => {
                if let Some(addrs) = old
                    && let Some(first) = addrs.first()
                {
                    let mut back = cfg.clone();
                    back.listen = *first;
                    back.listen_also = addrs.get(1).map(SocketAddr::ip);
                    match Listener::bind(&back, lookup) {
                        Ok(l) => st.listener = Some(l),
                        Err(e) => {
                            warn!(listen = ?addrs, error = %e, "cannot listen on the previous addresses again either");
                        }
                    }
                }
                Err(Error::Listen {
                    addr: cfg.listen,
                    source,
                })
            }
        }
    }

    /// Carries out the plan's peer changes; returns the new peer table, in
    /// configuration order (for `bird show peers`).
    async fn apply_peers(
        &self,
        st: &mut State,
        plan: &ApplyPlan,
        cfg: &Config,
    ) -> Result<Vec<PeerEntry>, Error> {
        let wanted: HashMap<IpAddr, &PeerConfig> = cfg
            .peers
            .iter()
            .map(|p| (network::canonical(p.address()), p))
            .collect();
        let mut running: HashMap<IpAddr, PeerEntry> = HashMap::new();
        let mut stopping = Vec::new();
        for e in self.snapshot() {
            let addr = network::canonical(e.config.address());
            match (plan.change(addr), wanted.get(&addr)) {
                (Some(PeerChange::Update), Some(new)) => {
                    self.rib
                        .send(RibEvent::PeerPolicy {
                            key: e.handle.key,
                            policy: new.policy.clone(),
                        })
                        .await?;
                    running.insert(
                        addr,
                        PeerEntry {
                            config: Arc::new((*new).clone()),
                            handle: e.handle,
                        },
                    );
                }
                (Some(PeerChange::Restart), _) => {
                    stopping.push((e, cease_sub::OTHER_CONFIGURATION_CHANGE));
                }
                (Some(PeerChange::Remove), _) => {
                    stopping.push((e, cease_sub::PEER_DECONFIGURED));
                }
                _ => {
                    running.insert(addr, e);
                }
            }
        }
        // Stop removed and restarted peers (in parallel: each may wait for
        // its NOTIFICATION to leave), then drop their routes.
        let mut set = tokio::task::JoinSet::new();
        for (e, sub) in &stopping {
            info!(peer = %e.config.address(), reason = sub, "stopping peer");
            let h = e.handle.clone();
            let sub = *sub;
            set.spawn(async move { h.shutdown(Notification::cease(sub), true).await });
        }
        while set.join_next().await.is_some() {}
        for (e, _) in &stopping {
            self.rib
                .send(RibEvent::PeerRemoved { key: e.handle.key })
                .await?;
            st.free_ids.push(e.handle.key.id.0);
        }
        let local = Local {
            asn: cfg.asn,
            router_id: cfg.router_id,
        };
        let mut peers = Vec::with_capacity(cfg.peers.len());
        for p in &cfg.peers {
            if let Some(e) = running.remove(&network::canonical(p.address())) {
                peers.push(e);
                continue;
            }
            let key = st.key()?;
            info!(peer = %p.address(), asn = p.asn(), passive = p.session.passive, "starting peer");
            let handle =
                session::spawn(local, p.clone(), key, self.rib.sender(), plan.first).await?;
            peers.push(PeerEntry {
                config: Arc::new(p.clone()),
                handle: Arc::new(handle),
            });
        }
        Ok(peers)
    }

    /// Runs a BFD session for every peer that asks for one, following the
    /// peer's current task; drops the others.
    async fn sync_bfd(&self, st: &mut State) {
        type Want = (
            bfd::Timing,
            bool,
            bfd::Protection,
            tokio::sync::mpsc::Sender<PeerCommand>,
        );
        let wanted: HashMap<IpAddr, Want> = self
            .snapshot()
            .iter()
            .filter_map(|e| {
                let b = e.config.bfd.as_ref()?;
                // A held-down peer has no session for BFD to protect.
                if e.config.session.held_down.is_some() {
                    return None;
                }
                // Validation refuses an unusable key; never run without it.
                let protection = b.protection(&e.config.session)?;
                Some((
                    network::canonical(e.config.address()),
                    (b.timing(), b.multihop, protection, e.handle.commands()),
                ))
            })
            .collect();
        if !wanted.is_empty() && st.bfd.is_none() {
            match bfd::Bfd::start(bfd::CONTROL_PORT, bfd::MULTIHOP_PORT).await {
                Ok(b) => st.bfd = Some(b),
                Err(e) => warn!(error = %e, "cannot start BFD; its peers run without it"),
            }
        }
        let Some(b) = st.bfd.clone() else {
            // Without BFD nothing reports these paths up: their sessions
            // must not wait for it.
            for (_, _, _, commands) in wanted.values() {
                let _ = commands.try_send(PeerCommand::Kick);
            }
            return;
        };
        st.bfd_peers.retain(|ip, p| {
            let keep = wanted.get(ip).is_some_and(|(t, m, pr, c)| {
                *t == p.timing
                    && *m == p.multihop
                    && *pr == p.protection
                    && c.same_channel(&p.commands)
            });
            if !keep {
                b.remove(*ip);
                if !wanted.contains_key(ip) {
                    // BFD no longer watches this peer: nothing will report
                    // its path up, so stop waiting for that.
                    let _ = p.commands.try_send(PeerCommand::Kick);
                }
            }
            keep
        });
        for (ip, (timing, multihop, protection, commands)) in wanted {
            if st.bfd_peers.contains_key(&ip) {
                continue;
            }
            let status = b.add(ip, timing, multihop, protection.clone());
            let follower = tokio::spawn(follow_bfd(ip, status.clone(), commands.clone()));
            st.bfd_peers.insert(
                ip,
                BfdPeer {
                    timing,
                    multihop,
                    protection,
                    commands,
                    follower,
                    status,
                },
            );
        }
        if let Ok(mut m) = self.bfd_status.write() {
            *m = st
                .bfd_peers
                .iter()
                .map(|(ip, p)| (*ip, p.status.clone()))
                .collect();
        }
    }

    /// The BFD session state towards `peer`, if it has BFD.
    pub fn bfd_state(&self, peer: IpAddr) -> Option<bfd::State> {
        let m = self.bfd_status.read().ok()?;
        let st = m.get(&network::canonical(peer))?.borrow().state;
        Some(st)
    }

    /// Sends every peer Cease / Administrative Shutdown (never a Hard
    /// Reset: a peer supporting RFC 8538 keeps our routes while we
    /// restart) and waits (bounded) for the NOTIFICATIONs to leave.
    pub async fn shutdown(&self) {
        let mut st = self.state.lock().await;
        st.listener = None;
        let mut set = tokio::task::JoinSet::new();
        for e in self.snapshot() {
            set.spawn(async move { e.handle.stop().await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// The RIB's speaker-wide policy, with the node networks read from the
/// kernel when the configuration does not name them (they are read again
/// at every configuration change).
fn node_local_policy(cfg: &Config) -> LocalPolicy {
    let mut local = cfg.local_policy();
    if cfg.node_networks.is_none() {
        match network::named_interface_networks() {
            Ok(mut named) => {
                named.retain(|(name, _)| !cfg.ignores_interface(name));
                tracing::debug!(networks = ?named, "node networks read from the interfaces");
                let mut nets: Vec<ipnetwork::IpNetwork> = named.iter().map(|(_, n)| *n).collect();
                nets.sort();
                nets.dedup();
                local.node_networks = nets;
                local.node_interfaces = named;
            }
            Err(e) => warn!(error = %e,
                "cannot read this node's interface addresses; routes into its own networks are not refused"),
        }
    }
    local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_logs::Logs;

    fn config(advertise: &str) -> Config {
        toml::from_str(&format!(
            "router_id = \"10.0.0.1\"\nasn = 64512\nlisten = \"127.0.0.1:0\"\n\
             advertise = [{advertise}]\npools = [\"10.65.0.0/16\"]\n"
        ))
        .unwrap()
    }

    fn drain(events: &mut tokio::sync::mpsc::Receiver<RibEvent>) -> Vec<RibEvent> {
        std::iter::from_fn(|| events.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_held_down_peer_is_listed_idle_with_its_reason_and_never_reaches_the_rib() {
        let (rib, mut events) = RibHandle::detached();
        let speaker = Speaker::with_rib(rib, tokio::spawn(async {}));
        let mut cfg = config("");
        cfg.peers = toml::from_str::<Config>(
            "router_id = \"10.0.0.1\"\nasn = 64512\n\
             [[peers]]\naddress = \"127.0.0.2\"\nasn = 65001\npassive = true\n\
             [[peers]]\naddress = \"127.0.0.3\"\nasn = 65001\npassive = true\n",
        )
        .unwrap()
        .peers;
        let why = "password secret kube-system/bgp-passwords has no key 'tor': session held down";
        cfg.peers[0].session.held_down = Some(why.into());
        speaker.apply(cfg.clone()).await.unwrap();
        let table = speaker.peers();
        let (held, running) = {
            let t = table.read().unwrap();
            (t.list[0].handle.clone(), t.list[1].handle.clone())
        };
        let st = held.status.borrow().clone();
        assert_eq!(st.state, crate::fsm::State::Idle);
        assert_eq!(st.last_error.as_deref(), Some(why));
        let added: Vec<PeerKey> = drain(&mut events)
            .into_iter()
            .filter_map(|e| match e {
                RibEvent::PeerAdded { key, .. } => Some(key),
                _ => None,
            })
            .collect();
        assert_eq!(added, vec![running.key], "only the running peer has routes");

        // The password arrives: that peer restarts, the other is untouched.
        cfg.peers[0].session.held_down = None;
        cfg.peers[0].session.password = Some("k".into());
        let report = speaker.apply(cfg).await.unwrap();
        assert_eq!((report.added, report.removed, report.changed), (0, 0, 1));
        let t = table.read().unwrap();
        assert!(Arc::ptr_eq(&t.list[1].handle, &running), "same session");
        assert!(!Arc::ptr_eq(&t.list[0].handle, &held));
        assert_eq!(t.list[0].handle.status.borrow().last_error, None);
    }

    #[tokio::test]
    async fn an_unchanged_configuration_is_not_applied_again() {
        let (rib, mut events) = RibHandle::detached();
        let speaker = Speaker::with_rib(rib, tokio::spawn(async {}));
        let cfg = config("\"10.65.1.0/26\"");
        speaker.apply(cfg.clone()).await.unwrap();
        assert!(
            drain(&mut events)
                .iter()
                .any(|e| matches!(e, RibEvent::Originate(_)))
        );

        let (logs, _guard) = Logs::capture();
        assert_eq!(speaker.apply(cfg).await.unwrap(), ApplyReport::default());
        let sent = drain(&mut events);
        assert!(sent.is_empty(), "nothing re-originated: {sent:?}");
        assert_eq!(logs.text(), "", "no log line");

        // A real change still goes through (and the capture sees it).
        speaker
            .apply(config("\"10.65.1.0/26\", \"10.65.2.0/26\""))
            .await
            .unwrap();
        assert!(
            drain(&mut events)
                .iter()
                .any(|e| matches!(e, RibEvent::Originate(v) if v.len() == 2))
        );
        assert!(logs.text().contains("configuration applied"));
    }
}
