//! Scenario tests: cluster state written as the Calico YAML an operator
//! would apply, and the peerings / configuration each node gets.

use std::net::IpAddr;

use ippool_crd::{CalicoResource, parse_manifests};

use crate::config::{ConfigError, compute};
use crate::peers::{self, Peer, PeerKind};
use crate::render::render;
use crate::secrets::{SecretOrigin, SecretState};
use crate::state::ClusterState;

fn state(yaml: &str) -> ClusterState {
    let mut s = ClusterState::default();
    for r in parse_manifests(yaml).unwrap() {
        match r {
            CalicoResource::Node(n) => {
                s.nodes.insert(n.metadata.name.clone().unwrap(), n);
            }
            CalicoResource::BGPPeer(p) => {
                s.bgp_peers.insert(p.metadata.name.clone().unwrap(), p);
            }
            CalicoResource::BGPFilter(f) => {
                s.bgp_filters.insert(f.metadata.name.clone().unwrap(), f);
            }
            CalicoResource::BGPConfiguration(c) => {
                s.bgp_configs.insert(c.metadata.name.clone().unwrap(), c);
            }
            CalicoResource::IPPool(p) => {
                s.pools.insert(p.metadata.name.clone().unwrap(), p);
            }
            other => panic!("unexpected resource in test: {other:?}"),
        }
    }
    s
}

fn node(name: &str, ip: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{extra}spec:\n  bgp:\n    ipv4Address: {ip}\n"
    )
}

fn three_nodes() -> String {
    [
        node("node-1", "10.0.0.9/24", ""),
        node("node-2", "10.0.0.10/24", ""),
        node("node-3", "10.0.1.5/24", ""),
    ]
    .concat()
}

fn addrs(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(|p| p.address.to_string()).collect()
}

fn find<'a>(peers: &'a [Peer], addr: &str) -> &'a Peer {
    let a: IpAddr = addr.parse().unwrap();
    peers
        .iter()
        .find(|p| p.address == a)
        .unwrap_or_else(|| panic!("no peer {addr} in {:?}", addrs(peers)))
}

#[test]
fn full_mesh_peers_with_every_other_node() {
    let s = state(&three_nodes());
    for (me, others) in [
        ("node-1", ["10.0.0.10", "10.0.1.5"]),
        ("node-2", ["10.0.0.9", "10.0.1.5"]),
        ("node-3", ["10.0.0.10", "10.0.0.9"]),
    ] {
        let peers = peers::compute(&s, me);
        let mut got = addrs(&peers);
        got.sort();
        assert_eq!(got, others, "{me}");
        for p in &peers {
            assert_eq!(p.kind, PeerKind::Mesh);
            assert_eq!(p.asn, 64512);
            assert_eq!(p.restart_time, Some(peers::MESH_RESTART_TIME));
            assert!(p.calico_node);
        }
    }
}

#[test]
fn mesh_passivity_follows_calicos_string_order_so_both_ends_agree() {
    let s = state(&three_nodes());
    // As strings "10.0.0.10" < "10.0.0.9" (numerically it is the other way).
    let n1 = peers::compute(&s, "node-1");
    let n2 = peers::compute(&s, "node-2");
    assert!(!find(&n1, "10.0.0.10").passive, "node-1 connects to node-2");
    assert!(find(&n2, "10.0.0.9").passive, "node-2 waits for node-1");
    // Every pair: exactly one side is passive.
    for (a, b, a_ip, b_ip) in [
        ("node-1", "node-3", "10.0.0.9", "10.0.1.5"),
        ("node-2", "node-3", "10.0.0.10", "10.0.1.5"),
    ] {
        let pa = peers::compute(&s, a);
        let pb = peers::compute(&s, b);
        assert_ne!(find(&pa, b_ip).passive, find(&pb, a_ip).passive, "{a}-{b}");
    }
}

#[test]
fn mesh_can_be_turned_off() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 65000\n",
        three_nodes()
    ));
    assert!(peers::compute(&s, "node-1").is_empty());
    let cfg = compute(&s, "node-1").unwrap();
    assert!(!cfg.bgp.mesh_enabled);
    assert_eq!(cfg.bgp.asn, 65000);
}

#[test]
fn a_global_peer_applies_to_every_node() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  keepOriginalNextHop: true\n",
        three_nodes()
    ));
    for n in ["node-1", "node-2", "node-3"] {
        let peers = peers::compute(&s, n);
        let tor = find(&peers, "10.0.0.254");
        assert_eq!(tor.kind, PeerKind::Global);
        assert_eq!(tor.asn, 65001);
        assert!(tor.keep_next_hop, "eBGP with keepOriginalNextHop");
        assert!(!tor.calico_node);
        assert_eq!(tor.name(), "Global_10_0_0_254");
        assert_eq!(tor.source.as_deref(), Some("tor"));
        assert_eq!(peers.len(), 3, "two mesh peers and the ToR");
    }
}

