//! BGPConfiguration `ignoredInterfaces`: bird does not read an ignored
//! interface's addresses as the node's own networks, so a peer's route to
//! that network is no longer refused as a hijack of the node's networks;
//! changed while bird runs. The peer is BIRD 2.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Bird2, Ours, node_a_config, pair, wait_for};
use proto::bgpconfig as bgp;

const UP: Duration = Duration::from_secs(30);

fn config(ignored: &[&str]) -> bgp::BgpConfig {
    bgp::BgpConfig {
        ignored_interfaces: ignored.iter().map(|s| s.to_string()).collect(),
        ..node_a_config("10.0.0.2")
    }
}

#[test]
fn an_ignored_interfaces_network_is_not_the_nodes() {
    let (a, b) = pair("igna", "ignb");
    // A second interface on the node, with a network of its own.
    a.ip(&[
        "link", "add", "ign0", "type", "veth", "peer", "name", "ign1",
    ])
    .unwrap();
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "ign0"])
        .unwrap();
    a.ip(&["link", "set", "ign0", "up"]).unwrap();
    let a = Arc::new(a);
    let ours = Ours::start_unconfigured(&a, &[]);
    ours.apply(config(&[]));
    let bird = Bird2::start(
        &b,
        r#"
router id 10.0.0.2;
protocol device {}
protocol static s4 {
  ipv4;
  route 10.98.0.0/24 blackhole;
  route 10.99.0.0/24 blackhole;
}
protocol bgp peer {
  local 10.0.0.2 as 65001; neighbor 10.0.0.1 as 64512;
  connect retry time 1;
  ipv4 { import none; export all; };
}
"#,
    );
    let diag = || format!("{}\n{}", ours.log_text(), bird.log_text());
    wait_for("10.98.0.0/24", UP, || ours.route("10.98.0.0/24"), diag);
    // The same UPDATE batch: 10.99.0.0/24 came and was refused.
    let peer = wait_for(
        "10.99.0.0/24 to be refused",
        UP,
        || Some(ours.peer("10.0.0.2")).filter(|p| p.prefixes_rejected > 0),
        diag,
    );
    assert_eq!(peer.prefixes_rejected, 1, "{peer:?}");
    assert!(ours.route("10.99.0.0/24").is_none());

    // ign0 ignored: 10.99.0.0/24 is not the node's; the route is taken,
    // without a new session.
    ours.apply(config(&["ign*"]));
    wait_for("10.99.0.0/24", UP, || ours.route("10.99.0.0/24"), diag);
    assert!(bird.established("peer"), "{}", diag());
}
