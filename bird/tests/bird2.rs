//! Interop with BIRD 2 (Debian `bird2`): real sessions between our `bird`
//! binary and BIRD in two lab namespaces joined by a veth pair.
//!
//! IPv6 is exchanged two ways: over a separate IPv6 session (the eBGP
//! test), and as MP-BGP over the IPv4 session (the iBGP test), where each
//! side is told its IPv6 next hop (`next_hop_v6` here, `next hop address`
//! in BIRD) because the session has no IPv6 address of its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Bird2, Ours, next_hop, pair, path_asns, wait_for};
use proto::bgpconfig as bgp;

const UP: Duration = Duration::from_secs(30);

#[test]
fn ebgp_we_connect_and_exchange_ipv4_and_ipv6_with_a_four_octet_as() {
    // a = BIRD 2 (10.0.0.1, AS 65001, passive), b = us (10.0.0.2).
    let (a, b) = pair("b2ea", "b2eb");
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 { ipv4; route 10.11.0.0/16 blackhole; }
protocol static s6 { ipv6; route fd11::/48 blackhole; }
protocol bgp v4 {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 4200000002; passive on;
  ipv4 { import all; export all; };
}
protocol bgp v6 {
  local fd00::1 as 65001; neighbor fd00::2 as 4200000002; passive on;
  ipv6 { import all; export all; };
}
"#,
    );
    let ours = Ours::start(
        &b,
        r#"
router_id = "10.0.0.2"
asn = 4200000002
listen = "[::]:179"

[[peers]]
address = "10.0.0.1"
asn = 65001
families = ["ipv4"]
prefixes = ["10.22.0.0/16"]

[[peers]]
address = "fd00::1"
asn = 65001
families = ["ipv6"]
prefixes = ["fd22::/48"]
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());

    wait_for(
        "both sessions Established on both sides",
        UP,
        || {
            (ours.established("10.0.0.1")
                && ours.established("fd00::1")
                && bird.established("v4")
                && bird.established("v6"))
            .then_some(())
        },
        diag,
    );
    // We opened the connections: the remote end is BIRD's port 179.
    assert!(ours.peer("10.0.0.1").remote_endpoint.ends_with(":179"));

    let r4 = wait_for(
        "10.11.0.0/16 from BIRD",
        UP,
        || ours.route("10.11.0.0/16"),
        diag,
    );
    assert_eq!(path_asns(&r4), vec![65001]);
    assert_eq!(next_hop(&r4), "10.0.0.1");
    assert_eq!(r4.local_pref, None, "LOCAL_PREF is not sent over eBGP");
    let r6 = wait_for("fd11::/48 from BIRD", UP, || ours.route("fd11::/48"), diag);
    assert_eq!(path_asns(&r6), vec![65001]);
    assert_eq!(next_hop(&r6), "fd00::1");

    let b4 = wait_for(
        "10.22.0.0/16 at BIRD",
        UP,
        || bird.route("10.22.0.0/16"),
        diag,
    );
    assert!(b4.contains("BGP.as_path: 4200000002"), "{b4}");
    assert!(b4.contains("BGP.next_hop: 10.0.0.2"), "{b4}");
    assert!(b4.contains("BGP.local_pref: 100"), "{b4}");
    let b6 = wait_for("fd22::/48 at BIRD", UP, || bird.route("fd22::/48"), diag);
    assert!(b6.contains("BGP.as_path: 4200000002"), "{b6}");
    assert!(b6.contains("BGP.next_hop: fd00::2"), "{b6}");

    let table = ours.show(&["peers"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for r in &rows {
        assert_eq!(&r[1..3], &["65001", "Established"], "{table}");
        assert_eq!(&r[4..8], &["1", "1", "-", "-"], "{table}");
    }
    let count = ours.show(&["routes", "--count"]);
    assert!(count.contains("total 2"), "{count}");
    let routes = ours.show(&["routes"]);
    assert!(
        routes.contains("10.11.0.0/16") && routes.contains("fd11::/48"),
        "{routes}"
    );

    // A clean shutdown tells the peer why (Cease / Administrative Shutdown).
    ours.proc.signal(libc::SIGTERM);
    wait_for(
        "BIRD to see our Cease",
        UP,
        || {
            bird.birdc(&["show", "protocols", "all", "v4"])
                .contains("Administrative shutdown")
                .then_some(())
        },
        || {
            format!(
                "{}\n{}",
                bird.birdc(&["show", "protocols", "all", "v4"]),
                bird.log_text()
            )
        },
    );
}

#[test]
fn ibgp_bird_connects_and_sends_ipv6_over_the_ipv4_session() {
    let (a, b) = pair("b2ia", "b2ib");
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 { ipv4; route 10.11.0.0/16 blackhole; }
protocol static s6 { ipv6; route fd11::/48 blackhole; }
protocol bgp inpeer {
  local 10.0.0.1 as 65000; neighbor 10.0.0.2 as 65000; direct;
  connect delay time 1;
  ipv4 {
    import all; export filter { bgp_local_pref = 300; accept; };
    next hop self; gateway direct;
  };
  ipv6 {
    import all; export filter { bgp_local_pref = 300; accept; };
    next hop self; next hop address fd00::1; gateway direct;
  };
}
"#,
    );
    let ours = Ours::start(
        &b,
        r#"
router_id = "10.0.0.2"
asn = 65000

[[peers]]
address = "10.0.0.1"
asn = 65000
passive = true
local_pref = 250
prefixes = ["10.22.0.0/16", "fd22::/48"]
next_hop_v6 = "fd00::2"
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());
    wait_for(
        "iBGP session Established",
        UP,
        || (ours.established("10.0.0.1") && bird.established("inpeer")).then_some(()),
        diag,
    );
    let p = ours.peer("10.0.0.1");
    // BIRD opened the connection: our end is port 179.
    assert!(p.local_endpoint.ends_with(":179"), "{p:?}");
    assert!(p.internal);
    assert_eq!(p.families, vec!["ipv4-unicast", "ipv6-unicast"]);

    let r4 = wait_for(
        "10.11.0.0/16 from BIRD",
        UP,
        || ours.route("10.11.0.0/16"),
        diag,
    );
    assert!(path_asns(&r4).is_empty(), "iBGP path is empty: {r4:?}");
    assert_eq!(r4.local_pref, Some(300));
    assert_eq!(next_hop(&r4), "10.0.0.1");
    let r6 = wait_for("fd11::/48 from BIRD", UP, || ours.route("fd11::/48"), diag);
    assert_eq!(next_hop(&r6), "fd00::1");
    assert_eq!(r6.local_pref, Some(300));

    let b4 = wait_for(
        "10.22.0.0/16 at BIRD",
        UP,
        || bird.route("10.22.0.0/16"),
        diag,
    );
    assert!(b4.contains("BGP.local_pref: 250"), "{b4}");
    assert!(b4.contains("BGP.next_hop: 10.0.0.2"), "{b4}");
    assert!(
        b4.contains("BGP.as_path: \n") || b4.contains("BGP.as_path:\n"),
        "{b4}"
    );
    let b6 = wait_for("fd22::/48 at BIRD", UP, || bird.route("fd22::/48"), diag);
    assert!(b6.contains("BGP.next_hop: fd00::2"), "{b6}");
    assert!(b6.contains("BGP.local_pref: 250"), "{b6}");
}