#[test]
fn next_hop_mode_self_reaches_bird_and_keep_applies_to_ebgp_only() {
    let peer = |name: &str, ip: &str, asn: u32, mode: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n  peerIP: {ip}\n  asNumber: {asn}\n  nextHopMode: {mode}\n"
        )
    };
    let s = state(&format!(
        "{}{}{}{}",
        three_nodes(),
        peer("rr-client", "10.0.0.200", 64512, "Self"),
        peer("tor", "10.0.0.254", 65001, "Keep"),
        peer("ibgp-keep", "10.0.0.201", 64512, "Keep"),
    ));
    let peers = peers::compute(&s, "node-1");
    let client = find(&peers, "10.0.0.200");
    assert!(client.next_hop_self && !client.keep_next_hop);
    let tor = find(&peers, "10.0.0.254");
    assert!(tor.keep_next_hop && !tor.next_hop_self);
    // iBGP keeps next hops anyway.
    let ibgp = find(&peers, "10.0.0.201");
    assert!(!ibgp.keep_next_hop && !ibgp.next_hop_self);
    let wire = crate::wire::bgp_config(&compute(&s, "node-1").unwrap().bgp);
    let on_wire = wire
        .peers
        .iter()
        .find(|p| p.name == "Global_10_0_0_200")
        .unwrap();
    assert!(on_wire.next_hop_self);
}

#[test]
fn local_as_number_reaches_bird_and_decides_what_is_internal() {
    let peer = |name: &str, ip: &str, asn: u32, local: u32| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: {name}\nspec:\n  peerIP: {ip}\n  asNumber: {asn}\n  localASNumber: {local}\n  nextHopMode: Keep\n"
        )
    };
    let s = state(&format!(
        "{}{}{}",
        three_nodes(),
        peer("tor", "10.0.0.254", 65001, 65100),
        // Internal once we speak as its AS: Keep does not apply.
        peer("same-as", "10.0.0.253", 65002, 65002),
    ));
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.local_asn, Some(65100));
    assert!(tor.keep_next_hop);
    let same = find(&peers, "10.0.0.253");
    assert_eq!(same.local_asn, Some(65002));
    assert!(!same.keep_next_hop);
    let wire = crate::wire::bgp_config(&compute(&s, "node-1").unwrap().bgp);
    let local_asn = |name: &str| {
        wire.peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.local_asn)
            .unwrap()
    };
    assert_eq!(local_asn("Global_10_0_0_254"), 65100);
    // Mesh peers speak as the node.
    assert_eq!(local_asn("Mesh_10_0_0_10"), 0);
}

#[test]
fn reachable_by_becomes_a_host_route_for_felix() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.9.0.254\n  asNumber: 65001\n  reachableBy: 10.0.0.1\n",
        three_nodes()
    ));
    let cfg = compute(&s, "node-1").unwrap();
    let tor = find(&cfg.bgp.peers, "10.9.0.254");
    assert_eq!(tor.reachable_by, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(
        cfg.felix.peer_routes,
        [("10.9.0.254".parse().unwrap(), "10.0.0.1".parse().unwrap())]
    );
    let wire = crate::wire::dataplane_config(&cfg.felix);
    assert_eq!(wire.peer_routes.len(), 1);
    // Without reachableBy: no route.
    assert!(
        compute(&state(&three_nodes()), "node-1")
            .unwrap()
            .felix
            .peer_routes
            .is_empty()
    );
}

#[test]
fn node_specific_peers_follow_node_and_node_selector() {
    let nodes = [
        node("node-1", "10.0.0.1/24", "  labels:\n    rack: a\n"),
        node("node-2", "10.0.0.2/24", "  labels:\n    rack: b\n"),
    ]
    .concat();
    let s = state(&format!(
        "{nodes}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack-a-tor\nspec:\n  nodeSelector: rack == 'a'\n  peerIP: 10.0.0.253:1179\n  asNumber: 65002\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: only-node-2\nspec:\n  node: node-2\n  peerIP: 192.0.2.1\n  asNumber: 65003\n"
    ));
    let p1 = peers::compute(&s, "node-1");
    let tor = find(&p1, "10.0.0.253");
    assert_eq!(tor.kind, PeerKind::NodeSpecific);
    assert_eq!(tor.port, Some(1179));
    assert_eq!(tor.name(), "Node_10_0_0_253_port_1179");
    assert!(!addrs(&p1).contains(&"192.0.2.1".to_string()));
    let p2 = peers::compute(&s, "node-2");
    assert_eq!(find(&p2, "192.0.2.1").asn, 65003);
    assert!(!addrs(&p2).contains(&"10.0.0.253".to_string()));
}

#[test]
fn a_node_specific_duplicate_of_a_global_peer_is_dropped() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: a-node\nspec:\n  node: node-1\n  peerIP: 10.0.0.254\n  asNumber: 65001\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: z-global\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n",
        three_nodes()
    ));
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.kind, PeerKind::Global);
    assert_eq!(tor.source.as_deref(), Some("z-global"));
}

#[test]
fn a_peering_to_another_node_is_made_symmetric() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: one-way\nspec:\n  node: node-1\n  peerIP: 10.0.1.5\n  asNumber: 64512\n",
        three_nodes()
    ));
    let p1 = peers::compute(&s, "node-1");
    assert_eq!(addrs(&p1), ["10.0.1.5"]);
    assert!(find(&p1, "10.0.1.5").calico_node);
    let p3 = peers::compute(&s, "node-3");
    assert_eq!(addrs(&p3), ["10.0.0.9"], "node-3 gets the reverse peering");
    assert_eq!(p3[0].kind, PeerKind::NodeSpecific);
    assert!(peers::compute(&s, "node-2").is_empty());
}

