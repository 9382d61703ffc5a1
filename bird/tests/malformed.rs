//! Crafted bytes against the real daemon: a raw TCP test peer in a lab
//! namespace establishes a session, sends one malformed message, and reads
//! what comes back. Reset cases must get the right NOTIFICATION; RFC 7606
//! cases must keep the session up with the route withdrawn (or kept, for
//! attribute-discard). The regression files are the fuzz corpus's
//! (`fuzz/regressions.txt`), so the fuzz smoke and this test agree on the
//! RFC action of each.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Ours, wait_for};
use lab::Netns;

/// Our daemon listens on 127.0.0.1:179 inside the namespace; each case
/// connects from its own 127.0.0.N, a passive peer of its own.
const FIRST_PEER: u8 = 2;
const PEERS: u8 = 60;
/// Peer 127.0.0.60 negotiates a 3-second hold time.
const SHORT_HOLD_PEER: u8 = 60;

fn config() -> String {
    // No start-up deferral: End-of-RIB right after the initial routes,
    // even though most of these peers never connect.
    let mut s = String::from(
        "router_id = \"10.9.9.9\"\nasn = 65000\nlisten = \"127.0.0.1:179\"\nstartup_deferral = 0\n",
    );
    for n in FIRST_PEER..=PEERS {
        let hold = if n == SHORT_HOLD_PEER { 3 } else { 90 };
        s.push_str(&format!(
            "[[peers]]\naddress = \"127.0.0.{n}\"\nasn = 65001\npassive = true\nhold_time = {hold}\n"
        ));
    }
    s
}

fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn open(asn: u16, hold: u16, id: [u8; 4], version: u8, params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    msg(1, &b)
}

/// Capabilities: MP IPv4 and IPv6 unicast, 4-octet AS 65001.
const CAPS: [u8; 20] = [
    2, 18, 1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1, 65, 4, 0, 0, 0xfd, 0xe9,
];

fn good_open(n: u8) -> Vec<u8> {
    open(65001, 90, [1, 1, 1, n], 4, &CAPS)
}

/// Announces 10.1.0.0/16 from AS 65001 via 10.0.0.1.
fn good_update() -> Vec<u8> {
    let attrs: &[u8] = &[
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x40, 3, 4, 10, 0, 0, 1,
    ];
    let mut b = vec![0, 0, 0, attrs.len() as u8];
    b.extend_from_slice(attrs);
    b.extend_from_slice(&[16, 10, 1]);
    msg(2, &b)
}

struct RawPeer {
    s: TcpStream,
    n: u8,
}

