//! The routed underlay against the real kernel.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use lab::{Capture, Topology, TopologySpec};

fn ping(ns: &lab::Netns, dst: &str) -> bool {
    ns.exec("ping", &["-c", "1", "-W", "2", dst]).is_ok()
}

#[test]
fn nodes_on_different_subnets_reach_each_other_through_the_router() {
    let lab = Topology::build(&TopologySpec {
        tag: "tp".into(),
        subnets: 2,
        nodes: 3,
    })
    .unwrap();
    let (n0, n1, n2) = (
        lab.node(0).unwrap(),
        lab.node(1).unwrap(),
        lab.node(2).unwrap(),
    );
    assert_eq!(n0.addr.to_string(), "172.30.0.1/24");
    assert_eq!(n1.addr.to_string(), "172.30.1.1/24");
    assert_eq!(n2.addr.to_string(), "172.30.0.2/24");
    assert_eq!((n0.subnet, n1.subnet, n2.subnet), (0, 1, 0));
    assert_eq!(n1.name, "node-1");

    let cap = Capture::start(&n1.ns, &n1.iface).unwrap();
    assert!(ping(&n0.ns, &n1.ip().to_string()));
    assert!(ping(&n0.ns, &n2.ip().to_string()));
    let seen = cap.stop().unwrap();
    // Routed: node-1 sees node-0's own address, not the router's.
    assert!(
        seen.packets
            .iter()
            .any(|p| !p.outgoing && p.src == n0.ip() && p.protocol == 1),
        "{seen:?}"
    );
    assert!(seen.packets.iter().any(|p| p.outgoing && p.dst == n0.ip()));
    // Same-subnet traffic never crosses node-1's leg.
    assert!(!seen.packets.iter().any(|p| p.dst == n2.ip()));
}

#[test]
fn external_addresses_and_router_routes() {
    let mut lab = Topology::new("tq").unwrap();
    lab.add_subnet().unwrap();
    let node = lab.add_node(0).unwrap().clone();
    lab.add_external_address("198.18.0.1".parse().unwrap())
        .unwrap();
    assert!(ping(&node.ns, "198.18.0.1"));

    // A "pod" address behind the node, reachable from the router once the
    // router has a route to it.
    node.ns
        .ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"])
        .unwrap();
    lab.route_on_router("10.99.0.0/26".parse().unwrap(), 0)
        .unwrap();
    assert!(ping(lab.router(), "10.99.0.1"));
    let pod = lab.add_pod().unwrap();
    assert!(pod.ip(&["link", "show", "lo"]).unwrap().contains("UP"));
}

#[test]
fn dropping_the_topology_removes_every_namespace() {
    let mut lab = Topology::build(&TopologySpec {
        tag: "tr".into(),
        subnets: 1,
        nodes: 2,
    })
    .unwrap();
    let pod = lab.add_pod().unwrap();
    let mut names: Vec<String> = lab
        .nodes()
        .iter()
        .map(|n| n.ns.name().to_string())
        .collect();
    names.push(lab.router().name().to_string());
    names.push(pod.name().to_string());
    drop(pod);
    drop(lab);
    for n in names {
        assert!(
            !Path::new("/run/netns").join(&n).exists(),
            "{n} left behind"
        );
    }
}

#[test]
fn bad_tags_and_missing_subnets_are_errors() {
    assert!(Topology::new("toolong").is_err());
    let mut lab = Topology::new("ts").unwrap();
    assert!(lab.add_node(0).is_err());
}

#[test]
fn underlay_mtu_and_offloads_are_set_on_every_leg() {
    let lab = Topology::build(&TopologySpec {
        tag: "tm".into(),
        subnets: 2,
        nodes: 2,
    })
    .unwrap();
    let (n0, n1) = (lab.node(0).unwrap(), lab.node(1).unwrap());
    lab.set_underlay_mtu(9000).unwrap();
    lab.set_subnet_mtu(1, 1400).unwrap();
    assert!(
        n0.ns
            .ip(&["link", "show", "eth0"])
            .unwrap()
            .contains("mtu 9000")
    );
    assert!(
        n1.ns
            .ip(&["link", "show", "eth0"])
            .unwrap()
            .contains("mtu 1400")
    );
    let br1 = lab.router().ip(&["link", "show", "br1"]).unwrap();
    assert!(br1.contains("mtu 1400"), "{br1}");
    // A 9000-byte DF ping fits subnet 0's links but not subnet 1's: the
    // router says so instead of fragmenting.
    let out = n0
        .ns
        .command("ping")
        .args(["-c", "1", "-W", "2", "-M", "do", "-s", "8000"])
        .arg(n1.ip().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("mtu = 1400"), "{text}");

    lab.set_wire_offloads(true).unwrap();
    let k = n0.ns.exec("ethtool", &["-k", "eth0"]).unwrap();
    assert!(k.contains("tcp-segmentation-offload: off"), "{k}");
    assert!(k.contains("generic-receive-offload: on"), "{k}");
    let k = lab
        .router()
        .exec("ethtool", &["-k", &n1.router_leg])
        .unwrap();
    assert!(k.contains("generic-receive-offload: on"), "{k}");
    assert!(ping(&n0.ns, &n1.ip().to_string()));
}

#[test]
fn tcp_transfer_is_verified_and_reports_the_peer() {
    let lab = Topology::build(&TopologySpec {
        tag: "tt".into(),
        subnets: 2,
        nodes: 2,
    })
    .unwrap();
    let (n0, n1) = (lab.node(0).unwrap(), lab.node(1).unwrap());
    let r = lab::tcp_transfer(
        &n0.ns,
        &n1.ns,
        n1.ip(),
        3 << 20,
        std::time::Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(r.bytes, 3 << 20);
    assert!(r.intact);
    assert_eq!(r.peer.ip(), std::net::IpAddr::V4(n0.ip()));
    // Nobody connects: the sink gives up within its deadline.
    let sink = lab::TcpSink::start(&n1.ns, std::time::Duration::from_millis(200)).unwrap();
    assert!(sink.wait().is_err());
}
