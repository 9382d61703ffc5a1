//! The route reconciler against a real kernel, each test in its own lab
//! network namespace.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{
    NEXT_HOP, NEXT_HOP6, has_route, node, routes, routes6, run_in, wait_for, wait_for_async,
};
use felix::routes::{Reconciler, ReconcilerConfig, Route, RouteUpdate};
use ipnetwork::IpNetwork;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// No timer resync during the test unless it sets one.
fn quiet() -> ReconcilerConfig {
    ReconcilerConfig {
        resync_interval: Duration::from_secs(3600),
        ..ReconcilerConfig::default()
    }
}

#[test]
fn routes_are_written_with_protocol_80_for_both_families() {
    let ns = node("fxproto");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        h.update(vec![
            RouteUpdate::Set(Route::blackhole(net("10.64.0.0/26"))),
            RouteUpdate::Set(Route::via(net("10.64.1.0/26"), ip(NEXT_HOP))),
            RouteUpdate::Set(Route::blackhole(net("fd00:64::/122"))),
            RouteUpdate::Set(Route::via(net("fd00:64::40/122"), ip(NEXT_HOP6))),
        ])
        .unwrap();
        let report = h.flush().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.ops, 4);
        let v4 = routes(&n, &["proto", "80"]);
        assert!(v4.contains("blackhole 10.64.0.0/26"), "{v4}");
        assert!(
            v4.contains("10.64.1.0/26 via 192.168.255.2 dev up0"),
            "{v4}"
        );
        let v6 = routes6(&n, &["proto", "80"]);
        assert!(v6.contains("blackhole fd00:64::/122"), "{v6}");
        assert!(
            v6.contains("fd00:64::40/122 via fd00:ff::2 dev up0"),
            "{v6}"
        );
        // A no-change resync finds nothing to do.
        let again = h.resync().await.unwrap();
        assert_eq!(again.ops, 0, "{again:?}");
    });
}

#[test]
fn one_route_change_among_many_is_one_operation() {
    let ns = node("fxincr");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        let updates = (0..1000u32)
            .map(|i| {
                let dst = IpNetwork::new(std::net::Ipv4Addr::from(0x0a40_0000 + i * 64).into(), 26)
                    .unwrap();
                RouteUpdate::Set(Route::via(dst, ip(NEXT_HOP)))
            })
            .collect();
        h.update(updates).unwrap();
        assert_eq!(h.flush().await.unwrap().ops, 1000);
        h.set(Route::blackhole(net("10.64.0.64/26"))).unwrap();
        let report = h.flush().await.unwrap();
        assert_eq!(report.ops, 1);
        assert!(routes(&n, &["exact", "10.64.0.64/26"]).contains("blackhole"));
        h.remove(net("10.64.0.128/26")).unwrap();
        assert_eq!(h.flush().await.unwrap().ops, 1);
        assert!(!has_route(&n, "10.64.0.128/26"));
        assert_eq!(routes(&n, &["proto", "80"]).lines().count(), 999);
    });
}

#[test]
fn foreign_routes_survive_every_resync() {
    let ns = node("fxforgn");
    // An operator's routes: another protocol, a static blackhole, and a
    // route through a non-pod interface.
    ns.ip(&["route", "add", "10.200.0.0/24", "via", NEXT_HOP])
        .unwrap();
    ns.ip(&[
        "route",
        "add",
        "blackhole",
        "10.201.0.0/24",
        "proto",
        "static",
    ])
    .unwrap();
    ns.ip(&[
        "route",
        "add",
        "10.202.0.9/32",
        "dev",
        "up0",
        "proto",
        "boot",
    ])
    .unwrap();
    ns.ip(&["-6", "route", "add", "fd00:200::/64", "via", NEXT_HOP6])
        .unwrap();
    let before = routes(&ns, &[]);
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(ReconcilerConfig {
            resync_interval: Duration::from_millis(100),
            ..quiet()
        })
        .unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.64.0.0/26"))).unwrap();
        assert!(h.flush().await.unwrap().is_ok());
        for _ in 0..3 {
            assert!(h.resync().await.unwrap().is_ok());
        }
        // And a few timer resyncs.
        let start = h.status().await.unwrap().full_resyncs;
        assert!(
            wait_for_async(Duration::from_secs(5), async || {
                h.status().await.unwrap().full_resyncs >= start + 3
            })
            .await
        );
    });
    let after = routes(&ns, &[]);
    for line in before.lines() {
        assert!(after.contains(line), "lost {line:?}; now:\n{after}");
    }
    assert!(has_route(&ns, "fd00:200::/64"));
    drop(n);
}