#[test]
fn route_reflectors_serve_clients_and_leave_the_mesh() {
    let nodes = [
        node(
            "rr-1",
            "10.0.0.100/24",
            "  labels:\n    route-reflector: 'true'\n",
        ),
        node(
            "rr-2",
            "10.0.0.101/24",
            "  labels:\n    route-reflector: 'true'\n",
        ),
        node("node-1", "10.0.0.1/24", ""),
        node("node-2", "10.0.0.2/24", ""),
    ]
    .concat()
    .replace(
        "    ipv4Address: 10.0.0.100/24\n",
        "    ipv4Address: 10.0.0.100/24\n    routeReflectorClusterID: 224.0.0.1\n",
    )
    .replace(
        "    ipv4Address: 10.0.0.101/24\n",
        "    ipv4Address: 10.0.0.101/24\n    routeReflectorClusterID: 224.0.0.1\n",
    );
    let s = state(&format!(
        "{nodes}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n"
    ));
    // A client peers with both reflectors, as a plain iBGP peer.
    let c = peers::compute(&s, "node-1");
    let mut got = addrs(&c);
    got.sort();
    assert_eq!(got, ["10.0.0.100", "10.0.0.101"]);
    assert!(c.iter().all(|p| !p.rr_client));
    // A reflector: the clients as rr-clients, the other reflector (same
    // cluster ID) as a normal peer, never itself.
    let r = peers::compute(&s, "rr-1");
    let mut got = addrs(&r);
    got.sort();
    assert_eq!(got, ["10.0.0.1", "10.0.0.101", "10.0.0.2"]);
    for client in ["10.0.0.1", "10.0.0.2"] {
        let p = find(&r, client);
        assert!(p.rr_client, "{client}");
        assert_eq!(p.rr_cluster_id, Some("224.0.0.1".parse().unwrap()));
    }
    assert!(!find(&r, "10.0.0.101").rr_client);
    let cfg = compute(&s, "rr-1").unwrap();
    assert_eq!(cfg.bgp.rr_cluster_id, Some("224.0.0.1".parse().unwrap()));
}

#[test]
fn a_route_reflector_ignores_the_mesh_and_mesh_nodes_skip_it() {
    let nodes = [
        node("rr-1", "10.0.0.100/24", ""),
        node("node-1", "10.0.0.1/24", ""),
        node("node-2", "10.0.0.2/24", ""),
    ]
    .concat()
    .replace(
        "    ipv4Address: 10.0.0.100/24\n",
        "    ipv4Address: 10.0.0.100/24\n    routeReflectorClusterID: 224.0.0.1\n",
    );
    let s = state(&nodes);
    assert!(peers::compute(&s, "rr-1").is_empty());
    assert_eq!(addrs(&peers::compute(&s, "node-1")), ["10.0.0.2"]);
}

fn tor_with_password() -> String {
    format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: tor-password\n",
        three_nodes()
    )
}

fn in_kube_system(s: &mut ClusterState, secret: &str, state: SecretState) {
    s.secrets.origin = SecretOrigin::Kubernetes {
        namespace: "kube-system".into(),
    };
    s.secrets.by_name.insert(secret.into(), state);
}

fn data(kv: &[(&str, &str)]) -> SecretState {
    SecretState::Present(
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    )
}

#[test]
fn passwords_come_from_secrets_and_are_never_rendered() {
    let mut s = state(&tor_with_password());
    in_kube_system(
        &mut s,
        "bgp-secrets",
        data(&[("tor-password", "s3cr3t-value")]),
    );
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.password.as_deref(), Some("s3cr3t-value"));
    assert_eq!(tor.password_unavailable, None);
    let text = render(&compute(&s, "node-1").unwrap());
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("md5"), "{text}");
}

#[test]
fn a_peer_whose_secret_or_key_is_missing_is_held_down_and_says_why() {
    let mut s = state(&tor_with_password());
    in_kube_system(&mut s, "bgp-secrets", SecretState::Missing);
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.password, None, "never an unauthenticated session");
    assert_eq!(
        tor.password_unavailable.as_deref(),
        Some("password secret kube-system/bgp-secrets does not exist: session held down")
    );
    // The mesh peers, which ask for no password, are not touched.
    for mesh in ["10.0.0.10", "10.0.1.5"] {
        let p = find(&peers, mesh);
        assert_eq!((&p.password, &p.password_unavailable), (&None, &None));
    }

    in_kube_system(&mut s, "bgp-secrets", data(&[("other", "x")]));
    let tor = find(&peers::compute(&s, "node-1"), "10.0.0.254").clone();
    assert_eq!(
        tor.password_unavailable.as_deref(),
        Some(
            "password secret kube-system/bgp-secrets has no key 'tor-password': session held down"
        )
    );
    let text = render(&compute(&s, "node-1").unwrap());
    assert!(
        text.contains("HELD DOWN: password secret kube-system/bgp-secrets has no key"),
        "{text}"
    );

    // The key arrives: the same peer, with its password, nothing held.
    in_kube_system(&mut s, "bgp-secrets", data(&[("tor-password", "k1\n")]));
    let tor = find(&peers::compute(&s, "node-1"), "10.0.0.254").clone();
    assert_eq!(
        (tor.password.as_deref(), tor.password_unavailable),
        (Some("k1"), None)
    );
}

