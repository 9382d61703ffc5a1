//! The CEL rules we put into the CRDs (`x-kubernetes-validations`) compile
//! and agree with the Rust validators, evaluated client-side with kube's CEL
//! implementation so a broken rule fails here, not at an apiserver.
#![allow(clippy::unwrap_used)]

use ippool_crd::crdgen;
use kube::core::cel::Validator;
use serde_json::{Value, json};

fn schema(kind: &str) -> Value {
    let crd = crdgen::crds()
        .unwrap()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn object(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": spec,
    })
}

/// The CEL error messages for `spec`, or empty when it passes.
fn cel_errors(kind: &str, spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(kind), &object(kind, spec), None) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("{e:?}")],
    }
}

fn cel_errors_update(kind: &str, spec: Value, old: Value) -> Vec<String> {
    let old = object(kind, old);
    match Validator::new().validate(&schema(kind), &object(kind, spec), Some(&old)) {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!("{e:?}")],
    }
}

fn rejects(kind: &str, spec: Value, needle: &str) {
    let errs = cel_errors(kind, spec.clone());
    assert!(
        errs.iter().any(|e| e.contains(needle)),
        "{kind} {spec} should be rejected with {needle:?}; got {errs:?}"
    );
}

#[test]
fn good_pools_pass_every_rule() {
    for spec in [
        json!({"cidr": "10.65.0.0/16"}),
        json!({"cidr": "10.65.0.0/16", "ipipMode": "Always", "vxlanMode": "Never", "blockSize": 24}),
        json!({"cidr": "fd00:10::/48", "vxlanMode": "CrossSubnet", "blockSize": 122}),
        json!({"cidr": "192.210.0.0/20", "allowedUses": ["LoadBalancer"], "nodeSelector": "all()"}),
        json!({"cidr": "10.0.0.0/28", "disabled": true}),
    ] {
        assert_eq!(
            cel_errors("IPPool", spec.clone()),
            Vec::<String>::new(),
            "{spec}"
        );
    }
}

#[test]
fn pool_rules_reject_what_the_rust_validator_rejects() {
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}),
        "cannot both be enabled",
    );
    rejects(
        "IPPool",
        json!({"cidr": "fd00::/48", "ipipMode": "CrossSubnet"}),
        "IPv4 only",
    );
    rejects("IPPool", json!({"cidr": "10.0.0.1/24"}), "strictly masked");
    rejects(
        "IPPool",
        json!({"cidr": "169.254.0.0/20"}),
        "169.254.0.0/16",
    );
    rejects("IPPool", json!({"cidr": "169.0.0.0/8"}), "169.254.0.0/16");
    rejects("IPPool", json!({"cidr": "fe80::/64"}), "fe80::/10");
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "blockSize": 33}),
        "blockSize must be",
    );
    rejects(
        "IPPool",
        json!({"cidr": "fd00::/48", "blockSize": 64}),
        "blockSize must be",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/28", "blockSize": 26}),
        "smaller than one block",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/28"}),
        "smaller than one block",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer", "Workload"]}),
        "LoadBalancer pool cannot also",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer"], "vxlanMode": "Always"}),
        "cannot enable IPIP or VXLAN",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer"], "disableBGPExport": true}),
        "exported over BGP",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer"], "nodeSelector": "has(a)"}),
        "select all nodes",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "allowedUses": ["Tunnel"], "namespaceSelector": "has(a)"}),
        "namespaceSelector",
    );
    rejects(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "nodeSelector": "global()"}),
        "global()",
    );
}

#[test]
fn pool_cidr_and_block_size_are_immutable() {
    let old = json!({"cidr": "10.0.0.0/16", "blockSize": 26});
    assert!(cel_errors_update("IPPool", old.clone(), old.clone()).is_empty());
    let errs = cel_errors_update(
        "IPPool",
        json!({"cidr": "10.1.0.0/16", "blockSize": 26}),
        old.clone(),
    );
    assert!(
        errs.iter().any(|e| e.contains("cidr cannot be changed")),
        "{errs:?}"
    );
    let errs = cel_errors_update(
        "IPPool",
        json!({"cidr": "10.0.0.0/16", "blockSize": 24}),
        old,
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("blockSize cannot be changed")),
        "{errs:?}"
    );
}

#[test]
fn peer_rules() {
    assert!(cel_errors("BGPPeer", json!({"peerIP": "10.0.0.1", "asNumber": 64512})).is_empty());
    rejects(
        "BGPPeer",
        json!({"node": "n1", "nodeSelector": "all()"}),
        "node and nodeSelector",
    );
    rejects(
        "BGPPeer",
        json!({"peerIP": "10.0.0.1", "peerSelector": "has(a)"}),
        "peerIP and peerSelector",
    );
    rejects(
        "BGPPeer",
        json!({"peerSelector": "has(a)", "asNumber": 64512}),
        "asNumber must be empty",
    );
    rejects(
        "BGPPeer",
        json!({"localWorkloadSelector": "has(a)"}),
        "localWorkloadSelector requires",
    );
    rejects(
        "BGPPeer",
        json!({"reachableBy": "10.0.0.1"}),
        "reachableBy requires peerIP",
    );
    rejects(
        "BGPPeer",
        json!({"keepOriginalNextHop": true, "nextHopMode": "Keep"}),
        "keepOriginalNextHop and nextHopMode",
    );
}

#[test]
fn bgp_configuration_rules() {
    assert!(
        cel_errors(
            "BGPConfiguration",
            json!({"nodeToNodeMeshEnabled": true, "listenPort": 179})
        )
        .is_empty()
    );
    rejects(
        "BGPConfiguration",
        json!({"nodeToNodeMeshEnabled": false, "nodeMeshMaxRestartTime": "60s"}),
        "nodeMeshMaxRestartTime requires",
    );
    rejects(
        "BGPConfiguration",
        json!({"communities": [{"name": "c", "value": "1:2"}]}),
        "no prefixAdvertisements",
    );
}