#[test]
fn stale_route_of_a_previous_run_disappears_on_start() {
    let ns = node("fxstale");
    ns.ip(&["route", "add", "blackhole", "10.66.0.0/26", "proto", "80"])
        .unwrap();
    ns.ip(&[
        "route",
        "add",
        "10.66.0.64/26",
        "via",
        NEXT_HOP,
        "proto",
        "80",
    ])
    .unwrap();
    ns.ip(&[
        "-6",
        "route",
        "add",
        "blackhole",
        "fd00:66::/122",
        "proto",
        "80",
    ])
    .unwrap();
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        // One of them is still wanted and must stay.
        h.set(Route::via(net("10.66.0.64/26"), ip(NEXT_HOP)))
            .unwrap();
        let report = h.flush().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert!(!has_route(&n, "10.66.0.0/26"));
        assert!(!has_route(&n, "fd00:66::/122"));
        assert!(has_route(&n, "10.66.0.64/26"));
    });
}

#[test]
fn stale_routes_are_kept_until_in_sync_when_configured() {
    let ns = node("fxhold");
    ns.ip(&["route", "add", "blackhole", "10.67.0.0/26", "proto", "80"])
        .unwrap();
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(ReconcilerConfig {
            start_in_sync: false,
            ..quiet()
        })
        .unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.67.1.0/26"))).unwrap();
        h.flush().await.unwrap();
        assert!(has_route(&n, "10.67.1.0/26"));
        assert!(has_route(&n, "10.67.0.0/26"), "deleted before in sync");
        h.mark_in_sync().unwrap();
        h.flush().await.unwrap();
        assert!(!has_route(&n, "10.67.0.0/26"));
    });
}

#[test]
fn route_deleted_by_hand_comes_back_on_the_next_timer_resync() {
    let ns = node("fxtimer");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(ReconcilerConfig {
            resync_interval: Duration::from_millis(300),
            event_resync: false,
            ..quiet()
        })
        .unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.68.0.0/26"))).unwrap();
        h.flush().await.unwrap();
        n.ip(&["route", "del", "blackhole", "10.68.0.0/26"])
            .unwrap();
        assert!(!has_route(&n, "10.68.0.0/26"));
        let resyncs = h.status().await.unwrap().full_resyncs;
        assert!(wait_for(Duration::from_secs(5), || has_route(&n, "10.68.0.0/26")).await);
        // It took a timer resync (events are off), and only about one.
        let after = h.status().await.unwrap().full_resyncs;
        assert!(
            after > resyncs && after <= resyncs + 3,
            "{resyncs} -> {after}"
        );
    });
}

#[test]
fn route_deleted_by_hand_comes_back_on_the_event_without_waiting_for_the_timer() {
    let ns = node("fxevent");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.69.0.0/26"))).unwrap();
        h.set(Route::blackhole(net("fd00:69::/122"))).unwrap();
        h.flush().await.unwrap();
        n.ip(&["route", "del", "blackhole", "10.69.0.0/26"])
            .unwrap();
        n.ip(&["-6", "route", "del", "blackhole", "fd00:69::/122"])
            .unwrap();
        let t = Instant::now();
        assert!(wait_for(Duration::from_secs(3), || has_route(&n, "10.69.0.0/26")).await);
        assert!(wait_for(Duration::from_secs(3), || has_route(&n, "fd00:69::/122")).await);
        assert!(t.elapsed() < Duration::from_secs(3));
        // A route replaced by hand is put back too.
        n.ip(&[
            "route",
            "replace",
            "10.69.0.0/26",
            "via",
            NEXT_HOP,
            "proto",
            "80",
        ])
        .unwrap();
        assert!(
            wait_for(Duration::from_secs(3), || {
                routes(&n, &["exact", "10.69.0.0/26"]).contains("blackhole")
            })
            .await
        );
    });
}