#[test]
fn a_rotated_password_changes_only_the_peers_that_use_it() {
    let mut s = state(&tor_with_password());
    in_kube_system(&mut s, "bgp-secrets", data(&[("tor-password", "k1")]));
    let before = compute(&s, "node-1").unwrap();
    in_kube_system(&mut s, "bgp-secrets", data(&[("tor-password", "k2")]));
    let after = compute(&s, "node-1").unwrap();
    let changed: Vec<String> = after
        .bgp
        .peers
        .iter()
        .filter(|p| !before.bgp.peers.contains(p))
        .map(|p| p.name())
        .collect();
    assert_eq!(changed, ["Global_10_0_0_254"]);
    assert_eq!(
        crate::sync::password_news(Some(&before), &after),
        vec![crate::sync::PasswordNews::Rotated {
            peer: "Global_10_0_0_254".into()
        }]
    );
}

#[test]
fn the_mesh_password_is_held_down_like_a_peers() {
    let mut s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshPassword:\n    secretKeyRef:\n      name: mesh\n      key: pw\n",
        three_nodes()
    ));
    assert_eq!(
        crate::secrets::referenced(&s)
            .into_iter()
            .collect::<Vec<_>>(),
        ["mesh"]
    );
    in_kube_system(&mut s, "mesh", SecretState::Unreadable("forbidden".into()));
    for p in peers::compute(&s, "node-1") {
        assert_eq!(p.password, None);
        assert_eq!(
            p.password_unavailable.as_deref(),
            Some("password secret kube-system/mesh cannot be read (forbidden): session held down")
        );
    }
    in_kube_system(&mut s, "mesh", data(&[("pw", "m")]));
    assert!(
        peers::compute(&s, "node-1")
            .iter()
            .all(|p| p.password.as_deref() == Some("m") && p.password_unavailable.is_none())
    );
}

#[test]
fn password_news_tells_held_down_released_and_rotated_without_values() {
    use crate::sync::{PasswordNews, password_news};
    let mut s = state(&tor_with_password());
    in_kube_system(&mut s, "bgp-secrets", SecretState::Missing);
    let held = compute(&s, "node-1").unwrap();
    let news = password_news(None, &held);
    assert!(
        matches!(&news[..], [PasswordNews::HeldDown { peer, reason }]
            if peer == "Global_10_0_0_254" && reason.contains("does not exist")),
        "{news:?}"
    );
    assert!(password_news(Some(&held), &held).is_empty(), "said once");
    in_kube_system(&mut s, "bgp-secrets", data(&[("tor-password", "k")]));
    let up = compute(&s, "node-1").unwrap();
    assert_eq!(
        password_news(Some(&held), &up),
        vec![PasswordNews::Available {
            peer: "Global_10_0_0_254".into()
        }]
    );
    assert!(!format!("{:?}", password_news(Some(&held), &up)).contains("\"k\""));
}

#[test]
fn a_nodes_listen_port_is_used_by_its_peers() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-2\nspec:\n  listenPort: 1179\n",
        three_nodes()
    ));
    let p1 = peers::compute(&s, "node-1");
    assert_eq!(find(&p1, "10.0.0.10").port, Some(1179));
    assert_eq!(find(&p1, "10.0.1.5").port, None);
    assert_eq!(compute(&s, "node-2").unwrap().bgp.listen_port, 1179);
    assert_eq!(compute(&s, "node-1").unwrap().bgp.listen_port, 179);
}

#[test]
fn log_severity_screen_reaches_bird_a_node_may_override() {
    let bgp = |name: &str, sev: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: {name}\nspec:\n  logSeverityScreen: {sev}\n"
        )
    };
    let sev = |s: &ClusterState, n: &str| {
        crate::wire::bgp_config(&compute(s, n).unwrap().bgp).log_severity
    };
    assert_eq!(sev(&state(&three_nodes()), "node-1"), "Info");
    let s = state(&format!(
        "{}{}{}",
        three_nodes(),
        bgp("default", "Warning"),
        bgp("node.node-1", "Debug")
    ));
    assert_eq!(sev(&s, "node-1"), "Debug");
    assert_eq!(sev(&s, "node-2"), "Warning");
}

#[test]
fn ignored_interfaces_reach_bird_a_node_may_override() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  ignoredInterfaces: [\"eth9\", \"vlan*\"]\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-2\nspec:\n  ignoredInterfaces: [\"bond1\"]\n",
        three_nodes()
    ));
    let ignored =
        |n: &str| crate::wire::bgp_config(&compute(&s, n).unwrap().bgp).ignored_interfaces;
    assert_eq!(ignored("node-1"), ["eth9", "vlan*"]);
    assert_eq!(ignored("node-2"), ["bond1"]);
}

