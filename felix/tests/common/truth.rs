//! The policy truth tables (`tests/policy_truth/*.yaml`, read by
//! [`lab::truth`]) turned into felix's model: endpoints, flows, converted
//! policies. Shared by the evaluator's check (`policy_truth.rs`) and the
//! kernel's (`policy_nft.rs`); the lab's multi-node suite reads the same
//! files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use felix::policy::{Endpoint, Flow, NamedPort, PolicySet, PolicySource, Profile, convert_all};
use ippool_crd::CalicoResource;
use ippool_crd::policy::Protocol;
use lab::truth::ProbeSpec;
pub use lab::truth::{Scenario, TruthFile, World};
use serde::Deserialize;
use serde_json::Value;

pub fn truth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_truth")
}

pub fn load_all() -> Vec<(String, TruthFile)> {
    lab::truth::load_all(&truth_dir()).unwrap()
}

/// A probe: its letter in the matrix and the flow it sends.
pub fn probe(text: &str) -> (char, Flow) {
    let spec = ProbeSpec::parse(text).unwrap();
    let flow = match spec {
        ProbeSpec::Tcp(port) => Flow::tcp(port),
        ProbeSpec::Udp(port) => Flow::udp(port),
        ProbeSpec::Icmp(8) => Flow::icmp_echo(),
        ProbeSpec::Icmp(t) => Flow::icmp(t, 0),
    };
    (spec.letter(), flow)
}

pub fn endpoints(world: &World) -> BTreeMap<String, Endpoint> {
    world
        .pods
        .iter()
        .map(|(id, pod)| {
            let (ns, name) = id.split_once('/').unwrap();
            let mut ns_labels = world
                .namespaces
                .get(ns)
                .unwrap_or_else(|| panic!("pod {id}: no namespace {ns}"))
                .clone();
            // The API server adds this label to every namespace.
            ns_labels.insert("kubernetes.io/metadata.name".into(), ns.into());
            let mut ep = Endpoint::pod(ns, name, pod.labels.clone(), ns_labels, vec![pod.ip]);
            for (port_name, spec) in &pod.ports {
                let (proto, port) = spec.split_once('/').unwrap();
                let protocol = match proto {
                    "TCP" => Protocol::TCP,
                    "UDP" => Protocol::UDP,
                    "SCTP" => Protocol::SCTP,
                    _ => panic!("{id}: port {spec}"),
                };
                ep.named_ports.insert(
                    port_name.clone(),
                    NamedPort {
                        protocol,
                        port: port.parse().unwrap(),
                    },
                );
            }
            (id.clone(), ep)
        })
        .collect()
}

/// Reads the scenario's policy manifests (Kubernetes and Calico, either
/// Calico API version).
pub fn policy_source(yaml: &str) -> PolicySource {
    let mut src = PolicySource::default();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        if v["apiVersion"] == "networking.k8s.io/v1" {
            src.kubernetes.push(serde_json::from_value(v).unwrap());
            continue;
        }
        match CalicoResource::from_value(v).unwrap() {
            CalicoResource::NetworkPolicy(p) => src.calico.push(p),
            CalicoResource::GlobalNetworkPolicy(p) => src.global.push(p),
            other => panic!("not a policy: {other:?}"),
        }
    }
    src
}

/// The scenario's policies, converted, with the world's own pod
/// addresses filled in.
pub fn policy_set(world: &World, scenario: &Scenario) -> PolicySet {
    let profiles = world
        .namespaces
        .keys()
        .map(|ns| Profile::namespace(ns))
        .collect();
    let yaml = scenario.policies_for(|id| world.address(id)).unwrap();
    let (set, errors) = convert_all(&policy_source(&yaml), profiles);
    assert!(
        errors.is_empty(),
        "{}: policies do not convert: {errors:#?}",
        scenario.name
    );
    set
}
