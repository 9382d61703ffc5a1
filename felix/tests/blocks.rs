//! Block routes through the dataplane (local blocks as blackholes, remote
//! blocks via their node), and the `felix run` binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{NEXT_HOP, NEXT_HOP6, has_route, node, routes, routes6, run_in, wait_for};
use felix::dataplane::{Dataplane, DataplaneConfig};
use ipnetwork::IpNetwork;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// felix's dataplane in the calling thread's namespace, with no MTU file.
async fn start_dataplane() -> Dataplane {
    Dataplane::start(DataplaneConfig {
        mtu_file: None,
        ..DataplaneConfig::default()
    })
    .await
    .unwrap()
}

#[test]
fn local_blocks_are_blackholes_and_remote_blocks_go_via_their_node() {
    let ns = node("blkroute");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let dp = start_dataplane().await;
        let h = dp.handle();
        let local = vec![net("10.65.0.0/26"), net("fd00:65::/122")];
        h.set_local_blocks(local.clone()).unwrap();
        h.set_remote_blocks(vec![
            (net("10.65.1.0/26"), ip(NEXT_HOP)),
            (net("fd00:65::40/122"), ip(NEXT_HOP6)),
        ])
        .unwrap();
        assert!(h.flush().await.unwrap().routes.is_ok());
        let v4 = routes(&n, &["proto", "80"]);
        assert!(v4.contains("blackhole 10.65.0.0/26"), "{v4}");
        assert!(
            v4.contains("10.65.1.0/26 via 192.168.255.2 dev up0"),
            "{v4}"
        );
        let v6 = routes6(&n, &["proto", "80"]);
        assert!(v6.contains("blackhole fd00:65::/122"), "{v6}");
        assert!(
            v6.contains("fd00:65::40/122 via fd00:ff::2 dev up0"),
            "{v6}"
        );

        // The remote block's affinity moves to this node, then away again.
        let mut with_moved = local.clone();
        with_moved.push(net("10.65.1.0/26"));
        h.set_local_blocks(with_moved).unwrap();
        assert_eq!(h.flush().await.unwrap().routes.ops, 1);
        assert!(routes(&n, &["exact", "10.65.1.0/26"]).contains("blackhole"));
        h.set_local_blocks(local).unwrap();
        h.flush().await.unwrap();
        assert!(routes(&n, &["exact", "10.65.1.0/26"]).contains("via 192.168.255.2"));

        // A fresh snapshot from bird without the block withdraws it.
        h.set_remote_blocks(Vec::<(IpNetwork, std::net::IpAddr)>::new())
            .unwrap();
        h.flush().await.unwrap();
        assert!(!has_route(&n, "10.65.1.0/26"));
        assert!(!has_route(&n, "fd00:65::40/122"));
        assert!(has_route(&n, "10.65.0.0/26"));
        dp.stop().await;
    });
}

#[test]
fn felix_run_cleans_stale_routes_and_stops_on_sigterm() {
    let ns = node("blkbin");
    ns.ip(&["route", "add", "blackhole", "10.66.0.0/26", "proto", "80"])
        .unwrap();
    ns.ip(&[
        "route",
        "add",
        "blackhole",
        "10.66.0.64/26",
        "proto",
        "static",
    ])
    .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut felix = ns
        .spawn(
            env!("CARGO_BIN_EXE_felix"),
            &[
                "run",
                "--resync-interval",
                "1",
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
            Some(log.path()),
        )
        .unwrap();
    let n = ns.clone();
    run_in(&ns, move || async move {
        assert!(wait_for(Duration::from_secs(10), || !has_route(&n, "10.66.0.0/26")).await);
        assert!(has_route(&n, "10.66.0.64/26"));
    });
    felix.signal(libc::SIGTERM);
    let mut status = None;
    for _ in 0..100 {
        status = felix.try_wait();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{out}");
    assert!(out.contains("route reconciler running"), "{out}");
    // The backend is chosen and logged at start (userspace where the
    // kernel has no ipip), and the MTU file is in the state directory.
    assert!(out.contains("IPIP backend chosen"), "{out}");
    assert!(out.contains("ipip_backend="), "{out}");
    assert_eq!(
        std::fs::read_to_string(state.path().join("mtu"))
            .unwrap()
            .trim(),
        "1500"
    );
}

#[test]
fn a_learned_route_for_a_local_pods_address_neither_replaces_nor_deletes_its_route() {
    // Issue 19 item 6, through the real dataplane and kernel: a BGP route
    // for a local pod's /32 arrives, then is withdrawn.
    let ns = node("blkpod");
    let pod = std::sync::Arc::new(lab::Netns::create("blkpodp").unwrap());
    let (n, p) = (ns.clone(), pod.clone());
    run_in(&ns, move || async move {
        let dp = start_dataplane().await;
        let h = dp.handle();
        h.set_local_blocks(vec![net("10.65.0.0/26")]).unwrap();
        assert!(h.flush().await.unwrap().routes.is_ok());
        let w = dp
            .workloads()
            .add(&felix::workload::WorkloadSpec {
                namespace: "default".into(),
                pod: "pod-a".into(),
                netns: p.path(),
                ips: vec![ip("10.65.0.2")],
            })
            .await
            .unwrap();
        let pod_route = format!("10.65.0.2 dev {} proto 80 scope link", w.host_iface);
        assert!(routes(&n, &["exact", "10.65.0.2/32"]).contains(&pod_route));

        h.update_remote_block(net("10.65.0.2/32"), Some(ip(NEXT_HOP)))
            .unwrap();
        h.flush().await.unwrap();
        let r = routes(&n, &["exact", "10.65.0.2/32"]);
        assert!(r.contains(&pod_route), "replaced: {r}");
        assert!(!r.contains("via"), "{r}");

        h.update_remote_block(net("10.65.0.2/32"), None::<std::net::IpAddr>)
            .unwrap();
        h.flush().await.unwrap();
        let r = routes(&n, &["exact", "10.65.0.2/32"]);
        assert!(r.contains(&pod_route), "deleted: {r}");
        dp.stop().await;
    });
}

/// BGPPeer `reachableBy`: a host route to the peer via its gateway, in
/// place of the route to the peer that BGP learned (often from the peer
/// itself, which would make the session ride on its own route); gone with
/// the setting, when the learned route comes back.
#[test]
fn a_reachable_by_peer_route_wins_over_the_learned_one_and_leaves_with_it() {
    let ns = node("blkreach");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let dp = start_dataplane().await;
        let h = dp.handle();
        h.set_remote_blocks(vec![
            (net("10.9.0.254/32"), ip(NEXT_HOP)),
            (net("fd00:9::254/128"), ip(NEXT_HOP6)),
        ])
        .unwrap();
        h.set_peer_routes(vec![
            (ip("10.9.0.254"), ip("192.168.255.3")),
            (ip("fd00:9::254"), ip("fd00:ff::3")),
        ])
        .unwrap();
        assert!(h.flush().await.unwrap().routes.is_ok());
        let v4 = routes(&n, &["exact", "10.9.0.254/32"]);
        assert!(v4.contains("via 192.168.255.3 dev up0"), "{v4}");
        let v6 = routes6(&n, &["exact", "fd00:9::254/128"]);
        assert!(v6.contains("via fd00:ff::3 dev up0"), "{v6}");

        h.set_peer_routes(Vec::new()).unwrap();
        h.flush().await.unwrap();
        let v4 = routes(&n, &["exact", "10.9.0.254/32"]);
        assert!(v4.contains("via 192.168.255.2 dev up0"), "{v4}");
        dp.stop().await;
    });
}

