//! The BGP session state machine (RFC 4271 section 8), with no I/O.
//!
//! [`Fsm::handle`] takes one [`Event`] (a timer fired, a connection came
//! up or went away, a message arrived) and returns the [`Action`]s to
//! carry out (connect, send, close, arm or stop a timer, tell the RIB the
//! session is up or down). The tokio task in [`crate::session`] does the
//! I/O; tests drive this type directly with no sockets.
//!
//! One peer has at most two connections at a time: `main`, and during a
//! collision `other`. RFC 4271 section 6.8 detection runs when an OPEN
//! arrives while both exist (we know the peer's BGP Identifier from that
//! OPEN, so, like BIRD, we also resolve against a connection still in
//! OpenSent); the connection opened by the side with the higher BGP
//! Identifier survives (RFC 6286 section 2.3 breaks a tie by AS number).
//!
//! Deliberate deviations from the letter of section 8.2.2, each one what
//! BIRD does:
//! - a failed outgoing connection attempt moves Connect to Active (the RFC
//!   says Idle), so the peer's own connection is still accepted while we
//!   wait for the ConnectRetry timer;
//! - the ConnectRetry time doubles after every failed attempt (up to
//!   `connect_retry_max`) and resets once the session is Established, so a
//!   peer that is down is not hammered;
//! - after an error the session waits in Idle for an IdleHold time that
//!   doubles on every error (RFC 4271 section 8.1.1's
//!   DampPeerOscillations) and resets once the session is Established;
//!   but when the peer ended the session itself (closed the connection,
//!   sent a NOTIFICATION), its incoming connection is accepted during that
//!   wait rather than refused (the RFC's Idle refuses every connection).
//!
//! And one rule the RFC leaves open: an OPEN on a new connection replaces
//! an established graceful-restart session (RFC 4724 section 4.2) only if
//! it passes negotiation and names the session's BGP Identifier; any
//! other OPEN costs only its own connection.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::Family;
use crate::packet::notification::{Notification, cease_sub, code, fsm_sub};
use crate::packet::open::Open;

/// Hold time while waiting for the peer's OPEN (RFC 4271 section 8.2.2
/// suggests "a large value", 4 minutes).
pub const OPEN_HOLD: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub local_as: u32,
    pub local_id: Ipv4Addr,
    pub peer_as: u32,
    /// Hold time we propose, seconds (0 or at least 3).
    pub hold_time: u16,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// BFD watches the path to this peer: open no connection of our own
    /// until BFD reports the path up ([`Event::Kick`]), so no session of
    /// ours runs unprotected (an established session with BFD not yet Up
    /// would ride out a cut for the whole hold time). The peer's own
    /// connections are still accepted: a peer that runs BFD connects once
    /// its side is Up, which is one round trip before ours, and one that
    /// does not gate on BFD (BIRD) must not be kept out.
    pub wait_for_path: bool,
    pub connect_retry: Duration,
    /// Ceiling of the ConnectRetry wait, which doubles after every failed
    /// attempt until the session is established.
    pub connect_retry_max: Duration,
    /// First IdleHold wait after an error, and the ceiling it doubles to.
    pub idle_hold: Duration,
    pub idle_hold_max: Duration,
    /// Families we offer (multiprotocol capabilities).
    pub families: Vec<Family>,
    /// The graceful-restart capability to advertise (RFC 4724), if any.
    pub graceful_restart: Option<GracefulRestart>,
}

/// What we advertise in the graceful-restart capability. Every family we
/// offer is listed with the Forwarding State bit set: felix keeps the
/// kernel routes while bird restarts. The "N" bit (RFC 8538) is always
/// set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart Time, seconds (12 bits).
    pub restart_time: u16,
    /// Set the Restart State bit: this process has just started and the
    /// first session is a restart. Cleared once a session is established.
    pub restarting: bool,
}

/// Why an established session went down: what the RIB needs to decide
/// between flushing the peer's routes and keeping them as stale (RFC 4724
/// section 4.2, RFC 8538 section 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownCause {
    /// We sent this NOTIFICATION (an error, hold timer expiry, a stop).
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// The TCP connection ended with no NOTIFICATION.
    ConnectionLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We opened it.
    Outgoing,
    /// The peer opened it.
    Incoming,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    IdleHold,
    Hold(ConnId),
    Keepalive(ConnId),
}

