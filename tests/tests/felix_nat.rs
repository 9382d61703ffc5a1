//! NAT-outgoing through felix's nftables table, seen from the far end: a
//! TCP sink in the router namespace (an address outside every pool)
//! reports the source address it sees.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::felix_cluster::{Cluster, block_of, pool};
use felix::tunnel::BackendChoice;
use ippool_crd::EncapMode;
use lab::{Netns, tcp_transfer};

const T: Duration = Duration::from_secs(30);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn nft(ns: &Netns, args: &[&str]) -> String {
    ns.exec("nft", args).unwrap()
}

#[test]
fn nat_outgoing_masquerades_pod_traffic_leaving_the_pools_only() {
    let mut c = Cluster::new("no", 1, &[0, 0], BackendChoice::Auto);
    c.lab.add_external_address(OUTSIDE).unwrap();
    // The router can route back to the pods (a ToR learns the blocks over
    // BGP), so traffic works with and without NAT and only the source
    // address differs.
    for k in 0..2 {
        c.lab.route_on_router(block_of(k), k).unwrap();
    }
    for r in c.program(&[pool(EncapMode::Never, true)]) {
        assert!(r.is_ok(), "{r:?}");
    }
    let (p0, ip0) = c.felix[0].add_pod(&mut c.lab);
    let (p1, ip1) = c.felix[1].add_pod(&mut c.lab);
    let node0 = c.felix[0].node.ip();
    let router = c.lab.router().clone();

    let r = tcp_transfer(&p0, &router, OUTSIDE, 1 << 20, T).unwrap();
    assert!(r.intact);
    assert_eq!(r.peer.ip(), IpAddr::V4(node0), "masqueraded to the node");

    // Pod to pod stays un-NATed: the pod sees the other pod's address.
    let r = tcp_transfer(&p0, &p1, ip1, 1 << 20, T).unwrap();
    assert_eq!(r.peer.ip(), IpAddr::V4(ip0));

    let table = nft(
        &c.felix[0].node.ns,
        &["list", "table", "inet", "calico-rs-nat"],
    );
    assert!(table.contains("10.65.0.0/16"), "{table}");
    assert!(table.contains("masquerade"), "{table}");

    // natOutgoing off: the router sees the pod itself.
    for r in c.set_pools(&[pool(EncapMode::Never, false)]) {
        assert!(r.is_ok(), "{r:?}");
    }
    let r = tcp_transfer(&p0, &router, OUTSIDE, 1 << 20, T).unwrap();
    assert_eq!(r.peer.ip(), IpAddr::V4(ip0), "not masqueraded");
    assert_eq!(c.felix[0].status().nat.masq_pools, vec![]);
}

