//! TCP-MD5 keys changing under running sessions, against BIRD 2 in a lab
//! namespace pair, configured the way confd configures us (`Apply`).
//!
//! BIRD (`a`: 10.0.0.1, fd00::1, 10.0.0.3) has three sessions with us
//! (`b`: 10.0.0.2, fd00::2, 10.0.0.4): `one` over IPv4 and `six` over
//! IPv6, each with its own password, and `held` from 10.0.0.3, whose
//! password we do not have yet (confd holds that peer down).
//!
//! - A held-down peer gets no session, even from a speaker that offers
//!   none: we close its connections, and it says why in `bird show peers`.
//! - A new password for `one` restarts that session with the new key; the
//!   `six` session stays the same TCP connection with the same uptime, on
//!   both sides.
//! - The held peer's password arriving brings it up, again without
//!   touching the others.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Bird2, Ours, pair, wait_for};
use proto::bgpconfig as bgp;
use proto::bird as pb;

const UP: Duration = Duration::from_secs(40);
const HELD_WHY: &str =
    "password secret kube-system/bgp-passwords has no key 'held': session held down";

fn addr(s: &str) -> Option<proto::common::IpAddress> {
    Some(s.parse::<std::net::IpAddr>().unwrap().into())
}

/// What confd would push: `one` with `one_pw`, `six` with its constant
/// password, `held` with `held_pw` or held down.
fn ours(one_pw: &str, held_pw: Option<&str>) -> bgp::BgpConfig {
    let peer = |name: &str, address: &str, source: &str, password: &str| bgp::BgpPeerConfig {
        name: name.into(),
        address: addr(address),
        asn: 65001,
        kind: bgp::PeerKind::Global as i32,
        source_address: addr(source),
        password: password.into(),
        ..Default::default()
    };
    let mut held = peer(
        "Global_10_0_0_3",
        "10.0.0.3",
        "10.0.0.4",
        held_pw.unwrap_or(""),
    );
    // BIRD connects to us for this one (we hold it down, so we would not).
    held.passive = true;
    if held_pw.is_none() {
        held.password_unavailable = HELD_WHY.into();
    }
    bgp::BgpConfig {
        node: "b".into(),
        router_id: addr("10.0.0.2"),
        asn: 64512,
        peers: vec![
            peer("Global_10_0_0_1", "10.0.0.1", "10.0.0.2", one_pw),
            peer("Global_fd00__1", "fd00::1", "fd00::2", "six-steady"),
            held,
        ],
        ..Default::default()
    }
}

fn bird_conf(one_pw: &str, held_pw: Option<&str>) -> String {
    let held_pw = held_pw
        .map(|p| format!("password \"{p}\";"))
        .unwrap_or_default();
    format!(
        r#"
router id 10.0.0.1;
protocol device {{}}
protocol static s4 {{ ipv4; route 10.11.0.0/16 blackhole; }}
protocol bgp one {{
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 64512; passive on;
  password "{one_pw}";
  ipv4 {{ import all; export all; }};
}}
protocol bgp six {{
  local fd00::1 as 65001; neighbor fd00::2 as 64512; passive on;
  password "six-steady";
  ipv6 {{ import all; export none; }};
}}
protocol bgp held {{
  local 10.0.0.3 as 65001; neighbor 10.0.0.4 as 64512;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  {held_pw}
  ipv4 {{ import all; export none; }};
}}
"#
    )
}

/// A session's identity: its TCP endpoints and when it came up.
fn session(p: &pb::Peer) -> (String, String, i64) {
    (
        p.local_endpoint.clone(),
        p.remote_endpoint.clone(),
        p.since_unix_ms,
    )
}

/// BIRD's `show protocols` line of `name` (its Since column says when
/// its state last changed).
/// BIRD's `show protocols` line for `name`: the line without its Since
/// column, and Since in milliseconds of the day. BIRD prints Since by
/// converting a monotonic time to wall-clock time at each call, so the
/// same session's Since can read 1 ms apart between two calls.
fn bird_line(bird: &Bird2, name: &str) -> (String, i64) {
    let line = bird
        .birdc(&["show", "protocols", name])
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let since = fields
        .iter()
        .find_map(|f| {
            let (hms, ms) = f.split_once('.')?;
            let p: Vec<i64> = hms
                .split(':')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            if p.len() != 3 || ms.len() != 3 {
                return None;
            }
            Some(((p[0] * 60 + p[1]) * 60 + p[2]) * 1000 + ms.parse::<i64>().ok()?)
        })
        .unwrap_or_else(|| panic!("no Since in {line:?}"));
    let rest: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !(f.contains(':') && f.contains('.')))
        .collect();
    (rest.join(" "), since)
}