/// A message the FSM itself sends; UPDATEs come from the RIB side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Open(Open),
    Keepalive,
    Notification(Notification),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// ManualStart / AutomaticStart.
    Start,
    /// ManualStop: administrative shutdown (Cease / Administrative
    /// Shutdown, never wrapped in a Hard Reset, so that a peer supporting
    /// RFC 8538 keeps our routes while we restart).
    Stop,
    /// ManualStop with this NOTIFICATION (for instance Cease / Peer
    /// De-configured); with `hard_reset`, sent as Cease / Hard Reset when
    /// both sides negotiated the RFC 8538 "N" bit, so the peer flushes our
    /// routes instead of keeping them as stale.
    Shutdown {
        notification: Notification,
        hard_reset: bool,
    },
    /// Drop the session with this NOTIFICATION and try again after the
    /// IdleHold time (for instance when the maximum number of prefixes is
    /// exceeded); `hard_reset` as for `Shutdown`.
    Reset {
        notification: Notification,
        hard_reset: bool,
    },
    /// The path to the peer is known to work again (its BFD session came
    /// up): forget the back-off and try to connect now if not connected.
    Kick,
    /// The path to the peer stopped working (its BFD session left Up):
    /// drop the session with this NOTIFICATION (Hard Reset where
    /// negotiated: the peer's routes must go, not be kept as stale) and
    /// open no connection of our own until the next `Kick`.
    PathDown {
        notification: Notification,
    },
    TimerExpired(Timer),
    /// A TCP connection is up (we connected, or we accepted the peer's).
    Connected {
        conn: ConnId,
        dir: Direction,
    },
    /// Our outgoing connection attempt failed.
    ConnectFailed {
        reason: String,
    },
    /// The connection was closed by the peer or failed.
    Closed {
        conn: ConnId,
        reason: String,
    },
    Open {
        conn: ConnId,
        open: Open,
    },
    Keepalive {
        conn: ConnId,
    },
    Update {
        conn: ConnId,
    },
    RouteRefresh {
        conn: ConnId,
    },
    Notification {
        conn: ConnId,
        notification: Notification,
    },
    /// A received message could not be decoded: send this NOTIFICATION
    /// and reset.
    DecodeError {
        conn: ConnId,
        notification: Notification,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an outgoing TCP connection; its result comes back as
    /// `Connected { dir: Outgoing }` or `ConnectFailed`.
    Connect,
    /// Give up the outgoing attempt in flight, if any.
    AbortConnect,
    Send {
        conn: ConnId,
        msg: Msg,
    },
    /// Flush what was sent and close.
    Close {
        conn: ConnId,
    },
    StartTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    /// The session is up on `conn`: send the initial routes.
    Established {
        conn: ConnId,
        negotiated: Negotiated,
    },
    /// The established session ended; the RIB decides from the cause
    /// whether the peer's routes are flushed or kept as stale.
    Down(DownCause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    id: ConnId,
    dir: Direction,
    phase: Phase,
    negotiated: Option<Negotiated>,
}

#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: Config,
    /// Idle, Connect or Active: the state when there is no `main`.
    base: State,
    main: Option<Conn>,
    other: Option<Conn>,
    connecting: bool,
    stopped: bool,
    idle_hold: Duration,
    connect_retry: Duration,
    last_error: Option<String>,
    /// False while `wait_for_path` holds our connection attempts back.
    path_up: bool,
    /// The last session ended by the peer's doing (it closed the
    /// connection or sent a NOTIFICATION), not by an error we reported:
    /// its next connection is accepted even in Idle.
    peer_ended: bool,
}

/// How a connection is being lost.
#[derive(Debug, Clone)]
enum Loss {
    /// Send this NOTIFICATION; the string is the reason shown.
    Sent(Notification, String),
    Received(Notification),
    Closed(String),
}

/// Where the session goes when its connection is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Idle,
    Active,
}

