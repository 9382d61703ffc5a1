//! One BFD session (RFC 5880 asynchronous mode) as plain state: packets and
//! the clock go in, state changes and packets to send come out. No I/O, so
//! every rule is tested without sockets or sleeping.

use std::time::Duration;

use tokio::time::Instant;

use super::packet::{Control, State, diag};

/// The transmit interval while the session is not Up (RFC 5880 section
/// 6.8.3: at least one second).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's timing, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// bfd.DesiredMinTxInterval once Up.
    pub min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub min_rx: Duration,
    /// bfd.DetectMult.
    pub multiplier: u8,
}

impl Default for Timing {
    /// 100 ms and 5 missed packets: a dead neighbour is detected in half a
    /// second.
    fn default() -> Self {
        Timing {
            min_tx: Duration::from_millis(100),
            min_rx: Duration::from_millis(100),
            multiplier: 5,
        }
    }
}

/// What a session looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// Why the session last left Up (or the neighbour's reason).
    pub diag: u8,
    /// The session is down because the neighbour took it down on purpose
    /// (it signalled AdminDown): not a forwarding failure, so its client
    /// must not act on it (RFC 5882 section 3.2).
    pub neighbor_admin_down: bool,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone)]
pub struct Session {
    timing: Timing,
    pub local_discr: u32,
    remote_discr: u32,
    state: State,
    diag: u8,
    remote_state: State,
    /// In microseconds, as received.
    remote_min_rx: u32,
    remote_desired_min_tx: u32,
    remote_mult: u8,
    /// What we advertise as DesiredMinTx now.
    desired_min_tx: Duration,
    /// A Poll Sequence is running (after a change of our intervals).
    polling: bool,
    /// The next packet answers a Poll with Final.
    send_final: bool,
    next_tx: Instant,
    detect_deadline: Option<Instant>,
    rng: u64,
}

impl Session {
    /// A new session in Down that starts sending at `now`.
    pub fn new(timing: Timing, local_discr: u32, now: Instant) -> Session {
        Session {
            timing,
            local_discr,
            remote_discr: 0,
            state: State::Down,
            diag: diag::NONE,
            remote_state: State::Down,
            remote_min_rx: 1,
            remote_desired_min_tx: 0,
            remote_mult: 0,
            desired_min_tx: SLOW_TX,
            polling: false,
            send_final: false,
            next_tx: now,
            detect_deadline: None,
            rng: u64::from(local_discr) | 1,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            state: self.state,
            diag: self.diag,
            neighbor_admin_down: self.state == State::Down && self.remote_state == State::AdminDown,
        }
    }

    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    /// The detection time (RFC 5880 section 6.8.4, asynchronous mode).
    pub fn detection_time(&self) -> Duration {
        let interval = self
            .timing
            .min_rx
            .max(Duration::from_micros(u64::from(self.remote_desired_min_tx)));
        interval * u32::from(self.remote_mult.max(1))
    }

    /// The interval between our packets, before jitter (section 6.8.7).
    fn tx_interval(&self) -> Duration {
        self.desired_min_tx
            .max(Duration::from_micros(u64::from(self.remote_min_rx)))
    }