/// A mesh peer in another subnet, with no tunnel to reach it through (an
/// IPv6 pool, an IPv4 pool with `ipipMode: Never`): its blocks go via the
/// gateway of the node's route to it (BIRD's `gateway recursive`), not
/// `via` the peer itself, which the kernel refuses ("Nexthop has invalid
/// gateway"). And when the route to the peer changes, or the peer becomes
/// a neighbour, the block routes follow.
#[test]
fn a_next_hop_off_every_connected_subnet_goes_via_the_gateway_of_its_route() {
    let ns = node("blkrecur");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let dp = start_dataplane().await;
        let h = dp.handle();
        h.set_remote_blocks(vec![
            (net("10.65.2.0/26"), ip("172.30.1.1")),
            (net("fd00:65::80/122"), ip("fd00:30:1::1")),
            (net("10.65.1.0/26"), ip(NEXT_HOP)),
        ])
        .unwrap();
        let report = h.flush().await.unwrap();
        assert!(report.routes.is_ok(), "{report:?}");
        let v4 = routes(&n, &["proto", "80"]);
        assert!(
            v4.contains("10.65.2.0/26 via 192.168.255.2 dev up0"),
            "{v4}"
        );
        assert!(
            v4.contains("10.65.1.0/26 via 192.168.255.2 dev up0"),
            "{v4}"
        );
        let v6 = routes6(&n, &["proto", "80"]);
        assert!(
            v6.contains("fd00:65::80/122 via fd00:ff::2 dev up0"),
            "{v6}"
        );

        // The underlay routes the peers' subnets through another router:
        // the block routes move to it, without being told.
        n.ip(&["route", "add", "172.30.1.0/24", "via", "192.168.255.3"])
            .unwrap();
        n.ip(&["-6", "route", "add", "fd00:30:1::/64", "via", "fd00:ff::3"])
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || {
                routes(&n, &["exact", "10.65.2.0/26"]).contains("via 192.168.255.3")
                    && routes6(&n, &["exact", "fd00:65::80/122"]).contains("via fd00:ff::3")
            })
            .await,
            "{}\n{}",
            routes(&n, &["proto", "80"]),
            routes6(&n, &["proto", "80"])
        );
        // The block of a neighbour stays via the neighbour.
        assert!(routes(&n, &["exact", "10.65.1.0/26"]).contains("via 192.168.255.2"));

        // The peer's subnet becomes connected: the route goes to the peer.
        n.ip(&["route", "del", "172.30.1.0/24"]).unwrap();
        n.ip(&["addr", "add", "172.30.1.254/24", "dev", "up0"])
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || {
                routes(&n, &["exact", "10.65.2.0/26"]).contains("via 172.30.1.1")
            })
            .await,
            "{}",
            routes(&n, &["proto", "80"])
        );
        let report = h.flush().await.unwrap();
        assert!(report.routes.is_ok(), "{report:?}");
        dp.stop().await;
    });
}
