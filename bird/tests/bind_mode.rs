//! `bindMode: NodeIP` (BGPConfiguration): confd sends the node's address
//! as `listen_address` and bird listens there only, not on every address;
//! without it bird listens on every address again, and the session a peer
//! opened stays up across the change. The peer is BIRD 2, connecting in.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Bird2, Ours, node_a_config, pair, wait_for, wire_addr as addr};
use proto::bgpconfig as bgp;

const UP: Duration = Duration::from_secs(30);

/// What confd sends `a` (10.0.0.1): BIRD 2 at 10.0.0.2 connects in.
fn config(listen_address: Option<&str>) -> bgp::BgpConfig {
    bgp::BgpConfig {
        listen_address: listen_address.and_then(addr),
        ..node_a_config("10.0.0.2")
    }
}

/// The local addresses of TCP sockets listening on port 179.
fn listening(ns: &lab::Netns) -> Vec<String> {
    ns.exec("ss", &["-ltnH", "sport", "= :179"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

#[test]
fn bind_mode_node_ip_listens_on_the_node_address_only() {
    let (a, b) = pair("bnda", "bndb");
    // A second local address: bird must not answer on it.
    a.ip(&["addr", "add", "10.0.0.11/24", "dev", "eth0"])
        .unwrap();
    let a = Arc::new(a);
    let ours = Ours::start_unconfigured(&a, &[]);
    // A refused configuration fails `apply` itself.
    ours.apply(config(Some("10.0.0.1")));
    wait_for(
        "bird listening on 10.0.0.1:179 only",
        UP,
        || (listening(&a) == ["10.0.0.1:179"]).then_some(()),
        || format!("{:?}\n{}", listening(&a), ours.log_text()),
    );
    let bird = Bird2::start(
        &b,
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp nodeip { local 10.0.0.2 as 65001; neighbor 10.0.0.1 as 64512; connect retry time 1; ipv4 { import all; export none; }; }
protocol bgp second { local 10.0.0.2 as 65001; neighbor 10.0.0.11 as 64512; connect retry time 1; ipv4 { import all; export none; }; }
"#,
    );
    let diag = || {
        format!(
            "{:?}\n{}\n{}",
            listening(&a),
            ours.log_text(),
            bird.log_text()
        )
    };
    wait_for(
        "BIRD's session to the node address",
        UP,
        || bird.established("nodeip").then_some(()),
        diag,
    );
    // Nothing listens on the other address: BIRD's connections there are
    // refused, so that session never comes up.
    assert!(!bird.established("second"), "{}", diag());

    // bindMode back to None: every address again, the session stays.
    ours.apply(config(None));
    wait_for(
        "bird listening on every address",
        UP,
        || {
            let l = listening(&a);
            (l.len() == 1 && (l[0] == "*:179" || l[0] == "[::]:179")).then_some(())
        },
        diag,
    );
    assert!(bird.established("nodeip"), "{}", diag());
}

/// On a dual-stack node bindMode NodeIP listens on the node's IPv4 and
/// IPv6 addresses, both, and on no other: BIRD 2's IPv6 session to the
/// node's IPv6 address comes up, one to a second IPv6 address does not.
#[test]
fn bind_mode_node_ip_on_a_dual_stack_node_listens_on_both_node_addresses() {
    let (a, b) = pair("bnd6a", "bnd6b");
    a.ip(&["addr", "add", "fd00::11/64", "dev", "eth0", "nodad"])
        .unwrap();
    let a = Arc::new(a);
    let ours = Ours::start_unconfigured(&a, &[]);
    let mut cfg = config(Some("10.0.0.1"));
    cfg.listen_address_v6 = addr("fd00::1");
    cfg.peers.push(bgp::BgpPeerConfig {
        name: "Global_fd00__2".into(),
        address: addr("fd00::2"),
        asn: 65001,
        kind: bgp::PeerKind::Global as i32,
        passive: true,
        ..Default::default()
    });
    ours.apply(cfg.clone());
    let sorted = |ns: &lab::Netns| {
        let mut l = listening(ns);
        l.sort();
        l
    };
    wait_for(
        "bird listening on both node addresses",
        UP,
        || (sorted(&a) == ["10.0.0.1:179", "[fd00::1]:179"]).then_some(()),
        || format!("{:?}\n{}", listening(&a), ours.log_text()),
    );
    let bird = Bird2::start(
        &b,
        r#"
router id 10.0.0.2;
protocol device {}
protocol bgp nodeip6 { local fd00::2 as 65001; neighbor fd00::1 as 64512; connect retry time 1; ipv6 { import all; export none; }; }
protocol bgp second6 { local fd00::2 as 65001; neighbor fd00::11 as 64512; connect retry time 1; ipv6 { import all; export none; }; }
"#,
    );
    let diag = || {
        format!(
            "{:?}\n{}\n{}",
            listening(&a),
            ours.log_text(),
            bird.log_text()
        )
    };
    wait_for(
        "BIRD's IPv6 session to the node's IPv6 address",
        UP,
        || bird.established("nodeip6").then_some(()),
        diag,
    );
    assert!(!bird.established("second6"), "{}", diag());
    // Back to every address: one wildcard socket, the session stays.
    cfg.listen_address = None;
    cfg.listen_address_v6 = None;
    ours.apply(cfg);
    wait_for(
        "bird listening on every address",
        UP,
        || {
            let l = listening(&a);
            (l.len() == 1 && (l[0] == "*:179" || l[0] == "[::]:179")).then_some(())
        },
        diag,
    );
    assert!(bird.established("nodeip6"), "{}", diag());
}