/// The same BIRD session: the same line, Since within BIRD's rounding.
fn assert_same_bird_session(now: (String, i64), before: &(String, i64)) {
    assert_eq!(now.0, before.0);
    assert!(
        (now.1 - before.1).abs() <= 10,
        "Since moved from {} to {} ms: the session restarted",
        before.1,
        now.1
    );
}

#[test]
fn a_new_password_rekeys_its_session_alone_and_a_held_peer_never_runs_without_one() {
    let (a, b) = pair("md5a", "md5b");
    a.ip(&["addr", "add", "10.0.0.3/24", "dev", "eth0"])
        .unwrap();
    b.ip(&["addr", "add", "10.0.0.4/24", "dev", "eth0"])
        .unwrap();
    let b = Arc::new(b);
    let bird = Bird2::start(&a, &bird_conf("one-v1", None));
    let us = Ours::start_unconfigured(&b, &[]);
    us.apply(ours("one-v1", None));
    let diag = || format!("{}\n{}", us.log_text(), bird.log_text());

    wait_for(
        "one and six Established on both sides",
        UP,
        || {
            (us.established("10.0.0.1")
                && us.established("fd00::1")
                && bird.established("one")
                && bird.established("six"))
            .then_some(())
        },
        diag,
    );
    let six_before = session(&us.peer("fd00::1"));
    let six_bird_before = bird_line(&bird, "six");
    let one_before = session(&us.peer("10.0.0.1"));

    // The held peer: Idle, with why, and BIRD (which offers no password)
    // never gets a session: it connects, we close.
    wait_for(
        "BIRD's connections to the held peer refused",
        UP,
        || {
            std::fs::read_to_string(&us.log)
                .unwrap()
                .contains("connection refused: the session is held down")
                .then_some(())
        },
        diag,
    );
    let held = us.peer("10.0.0.3");
    assert_eq!(held.state, pb::SessionState::Idle as i32);
    assert_eq!(held.last_error, HELD_WHY);
    assert!(!bird.established("held"));
    let table = us.show(&["peers"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("10.0.0.3") && l.contains("Idle") && l.ends_with(HELD_WHY)),
        "{table}"
    );

    // Rotation: both ends get the new key for `one`. The BIRD side goes
    // first, so the old session breaks before we re-key: the order does
    // not matter, and this way the new key is what brings it back.
    std::thread::sleep(Duration::from_millis(1100)); // a visible Since change
    let t = Instant::now();
    bird.reconfigure(&bird_conf("one-v2", None));
    let reply = us.apply(ours("one-v2", None));
    assert_eq!(
        (reply.peers_added, reply.peers_removed, reply.peers_changed),
        (0, 0, 1)
    );
    let one_after = wait_for(
        "one Established again with the new key",
        UP,
        || {
            let p = us.peer("10.0.0.1");
            (p.state == pb::SessionState::Established as i32
                && session(&p) != one_before
                && bird.established("one"))
            .then(|| session(&p))
        },
        diag,
    );
    println!("one re-keyed in {:?}", t.elapsed());
    assert!(one_after.2 > one_before.2, "a new session");
    // The other session: the same TCP connection, up since the same time,
    // on both sides.
    assert_eq!(session(&us.peer("fd00::1")), six_before);
    assert_same_bird_session(bird_line(&bird, "six"), &six_bird_before);
    assert!(us.established("fd00::1"));
    // Routes over the new session.
    wait_for(
        "BIRD's route over the re-keyed session",
        UP,
        || us.route("10.11.0.0/16"),
        diag,
    );

    // The held peer's password arrives (its Secret key was created): it
    // comes up; one and six are not touched.
    let one_now = session(&us.peer("10.0.0.1"));
    let one_bird_now = bird_line(&bird, "one");
    bird.reconfigure(&bird_conf("one-v2", Some("held-late")));
    let reply = us.apply(ours("one-v2", Some("held-late")));
    assert_eq!(reply.peers_changed, 1);
    wait_for(
        "the held peer Established",
        UP,
        || (us.established("10.0.0.3") && bird.established("held")).then_some(()),
        diag,
    );
    assert_eq!(us.peer("10.0.0.3").last_error, "");
    assert_eq!(session(&us.peer("10.0.0.1")), one_now);
    assert_same_bird_session(bird_line(&bird, "one"), &one_bird_now);
    assert_eq!(session(&us.peer("fd00::1")), six_before);
    assert_same_bird_session(bird_line(&bird, "six"), &six_bird_before);
}