#[test]
fn bind_mode_node_ip_makes_bird_listen_on_the_nodes_address_a_node_may_override() {
    let bgp = |name: &str, mode: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: {name}\nspec:\n  bindMode: {mode}\n"
        )
    };
    let s = state(&three_nodes());
    assert_eq!(compute(&s, "node-1").unwrap().bgp.listen_address, None);
    let s = state(&format!("{}{}", three_nodes(), bgp("default", "NodeIP")));
    assert_eq!(
        compute(&s, "node-1").unwrap().bgp.listen_address,
        Some("10.0.0.9".parse().unwrap())
    );
    let s = state(&format!(
        "{}{}{}",
        three_nodes(),
        bgp("default", "NodeIP"),
        bgp("node.node-1", "None")
    ));
    assert_eq!(compute(&s, "node-1").unwrap().bgp.listen_address, None);
    // A dual-stack node listens on both its addresses.
    let dual = state(&format!(
        "{}{}",
        three_nodes().replace(
            "    ipv4Address: 10.0.0.10/24\n",
            "    ipv4Address: 10.0.0.10/24\n    ipv6Address: fd00::10/64\n"
        ),
        bgp("default", "NodeIP")
    ));
    let node2 = crate::wire::bgp_config(&compute(&dual, "node-2").unwrap().bgp);
    let ip = |a: Option<proto::common::IpAddress>| a.and_then(|a| IpAddr::try_from(&a).ok());
    assert_eq!(ip(node2.listen_address), Some("10.0.0.10".parse().unwrap()));
    assert_eq!(
        ip(node2.listen_address_v6),
        Some("fd00::10".parse().unwrap())
    );
    let node1 = compute(&dual, "node-1").unwrap().bgp;
    assert!(node1.listen_address.is_some() && node1.listen_address_v6.is_none());
    assert_eq!(
        crate::wire::bgp_config(&compute(&s, "node-2").unwrap().bgp)
            .listen_address
            .and_then(|a| std::net::IpAddr::try_from(&a).ok()),
        Some("10.0.0.10".parse().unwrap())
    );
}

#[test]
fn ipv6_addresses_get_their_own_mesh_sessions() {
    let nodes = [
        node("node-1", "10.0.0.1/24", ""),
        node("node-2", "10.0.0.2/24", ""),
    ]
    .concat()
    .replace(
        "    ipv4Address: 10.0.0.1/24\n",
        "    ipv4Address: 10.0.0.1/24\n    ipv6Address: fd00::1/64\n",
    )
    .replace(
        "    ipv4Address: 10.0.0.2/24\n",
        "    ipv4Address: 10.0.0.2/24\n    ipv6Address: fd00::2/64\n",
    );
    let s = state(&nodes);
    let p = peers::compute(&s, "node-1");
    let mut got = addrs(&p);
    got.sort();
    assert_eq!(got, ["10.0.0.2", "fd00::2"]);
    assert_eq!(
        find(&p, "fd00::2").source_address,
        Some("fd00::1".parse().unwrap())
    );
}

#[test]
fn node_config_advertises_only_exported_blocks_of_valid_pools() {
    let mut s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: main\nspec:\n  cidr: 10.65.0.0/16\n  ipipMode: CrossSubnet\n  natOutgoing: true\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: quiet\nspec:\n  cidr: 10.66.0.0/16\n  disableBGPExport: true\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: overlap\nspec:\n  cidr: 10.65.128.0/17\n",
        three_nodes()
    ));
    s.blocks.insert(
        "node-1".into(),
        vec![
            "10.65.0.0/26".parse().unwrap(),
            "10.66.0.0/26".parse().unwrap(),
        ],
    );
    let cfg = compute(&s, "node-1").unwrap();
    assert_eq!(cfg.bgp.router_id.to_string(), "10.0.0.9");
    assert_eq!(cfg.felix.node_ip.unwrap().to_string(), "10.0.0.9/24");
    assert_eq!(cfg.felix.local_blocks.len(), 2);
    // "main" and "overlap" overlap: neither is valid, so 10.65/16 is not
    // exported either; "quiet" is valid but not exported.
    assert!(cfg.bgp.advertise.is_empty(), "{:?}", cfg.bgp.advertise);
    let names: Vec<&str> = cfg
        .felix
        .invalid_pools
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        names.contains(&"main") && names.contains(&"overlap"),
        "{names:?}"
    );
    s.pools.remove("overlap");
    let cfg = compute(&s, "node-1").unwrap();
    assert_eq!(cfg.bgp.advertise, vec!["10.65.0.0/26".parse().unwrap()]);
    assert_eq!(cfg.felix.pools.len(), 2);
    let text = render(&cfg);
    assert!(text.contains("CrossSubnet"), "{text}");
    assert!(text.contains("10.65.0.0/26"), "{text}");
}

#[test]
fn unknown_nodes_and_nodes_without_an_address_are_clear_errors() {
    let s = state(&format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: bare\nspec: {{}}\n",
        three_nodes()
    ));
    assert_eq!(
        compute(&s, "ghost").unwrap_err(),
        ConfigError::UnknownNode("ghost".into())
    );
    let err = compute(&s, "bare").unwrap_err();
    assert!(err.to_string().contains("IP_AUTODETECTION_METHOD"), "{err}");
    // A node without an address is simply not a peer of the others.
    assert_eq!(peers::compute(&s, "node-1").len(), 2);
}