impl Fsm {
    pub fn new(cfg: Config) -> Self {
        let idle_hold = cfg.idle_hold;
        let connect_retry = cfg.connect_retry;
        let path_up = !cfg.wait_for_path;
        Fsm {
            cfg,
            base: State::Idle,
            main: None,
            other: None,
            connecting: false,
            stopped: true,
            idle_hold,
            connect_retry,
            last_error: None,
            path_up,
            peer_ended: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> State {
        match &self.main {
            Some(c) => match c.phase {
                Phase::OpenSent => State::OpenSent,
                Phase::OpenConfirm => State::OpenConfirm,
                Phase::Established => State::Established,
            },
            None => self.base,
        }
    }

    /// The connection of the established session, if any.
    pub fn established(&self) -> Option<(ConnId, &Negotiated)> {
        let c = self.main.as_ref()?;
        match (c.phase, &c.negotiated) {
            (Phase::Established, Some(n)) => Some((c.id, n)),
            _ => None,
        }
    }

    /// Negotiated parameters of the main connection once its OPEN arrived.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.main.as_ref()?.negotiated.as_ref()
    }

    /// Why the session last went down.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// True while our own connection attempts wait for BFD to report the
    /// path up.
    pub fn waiting_for_path(&self) -> bool {
        !self.path_up
    }

    /// We open connections of our own (not passive, and the path is not
    /// known to be down).
    fn may_connect(&self) -> bool {
        !self.cfg.passive && self.path_up
    }

    pub fn handle(&mut self, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Start => self.on_start(&mut out),
            Event::Stop => self.on_stop(
                Notification::cease(cease_sub::ADMINISTRATIVE_SHUTDOWN),
                false,
                &mut out,
            ),
            Event::Shutdown {
                notification,
                hard_reset,
            } => self.on_stop(notification, hard_reset, &mut out),
            Event::Reset {
                notification,
                hard_reset,
            } => {
                if let Some(m) = &self.main {
                    let conn = m.id;
                    let n = self.maybe_hard(conn, notification, hard_reset);
                    let reason = format!("sent {n}");
                    self.lose(conn, Loss::Sent(n, reason), After::Idle, &mut out);
                }
            }
            Event::Kick => self.on_kick(&mut out),
            Event::PathDown { notification } => self.on_path_down(notification, &mut out),
            Event::TimerExpired(t) => self.on_timer(t, &mut out),
            Event::Connected { conn, dir } => self.on_connected(conn, dir, &mut out),
            Event::ConnectFailed { reason } => {
                self.connecting = false;
                if self.main.is_none() && self.base == State::Connect {
                    self.last_error = Some(format!("connect failed: {reason}"));
                    self.base = State::Active;
                    self.start_connect_retry(&mut out);
                    self.back_off_connect();
                }
            }
            Event::Closed { conn, reason } => self.on_closed(conn, reason, &mut out),
            Event::Open { conn, open } => self.on_open(conn, open, &mut out),
            Event::Keepalive { conn } => self.on_keepalive(conn, &mut out),
            Event::Update { conn } | Event::RouteRefresh { conn } => self.on_update(conn, &mut out),
            Event::Notification { conn, notification } => {
                self.lose(conn, Loss::Received(notification), After::Idle, &mut out);
            }
            Event::DecodeError { conn, notification } => {
                let reason = format!("sent {notification}");
                self.lose(
                    conn,
                    Loss::Sent(notification, reason),
                    After::Idle,
                    &mut out,
                );
            }
        }
        out
    }

    fn on_start(&mut self, out: &mut Vec<Action>) {
        self.stopped = false;
        if self.main.is_none() && self.base == State::Idle {
            out.push(Action::StopTimer(Timer::IdleHold));
            self.begin(out);
        }
    }

    /// Idle -> Connect (or Active for a passive peer, or one whose path
    /// BFD has not reported up).
    fn begin(&mut self, out: &mut Vec<Action>) {
        if !self.may_connect() {
            self.base = State::Active;
        } else {
            self.base = State::Connect;
            self.connecting = true;
            out.push(Action::Connect);
            self.start_connect_retry(out);
        }
    }

    fn on_kick(&mut self, out: &mut Vec<Action>) {
        self.path_up = true;
        self.idle_hold = self.cfg.idle_hold;
        self.connect_retry = self.cfg.connect_retry;
        if self.stopped || self.main.is_some() {
            return;
        }
        if self.cfg.passive {
            // Out of Idle at once, so the peer's connection is accepted.
            if self.base == State::Idle {
                out.push(Action::StopTimer(Timer::IdleHold));
                self.begin(out);
            }
            return;
        }
        match self.base {
            State::Idle => {
                out.push(Action::StopTimer(Timer::IdleHold));
                self.begin(out);
            }
            State::Connect | State::Active if !self.connecting => {
                self.base = State::Connect;
                self.connecting = true;
                out.push(Action::Connect);
                self.start_connect_retry(out);
            }
            _ => {}
        }
    }

