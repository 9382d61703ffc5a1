//! One peer's task: feeds socket and timer events to its [`Fsm`], carries
//! out the actions, decodes UPDATEs into [`UpdateMsg`]s for the RIB task,
//! and attaches the peer's Adj-RIB-Out to the connection once the session
//! is established.
//!
//! See [`crate::tasks`] for the channels around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::PeerConfig;
use crate::fsm::{self, Action, ConnId, Direction, Event, Fsm, Msg, Negotiated, State, Timer};
use crate::network::{self, ConnectOpts};
use crate::packet::attributes::DecodeCtx;
use crate::packet::header::MessageType;
use crate::packet::notification::Notification;
use crate::packet::open::Open;
use crate::packet::route_refresh::RouteRefresh;
use crate::packet::{Family, encode_keepalive, update};
use crate::rib::{AdjRibOut, PeerKey, PeerStats, SessionInfo, UpdateMsg};
use crate::rib_task::{RibEvent, RibGone};
use crate::tasks::{ConnEvent, ConnIo, EVENT_QUEUE, PeerCommand};

/// What `bird show peers` shows about one peer's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: State,
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub negotiated: Option<Negotiated>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// A running peer: its command channel, status and counters. The task
/// stops when the handle's `stop` is called or the handle drops.
#[derive(Debug)]
pub struct PeerHandle {
    pub config: Arc<PeerConfig>,
    pub key: PeerKey,
    pub status: watch::Receiver<PeerStatus>,
    pub stats: Arc<PeerStats>,
    pub out: Arc<AdjRibOut>,
    commands: mpsc::Sender<PeerCommand>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl PeerHandle {
    /// Where accepted connections and commands go.
    pub fn commands(&self) -> mpsc::Sender<PeerCommand> {
        self.commands.clone()
    }

    /// Sends Cease / Administrative Shutdown and waits (bounded) for the
    /// task to end.
    pub async fn stop(&self) {
        let _ = self.commands.send(PeerCommand::Stop).await;
        self.join().await;
    }

    /// Stops with `notification` (Hard Reset around it where the peer
    /// supports RFC 8538, if `hard_reset`).
    pub async fn shutdown(&self, notification: Notification, hard_reset: bool) {
        let _ = self
            .commands
            .send(PeerCommand::Shutdown {
                notification,
                hard_reset,
            })
            .await;
        self.join().await;
    }

    async fn join(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(|t| t.take()) {
            task.abort();
        }
    }
}

/// The speaker-wide settings a peer needs.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub asn: u32,
    pub router_id: std::net::Ipv4Addr,
}

/// Registers the peer with the RIB task, then starts its task.
/// `restarting`: this process has just started, so the OPEN of the first
/// session carries the graceful-restart Restart State bit. A peer that is
/// held down (see [`crate::config::SessionConfig::held_down`]) gets a task
/// that only refuses connections.
pub async fn spawn(
    local: Local,
    cfg: PeerConfig,
    key: PeerKey,
    rib: mpsc::Sender<RibEvent>,
    restarting: bool,
) -> Result<PeerHandle, RibGone> {
    let cfg = Arc::new(cfg);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let out = Arc::new(AdjRibOut::default());
    let stats = Arc::new(PeerStats::default());
    if let Some(reason) = cfg.session.held_down.clone() {
        return Ok(spawn_held(cfg, key, reason, cmd_tx, cmd_rx, out, stats));
    }
    rib.send(RibEvent::PeerAdded {
        key,
        policy: cfg.policy.clone(),
        out: out.clone(),
        stats: stats.clone(),
        commands: cmd_tx.clone(),
    })
    .await
    .map_err(|_| RibGone)?;
    let (status_tx, status_rx) = watch::channel(PeerStatus {
        state: State::Idle,
        since: SystemTime::now(),
        last_error: None,
        negotiated: None,
        local: None,
        remote: None,
    });
    let s = &cfg.session;
    let graceful_restart = (s.graceful_restart_time > 0).then_some(fsm::GracefulRestart {
        restart_time: s.graceful_restart_time,
        restarting,
    });
    let fsm_cfg = fsm::Config {
        local_as: cfg.policy.local_as(local.asn),
        local_id: local.router_id,
        peer_as: cfg.asn(),
        hold_time: s.hold_time,
        passive: s.passive,
        wait_for_path: cfg.bfd.is_some(),
        connect_retry: s.connect_retry(),
        connect_retry_max: s.connect_retry_max(),
        idle_hold: Duration::from_secs(1),
        idle_hold_max: s.error_wait_max(),
        families: s.families(),
        graceful_restart,
    };
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let peer = Peer {
        fsm: Fsm::new(fsm_cfg),
        cfg: cfg.clone(),
        local,
        key,
        conns: HashMap::new(),
        connecting: None,
        next_conn: 1,
        timers: HashMap::new(),
        ev_tx,
        status: status_tx,
        rib,
        out: out.clone(),
        to_rib: Vec::new(),
        generation: 0,
        closing: Vec::new(),
    };
    let span = info_span!("peer", addr = %cfg.address(), asn = cfg.asn());
    let task = tokio::spawn(peer.run(cmd_rx, ev_rx).instrument(span));
    Ok(PeerHandle {
        config: cfg,
        key,
        status: status_rx,
        stats,
        out,
        commands: cmd_tx,
        task: std::sync::Mutex::new(Some(task)),
    })
}

