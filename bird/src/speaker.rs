//! The speaker put together: the RIB task, the peers, the BGP listener and
//! the control socket, and [`Speaker::apply`], the one path by which
//! configuration arrives (the TOML file at start-up, then confd's pushes).
//!
//! Applying is a diff: peers whose session settings did not change are
//! left alone (a policy-only change is applied in place), removed peers
//! are stopped with Cease / Peer De-configured and their routes flushed,
//! changed ones are restarted, new ones start. Pushing the same
//! configuration twice does nothing.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tracing::{debug, info, warn};

use crate::bfd;
use crate::config::{Config, ConfigError, PeerConfig};
use crate::control::BirdService;
use crate::network;
use crate::packet::notification::{Notification, cease_sub};
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

/// What an apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: u32,
    pub removed: u32,
    pub changed: u32,
}

struct Listener {
    addr: SocketAddr,
    sock: Arc<TcpListener>,
    accept: JoinHandle<()>,
    md5: HashMap<IpAddr, Vec<u8>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
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

fn md5_keys(cfg: &Config) -> HashMap<IpAddr, Vec<u8>> {
    cfg.peers
        .iter()
        .filter_map(|p| {
            p.session
                .password
                .as_ref()
                .map(|pw| (network::canonical(p.address()), pw.as_bytes().to_vec()))
        })
        .collect()
}

async fn accept_loop(listener: Arc<TcpListener>, peers: Arc<RwLock<PeerTable>>) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let tx = peers
                    .read()
                    .ok()
                    .and_then(|t| t.find(from.ip()).map(|e| e.handle.commands()));
                match tx {
                    Some(tx) => {
                        let _ = tx.send(PeerCommand::Incoming(stream)).await;
                    }
                    None => debug!(%from, "connection from an unconfigured address; closing"),
                }
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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

