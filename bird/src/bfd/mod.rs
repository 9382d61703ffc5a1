//! BFD: Bidirectional Forwarding Detection (RFC 5880, asynchronous mode)
//! for directly connected peers (RFC 5881, single hop) and peers behind a
//! router (RFC 5883, multihop: nodes in other subnets), so a neighbour
//! that disappears without closing its TCP connection (a cut link, a dead
//! machine) takes its routes with it in half a second rather than after
//! the 90 s BGP hold time.
//!
//! ```text
//!   UDP :3784 (single hop) ─┐
//!   UDP :4784 (multihop)  ──┴► Control::parse ─► Session (by discriminator
//!                                                or source address):
//!                                                TTL floor, SHA1 auth
//!                                                (session::Protection)
//!   clock ──────────────────────────────────────────► Session::tick
//!   Session::transmit, seal ─► UDP from one port in 49152-65535, TTL 255
//!                              (signed with the session's key, if any)
//!   state changes ─► watch::Sender<Status> per peer ─► the BGP peer task
//! ```
//!
//! One task runs every session of the daemon, on a thread of its own with
//! its own event loop, so no BGP work (a table transfer, route selection)
//! can delay a packet or a timer. BGP's reaction
//! (`crate::speaker`): Up → Down resets the session with Cease / BFD Down
//! (RFC 9384) as a Hard Reset, so no route is kept as stale; Down → Up
//! makes the peer connect at once instead of waiting out its back-off.
//! A restarting neighbour (bird killed) closes its TCP connection first,
//! so graceful restart still keeps its routes: BFD only acts on sessions
//! that are still established.
//!
//! Protection (RFC 5880 section 6.7, RFC 5881 section 5, RFC 5883
//! section 5): single-hop packets must arrive with TTL 255; multihop ones
//! with at least `256 - hops` when the peer has a GTSM hop count
//! (`ttl_security_hops`, BGPPeer `ttlSecurity`), otherwise with any TTL.
//! A session with a key (Keyed SHA1 or Meticulous Keyed SHA1) drops
//! every packet without its valid digest or with a replayed sequence
//! number; one without drops every packet that carries authentication.
//! A dropped packet changes nothing, so a spoofed Down cannot take a
//! session (and the BGP session it guards) down.

pub mod packet;
pub mod session;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use packet::State;
pub use session::{Protection, Status, Timing};

use crate::network::bfd::{Sockets, recv, recv_opt, recv_with_ttl};
use crate::network::canonical;
use packet::Control;
use session::{Discard, Session};

/// RFC 5881: single-hop BFD Control packets go to this port.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5883: multihop BFD Control packets go to this port.
pub const MULTIHOP_PORT: u16 = 4784;

/// Waking this much later than a timer asked counts as a stall of our own.
const STALL: std::time::Duration = std::time::Duration::from_millis(50);

enum Cmd {
    Add {
        peer: IpAddr,
        timing: Timing,
        multihop: bool,
        protection: Protection,
        status: watch::Sender<Status>,
    },
    Remove(IpAddr),
}

/// The daemon's BFD task. Cloning is cheap; the task stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Bfd {
    cmds: mpsc::UnboundedSender<Cmd>,
}

