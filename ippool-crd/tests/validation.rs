//! One test per validation rule: a bad example is rejected, and the error
//! names the field (and says how to fix it where there is an obvious fix).
#![allow(clippy::unwrap_used)]

use ippool_crd::{
    AllowedUse, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, Community, EncapMode,
    IPAMConfiguration, IPAMConfigurationSpec, IPIPConfiguration, IPPool, IPPoolSpec, Node,
    NodeBgpSpec, NodeSpec, PrefixAdvertisement, ServiceIPBlock, ValidationErrors,
    validate_pool_set,
};

fn pool(cidr: &str) -> IPPool {
    IPPool::new("p", IPPoolSpec::new(cidr))
}

fn pool_with(cidr: &str, f: impl FnOnce(&mut IPPoolSpec)) -> IPPool {
    let mut p = pool(cidr);
    f(&mut p.spec);
    p
}

/// Asserts `r` failed with an error on `field`, and returns that error's
/// rendered text.
fn error_on<T: std::fmt::Debug>(r: Result<T, ValidationErrors>, field: &str) -> String {
    let errs = match r {
        Ok(v) => panic!("expected an error on {field}, got Ok({v:?})"),
        Err(e) => e,
    };
    let e = errs
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error on {field}; got: {errs}"));
    let text = e.to_string();
    assert!(text.starts_with(field), "{text}");
    text
}

// ---------------------------------------------------------------- IPPool

#[test]
fn valid_pools_pass() {
    pool("10.65.0.0/16").config().unwrap();
    pool("fd00:10::/48").config().unwrap();
    pool_with("10.0.0.0/28", |s| s.block_size = Some(28))
        .config()
        .unwrap();
}

#[test]
fn missing_cidr_is_rejected_naming_spec_cidr() {
    let t = error_on(pool("").config(), "spec.cidr");
    assert!(t.contains("required"), "{t}");
}

#[test]
fn unparseable_cidr_is_rejected_naming_spec_cidr() {
    let t = error_on(pool("10.0.0.0/33").config(), "spec.cidr");
    assert!(t.contains("not a valid"), "{t}");
    let t = error_on(pool("10.0.0.0").config(), "spec.cidr");
    assert!(t.contains("no prefix length"), "{t}");
}

#[test]
fn unmasked_cidr_is_rejected_suggesting_the_masked_form() {
    let t = error_on(pool("10.0.0.1/24").config(), "spec.cidr");
    assert!(t.contains("not strictly masked"), "{t}");
    assert!(t.contains("did you mean 10.0.0.0/24?"), "{t}");
    let t = error_on(pool("fd00::1/64").config(), "spec.cidr");
    assert!(t.contains("fd00::/64"), "{t}");
}

#[test]
fn ipv4_block_size_33_is_rejected_naming_spec_block_size() {
    let t = error_on(
        pool_with("10.0.0.0/16", |s| s.block_size = Some(33)).config(),
        "spec.blockSize",
    );
    assert!(
        t.contains("spec.blockSize: 33 is out of range; IPv4 block sizes are 20–32"),
        "{t}"
    );
}

#[test]
fn ipv4_block_size_19_is_rejected_naming_spec_block_size() {
    error_on(
        pool_with("10.0.0.0/8", |s| s.block_size = Some(19)).config(),
        "spec.blockSize",
    );
}

#[test]
fn ipv6_block_size_115_is_rejected_naming_spec_block_size() {
    let t = error_on(
        pool_with("fd00::/48", |s| s.block_size = Some(115)).config(),
        "spec.blockSize",
    );
    assert!(t.contains("IPv6 block sizes are 116–128"), "{t}");
}

#[test]
fn ipv6_block_size_on_ipv4_pool_is_rejected_naming_spec_block_size() {
    error_on(
        pool_with("10.0.0.0/8", |s| s.block_size = Some(122)).config(),
        "spec.blockSize",
    );
}

#[test]
fn block_larger_than_pool_is_rejected_naming_spec_block_size() {
    // A /26 block does not fit in a /28 pool.
    let t = error_on(
        pool_with("10.0.0.0/28", |s| s.block_size = Some(26)).config(),
        "spec.blockSize",
    );
    assert!(t.contains("/26 block does not fit in the /28 pool"), "{t}");
    // The default block size (26) also has to fit.
    error_on(pool("10.0.0.0/28").config(), "spec.blockSize");
    error_on(pool("fd00::/124").config(), "spec.blockSize");
}