#[test]
fn unknown_route_on_new_pod_interface_survives_the_grace_period_only() {
    let ns = node("fxgrace");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let grace = Duration::from_millis(300);
        let r = Reconciler::start(ReconcilerConfig {
            grace_period: grace,
            ..quiet()
        })
        .unwrap();
        let h = r.handle();
        h.flush().await.unwrap();
        // What a CNI plugin does before felix hears of the pod.
        let created = Instant::now();
        n.ip(&[
            "link",
            "add",
            "cali0000000001",
            "type",
            "veth",
            "peer",
            "name",
            "tmp1",
        ])
        .unwrap();
        n.ip(&["link", "set", "cali0000000001", "up"]).unwrap();
        n.ip(&["link", "set", "tmp1", "up"]).unwrap();
        n.ip(&["route", "add", "10.70.0.7/32", "dev", "cali0000000001"])
            .unwrap();
        // A route on a non-pod interface is never felix's.
        n.ip(&["route", "add", "10.70.0.8/32", "dev", "tmp1"])
            .unwrap();
        // An explicit resync inside the grace period keeps it.
        h.resync().await.unwrap();
        if created.elapsed() < grace {
            assert!(
                has_route(&n, "10.70.0.7/32"),
                "removed inside the grace period"
            );
        }
        assert!(wait_for(Duration::from_secs(5), || !has_route(&n, "10.70.0.7/32")).await);
        assert!(
            created.elapsed() >= grace,
            "removed after {:?}",
            created.elapsed()
        );
        assert!(has_route(&n, "10.70.0.8/32"));
    });
}

#[test]
fn failed_write_is_retried_until_it_succeeds() {
    let ns = node("fxretry");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        // The next hop is not on any connected subnet yet.
        h.set(Route::via(net("10.71.0.0/26"), ip("172.31.0.2")))
            .unwrap();
        let report = h.flush().await.unwrap();
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert_eq!(report.failures[0].errno, Some(libc::ENETUNREACH));
        n.ip(&["addr", "add", "172.31.0.1/24", "dev", "up1"])
            .unwrap();
        assert!(wait_for(Duration::from_secs(5), || has_route(&n, "10.71.0.0/26")).await);
    });
}

#[test]
fn foreign_route_in_the_wanted_slot_is_left_alone_and_taken_when_freed() {
    let ns = node("fxconfl");
    ns.ip(&[
        "route",
        "add",
        "10.72.0.0/26",
        "via",
        NEXT_HOP,
        "proto",
        "static",
    ])
    .unwrap();
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.72.0.0/26"))).unwrap();
        let report = h.flush().await.unwrap();
        assert_eq!(report.conflicts, vec![net("10.72.0.0/26")], "{report:?}");
        assert!(routes(&n, &["exact", "10.72.0.0/26"]).contains("proto static"));
        n.ip(&["route", "del", "10.72.0.0/26", "proto", "static"])
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(3), || {
                routes(&n, &["exact", "10.72.0.0/26"]).contains("blackhole")
            })
            .await
        );
    });
}

#[test]
fn invalid_routes_are_refused_at_the_handle() {
    let ns = node("fxinval");
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        let err = h.set(Route::blackhole(net("10.73.0.5/26"))).unwrap_err();
        assert!(err.to_string().contains("10.73.0.0/26"), "{err}");
        assert_eq!(h.status().await.unwrap().desired, 0);
    });
}