#[test]
fn bfd_and_max_prefixes_come_from_the_bgppeer_and_nodemeshbfd_for_the_mesh() {
    use std::time::Duration;
    let yaml = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  maxPrefixes: 1000\n  bfd:\n    interval: 300ms\n    multiplier: 3\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshBFD: {{}}\n",
        three_nodes()
    );
    let peers = peers::compute(&state(&yaml), "node-1");
    assert_eq!(
        find(&peers, "10.0.0.254").bfd,
        Some((Duration::from_millis(300), 3))
    );
    // `nodeMeshBFD: {}`: BFD with the defaults on every mesh session.
    for p in peers.iter().filter(|p| p.kind == PeerKind::Mesh) {
        assert_eq!(p.bfd, Some((Duration::from_millis(100), 5)), "{p:?}");
    }
    // And on the wire to bird.
    let wire = crate::wire::bgp_config(&compute(&state(&yaml), "node-1").unwrap().bgp);
    let tor = wire
        .peers
        .iter()
        .find(|p| p.name == "Global_10_0_0_254")
        .unwrap();
    assert_eq!(tor.max_prefixes, 1000);
    assert!(
        wire.peers
            .iter()
            .filter(|p| p.name.starts_with("Mesh_"))
            .all(|p| p.max_prefixes == 0)
    );
    assert_eq!(
        tor.bfd,
        Some(proto::bgpconfig::BfdConfig {
            interval_ms: 300,
            multiplier: 3,
            multihop: false,
            ..Default::default()
        })
    );
    // node-3 (10.0.1.5) is in another subnet than node-1 (10.0.0.9/24):
    // multihop BFD; node-2 (10.0.0.10) is on-link.
    let mesh = |addr: &str| {
        wire.peers
            .iter()
            .find(|p| p.name == format!("Mesh_{}", addr.replace('.', "_")))
            .and_then(|p| p.bfd.as_ref())
            .map(|b| b.multihop)
    };
    assert_eq!(mesh("10.0.1.5"), Some(true));
    assert_eq!(mesh("10.0.0.10"), Some(false));
    // Without either, no BFD.
    let peers = peers::compute(&state(&three_nodes()), "node-1");
    assert!(peers.iter().all(|p| p.bfd.is_none()));
}

#[test]
fn bad_bfd_and_max_prefixes_settings_are_refused_with_their_fields() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  maxPrefixes: 0\n  bfd:\n    interval: 1ms\n    multiplier: 0\n";
    let Some(CalicoResource::BGPPeer(p)) = parse_manifests(yaml).unwrap().pop() else {
        panic!("not a BGPPeer");
    };
    let err = p.validate().unwrap_err().to_string();
    assert!(
        err.contains("spec.bfd.interval")
            && err.contains("spec.bfd.multiplier")
            && err.contains("spec.maxPrefixes"),
        "{err}"
    );
}

fn tor_with_bfd_auth(auth: &str) -> String {
    format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  bfd:\n    interval: 200ms\n    authentication:\n{auth}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshBFD:\n    authentication:\n      type: KeyedSHA1\n      keyID: 1\n      secretKeyRef:\n        name: mesh-bfd\n        key: k\n",
        three_nodes()
    )
}

const TOR_AUTH: &str = "      type: MeticulousKeyedSHA1\n      keyID: 42\n      secretKeyRef:\n        name: bfd-keys\n        key: tor\n";

#[test]
fn bfd_keys_come_from_secrets_reach_bird_and_are_never_rendered() {
    let mut s = state(&tor_with_bfd_auth(TOR_AUTH));
    assert_eq!(
        crate::secrets::referenced(&s)
            .into_iter()
            .collect::<Vec<_>>(),
        ["bfd-keys", "mesh-bfd"]
    );
    in_kube_system(&mut s, "bfd-keys", data(&[("tor", "bfd-s3cret\n")]));
    in_kube_system(&mut s, "mesh-bfd", data(&[("k", "meshkey")]));
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.password_unavailable, None);
    let a = tor.bfd_auth.as_ref().unwrap();
    assert_eq!(
        (a.kind, a.key_id, a.key.as_str()),
        (
            ippool_crd::BFDAuthType::MeticulousKeyedSHA1,
            42,
            "bfd-s3cret"
        )
    );
    for p in peers.iter().filter(|p| p.kind == PeerKind::Mesh) {
        let a = p.bfd_auth.as_ref().unwrap();
        assert_eq!(a.key, "meshkey", "{p:?}");
    }
    let cfg = compute(&s, "node-1").unwrap();
    let wire = crate::wire::bgp_config(&cfg.bgp);
    let b = wire
        .peers
        .iter()
        .find(|p| p.name == "Global_10_0_0_254")
        .and_then(|p| p.bfd.as_ref())
        .unwrap();
    assert_eq!(
        (
            b.interval_ms,
            b.auth_type,
            b.auth_key_id,
            b.auth_key.as_str()
        ),
        (
            200,
            proto::bgpconfig::BfdAuthType::MeticulousKeyedSha1 as i32,
            42,
            "bfd-s3cret"
        )
    );
    let text = render(&cfg);
    assert!(
        !text.contains("bfd-s3cret") && !text.contains("meshkey"),
        "{text}"
    );
    assert!(
        text.contains("bfd-auth MeticulousKeyedSHA1 id 42"),
        "{text}"
    );
}