#[test]
fn nat_table_is_owned_and_repaired_and_other_tables_are_left_alone() {
    let c = Cluster::new("nr", 1, &[0], BackendChoice::Auto);
    let ns = c.felix[0].node.ns.clone();
    nft(&ns, &["add", "table", "ip", "someone-else"]);
    nft(
        &ns,
        &[
            "add",
            "chain",
            "ip",
            "someone-else",
            "c",
            "{",
            "type",
            "filter",
            "hook",
            "output",
            "priority",
            "0",
            ";",
            "}",
        ],
    );
    nft(&ns, &["add", "rule", "ip", "someone-else", "c", "counter"]);
    // The IPv4-only table an earlier felix wrote: replaced by the inet one.
    nft(&ns, &["add", "table", "ip", "calico-rs-nat"]);
    for r in c.program(&[pool(EncapMode::Never, true)]) {
        assert!(r.is_ok(), "{r:?}");
    }
    let tables = nft(&ns, &["list", "tables"]);
    assert!(!tables.contains("table ip calico-rs-nat"), "{tables}");
    assert!(tables.contains("table inet calico-rs-nat"), "{tables}");
    let h = c.felix[0].handle.clone();
    let writes = c.felix[0].status().nat_writes;

    // Nothing changed: a refresh reads the table and writes nothing.
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    assert_eq!(c.felix[0].status().nat_writes, writes);

    // Someone adds a rule to felix's table: the refresh puts it back.
    nft(
        &ns,
        &[
            "add",
            "rule",
            "inet",
            "calico-rs-nat",
            "postrouting",
            "ip",
            "daddr",
            "1.2.3.4",
            "accept",
        ],
    );
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    let table = nft(&ns, &["list", "table", "inet", "calico-rs-nat"]);
    assert!(!table.contains("1.2.3.4"), "{table}");
    assert_eq!(c.felix[0].status().nat_writes, writes + 1);

    // Someone deletes it: back again.
    nft(&ns, &["delete", "table", "inet", "calico-rs-nat"]);
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    let table = nft(&ns, &["list", "table", "inet", "calico-rs-nat"]);
    assert!(table.contains("masquerade"), "{table}");

    // A pool change rewrites it at once (no refresh needed).
    let mut second = pool(EncapMode::Never, false);
    second.name = "second".into();
    second.cidr = "10.66.0.0/16".parse().unwrap();
    h.set_pool_modes(vec![pool(EncapMode::Never, true), second])
        .unwrap();
    assert!(c.felix[0].flush().is_ok());
    let table = nft(&ns, &["list", "table", "inet", "calico-rs-nat"]);
    // (Adjacent pools are merged into one range by `auto-merge`.)
    assert!(
        table.contains("10.66.0.0/16") || table.contains("10.65.0.0-10.66.255.255"),
        "{table}"
    );

    // The other table was never touched.
    let other = nft(&ns, &["list", "table", "ip", "someone-else"]);
    assert!(other.contains("counter"), "{other}");
}

/// The source address a datagram from `pod` to `[dst]:port` arrives with
/// at the router.
fn udp6_source(pod: &Netns, router: &Netns, dst: std::net::Ipv6Addr) -> std::net::IpAddr {
    let sink = router
        .run(move || std::net::UdpSocket::bind((dst, 5353)))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(T)).unwrap();
    pod.run(move || {
        let s = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        // A few, in case the first meets neighbour discovery.
        for _ in 0..3 {
            s.send_to(b"who am i", (dst, 5353)).unwrap();
        }
    })
    .unwrap();
    let mut buf = [0u8; 64];
    sink.recv_from(&mut buf).unwrap().1.ip()
}

#[test]
fn ipv6_nat_outgoing_masquerades_to_the_nodes_ipv6_address() {
    let mut c = Cluster::new("n6", 1, &[0], BackendChoice::Auto);
    let node6 = c.add_ipv6_underlay();
    let outside6: std::net::Ipv6Addr = "fd00:99::1".parse().unwrap();
    let router = c.lab.router().clone();
    router
        .ip(&["addr", "add", &format!("{outside6}/128"), "dev", "lo"])
        .unwrap();
    let mut v6 = common::felix_cluster::vxlan6_pool(EncapMode::Never);
    v6.nat_outgoing = true;
    for r in c.program_vxlan_dual(&[pool(EncapMode::Never, true), v6.clone()]) {
        assert!(r.is_ok(), "{r:?}");
    }
    let (p0, _, ip6) = c.felix[0].add_pod_dual(&mut c.lab);
    assert_eq!(
        udp6_source(&p0, &router, outside6),
        IpAddr::V6(node6[0].ip()),
        "masqueraded to the node's IPv6 address"
    );
    let table = nft(
        &c.felix[0].node.ns,
        &["list", "table", "inet", "calico-rs-nat"],
    );
    assert!(table.contains("fd00:65::/48"), "{table}");
    assert!(table.contains("ip6 saddr @masq-pools6"), "{table}");

    // natOutgoing off on the IPv6 pool: the router sees the pod (it has a
    // route back to the pod's block, as a ToR would learn).
    router
        .ip(&[
            "-6",
            "route",
            "add",
            &common::felix_cluster::block6_of(0).to_string(),
            "via",
            &node6[0].ip().to_string(),
        ])
        .unwrap();
    v6.nat_outgoing = false;
    for r in c.set_pools(&[pool(EncapMode::Never, true), v6]) {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(udp6_source(&p0, &router, outside6), IpAddr::V6(ip6));
}