#[test]
fn dropping_the_reconciler_stops_it_and_keeps_routes() {
    let ns = node("fxdrop");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        h.set(Route::blackhole(net("10.74.0.0/26"))).unwrap();
        h.flush().await.unwrap();
        drop(r);
        assert!(wait_for_async(Duration::from_secs(2), async || h.status().await.is_err()).await);
        assert!(has_route(&n, "10.74.0.0/26"));
    });
}

#[test]
fn one_failure_in_a_batch_is_reported_for_its_route_only() {
    let ns = node("fxbatch");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        let mut updates: Vec<RouteUpdate> = (0..50u32)
            .map(|i| {
                let dst = IpNetwork::new(std::net::Ipv4Addr::from(0x0a4b_0000 + i * 64).into(), 26)
                    .unwrap();
                RouteUpdate::Set(Route::via(dst, ip(NEXT_HOP)))
            })
            .collect();
        // Unreachable next hop: the kernel refuses this one.
        updates.insert(
            25,
            RouteUpdate::Set(Route::via(net("10.76.0.0/26"), ip("172.30.0.1"))),
        );
        h.update(updates).unwrap();
        let report = h.flush().await.unwrap();
        assert_eq!(report.ops, 51);
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert_eq!(report.failures[0].dst, net("10.76.0.0/26"));
        assert_eq!(report.failures[0].errno, Some(libc::ENETUNREACH));
        assert_eq!(routes(&n, &["proto", "80"]).lines().count(), 50);
        assert_eq!(h.status().await.unwrap().programmed, 50);
    });
}

/// A pod interface and its index, as the CNI ADD leaves it: the peer in
/// the pod's own namespace, which the caller keeps.
fn pod_link(n: &lab::Netns, name: &str) -> (u32, lab::Netns) {
    let pod = lab::Netns::create("fxpod").unwrap();
    n.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])
    .unwrap();
    n.ip(&["link", "set", name, "up"]).unwrap();
    let line = n.ip(&["-o", "link", "show", name]).unwrap();
    (line.split(':').next().unwrap().trim().parse().unwrap(), pod)
}

#[test]
fn removing_one_pod_interface_forgets_only_its_routes_without_a_full_resync() {
    let ns = node("fxpoddel");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let (a, _pod_a_ns) = pod_link(&n, "cali00000000a1");
        let (b, _pod_b_ns) = pod_link(&n, "cali00000000b1");
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        let pod_a = [
            Route::dev(net("10.71.0.1/32"), a),
            Route::dev(net("fd00:71::1/128"), a),
        ];
        let pod_b = [
            Route::dev(net("10.71.0.2/32"), b),
            Route::dev(net("fd00:71::2/128"), b),
        ];
        let block = Route::blackhole(net("10.71.0.0/26"));
        for r in pod_a.iter().chain(&pod_b).chain([&block]) {
            h.set(r.clone()).unwrap();
        }
        assert!(h.flush().await.unwrap().is_ok());
        let before = h.status().await.unwrap();
        assert_eq!(before.programmed, 5);

        // The pod's namespace went away under felix (its routes still
        // desired): the kernel takes both routes through the link.
        n.ip(&["link", "del", "cali00000000a1"]).unwrap();
        assert!(
            wait_for_async(Duration::from_secs(3), async || {
                h.status().await.unwrap().interface_resyncs > before.interface_resyncs
            })
            .await
        );
        // Past the event debounce: a full resync would have run by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = h.status().await.unwrap();
        assert_eq!(after.full_resyncs, before.full_resyncs, "no dump-and-diff");
        assert_eq!(after.programmed, 3, "felix forgot pod a's two routes");
        for dst in ["10.71.0.2/32", "fd00:71::2/128", "10.71.0.0/26"] {
            assert!(has_route(&n, dst), "{dst} lost");
        }

        // CNI DEL withdraws pod a's routes: nothing to delete, and a full
        // dump afterwards finds the model equal to the kernel.
        h.update(pod_a.iter().map(|r| RouteUpdate::Remove(r.dst)).collect())
            .unwrap();
        let report = h.flush().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        let report = h.resync().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.ops, 0, "the dump found something to fix");
        let status = h.status().await.unwrap();
        assert_eq!((status.desired, status.programmed), (3, 3));
        assert!(!has_route(&n, "10.71.0.1/32"));
        assert!(!has_route(&n, "fd00:71::1/128"));
    });
}