#[test]
fn block_larger_than_pool_is_allowed_on_a_disabled_pool_as_in_calico() {
    pool_with("10.0.0.0/28", |s| s.disabled = Some(true))
        .config()
        .unwrap();
}

#[test]
fn ipv4_link_local_overlap_is_rejected_naming_spec_cidr() {
    let t = error_on(pool("169.254.0.0/20").config(), "spec.cidr");
    assert!(t.contains("169.254.0.0/16"), "{t}");
    // Containing the range overlaps too.
    error_on(pool("169.0.0.0/8").config(), "spec.cidr");
}

#[test]
fn ipv6_link_local_overlap_is_rejected_naming_spec_cidr() {
    let t = error_on(pool("fe80::/64").config(), "spec.cidr");
    assert!(t.contains("fe80::/10"), "{t}");
}

#[test]
fn ipip_and_vxlan_both_on_is_rejected_naming_spec_ipip_mode() {
    let t = error_on(
        pool_with("10.0.0.0/16", |s| {
            s.ipip_mode = Some(EncapMode::Always);
            s.vxlan_mode = Some(EncapMode::CrossSubnet);
        })
        .config(),
        "spec.ipipMode",
    );
    assert!(t.contains("cannot both be enabled"), "{t}");
    // One of them Never is fine.
    pool_with("10.0.0.0/16", |s| {
        s.ipip_mode = Some(EncapMode::Always);
        s.vxlan_mode = Some(EncapMode::Never);
    })
    .config()
    .unwrap();
}

#[test]
fn ipip_on_ipv6_pool_is_rejected_naming_spec_ipip_mode() {
    let t = error_on(
        pool_with("fd00::/48", |s| s.ipip_mode = Some(EncapMode::CrossSubnet)).config(),
        "spec.ipipMode",
    );
    assert!(t.contains("IPv4-only"), "{t}");
    assert!(t.contains("vxlanMode"), "{t}");
}

#[test]
fn malformed_node_selector_is_rejected_naming_spec_node_selector() {
    let t = error_on(
        pool_with("10.0.0.0/16", |s| {
            s.node_selector = Some("rack = '1'".into())
        })
        .config(),
        "spec.nodeSelector",
    );
    assert!(t.contains("column 6"), "{t}");
}

#[test]
fn global_in_node_selector_is_rejected_naming_spec_node_selector() {
    error_on(
        pool_with("10.0.0.0/16", |s| s.node_selector = Some("global()".into())).config(),
        "spec.nodeSelector",
    );
}

#[test]
fn malformed_namespace_selector_is_rejected_naming_spec_namespace_selector() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.namespace_selector = Some("team ==".into());
            s.allowed_uses = Some(vec![AllowedUse::Workload]);
        })
        .config(),
        "spec.namespaceSelector",
    );
}

#[test]
fn load_balancer_mixed_with_workload_is_rejected_naming_spec_allowed_uses() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.allowed_uses = Some(vec![AllowedUse::LoadBalancer, AllowedUse::Workload]);
        })
        .config(),
        "spec.allowedUses",
    );
}

#[test]
fn load_balancer_pool_with_encapsulation_is_rejected_naming_spec_allowed_uses() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.allowed_uses = Some(vec![AllowedUse::LoadBalancer]);
            s.vxlan_mode = Some(EncapMode::Always);
        })
        .config(),
        "spec.allowedUses",
    );
}

#[test]
fn load_balancer_pool_without_bgp_export_is_rejected_naming_spec_disable_bgp_export() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.allowed_uses = Some(vec![AllowedUse::LoadBalancer]);
            s.disable_bgp_export = Some(true);
        })
        .config(),
        "spec.disableBGPExport",
    );
}

#[test]
fn load_balancer_pool_with_node_selector_is_rejected_naming_spec_node_selector() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.allowed_uses = Some(vec![AllowedUse::LoadBalancer]);
            s.node_selector = Some("has(a)".into());
        })
        .config(),
        "spec.nodeSelector",
    );
}

#[test]
fn tunnel_pool_with_namespace_selector_is_rejected_naming_spec_namespace_selector() {
    // Default allowedUses include Tunnel.
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.namespace_selector = Some("has(a)".into())
        })
        .config(),
        "spec.namespaceSelector",
    );
}

