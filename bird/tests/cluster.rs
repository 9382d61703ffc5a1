//! Clusters of our `bird` on a lab topology (node namespaces on one
//! bridged subnet, a router namespace at .254): the node-to-node mesh
//! driven by confd-style `Apply` pushes, route reflection with our
//! clients and a BIRD 2 client, a BIRD 2 "ToR" over eBGP, and graceful
//! restart seen from the peers' RIBs and route streams.
//!
//! Node `k` is `172.30.0.<k+1>`; its blocks are `10.65.<k>.0/26` (and
//! `10.65.<k>.64/26` where a test needs two); the pool is
//! `10.65.0.0/16`; the cluster AS is 64512. Mesh sessions are passive on
//! the node whose address is smaller as a string, as confd computes it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{Bird2, Ours, RouteEvent, Watch, wait_for};
use lab::{Topology, TopologySpec};
use proto::bgpconfig as bgp;
use proto::bird as pb;

const AS: u32 = 64512;
const POOL: &str = "10.65.0.0/16";
const UP: Duration = Duration::from_secs(40);

fn node_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, k as u8 + 1)
}

fn block(k: usize) -> String {
    format!("10.65.{k}.0/26")
}

fn block2(k: usize) -> String {
    format!("10.65.{k}.64/26")
}

fn topology(tag: &str, nodes: usize) -> Topology {
    let _ = lab::sweep_stale();
    let t = Topology::build(&TopologySpec {
        tag: tag.into(),
        subnets: 1,
        nodes,
    })
    .unwrap();
    for k in 0..nodes {
        assert_eq!(t.node(k).unwrap().ip(), node_ip(k));
    }
    t
}

/// confd's rule: a node is passive towards peers whose address is greater
/// as a string.
fn passive(me: usize, peer: usize) -> bool {
    node_ip(peer).to_string() > node_ip(me).to_string()
}

fn pfx(s: &str) -> proto::common::IpPrefix {
    s.parse::<ipnetwork::IpNetwork>().unwrap().into()
}

fn addr(ip: Ipv4Addr) -> Option<proto::common::IpAddress> {
    Some(std::net::IpAddr::V4(ip).into())
}

/// What confd pushes to node `me` in a mesh of `members`.
fn mesh_config(me: usize, members: &[usize], blocks: &[String]) -> bgp::BgpConfig {
    bgp::BgpConfig {
        node: format!("node-{me}"),
        router_id: addr(node_ip(me)),
        asn: AS,
        listen_port: 179,
        peers: members
            .iter()
            .filter(|&&k| k != me)
            .map(|&k| bgp::BgpPeerConfig {
                name: format!("Mesh_{}", node_ip(k).to_string().replace('.', "_")),
                address: addr(node_ip(k)),
                asn: AS,
                kind: bgp::PeerKind::Mesh as i32,
                passive: passive(me, k),
                source_address: addr(node_ip(me)),
                restart_time_secs: 120,
                calico_node: true,
                ..Default::default()
            })
            .collect(),
        advertise: blocks.iter().map(|b| pfx(b)).collect(),
        pool_cidrs: vec![pfx(POOL)],
        ..Default::default()
    }
}

/// A TOML mesh node (used where the daemon is restarted from its file).
fn mesh_toml(me: usize, members: &[usize], blocks: &[String]) -> String {
    let mut s = format!(
        "router_id = \"{ip}\"\nasn = {AS}\nlisten = \"{ip}:179\"\npools = [\"{POOL}\"]\n\
         startup_deferral = 5\nadvertise = [{}]\n",
        blocks
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", "),
        ip = node_ip(me)
    );
    for &k in members.iter().filter(|&&k| k != me) {
        s.push_str(&format!(
            "[[peers]]\naddress = \"{}\"\nasn = {AS}\npassive = {}\ncalico_node = true\n\
             connect_retry = 1\nfamilies = [\"ipv4\"]\n",
            node_ip(k),
            passive(me, k)
        ));
    }
    s
}