    fn on_path_down(&mut self, notification: Notification, out: &mut Vec<Action>) {
        // Only BFD reports a path down, so BFD watches this peer from now
        // on even if it did not when the session was configured.
        self.path_up = false;
        if let Some(m) = &self.main {
            let conn = m.id;
            let n = self.maybe_hard(conn, notification, true);
            let reason = format!("sent {n}");
            // Active, not Idle: no IdleHold damping (BFD paces the
            // retries), and the peer's connection is accepted the moment
            // its BFD sees the path back, which may be a moment before
            // ours does.
            self.lose(conn, Loss::Sent(n, reason), After::Active, out);
        } else if self.connecting {
            self.connecting = false;
            self.base = State::Active;
            out.push(Action::AbortConnect);
            out.push(Action::StopTimer(Timer::ConnectRetry));
        }
    }

    fn start_connect_retry(&mut self, out: &mut Vec<Action>) {
        if self.may_connect() {
            out.push(Action::StartTimer {
                timer: Timer::ConnectRetry,
                after: self.connect_retry,
            });
        }
    }

    /// After an attempt failed: wait longer next time.
    fn back_off_connect(&mut self) {
        self.connect_retry =
            (self.connect_retry * 2).min(self.cfg.connect_retry_max.max(self.cfg.connect_retry));
    }

    /// Cease / Hard Reset around `n` when asked for and both sides set
    /// the "N" bit (RFC 8538 section 3: the data carries the code, subcode
    /// and data of the NOTIFICATION it stands for).
    fn maybe_hard(&self, conn: ConnId, n: Notification, hard_reset: bool) -> Notification {
        let both_n = self
            .main
            .as_ref()
            .filter(|m| m.id == conn && m.phase == Phase::Established)
            .and_then(|m| m.negotiated.as_ref())
            .is_some_and(|neg| neg.notification_gr(&self.cfg));
        if hard_reset && both_n {
            Notification::hard_reset(&n)
        } else {
            n
        }
    }

    fn on_stop(&mut self, shutdown: Notification, hard_reset: bool, out: &mut Vec<Action>) {
        self.stopped = true;
        if let Some(o) = self.other.take() {
            self.close(&o, Some(shutdown.clone()), out);
        }
        if let Some(m) = self.main.take() {
            let was_up = m.phase == Phase::Established;
            let n = if was_up {
                // `maybe_hard` looks at `main`; put it back for the check.
                self.main = Some(m.clone());
                let n = self.maybe_hard(m.id, shutdown, hard_reset);
                self.main = None;
                n
            } else {
                shutdown
            };
            self.close(&m, Some(n.clone()), out);
            if was_up {
                out.push(Action::Down(DownCause::Sent(n)));
            }
        }
        if self.connecting {
            self.connecting = false;
            out.push(Action::AbortConnect);
        }
        out.push(Action::StopTimer(Timer::ConnectRetry));
        out.push(Action::StopTimer(Timer::IdleHold));
        self.base = State::Idle;
        self.last_error = Some("administratively stopped".into());
    }

    fn on_timer(&mut self, t: Timer, out: &mut Vec<Action>) {
        match t {
            Timer::IdleHold => {
                if !self.stopped && self.main.is_none() && self.base == State::Idle {
                    self.begin(out);
                }
            }
            Timer::ConnectRetry => {
                if self.main.is_some() || !self.may_connect() || self.stopped {
                    return;
                }
                match self.base {
                    // RFC 4271 section 8.2.2, Connect, Event 9: "drops the
                    // TCP connection, restarts the ConnectRetryTimer, [...]
                    // initiates a TCP connection to the other BGP peer".
                    State::Connect | State::Active => {
                        if self.connecting {
                            // The attempt timed out; the next gets longer.
                            out.push(Action::AbortConnect);
                            self.back_off_connect();
                        }
                        self.base = State::Connect;
                        self.connecting = true;
                        out.push(Action::Connect);
                        self.start_connect_retry(out);
                    }
                    _ => {}
                }
            }
            Timer::Hold(conn) => {
                let reason = "hold timer expired".to_string();
                self.lose(
                    conn,
                    Loss::Sent(Notification::hold_timer_expired(), reason),
                    After::Idle,
                    out,
                );
            }
            Timer::Keepalive(conn) => {
                let Some(m) = self.main.as_ref().filter(|m| m.id == conn) else {
                    return;
                };
                if m.phase == Phase::OpenSent {
                    return;
                }
                if let Some(n) = m.negotiated.as_ref().filter(|n| n.hold_time > 0) {
                    out.push(Action::Send {
                        conn,
                        msg: Msg::Keepalive,
                    });
                    out.push(Action::StartTimer {
                        timer: Timer::Keepalive(conn),
                        after: n.keepalive(),
                    });
                }
            }
        }
    }

