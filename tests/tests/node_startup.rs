//! calico-node's start-up steps against a real etcd.
#![allow(clippy::unwrap_used)]

use ippool_crd::{EncapMode, IPPool, Node};
use node::settings::{IpSetting, Settings};
use node::startup::{self, StartupError};
use tests::EtcdServer;

fn settings(name: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![("NODENAME".into(), name.into())];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_env(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
}

#[tokio::test]
async fn registration_sets_address_and_as_and_refuses_a_duplicate_address() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s1 = settings("node-1", &[("IP", "10.0.0.1/24"), ("AS", "64513")]);
    let addr = startup::resolve_address(&s1.ip).unwrap();
    startup::register_node(&c, &s1, addr).await.unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.bgp_ipv4().unwrap().to_string(), "10.0.0.1/24");
    assert_eq!(n.asn(), Some(64513));

    // Re-registering with a new address updates it in place.
    let s1b = settings("node-1", &[("IP", "10.0.0.9/24")]);
    startup::register_node(&c, &s1b, startup::resolve_address(&s1b.ip).unwrap())
        .await
        .unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.bgp_ipv4().unwrap().ip().to_string(), "10.0.0.9");
    assert_eq!(n.asn(), Some(64513), "AS kept when AS is unset");

    // Another node may not take the same address.
    let s2 = settings("node-2", &[("IP", "10.0.0.9/24")]);
    let err = startup::register_node(&c, &s2, startup::resolve_address(&s2.ip).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StartupError::AddressInUse { .. }), "{err}");
    assert!(err.to_string().contains("node-1"), "{err}");
    assert!(c.get::<Node>("node-2").await.unwrap().is_none());
}