#[test]
fn duplicate_allowed_use_is_rejected_naming_spec_allowed_uses() {
    error_on(
        pool_with("10.0.0.0/16", |s| {
            s.allowed_uses = Some(vec![AllowedUse::Workload, AllowedUse::Workload]);
        })
        .config(),
        "spec.allowedUses",
    );
}

#[test]
fn deprecated_v1_fields_are_rejected_naming_them() {
    let t = error_on(
        pool_with("10.0.0.0/16", |s| {
            s.ipip = Some(IPIPConfiguration {
                enabled: Some(true),
                mode: Some("always".into()),
            })
        })
        .config(),
        "spec.ipip",
    );
    assert!(t.contains("ipipMode"), "{t}");
    let t = error_on(
        pool_with("10.0.0.0/16", |s| s.nat_outgoing_v1 = Some(true)).config(),
        "spec.nat-outgoing",
    );
    assert!(t.contains("natOutgoing"), "{t}");
}

#[test]
fn unnamed_pool_is_rejected_naming_metadata_name() {
    let mut p = pool("10.0.0.0/16");
    p.metadata.name = None;
    error_on(p.config(), "metadata.name");
}

#[test]
fn all_problems_are_reported_together() {
    let p = pool_with("10.0.0.1/16", |s| {
        s.block_size = Some(40);
        s.ipip_mode = Some(EncapMode::Always);
        s.vxlan_mode = Some(EncapMode::Always);
        s.node_selector = Some("((".into());
    });
    let errs = p.config().unwrap_err();
    for f in [
        "spec.cidr",
        "spec.blockSize",
        "spec.ipipMode",
        "spec.nodeSelector",
    ] {
        assert!(errs.has_field(f), "missing {f} in {errs}");
    }
    let text = errs.to_string();
    assert!(
        text.starts_with("IPPool \"p\" is invalid (4 problems):"),
        "{text}"
    );
}

#[test]
fn overlapping_pools_are_rejected_naming_both() {
    let a = IPPool::new("pool-a", IPPoolSpec::new("10.0.0.0/16"));
    let b = IPPool::new("pool-b", IPPoolSpec::new("10.0.128.0/24"));
    let c = IPPool::new("pool-c", IPPoolSpec::new("10.1.0.0/16"));
    let t = error_on(
        validate_pool_set(&[a.clone(), b.clone(), c.clone()]),
        "spec.cidr",
    );
    assert!(t.contains("\"pool-b\"") && t.contains("\"pool-a\""), "{t}");
    assert!(
        t.contains("10.0.128.0/24") && t.contains("10.0.0.0/16"),
        "{t}"
    );
    // Disjoint pools, and an IPv4 and an IPv6 pool, are fine.
    let v6 = IPPool::new("pool-v6", IPPoolSpec::new("fd00::/48"));
    assert_eq!(
        validate_pool_set(&[a.clone(), c.clone(), v6])
            .unwrap()
            .len(),
        3
    );
    // The single-pool form against the others.
    error_on(b.validate_against(std::slice::from_ref(&a)), "spec.cidr");
    c.validate_against(&[a.clone(), b.clone()]).unwrap();
    // A pool's previous version (same name) is not an overlap.
    a.validate_against(std::slice::from_ref(&a)).unwrap();
}

#[test]
fn pool_set_errors_say_which_pool() {
    let good = pool("10.0.0.0/16");
    let bad = IPPool::new("bad", IPPoolSpec::new("10.1.0.1/16"));
    let errs = validate_pool_set(&[good, bad]).unwrap_err();
    let e = errs.iter().find(|e| e.field == "spec.cidr").unwrap();
    assert!(e.message.starts_with("IPPool \"bad\""), "{e}");
}

#[test]
fn changing_cidr_or_block_size_on_update_is_rejected() {
    let old = pool("10.0.0.0/16");
    let t = error_on(pool("10.1.0.0/16").validate_update(&old), "spec.cidr");
    assert!(t.contains("cannot change"), "{t}");
    error_on(
        pool_with("10.0.0.0/16", |s| s.block_size = Some(24)).validate_update(&old),
        "spec.blockSize",
    );
    // Spelling the default out is not a change.
    pool_with("10.0.0.0/16", |s| s.block_size = Some(26))
        .validate_update(&old)
        .unwrap();
    let lb_old = pool_with("10.0.0.0/16", |s| {
        s.allowed_uses = Some(vec![AllowedUse::LoadBalancer])
    });
    error_on(
        pool("10.0.0.0/16").validate_update(&lb_old),
        "spec.allowedUses",
    );
}