#[test]
fn a_peer_whose_bfd_key_cannot_be_had_is_held_down_and_says_why() {
    let mut s = state(&tor_with_bfd_auth(TOR_AUTH));
    in_kube_system(&mut s, "mesh-bfd", data(&[("k", "meshkey")]));
    in_kube_system(&mut s, "bfd-keys", SecretState::Missing);
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.bfd_auth, None);
    assert_eq!(
        tor.password_unavailable.as_deref(),
        Some("BFD key secret kube-system/bfd-keys does not exist: session held down")
    );
    // The mesh, with its own key, runs.
    assert!(
        peers
            .iter()
            .filter(|p| p.kind == PeerKind::Mesh)
            .all(|p| p.password_unavailable.is_none() && p.bfd_auth.is_some())
    );
    // A key longer than SHA1's 20 bytes cannot be used either.
    in_kube_system(&mut s, "bfd-keys", data(&[("tor", &"k".repeat(21))]));
    let why = find(&peers::compute(&s, "node-1"), "10.0.0.254")
        .password_unavailable
        .clone()
        .unwrap();
    assert!(why.contains("longer than 20 bytes"), "{why}");
    // Invalid authentication (no keyID): held down, never run without.
    let mut s = state(&tor_with_bfd_auth(
        "      type: KeyedSHA1\n      secretKeyRef:\n        name: bfd-keys\n        key: tor\n",
    ));
    in_kube_system(&mut s, "bfd-keys", data(&[("tor", "k")]));
    let peers = peers::compute(&s, "node-1");
    let tor = find(&peers, "10.0.0.254");
    assert_eq!(tor.bfd_auth, None);
    assert!(
        tor.password_unavailable
            .as_deref()
            .is_some_and(|w| w.contains("bfd.authentication needs")),
        "{tor:?}"
    );
}

#[test]
fn bad_bfd_authentication_is_refused_with_its_fields() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  bfd:\n    authentication:\n      keyID: 300\n";
    let Some(CalicoResource::BGPPeer(p)) = parse_manifests(yaml).unwrap().pop() else {
        panic!("not a BGPPeer");
    };
    let err = p.validate().unwrap_err().to_string();
    for field in [
        "spec.bfd.authentication.type",
        "spec.bfd.authentication.keyID",
        "spec.bfd.authentication.secretKeyRef",
    ] {
        assert!(err.contains(field), "{field} not in {err}");
    }
}

#[test]
fn prefix_advertisements_reach_the_wire_with_names_resolved_and_bad_entries_left_out() {
    let yaml = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - name: gold\n    value: \"65000:100\"\n  - name: big\n    value: \"65000:7:8\"\n  - name: broken\n    value: \"70000:1\"\n  prefixAdvertisements:\n  - cidr: 10.65.0.0/16\n    communities: [gold, big, \"65001:5\"]\n  - cidr: 10.66.0.0/16\n    communities: [nobody]\n  - cidr: 10.67.0.0/16\n    communities: [broken]\n  - cidr: fd65::/48\n    communities: [\"1:2:3\"]\n",
        three_nodes()
    );
    let s = state(&yaml);
    let cfg = compute(&s, "node-1").unwrap();
    // The rest of the configuration is untouched by the bad entries.
    assert_eq!(cfg.bgp.peers.len(), 2);
    let wire = crate::wire::bgp_config(&cfg.bgp);
    let got: Vec<(String, Vec<u32>, Vec<[u32; 3]>)> = wire
        .prefix_communities
        .iter()
        .map(|p| {
            (
                ipnetwork::IpNetwork::try_from(p.cidr.as_ref().unwrap())
                    .unwrap()
                    .to_string(),
                p.communities.clone(),
                p.large_communities
                    .iter()
                    .map(|l| [l.global_admin, l.local_data1, l.local_data2])
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "10.65.0.0/16".to_string(),
                vec![(65000 << 16) | 100, (65001 << 16) | 5],
                vec![[65000, 7, 8]]
            ),
            ("fd65::/48".to_string(), vec![], vec![[1, 2, 3]]),
        ]
    );
    let errs = &cfg.bgp.invalid_prefix_advertisements;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("BGPConfiguration \"default\": spec.prefixAdvertisements[1]")
            && errs[0].contains("\"nobody\""),
        "{}",
        errs[0]
    );
    assert!(errs[1].contains("\"broken\""), "{}", errs[1]);
    let text = render(&cfg);
    assert!(text.contains("[prefix communities] (2)"), "{text}");
    assert!(text.contains("65000:100 65000:7:8 65001:5"), "{text}");
    assert!(
        text.contains("IGNORED: BGPConfiguration \"default\""),
        "{text}"
    );
}

#[test]
fn a_nodes_own_prefix_advertisements_replace_the_clusters_and_use_its_names() {
    let yaml = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - name: gold\n    value: \"65000:100\"\n  prefixAdvertisements:\n  - cidr: 10.65.0.0/16\n    communities: [gold]\n---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-2\nspec:\n  prefixAdvertisements:\n  - cidr: 10.65.0.0/16\n    communities: [gold, \"65000:200\"]\n",
        three_nodes()
    );
    let s = state(&yaml);
    let std = |n: &str| -> Vec<Vec<u32>> {
        crate::wire::bgp_config(&compute(&s, n).unwrap().bgp)
            .prefix_communities
            .iter()
            .map(|p| p.communities.clone())
            .collect()
    };
    assert_eq!(std("node-1"), vec![vec![(65000 << 16) | 100]]);
    assert_eq!(
        std("node-2"),
        vec![vec![(65000 << 16) | 100, (65000 << 16) | 200]]
    );
}