impl Bfd {
    /// Binds the sockets (UDP `port` for single-hop and `multihop_port`
    /// on every address, IPv4 and IPv6) and starts the task on its thread.
    pub async fn start(port: u16, multihop_port: u16) -> io::Result<Bfd> {
        let (started, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("bfd".to_string())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Bfd::bind(port, multihop_port) {
                        Ok((bfd, task)) => {
                            let _ = started.send(Ok(bfd));
                            task.run().await;
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                });
            })?;
        result
            .await
            .map_err(|_| io::Error::other("the BFD thread ended before it started"))?
    }

    /// The sockets and the task; inside the runtime that will run it.
    fn bind(port: u16, multihop_port: u16) -> io::Result<(Bfd, Task)> {
        let v4 = Sockets::bind(false, port, multihop_port, seed_discriminator())?;
        let v6 = match Sockets::bind(true, port, multihop_port, seed_discriminator()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "BFD: no IPv6 sockets; IPv6 peers get no BFD");
                None
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            v4,
            v6,
            port,
            multihop_port,
            peers: HashMap::new(),
            by_discr: HashMap::new(),
            cmds: rx,
        };
        Ok((Bfd { cmds: tx }, task))
    }

    /// Starts a session to `peer` (single hop, or `multihop`), demanding
    /// `protection` of what it receives; the receiver follows its state.
    /// The session ends with [`Bfd::remove`] (the receiver then reports
    /// the sender gone).
    pub fn add(
        &self,
        peer: IpAddr,
        timing: Timing,
        multihop: bool,
        protection: Protection,
    ) -> watch::Receiver<Status> {
        let (tx, rx) = watch::channel(Status {
            state: State::Down,
            diag: packet::diag::NONE,
            neighbor_admin_down: false,
        });
        let _ = self.cmds.send(Cmd::Add {
            peer,
            timing,
            multihop,
            protection,
            status: tx,
        });
        rx
    }

    pub fn remove(&self, peer: IpAddr) {
        let _ = self.cmds.send(Cmd::Remove(peer));
    }
}

/// A random number from the kernel (`/dev/urandom`); a clock-based one
/// only if that cannot be read. Discriminators are drawn from it, so that
/// an off-path sender cannot guess a session's (RFC 5880 section 6.3).
fn random_u32() -> u32 {
    use std::io::Read as _;
    let mut b = [0u8; 4];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u32::from_ne_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.subsec_nanos() ^ std::process::id().rotate_left(16)
        }
    }
}

fn seed_discriminator() -> u32 {
    random_u32() | 1
}

struct Peer {
    session: Session,
    multihop: bool,
    status: watch::Sender<Status>,
    /// When each kind of dropped packet was last warned about, so a
    /// mismatched key is told once a minute, not ten times a second (and
    /// alternating kinds cannot flood the log either).
    warned: Vec<(std::mem::Discriminant<Discard>, Instant)>,
}

/// How often the same kind of dropped packet is warned about per peer.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

struct Task {
    v4: Sockets,
    v6: Option<Sockets>,
    port: u16,
    multihop_port: u16,
    peers: HashMap<IpAddr, Peer>,
    by_discr: HashMap<u32, IpAddr>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
}