    fn on_connected(&mut self, conn: ConnId, dir: Direction, out: &mut Vec<Action>) {
        if dir == Direction::Outgoing {
            self.connecting = false;
        }
        // RFC 4271 section 8.2.2, Idle: "any TCP connection attempts are
        // refused" (we are stopped or waiting out the IdleHold time). Not
        // after the peer itself ended the session, though: it closed or
        // sent a NOTIFICATION and is reconnecting, so its connection is
        // taken at once (what BIRD does) instead of leaving a peer that
        // retries every 120 s, or a passive session, down that long. The
        // IdleHold damping still holds back our own attempts, and still
        // refuses the peer after errors we detected.
        if self.stopped {
            out.push(Action::Close { conn });
            return;
        }
        if self.main.is_none() && self.base == State::Idle {
            if dir != Direction::Incoming || !self.peer_ended {
                out.push(Action::Close { conn });
                return;
            }
            out.push(Action::StopTimer(Timer::IdleHold));
            self.base = State::Active;
        }
        let new = Conn {
            id: conn,
            dir,
            phase: Phase::OpenSent,
            negotiated: None,
        };
        match &self.main {
            None => {
                if self.connecting && dir == Direction::Incoming {
                    self.connecting = false;
                    out.push(Action::AbortConnect);
                }
                out.push(Action::StopTimer(Timer::ConnectRetry));
                self.send_open(conn, out);
                self.main = Some(new);
            }
            // Section 6.8: "a connection collision with an existing BGP
            // connection that is in the Established state causes closing of
            // the newly created connection."
            // RFC 4724 section 4.2: a peer that advertised graceful
            // restart may have restarted without our noticing (its host
            // died, the old connection is still open here); its new
            // connection is heard out, and its OPEN replaces the session.
            Some(m)
                if m.phase == Phase::Established
                    && self.other.is_none()
                    && m.negotiated.as_ref().is_some_and(|n| n.peer_gr.is_some()) =>
            {
                self.send_open(conn, out);
                self.other = Some(new);
            }
            Some(m) if m.phase == Phase::Established => {
                let n = Notification::cease(cease_sub::CONNECTION_COLLISION_RESOLUTION);
                self.close(&new, Some(n), out);
            }
            // A second connection in the same direction, or a third one:
            // the peer lost track of its first; keep ours.
            Some(m) if m.dir == dir || self.other.is_some() => {
                let n = Notification::cease(cease_sub::CONNECTION_REJECTED);
                self.close(&new, Some(n), out);
            }
            Some(_) => {
                self.send_open(conn, out);
                self.other = Some(new);
            }
        }
    }

    fn send_open(&self, conn: ConnId, out: &mut Vec<Action>) {
        out.push(Action::Send {
            conn,
            msg: Msg::Open(self.cfg.open()),
        });
        out.push(Action::StartTimer {
            timer: Timer::Hold(conn),
            after: OPEN_HOLD,
        });
    }

    fn on_closed(&mut self, conn: ConnId, reason: String, out: &mut Vec<Action>) {
        let after = match &self.main {
            // RFC 4271 section 8.2.2, OpenSent, Event 18: "continues to
            // listen for a connection [...] changes its state to Active".
            Some(m) if m.id == conn && m.phase == Phase::OpenSent => After::Active,
            _ => After::Idle,
        };
        self.lose(
            conn,
            Loss::Closed(format!("connection closed: {reason}")),
            after,
            out,
        );
    }