const MD5_BIRD: &str = r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 { ipv4; route 10.11.0.0/16 blackhole; }
protocol bgp peer {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 65002;
  password "PASSWORD"; ttl security on;
  connect delay time 1;
  ipv4 { import all; export all; };
}
"#;

const MD5_OURS: &str = r#"
router_id = "10.0.0.2"
asn = 65002
[[peers]]
address = "10.0.0.1"
asn = 65001
password = "s3cret-key"
ttl_security = true
connect_retry = 1
prefixes = ["10.22.0.0/16"]
"#;

#[test]
fn tcp_md5_with_matching_password_and_gtsm_comes_up_and_wrong_password_does_not() {
    let (a1, b1) = pair("md5a", "md5b");
    let (a2, b2) = pair("md5c", "md5d");
    let bird_ok = Bird2::start(&a1, &MD5_BIRD.replace("PASSWORD", "s3cret-key"));
    let bird_bad = Bird2::start(&a2, &MD5_BIRD.replace("PASSWORD", "wrong-key"));
    let ours_ok = Ours::start(&b1, MD5_OURS);
    let ours_bad = Ours::start(&b2, MD5_OURS);

    wait_for(
        "MD5 + GTSM session with matching passwords",
        UP,
        || (ours_ok.established("10.0.0.1") && bird_ok.established("peer")).then_some(()),
        || format!("{}\n{}", ours_ok.log_text(), bird_ok.log_text()),
    );
    let r = wait_for(
        "route over the MD5 session",
        UP,
        || ours_ok.route("10.11.0.0/16"),
        || ours_ok.log_text(),
    );
    assert_eq!(path_asns(&r), vec![65001]);

    // Both sides keep trying (connect retry 1 s, BIRD connect delay 1 s);
    // with mismatched keys every SYN is dropped, for a good while.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        assert!(!ours_bad.established("10.0.0.1"), "{}", ours_bad.log_text());
        assert!(!bird_bad.established("peer"), "{}", bird_bad.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ours_bad.route("10.11.0.0/16").is_none());
    assert!(ours_ok.established("10.0.0.1"), "good session stayed up");
}