#[test]
fn a_bgppeers_filters_reach_the_wire_in_order_and_a_missing_one_holds_the_session_down() {
    let filters = "---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: first\nspec:\n  exportV4:\n  - {action: Reject, matchOperator: Equal, cidr: 10.65.9.0/26}\n  importV4:\n  - {action: Reject, matchOperator: In, cidr: 172.16.0.0/12, prefixLength: {min: 16, max: 24}}\n  importV6:\n  - {action: Reject, matchOperator: NotIn, cidr: 'fd00::/8'}\n---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: second\nspec:\n  exportV4:\n  - {action: Accept, source: RemotePeers}\n";
    let peer = |names: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  filters: [{names}]\n"
        )
    };
    let s = state(&format!(
        "{}{filters}{}",
        three_nodes(),
        peer("first, second")
    ));
    let cfg = compute(&s, "node-1").unwrap();
    let wire = crate::wire::bgp_config(&cfg.bgp);
    let tor = wire
        .peers
        .iter()
        .find(|p| p.name == "Global_10_0_0_254")
        .unwrap();
    assert!(tor.password_unavailable.is_empty(), "{tor:?}");
    let show = |r: &proto::bgpconfig::FilterRule| {
        (
            r.action,
            r.ipv4,
            r.match_operator,
            r.cidr
                .as_ref()
                .map(|c| ipnetwork::IpNetwork::try_from(c).unwrap().to_string()),
            r.min_len,
            r.max_len,
            r.remote_peers_only,
        )
    };
    use proto::bgpconfig::{FilterAction as A, MatchOperator as M};
    let export: Vec<_> = tor.export_filter.iter().map(show).collect();
    assert_eq!(
        export,
        vec![
            (
                A::Reject as i32,
                true,
                M::Equal as i32,
                Some("10.65.9.0/26".into()),
                None,
                None,
                false
            ),
            (
                A::Accept as i32,
                true,
                M::Unspecified as i32,
                None,
                None,
                None,
                true
            ),
        ]
    );
    let import: Vec<_> = tor.import_filter.iter().map(show).collect();
    assert_eq!(
        import,
        vec![
            (
                A::Reject as i32,
                true,
                M::In as i32,
                Some("172.16.0.0/12".into()),
                Some(16),
                Some(24),
                false
            ),
            (
                A::Reject as i32,
                false,
                M::NotIn as i32,
                Some("fd00::/8".into()),
                None,
                None,
                false
            ),
        ]
    );
    // Mesh peers get no filters.
    assert!(
        wire.peers
            .iter()
            .filter(|p| p.name.starts_with("Mesh_"))
            .all(|p| p.import_filter.is_empty() && p.export_filter.is_empty())
    );
    assert!(
        render(&cfg).contains("filter rules import 2 export 2"),
        "{}",
        render(&cfg)
    );

    // A filter that does not exist: that session is held down, saying
    // which; the others are untouched.
    let s = state(&format!(
        "{}{filters}{}",
        three_nodes(),
        peer("first, nosuch")
    ));
    let cfg = compute(&s, "node-1").unwrap();
    let tor = find(&cfg.bgp.peers, "10.0.0.254");
    let why = tor.password_unavailable.as_deref().unwrap_or_default();
    assert!(why.contains("BGPFilter \"nosuch\" does not exist"), "{why}");
    assert_eq!(
        cfg.bgp
            .peers
            .iter()
            .filter(|p| p.password_unavailable.is_none())
            .count(),
        2
    );
}

#[test]
fn an_ipv6_only_node_needs_a_router_id_and_meshes_over_ipv6() {
    let v6_node = |name: &str, ip6: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  bgp:\n    ipv6Address: {ip6}\n"
        )
    };
    let mut s = state(&format!(
        "{}{}---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: bare\nspec: {{}}\n",
        v6_node("v6-a", "fd00::a/64"),
        v6_node("v6-b", "fd00::b/64")
    ));
    // No IPv4 address to be the router ID: say what to set.
    let e = compute(&s, "v6-a").unwrap_err().to_string();
    assert!(e.contains("CALICO_ROUTER_ID"), "{e}");
    let e = compute(&s, "bare").unwrap_err().to_string();
    assert!(e.contains("neither an IPv4 nor an IPv6"), "{e}");

    s.router_id = Some("hash".parse().unwrap());
    let a = compute(&s, "v6-a").unwrap();
    let b = compute(&s, "v6-b").unwrap();
    // Stable per name, different between nodes.
    assert_eq!(a.bgp.router_id, compute(&s, "v6-a").unwrap().bgp.router_id);
    assert_ne!(a.bgp.router_id, b.bgp.router_id);
    assert_eq!(addrs(&a.bgp.peers), ["fd00::b"]);
    assert_eq!(a.felix.node_ip, None);
    let wire = crate::wire::dataplane_config(&a.felix);
    assert!(wire.node_ip.is_none() && wire.node_ipv6.is_some());
    // A fixed one is used as given; a bad one is refused.
    s.router_id = Some("192.0.2.7".parse().unwrap());
    assert_eq!(
        compute(&s, "v6-b").unwrap().bgp.router_id,
        "192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let bad = "fd00::1".parse::<crate::state::RouterId>().unwrap_err();
    assert!(bad.contains("CALICO_ROUTER_ID"), "{bad}");
}