impl Task {
    async fn run(mut self) {
        let mut b4 = [0u8; 128];
        let mut b6 = [0u8; 128];
        let mut m4 = [0u8; 128];
        let mut m6 = [0u8; 128];
        loop {
            let due = self.peers.values().map(|p| p.session.due()).min();
            let far = Instant::now() + std::time::Duration::from_secs(3600);
            let mut woke_for = None;
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    None => return,
                    Some(c) => self.command(c),
                },
                r = recv(&self.v4.rx, &mut b4) => {
                    if let Ok((n, from, ttl)) = r {
                        self.receive(&b4[..n], from, ttl, false);
                    }
                }
                r = recv(&self.v4.rx_multihop, &mut m4) => {
                    if let Ok((n, from, ttl)) = r {
                        self.receive(&m4[..n], from, ttl, true);
                    }
                }
                r = recv_opt(self.v6.as_ref().map(|s| &s.rx), &mut b6) => {
                    if let Ok((n, from, ttl)) = r {
                        self.receive(&b6[..n], from, ttl, false);
                    }
                }
                r = recv_opt(self.v6.as_ref().map(|s| &s.rx_multihop), &mut m6) => {
                    if let Ok((n, from, ttl)) = r {
                        self.receive(&m6[..n], from, ttl, true);
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(far)) => woke_for = due,
            }
            // Woken much later than asked: this process was not running
            // (an overloaded or paused machine). What the neighbour sent
            // meanwhile is read first, and the silence we caused ourselves
            // does not count against it.
            if let Some(due) = woke_for {
                let lag = Instant::now().saturating_duration_since(due);
                if lag > STALL {
                    debug!(?lag, "BFD task woke late; detection times extended");
                    for p in self.peers.values_mut() {
                        p.session.postpone(lag);
                    }
                }
            }
            self.drain();
            self.service().await;
        }
    }

    /// The receiving socket of a family and kind, if bound.
    fn rx(&self, v6: bool, multihop: bool) -> Option<&UdpSocket> {
        let s = if v6 { self.v6.as_ref()? } else { &self.v4 };
        Some(if multihop { &s.rx_multihop } else { &s.rx })
    }

    /// Handles every datagram already queued on the receive sockets (at
    /// most a bounded number), so timers are judged on what arrived.
    fn drain(&mut self) {
        let mut buf = [0u8; 128];
        for multihop in [false, true] {
            for v6 in [false, true] {
                for _ in 0..1024 {
                    let Some(sock) = self.rx(v6, multihop) else {
                        break;
                    };
                    let r = sock.try_io(Interest::READABLE, || {
                        recv_with_ttl(sock.as_raw_fd(), &mut buf)
                    });
                    match r {
                        Ok((n, from, ttl)) => self.receive(&buf[..n], from, ttl, multihop),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Add {
                peer,
                timing,
                multihop,
                protection,
                status,
            } => {
                let peer = canonical(peer);
                self.drop_peer(peer);
                // Random, unique among this node's sessions, never 0.
                let mut discr = random_u32();
                while discr == 0 || self.by_discr.contains_key(&discr) {
                    discr = random_u32();
                }
                self.by_discr.insert(discr, peer);
                info!(
                    %peer,
                    discriminator = discr,
                    ?timing,
                    multihop,
                    min_ttl = ?protection.min_ttl,
                    auth = ?protection.key.as_ref().map(|k| k.kind),
                    "BFD session started"
                );
                self.peers.insert(
                    peer,
                    Peer {
                        session: Session::new(timing, discr, Instant::now())
                            .protected(protection, random_u32()),
                        multihop,
                        status,
                        warned: Vec::new(),
                    },
                );
            }
            Cmd::Remove(peer) => self.drop_peer(canonical(peer)),
        }
    }

    fn drop_peer(&mut self, peer: IpAddr) {
        if let Some(mut p) = self.peers.remove(&peer) {
            // Stopped on purpose: say so (three copies, one may be lost),
            // so the neighbour's BGP does not take it for a failed path.
            if let Some(c) = p.session.admin_down() {
                let port = if p.multihop {
                    self.multihop_port
                } else {
                    self.port
                };
                let sock = match peer {
                    IpAddr::V4(_) => Some(&self.v4.tx),
                    IpAddr::V6(_) => self.v6.as_ref().map(|s| &s.tx),
                };
                for _ in 0..3 {
                    // Signed one by one: meticulous authentication wants
                    // a new sequence number on each.
                    let bytes = p.session.seal(&c);
                    if let Some(sock) = sock {
                        let _ = sock.try_send_to(&bytes, SocketAddr::new(peer, port));
                    }
                }
            }
            self.by_discr.remove(&p.session.local_discr);
            debug!(%peer, "BFD session removed");
        }
    }

    fn receive(&mut self, data: &[u8], from: IpAddr, ttl: Option<u8>, multihop: bool) {
        let from = canonical(from);
        // The TTL and authentication are checked by the session (it knows
        // the peer's hop count and key): before then nothing is kept.
        let c = match Control::parse(data) {
            Ok(c) => c,
            Err(e) => {
                debug!(%from, error = %e, "BFD packet dropped");
                return;
            }
        };
        let key = if c.your_discr != 0 {
            match self.by_discr.get(&c.your_discr) {
                Some(ip) if *ip == from => *ip,
                _ => {
                    debug!(%from, discr = c.your_discr, "BFD packet for no session of that peer");
                    return;
                }
            }
        } else {
            from
        };
        let Some(p) = self.peers.get_mut(&key) else {
            debug!(%from, "BFD packet from a peer without BFD");
            return;
        };
        if p.multihop != multihop {
            debug!(%from, multihop, "BFD packet on the other port than the session's");
            return;
        }
        match p.session.receive(&c, data, ttl, Instant::now()) {
            Ok(Some(st)) => report(key, &p.status, st),
            Ok(None) => {}
            // A wrong key, type, key ID or TTL is a configuration (or an
            // attack) an operator must hear of; an old sequence number or
            // a missing discriminator happens in normal operation.
            Err(e @ (Discard::Sequence { .. } | Discard::NoYourDiscriminator(_))) => {
                debug!(%from, ?ttl, error = %e, "BFD packet dropped")
            }
            Err(e) => {
                if !first_in_a_while(&mut p.warned, &e, Instant::now()) {
                    debug!(%from, ?ttl, error = %e, "BFD packet dropped");
                } else {
                    warn!(peer = %from, ?ttl, error = %e, "BFD packet dropped (each reason told once a minute)");
                }
            }
        }
    }

    /// Expires detection times and sends what is due.
    async fn service(&mut self) {
        let now = Instant::now();
        let mut out = Vec::new();
        for (ip, p) in &mut self.peers {
            if let Some(st) = p.session.tick(now) {
                report(*ip, &p.status, st);
            }
            if let Some(c) = p.session.transmit(now) {
                let port = if p.multihop {
                    self.multihop_port
                } else {
                    self.port
                };
                out.push((*ip, port, p.session.seal(&c)));
            }
        }
        for (ip, port, bytes) in out {
            let sock = match ip {
                IpAddr::V4(_) => Some(&self.v4.tx),
                IpAddr::V6(_) => self.v6.as_ref().map(|s| &s.tx),
            };
            if let Some(sock) = sock
                && let Err(e) = sock.try_send_to(&bytes, SocketAddr::new(ip, port))
            {
                // Unreachable while a link is down: the session times out.
                debug!(peer = %ip, error = %e, "BFD packet not sent");
            }
        }
    }
}

/// Whether a drop for `e`'s reason is the first in [`WARN_EVERY`]
/// (recording it in `warned` if so).
fn first_in_a_while(
    warned: &mut Vec<(std::mem::Discriminant<Discard>, Instant)>,
    e: &Discard,
    now: Instant,
) -> bool {
    let kind = std::mem::discriminant(e);
    match warned.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, at)) if now.duration_since(*at) < WARN_EVERY => false,
        Some((_, at)) => {
            *at = now;
            true
        }
        None => {
            warned.push((kind, now));
            true
        }
    }
}