#[test]
fn unknown_enum_values_fail_to_parse_with_the_value_named() {
    let err = serde_json::from_value::<IPPoolSpec>(serde_json::json!({
        "cidr": "10.0.0.0/16", "ipipMode": "always"
    }))
    .unwrap_err()
    .to_string();
    assert!(err.contains("always"), "{err}");
    // An empty string means unset, as in Calico's Go types.
    let spec: IPPoolSpec =
        serde_json::from_value(serde_json::json!({"cidr": "10.0.0.0/16", "vxlanMode": ""}))
            .unwrap();
    assert_eq!(spec.vxlan_mode, None);
}

// ---------------------------------------------------------------- BGPPeer

fn peer(f: impl FnOnce(&mut BGPPeerSpec)) -> BGPPeer {
    let mut spec = BGPPeerSpec::default();
    f(&mut spec);
    BGPPeer::new("peer", spec)
}

#[test]
fn valid_peers_pass() {
    for ip in [
        "192.0.2.1",
        "192.0.2.1:1179",
        "2001:db8::1",
        "[2001:db8::1]:1179",
    ] {
        peer(|s| {
            s.peer_ip = Some(ip.into());
            s.as_number = Some(64567);
        })
        .validate()
        .unwrap();
    }
}

#[test]
fn bad_peer_ip_is_rejected_naming_spec_peer_ip() {
    for bad in [
        "192.0.2.300",
        "2001:db8::1:1179x",
        "[2001:db8::1]",
        "192.0.2.1:0",
        "tor-1",
    ] {
        let t = error_on(
            peer(|s| {
                s.peer_ip = Some(bad.into());
                s.as_number = Some(64567);
            })
            .validate(),
            "spec.peerIP",
        );
        assert!(t.contains("[<IPv6>]:<port>"), "{t}");
    }
}

#[test]
fn node_and_node_selector_together_are_rejected_naming_spec_node_selector() {
    error_on(
        peer(|s| {
            s.node = Some("n1".into());
            s.node_selector = Some("all()".into());
        })
        .validate(),
        "spec.nodeSelector",
    );
}

#[test]
fn peer_ip_and_peer_selector_together_are_rejected_naming_spec_peer_selector() {
    error_on(
        peer(|s| {
            s.peer_ip = Some("192.0.2.1".into());
            s.as_number = Some(64567);
            s.peer_selector = Some("has(rr)".into());
        })
        .validate(),
        "spec.peerSelector",
    );
}

#[test]
fn as_number_with_peer_selector_is_rejected_naming_spec_as_number() {
    error_on(
        peer(|s| {
            s.peer_selector = Some("has(rr)".into());
            s.as_number = Some(64512);
        })
        .validate(),
        "spec.asNumber",
    );
}

#[test]
fn peer_ip_without_as_number_is_rejected_naming_spec_as_number() {
    error_on(
        peer(|s| s.peer_ip = Some("192.0.2.1".into())).validate(),
        "spec.asNumber",
    );
}

#[test]
fn as_number_zero_is_rejected_naming_spec_as_number() {
    let t = error_on(
        peer(|s| {
            s.peer_ip = Some("192.0.2.1".into());
            s.as_number = Some(0);
        })
        .validate(),
        "spec.asNumber",
    );
    assert!(t.contains("RFC 7607"), "{t}");
    error_on(
        peer(|s| {
            s.peer_ip = Some("192.0.2.1".into());
            s.as_number = Some(1);
            s.local_as_number = Some(0);
        })
        .validate(),
        "spec.localASNumber",
    );
}

#[test]
fn local_workload_selector_rules_are_enforced() {
    error_on(
        peer(|s| s.local_workload_selector = Some("color == 'red'".into())).validate(),
        "spec.asNumber",
    );
    error_on(
        peer(|s| {
            s.local_workload_selector = Some("color == 'red'".into());
            s.as_number = Some(65000);
            s.peer_ip = Some("192.0.2.1".into());
        })
        .validate(),
        "spec.localWorkloadSelector",
    );
}

#[test]
fn malformed_peer_selector_is_rejected_naming_spec_peer_selector() {
    let t = error_on(
        peer(|s| s.peer_selector = Some("rr in {'a'".into())).validate(),
        "spec.peerSelector",
    );
    assert!(t.contains("column"), "{t}");
}

