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