/// The Loc-RIB node `me` should have: its blocks local, every other
/// member's via that member.
fn expected(
    me: usize,
    members: &[usize],
    blocks: impl Fn(usize) -> Vec<String>,
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = members
        .iter()
        .flat_map(|&k| {
            let nh = if k == me {
                "local".to_string()
            } else {
                node_ip(k).to_string()
            };
            blocks(k).into_iter().map(move |b| (b, nh.clone()))
        })
        .collect();
    v.sort();
    v
}

fn diag(nodes: &[&Ours]) -> String {
    nodes
        .iter()
        .map(|n| n.log_text())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn mesh_nodes_learn_each_others_blocks_as_nodes_join_and_leave() {
    let t = topology("bms", 4);
    let blocks = |k: usize| vec![block(k), block2(k)];
    let args = ["--startup-deferral", "2"];
    let mut nodes: Vec<Ours> = (0..3)
        .map(|k| Ours::start_unconfigured(&t.node(k).unwrap().ns, &args))
        .collect();
    let members = [0, 1, 2];
    for (k, n) in nodes.iter().enumerate() {
        let r = n.apply(mesh_config(k, &members, &blocks(k)));
        assert_eq!((r.peers_added, r.peers_removed), (2, 0));
    }
    for (k, n) in nodes.iter().enumerate() {
        let want = expected(k, &members, blocks);
        wait_for(
            &format!("node {k} to learn the other blocks"),
            UP,
            || (n.loc_rib() == want).then_some(()),
            || {
                format!(
                    "have {:?}\nwant {want:?}\n{}",
                    n.loc_rib(),
                    diag(&nodes.iter().collect::<Vec<_>>())
                )
            },
        );
    }
    // Pushing the same configuration again changes nothing.
    let r = nodes[0].apply(mesh_config(0, &members, &blocks(0)));
    assert_eq!((r.peers_added, r.peers_removed, r.peers_changed), (0, 0, 0));
    assert!(nodes[0].established(&node_ip(1).to_string()));

    // A fourth node joins: confd pushes the new mesh everywhere.
    nodes.push(Ours::start_unconfigured(&t.node(3).unwrap().ns, &args));
    let members = [0, 1, 2, 3];
    for (k, n) in nodes.iter().enumerate() {
        let r = n.apply(mesh_config(k, &members, &blocks(k)));
        let added = if k == 3 { 3 } else { 1 };
        assert_eq!(
            (r.peers_added, r.peers_removed, r.peers_changed),
            (added, 0, 0)
        );
    }
    for (k, n) in nodes.iter().enumerate() {
        let want = expected(k, &members, blocks);
        wait_for(
            &format!("node {k} to learn node 3's blocks"),
            UP,
            || (n.loc_rib() == want).then_some(()),
            || {
                format!(
                    "have {:?}\nwant {want:?}\n{}",
                    n.loc_rib(),
                    diag(&nodes.iter().collect::<Vec<_>>())
                )
            },
        );
    }

    // Node 1 leaves: removed from everyone's configuration, then stopped.
    let members = [0, 2, 3];
    for &k in &members {
        let r = nodes[k].apply(mesh_config(k, &members, &blocks(k)));
        assert_eq!((r.peers_added, r.peers_removed), (0, 1));
    }
    nodes[1].kill();
    for &k in &members {
        let n = &nodes[k];
        let want = expected(k, &members, blocks);
        wait_for(
            &format!("node {k} to withdraw node 1's blocks"),
            UP,
            || (n.loc_rib() == want).then_some(()),
            || format!("have {:?}\nwant {want:?}\n{}", n.loc_rib(), n.log_text()),
        );
        assert_eq!(n.peers().len(), 2);
    }
    // The peers table names the mesh sessions the way confd does.
    let p = nodes[0].peer(&node_ip(2).to_string());
    assert_eq!(p.name, "Mesh_172_30_0_3");
    assert!(p.internal);
    assert_eq!(p.prefixes_received, 2);
    assert_eq!(p.prefixes_advertised, 2);
}

#[test]
fn route_reflector_serves_our_clients_and_a_bird2_client_without_loops() {
    let t = topology("brr", 4);
    let rr_id = "1.1.1.1";
    // Node 0 reflects; nodes 1 and 2 are our clients, node 3 runs BIRD 2.
    let mut rr = format!(
        "router_id = \"{ip}\"\nasn = {AS}\nlisten = \"{ip}:179\"\npools = [\"{POOL}\"]\n\
         rr_cluster_id = \"{rr_id}\"\nstartup_deferral = 2\nadvertise = [\"{}\"]\n",
        block(0),
        ip = node_ip(0)
    );
    for k in 1..4 {
        rr.push_str(&format!(
            "[[peers]]\naddress = \"{}\"\nasn = {AS}\npassive = true\nrr_client = true\n\
             calico_node = true\nfamilies = [\"ipv4\"]\n",
            node_ip(k)
        ));
    }
    let rr = Ours::start_in(&t.node(0).unwrap().ns, &rr, &[]);
    let clients: Vec<Ours> = (1..3)
        .map(|k| {
            let toml = format!(
                "router_id = \"{ip}\"\nasn = {AS}\nlisten = \"{ip}:179\"\npools = [\"{POOL}\"]\n\
                 startup_deferral = 2\nadvertise = [\"{}\"]\n\
                 [[peers]]\naddress = \"{}\"\nasn = {AS}\ncalico_node = true\nconnect_retry = 1\n\
                 families = [\"ipv4\"]\n",
                block(k),
                node_ip(0),
                ip = node_ip(k)
            );
            Ours::start_in(&t.node(k).unwrap().ns, &toml, &[])
        })
        .collect();
    let bird = Bird2::start(
        &t.node(3).unwrap().ns,
        &format!(
            r#"
router id {me};
protocol device {{}}
protocol direct {{ ipv4; interface "eth0"; }}
protocol static s4 {{ ipv4; route {b} blackhole; }}
protocol bgp refl {{
  local {me} as {AS}; neighbor {rrip} as {AS}; direct;
  connect delay time 1;
  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; gateway direct; }};
}}
"#,
            me = node_ip(3),
            rrip = node_ip(0),
            b = block(3)
        ),
    );
    let all = [0, 1, 2, 3];
    let d = || {
        format!(
            "{}\n{}\n{}",
            rr.log_text(),
            diag(&clients.iter().collect::<Vec<_>>()),
            bird.log_text()
        )
    };
    for (i, c) in clients.iter().enumerate() {
        let k = i + 1;
        let want = expected(k, &all, |k| vec![block(k)]);
        wait_for(
            &format!("client {k} to have every block"),
            UP,
            || (c.loc_rib() == want).then_some(()),
            || format!("have {:?}\nwant {want:?}\n{}", c.loc_rib(), d()),
        );
        // Its own block came back from nobody.
        assert_eq!(c.paths(&block(k)).len(), 1, "{:?}", c.paths(&block(k)));
    }
    // Reflected routes carry the RFC 4456 attributes; the next hop is the
    // originating client's.
    let r = clients[0].paths(&block(2)).remove(0);
    assert_eq!(common::next_hop(&r), node_ip(2).to_string());
    let originator = std::net::IpAddr::try_from(r.originator_id.as_ref().unwrap()).unwrap();
    assert_eq!(originator.to_string(), node_ip(2).to_string());
    let cl: Vec<String> = r
        .cluster_list
        .iter()
        .map(|a| std::net::IpAddr::try_from(a).unwrap().to_string())
        .collect();
    assert_eq!(cl, vec![rr_id.to_string()]);
    // The reflector itself holds one path per block: nothing looped back.
    for k in 0..4 {
        wait_for(
            &format!("the reflector to hold {}", block(k)),
            UP,
            || (rr.paths(&block(k)).len() == 1).then_some(()),
            || format!("{:?}\n{}", rr.paths(&block(k)), d()),
        );
    }
    // The BIRD client has every block, reflected ones with ORIGINATOR_ID
    // and CLUSTER_LIST, and never its own back.
    for k in 0..3 {
        let out = wait_for(
            &format!("BIRD to learn {}", block(k)),
            UP,
            || bird.route(&block(k)),
            d,
        );
        assert!(
            out.contains(&format!("BGP.next_hop: {}", node_ip(k))),
            "{out}"
        );
        if k > 0 {
            assert!(
                out.contains(&format!("BGP.originator_id: {}", node_ip(k))),
                "{out}"
            );
            assert!(out.contains(&format!("BGP.cluster_list: {rr_id}")), "{out}");
        }
    }
    let own = bird.birdc(&["show", "route", &block(3), "protocol", "refl"]);
    assert!(!own.contains(&block(3).replace("/26", "")), "{own}");
    // Our clients got BIRD's block with BIRD as next hop and originator.
    let r = clients[1].paths(&block(3)).remove(0);
    assert_eq!(common::next_hop(&r), node_ip(3).to_string());
}