#[test]
fn two_octet_session_with_bird_as4_disabled() {
    let (a, b) = pair("as2a", "as2b");
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 { ipv4; route 10.11.0.0/16 blackhole; }
protocol bgp peer {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 65002;
  enable as4 off; passive on;
  ipv4 { import all; export all; };
}
"#,
    );
    let ours = Ours::start(
        &b,
        r#"
router_id = "10.0.0.2"
asn = 65002
[[peers]]
address = "10.0.0.1"
asn = 65001
families = ["ipv4"]
prefixes = ["10.22.0.0/16"]
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());
    let r = wait_for(
        "route over a 2-octet AS session",
        UP,
        || ours.route("10.11.0.0/16"),
        diag,
    );
    assert_eq!(path_asns(&r), vec![65001]);
    let b4 = wait_for(
        "10.22.0.0/16 at BIRD",
        UP,
        || bird.route("10.22.0.0/16"),
        diag,
    );
    assert!(b4.contains("BGP.as_path: 65002"), "{b4}");
}

/// BGPFilter rules as confd pushes them, against BIRD 2: an export rule
/// takes one of our blocks away from BIRD (the other stays), import rules
/// make us drop BIRD's routes by prefix and by the interface of their
/// next hop (the others stay), all on the running session; removing the filters brings both back (the import
/// side through a route refresh).
#[test]
fn bgpfilter_rules_take_one_prefix_each_way_on_the_running_session() {
    use std::net::IpAddr;
    use std::sync::Arc;

    let (a, b) = pair("b2fa", "b2fb");
    let b = Arc::new(b);
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 {
  ipv4;
  route 10.11.0.0/16 blackhole; route 10.12.0.0/16 blackhole;
  route 10.13.0.0/16 blackhole; route 10.14.0.0/16 blackhole;
}
protocol bgp tor {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 64512; passive on;
  ipv4 { import all; export all; };
}
"#,
    );
    let ours = common::Ours::start_unconfigured(&b, &[]);
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());
    let addr = |s: &str| Some(proto::common::IpAddress::from(s.parse::<IpAddr>().unwrap()));
    let pfx = |s: &str| proto::common::IpPrefix::from(s.parse::<ipnetwork::IpNetwork>().unwrap());
    let rule = |action: bgp::FilterAction, op: bgp::MatchOperator, cidr: &str| bgp::FilterRule {
        action: action as i32,
        ipv4: true,
        match_operator: op as i32,
        cidr: Some(pfx(cidr)),
        ..Default::default()
    };
    let config = |import: Vec<bgp::FilterRule>, export: Vec<bgp::FilterRule>| bgp::BgpConfig {
        node: "node-1".into(),
        router_id: addr("10.0.0.2"),
        asn: 64512,
        listen_port: 179,
        peers: vec![bgp::BgpPeerConfig {
            name: "Global_10_0_0_1".into(),
            address: addr("10.0.0.1"),
            asn: 65001,
            kind: bgp::PeerKind::Global as i32,
            import_filter: import,
            export_filter: export,
            ..Default::default()
        }],
        advertise: vec![pfx("10.65.1.0/26"), pfx("10.65.2.0/26")],
        pool_cidrs: vec![pfx("10.65.0.0/16")],
        ..Default::default()
    };
    let everything = |ours_has: [bool; 4], bird_has: [bool; 2]| {
        [
            "10.11.0.0/16",
            "10.12.0.0/16",
            "10.13.0.0/16",
            "10.14.0.0/16",
        ]
        .iter()
        .zip(ours_has)
        .all(|(p, has)| ours.route(p).is_some() == has)
            && bird.route("10.65.1.0/26").is_some() == bird_has[0]
            && bird.route("10.65.2.0/26").is_some() == bird_has[1]
    };

    ours.apply(config(vec![], vec![]));
    wait_for(
        "every route on both sides without filters",
        UP,
        || everything([true; 4], [true, true]).then_some(()),
        diag,
    );
    let since = ours.peer("10.0.0.1").since_unix_ms;

    // Export: reject exactly 10.65.2.0/26. Import: reject what is in
    // 10.12.0.0/16, and 10.13.0.0/16 when its next hop is reached over
    // eth0 (it is); 10.14.0.0/16 only over another interface (it is not).
    // Accept rules after them match nothing new.
    let via = |cidr: &str, interface: &str| bgp::FilterRule {
        interface: interface.into(),
        ..rule(bgp::FilterAction::Reject, bgp::MatchOperator::In, cidr)
    };
    ours.apply(config(
        vec![
            rule(
                bgp::FilterAction::Reject,
                bgp::MatchOperator::In,
                "10.12.0.0/16",
            ),
            via("10.13.0.0/16", "eth*"),
            via("10.14.0.0/16", "nosuch*"),
            rule(
                bgp::FilterAction::Accept,
                bgp::MatchOperator::In,
                "10.0.0.0/8",
            ),
        ],
        vec![rule(
            bgp::FilterAction::Reject,
            bgp::MatchOperator::Equal,
            "10.65.2.0/26",
        )],
    ));
    wait_for(
        "BIRD without 10.65.2.0/26 and us without 10.12.0.0/16 and 10.13.0.0/16",
        UP,
        || everything([true, false, false, true], [true, false]).then_some(()),
        diag,
    );
    // The rest is as before, attribute by attribute.
    let kept = bird.route("10.65.1.0/26").unwrap();
    assert!(kept.contains("BGP.as_path: 64512"), "{kept}");
    assert!(kept.contains("BGP.next_hop: 10.0.0.2"), "{kept}");
    let r = ours.route("10.11.0.0/16").unwrap();
    assert_eq!(path_asns(&r), vec![65001]);
    assert_eq!(next_hop(&r), "10.0.0.1");
    let peer = ours.peer("10.0.0.1");
    assert_eq!(peer.since_unix_ms, since, "the session stayed up");
    assert_eq!(peer.prefixes_received, 2, "{peer:?}");
    assert!(peer.prefixes_rejected >= 2, "{peer:?}");

    // Without the filters both come back: ours re-sent, BIRD's asked
    // for again (route refresh).
    ours.apply(config(vec![], vec![]));
    wait_for(
        "every route on both sides again",
        UP,
        || everything([true; 4], [true, true]).then_some(()),
        diag,
    );
    assert_eq!(ours.peer("10.0.0.1").since_unix_ms, since);

    // A rule bird cannot use is refused whole, naming it; the running
    // configuration stays.
    let mut bad = config(
        vec![bgp::FilterRule {
            min_len: Some(40),
            ..rule(
                bgp::FilterAction::Reject,
                bgp::MatchOperator::In,
                "10.12.0.0/16",
            )
        }],
        vec![],
    );
    bad.node = "node-1".into();
    let err = common::Ours::rt().block_on(async {
        let ch = proto::uds::connect(&ours.socket).await.unwrap();
        proto::bgpconfig::bgp_config_service_client::BgpConfigServiceClient::new(ch)
            .apply(bad)
            .await
            .unwrap_err()
    });
    assert!(
        err.message().contains("import_filter[0]"),
        "{}",
        err.message()
    );
    assert!(everything([true; 4], [true, true]), "{}", diag());
}