/// `ip route show` of one prefix, `-6` for IPv6.
fn route_of(n: &lab::Netns, dst: &str) -> String {
    let fam = if dst.contains(':') { "-6" } else { "-4" };
    n.ip(&[fam, "route", "show", dst]).unwrap()
}

#[test]
fn ecmp_routes_are_multipath_in_the_kernel_and_read_back_as_felixs_own() {
    use felix::routes::NextHops;
    let ns = node("fxecmp");
    let n = ns.clone();
    run_in(&ns, move || async move {
        let r = Reconciler::start(quiet()).unwrap();
        let h = r.handle();
        let hops = |s: &str| s.parse::<NextHops>().unwrap();
        let (v4, v6) = (net("198.51.100.0/24"), net("2001:db8:100::/48"));
        h.update(vec![
            RouteUpdate::Set(Route::via_all(v4, hops("192.168.255.3,192.168.255.2"))),
            RouteUpdate::Set(Route::via_all(v6, hops("fd00:ff::2,fd00:ff::3"))),
        ])
        .unwrap();
        let report = h.flush().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        for (dst, a, b) in [
            (v4, "192.168.255.2", "192.168.255.3"),
            (v6, "fd00:ff::2", "fd00:ff::3"),
        ] {
            let shown = route_of(&n, &dst.to_string());
            assert!(
                shown.contains(&format!("nexthop via {a} dev up0")),
                "{shown}"
            );
            assert!(
                shown.contains(&format!("nexthop via {b} dev up0")),
                "{shown}"
            );
            assert!(shown.contains("proto 80"), "{shown}");
        }
        // Read back from a dump, both are felix's and as wanted: nothing
        // to do.
        let again = h.resync().await.unwrap();
        assert!(again.is_ok(), "{again:?}");
        assert_eq!(again.ops, 0, "{again:?}");

        // One next hop goes (a ToR died): the route keeps the other.
        h.set(Route::via_all(v4, hops("192.168.255.3"))).unwrap();
        h.flush().await.unwrap();
        let shown = route_of(&n, "198.51.100.0/24");
        assert!(shown.contains("via 192.168.255.3 dev up0"), "{shown}");
        assert!(!shown.contains("192.168.255.2"), "{shown}");
        assert!(!shown.contains("nexthop"), "{shown}");
        // And comes back.
        h.set(Route::via_all(v4, hops("192.168.255.2,192.168.255.3")))
            .unwrap();
        h.flush().await.unwrap();
        let shown = route_of(&n, "198.51.100.0/24");
        assert!(shown.contains("nexthop via 192.168.255.2"), "{shown}");

        // Someone rewrites the set by hand: the next resync sees a route
        // that is not the wanted one and puts the wanted one back.
        n.ip(&[
            "route",
            "replace",
            "198.51.100.0/24",
            "proto",
            "80",
            "nexthop",
            "via",
            "192.168.255.2",
            "nexthop",
            "via",
            "192.168.255.4",
        ])
        .unwrap();
        let fixed = h.resync().await.unwrap();
        assert_eq!(fixed.ops, 1, "{fixed:?}");
        let shown = route_of(&n, "198.51.100.0/24");
        assert!(shown.contains("nexthop via 192.168.255.3"), "{shown}");
        assert!(!shown.contains("192.168.255.4"), "{shown}");

        h.update(vec![RouteUpdate::Remove(v4), RouteUpdate::Remove(v6)])
            .unwrap();
        h.flush().await.unwrap();
        assert_eq!(route_of(&n, "198.51.100.0/24").trim(), "");
        assert_eq!(route_of(&n, "2001:db8:100::/48").trim(), "");
    });
}