    /// Takes `conn` down (sending the NOTIFICATION of `Loss::Sent`
    /// first). Losing `other` is quiet; losing `main` promotes `other` or
    /// moves to Idle/Active.
    fn lose(&mut self, conn: ConnId, loss: Loss, after: After, out: &mut Vec<Action>) {
        let (notify, cause, reason) = match loss {
            Loss::Sent(n, reason) => (Some(n.clone()), DownCause::Sent(n), reason),
            Loss::Received(n) => {
                let reason = format!("received {n}");
                (None, DownCause::Received(n), reason)
            }
            Loss::Closed(reason) => (None, DownCause::ConnectionLost, reason),
        };
        if let Some(o) = self.other.take_if(|o| o.id == conn) {
            self.close(&o, notify, out);
            return;
        }
        let Some(m) = self.main.take_if(|m| m.id == conn) else {
            return;
        };
        self.close(&m, notify, out);
        self.peer_ended = matches!(cause, DownCause::Received(_) | DownCause::ConnectionLost);
        if m.phase == Phase::Established {
            out.push(Action::Down(cause));
        }
        self.last_error = Some(reason);
        if let Some(o) = self.other.take() {
            self.main = Some(o);
            return;
        }
        if self.stopped {
            self.base = State::Idle;
            return;
        }
        match after {
            After::Active => {
                self.base = State::Active;
                self.start_connect_retry(out);
            }
            After::Idle => {
                self.base = State::Idle;
                if self.connecting {
                    self.connecting = false;
                    out.push(Action::AbortConnect);
                }
                out.push(Action::StopTimer(Timer::ConnectRetry));
                out.push(Action::StartTimer {
                    timer: Timer::IdleHold,
                    after: self.idle_hold,
                });
                self.idle_hold = (self.idle_hold * 2).min(self.cfg.idle_hold_max);
            }
        }
    }

    fn close(&self, c: &Conn, notify: Option<Notification>, out: &mut Vec<Action>) {
        if let Some(n) = notify {
            out.push(Action::Send {
                conn: c.id,
                msg: Msg::Notification(n),
            });
        }
        out.push(Action::Close { conn: c.id });
        out.push(Action::StopTimer(Timer::Hold(c.id)));
        out.push(Action::StopTimer(Timer::Keepalive(c.id)));
    }

    fn phase_of(&self, conn: ConnId) -> Option<(bool, Phase)> {
        if let Some(m) = self.main.as_ref().filter(|m| m.id == conn) {
            return Some((true, m.phase));
        }
        self.other
            .as_ref()
            .filter(|o| o.id == conn)
            .map(|o| (false, o.phase))
    }

    /// RFC 6608: an unexpected message is an FSM Error whose subcode names
    /// the state it arrived in.
    fn fsm_error(&mut self, conn: ConnId, phase: Phase, out: &mut Vec<Action>) {
        let sub = match phase {
            Phase::OpenSent => fsm_sub::UNEXPECTED_IN_OPEN_SENT,
            Phase::OpenConfirm => fsm_sub::UNEXPECTED_IN_OPEN_CONFIRM,
            Phase::Established => fsm_sub::UNEXPECTED_IN_ESTABLISHED,
        };
        let n = Notification::new(code::FSM, sub);
        let reason = format!("sent {n}");
        self.lose(conn, Loss::Sent(n, reason), After::Idle, out);
    }

    fn on_open(&mut self, conn: ConnId, open: Open, out: &mut Vec<Action>) {
        let Some((_, phase)) = self.phase_of(conn) else {
            return;
        };
        if phase != Phase::OpenSent {
            self.fsm_error(conn, phase, out);
            return;
        }
        let negotiated = negotiate(&self.cfg, &open);
        if let Some((old, old_id)) = self
            .main
            .as_ref()
            .filter(|m| m.phase == Phase::Established && m.id != conn)
            .map(|m| (m.id, m.negotiated.as_ref().map(|n| n.peer_id)))
        {
            // RFC 4724 section 4.2 lets the peer's new connection replace
            // the established session only when it is the same peer
            // restarting: its OPEN must pass negotiation (AS, identifier,
            // hold time) and carry the identifier the session has. Anything
            // else is refused on the new connection alone, so whoever can
            // reach our port with the peer's address cannot tear the
            // session down with one bad OPEN.
            let refusal = match &negotiated {
                Err(n) => Some(n.clone()),
                Ok(neg) if Some(neg.peer_id) != old_id => {
                    Some(Notification::cease(cease_sub::CONNECTION_REJECTED))
                }
                Ok(_) => None,
            };
            if let Some(n) = refusal {
                let reason = format!("sent {n} on a second connection");
                self.lose(conn, Loss::Sent(n, reason), After::Idle, out);
                return;
            }
            // "the Receiving Speaker MUST [...] close the TCP connection of
            // the old session" and keep the routes as stale; the new
            // connection becomes the session.
            let reason = "the peer restarted: OPEN on a new connection".to_string();
            self.lose(old, Loss::Closed(reason), After::Idle, out);
        }
        if self.other.is_some() && !self.resolve_collision(conn, &open, out) {
            return;
        }
        match negotiated {
            Err(n) => {
                let reason = format!("sent {n}");
                self.lose(conn, Loss::Sent(n, reason), After::Idle, out);
            }
            Ok(neg) => {
                out.push(Action::Send {
                    conn,
                    msg: Msg::Keepalive,
                });
                if neg.hold_time > 0 {
                    let hold = Duration::from_secs(u64::from(neg.hold_time));
                    out.push(Action::StartTimer {
                        timer: Timer::Hold(conn),
                        after: hold,
                    });
                    out.push(Action::StartTimer {
                        timer: Timer::Keepalive(conn),
                        after: neg.keepalive(),
                    });
                } else {
                    out.push(Action::StopTimer(Timer::Hold(conn)));
                }
                if let Some(m) = self.main.as_mut().filter(|m| m.id == conn) {
                    m.phase = Phase::OpenConfirm;
                    m.negotiated = Some(neg);
                }
            }
        }
    }