/// A peer whose session must not run. It is not registered with the RIB:
/// it will have no routes, and the start-up deferral need not wait for
/// its End-of-RIB.
fn spawn_held(
    cfg: Arc<PeerConfig>,
    key: PeerKey,
    reason: String,
    commands: mpsc::Sender<PeerCommand>,
    cmd_rx: mpsc::Receiver<PeerCommand>,
    out: Arc<AdjRibOut>,
    stats: Arc<PeerStats>,
) -> PeerHandle {
    warn!(peer = %cfg.address(), asn = cfg.asn(), %reason, "peer held down: its session will not start");
    let (status_tx, status_rx) = watch::channel(PeerStatus {
        state: State::Idle,
        since: SystemTime::now(),
        last_error: Some(reason),
        negotiated: None,
        local: None,
        remote: None,
    });
    let span = info_span!("peer", addr = %cfg.address(), asn = cfg.asn());
    let task = tokio::spawn(refuse_connections(cmd_rx, status_tx).instrument(span));
    PeerHandle {
        config: cfg,
        key,
        status: status_rx,
        stats,
        out,
        commands,
        task: std::sync::Mutex::new(Some(task)),
    }
}

/// The task of a held-down peer: the listener hands it the peer's
/// connections (the kernel accepts them, as no TCP-MD5 key is installed
/// for a password we do not have), and it closes each one before a byte
/// of BGP is read, until the peer is stopped or reconfigured.
async fn refuse_connections(
    mut commands: mpsc::Receiver<PeerCommand>,
    // Held while the peer is configured, so a watcher of its status does
    // not see the status closed.
    _status: watch::Sender<PeerStatus>,
) {
    while let Some(cmd) = commands.recv().await {
        match cmd {
            PeerCommand::Incoming(stream) => {
                let from = stream.peer_addr().ok();
                info!(from = ?from, "connection refused: the session is held down");
                drop(stream);
            }
            PeerCommand::Stop | PeerCommand::Shutdown { .. } => return,
            // Nothing runs that could be reset, kicked or refreshed.
            PeerCommand::Reset { .. }
            | PeerCommand::Kick
            | PeerCommand::PathDown(_)
            | PeerCommand::SendRouteRefresh(_) => {}
        }
    }
}

struct Peer {
    fsm: Fsm,
    cfg: Arc<PeerConfig>,
    local: Local,
    key: PeerKey,
    conns: HashMap<ConnId, ConnIo>,
    connecting: Option<(ConnId, JoinHandle<()>)>,
    next_conn: u64,
    timers: HashMap<Timer, Instant>,
    ev_tx: mpsc::Sender<ConnEvent>,
    status: watch::Sender<PeerStatus>,
    rib: mpsc::Sender<RibEvent>,
    out: Arc<AdjRibOut>,
    /// Events for the RIB task produced by the last step, sent in order
    /// before the next event is taken.
    to_rib: Vec<RibEvent>,
    /// Counts established sessions, to tell their Adj-RIB-Out contents
    /// apart.
    generation: u64,
    /// Writers of closed connections still flushing; awaited on stop.
    closing: Vec<JoinHandle<()>>,
}

