//! The policy truth tables (`tests/policy_truth/*.yaml`), read: the world
//! (namespaces, pods, outside hosts, probes), the scenarios (policies as a
//! user writes them, the expected matrix), and their conversion into the
//! model. Shared by the evaluator's check (`policy_truth.rs`) and the
//! kernel's (`policy_nft.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use felix::policy::{Endpoint, Flow, NamedPort, PolicySet, PolicySource, Profile, convert_all};
use ippool_crd::CalicoResource;
use ippool_crd::policy::Protocol;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruthFile {
    pub world: World,
    pub scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// Namespace name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `namespace/name` → pod.
    pub pods: BTreeMap<String, Pod>,
    /// Name → address of something outside the cluster.
    #[serde(default)]
    pub hosts: BTreeMap<String, IpAddr>,
    pub probes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub ip: IpAddr,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Name → `TCP/80`.
    #[serde(default)]
    pub ports: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[allow(dead_code)]
    pub why: String,
    #[serde(default)]
    pub probes: Option<Vec<String>>,
    pub policies: String,
    pub expect: String,
}

pub fn truth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_truth")
}

pub fn load_all() -> Vec<(String, TruthFile)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(truth_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let file = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, file)
        })
        .collect()
}

/// A probe: its letter in the matrix and the flow it sends.
pub fn probe(text: &str) -> (char, Flow) {
    let (kind, arg) = text.split_once('/').unwrap_or((text, ""));
    match kind {
        "tcp" => ('T', Flow::tcp(arg.parse().unwrap())),
        "udp" => ('U', Flow::udp(arg.parse().unwrap())),
        "icmp" if arg.is_empty() => ('I', Flow::icmp_echo()),
        "icmp" => ('I', Flow::icmp(arg.parse().unwrap(), 0)),
        _ => panic!("unknown probe {text:?}; use tcp/N, udp/N, icmp or icmp/TYPE"),
    }
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

pub fn policy_set(world: &World, scenario: &Scenario) -> PolicySet {
    let profiles = world
        .namespaces
        .keys()
        .map(|ns| Profile::namespace(ns))
        .collect();
    let (set, errors) = convert_all(&policy_source(&scenario.policies), profiles);
    assert!(
        errors.is_empty(),
        "{}: policies do not convert: {errors:#?}",
        scenario.name
    );
    set
}

/// The scenario's expected matrix, checked for shape: (src, dst) → cell.
pub fn expected(
    world: &World,
    scenario: &Scenario,
    probes: usize,
) -> Result<BTreeMap<(String, String), String>, String> {
    let mut lines = scenario.expect.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty matrix")?
        .split_whitespace()
        .collect();
    let mut ids: Vec<&str> = world.pods.keys().map(String::as_str).collect();
    ids.extend(world.hosts.keys().map(String::as_str));
    let mut sorted = header.clone();
    sorted.sort_unstable();
    ids.sort_unstable();
    if sorted != ids {
        return Err(format!(
            "header {header:?} must name every pod and host once: {ids:?}"
        ));
    }
    let mut cells = BTreeMap::new();
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (src, row) = fields.split_first().unwrap();
        if row.len() != header.len() {
            return Err(format!(
                "row {src}: {} cells, want {}",
                row.len(),
                header.len()
            ));
        }
        rows.push(*src);
        for (dst, cell) in header.iter().zip(row) {
            let diagonal = src == dst;
            if diagonal != (*cell == "x") {
                return Err(format!("{src} -> {dst}: `x` marks exactly the diagonal"));
            }
            if !diagonal && cell.chars().count() != probes {
                return Err(format!(
                    "{src} -> {dst}: {cell:?} is not {probes} probe results"
                ));
            }
            cells.insert((src.to_string(), dst.to_string()), cell.to_string());
        }
    }
    rows.sort_unstable();
    if rows != ids {
        return Err(format!("rows {rows:?} must name every pod and host once"));
    }
    Ok(cells)
}