    /// Section 6.8 with both connections present and an OPEN on `conn`.
    /// Returns whether `conn` survived (and is now `main`).
    fn resolve_collision(&mut self, conn: ConnId, open: &Open, out: &mut Vec<Action>) -> bool {
        let local = u32::from(self.cfg.local_id);
        let remote = u32::from(open.bgp_id);
        // "If the value of the local BGP Identifier is less than the remote
        // one, the local system closes the BGP connection that already
        // exists [...] and accepts the BGP connection initiated by the
        // remote system." Equal identifiers: RFC 6286 keeps the connection
        // of the speaker with the larger AS number.
        let keep = if local > remote || (local == remote && self.cfg.local_as > open.asn()) {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let n = Notification::cease(cease_sub::CONNECTION_COLLISION_RESOLUTION);
        let (Some(m), Some(o)) = (self.main.take(), self.other.take()) else {
            return true;
        };
        let (winner, loser) = if m.dir == keep { (m, o) } else { (o, m) };
        self.close(&loser, Some(n), out);
        let survived = winner.id == conn;
        self.main = Some(winner);
        survived
    }

    fn on_keepalive(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some((is_main, phase)) = self.phase_of(conn) else {
            return;
        };
        match (is_main, phase) {
            (true, Phase::OpenConfirm) => {
                let Some(m) = self.main.as_mut() else {
                    return;
                };
                m.phase = Phase::Established;
                let Some(neg) = m.negotiated.clone() else {
                    return;
                };
                self.idle_hold = self.cfg.idle_hold;
                self.connect_retry = self.cfg.connect_retry;
                self.last_error = None;
                // RFC 4724 section 3: the Restart State bit is for the
                // OPENs that follow a restart, not for later sessions.
                if let Some(gr) = self.cfg.graceful_restart.as_mut() {
                    gr.restarting = false;
                }
                self.restart_hold(conn, &neg, out);
                out.push(Action::Established {
                    conn,
                    negotiated: neg,
                });
                if let Some(o) = self.other.take() {
                    let n = Notification::cease(cease_sub::CONNECTION_COLLISION_RESOLUTION);
                    self.close(&o, Some(n), out);
                }
            }
            (true, Phase::Established) => {
                if let Some(neg) = self.negotiated().cloned() {
                    self.restart_hold(conn, &neg, out);
                }
            }
            (_, phase) => self.fsm_error(conn, phase, out),
        }
    }

    fn on_update(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        match self.phase_of(conn) {
            Some((true, Phase::Established)) => {
                if let Some(neg) = self.negotiated().cloned() {
                    self.restart_hold(conn, &neg, out);
                }
            }
            Some((_, phase)) => self.fsm_error(conn, phase, out),
            None => {}
        }
    }

    fn restart_hold(&self, conn: ConnId, neg: &Negotiated, out: &mut Vec<Action>) {
        if neg.hold_time > 0 {
            out.push(Action::StartTimer {
                timer: Timer::Hold(conn),
                after: Duration::from_secs(u64::from(neg.hold_time)),
            });
        }
    }
}

mod negotiate;

pub use negotiate::{Negotiated, PeerGr, negotiate};

#[cfg(test)]
mod tests;
