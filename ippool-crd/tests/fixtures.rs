//! Every fixture manifest (Calico's documented examples and objects as
//! Calico stores them) parses under both API versions, round-trips without
//! losing a field, validates, and defaults the way Calico does.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ippool_crd::{
    AffinityState, AllowedUse, AssignmentMode, BGPConfiguration, BindMode, CalicoResource,
    EncapMode, IPPool, NextHopMode, SourceAddress, parse_manifests, validate_pool_set,
};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    files
}

fn load(name: &str) -> Vec<CalicoResource> {
    let text = std::fs::read_to_string(fixtures_dir().join(name)).unwrap();
    parse_manifests(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The raw documents of a fixture, as JSON.
fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Fields our types always write although an input may omit them, because
/// Calico's Go structs always write them too (no `omitempty`).
const ALWAYS_WRITTEN: &[(&str, &str)] = &[
    ("IPAMConfig", "/spec/autoAllocateBlocks"),
    ("IPAMConfig", "/spec/strictAffinity"),
];

#[test]
fn every_fixture_parses_validates_and_round_trips_without_losing_fields() {
    let mut checked = 0;
    for path in fixture_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for input in documents(&path) {
            let res =
                CalicoResource::from_value(input.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Err(e) = res.validate() {
                panic!(
                    "{name}: {} {:?} should be valid: {e}",
                    res.kind(),
                    res.name()
                );
            }

            let mut output = res.to_value().unwrap();
            let mut expected = input.clone();
            // Output is always the stored form of the API.
            expected["apiVersion"] = output["apiVersion"].clone();
            expected["kind"] = Value::String(res.kind().to_string());
            for (kind, pointer) in ALWAYS_WRITTEN {
                if *kind == res.kind() && expected.pointer(pointer).is_none() {
                    remove_pointer(&mut output, pointer);
                }
            }
            assert_eq!(
                output,
                expected,
                "{name}: {} {:?} changed in a round trip\n--- output:\n{}\n--- input:\n{}",
                res.kind(),
                res.name(),
                serde_yaml_ng::to_string(&output).unwrap(),
                serde_yaml_ng::to_string(&expected).unwrap()
            );

            // And the stored form reads back to the same value.
            let again = CalicoResource::from_value(res.to_value().unwrap()).unwrap();
            assert_eq!(again, res, "{name}: second round trip differs");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fixture documents checked");
}

fn remove_pointer(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    if let Some(Value::Object(map)) = v.pointer_mut(parent) {
        map.remove(key);
    }
}

#[test]
fn both_api_versions_are_accepted_and_others_are_not() {
    for api in ["projectcalico.org/v3", "crd.projectcalico.org/v1"] {
        let yaml = format!(
            "apiVersion: {api}\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n"
        );
        let res = parse_manifests(&yaml).unwrap();
        assert!(matches!(&res[..], [CalicoResource::IPPool(p)] if p.spec.cidr == "10.0.0.0/16"));
    }
    let err = parse_manifests("apiVersion: v1\nkind: IPPool\nspec:\n  cidr: 10.0.0.0/16\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("crd.projectcalico.org/v1"), "{err}");
    let err = parse_manifests(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: x}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("NetworkPolicy"), "{err}");
}

#[test]
fn shape_errors_name_the_document_and_object() {
    let yaml = "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: ok\nspec:\n  cidr: 10.0.0.0/16\n---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: broken\nspec:\n  cidr: 10.1.0.0/16\n  ipipMode: Sometimes\n";
    let err = parse_manifests(yaml).unwrap_err().to_string();
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("broken"), "{err}");
    assert!(err.contains("Sometimes"), "{err}");
}

#[test]
fn kubectl_lists_are_flattened() {
    let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: crd.projectcalico.org/v1\n  kind: IPPool\n  metadata: {name: a}\n  spec: {cidr: 10.0.0.0/16}\n- apiVersion: crd.projectcalico.org/v1\n  kind: IPPool\n  metadata: {name: b}\n  spec: {cidr: 10.1.0.0/16}\n";
    let res = parse_manifests(yaml).unwrap();
    assert_eq!(
        res.iter().map(CalicoResource::name).collect::<Vec<_>>(),
        ["a", "b"]
    );
}

fn pools(name: &str) -> Vec<IPPool> {
    load(name)
        .into_iter()
        .map(|r| match r {
            CalicoResource::IPPool(p) => p,
            other => panic!("{name}: expected IPPool, got {}", other.kind()),
        })
        .collect()
}

#[test]
fn reference_pool_defaults_like_calico() {
    let pool = &pools("ippool-reference.yaml")[0];
    let d = pool.with_defaults();
    assert_eq!(d.spec.block_size, Some(26));
    assert_eq!(d.spec.vxlan_mode, Some(EncapMode::Never));
    assert_eq!(
        d.spec.ipip_mode,
        Some(EncapMode::CrossSubnet),
        "set values are kept"
    );
    assert_eq!(d.spec.node_selector.as_deref(), Some("all()"));
    assert_eq!(
        d.spec.allowed_uses,
        Some(vec![AllowedUse::Workload, AllowedUse::Tunnel])
    );
    assert_eq!(d.spec.assignment_mode, Some(AssignmentMode::Automatic));
    // Defaulting is idempotent, and the original is untouched.
    assert_eq!(d.with_defaults(), d);
    assert_eq!(pool.spec.block_size, None);

    let cfg = pool.config().unwrap();
    assert_eq!(cfg.name, "my.ippool-1");
    assert_eq!(cfg.cidr.to_string(), "10.1.0.0/16");
    assert_eq!(
        (cfg.block_size, cfg.ipip_mode, cfg.vxlan_mode),
        (26, EncapMode::CrossSubnet, EncapMode::Never)
    );
    assert!(cfg.nat_outgoing && !cfg.disabled && !cfg.disable_bgp_export);
    assert!(cfg.node_selector.is_all());
    assert_eq!(cfg.allowed_uses, [AllowedUse::Workload, AllowedUse::Tunnel]);
}

#[test]
fn minimal_pools_get_every_default() {
    for pool in pools("ippool-encapsulation.yaml") {
        let d = pool.with_defaults().spec;
        assert_eq!(d.block_size, Some(26), "{}", pool.name());
        assert!(d.ipip_mode.is_some() && d.vxlan_mode.is_some());
        assert_eq!(d.node_selector.as_deref(), Some("all()"));
        assert_eq!(d.allowed_uses.as_ref().unwrap().len(), 2);
        let cfg = pool.config().unwrap();
        assert!(!(cfg.ipip_mode.is_enabled() && cfg.vxlan_mode.is_enabled()));
    }
    let v6 = pools("ippool-stored-default.yaml").remove(1);
    let mut bare = v6.clone();
    bare.spec.block_size = None;
    assert_eq!(bare.with_defaults().spec.block_size, Some(122));
    assert_eq!(v6.config().unwrap().block_size, 122);
}

#[test]
fn topology_pools_select_nodes_by_label() {
    let set = validate_pool_set(&pools("ippool-topology.yaml")).unwrap();
    let west: BTreeMap<String, String> = [("zone".to_string(), "west".to_string())].into();
    let rack1: BTreeMap<String, String> = [("rack".to_string(), "1".to_string())].into();
    assert!(set[0].selects_node(&west) && !set[0].selects_node(&rack1));
    assert!(set[1].selects_node(&rack1) && !set[1].selects_node(&west));
}

#[test]
fn migration_pools_form_a_valid_set_with_the_old_one_disabled() {
    let set = validate_pool_set(&pools("ippool-migration.yaml")).unwrap();
    assert!(set[1].disabled);
    assert!(
        !set[1].selects_node(&BTreeMap::new()),
        "disabled pools select no node"
    );
    assert_eq!(set[2].assignment_mode, AssignmentMode::Manual);
    assert!(set[2].namespace_selector.is_some());
    assert_eq!(set[2].block_size, 28);
}

#[test]
fn loadbalancer_pool_is_valid_and_allows_only_loadbalancer() {
    let cfg = pools("ippool-loadbalancer.yaml")[0].config().unwrap();
    assert!(cfg.allows(AllowedUse::LoadBalancer) && !cfg.allows(AllowedUse::Workload));
    assert_eq!(cfg.block_size, 24);
}

#[test]
fn bgp_peer_fixtures_expose_typed_values() {
    let peers: BTreeMap<String, ippool_crd::BGPPeer> = [
        "bgppeer-docs.yaml",
        "bgppeer-options.yaml",
        "bgppeer-workloads.yaml",
    ]
    .into_iter()
    .flat_map(load)
    .map(|r| match r {
        CalicoResource::BGPPeer(p) => (p.metadata.name.clone().unwrap(), p),
        other => panic!("unexpected {}", other.kind()),
    })
    .collect();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };

    let p = &peers["some.name"].spec;
    assert!(p.applies_to_node("rack1-host1", &BTreeMap::new()));
    assert!(!p.applies_to_node("rack1-host2", &BTreeMap::new()));
    assert_eq!(p.as_number, Some(63400));

    let p = &peers["my-global-peer"].spec;
    assert!(p.applies_to_node("anything", &BTreeMap::new()));

    let p = &peers["rack1-tor"].spec;
    assert!(p.applies_to_node("n", &labels(&[("rack", "rack-1")])));
    assert!(!p.applies_to_node("n", &labels(&[("rack", "rack-2")])));

    let p = &peers["peer-with-route-reflectors"].spec;
    assert!(
        p.peer_selector()
            .unwrap()
            .matches(&labels(&[("route-reflector", "true")]))
    );

    let p = &peers["tor-v4-port"].spec;
    let addr = p.peer_address().unwrap();
    assert_eq!(addr.socket_addr(179).to_string(), "10.0.0.1:1179");
    assert_eq!(p.source_address(), SourceAddress::None);
    assert_eq!(
        p.max_restart_time(),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(p.local_as_number, Some(64513));

    let p = &peers["tor-v6-port"].spec;
    assert_eq!(
        p.peer_address().unwrap().socket_addr(179).to_string(),
        "[fd00:10::1]:1179"
    );
    assert_eq!(
        p.next_hop_mode(),
        NextHopMode::Keep,
        "keepOriginalNextHop maps to Keep"
    );

    assert_eq!(
        peers["node-tor-peer"].spec.next_hop_mode(),
        NextHopMode::SelfAddr
    );
    assert_eq!(
        peers["peer-to-parent-cluster-v6"]
            .spec
            .peer_address()
            .unwrap()
            .port,
        None
    );
}

#[test]
fn bgp_configuration_defaults_like_calico() {
    let empty = BGPConfiguration::new("default", Default::default());
    let s = &empty.spec;
    assert_eq!(s.as_number(), 64512);
    assert!(s.node_to_node_mesh_enabled());
    assert_eq!(s.listen_port(), 179);
    assert_eq!(s.log_severity_screen(), "Info");
    assert_eq!(s.bind_mode(), BindMode::None);
    let d = empty.with_defaults().spec;
    assert_eq!(
        (
            d.as_number,
            d.node_to_node_mesh_enabled,
            d.listen_port,
            d.log_severity_screen.as_deref()
        ),
        (Some(64512), Some(true), Some(179), Some("Info"))
    );

    let docs: Vec<BGPConfiguration> = load("bgpconfig-docs.yaml")
        .into_iter()
        .map(|r| match r {
            CalicoResource::BGPConfiguration(c) => c,
            other => panic!("unexpected {}", other.kind()),
        })
        .collect();
    let sample = &docs[0].spec;
    assert_eq!((sample.as_number(), sample.listen_port()), (63400, 178));
    assert_eq!(sample.bind_mode(), BindMode::NodeIP);
    assert_eq!(
        sample.node_mesh_max_restart_time(),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(
        sample.service_cluster_ip_networks()[0].to_string(),
        "10.96.0.0/12"
    );
    assert_eq!(docs[1].spec.service_cluster_ip_networks().len(), 2);
    assert!(!docs[3].spec.node_to_node_mesh_enabled());
}

#[test]
fn as_numbers_may_be_strings_or_asdot_and_are_written_as_integers() {
    let yaml = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: \"64513\"\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n  peerIP: 10.0.0.1\n  asNumber: \"1.10\"\n";
    let res = parse_manifests(yaml).unwrap();
    let CalicoResource::BGPConfiguration(c) = &res[0] else {
        panic!()
    };
    assert_eq!(c.spec.as_number, Some(64513));
    assert_eq!(
        res[0].to_value().unwrap()["spec"]["asNumber"],
        Value::from(64513)
    );
    let CalicoResource::BGPPeer(p) = &res[1] else {
        panic!()
    };
    assert_eq!(p.spec.as_number, Some(65546));
    let err = parse_manifests("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: {asNumber: 4294967296}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("AS number"), "{err}");
}

#[test]
fn ipam_fixtures_have_calicos_json_shapes() {
    let res = load("ipam-stored.yaml");
    let CalicoResource::IPAMBlock(b) = &res[0] else {
        panic!()
    };
    assert_eq!(b.spec.allocations, [Some(0), Some(1), None, None, Some(1)]);
    assert_eq!(b.spec.affinity_host(), Some("node-1"));
    assert_eq!(
        b.spec.attributes[1].handle_id.as_deref(),
        Some("k8s-pod-network.0b3a2d7c9e1f")
    );
    assert_eq!(
        b.spec.attributes[1].secondary["pod"],
        "coredns-5d78c9869d-abcde"
    );
    assert_eq!(
        b.spec.sequence_number_for_allocation["4"],
        1_709_287_201_000_000_000
    );
    assert_eq!(b.spec.allocated_count(), 3);
    assert_eq!(
        ippool_crd::names::block_name(&b.spec.cidr_network().unwrap()),
        b.metadata.name.clone().unwrap()
    );
    let CalicoResource::IPAMBlock(b6) = &res[1] else {
        panic!()
    };
    assert_eq!(
        ippool_crd::names::block_name(&b6.spec.cidr_network().unwrap()),
        b6.metadata.name.clone().unwrap()
    );

    let CalicoResource::BlockAffinity(a) = &res[2] else {
        panic!()
    };
    assert_eq!(a.spec.state, AffinityState::Confirmed);
    assert!(!a.spec.deleted);
    assert_eq!(a.spec.affinity_type(), "host");
    let json = res[2].to_value().unwrap();
    assert_eq!(
        json["spec"]["deleted"],
        Value::from("false"),
        "deleted is a string"
    );
    assert_eq!(json["spec"]["state"], Value::from("confirmed"));
    let CalicoResource::BlockAffinity(a) = &res[3] else {
        panic!()
    };
    assert!(a.spec.deleted);
    assert_eq!(a.spec.state, AffinityState::PendingDeletion);
    assert_eq!(
        ippool_crd::names::block_affinity_name(&a.spec.node, &a.spec.cidr_network().unwrap()),
        a.metadata.name.clone().unwrap()
    );

    let CalicoResource::IPAMHandle(h) = &res[4] else {
        panic!()
    };
    assert_eq!(h.spec.block["10.65.82.0/26"], 2);
    assert_eq!(h.spec.total(), 2);

    let CalicoResource::IPAMConfiguration(c) = &res[5] else {
        panic!()
    };
    assert_eq!(c.spec.max_blocks_per_host(), Some(4));
    assert!(c.spec.auto_allocate_blocks);
}

#[test]
fn ipam_configuration_docs_sample_defaults_auto_allocate_to_true() {
    let res = load("ipamconfig-docs.yaml");
    let CalicoResource::IPAMConfiguration(c) = &res[0] else {
        panic!()
    };
    assert!(c.spec.auto_allocate_blocks);
    assert!(!c.spec.strict_affinity);
    let json = res[0].to_value().unwrap();
    assert_eq!(json["kind"], "IPAMConfig");
    assert_eq!(json["apiVersion"], "crd.projectcalico.org/v1");
    assert_eq!(json["spec"]["autoAllocateBlocks"], true);
}

#[test]
fn node_fixtures_expose_bgp_identity_and_labels() {
    let res = load("node-docs.yaml");
    let CalicoResource::Node(n) = &res[0] else {
        panic!()
    };
    let v4 = n.bgp_ipv4().unwrap();
    assert_eq!(
        (v4.ip().to_string(), v4.prefix()),
        ("10.244.0.1".to_string(), 24)
    );
    assert_eq!(n.bgp_ipv6().unwrap().prefix(), 120);
    assert_eq!(n.asn(), Some(64512));
    assert_eq!(n.ipip_tunnel_addr().unwrap().to_string(), "192.168.0.1");
    assert!(n.same_subnet("10.244.0.77".parse().unwrap()));
    assert!(!n.same_subnet("10.244.1.1".parse().unwrap()));

    let CalicoResource::Node(rr) = &res[1] else {
        panic!()
    };
    assert_eq!(
        rr.route_reflector_cluster_id().unwrap().to_string(),
        "244.0.0.1"
    );
    assert_eq!(rr.asn(), None);
    assert_eq!(rr.asn_or(64512), 64512);
    let sel = ippool_crd::Selector::parse("route-reflector == 'true'").unwrap();
    assert!(sel.matches(rr.labels()));
    assert!(!sel.matches(n.labels()));
    assert_eq!(
        res[1].to_value().unwrap()["apiVersion"],
        "projectcalico.org/v3"
    );
}