fn report(peer: IpAddr, tx: &watch::Sender<Status>, st: Status) {
    if st.state == State::Up || tx.borrow().state == State::Up {
        info!(%peer, state = %st.state, diag = packet::diag::describe(st.diag), "BFD session state");
    } else {
        debug!(%peer, state = %st.state, "BFD session state");
    }
    tx.send_replace(st);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_for_a_drop_is_warned_about_once_a_minute() {
        let mut w = Vec::new();
        let t0 = Instant::now();
        let ttl = Discard::Ttl {
            got: Some(1),
            min: 255,
        };
        // Alternating reasons: each told once, not once per packet.
        let told: Vec<bool> = (0..6)
            .map(|i| {
                let e = if i % 2 == 0 { &ttl } else { &Discard::Digest };
                first_in_a_while(&mut w, e, t0 + std::time::Duration::from_millis(i))
            })
            .collect();
        assert_eq!(told, [true, true, false, false, false, false]);
        assert!(!first_in_a_while(
            &mut w,
            &Discard::Digest,
            t0 + WARN_EVERY - std::time::Duration::from_millis(1)
        ));
        assert!(first_in_a_while(
            &mut w,
            &Discard::Digest,
            t0 + WARN_EVERY + std::time::Duration::from_millis(1)
        ));
        assert!(first_in_a_while(&mut w, &Discard::UnexpectedAuth, t0));
    }
}