    /// Makes `cfg` the running configuration.
    pub async fn apply(&self, cfg: Config) -> Result<ApplyReport, Error> {
        cfg.validate()?;
        let mut st = self.state.lock().await;
        let first = st.cfg.is_none();
        let global_reset = st
            .cfg
            .as_ref()
            .is_some_and(|old| old.asn != cfg.asn || old.router_id != cfg.router_id);

        // The listener first: if it cannot be bound, nothing changes.
        let keys = md5_keys(&cfg);
        let gtsm = cfg.peers.iter().any(|p| p.session.ttl_security);
        if st.listener.as_ref().map(|l| l.addr) != Some(cfg.listen) {
            let md5: Vec<(IpAddr, Vec<u8>)> = keys.clone().into_iter().collect();
            let sock = network::listen(cfg.listen, &md5, gtsm).map_err(|source| Error::Listen {
                addr: cfg.listen,
                source,
            })?;
            let sock = Arc::new(sock);
            let accept = tokio::spawn(accept_loop(sock.clone(), self.peers.clone()));
            info!(listen = %cfg.listen, "listening for BGP");
            st.listener = Some(Listener {
                addr: cfg.listen,
                sock,
                accept,
                md5: keys.clone(),
            });
        } else if let Some(l) = st.listener.as_mut() {
            let v6 = l.addr.is_ipv6();
            for (peer, key) in &keys {
                if l.md5.get(peer) != Some(key)
                    && let Err(e) = network::set_md5(&*l.sock, *peer, Some(key), v6)
                {
                    warn!(%peer, error = %e, "cannot install the TCP-MD5 key on the listener");
                }
            }
            for peer in l.md5.keys().filter(|p| !keys.contains_key(p)) {
                let _ = network::set_md5(&*l.sock, *peer, None, v6);
            }
            l.md5 = keys;
            if gtsm && let Err(e) = network::listener_ttl_255(&l.sock) {
                warn!(error = %e, "cannot set TTL 255 on the listener for GTSM peers");
            }
        }

        self.rib.send(RibEvent::Local(cfg.local_policy())).await?;

        let local = Local {
            asn: cfg.asn,
            router_id: cfg.router_id,
        };
        let mut report = ApplyReport::default();
        let mut keep = Vec::new();
        let mut stopping = Vec::new();
        let wanted: HashMap<IpAddr, &PeerConfig> = cfg
            .peers
            .iter()
            .map(|p| (network::canonical(p.address()), p))
            .collect();
        for e in self.snapshot() {
            let addr = network::canonical(e.config.address());
            match wanted.get(&addr) {
                Some(new) if !global_reset && !e.config.session_differs(new) => {
                    if **new != *e.config {
                        self.rib
                            .send(RibEvent::PeerPolicy {
                                key: e.handle.key,
                                policy: new.policy.clone(),
                            })
                            .await?;
                        report.changed += 1;
                    }
                    keep.push(PeerEntry {
                        config: Arc::new((*new).clone()),
                        handle: e.handle,
                    });
                }
                Some(_) => {
                    report.changed += 1;
                    stopping.push((e, cease_sub::OTHER_CONFIGURATION_CHANGE));
                }
                None => {
                    report.removed += 1;
                    stopping.push((e, cease_sub::PEER_DECONFIGURED));
                }
            }
        }
        // Stop removed and changed peers (in parallel: each may wait for
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
        let present: Vec<IpAddr> = keep
            .iter()
            .map(|e| network::canonical(e.config.address()))
            .collect();
        for p in &cfg.peers {
            if present.contains(&network::canonical(p.address())) {
                continue;
            }
            if !stopping.iter().any(|(e, _)| {
                network::canonical(e.config.address()) == network::canonical(p.address())
            }) {
                report.added += 1;
            }
            let key = st.key()?;
            info!(peer = %p.address(), asn = p.asn(), passive = p.session.passive, "starting peer");
            let handle = session::spawn(local, p.clone(), key, self.rib.sender(), first).await?;
            keep.push(PeerEntry {
                config: Arc::new(p.clone()),
                handle: Arc::new(handle),
            });
        }
        // Configuration order, for `bird show peers`.
        keep.sort_by_key(|e| {
            cfg.peers.iter().position(|p| {
                network::canonical(p.address()) == network::canonical(e.config.address())
            })
        });
        self.set_peers(keep);
        self.sync_bfd(&mut st).await;
        self.rib.send(RibEvent::Originate(cfg.originated())).await?;
        if first {
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

    /// Runs a BFD session for every peer that asks for one, following the
    /// peer's current task; drops the others.
    async fn sync_bfd(&self, st: &mut State) {
        type Want = (bfd::Timing, bool, tokio::sync::mpsc::Sender<PeerCommand>);
        let wanted: HashMap<IpAddr, Want> = self
            .snapshot()
            .iter()
            .filter_map(|e| {
                let b = e.config.bfd?;
                Some((
                    network::canonical(e.config.address()),
                    (b.timing(), b.multihop, e.handle.commands()),
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
            for (_, _, commands) in wanted.values() {
                let _ = commands.try_send(PeerCommand::Kick);
            }
            return;
        };
        st.bfd_peers.retain(|ip, p| {
            let keep = wanted.get(ip).is_some_and(|(t, m, c)| {
                *t == p.timing && *m == p.multihop && c.same_channel(&p.commands)
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
        for (ip, (timing, multihop, commands)) in wanted {
            if st.bfd_peers.contains_key(&ip) {
                continue;
            }
            let status = b.add(ip, timing, multihop);
            let follower = tokio::spawn(follow_bfd(ip, status.clone(), commands.clone()));
            st.bfd_peers.insert(
                ip,
                BfdPeer {
                    timing,
                    multihop,
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

/// Runs a speaker, configured from `cfg` if given (otherwise it waits for
/// confd's `Apply`), serving every control service on `socket`, until
/// `shutdown` resolves; then sends every peer a Cease. `startup_deferral`
/// (seconds) overrides the configuration's.
pub async fn run(
    cfg: Option<Config>,
    startup_deferral: Option<u64>,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let deferral = startup_deferral.unwrap_or_else(|| {
        cfg.as_ref()
            .map_or(Config::DEFAULT_STARTUP_DEFERRAL, |c| c.startup_deferral)
    });
    let speaker = Speaker::new(Duration::from_secs(deferral));
    if !speaker.health().is_ready() {
        speaker
            .health()
            .set_not_ready("waiting for the BGP configuration from confd");
    }
    if let Some(cfg) = cfg {
        speaker.apply(cfg).await?;
    }
    let control = proto::uds::bind(socket).await?;
    let router = Server::builder()
        .add_service(speaker.health().service())
        .add_service(BirdService::new(speaker.clone()).into_server())
        .add_service(crate::apply::service(speaker.clone()))
        .add_service(crate::route_stream::service(speaker.rib().clone()));
    let served = proto::uds::serve(router, control, socket, shutdown).await;
    info!("shutting down: sending Cease to every peer");
    speaker.shutdown().await;
    served?;
    Ok(())
}