#[tokio::test]
async fn the_default_pool_is_created_once_and_never_over_an_operators_pool() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s = settings(
        "n",
        &[
            ("CALICO_IPV4POOL_CIDR", "10.65.0.0/16"),
            ("CALICO_IPV4POOL_IPIP", "CrossSubnet"),
        ],
    );
    let pool = s.default_pool.clone().unwrap();
    assert!(startup::ensure_default_pool(&c, &pool).await.unwrap());
    assert!(
        !startup::ensure_default_pool(&c, &pool).await.unwrap(),
        "only once"
    );
    let p: IPPool = c.get("default-ipv4-ippool").await.unwrap().unwrap();
    let cfg = p.config().unwrap();
    assert_eq!(cfg.cidr.to_string(), "10.65.0.0/16");
    assert_eq!(cfg.ipip_mode, EncapMode::CrossSubnet);
    assert!(cfg.nat_outgoing);

    // A cluster whose operator made their own IPv4 pool gets no default.
    let etcd2 = EtcdServer::start().unwrap();
    let c2 = datastore::connect_etcd(&etcd2.endpoint()).await.unwrap();
    let mine: IPPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "operators-pool"}, "spec": {"cidr": "172.20.0.0/16"},
    }))
    .unwrap();
    c2.create(&mine).await.unwrap();
    assert!(!startup::ensure_default_pool(&c2, &pool).await.unwrap());
    assert!(
        c2.get::<IPPool>("default-ipv4-ippool")
            .await
            .unwrap()
            .is_none()
    );
    // The operator's pool is IPv4: an IPv6 default is still made.
    let s6 = settings(
        "n",
        &[
            ("CALICO_IPV6POOL_CIDR", "fd00:65::/48"),
            ("CALICO_IPV6POOL_VXLAN", "Always"),
        ],
    );
    let pool6 = s6.default_pool_v6.clone().unwrap();
    assert!(startup::ensure_default_pool(&c2, &pool6).await.unwrap());
    assert!(!startup::ensure_default_pool(&c2, &pool6).await.unwrap());
    let p: IPPool = c2.get("default-ipv6-ippool").await.unwrap().unwrap();
    let cfg = p.config().unwrap();
    assert_eq!(cfg.cidr.to_string(), "fd00:65::/48");
    assert_eq!(cfg.vxlan_mode, EncapMode::Always);
    assert_eq!(cfg.ipip_mode, EncapMode::Never);
    assert_eq!(cfg.block_size, 122);
    assert!(!cfg.nat_outgoing);
    // Without CALICO_IPV6POOL_CIDR there is no IPv6 default; bad values
    // are refused with the variable named.
    assert!(s.default_pool_v6.is_none());
    for (k, v) in [
        ("CALICO_IPV6POOL_CIDR", "10.0.0.0/8"),
        ("CALICO_IPV6POOL_CIDR", "fd00::1/64"),
        ("CALICO_IPV6POOL_BLOCK_SIZE", "64"),
    ] {
        let mut vars = vec![("NODENAME", "n"), ("CALICO_IPV6POOL_CIDR", "fd00:65::/48")];
        vars.retain(|(n, _)| *n != k);
        vars.push((k, v));
        let e = Settings::from_env(|n| {
            vars.iter()
                .find(|(x, _)| *x == n)
                .map(|(_, v)| v.to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(k), "{e}");
    }
}

#[tokio::test]
async fn a_vxlan_pool_gives_the_node_a_vtep_address_and_mac_kept_until_no_pool_uses_vxlan() {
    use datastore::ipam::{Ipam, TunnelKind};
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s = settings("node-1", &[("IP", "10.0.0.1/24")]);
    startup::register_node(&c, &s, startup::resolve_address(&s.ip).unwrap())
        .await
        .unwrap();
    let pool = |name: &str, cidr: &str, ipip: &str, vxlan: &str| -> IPPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "ipipMode": ipip, "vxlanMode": vxlan},
        }))
        .unwrap()
    };
    // An IPIP pool only: no VTEP.
    c.create(&pool("ipip", "10.70.0.0/24", "Always", "Never"))
        .await
        .unwrap();
    let t = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    assert!(t.ipip.is_some() && t.vxlan.is_none(), "{t:?}");
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert!(n.spec.ipv4_vxlan_tunnel_addr.is_none());
    assert!(n.spec.vxlan_tunnel_mac_addr.is_none());

    // A VXLAN pool: the VTEP address comes from it (not from the IPIP
    // pool), with a unicast, locally administered MAC, both on the Node.
    c.create(&pool("vxlan", "10.80.0.0/24", "Never", "CrossSubnet"))
        .await
        .unwrap();
    let t = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    let (vtep, mac) = t.vxlan.unwrap();
    assert!(
        "10.80.0.0/24"
            .parse::<ipnetwork::Ipv4Network>()
            .unwrap()
            .contains(vtep),
        "{vtep}"
    );
    assert_eq!(mac[0] & 0x03, 0x02, "{mac:02x?}");
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.vxlan_tunnel_addr_v4(), Some(vtep));
    assert_eq!(
        n.spec.vxlan_tunnel_mac_addr.as_deref(),
        Some(startup::format_mac(mac).as_str())
    );
    let ipam = Ipam::new(c.clone());
    assert_eq!(
        ipam.ips_by_handle(&TunnelKind::Vxlan.handle("node-1"))
            .await
            .unwrap(),
        vec![std::net::IpAddr::V4(vtep)]
    );
    // Again: the same address and MAC, nothing rewritten.
    let rev = n.metadata.resource_version.clone();
    assert_eq!(startup::sync_tunnel_address(&c, "node-1").await.unwrap(), t);
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.metadata.resource_version, rev);

    // VXLAN off everywhere: the address is released and cleared; the IPIP
    // address stays.
    let mut p: IPPool = c.get("vxlan").await.unwrap().unwrap();
    p.spec.vxlan_mode = Some(EncapMode::Never);
    c.update(&p).await.unwrap();
    let t2 = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    assert_eq!((t2.ipip, t2.vxlan), (t.ipip, None));
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert!(n.spec.ipv4_vxlan_tunnel_addr.is_none());
    assert!(
        ipam.ips_by_handle(&TunnelKind::Vxlan.handle("node-1"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_ipv6_vxlan_pool_gives_the_node_a_v6_vtep_and_its_own_mac_kept_until_no_v6_pool_uses_vxlan()
 {
    use datastore::ipam::{Ipam, TunnelKind};
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let s = settings("node-1", &[("IP", "10.0.0.1/24"), ("IP6", "fd00:1::1/64")]);
    startup::register_node(&c, &s, startup::resolve_address(&s.ip).unwrap())
        .await
        .unwrap();
    // IP6 is the node's IPv6 address, the IPv6 VTEP's underlay address.
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.bgp_ipv6().unwrap().to_string(), "fd00:1::1/64");
    let pool = |name: &str, cidr: &str, vxlan: &str| -> IPPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, "vxlanMode": vxlan},
        }))
        .unwrap()
    };
    // An IPv4 VXLAN pool and an IPv6 one: two VTEPs, two MACs.
    c.create(&pool("v4", "10.80.0.0/24", "Always"))
        .await
        .unwrap();
    c.create(&pool("v6", "fd00:80::/120", "Always"))
        .await
        .unwrap();
    let t = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    let (vtep4, mac4) = t.vxlan.unwrap();
    let (vtep6, mac6) = t.vxlan_v6.unwrap();
    assert!(
        "fd00:80::/120"
            .parse::<ipnetwork::Ipv6Network>()
            .unwrap()
            .contains(vtep6),
        "{vtep6}"
    );
    assert_ne!(mac4, mac6);
    assert_eq!(mac6[0] & 0x03, 0x02, "{mac6:02x?}");
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.vxlan_tunnel_addr_v4(), Some(vtep4));
    assert_eq!(n.vxlan_tunnel_addr_v6(), Some(vtep6));
    assert_eq!(
        n.spec.vxlan_tunnel_mac_addr_v6.as_deref(),
        Some(startup::format_mac(mac6).as_str())
    );
    let ipam = Ipam::new(c.clone());
    assert_eq!(
        ipam.ips_by_handle("vxlan-v6-tunnel-addr-node-1")
            .await
            .unwrap(),
        vec![std::net::IpAddr::V6(vtep6)]
    );
    assert_eq!(
        TunnelKind::VxlanV6.handle("node-1"),
        "vxlan-v6-tunnel-addr-node-1"
    );
    // Again: the same addresses and MACs, nothing rewritten.
    let rev = n.metadata.resource_version.clone();
    assert_eq!(startup::sync_tunnel_address(&c, "node-1").await.unwrap(), t);
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(n.metadata.resource_version, rev);

    // VXLAN off on the IPv6 pool: the v6 VTEP is released and cleared, the
    // IPv4 one stays; the v6 MAC is kept for when it comes back.
    let mut p: IPPool = c.get("v6").await.unwrap().unwrap();
    p.spec.vxlan_mode = Some(EncapMode::Never);
    c.update(&p).await.unwrap();
    let t2 = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    assert_eq!((t2.vxlan, t2.vxlan_v6), (t.vxlan, None));
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert!(n.spec.ipv6_vxlan_tunnel_addr.is_none());
    assert_eq!(n.vxlan_tunnel_addr_v4(), Some(vtep4));
    assert!(
        ipam.ips_by_handle(&TunnelKind::VxlanV6.handle("node-1"))
            .await
            .unwrap()
            .is_empty()
    );
    // Back on: a v6 VTEP again, with the MAC chosen before.
    p = c.get("v6").await.unwrap().unwrap();
    p.spec.vxlan_mode = Some(EncapMode::CrossSubnet);
    c.update(&p).await.unwrap();
    let t3 = startup::sync_tunnel_address(&c, "node-1").await.unwrap();
    assert_eq!(t3.vxlan_v6.map(|v| v.1), Some(mac6));

    // Re-registering without IP6 keeps the address; IP6=none clears it.
    let s2 = settings("node-1", &[("IP", "10.0.0.1/24")]);
    startup::register_node(&c, &s2, startup::resolve_address(&s2.ip).unwrap())
        .await
        .unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert!(n.bgp_ipv6().is_some());
    let s3 = settings("node-1", &[("IP", "10.0.0.1/24"), ("IP6", "none")]);
    startup::register_node(&c, &s3, startup::resolve_address(&s3.ip).unwrap())
        .await
        .unwrap();
    let n: Node = c.get("node-1").await.unwrap().unwrap();
    assert!(n.bgp_ipv6().is_none());
    assert!(
        Settings::from_env(|k| match k {
            "NODENAME" => Some("n".into()),
            "IP6" => Some("autodetect".into()),
            "IP6_AUTODETECTION_METHOD" => Some("guess".into()),
            _ => None,
        })
        .is_err()
    );
}

