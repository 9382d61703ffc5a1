//! GTSM (RFC 5082) across a router: two of our daemons in different lab
//! subnets, so their packets arrive with TTL 254. With
//! `ttl_security_hops = 1` (the peer claims to be directly connected) the
//! kernel drops every segment and no session ever comes up; the same pair
//! allowed 2 hops establishes — so it was the TTL, not the path.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Ours, wait_for};
use lab::{Topology, TopologySpec};

fn toml(me: &str, peer: &str, hops: u8) -> String {
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
ttl_security = true
ttl_security_hops = {hops}
prefixes = ["10.9.{last}.0/24"]
"#,
        last = me.rsplit('.').next().unwrap()
    )
}

#[test]
fn a_peer_farther_away_than_allowed_never_gets_a_session() {
    let _ = lab::sweep_stale();
    let t = Topology::build(&TopologySpec {
        tag: "gtsm".into(),
        subnets: 2,
        nodes: 2,
    })
    .unwrap();
    let (n0, n1) = (t.node(0).unwrap(), t.node(1).unwrap());
    assert_ne!(n0.subnet, n1.subnet, "the nodes must be a router apart");
    let (ip0, ip1) = (n0.ip().to_string(), n1.ip().to_string());
    // The path works: a ping crosses the router.
    n0.ns
        .exec("ping", &["-c", "1", "-W", "2", &ip1])
        .expect("the nodes reach each other through the router");

    let mut a = Ours::start_in(&n0.ns, &toml(&ip0, &ip1, 1), &[]);
    let mut b = Ours::start_in(&n1.ns, &toml(&ip1, &ip0, 1), &[]);
    // Both sides keep trying (connect retry 1-2 s) for 8 s: never up.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        assert!(
            !a.established(&ip1) && !b.established(&ip0),
            "a session came up with TTL 254 and 1 hop allowed\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(a.route("10.9.0.0/24").is_none() && b.route("10.9.0.0/24").is_none());

    // Allowed 2 hops, the same pair comes up.
    a.restart(Some(&toml(&ip0, &ip1, 2)));
    b.restart(Some(&toml(&ip1, &ip0, 2)));
    wait_for(
        "the session with 2 hops allowed",
        Duration::from_secs(30),
        || (a.established(&ip1) && b.established(&ip0)).then_some(()),
        || format!("{}\n{}", a.log_text(), b.log_text()),
    );
}