#[test]
fn reachable_by_rules_are_enforced_naming_spec_reachable_by() {
    error_on(
        peer(|s| s.reachable_by = Some("10.0.0.1".into())).validate(),
        "spec.reachableBy",
    );
    error_on(
        peer(|s| {
            s.peer_ip = Some("192.0.2.1".into());
            s.as_number = Some(1);
            s.reachable_by = Some("gateway".into());
        })
        .validate(),
        "spec.reachableBy",
    );
    let t = error_on(
        peer(|s| {
            s.peer_ip = Some("192.0.2.1".into());
            s.as_number = Some(1);
            s.reachable_by = Some("2001:db8::1".into());
        })
        .validate(),
        "spec.reachableBy",
    );
    assert!(t.contains("different address families"), "{t}");
}

#[test]
fn keep_original_next_hop_with_next_hop_mode_is_rejected() {
    error_on(
        peer(|s| {
            s.keep_original_next_hop = Some(true);
            s.next_hop_mode = Some(ippool_crd::NextHopMode::SelfAddr);
        })
        .validate(),
        "spec.keepOriginalNextHop",
    );
}

#[test]
fn bad_durations_are_rejected_naming_the_field() {
    let t = error_on(
        peer(|s| s.max_restart_time = Some("2 minutes".into())).validate(),
        "spec.maxRestartTime",
    );
    assert!(t.contains("120s"), "{t}");
    error_on(
        peer(|s| s.keepalive_time = Some("-1s".into())).validate(),
        "spec.keepaliveTime",
    );
}

#[test]
fn incomplete_password_ref_is_rejected() {
    error_on(
        peer(|s| {
            s.password = Some(ippool_crd::BGPPassword {
                secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                    name: "secret".into(),
                    key: String::new(),
                    optional: None,
                }),
            })
        })
        .validate(),
        "spec.password.secretKeyRef",
    );
}

// ------------------------------------------------------ BGPConfiguration

fn bgpconfig(f: impl FnOnce(&mut BGPConfigurationSpec)) -> BGPConfiguration {
    let mut spec = BGPConfigurationSpec::default();
    f(&mut spec);
    BGPConfiguration::new("default", spec)
}

#[test]
fn listen_port_out_of_range_is_rejected_naming_spec_listen_port() {
    for bad in [0, 65536, -1] {
        let t = error_on(
            bgpconfig(|s| s.listen_port = Some(bad)).validate(),
            "spec.listenPort",
        );
        assert!(t.contains("1–65535"), "{t}");
    }
    bgpconfig(|s| s.listen_port = Some(65535))
        .validate()
        .unwrap();
}

#[test]
fn as_number_zero_in_bgp_configuration_is_rejected_naming_spec_as_number() {
    error_on(
        bgpconfig(|s| s.as_number = Some(0)).validate(),
        "spec.asNumber",
    );
}

#[test]
fn bad_log_level_is_rejected_naming_spec_log_severity_screen() {
    error_on(
        bgpconfig(|s| s.log_severity_screen = Some("Verbose".into())).validate(),
        "spec.logSeverityScreen",
    );
    bgpconfig(|s| s.log_severity_screen = Some("debug".into()))
        .validate()
        .unwrap();
}

#[test]
fn bad_service_cidr_is_rejected_naming_the_entry() {
    error_on(
        bgpconfig(|s| {
            s.service_cluster_ips = Some(vec![
                ServiceIPBlock {
                    cidr: "10.96.0.0/12".into(),
                },
                ServiceIPBlock {
                    cidr: "10.96.0.0/40".into(),
                },
            ])
        })
        .validate(),
        "spec.serviceClusterIPs[1].cidr",
    );
}

#[test]
fn bad_community_values_are_rejected_naming_the_entry() {
    let adverts = Some(vec![PrefixAdvertisement {
        cidr: "10.0.0.0/16".into(),
        communities: vec!["c".into()],
    }]);
    for bad in ["65536:1", "1:2:4294967296", "1", "a:b", "1:2:3:4"] {
        error_on(
            bgpconfig(|s| {
                s.communities = Some(vec![Community {
                    name: "c".into(),
                    value: bad.into(),
                }]);
                s.prefix_advertisements = adverts.clone();
            })
            .validate(),
            "spec.communities[0].value",
        );
    }
}