/// BGPPeer `localASNumber`: towards BIRD 2 we are AS 65100, not the
/// node's 64512 — in the OPEN (BIRD only accepts a session from 65100),
/// in the AS_PATH we prepend, and in loop detection (a route carrying
/// 65100 is refused, one carrying 64512 is not).
#[test]
fn local_as_number_is_the_as_the_peer_sees() {
    let (a, b) = pair("lasa", "lasb");
    let bird = Bird2::start(
        &a,
        r#"
router id 10.0.0.1;
protocol device {}
protocol static s4 {
  ipv4;
  route 10.11.0.0/16 blackhole;
  route 10.12.0.0/16 blackhole { bgp_path.prepend(65100); };
  route 10.13.0.0/16 blackhole { bgp_path.prepend(64512); };
}
protocol bgp peer {
  local 10.0.0.1 as 65001; neighbor 10.0.0.2 as 65100;
  passive on;
  ipv4 { import all; export all; };
}
"#,
    );
    let ours = Ours::start(
        &b,
        r#"
router_id = "10.0.0.2"
asn = 64512
[[peers]]
address = "10.0.0.1"
asn = 65001
local_asn = 65100
families = ["ipv4"]
prefixes = ["10.22.0.0/16"]
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());
    let b4 = wait_for(
        "10.22.0.0/16 at BIRD",
        UP,
        || bird.route("10.22.0.0/16"),
        diag,
    );
    assert!(b4.contains("BGP.as_path: 65100\n"), "{b4}");
    let r = wait_for(
        "BIRD's route at ours",
        UP,
        || ours.route("10.11.0.0/16"),
        diag,
    );
    assert_eq!(path_asns(&r), vec![65001]);
    // The node's own AS is only a transit AS on this session.
    let r = wait_for(
        "the route through 64512",
        UP,
        || ours.route("10.13.0.0/16"),
        diag,
    );
    assert_eq!(path_asns(&r), vec![65001, 64512]);
    let peer = wait_for(
        "the route through 65100 to be refused",
        UP,
        || Some(ours.peer("10.0.0.1")).filter(|p| p.prefixes_rejected > 0),
        diag,
    );
    assert!(!peer.internal, "{peer:?}");
    assert_eq!(peer.prefixes_rejected, 1, "{peer:?}");
    assert!(ours.route("10.12.0.0/16").is_none(), "a loop through 65100");
}
