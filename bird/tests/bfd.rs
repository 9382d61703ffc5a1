//! BFD (RFC 5880/5881) wired to BGP, on real sockets between two lab
//! namespaces: a cut link takes the peer's routes within a second (the
//! BGP hold time alone would take 90 s), they come back within seconds
//! of the link's return, a restarting peer (its TCP connection closed)
//! still gets graceful restart, and BIRD 2's BFD talks to ours.
//!
//! The link is "cut" by an nftables table in one namespace that drops
//! every packet in and out: no FIN, no RST, no carrier change, as when a
//! cable or a switch port dies.
//!
//! Protection: SHA1 authentication against BIRD 2 with the same and with
//! another key, and multihop BFD across a router (TTL 254 on arrival)
//! held to the peer's GTSM hop count.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Bird2, Ours, pair, wait_for};
use lab::{Netns, Topology, TopologySpec};

const UP: Duration = Duration::from_secs(30);

fn cut(ns: &Netns) {
    ns.exec("nft", &["add", "table", "inet", "cut"]).unwrap();
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        let spec = format!("{{ type filter hook {hook} priority -300 ; policy drop ; }}");
        ns.exec("nft", &["add", "chain", "inet", "cut", chain, &spec])
            .unwrap();
    }
}

fn mend(ns: &Netns) {
    ns.exec("nft", &["delete", "table", "inet", "cut"]).unwrap();
}

/// Polls (every 10 ms, for at most `limit`) until `f` holds; returns how
/// long it took, or `None` if it never did.
fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn ours_toml(me: &str, peer: &str, prefix: &str) -> String {
    format!(
        r#"
router_id = "{me}"
asn = 64512
listen = "0.0.0.0:179"

[[peers]]
address = "{peer}"
asn = 64512
prefixes = ["{prefix}"]
# As confd configures its peers: retry a refused connection after 1 s
# (both ends connect at once when BFD comes up; one may still be idle).
connect_retry = 1
bfd = {{ interval_ms = 100, multiplier = 5 }}
"#
    )
}