#[test]
fn undefined_community_in_prefix_advertisement_is_rejected() {
    error_on(
        bgpconfig(|s| {
            s.prefix_advertisements = Some(vec![PrefixAdvertisement {
                cidr: "10.0.0.0/16".into(),
                communities: vec!["no-such-name".into()],
            }])
        })
        .validate(),
        "spec.prefixAdvertisements[0].communities[0]",
    );
}

#[test]
fn communities_without_prefix_advertisements_are_rejected() {
    error_on(
        bgpconfig(|s| {
            s.communities = Some(vec![Community {
                name: "c".into(),
                value: "1:2".into(),
            }])
        })
        .validate(),
        "spec.communities",
    );
}

#[test]
fn mesh_settings_without_mesh_are_rejected() {
    error_on(
        bgpconfig(|s| {
            s.node_to_node_mesh_enabled = Some(false);
            s.node_mesh_max_restart_time = Some("60s".into());
        })
        .validate(),
        "spec.nodeMeshMaxRestartTime",
    );
    error_on(
        bgpconfig(|s| {
            s.node_to_node_mesh_enabled = Some(false);
            s.node_mesh_password = Some(Default::default());
        })
        .validate(),
        "spec.nodeMeshPassword",
    );
}

#[test]
fn bad_ignored_interface_is_rejected_naming_the_entry() {
    error_on(
        bgpconfig(|s| s.ignored_interfaces = Some(vec!["eth0".into(), "*".into()])).validate(),
        "spec.ignoredInterfaces[1]",
    );
}

#[test]
fn bad_local_workload_peering_addresses_are_rejected() {
    error_on(
        bgpconfig(|s| s.local_workload_peering_ipv4 = Some("fd00::1".into())).validate(),
        "spec.localWorkloadPeeringIPV4",
    );
    error_on(
        bgpconfig(|s| s.local_workload_peering_ipv6 = Some("10.0.0.1".into())).validate(),
        "spec.localWorkloadPeeringIPV6",
    );
}

// ------------------------------------------------------------------- Node

fn node(bgp: NodeBgpSpec) -> Node {
    Node::new(
        "n1",
        NodeSpec {
            bgp: Some(bgp),
            ..Default::default()
        },
    )
}

#[test]
fn node_ipv4_address_without_subnet_is_rejected_naming_the_field() {
    let t = error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("10.0.0.1".into()),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.ipv4Address",
    );
    assert!(t.contains("10.0.0.1/24"), "{t}");
}

#[test]
fn node_address_of_the_wrong_family_is_rejected_naming_the_field() {
    error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("fd00::1/64".into()),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.ipv4Address",
    );
    error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("10.0.0.1/24".into()),
            ipv6_address: Some("10.0.0.1/24".into()),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.ipv6Address",
    );
}

#[test]
fn node_tunnel_and_cluster_id_must_be_ipv4_addresses() {
    error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("10.0.0.1/24".into()),
            ipv4_ipip_tunnel_addr: Some("10.0.0.1/32".into()),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.ipv4IPIPTunnelAddr",
    );
    error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("10.0.0.1/24".into()),
            route_reflector_cluster_id: Some("rr-1".into()),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.routeReflectorClusterID",
    );
}

#[test]
fn empty_node_bgp_and_zero_asn_are_rejected() {
    error_on(node(NodeBgpSpec::default()).validate(), "spec.bgp");
    error_on(
        node(NodeBgpSpec {
            ipv4_address: Some("10.0.0.1/24".into()),
            as_number: Some(0),
            ..Default::default()
        })
        .validate(),
        "spec.bgp.asNumber",
    );
}

#[test]
fn bad_vxlan_mac_is_rejected() {
    let n = Node::new(
        "n1",
        NodeSpec {
            vxlan_tunnel_mac_addr: Some("66:1e:6b".into()),
            ..Default::default()
        },
    );
    error_on(n.validate(), "spec.vxlanTunnelMACAddr");
}

// ------------------------------------------------------------ IPAMConfig

#[test]
fn ipam_configuration_rules() {
    let mut c = IPAMConfiguration::new("default", IPAMConfigurationSpec::default());
    c.validate().unwrap();
    c.spec.max_blocks_per_host = Some(-1);
    error_on(c.validate(), "spec.maxBlocksPerHost");
    let other = IPAMConfiguration::new("other", IPAMConfigurationSpec::default());
    error_on(other.validate(), "metadata.name");
}