impl Peer {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<PeerCommand>,
        mut events: mpsc::Receiver<ConnEvent>,
    ) {
        self.step(Event::Start);
        loop {
            self.closing.retain(|h| !h.is_finished());
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let wake = next
                .map(|(_, at)| at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let mut done = false;
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(PeerCommand::Incoming(stream)) => self.accept(stream),
                    Some(PeerCommand::Stop) | None => {
                        self.step(Event::Stop);
                        done = true;
                    }
                    Some(PeerCommand::Shutdown { notification, hard_reset }) => {
                        self.step(Event::Shutdown { notification, hard_reset });
                        done = true;
                    }
                    Some(PeerCommand::Reset { notification, hard_reset }) => {
                        self.step(Event::Reset { notification, hard_reset });
                    }
                    Some(PeerCommand::Kick) => self.step(Event::Kick),
                    Some(PeerCommand::PathDown(notification)) => {
                        self.step(Event::PathDown { notification });
                    }
                    Some(PeerCommand::SendRouteRefresh(family)) => self.request_refresh(family),
                },
                Some(ev) = events.recv() => self.on_conn_event(ev),
                _ = tokio::time::sleep_until(wake), if next.is_some() => {
                    if let Some((t, _)) = next {
                        self.timers.remove(&t);
                        self.step(Event::TimerExpired(t));
                    }
                }
            }
            for ev in std::mem::take(&mut self.to_rib) {
                if self.rib.send(ev).await.is_err() {
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
        }
        // Let queued NOTIFICATIONs leave before the task ends.
        for h in self.closing.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
        }
    }

    fn new_conn(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    fn accept(&mut self, stream: tokio::net::TcpStream) {
        let s = &self.cfg.session;
        let gtsm = s.ttl_security.then_some(s.ttl_security_hops);
        if let Err(e) = network::prepare_accepted(&stream, self.cfg.address(), gtsm) {
            warn!(error = %e, "cannot set socket options on accepted connection; dropping it");
            return;
        }
        let conn = self.new_conn();
        debug!(conn = conn.0, "accepted connection");
        self.conns
            .insert(conn, ConnIo::start(conn, stream, self.ev_tx.clone()));
        self.step(Event::Connected {
            conn,
            dir: Direction::Incoming,
        });
    }

    /// Asks the peer for `family` again, if the session can (RFC 2918).
    fn request_refresh(&mut self, family: Family) {
        let Some((conn, neg)) = self.fsm.established() else {
            return;
        };
        if !neg.route_refresh || !neg.families.contains(&family) {
            return;
        }
        if let Some(io) = self.conns.get(&conn) {
            info!(family = %family, "asking the peer to resend its routes (ROUTE-REFRESH)");
            let rr = RouteRefresh {
                afi: family.afi(),
                subtype: 0,
                safi: family.safi(),
            };
            let _ = io.tx.send(rr.encode());
        }
    }

    fn on_conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Connected { conn, stream } => {
                if !matches!(&self.connecting, Some((c, _)) if *c == conn) {
                    return;
                }
                self.connecting = None;
                debug!(conn = conn.0, "connected");
                self.conns
                    .insert(conn, ConnIo::start(conn, stream, self.ev_tx.clone()));
                self.step(Event::Connected {
                    conn,
                    dir: Direction::Outgoing,
                });
            }
            ConnEvent::ConnectFailed { conn, reason } => {
                if matches!(&self.connecting, Some((c, _)) if *c == conn) {
                    self.connecting = None;
                    debug!(%reason, "connect failed");
                    self.step(Event::ConnectFailed { reason });
                }
            }
            ConnEvent::Closed { conn, reason } => {
                if self.conns.contains_key(&conn) {
                    self.step(Event::Closed { conn, reason });
                }
            }
            ConnEvent::Malformed { conn, error } => {
                if self.conns.contains_key(&conn) {
                    warn!(conn = conn.0, %error, "malformed message header");
                    self.step(Event::DecodeError {
                        conn,
                        notification: Notification::from(&error),
                    });
                }
            }
            ConnEvent::Frame { conn, frame } => {
                if self.conns.contains_key(&conn) {
                    self.on_frame(conn, frame.kind, &frame.body);
                }
            }
        }
    }

    fn decode_error(&mut self, conn: ConnId, error: &crate::packet::DecodeError) {
        warn!(conn = conn.0, %error, "malformed message");
        self.step(Event::DecodeError {
            conn,
            notification: Notification::from(error),
        });
    }

    fn on_frame(&mut self, conn: ConnId, kind: MessageType, body: &[u8]) {
        match kind {
            MessageType::Open => match Open::decode(body) {
                Ok(open) => self.step(Event::Open { conn, open }),
                Err(e) => self.decode_error(conn, &e),
            },
            MessageType::Keepalive => self.step(Event::Keepalive { conn }),
            MessageType::Notification => match Notification::decode(body) {
                Ok(notification) => {
                    warn!(%notification, "received NOTIFICATION");
                    self.step(Event::Notification { conn, notification });
                }
                Err(e) => self.decode_error(conn, &e),
            },
            MessageType::RouteRefresh => match RouteRefresh::decode(body) {
                Ok(rr) => {
                    self.step(Event::RouteRefresh { conn });
                    // RFC 2918 section 4: re-advertise the Adj-RIB-Out of the
                    // family; an unsupported AFI/SAFI "MUST [be] ignore[d]".
                    let family = Family::from_afi_safi(rr.afi, rr.safi);
                    if let (Some((c, neg)), Some(f)) = (self.fsm.established(), family)
                        && c == conn
                        && neg.families.contains(&f)
                        && rr.subtype == 0
                    {
                        self.to_rib.push(RibEvent::RefreshRequested {
                            key: self.key,
                            family: f,
                        });
                    }
                }
                Err(e) => self.decode_error(conn, &e),
            },
            MessageType::Update => self.on_update(conn, body),
        }
    }

    fn decode_ctx(&self, conn: ConnId, neg: &Negotiated) -> DecodeCtx {
        let local_v4 = self.conns.get(&conn).and_then(|c| c.local).and_then(|a| {
            match network::canonical(a.ip()) {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }
        });
        DecodeCtx {
            four_octet_as: neg.four_octet_as,
            external: !self.cfg.policy.internal(self.local.asn),
            peer_as: neg.peer_as,
            local_v4,
        }
    }

    fn on_update(&mut self, conn: ConnId, body: &[u8]) {
        let Some((c, neg)) = self.fsm.established().map(|(c, n)| (c, n.clone())) else {
            // Not established on any connection: the FSM answers with an
            // FSM Error.
            self.step(Event::Update { conn });
            return;
        };
        if c != conn {
            self.step(Event::Update { conn });
            return;
        }
        let ctx = self.decode_ctx(conn, &neg);
        match update::decode(body, &ctx) {
            Err(e) => self.decode_error(conn, &e),
            Ok(u) => {
                if let Some(e) = u.unlocatable_nlri(&neg.families) {
                    self.decode_error(conn, &e);
                    return;
                }
                self.step(Event::Update { conn });
                if !u.attrs.issues.is_empty() {
                    let issues = crate::packet::error::summarize_issues(&u.attrs.issues);
                    warn!(%issues, "malformed attributes handled per RFC 7606");
                }
                if !u.foreign_families.is_empty() {
                    debug!(families = ?u.foreign_families, "ignored unsupported AFI/SAFI");
                }
                let (msg, ignored) = UpdateMsg::from_update(&u, &ctx, &neg.families);
                if ignored > 0 {
                    debug!(
                        ignored,
                        "prefixes of families the session did not negotiate"
                    );
                }
                if let Some(f) = msg.end_of_rib {
                    info!(family = %f, "End-of-RIB received");
                }
                if msg.prefixes() > 0 || msg.end_of_rib.is_some() {
                    self.to_rib.push(RibEvent::Update { key: self.key, msg });
                }
            }
        }
    }

    /// Runs one event through the FSM and carries out its actions.
    fn step(&mut self, ev: Event) {
        let before = self.fsm.state();
        let actions = self.fsm.handle(ev);
        for a in actions {
            self.act(a);
        }
        let after = self.fsm.state();
        if before != after {
            info!(from = before.name(), to = after.name(), "session state");
        }
        self.publish(before != after);
    }

    fn publish(&mut self, changed: bool) {
        let (local, remote) = self
            .fsm
            .established()
            .and_then(|(c, _)| self.conns.get(&c))
            .map(|c| (c.local, c.remote))
            .unwrap_or((None, None));
        let state = self.fsm.state();
        let negotiated = self.fsm.negotiated().cloned();
        let last_error = self.fsm.last_error().map(str::to_string);
        self.status.send_if_modified(|s| {
            let new = PeerStatus {
                state,
                since: if changed { SystemTime::now() } else { s.since },
                last_error,
                negotiated,
                local,
                remote,
            };
            let modified = *s != new;
            *s = new;
            modified
        });
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Connect => {
                let conn = self.new_conn();
                let peer = self.cfg.socket_addr();
                let opts = ConnectOpts {
                    local: self.cfg.session.local_address,
                    md5: self
                        .cfg
                        .session
                        .password
                        .as_ref()
                        .map(|p| p.as_bytes().to_vec()),
                    gtsm: self
                        .cfg
                        .session
                        .ttl_security
                        .then_some(self.cfg.session.ttl_security_hops),
                };
                let events = self.ev_tx.clone();
                let task = tokio::spawn(async move {
                    let ev = match network::connect(peer, &opts).await {
                        Ok(stream) => ConnEvent::Connected { conn, stream },
                        Err(e) => ConnEvent::ConnectFailed {
                            conn,
                            reason: e.to_string(),
                        },
                    };
                    let _ = events.send(ev).await;
                });
                if let Some((_, old)) = self.connecting.replace((conn, task)) {
                    old.abort();
                }
            }
            Action::AbortConnect => {
                if let Some((_, task)) = self.connecting.take() {
                    task.abort();
                }
            }
            Action::Send { conn, msg } => {
                let bytes = match &msg {
                    Msg::Open(o) => o.encode(),
                    Msg::Keepalive => encode_keepalive(),
                    Msg::Notification(n) => {
                        warn!(notification = %n, "sending NOTIFICATION");
                        n.encode()
                    }
                };
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.tx.send(bytes);
                }
            }
            Action::Close { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    self.closing.push(c.close());
                }
            }
            Action::StartTimer { timer, after } => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Action::StopTimer(timer) => {
                self.timers.remove(&timer);
            }
            Action::Established { conn, negotiated } => {
                info!(
                    peer_id = %negotiated.peer_id,
                    hold_time = negotiated.hold_time,
                    families = ?negotiated.families,
                    four_octet_as = negotiated.four_octet_as,
                    graceful_restart = negotiated.peer_gr.is_some(),
                    "session established"
                );
                self.generation += 1;
                let local_addr = self
                    .conns
                    .get(&conn)
                    .and_then(|io| io.local)
                    .map(|a| network::canonical(a.ip()));
                if let Some(io) = self.conns.get(&conn) {
                    io.attach(self.out.clone(), self.generation);
                }
                self.to_rib.push(RibEvent::Up {
                    key: self.key,
                    session: SessionInfo {
                        generation: self.generation,
                        negotiated,
                        local_addr,
                        n_bit: self.fsm.config().graceful_restart.is_some(),
                    },
                });
            }
            Action::Down(cause) => {
                self.to_rib.push(RibEvent::Down {
                    key: self.key,
                    cause,
                });
            }
        }
    }
}