#[test]
fn a_cut_link_takes_the_routes_within_a_second_and_a_restart_keeps_them() {
    let (a, b) = pair("bfda", "bfdb");
    let ours_a = Ours::start(&a, &ours_toml("10.0.0.1", "10.0.0.2", "10.11.0.0/26"));
    let mut ours_b = Ours::start(&b, &ours_toml("10.0.0.2", "10.0.0.1", "10.22.0.0/26"));
    let diag = || format!("{}\n{}", ours_a.log_text(), ours_b.log_text());
    wait_for(
        "routes both ways and BFD up",
        UP,
        || {
            (ours_a.route("10.22.0.0/26").is_some()
                && ours_b.route("10.11.0.0/26").is_some()
                && ours_a.log_text().contains("state=Up")
                && ours_b.log_text().contains("state=Up"))
            .then_some(())
        },
        diag,
    );

    // Operators see it: `bird show peers` has a BFD column.
    assert_eq!(ours_a.peer("10.0.0.2").bfd, "Up");
    let table = ours_a.show(&["peers"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[6], "Up", "{table}");

    // Cut: both sides lose the other's routes within a second.
    cut(&b);
    let gone = time_until(Duration::from_secs(5), || {
        ours_a.route("10.22.0.0/26").is_none()
    });
    println!("link cut: routes withdrawn after {gone:?}");
    let gone = gone.unwrap_or_else(|| panic!("route kept after a cut link\n{}", diag()));
    assert!(gone <= Duration::from_secs(1), "took {gone:?}\n{}", diag());
    // Cease / Hard Reset wrapping Cease / BFD Down (6/10, RFC 9384).
    wait_for(
        "the BFD reset in the peer's status",
        Duration::from_secs(5),
        || {
            let e = ours_a.peer("10.0.0.2").last_error;
            (e.contains("Hard Reset") && e.contains("data 060a")).then_some(())
        },
        || format!("{:?}\n{}", ours_a.peer("10.0.0.2"), diag()),
    );

    // Mended: back within a few seconds (BFD's slow rate is 1 packet a
    // second; BFD up makes BGP connect at once).
    mend(&b);
    let back = time_until(Duration::from_secs(10), || {
        ours_a.route("10.22.0.0/26").is_some() && ours_b.route("10.11.0.0/26").is_some()
    });
    println!("link mended: routes back after {back:?}");
    let back = back.unwrap_or_else(|| panic!("routes not back\n{}", diag()));
    assert!(back <= Duration::from_secs(3), "took {back:?}\n{}", diag());

    // A killed daemon closes its TCP connection before BFD notices: the
    // session ends without a NOTIFICATION and graceful restart keeps the
    // routes (stale) — BFD must not flush them.
    wait_for(
        "BFD up again",
        UP,
        || (ours_a.log_text().matches("state=Up").count() >= 2).then_some(()),
        diag,
    );
    ours_b.kill();
    std::thread::sleep(Duration::from_secs(2));
    let r = ours_a.route("10.22.0.0/26");
    assert!(
        r.as_ref().is_some_and(|r| r.stale),
        "a restarting peer's route must stay, stale: {r:?}\n{}",
        ours_a.log_text()
    );
}

#[test]
fn bird2_bfd_comes_up_with_ours_and_a_cut_link_withdraws_at_both() {
    // a = BIRD 2 (10.0.0.1, AS 65001), b = us (10.0.0.2, AS 65002).
    let (a, b) = pair("bfd2a", "bfd2b");
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol bfd { interface "*" { interval 100 ms; multiplier 5; }; }
protocol static s4 { ipv4; route 10.11.0.0/16 blackhole; }
protocol bgp v4 {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 65002;
  bfd on;
  # BIRD waits 60 s after an error before it takes a session again.
  error wait time 1, 5;
  ipv4 { import all; export all; };
}
"#,
    );
    let ours = Ours::start(
        &b,
        r#"
router_id = "10.0.0.2"
asn = 65002
listen = "0.0.0.0:179"

[[peers]]
address = "10.0.0.1"
asn = 65001
prefixes = ["10.22.0.0/16"]
bfd = {}
"#,
    );
    let diag = || {
        format!(
            "{}\n{}\n{}",
            ours.log_text(),
            bird.birdc(&["show", "bfd", "sessions"]),
            bird.log_text()
        )
    };
    wait_for(
        "BGP up, routes both ways, BFD Up at BIRD",
        UP,
        || {
            (ours.route("10.11.0.0/16").is_some()
                && bird.route("10.22.0.0/16").is_some()
                && bird
                    .birdc(&["show", "bfd", "sessions"])
                    .lines()
                    .any(|l| l.starts_with("10.0.0.2") && l.contains(" Up ")))
            .then_some(())
        },
        diag,
    );
    assert!(ours.log_text().contains("state=Up"), "{}", diag());

    cut(&b);
    let gone = time_until(Duration::from_secs(5), || {
        ours.route("10.11.0.0/16").is_none() && bird.route("10.22.0.0/16").is_none()
    });
    println!("BIRD 2 link cut: routes withdrawn at both ends after {gone:?}");
    let gone = gone.unwrap_or_else(|| panic!("routes kept after a cut link\n{}", diag()));
    assert!(gone <= Duration::from_secs(1), "took {gone:?}\n{}", diag());

    mend(&b);
    let back = time_until(Duration::from_secs(15), || {
        ours.route("10.11.0.0/16").is_some() && bird.route("10.22.0.0/16").is_some()
    });
    println!("BIRD 2 link mended: routes back after {back:?}");
    assert!(back.is_some(), "routes not back\n{}", diag());
}

