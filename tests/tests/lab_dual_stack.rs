//! `calico-lab --ipv6 dual`, driven as a user drives it: three nodes on
//! two subnets with BIRD 2 as the ToR, every node with an IPv6 underlay
//! address beside its IPv4 one (calico-node's `IP6` autodetected on
//! eth0, `CALICO_IPV6POOL_CIDR`), every pod with an IPv4 and an IPv6
//! address from the real CNI plugin. Asserted: the IPv6 mesh and ToR
//! sessions are Established, every pod's IPv6 address is in the IPv6
//! pool, every pod reaches every pod in both families, IPv6
//! NAT-outgoing masquerades to the node, and a pod's IPv6 route removed
//! behind felix's back comes back. And a
//! dual-stack lab over two subnets without a ToR is refused up front
//! (IPv6 has no IP-in-IP, so nothing would route between the subnets).
//!
//! The tests share the machine's two cores with a dozen daemons each, so
//! they run one at a time.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::cluster::check;
use lab::cluster::state::{self, DEFAULT_POOL6, lab_dir};
use tests::agent::{
    LabDown, build_node_binaries, lab_name, lab_namespaces as namespaces, run_lab as run,
};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn dual_stack_lab_has_ipv6_sessions_pool_addresses_and_both_ping_matrices() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_node_binaries(true).unwrap();
    let name = lab_name("dual");
    let _down = LabDown(name.clone());
    let started = Instant::now();
    let out = run(
        &name,
        &[
            "up",
            "--nodes",
            "3",
            "--subnets",
            "2",
            "--pods-per-node",
            "2",
            "--tor",
            "--ipv6",
            "dual",
        ],
    );
    assert!(out.status.success(), "up failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("IPv6 pool fd00:65::/48"), "{text}");
    println!("dual-stack lab up and converged in {:?}", started.elapsed());

    let st = state::load(&name).unwrap().expect("a lab that is up");
    assert!(st.complete);
    // Every node has its IPv6 underlay address, and an Established IPv6
    // session with both other nodes and with the ToR.
    for n in &st.nodes {
        let ip6 = n.ip6.expect("a dual-stack node has an IPv6 address");
        assert!(ip6.to_string().starts_with("fd00:30:"), "{ip6}");
        let table = check::peer_table(&st, n);
        let up6 = check::peers_up6(&table);
        for other in st.nodes.iter().filter(|o| o.name != n.name) {
            assert!(
                up6.contains(&other.ip6.unwrap()),
                "{}: no IPv6 session with {}:\n{table}",
                n.name,
                other.name
            );
        }
        assert!(up6.contains(&n.gateway6.unwrap()), "{table}");
        // The IPv4 side is still all there.
        assert_eq!(check::peers_up(&table).len(), 3, "{table}");
    }
    let status = String::from_utf8_lossy(&run(&name, &["status"]).stdout).into_owned();
    assert!(status.contains("IPv6 BGP status"), "{status}");
    assert!(!status.contains("No IPv6 peers found"), "{status}");
    // The ToR: an IPv4 and an IPv6 session per node.
    let established = status
        .lines()
        .filter(|l| l.contains(" BGP ") && l.contains("Established"))
        .count();
    assert_eq!(established, 6, "{status}");

    // Every pod has an IPv4 address and an IPv6 one from the IPv6 pool,
    // on its eth0.
    assert_eq!(st.pods.len(), 6);
    for p in &st.pods {
        let ip6 = p.ip6.expect("a dual-stack pod has an IPv6 address");
        assert!(DEFAULT_POOL6.contains(ip6), "{}: {ip6}", p.name);
        assert!(p.ip.is_some());
        let addr = run(&name, &["exec", &p.name, "--", "ip", "-6", "addr", "show"]);
        assert!(
            String::from_utf8_lossy(&addr.stdout).contains(&format!("{ip6}/128")),
            "{}",
            String::from_utf8_lossy(&addr.stdout)
        );
    }

    // Both matrices: 30 ordered pairs each.
    let check = run(&name, &["check", "--pairs"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{text}");
    let v4: Vec<&str> = text.lines().filter(|l| l.starts_with("pair ")).collect();
    let v6: Vec<&str> = text.lines().filter(|l| l.starts_with("pair6 ")).collect();
    assert_eq!(v4.len(), 30, "{text}");
    assert_eq!(v6.len(), 30, "{text}");
    assert!(v4.iter().all(|l| l.contains(": reached")), "{text}");
    assert!(v6.iter().all(|l| l.ends_with(": reached")), "{text}");
    assert!(text.contains("30/30 pairs reach each other over the expected path: PASS"));
    assert!(text.contains("IPv6 ping matrix: 30/30 pairs reach each other: PASS"));

    // IPv6 NAT-outgoing: each node's first pod reaches an address outside
    // the cluster as its node.
    let nat = check::nat_outgoing6(&st).unwrap();
    assert_eq!(nat.len(), 3, "{nat:?}");
    for r in &nat {
        assert!(r.ok(), "{}", check::render_nat6(&nat));
        assert_eq!(r.source, st.node(&r.node).unwrap().ip6);
    }

    // A pod's IPv6 route removed behind felix's back comes back, and the
    // pod is reached over IPv6 from another node again.
    let pod = &st.pods[0];
    let ip6 = pod.ip6.unwrap().to_string();
    let route = || {
        let out = run(
            &name,
            &["exec", &pod.node, "--", "ip", "-6", "route", "show", &ip6],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(route().contains("proto 80"), "{}", route());
    let del = run(
        &name,
        &["exec", &pod.node, "--", "ip", "-6", "route", "del", &ip6],
    );
    assert!(del.status.success());
    let removed = Instant::now();
    while !route().contains("proto 80") {
        assert!(
            removed.elapsed() < Duration::from_secs(30),
            "felix did not restore {ip6}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "{ip6}'s route back {:?} after it was removed",
        removed.elapsed()
    );
    let from = st.pods.iter().find(|p| p.node != pod.node).unwrap();
    let ping = run(
        &name,
        &[
            "exec", &from.name, "--", "ping", "-6", "-c", "1", "-W", "2", &ip6,
        ],
    );
    assert!(ping.status.success());

    assert!(run(&name, &["down"]).status.success());
    assert!(namespaces(&name).is_empty(), "{:?}", namespaces(&name));
    assert!(!lab_dir(&name).exists());
    println!("dual-stack test took {:?}", started.elapsed());
}

#[test]
fn dual_stack_over_two_subnets_without_a_tor_is_refused_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_node_binaries(true).unwrap();
    let name = lab_name("dualno");
    let _down = LabDown(name.clone());
    let out = run(&name, &["up", "--subnets", "2", "--ipv6", "dual"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs --tor"), "{err}");
    assert!(namespaces(&name).is_empty());
    assert!(!lab_dir(&name).exists());
}