impl RawPeer {
    /// Connects from 127.0.0.`n` inside `ns` (the socket stays in the
    /// namespace after the thread that made it returns).
    fn connect(ns: &Netns, n: u8) -> RawPeer {
        let s = ns
            .run(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let sock =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                            .unwrap();
                    sock.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 0)).into())
                        .unwrap();
                    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, 179));
                    match sock.connect_timeout(&to.into(), Duration::from_secs(2)) {
                        Ok(()) => return TcpStream::from(sock),
                        Err(e) if Instant::now() > deadline => {
                            panic!("cannot connect to our bird: {e}")
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        RawPeer { s, n }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Reads one message within `timeout`: (type, body), or `None` on
    /// timeout or end of stream.
    fn read(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        let mut need = 19;
        while buf.len() < need {
            let mut chunk = vec![0; need - buf.len()];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
            if buf.len() >= 19 {
                need = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            }
            if Instant::now() > deadline {
                return None;
            }
        }
        Some((buf[18], buf[19..].to_vec()))
    }

    /// OPEN, KEEPALIVE both ways, then the daemon's End-of-RIB markers.
    fn establish(&mut self) {
        self.send(&good_open(self.n));
        let (t, _) = self
            .read(Duration::from_secs(5))
            .expect("OPEN from our bird");
        assert_eq!(t, 1, "expected OPEN");
        let (t, _) = self
            .read(Duration::from_secs(5))
            .expect("KEEPALIVE from our bird");
        assert_eq!(t, 4, "expected KEEPALIVE");
        self.send(&msg(4, &[]));
        // One End-of-RIB per family (IPv4, IPv6).
        for _ in 0..2 {
            let (t, _) = self.read(Duration::from_secs(5)).expect("End-of-RIB");
            assert_eq!(t, 2);
        }
    }

    /// The next NOTIFICATION, skipping KEEPALIVEs and UPDATEs.
    fn notification(&mut self, timeout: Duration) -> Option<(u8, u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.read(deadline - Instant::now()) {
                Some((3, b)) if b.len() >= 2 => return Some((b[0], b[1], b[2..].to_vec())),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }
}

fn harness(tag: &str) -> (Netns, Ours) {
    let _ = lab::sweep_stale();
    let ns = Netns::create(tag).unwrap();
    let ours = Ours::start(&ns, &config());
    (ns, ours)
}

fn assert_alive(ours: &mut Ours) {
    assert!(
        ours.proc.try_wait().is_none(),
        "daemon exited\n{}",
        ours.log_text()
    );
    assert!(!ours.log_text().contains("panicked"), "{}", ours.log_text());
}

fn regressions() -> Vec<(String, Vec<u8>, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    std::fs::read_to_string(dir.join("regressions.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let w: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            let data = std::fs::read(dir.join("corpus/receive").join(&w[0])).unwrap();
            // Every regression file is written for an external peer with
            // 4-octet AS and IPv6 negotiated (mode byte 7), what the raw
            // peer negotiates here.
            assert_eq!(data[0], 7, "{}", w[0]);
            (w[0].clone(), data[1..].to_vec(), w[1..].to_vec())
        })
        .collect()
}

#[test]
fn each_reset_regression_gets_its_notification_and_the_daemon_survives() {
    let (ns, mut ours) = harness("mfreset");
    let cases: Vec<_> = regressions()
        .into_iter()
        .filter(|(_, _, e)| e[0] == "reset")
        .collect();
    assert!(cases.len() >= 15);
    for (n, (name, bytes, expect)) in (FIRST_PEER..).zip(cases.iter()) {
        let mut peer = RawPeer::connect(&ns, n);
        peer.establish();
        peer.send(bytes);
        let want: (u8, u8) = (expect[1].parse().unwrap(), expect[2].parse().unwrap());
        let got = peer.notification(Duration::from_secs(5));
        assert_eq!(
            got.as_ref().map(|g| (g.0, g.1)),
            Some(want),
            "{name}\n{}",
            ours.log_text()
        );
        if name == "regress_header_length_18" {
            // RFC 4271 section 6.1: the data is the erroneous length.
            assert_eq!(got.unwrap().2, vec![0, 18]);
        }
        let addr = format!("127.0.0.{n}");
        // The NOTIFICATION is on the wire before the session task has
        // published its new state: allow it a moment (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut p = ours.peer(&addr);
        while p.state == proto::bird::SessionState::Established as i32
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            p = ours.peer(&addr);
        }
        assert_ne!(
            p.state,
            proto::bird::SessionState::Established as i32,
            "{name}"
        );
        assert!(
            p.last_error.starts_with("sent "),
            "{name}: {:?}",
            p.last_error
        );
        assert_alive(&mut ours);
    }
}

#[test]
fn rfc7606_regressions_keep_the_session_up() {
    let (ns, mut ours) = harness("mf7606");
    let cases: Vec<_> = regressions()
        .into_iter()
        .filter(|(_, _, e)| e[0] != "reset")
        .collect();
    assert!(cases.len() >= 10);
    for (n, (name, bytes, expect)) in (FIRST_PEER..).zip(cases.iter()) {
        let addr = format!("127.0.0.{n}");
        let mut peer = RawPeer::connect(&ns, n);
        peer.establish();
        peer.send(&good_update());
        let has_route = || {
            ours.routes().iter().any(|r| {
                let from = std::net::IpAddr::try_from(r.peer.as_ref().unwrap()).unwrap();
                from.to_string() == addr
            })
        };
        wait_for(
            "the valid route",
            Duration::from_secs(10),
            || has_route().then_some(()),
            || ours.log_text(),
        );
        peer.send(bytes);
        // Still up: a KEEPALIVE gets no NOTIFICATION back.
        peer.send(&msg(4, &[]));
        assert_eq!(
            peer.notification(Duration::from_millis(800)),
            None,
            "{name} reset the session"
        );
        assert!(ours.established(&addr), "{name}");
        match expect[0].as_str() {
            "withdraw" => wait_for(
                "treat-as-withdraw to remove the route",
                Duration::from_secs(10),
                || (!has_route()).then_some(()),
                || format!("{name}\n{}", ours.log_text()),
            ),
            "discard" => assert!(has_route(), "{name}: attribute-discard must keep the route"),
            other => panic!("unknown expectation {other}"),
        }
        assert_alive(&mut ours);
    }
}

#[test]
fn open_errors_get_open_message_notifications() {
    let (ns, mut ours) = harness("mfopen");
    let cases: Vec<(&str, Vec<u8>, (u8, u8))> = vec![
        (
            "wrong peer AS",
            open(65099, 90, [1, 1, 1, 2], 4, &[]),
            (2, 2),
        ),
        ("version 3", open(65001, 90, [1, 1, 1, 3], 3, &CAPS), (2, 1)),
        (
            "hold time 1",
            open(65001, 1, [1, 1, 1, 4], 4, &CAPS),
            (2, 6),
        ),
        (
            "zero BGP identifier",
            open(65001, 90, [0, 0, 0, 0], 4, &CAPS),
            (2, 3),
        ),
        (
            "unsupported optional parameter",
            open(65001, 90, [1, 1, 1, 6], 4, &[1, 1, 0]),
            (2, 4),
        ),
        (
            "capability overrunning its parameter",
            open(65001, 90, [1, 1, 1, 7], 4, &[2, 4, 65, 4, 0, 0]),
            (2, 0),
        ),
        ("KEEPALIVE before OPEN", msg(4, &[]), (5, 1)),
    ];
    for (i, (what, bytes, want)) in cases.iter().enumerate() {
        let n = FIRST_PEER + i as u8;
        let mut peer = RawPeer::connect(&ns, n);
        peer.send(bytes);
        let got = peer.notification(Duration::from_secs(5));
        assert_eq!(
            got.as_ref().map(|g| (g.0, g.1)),
            Some(*want),
            "{what}\n{}",
            ours.log_text()
        );
        if *what == "version 3" {
            assert_eq!(got.unwrap().2, vec![0, 4], "largest supported version");
        }
        assert_alive(&mut ours);
    }
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let (ns, mut ours) = harness("mffsm");
    // UPDATE in OpenConfirm (before our KEEPALIVE is answered).
    let mut p = RawPeer::connect(&ns, FIRST_PEER);
    p.send(&good_open(FIRST_PEER));
    p.send(&good_update());
    assert_eq!(
        p.notification(Duration::from_secs(5)).map(|g| (g.0, g.1)),
        Some((5, 2))
    );
    // OPEN in Established.
    let mut p = RawPeer::connect(&ns, FIRST_PEER + 1);
    p.establish();
    p.send(&good_open(FIRST_PEER + 1));
    assert_eq!(
        p.notification(Duration::from_secs(5)).map(|g| (g.0, g.1)),
        Some((5, 3))
    );
    assert_alive(&mut ours);
}

#[test]
fn silent_peer_gets_hold_timer_expired() {
    let (ns, mut ours) = harness("mfhold");
    let mut p = RawPeer::connect(&ns, SHORT_HOLD_PEER);
    // Offer 3 s; the daemon's 3 s is the smaller, so that is the hold time.
    p.send(&open(65001, 3, [1, 1, 1, SHORT_HOLD_PEER], 4, &CAPS));
    p.establish_after_open();
    let started = Instant::now();
    let got = p.notification(Duration::from_secs(10));
    assert_eq!(got.map(|g| (g.0, g.1)), Some((4, 0)), "{}", ours.log_text());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "expired after only {waited:?}"
    );
    // The status is published just after the NOTIFICATION leaves: wait
    // (bounded) for it.
    let addr = format!("127.0.0.{SHORT_HOLD_PEER}");
    wait_for(
        "the hold timer expiry in the peer's status",
        Duration::from_secs(5),
        || (ours.peer(&addr).last_error == "hold timer expired").then_some(()),
        || format!("{:?}\n{}", ours.peer(&addr), ours.log_text()),
    );
    assert_alive(&mut ours);
}

