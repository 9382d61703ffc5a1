//! One peer's task: feeds socket and timer events to its [`Fsm`], carries
//! out the actions, decodes messages and keeps the Adj-RIB-In.
//!
//! See [`crate::tasks`] for the channels around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::PeerConfig;
use crate::fsm::{self, Action, ConnId, Direction, Event, Fsm, Msg, Negotiated, State, Timer};
use crate::network::{self, ConnectOpts};
use crate::packet::aspath::AsPath;
use crate::packet::attributes::{DecodeCtx, PathAttrs};
use crate::packet::header::MessageType;
use crate::packet::notification::Notification;
use crate::packet::open::Open;
use crate::packet::route_refresh::RouteRefresh;
use crate::packet::{Family, encode_keepalive, update};
use crate::rib::AdjRibIn;
use crate::tasks::{ConnEvent, ConnIo, EVENT_QUEUE, PeerCommand};

/// What `bird show peers` shows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: State,
    pub since: SystemTime,
    pub prefixes_advertised: u64,
    pub last_error: Option<String>,
    pub negotiated: Option<Negotiated>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// A running peer: its command channel, status and received routes. The
/// task stops when the handle's `stop` is called or the handle drops.
#[derive(Debug)]
pub struct PeerHandle {
    pub config: Arc<PeerConfig>,
    pub status: watch::Receiver<PeerStatus>,
    pub rib: Arc<RwLock<AdjRibIn>>,
    commands: mpsc::Sender<PeerCommand>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl PeerHandle {
    /// Hands an accepted connection to the peer.
    pub async fn incoming(&self, stream: tokio::net::TcpStream) {
        let _ = self.commands.send(PeerCommand::Incoming(stream)).await;
    }

    /// Sends Cease to the peer and waits (bounded) for its task to end.
    pub async fn stop(&self) {
        let _ = self.commands.send(PeerCommand::Stop).await;
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

/// Starts the task of one configured peer.
pub fn spawn(local: Local, cfg: PeerConfig) -> PeerHandle {
    let cfg = Arc::new(cfg);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(PeerStatus {
        state: State::Idle,
        since: SystemTime::now(),
        prefixes_advertised: 0,
        last_error: None,
        negotiated: None,
        local: None,
        remote: None,
    });
    let rib = Arc::new(RwLock::new(AdjRibIn::default()));
    let fsm_cfg = fsm::Config {
        local_as: local.asn,
        local_id: local.router_id,
        peer_as: cfg.asn,
        hold_time: cfg.hold_time,
        passive: cfg.passive,
        connect_retry: cfg.connect_retry(),
        connect_retry_max: Duration::from_secs(120).max(cfg.connect_retry()),
        idle_hold: Duration::from_secs(1),
        idle_hold_max: Duration::from_secs(60),
        families: cfg.families(),
        graceful_restart: (cfg.graceful_restart_time > 0).then_some(cfg.graceful_restart_time),
    };
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let peer = Peer {
        fsm: Fsm::new(fsm_cfg),
        cfg: cfg.clone(),
        local,
        conns: HashMap::new(),
        connecting: None,
        next_conn: 1,
        timers: HashMap::new(),
        ev_tx,
        status: status_tx,
        rib: rib.clone(),
        advertised: 0,
        closing: Vec::new(),
    };
    let span = info_span!("peer", addr = %cfg.address, asn = cfg.asn);
    let task = tokio::spawn(peer.run(cmd_rx, ev_rx).instrument(span));
    PeerHandle {
        config: cfg,
        status: status_rx,
        rib,
        commands: cmd_tx,
        task: std::sync::Mutex::new(Some(task)),
    }
}

struct Peer {
    fsm: Fsm,
    cfg: Arc<PeerConfig>,
    local: Local,
    conns: HashMap<ConnId, ConnIo>,
    connecting: Option<(ConnId, JoinHandle<()>)>,
    next_conn: u64,
    timers: HashMap<Timer, Instant>,
    ev_tx: mpsc::Sender<ConnEvent>,
    status: watch::Sender<PeerStatus>,
    rib: Arc<RwLock<AdjRibIn>>,
    advertised: u64,
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
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(PeerCommand::Incoming(stream)) => self.accept(stream),
                    Some(PeerCommand::Stop) | None => {
                        self.step(Event::Stop);
                        break;
                    }
                },
                Some(ev) = events.recv() => self.on_conn_event(ev),
                _ = tokio::time::sleep_until(wake), if next.is_some() => {
                    if let Some((t, _)) = next {
                        self.timers.remove(&t);
                        self.step(Event::TimerExpired(t));
                    }
                }
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
        if let Err(e) = network::prepare_accepted(&stream, self.cfg.address, self.cfg.ttl_security)
        {
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
                    let refresh = match (self.fsm.established(), family) {
                        (Some((c, neg)), Some(f))
                            if c == conn && neg.families.contains(&f) && rr.subtype == 0 =>
                        {
                            Some((neg.clone(), f))
                        }
                        _ => None,
                    };
                    if let Some((neg, f)) = refresh {
                        self.advertise(conn, &neg, &[f]);
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
            external: neg.peer_as != self.local.asn,
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
                self.step(Event::Update { conn });
                let applied = match self.rib.write() {
                    Ok(mut rib) => rib.apply(&u, &ctx, &neg.families),
                    Err(_) => return,
                };
                for issue in &applied.issues {
                    warn!(%issue, "malformed attribute handled per RFC 7606");
                }
                if let Some(f) = applied.end_of_rib {
                    info!(family = %f, "End-of-RIB received");
                }
                debug!(
                    announced = applied.announced,
                    withdrawn = applied.withdrawn,
                    treat_as_withdraw = applied.treat_as_withdraw,
                    "UPDATE applied"
                );
                if !u.foreign_families.is_empty() {
                    debug!(families = ?u.foreign_families, "ignored unsupported AFI/SAFI");
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
        let advertised = self.advertised;
        self.status.send_if_modified(|s| {
            let new = PeerStatus {
                state,
                since: if changed { SystemTime::now() } else { s.since },
                prefixes_advertised: advertised,
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
                    local: self.cfg.local_address,
                    md5: self.cfg.password.as_ref().map(|p| p.as_bytes().to_vec()),
                    gtsm: self.cfg.ttl_security,
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
                    "session established"
                );
                self.advertise(conn, &negotiated, &negotiated.families.clone());
            }
            Action::Down => {
                if let Ok(mut rib) = self.rib.write() {
                    rib.clear();
                }
                self.advertised = 0;
            }
        }
    }

    /// Sends our configured prefixes of `families` with next-hop self,
    /// then End-of-RIB for each.
    fn advertise(&mut self, conn: ConnId, neg: &Negotiated, families: &[Family]) {
        let Some(io) = self.conns.get(&conn) else {
            return;
        };
        let local_ip = io.local.map(|a| network::canonical(a.ip()));
        let internal = neg.peer_as == self.local.asn;
        let mut sent = 0u64;
        for &family in families {
            let prefixes: Vec<IpNetwork> = self
                .cfg
                .prefixes
                .iter()
                .filter(|p| Family::of(p) == family)
                .copied()
                .collect();
            if !prefixes.is_empty() {
                let next_hop = match family {
                    Family::Ipv4Unicast => self
                        .cfg
                        .next_hop_v4
                        .map(IpAddr::V4)
                        .or(local_ip.filter(IpAddr::is_ipv4)),
                    Family::Ipv6Unicast => self
                        .cfg
                        .next_hop_v6
                        .map(IpAddr::V6)
                        .or(local_ip.filter(IpAddr::is_ipv6)),
                };
                let attrs = PathAttrs {
                    as_path: if internal {
                        AsPath::default()
                    } else {
                        AsPath::sequence([self.local.asn])
                    },
                    next_hop,
                    local_pref: internal.then(|| self.cfg.local_pref.unwrap_or(100)),
                    med: self.cfg.med,
                    ..PathAttrs::default()
                };
                match update::encode_announce(&attrs, &prefixes, family, neg.four_octet_as) {
                    Ok(msgs) => {
                        for m in msgs {
                            let _ = io.tx.send(m);
                        }
                        sent += prefixes.len() as u64;
                    }
                    Err(e) => warn!(
                        family = %family,
                        error = %e,
                        "cannot advertise; set next_hop_v4/next_hop_v6 for this peer"
                    ),
                }
            }
            let _ = io.tx.send(update::encode_end_of_rib(family));
        }
        if families.len() == neg.families.len() {
            self.advertised = sent;
        }
    }
}