#[test]
fn tor_gets_exactly_our_blocks_with_communities_refuses_pool_hijacks_and_max_prefix_trips() {
    let t = topology("btr", 2);
    let tor_ip = "172.30.0.254";
    let node = |k: usize, extra: &str| {
        let other = 1 - k;
        format!(
            "router_id = \"{ip}\"\nasn = {AS}\nlisten = \"{ip}:179\"\npools = [\"{POOL}\"]\n\
             startup_deferral = 2\nadvertise = [\"{}\"]\n\
             [[prefix_communities]]\ncidr = \"{POOL}\"\ncommunities = [\"65000:100\", \"65000:7:8\"]\n\
             [[peers]]\naddress = \"{}\"\nasn = {AS}\npassive = {}\ncalico_node = true\n\
             connect_retry = 1\nfamilies = [\"ipv4\"]\n\
             [[peers]]\naddress = \"{tor_ip}\"\nasn = 65000\npassive = true\nfamilies = [\"ipv4\"]\n{extra}\n",
            block(k),
            node_ip(other),
            passive(k, other),
            ip = node_ip(k)
        )
    };
    let n0 = Ours::start_in(&t.node(0).unwrap().ns, &node(0, ""), &[]);
    let n1 = Ours::start_in(&t.node(1).unwrap().ns, &node(1, "max_prefixes = 2"), &[]);
    let tor = Bird2::start(
        t.router(),
        &format!(
            r#"
router id {tor_ip};
protocol device {{}}
protocol direct {{ ipv4; interface "br0"; }}
protocol static s4 {{
  ipv4;
  route 10.65.9.0/26 blackhole;
  route 192.0.2.0/24 blackhole;
  route 198.51.100.0/24 blackhole;
  route 203.0.113.0/24 blackhole;
}}
protocol bgp n0 {{
  local {tor_ip} as 65000; neighbor {} as {AS};
  connect delay time 1;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
protocol bgp n1 {{
  local {tor_ip} as 65000; neighbor {} as {AS};
  connect delay time 1; error wait time 1, 4;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
"#,
            node_ip(0),
            node_ip(1)
        ),
    );
    let d = || format!("{}\n{}\n{}", n0.log_text(), n1.log_text(), tor.log_text());

    // Node 0 takes the ToR's routes outside the pool and refuses the one
    // inside it.
    let want_from_tor = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];
    wait_for(
        "node 0 to learn the ToR's routes and node 1's block",
        UP,
        || {
            let rib = n0.loc_rib();
            (want_from_tor
                .iter()
                .all(|p| rib.contains(&(p.to_string(), tor_ip.to_string())))
                && rib.contains(&(block(1), node_ip(1).to_string())))
            .then_some(())
        },
        || format!("{:?}\n{}", n0.loc_rib(), d()),
    );
    assert!(
        n0.paths("10.65.9.0/26").is_empty(),
        "pool route from a router refused"
    );
    let p = n0.peer(tor_ip);
    assert_eq!((p.prefixes_received, p.prefixes_rejected), (3, 1), "{p:?}");
    assert!(!p.internal);
    let r = n0.paths("192.0.2.0/24").remove(0);
    assert!(common::path_asns(&r) == vec![65000]);

    // The ToR gets exactly node 0's block: not node 1's (learned over
    // iBGP), not its own routes back.
    let out = wait_for(
        "the ToR to learn node 0's block",
        UP,
        || tor.route(&block(0)),
        d,
    );
    assert!(out.contains(&format!("BGP.as_path: {AS}")), "{out}");
    assert!(
        out.contains(&format!("BGP.next_hop: {}", node_ip(0))),
        "{out}"
    );
    assert!(out.contains("BGP.community: (65000,100)"), "{out}");
    assert!(out.contains("BGP.large_community: (65000, 7, 8)"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    let from_n0 = tor.birdc(&["show", "route", "protocol", "n0"]);
    let prefixes: Vec<&str> = from_n0
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains('/'))
        .collect();
    assert_eq!(prefixes, vec![block(0).as_str()], "{from_n0}");

    // Node 1 allows 2 prefixes and gets 3: Cease / Maximum Number of
    // Prefixes Reached (RFC 4486 subcode 1), seen by BIRD.
    wait_for(
        "BIRD to be told the maximum number of prefixes was reached",
        UP,
        || {
            tor.birdc(&["show", "protocols", "all", "n1"])
                .contains("Received: Maximum number of prefixes reached")
                .then_some(())
        },
        || {
            format!(
                "{}\n{}",
                tor.birdc(&["show", "protocols", "all", "n1"]),
                d()
            )
        },
    );
    let p = n1.peer(tor_ip);
    assert!(
        p.last_error.contains("Maximum Number of Prefixes Reached"),
        "{p:?}"
    );
    // The mesh session of node 1 is unaffected.
    assert!(n1.loc_rib().contains(&(block(0), node_ip(0).to_string())));
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib_and_sweeps_what_is_gone() {
    let t = topology("bgr", 3);
    let members = [0, 1, 2];
    let blocks = |k: usize| {
        if k == 2 {
            vec![block(2), block2(2)]
        } else {
            vec![block(k)]
        }
    };
    let mut nodes: Vec<Ours> = (0..3)
        .map(|k| {
            Ours::start_in(
                &t.node(k).unwrap().ns,
                &mesh_toml(k, &members, &blocks(k)),
                &[],
            )
        })
        .collect();
    let d = |nodes: &[Ours]| diag(&nodes.iter().collect::<Vec<_>>());
    let mut w0 = Watch::new(&nodes[0].socket);
    let mut w2 = Watch::new(&nodes[2].socket);
    let n2 = node_ip(2).to_string();
    w0.until("node 0's stream to carry nodes 1 and 2", UP, |w| {
        w.view.get(&block(2)) == Some(&vec![n2.clone()])
            && w.view.contains_key(&block2(2))
            && w.view.contains_key(&block(1))
    });
    w2.until("node 2's stream to carry nodes 0 and 1", UP, |w| {
        w.view.contains_key(&block(0)) && w.view.contains_key(&block(1))
    });
    let before2 = w2.view.clone();
    assert!(
        !w0.view.contains_key(&block(0)),
        "own blocks are not streamed"
    );

    // Node 2's bird dies without a word.
    nodes[2].kill();
    wait_for(
        "node 0 to see the session to node 2 go down",
        UP,
        || (!nodes[0].established(&n2)).then_some(()),
        || d(&nodes),
    );
    for k in [0, 1] {
        let paths = nodes[k].paths(&block2(2));
        assert_eq!(paths.len(), 1, "node {k} keeps node 2's route");
        assert!(paths[0].stale && paths[0].best, "{paths:?}");
        assert_eq!(nodes[k].peer(&n2).prefixes_stale, 2);
    }
    // Nothing is withdrawn from the route streams while node 2 restarts;
    // node 2's own consumer (its felix) is told bird is gone and keeps
    // its routes.
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        w0.next(Duration::from_millis(200));
    }
    assert!(w0.withdrawn().is_empty(), "{:?}", w0.events);
    w2.until_events("node 2's consumer to notice bird is gone", UP, |ev| {
        ev.iter()
            .any(|e| matches!(e, RouteEvent::Disconnected { .. }))
    });
    assert_eq!(w2.view, before2);

    // It comes back without its second block.
    let mut blocks_now = blocks(2);
    blocks_now.pop();
    nodes[2].restart(Some(&mesh_toml(2, &members, &blocks_now)));
    let in_sync_before = w2
        .events
        .iter()
        .filter(|e| **e == RouteEvent::InSync)
        .count();
    w0.until("node 0 to sweep node 2's stale second block", UP, |w| {
        !w.view.contains_key(&block2(2)) && w.view.contains_key(&block(2))
    });
    assert_eq!(
        w0.withdrawn(),
        vec![block2(2)],
        "only what node 2 no longer has"
    );
    for k in [0, 1] {
        let n = &nodes[k];
        wait_for(
            &format!("node {k} to hold node 2's remaining block fresh"),
            UP,
            || {
                let p = n.paths(&block(2));
                (p.len() == 1 && !p[0].stale && n.paths(&block2(2)).is_empty()).then_some(())
            },
            || format!("{:?}\n{}", n.paths(&block(2)), d(&nodes)),
        );
        assert_eq!(n.peer(&n2).prefixes_stale, 0);
    }
    // Node 2's consumer resyncs to the restarted bird without losing a
    // route on the way.
    w2.until_events("node 2's consumer to be back in sync", UP, |ev| {
        ev.iter().filter(|e| **e == RouteEvent::InSync).count() > in_sync_before
    });
    assert!(w2.withdrawn().is_empty(), "{:?}", w2.events);
    assert_eq!(w2.view, before2);
}

/// `bird show` over the new state: the Loc-RIB view and flags.
#[test]
fn show_routes_marks_best_and_local_routes() {
    let t = topology("bsh", 2);
    let members = [0, 1];
    let nodes: Vec<Ours> = (0..2)
        .map(|k| {
            Ours::start_in(
                &t.node(k).unwrap().ns,
                &mesh_toml(k, &members, &[block(k)]),
                &[],
            )
        })
        .collect();
    wait_for(
        "node 0 to learn node 1's block",
        UP,
        || (nodes[0].loc_rib().len() == 2).then_some(()),
        || diag(&nodes.iter().collect::<Vec<_>>()),
    );
    let out = nodes[0].show(&["routes", "--best"]);
    let own = out.lines().find(|l| l.starts_with(&block(0))).unwrap();
    assert!(own.contains("local") && own.ends_with("best"), "{out}");
    let learned = out.lines().find(|l| l.starts_with(&block(1))).unwrap();
    assert!(learned.contains(&node_ip(1).to_string()), "{out}");
    let count = nodes[0].show(&["routes", "--count"]);
    assert!(count.contains("loc-rib ipv4 2 ipv6 0"), "{count}");
    let peers = nodes[0].peers();
    assert_eq!(peers[0].state, pb::SessionState::Established as i32);
}

/// What confd pushes to a calico-node acting as a route reflector (a node
/// with `routeReflectorClusterID`), and two BIRD 2 clients: a block one
/// client originates reaches the other, reflected with the client's next
/// hop; towards the client whose BGPPeer says `nextHopMode: Self` the
/// reflector puts itself as next hop instead.
#[test]
fn a_route_reflector_configured_by_confd_reflects_between_bird2_clients() {
    let t = topology("brp", 3);
    let rr_id = "1.1.1.1";
    let rr = Ours::start_unconfigured(&t.node(0).unwrap().ns, &[]);
    rr.apply(bgp::BgpConfig {
        node: "node-0".into(),
        router_id: addr(node_ip(0)),
        asn: AS,
        listen_port: 179,
        rr_cluster_id: addr(rr_id.parse().unwrap()),
        peers: (1..3)
            .map(|k| bgp::BgpPeerConfig {
                name: format!("Node_{}", node_ip(k).to_string().replace('.', "_")),
                address: addr(node_ip(k)),
                asn: AS,
                kind: bgp::PeerKind::NodeSpecific as i32,
                passive: true,
                rr_client: true,
                calico_node: true,
                source_address: addr(node_ip(0)),
                restart_time_secs: 120,
                next_hop_self: k == 2,
                ..Default::default()
            })
            .collect(),
        advertise: vec![pfx(&block(0))],
        pool_cidrs: vec![pfx(POOL)],
        ..Default::default()
    });
    let birds: Vec<Bird2> = (1..3)
        .map(|k| {
            Bird2::start(
                &t.node(k).unwrap().ns,
                &format!(
                    r#"
router id {me};
protocol device {{}}
protocol direct {{ ipv4; interface "eth0"; }}
protocol static s4 {{ ipv4; route {b} blackhole; }}
protocol bgp refl {{
  local {me} as {AS}; neighbor {rrip} as {AS}; direct;
  connect delay time 1;
  ipv4 {{ import all; export where source = RTS_STATIC; next hop self; gateway direct; }};
}}
"#,
                    me = node_ip(k),
                    rrip = node_ip(0),
                    b = block(k)
                ),
            )
        })
        .collect();
    let d = || {
        format!(
            "{}\n{}\n{}",
            rr.log_text(),
            birds[0].log_text(),
            birds[1].log_text()
        )
    };
    for k in 1..3 {
        wait_for(
            &format!("the reflector to learn {}", block(k)),
            UP,
            || (rr.paths(&block(k)).len() == 1).then_some(()),
            d,
        );
    }
    // (BIRD index, block, the next hop it should see, reflected?)
    let want = [
        (0, block(2), node_ip(2), true),
        (0, block(0), node_ip(0), false),
        (1, block(1), node_ip(0), true),
        (1, block(0), node_ip(0), false),
    ];
    for (i, b, nh, reflected) in want {
        let out = wait_for(
            &format!("BIRD {} to learn {b}", i + 1),
            UP,
            || birds[i].route(&b),
            || format!("{}\n{}", rr.show(&["routes"]), d()),
        );
        assert!(out.contains(&format!("BGP.next_hop: {nh}")), "{out}");
        assert_eq!(
            out.contains(&format!("BGP.cluster_list: {rr_id}")),
            reflected,
            "{out}"
        );
    }
}

/// BGPPeer `nextHopMode: Keep` towards an eBGP ToR (BIRD 2): a block this
/// node learned from another node goes to the ToR with that node as next
/// hop, not this one; this node's own block still has this node.
#[test]
fn next_hop_mode_keep_sends_an_ebgp_tor_the_original_next_hop() {
    let t = topology("bkp", 3);
    let ours = Ours::start_unconfigured(&t.node(0).unwrap().ns, &[]);
    ours.apply(bgp::BgpConfig {
        node: "node-0".into(),
        router_id: addr(node_ip(0)),
        asn: AS,
        listen_port: 179,
        peers: vec![
            // Node 1, another calico node (BIRD 2 standing in).
            bgp::BgpPeerConfig {
                name: format!("Mesh_{}", node_ip(1).to_string().replace('.', "_")),
                address: addr(node_ip(1)),
                asn: AS,
                kind: bgp::PeerKind::Mesh as i32,
                passive: true,
                calico_node: true,
                ..Default::default()
            },
            // Node 2, the ToR, told to keep next hops and to get the
            // blocks learned from other nodes too.
            bgp::BgpPeerConfig {
                name: format!("Global_{}", node_ip(2).to_string().replace('.', "_")),
                address: addr(node_ip(2)),
                asn: 65001,
                kind: bgp::PeerKind::Global as i32,
                passive: true,
                keep_next_hop: true,
                export_learned: true,
                ..Default::default()
            },
        ],
        advertise: vec![pfx(&block(0))],
        pool_cidrs: vec![pfx(POOL)],
        ..Default::default()
    });
    let node1 = Bird2::start(
        &t.node(1).unwrap().ns,
        &format!(
            r#"
router id {me};
protocol device {{}}
protocol static s4 {{ ipv4; route {b} blackhole; }}
protocol bgp mesh {{
  local {me} as {AS}; neighbor {ours} as {AS}; direct;
  connect delay time 1;
  ipv4 {{ import none; export where source = RTS_STATIC; next hop self; }};
}}
"#,
            me = node_ip(1),
            ours = node_ip(0),
            b = block(1)
        ),
    );
    let tor = Bird2::start(
        &t.node(2).unwrap().ns,
        &format!(
            r#"
router id {me};
protocol device {{}}
protocol bgp tor {{
  local {me} as 65001; neighbor {ours} as {AS};
  connect delay time 1;
  ipv4 {{ import all; export none; }};
}}
"#,
            me = node_ip(2),
            ours = node_ip(0)
        ),
    );
    let d = || {
        format!(
            "{}\n{}\n{}",
            ours.log_text(),
            node1.log_text(),
            tor.log_text()
        )
    };
    for (b, nh) in [(block(1), node_ip(1)), (block(0), node_ip(0))] {
        let out = wait_for(&format!("the ToR to learn {b}"), UP, || tor.route(&b), d);
        assert!(out.contains(&format!("BGP.next_hop: {nh}")), "{out}");
        assert!(out.contains(&format!("BGP.as_path: {AS}\n")), "{out}");
    }
}