fn bird2_auth_conf(auth: &str, password: &str, id: u8) -> String {
    format!(
        r#"
router id 10.0.0.1;
protocol device {{}}
protocol bfd {{
  interface "*" {{
    interval 100 ms; multiplier 5;
    authentication {auth};
    password "{password}" {{ id {id}; }};
  }};
}}
protocol static s4 {{ ipv4; route 10.11.0.0/16 blackhole; }}
protocol bgp v4 {{
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 65002;
  bfd on;
  error wait time 1, 5;
  ipv4 {{ import all; export all; }};
}}
"#
    )
}

fn bird2_bfd_up(bird: &Bird2) -> bool {
    bird.birdc(&["show", "bfd", "sessions"])
        .lines()
        .any(|l| l.starts_with("10.0.0.2") && l.contains(" Up "))
}

/// BIRD 2 and ours with `kind` SHA1 authentication: the same key brings
/// BFD up at both ends; BIRD given another key (or key ID), both ends go
/// down and stay down; the key restored, up again.
fn bird2_bfd_authentication(tag: &str, bird_auth: &str, our_type: &str) {
    let (a, b) = pair(&format!("{tag}a"), &format!("{tag}b"));
    let bird = Bird2::start(&a, &bird2_auth_conf(bird_auth, "s3cret-key", 7));
    let ours = Ours::start(
        &b,
        &format!(
            r#"
router_id = "10.0.0.2"
asn = 65002
listen = "0.0.0.0:179"

[[peers]]
address = "10.0.0.1"
asn = 65001
prefixes = ["10.22.0.0/16"]
bfd = {{ auth = {{ type = "{our_type}", key_id = 7, key = "s3cret-key" }} }}
"#
        ),
    );
    let diag = || {
        format!(
            "{}\n{}\n{}",
            ours.log_text(),
            bird.birdc(&["show", "bfd", "sessions"]),
            bird.log_text()
        )
    };
    wait_for(
        "BFD Up at both ends with the same key, and routes both ways",
        UP,
        || {
            (bird2_bfd_up(&bird)
                && ours.peer("10.0.0.1").bfd == "Up"
                && ours.route("10.11.0.0/16").is_some()
                && bird.route("10.22.0.0/16").is_some())
            .then_some(())
        },
        diag,
    );

    for (what, password, id, told) in [
        (
            "another key",
            "wrong-key",
            7,
            "the authentication digest is wrong",
        ),
        (
            "another key ID",
            "s3cret-key",
            8,
            "key ID 8 where 7 is configured",
        ),
    ] {
        bird.reconfigure(&bird2_auth_conf(bird_auth, password, id));
        wait_for(
            &format!("BFD down at both ends with {what}"),
            Duration::from_secs(10),
            || (!bird2_bfd_up(&bird) && ours.peer("10.0.0.1").bfd != "Up").then_some(()),
            diag,
        );
        // And it stays down: every packet is dropped at both ends.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            assert!(
                !bird2_bfd_up(&bird) && ours.peer("10.0.0.1").bfd != "Up",
                "BFD up with {what}\n{}",
                diag()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The operator is told why.
        assert!(
            ours.log_text().contains(told),
            "{told:?} not logged\n{}",
            diag()
        );
        // The right key again: up (so it was the key).
        bird.reconfigure(&bird2_auth_conf(bird_auth, "s3cret-key", 7));
        wait_for(
            &format!("BFD Up again after {what} was put right"),
            UP,
            || (bird2_bfd_up(&bird) && ours.peer("10.0.0.1").bfd == "Up").then_some(()),
            diag,
        );
    }
}

#[test]
fn bird2_bfd_with_meticulous_keyed_sha1_comes_up_only_with_the_same_key() {
    bird2_bfd_authentication("bfdm", "meticulous keyed sha1", "meticulous-keyed-sha1");
}

#[test]
fn bird2_bfd_with_keyed_sha1_comes_up_only_with_the_same_key() {
    bird2_bfd_authentication("bfdk", "keyed sha1", "keyed-sha1");
}