impl RawPeer {
    /// Like `establish`, when our OPEN was already sent.
    fn establish_after_open(&mut self) {
        let (t, _) = self.read(Duration::from_secs(5)).expect("OPEN");
        assert_eq!(t, 1);
        let (t, _) = self.read(Duration::from_secs(5)).expect("KEEPALIVE");
        assert_eq!(t, 4);
        self.send(&msg(4, &[]));
    }
}

#[test]
fn route_refresh_gets_the_family_readvertised_and_unknown_families_are_ignored() {
    let (ns, mut ours) = harness("mfrr");
    let mut p = RawPeer::connect(&ns, FIRST_PEER);
    p.establish();
    // RFC 2918: ROUTE-REFRESH for IPv4 unicast. This peer is given no
    // prefixes, so the re-advertisement is the IPv4 End-of-RIB alone.
    p.send(&msg(5, &[0, 1, 0, 1]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while Instant::now() < deadline {
        match p.read(Duration::from_secs(1)) {
            Some((2, body)) => {
                got = Some(body);
                break;
            }
            Some((3, n)) => panic!("NOTIFICATION {n:?} in reply to ROUTE-REFRESH"),
            _ => {}
        }
    }
    assert_eq!(
        got,
        Some(vec![0, 0, 0, 0]),
        "IPv4 End-of-RIB after the refresh"
    );
    // An AFI/SAFI we do not speak "MUST [be] ignore[d]": no reply, no reset.
    p.send(&msg(5, &[0, 25, 0, 65]));
    p.send(&msg(4, &[]));
    while let Some((t, _)) = p.read(Duration::from_millis(800)) {
        assert_eq!(t, 4, "only KEEPALIVEs may follow an ignored refresh");
    }
    assert!(ours.established(&format!("127.0.0.{FIRST_PEER}")));
    assert_alive(&mut ours);
}

/// `good_open` plus the graceful-restart capability (restart time 120 s,
/// no families): the peer can restart, so a new connection of its may
/// replace the established session (RFC 4724 section 4.2).
fn gr_open(n: u8) -> Vec<u8> {
    let mut params = CAPS.to_vec();
    params.extend_from_slice(&[2, 4, 64, 2, 0, 120]);
    open(65001, 90, [1, 1, 1, n], 4, &params)
}

#[test]
fn a_bogus_open_on_a_new_connection_does_not_tear_down_the_session() {
    let (ns, mut ours) = harness("mfgropen");
    let n = FIRST_PEER;
    let addr = format!("127.0.0.{n}");
    let mut p = RawPeer::connect(&ns, n);
    p.send(&gr_open(n));
    p.establish_after_open();
    wait_for(
        "the session",
        Duration::from_secs(5),
        || ours.established(&addr).then_some(()),
        || ours.log_text(),
    );
    let bogus: [(&str, Vec<u8>, (u8, u8)); 2] = [
        // The wrong AS, no four-octet capability to contradict it.
        (
            "wrong AS",
            open(
                65099,
                90,
                [1, 1, 1, n],
                4,
                &[2, 12, 1, 4, 0, 1, 0, 1, 1, 4, 0, 2, 0, 1],
            ),
            (2, 2),
        ),
        // Valid, but another speaker's identifier.
        (
            "another identifier",
            open(65001, 90, [1, 1, 1, 99], 4, &CAPS),
            (6, 5),
        ),
    ];
    for (what, bytes, want) in bogus {
        let mut q = RawPeer::connect(&ns, n);
        q.send(&bytes);
        let got = q.notification(Duration::from_secs(5));
        assert_eq!(
            got.map(|g| (g.0, g.1)),
            Some(want),
            "{what}\n{}",
            ours.log_text()
        );
        // The first session is untouched: still established, and still
        // answering on its connection (a route we send is taken).
        assert!(
            ours.established(&addr),
            "{what}: the session went down\n{}",
            ours.log_text()
        );
    }
    p.send(&good_update());
    wait_for(
        "the route on the first connection",
        Duration::from_secs(5),
        || ours.route("10.1.0.0/16"),
        || ours.log_text(),
    );
    assert!(ours.established(&addr));
    // The real peer restarting still replaces the session.
    let mut r = RawPeer::connect(&ns, n);
    r.send(&gr_open(n));
    r.establish_after_open();
    wait_for(
        "the restarted session",
        Duration::from_secs(5),
        || ours.established(&addr).then_some(()),
        || ours.log_text(),
    );
    assert_alive(&mut ours);
}

#[test]
fn a_peer_that_closes_and_reconnects_at_once_is_taken_promptly() {
    // The peer ends the session (no NOTIFICATION) and reconnects 50 ms
    // later. Refusing it while waiting out IdleHold (1 s here) would keep
    // a peer that retries every 120 s down that long; each attempt below
    // gets 200 ms to see our OPEN.
    let (ns, mut ours) = harness("mfreconn");
    let n = FIRST_PEER;
    let addr = format!("127.0.0.{n}");
    let mut p = RawPeer::connect(&ns, n);
    p.establish();
    drop(p);
    let closed = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let mut attempts = 0;
    let mut q = loop {
        attempts += 1;
        let mut q = RawPeer::connect(&ns, n);
        q.send(&good_open(n));
        if matches!(q.read(Duration::from_millis(200)), Some((1, _))) {
            break q;
        }
        assert!(
            closed.elapsed() < Duration::from_secs(10),
            "never accepted\n{}",
            ours.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = closed.elapsed();
    let (t, _) = q.read(Duration::from_secs(5)).expect("KEEPALIVE");
    assert_eq!(t, 4);
    q.send(&msg(4, &[]));
    wait_for(
        "the session back",
        Duration::from_secs(5),
        || ours.established(&addr).then_some(()),
        || ours.log_text(),
    );
    // Refused until IdleHold ends would be at least a second; prompt is
    // the first attempt or so.
    assert!(
        took < Duration::from_millis(800),
        "reconnected only after {took:?} and {attempts} attempts\n{}",
        ours.log_text()
    );
    assert_alive(&mut ours);
}

#[test]
fn a_broken_attribute_list_hiding_mp_reach_resets_the_session() {
    // RFC 7606 section 5: the IPv6 prefixes inside the MP_REACH_NLRI that
    // overruns the attribute section cannot be located, so they cannot be
    // treated as withdrawn: Malformed Attribute List.
    let (ns, mut ours) = harness("mfmphide");
    let mut p = RawPeer::connect(&ns, FIRST_PEER);
    p.establish();
    let attrs: &[u8] = &[
        0x40, 1, 1, 0, 0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, 0x80, 14, 40, 0, 2, 1, 16, 0x20, 1, 0xd,
        0xb8,
    ];
    let mut b = vec![0, 0, 0, attrs.len() as u8];
    b.extend_from_slice(attrs);
    p.send(&msg(2, &b));
    assert_eq!(
        p.notification(Duration::from_secs(5)).map(|g| (g.0, g.1)),
        Some((3, 1)),
        "{}",
        ours.log_text()
    );
    assert_alive(&mut ours);
}
