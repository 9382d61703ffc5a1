//! `calico-lab --ipv6 only`, driven as a user drives it: Calico's "IPv6
//! only" set-up. Three nodes on two subnets with BIRD 2 as the ToR; the
//! nodes' uplinks and the router's bridges have IPv6 addresses only;
//! calico-node runs with `IP=none`, `IP6` autodetected on eth0,
//! `CALICO_IPV6POOL_CIDR` and `CALICO_ROUTER_ID=hash`; the CNI plugin is
//! configured `assign_ipv4: "false"`, `assign_ipv6: "true"`. Asserted: no
//! node (and no bridge of the router) has an IPv4 address, every pod has
//! exactly one IPv6 address and no IPv4 one, the mesh and ToR sessions are
//! IPv6 and Established (and there is no IPv4 session), a block of a node
//! on the other subnet is routed via the router (felix resolves the mesh
//! next hop, which is not a neighbour, recursively), every pod reaches
//! every pod over IPv6, and IPv6 NAT-outgoing masquerades to the node.
//! And an IPv6-only lab over two subnets without a ToR is refused up
//! front.
//!
//! The tests share the machine's two cores with a dozen daemons each, so
//! they run one at a time.
#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::sync::Mutex;
use std::time::Instant;

use lab::cluster::check;
use lab::cluster::state::{self, DEFAULT_POOL6, lab_dir};
use tests::agent::{
    LabDown, build_node_binaries, lab_name, lab_namespaces as namespaces, run_lab as run,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS` inside `target` (a node, a pod or `router`) of lab `name`.
fn ip(name: &str, target: &str, args: &[&str]) -> String {
    let mut cmd = vec!["exec", target, "--", "ip"];
    cmd.extend_from_slice(args);
    let out = run(name, &cmd);
    assert!(out.status.success(), "ip {args:?} in {target} failed");
    stdout(&out)
}

#[test]
fn ipv6_only_lab_has_no_ipv4_ipv6_sessions_and_the_ipv6_ping_matrix() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_node_binaries(true).unwrap();
    let name = lab_name("v6only");
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
            "only",
        ],
    );
    assert!(out.status.success(), "up failed");
    let text = stdout(&out);
    assert!(text.contains("IPv6 pool fd00:65::/48"), "{text}");
    println!("IPv6-only lab up and converged in {:?}", started.elapsed());

    let st = state::load(&name).unwrap().expect("a lab that is up");
    assert!(st.complete);
    assert!(st.etcd_endpoint.contains('['), "{}", st.etcd_endpoint);

    // No IPv4 on the underlay: not on a node's uplink, not on a bridge.
    for n in &st.nodes {
        let v4 = ip(&name, &n.name, &["-4", "addr", "show", "dev", "eth0"]);
        assert!(!v4.contains("inet "), "{}: {v4}", n.name);
        let v4 = ip(&name, &n.name, &["-4", "route", "show"]);
        assert!(v4.trim().is_empty(), "{}: IPv4 routes {v4}", n.name);
        let ip6 = n.ip6.expect("an IPv6-only node has an IPv6 address");
        assert!(ip6.to_string().starts_with("fd00:30:"), "{ip6}");
        let v6 = ip(&name, &n.name, &["-6", "addr", "show", "dev", "eth0"]);
        assert!(v6.contains(&format!("{ip6}/64")), "{}: {v6}", n.name);
    }
    for s in 0..st.subnets.len() {
        let bridge = format!("br{s}");
        let v4 = ip(&name, "router", &["-4", "addr", "show", "dev", &bridge]);
        assert!(!v4.contains("inet "), "{bridge}: {v4}");
    }

    // The mesh and the ToR: IPv6 sessions, Established; no IPv4 session.
    for n in &st.nodes {
        let table = check::peer_table(&st, n);
        assert!(check::peers_up(&table).is_empty(), "{table}");
        let up6 = check::peers_up6(&table);
        for other in st.nodes.iter().filter(|o| o.name != n.name) {
            let peer = other.ip6.unwrap();
            assert!(
                up6.contains(&peer),
                "{}: no IPv6 session with {}:\n{table}",
                n.name,
                other.name
            );
            assert!(
                table
                    .lines()
                    .any(|l| l.contains(&format!(" {peer} ")) && l.contains("Established")),
                "{table}"
            );
        }
        assert!(up6.contains(&n.gateway6.unwrap()), "{table}");
        assert_eq!(up6.len(), 3, "{table}");
    }
    let status = stdout(&run(&name, &["status"]));
    assert!(status.contains("IPv6 BGP status"), "{status}");
    // The ToR: one IPv6 session per node, nothing else.
    let established = status
        .lines()
        .filter(|l| l.contains(" BGP ") && l.contains("Established"))
        .count();
    assert_eq!(established, 3, "{status}");

    // Each node's IPv6 blocks: on the same subnet via the owner, on the
    // other subnet (a mesh next hop that is not a neighbour) via the
    // router, the gateway of the node's route to the owner, as BIRD's
    // recursive next hops are; and felix never had the kernel refuse one.
    let routes: Vec<check::Routes6> = st.nodes.iter().map(check::routes6).collect();
    for (n, mine) in st.nodes.iter().zip(&routes) {
        for (owner, theirs) in st
            .nodes
            .iter()
            .zip(&routes)
            .filter(|(o, _)| o.name != n.name)
        {
            let via = if owner.subnet == n.subnet {
                owner.ip6.unwrap()
            } else {
                n.gateway6.unwrap()
            };
            for block in &theirs.local_blocks {
                let want = format!("{block} via {via} ");
                assert!(
                    mine.text.lines().any(|l| l.starts_with(&want)),
                    "{}: no route {want}to {}'s block:\n{}",
                    n.name,
                    owner.name,
                    mine.text
                );
            }
        }
    }
    let logs = lab_dir(&name).join("logs");
    for n in &st.nodes {
        let log = std::fs::read_to_string(logs.join(format!("{}.log", n.name))).unwrap();
        assert!(!log.contains("route write failed"), "{}: {log}", n.name);
    }

    // Every pod: exactly one IPv6 address (from the IPv6 pool) on eth0, and
    // no IPv4 one.
    assert_eq!(st.pods.len(), 6);
    for p in &st.pods {
        assert_eq!(p.ip, None, "{}", p.name);
        let ip6 = p.ip6.expect("an IPv6-only pod has an IPv6 address");
        assert!(DEFAULT_POOL6.contains(ip6), "{}: {ip6}", p.name);
        let v4 = ip(&name, &p.name, &["-4", "addr", "show"]);
        assert!(
            v4.lines()
                .filter(|l| l.trim_start().starts_with("inet "))
                .all(|l| l.contains("127.0.0.1")),
            "{}: {v4}",
            p.name
        );
        let v6 = ip(
            &name,
            &p.name,
            &["-6", "addr", "show", "dev", "eth0", "scope", "global"],
        );
        let global: Vec<&str> = v6
            .lines()
            .filter(|l| l.trim_start().starts_with("inet6 "))
            .collect();
        assert_eq!(global.len(), 1, "{}: {v6}", p.name);
        assert!(global[0].contains(&format!("{ip6}/128")), "{v6}");
    }

    // The IPv6 matrix: 30 ordered pairs; no IPv4 matrix.
    let check = run(&name, &["check", "--pairs"]);
    let text = stdout(&check);
    assert!(check.status.success(), "{text}");
    let v4: Vec<&str> = text.lines().filter(|l| l.starts_with("pair ")).collect();
    let v6: Vec<&str> = text.lines().filter(|l| l.starts_with("pair6 ")).collect();
    assert!(v4.is_empty(), "{text}");
    assert_eq!(v6.len(), 30, "{text}");
    assert!(v6.iter().all(|l| l.ends_with(": reached")), "{text}");
    assert!(
        text.contains("IPv6 ping matrix: 30/30 pairs reach each other: PASS"),
        "{text}"
    );

    // IPv6 NAT-outgoing: each node's first pod reaches an address outside
    // the cluster as its node.
    let nat = check::nat_outgoing6(&st).unwrap();
    assert_eq!(nat.len(), 3, "{nat:?}");
    for r in &nat {
        assert!(r.ok(), "{}", check::render_nat6(&nat));
        assert_eq!(r.source, st.node(&r.node).unwrap().ip6);
    }

    assert!(run(&name, &["down"]).status.success());
    assert!(namespaces(&name).is_empty(), "{:?}", namespaces(&name));
    assert!(!lab_dir(&name).exists());
    println!("IPv6-only test took {:?}", started.elapsed());
}

#[test]
fn ipv6_only_over_two_subnets_without_a_tor_is_refused_and_leaves_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    build_node_binaries(true).unwrap();
    let name = lab_name("v6no");
    let _down = LabDown(name.clone());
    let out = run(&name, &["up", "--subnets", "2", "--ipv6", "only"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ipv6 only on more than one subnet needs --tor"),
        "{err}"
    );
    assert!(namespaces(&name).is_empty());
    assert!(!lab_dir(&name).exists());
}