    /// 75 to 100 % of `d` (75 to 90 % with a multiplier of 1).
    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64: no need for more than spreading packets out.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = if self.timing.multiplier == 1 { 15 } else { 25 };
        let pct = 75 + (self.rng % (span + 1));
        d * u32::try_from(pct).unwrap_or(100) / 100
    }

    fn set_state(&mut self, state: State, diag: u8, now: Instant) -> Option<Status> {
        if state == self.state {
            return None;
        }
        self.state = state;
        self.diag = diag;
        if state == State::Up {
            // Faster now: a decrease takes effect at once (section 6.8.3),
            // announced with a Poll Sequence.
            self.desired_min_tx = self.timing.min_tx;
            self.polling = true;
        } else {
            self.desired_min_tx = SLOW_TX;
            self.polling = false;
        }
        // Tell the neighbour at once.
        self.next_tx = now;
        Some(self.status())
    }

    /// A packet for this session arrived (already checked by
    /// [`Control::parse`] and matched to the session). Returns the new
    /// status if the state changed.
    pub fn receive(&mut self, c: &Control, now: Instant) -> Option<Status> {
        if c.your_discr == 0 && !matches!(self.state, State::Down | State::AdminDown) {
            return None; // section 6.8.6: discard
        }
        self.remote_discr = c.my_discr;
        self.remote_state = c.state;
        self.remote_min_rx = c.required_min_rx;
        self.remote_desired_min_tx = c.desired_min_tx;
        self.remote_mult = c.detect_mult;
        if c.final_ {
            self.polling = false;
        }
        if c.poll {
            self.send_final = true;
        }
        self.detect_deadline = Some(now + self.detection_time());
        if self.state == State::AdminDown {
            return None;
        }
        if c.state == State::AdminDown {
            return if self.state == State::Down {
                None
            } else {
                self.set_state(State::Down, diag::NEIGHBOR_SIGNALED_DOWN, now)
            };
        }
        match (self.state, c.state) {
            (State::Down, State::Down) => self.set_state(State::Init, diag::NONE, now),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.set_state(State::Up, diag::NONE, now)
            }
            (State::Up, State::Down) => {
                self.set_state(State::Down, diag::NEIGHBOR_SIGNALED_DOWN, now)
            }
            _ => None,
        }
    }

    /// Advances the clock: the detection time may expire.
    pub fn tick(&mut self, now: Instant) -> Option<Status> {
        match self.detect_deadline {
            Some(d) if now >= d => {
                self.detect_deadline = None;
                self.remote_discr = 0;
                self.remote_state = State::Down;
                self.remote_desired_min_tx = 0;
                self.remote_min_rx = 1;
                if matches!(self.state, State::Init | State::Up) {
                    self.set_state(State::Down, diag::DETECTION_TIME_EXPIRED, now)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Moves the detection deadline `d` later: this process did not run for
    /// that long (a stalled machine), so the silence was ours, not the
    /// neighbour's.
    pub fn postpone(&mut self, d: Duration) {
        if let Some(x) = self.detect_deadline.as_mut() {
            *x += d;
        }
    }

    /// When [`Session::tick`] or [`Session::transmit`] next has work.
    pub fn due(&self) -> Instant {
        let tx = if self.send_final {
            Instant::now()
        } else {
            self.next_tx
        };
        match self.detect_deadline {
            Some(d) => d.min(tx),
            None => tx,
        }
    }

    /// The packet to send now, if one is due.
    pub fn transmit(&mut self, now: Instant) -> Option<Control> {
        // A neighbour asking for no packets (RequiredMinRx 0) gets none,
        // except a Final it asked for.
        let periodic = now >= self.next_tx && self.remote_min_rx != 0;
        if !periodic && !self.send_final {
            return None;
        }
        let final_ = std::mem::take(&mut self.send_final);
        if periodic {
            let gap = self.tx_interval();
            self.next_tx = now + self.jittered(gap);
        }
        Some(Control {
            diag: self.diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.timing.multiplier,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: micros(self.desired_min_tx),
            required_min_rx: micros(self.timing.min_rx),
            required_min_echo_rx: 0,
        })
    }

    /// The packet that tells the neighbour this session is being stopped
    /// on purpose (state AdminDown, diag Administratively Down), so that
    /// its client keeps its own session (RFC 5882 section 3.2); `None`
    /// when the neighbour never saw the session come up.
    pub fn admin_down(&self) -> Option<Control> {
        if !matches!(self.state, State::Init | State::Up) || self.remote_discr == 0 {
            return None;
        }
        Some(Control {
            diag: diag::ADMIN_DOWN,
            state: State::AdminDown,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: self.timing.multiplier,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: micros(SLOW_TX),
            required_min_rx: 0,
            required_min_echo_rx: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs two sessions against each other on a simulated clock, packets
    /// delivered instantly unless the link is cut.
    struct Pair {
        a: Session,
        b: Session,
        now: Instant,
        link: bool,
        changes: Vec<(char, State)>,
    }

    impl Pair {
        fn new() -> Pair {
            let now = Instant::now();
            Pair {
                a: Session::new(Timing::default(), 11, now),
                b: Session::new(Timing::default(), 22, now + 300 * MS),
                now,
                link: true,
                changes: Vec::new(),
            }
        }

        /// Advances 1 ms at a time for `d`.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += MS;
                let now = self.now;
                for side in ['a', 'b'] {
                    let (me, other) = if side == 'a' {
                        (&mut self.a, &mut self.b)
                    } else {
                        (&mut self.b, &mut self.a)
                    };
                    if let Some(s) = me.tick(now) {
                        self.changes.push((side, s.state));
                    }
                    if let Some(p) = me.transmit(now) {
                        let wire = Control::parse(&p.encode()).unwrap();
                        if self.link
                            && let Some(s) = other.receive(&wire, now)
                        {
                            let o = if side == 'a' { 'b' } else { 'a' };
                            self.changes.push((o, s.state));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_sessions_come_up_through_init() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        assert_eq!(p.a.status().state, State::Up);
        assert_eq!(p.b.status().state, State::Up);
        // b heard a's Down first: b Init, then a Up (it heard Init), b Up.
        assert_eq!(
            p.changes,
            [('b', State::Init), ('a', State::Up), ('b', State::Up)]
        );
        // Once Up, packets every 75-100 ms, and the Poll was answered.
        assert!(!p.a.polling && !p.b.polling);
        let t0 = p.now;
        let mut sent = 0;
        while p.now < t0 + 1000 * MS {
            p.now += MS;
            if p.a.transmit(p.now).is_some() {
                sent += 1;
            }
        }
        assert!((10..=14).contains(&sent), "{sent} packets in a second");
    }

    #[test]
    fn a_cut_link_is_detected_within_the_detection_time() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        assert_eq!(p.a.detection_time(), 500 * MS);
        p.changes.clear();
        p.link = false;
        let cut = p.now;
        while p.a.status().state == State::Up {
            p.run(MS);
            assert!(p.now - cut <= 501 * MS, "not detected in time");
        }
        assert!(p.now - cut >= 400 * MS, "detected too early");
        assert_eq!(p.a.status().diag, diag::DETECTION_TIME_EXPIRED);
        assert_eq!(p.a.remote_discr(), 0);
        // Back up within about a second of the link's return (slow
        // packets at most 1 s apart, and state changes sent at once).
        p.run(2000 * MS); // both sides Down by now
        assert_eq!(p.b.status().state, State::Down);
        p.link = true;
        let back = p.now;
        while p.a.status().state != State::Up || p.b.status().state != State::Up {
            p.run(MS);
            assert!(p.now - back <= 1100 * MS, "not back up in time");
        }
    }

    #[test]
    fn neighbour_down_and_admin_down_take_the_session_down() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        let now = p.now;
        let mut pkt = p.b.transmit(now + 200 * MS).unwrap();
        pkt.state = State::AdminDown;
        assert_eq!(
            p.a.receive(&pkt, now)
                .map(|s| (s.state, s.diag, s.neighbor_admin_down)),
            Some((State::Down, diag::NEIGHBOR_SIGNALED_DOWN, true)),
            "AdminDown is said to be the neighbour's choice"
        );
        // Down does not jump to Up on an Up packet.
        pkt.state = State::Up;
        assert_eq!(p.a.receive(&pkt, now), None);
        assert_eq!(p.a.status().state, State::Down);
    }

    #[test]
    fn a_session_stopped_on_purpose_tells_the_neighbour_admin_down() {
        let mut p = Pair::new();
        assert!(p.a.admin_down().is_none(), "never up: nothing to say");
        p.run(2000 * MS);
        let pkt = p.a.admin_down().unwrap();
        assert_eq!((pkt.state, pkt.diag), (State::AdminDown, diag::ADMIN_DOWN));
        let st = p.b.receive(&pkt, p.now).unwrap();
        assert_eq!(st.state, State::Down);
        assert!(
            st.neighbor_admin_down,
            "the neighbour's client must not act on it"
        );
    }

    #[test]
    fn a_neighbour_signalling_down_is_a_failure_not_an_admin_down() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        let now = p.now;
        let mut pkt = p.b.transmit(now + 200 * MS).unwrap();
        pkt.state = State::Down;
        let st = p.a.receive(&pkt, now).unwrap();
        assert_eq!(st.state, State::Down);
        assert!(!st.neighbor_admin_down);
    }

    #[test]
    fn a_packet_without_our_discriminator_is_ignored_once_up() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        let mut pkt = p.b.transmit(p.now + 200 * MS).unwrap();
        pkt.your_discr = 0;
        pkt.state = State::Down;
        assert_eq!(p.a.receive(&pkt, p.now), None);
        assert_eq!(p.a.status().state, State::Up);
    }

    #[test]
    fn a_stall_of_our_own_postpones_detection() {
        let mut p = Pair::new();
        p.run(2000 * MS);
        p.link = false;
        let deadline = p.a.detect_deadline.unwrap();
        p.a.postpone(300 * MS);
        assert_eq!(p.a.tick(deadline), None, "not down at the old deadline");
        assert!(p.a.tick(deadline + 300 * MS).is_some());
    }

    #[test]
    fn a_poll_is_answered_with_final() {
        let now = Instant::now();
        let mut s = Session::new(Timing::default(), 5, now);
        let mut pkt = Session::new(Timing::default(), 6, now)
            .transmit(now)
            .unwrap();
        pkt.poll = true;
        s.receive(&pkt, now);
        let out = s.transmit(now).unwrap();
        assert!(out.final_ && !out.poll);
    }
}
