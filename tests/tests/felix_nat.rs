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
        &["list", "table", "ip", "calico-rs-nat"],
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
    for r in c.program(&[pool(EncapMode::Never, true)]) {
        assert!(r.is_ok(), "{r:?}");
    }
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
            "ip",
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
    let table = nft(&ns, &["list", "table", "ip", "calico-rs-nat"]);
    assert!(!table.contains("1.2.3.4"), "{table}");
    assert_eq!(c.felix[0].status().nat_writes, writes + 1);

    // Someone deletes it: back again.
    nft(&ns, &["delete", "table", "ip", "calico-rs-nat"]);
    h.resync().unwrap();
    assert!(c.felix[0].flush().is_ok());
    let table = nft(&ns, &["list", "table", "ip", "calico-rs-nat"]);
    assert!(table.contains("masquerade"), "{table}");

    // A pool change rewrites it at once (no refresh needed).
    let mut second = pool(EncapMode::Never, false);
    second.name = "second".into();
    second.cidr = "10.66.0.0/16".parse().unwrap();
    h.set_pool_modes(vec![pool(EncapMode::Never, true), second])
        .unwrap();
    assert!(c.felix[0].flush().is_ok());
    let table = nft(&ns, &["list", "table", "ip", "calico-rs-nat"]);
    // (Adjacent pools are merged into one range by `auto-merge`.)
    assert!(
        table.contains("10.66.0.0/16") || table.contains("10.65.0.0-10.66.255.255"),
        "{table}"
    );

    // The other table was never touched.
    let other = nft(&ns, &["list", "table", "ip", "someone-else"]);
    assert!(other.contains("counter"), "{other}");
}