fn multihop_toml(me: &str, peer: &str, hops: Option<u8>) -> String {
    let gtsm = match hops {
        Some(h) => format!("ttl_security = true\nttl_security_hops = {h}\n"),
        None => String::new(),
    };
    format!(
        r#"
router_id = "{me}"
asn = 64512
listen = "{me}:179"

[[peers]]
address = "{peer}"
asn = 64512
connect_retry = 1
connect_retry_max = 2
{gtsm}bfd = {{ multihop = true }}
"#
    )
}

/// Multihop BFD between two of ours a router apart: our packets leave
/// with TTL 255 and arrive with 254. Allowed 1 hop (ttl_security_hops =
/// 1), a session drops them and never comes up; allowed 2, it comes up;
/// with no hop count, any TTL is taken (RFC 5883 leaves it to
/// configuration).
#[test]
fn multihop_bfd_is_held_to_the_peers_hop_count() {
    let _ = lab::sweep_stale();
    let t = Topology::build(&TopologySpec {
        tag: "bfdt".into(),
        subnets: 2,
        nodes: 2,
    })
    .unwrap();
    let (n0, n1) = (t.node(0).unwrap(), t.node(1).unwrap());
    assert_ne!(n0.subnet, n1.subnet, "the nodes must be a router apart");
    let (ip0, ip1) = (n0.ip().to_string(), n1.ip().to_string());

    let mut a = Ours::start_in(&n0.ns, &multihop_toml(&ip0, &ip1, Some(1)), &[]);
    let mut b = Ours::start_in(&n1.ns, &multihop_toml(&ip1, &ip0, Some(1)), &[]);
    let diag = |a: &Ours, b: &Ours| format!("{}\n{}", a.log_text(), b.log_text());
    // Slow packets are a second apart: 5 s is several of each side's.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let (sa, sb) = (a.peer(&ip1).bfd, b.peer(&ip0).bfd);
        assert!(
            sa != "Up" && sa != "Init" && sb != "Up" && sb != "Init",
            "BFD heard a peer 2 hops away with 1 allowed: {sa} {sb}\n{}",
            diag(&a, &b)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Allowed 2 hops (or no count), the same pair comes up: so it was
    // the TTL, not the path.
    for hops in [Some(2), None] {
        a.restart(Some(&multihop_toml(&ip0, &ip1, hops)));
        b.restart(Some(&multihop_toml(&ip1, &ip0, hops)));
        wait_for(
            &format!("multihop BFD up with hop count {hops:?}"),
            UP,
            || (a.peer(&ip1).bfd == "Up" && b.peer(&ip0).bfd == "Up").then_some(()),
            || diag(&a, &b),
        );
    }
}

fn auth_pair_toml(me: &str, peer: &str, prefix: &str, auth: bool) -> String {
    let auth = if auth {
        r#", auth = { type = "meticulous-keyed-sha1", key_id = 1, key = "pair-key" }"#
    } else {
        ""
    };
    format!(
        r#"
router_id = "{me}"
asn = 64512
listen = "0.0.0.0:179"

[[peers]]
address = "{peer}"
asn = 64512
prefixes = ["{prefix}"]
connect_retry = 1
bfd = {{ interval_ms = 100, multiplier = 5{auth} }}
"#
    )
}

/// The discriminator a daemon's log says its session was given.
fn discriminator(ours: &Ours) -> u32 {
    let log = ours.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("BFD session started"))
        .unwrap_or_else(|| panic!("no BFD session in the log\n{log}"));
    let v = line.split("discriminator=").nth(1).unwrap();
    v.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Sends, from namespace `ns` (so from the peer's own address), Control
/// packets saying Down to `to`'s session `your_discr`, as an attacker on
/// the link would: `sign` (wrong key) or bare, with `ttl`.
fn spoof_down(
    ns: &Netns,
    to: &str,
    my_discr: u32,
    your_discr: u32,
    sign: Option<bird::bfd::packet::Key>,
    ttl: u32,
) {
    use bird::bfd::packet::{Control, diag};
    let c = Control {
        diag: diag::NEIGHBOR_SIGNALED_DOWN,
        state: bird::bfd::State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 5,
        my_discr,
        your_discr,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    let to: std::net::SocketAddr = format!("{to}:3784").parse().unwrap();
    ns.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_ttl(ttl).unwrap();
        // Sequence numbers all over the window a receiver might hold.
        for seq in (0..20u32).map(|i| i.wrapping_mul(0x0ccc_cccd)) {
            let bytes = match &sign {
                Some(k) => c.encode_signed(k, seq).to_vec(),
                None => c.encode().to_vec(),
            };
            s.send_to(&bytes, to).unwrap();
        }
    })
    .unwrap();
}

/// On real sockets: with authentication, Down packets from the peer's
/// address with the right discriminators but a wrong key, or without
/// authentication, leave the BFD and BGP sessions up; the same Down
/// without authentication configured takes them down (so the packet was
/// right and only the key stopped it), and one with TTL 254 does not.
#[test]
fn a_spoofed_down_on_the_link_resets_nothing_with_authentication() {
    let (a, b) = pair("bfdsa", "bfdsb");
    let up = |x: &Ours, y: &Ours| {
        x.peer("10.0.0.2").bfd == "Up"
            && y.peer("10.0.0.1").bfd == "Up"
            && x.route("10.22.0.0/26").is_some()
    };
    {
        let ours_a = Ours::start(
            &a,
            &auth_pair_toml("10.0.0.1", "10.0.0.2", "10.11.0.0/26", true),
        );
        let ours_b = Ours::start(
            &b,
            &auth_pair_toml("10.0.0.2", "10.0.0.1", "10.22.0.0/26", true),
        );
        let diag = || format!("{}\n{}", ours_a.log_text(), ours_b.log_text());
        wait_for(
            "BFD up with the key",
            UP,
            || up(&ours_a, &ours_b).then_some(()),
            diag,
        );
        let (da, db) = (discriminator(&ours_a), discriminator(&ours_b));
        let wrong = bird::bfd::packet::Key::new(
            bird::bfd::packet::AuthKind::MeticulousKeyedSha1,
            1,
            b"guess",
        )
        .unwrap();
        spoof_down(&b, "10.0.0.1", db, da, Some(wrong), 255);
        spoof_down(&b, "10.0.0.1", db, da, None, 255);
        std::thread::sleep(Duration::from_secs(1));
        assert!(up(&ours_a, &ours_b), "spoofed Down took effect\n{}", diag());
        assert!(
            !ours_a.log_text().contains("resetting the BGP session"),
            "{}",
            diag()
        );
        // (The signed ones fall outside the sequence window, which is
        // checked before the digest; the bare ones are told.)
        assert!(
            ours_a
                .log_text()
                .contains("the packet is not authenticated"),
            "{}",
            diag()
        );
    }
    // Control: no authentication. TTL 254 is not from the link: ignored;
    // TTL 255 is taken, and the BGP session is reset.
    let ours_a = Ours::start(
        &a,
        &auth_pair_toml("10.0.0.1", "10.0.0.2", "10.11.0.0/26", false),
    );
    let ours_b = Ours::start(
        &b,
        &auth_pair_toml("10.0.0.2", "10.0.0.1", "10.22.0.0/26", false),
    );
    let diag = || format!("{}\n{}", ours_a.log_text(), ours_b.log_text());
    wait_for(
        "BFD up without a key",
        UP,
        || up(&ours_a, &ours_b).then_some(()),
        diag,
    );
    let (da, db) = (discriminator(&ours_a), discriminator(&ours_b));
    spoof_down(&b, "10.0.0.1", db, da, None, 254);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        up(&ours_a, &ours_b),
        "a Down with TTL 254 took effect\n{}",
        diag()
    );
    spoof_down(&b, "10.0.0.1", db, da, None, 255);
    wait_for(
        "the unauthenticated spoofed Down to reset the BGP session",
        Duration::from_secs(5),
        || {
            ours_a
                .log_text()
                .contains("resetting the BGP session")
                .then_some(())
        },
        diag,
    );
}
