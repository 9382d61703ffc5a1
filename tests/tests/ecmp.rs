//! ECMP end to end: two BIRD 2 top-of-rack routers advertise one prefix to
//! a node running our bird and felix (fed by bird's route stream, as in
//! calico-node). felix installs one multipath route over both; when one
//! ToR dies, its next hop leaves the route and nothing else changes, and
//! traffic keeps flowing through the other.
//!
//! ```text
//!   node-0 (our bird, AS 64512; felix)      br0 172.30.0.0/24
//!   node-1 = ToR A (BIRD 2, AS 65001)  ─┐   each ToR: 198.51.100.1/32 on
//!   node-2 = ToR B (BIRD 2, AS 65001)  ─┘   lo, 198.51.100.0/24 to node-0
//! ```
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::felix_cluster::{FelixNode, ping};
use felix::tunnel::BackendChoice;
use lab::{Netns, NsProcess, Topology};

const PREFIX: &str = "198.51.100.0/24";
const ANYCAST: &str = "198.51.100.1";
const BIRD2: &str = "/usr/sbin/bird";

fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", diag());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// BIRD 2 as a ToR in `ns` (`me`), advertising [`PREFIX`] to `node` over
/// eBGP (next hop: itself).
fn start_tor(ns: &Netns, me: &str, node: &str, dir: &Path) -> NsProcess {
    let conf = dir.join(format!("{me}.conf"));
    std::fs::write(
        &conf,
        format!(
            "router id {me};
protocol device {{}}
protocol static s4 {{ ipv4; route {PREFIX} blackhole; }}
protocol bgp node {{
  local {me} as 65001; neighbor {node} as 64512; passive on;
  hold time 9;
  ipv4 {{ import none; export all; }};
}}
"
        ),
    )
    .unwrap();
    let sock = dir.join(format!("{me}.ctl"));
    ns.spawn(
        BIRD2,
        &[
            "-f",
            "-c",
            conf.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
        ],
        Some(&dir.join(format!("{me}.log"))),
    )
    .unwrap()
}

fn route_text(ns: &Netns) -> String {
    ns.ip(&["-4", "route", "show", PREFIX]).unwrap_or_default()
}

#[test]
fn two_tors_give_one_multipath_route_and_losing_one_only_removes_its_next_hop() {
    if !Path::new(BIRD2).exists() {
        panic!("{BIRD2} is missing (scripts/install-deps.sh installs bird2)");
    }
    let bird_bin = tests::agent::build("bird", "bird").unwrap();
    let mut lab = Topology::new("ecmp").unwrap();
    lab.add_subnet().unwrap();
    for _ in 0..3 {
        lab.add_node(0).unwrap();
    }
    let (node, tor_a, tor_b) = (
        lab.node(0).unwrap().clone(),
        lab.node(1).unwrap().clone(),
        lab.node(2).unwrap().clone(),
    );
    let (n_ip, a_ip, b_ip) = (
        node.ip().to_string(),
        tor_a.ip().to_string(),
        tor_b.ip().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    for tor in [&tor_a, &tor_b] {
        tor.ns
            .ip(&["addr", "add", &format!("{ANYCAST}/32"), "dev", "lo"])
            .unwrap();
    }
    let mut bird_a = start_tor(&tor_a.ns, &a_ip, &n_ip, dir.path());
    let _bird_b = start_tor(&tor_b.ns, &b_ip, &n_ip, dir.path());

    // Our bird on the node, peering with both ToRs.
    let socket = dir.path().join("bird.sock");
    let toml = dir.path().join("bird.toml");
    std::fs::write(
        &toml,
        format!(
            r#"router_id = "{n_ip}"
asn = 64512

[[peers]]
address = "{a_ip}"
asn = 65001
families = ["ipv4"]

[[peers]]
address = "{b_ip}"
asn = 65001
families = ["ipv4"]
"#
        ),
    )
    .unwrap();
    let bird_log = dir.path().join("ours.log");
    let _ours = node
        .ns
        .spawn(
            bird_bin.to_str().unwrap(),
            &[
                "run",
                "--config",
                toml.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
            ],
            Some(&bird_log),
        )
        .unwrap();

    // felix, fed from bird's route stream as calico-node runs it.
    let felix = FelixNode::start(&node, BackendChoice::Auto).unwrap();
    felix.handle.set_pool_modes(Vec::new()).unwrap();
    let (synced, _) = tokio::sync::watch::channel(false);
    let _feed = felix.spawn(felix::bgpfeed::run(
        socket.clone(),
        felix.handle.clone(),
        synced,
    ));

    let logs = || {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!(
            "route: {}\nours:\n{}\nToR A:\n{}\nToR B:\n{}",
            route_text(&node.ns),
            read("ours.log"),
            read(&format!("{a_ip}.log")),
            read(&format!("{b_ip}.log"))
        )
    };
    let via = |ip: &str| format!("nexthop via {ip} dev eth0");
    wait_until(
        "a multipath route over both ToRs",
        Duration::from_secs(60),
        || {
            let r = route_text(&node.ns);
            r.contains(&via(&a_ip)) && r.contains(&via(&b_ip)) && r.contains("proto 80")
        },
        logs,
    );
    let anycast = ANYCAST.parse().unwrap();
    ping(&node.ns, anycast, &[]).unwrap();

    // Watch every route change from here on.
    let monitor_log = dir.path().join("monitor.log");
    let _monitor = node
        .ns
        .spawn("ip", &["-4", "monitor", "route"], Some(&monitor_log))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Traffic across the failure: ToR A's BIRD dies (its kernel closes
    // the session at once); the ToR still forwards, so nothing may be lost
    // while the route changes.
    let pinger = {
        let ns = node.ns.clone();
        std::thread::spawn(move || {
            ns.command("ping")
                .args(["-c", "60", "-i", "0.05", "-W", "1", ANYCAST])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    bird_a.kill();
    wait_until(
        "ToR A's next hop to leave the route",
        Duration::from_secs(30),
        || {
            let r = route_text(&node.ns);
            r.contains(&format!("via {b_ip} dev eth0")) && !r.contains(&a_ip)
        },
        logs,
    );
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("60 packets transmitted, 60 received"),
        "{text}"
    );

    // The only change to the prefix: the route rewritten in place without
    // A. It never left the table.
    std::thread::sleep(Duration::from_millis(300));
    let changes = std::fs::read_to_string(&monitor_log).unwrap();
    let ours: Vec<&str> = changes
        .lines()
        .filter(|l| l.starts_with(PREFIX) || l.starts_with(&format!("Deleted {PREFIX}")))
        .collect();
    assert_eq!(ours.len(), 1, "{changes}");
    assert!(
        ours[0].starts_with(&format!("{PREFIX} via {b_ip}")),
        "{changes}"
    );

    // And the traffic now goes to B: A is gone from the wire altogether.
    tor_a.ns.ip(&["link", "set", "eth0", "down"]).unwrap();
    for _ in 0..5 {
        ping(&node.ns, anycast, &[]).unwrap();
    }
}