#[test]
fn ip6_autodetect_finds_the_nodes_ipv6_address_past_link_local() {
    let node = lab::Netns::create("ip6det").unwrap();
    let peer = lab::Netns::create("ip6peer").unwrap();
    lab::veth(&node, "eth0", &peer, "p0").unwrap();
    node.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .unwrap();
    // nodad: usable as a source at once (no duplicate address detection).
    node.ip(&["addr", "add", "fd00:77::5/64", "dev", "eth0", "nodad"])
        .unwrap();
    for (method, want) in [
        ("", Some("fd00:77::5/64")),
        ("interface=eth0", Some("fd00:77::5/64")),
        ("cidr=fd00:77::/48", Some("fd00:77::5/64")),
        ("can-reach=fd00:77::99", Some("fd00:77::5/64")),
        ("cidr=2001:db8::/32", None),
    ] {
        let s = settings(
            "n",
            &[
                ("IP", "none"),
                ("IP6", "autodetect"),
                ("IP6_AUTODETECTION_METHOD", method),
            ],
        );
        let got = node
            .run(move || startup::resolve_address6(&s.ip6).map_err(|e| e.to_string()))
            .unwrap();
        match want {
            Some(w) => assert_eq!(got.unwrap(), Some(Some(w.parse().unwrap())), "{method}"),
            None => {
                let e = got.unwrap_err();
                assert!(e.contains("no IPv6 address") && e.contains("fe80"), "{e}");
            }
        }
    }
}

#[test]
fn macs_parse_and_print_the_way_calico_stores_them() {
    assert_eq!(
        startup::parse_mac("66:0A:ff:00:01:9c"),
        Some([0x66, 0x0a, 0xff, 0x00, 0x01, 0x9c])
    );
    assert_eq!(
        startup::format_mac([0x66, 0x0a, 0xff, 0x00, 0x01, 0x9c]),
        "66:0a:ff:00:01:9c"
    );
    for bad in [
        "",
        "66:0a:ff:00:01",
        "66:0a:ff:00:01:9c:00",
        "6:0a:ff:00:01:9c",
        "zz:0a:ff:00:01:9c",
    ] {
        assert_eq!(startup::parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn ip_none_registers_no_address() {
    let s = settings("n", &[("IP", "none")]);
    assert!(matches!(s.ip, IpSetting::None));
    assert_eq!(startup::resolve_address(&s.ip).unwrap(), None);
}
