//! The policy truth tables (`tests/policy_truth/*.yaml`): for every
//! scenario, the policies as a user writes them are converted and the
//! evaluator's verdict is compared with the expected matrix, cell by cell
//! (every source × destination × probe). The same files are meant to drive
//! the lab's probes against the nftables dataplane.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use felix::policy::{
    Endpoint, Flow, NamedPort, Peer, PolicySet, PolicySource, Profile, Verdict, convert_all,
    explain,
};
use ippool_crd::CalicoResource;
use ippool_crd::policy::Protocol;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TruthFile {
    world: World,
    scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct World {
    /// Namespace name → labels.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// `namespace/name` → pod.
    pods: BTreeMap<String, Pod>,
    /// Name → address of something outside the cluster.
    #[serde(default)]
    hosts: BTreeMap<String, IpAddr>,
    probes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pod {
    ip: IpAddr,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Name → `TCP/80`.
    #[serde(default)]
    ports: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[allow(dead_code)]
    why: String,
    #[serde(default)]
    probes: Option<Vec<String>>,
    policies: String,
    expect: String,
}

fn truth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_truth")
}

fn load_all() -> Vec<(String, TruthFile)> {
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
fn probe(text: &str) -> (char, Flow) {
    let (kind, arg) = text.split_once('/').unwrap_or((text, ""));
    match kind {
        "tcp" => ('T', Flow::tcp(arg.parse().unwrap())),
        "udp" => ('U', Flow::udp(arg.parse().unwrap())),
        "icmp" if arg.is_empty() => ('I', Flow::icmp_echo()),
        "icmp" => ('I', Flow::icmp(arg.parse().unwrap(), 0)),
        _ => panic!("unknown probe {text:?}; use tcp/N, udp/N, icmp or icmp/TYPE"),
    }
}

fn endpoints(world: &World) -> BTreeMap<String, Endpoint> {
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
fn policy_source(yaml: &str) -> PolicySource {
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

fn policy_set(world: &World, scenario: &Scenario) -> PolicySet {
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
fn expected(
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

/// Every cell of one scenario: (cells checked, failures).
fn check(world: &World, scenario: &Scenario) -> (usize, Vec<String>) {
    let probes: Vec<(char, Flow)> = scenario
        .probes
        .as_ref()
        .unwrap_or(&world.probes)
        .iter()
        .map(|p| probe(p))
        .collect();
    let cells = match expected(world, scenario, probes.len()) {
        Ok(c) => c,
        Err(e) => return (0, vec![format!("{}: bad matrix: {e}", scenario.name)]),
    };
    let set = policy_set(world, scenario);
    let eps = endpoints(world);
    let peer = |id: &str| match eps.get(id) {
        Some(ep) => Peer::Endpoint(ep),
        None => Peer::Address(world.hosts[id]),
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for ((src, dst), cell) in &cells {
        if src == dst {
            continue;
        }
        for ((letter, flow), want) in probes.iter().zip(cell.chars()) {
            let want_allow = match want {
                '.' => false,
                c if c == *letter => true,
                c => {
                    failures.push(format!(
                        "{}: {src} -> {dst}: {c:?} is neither {letter:?} nor '.'",
                        scenario.name
                    ));
                    continue;
                }
            };
            let got = explain(&set, peer(src), peer(dst), *flow);
            checked += 1;
            if (got.verdict == Verdict::Allow) != want_allow {
                failures.push(format!(
                    "{}: {src} -> {dst} {} {:?}: want {}, got {:?} ({})",
                    scenario.name,
                    flow.protocol,
                    flow.dst_port
                        .map(u32::from)
                        .or(flow.icmp.map(|(t, _)| u32::from(t))),
                    if want_allow { "Allow" } else { "Deny" },
                    got.verdict,
                    got.reason
                ));
            }
        }
    }
    (checked, failures)
}

#[test]
fn every_truth_table_cell_holds() {
    let mut scenarios = 0;
    let mut cells = 0;
    let mut failures = Vec::new();
    for (file, truth) in load_all() {
        let mut names = std::collections::BTreeSet::new();
        for s in &truth.scenarios {
            assert!(names.insert(&s.name), "{file}: scenario {} twice", s.name);
            let (n, f) = check(&truth.world, s);
            cells += n;
            failures.extend(f.into_iter().map(|f| format!("{file}: {f}")));
            scenarios += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The files must not silently shrink.
    assert!(scenarios >= 30, "only {scenarios} scenarios");
    assert!(cells >= 2500, "only {cells} cells");
    eprintln!("{scenarios} scenarios, {cells} cells");
}

/// The checker itself: a wrong cell, a malformed matrix, a wrong letter
/// are all reported.
#[test]
fn a_wrong_expectation_is_reported_cell_by_cell() {
    let (_, truth) = load_all()
        .into_iter()
        .find(|(f, _)| f == "kubernetes.yaml")
        .unwrap();
    let base = truth
        .scenarios
        .iter()
        .find(|s| s.name == "deny-all-ingress")
        .unwrap()
        .clone();
    let (n, f) = check(&truth.world, &base);
    assert!(f.is_empty(), "{f:#?}");
    assert_eq!(n, 30 * 3);

    // ext -> prod/web expected open: three failing cells, named.
    let mut wrong = base.clone();
    wrong.expect = wrong
        .expect
        .replacen("ext         ...", "ext         TUI", 1);
    assert_ne!(wrong.expect, base.expect);
    let (_, f) = check(&truth.world, &wrong);
    assert_eq!(f.len(), 3, "{f:#?}");
    assert!(f.iter().all(|l| l.contains("ext -> prod/web")), "{f:#?}");
    assert!(f[0].contains("want Allow, got Deny"), "{f:#?}");
    assert!(f[0].contains("end-of-tier drop"), "{f:#?}");

    let mut typo = base.clone();
    typo.expect = typo
        .expect
        .replacen("ext         ...", "ext         UTI", 1);
    let (_, f) = check(&truth.world, &typo);
    assert!(f.iter().any(|l| l.contains("is neither")), "{f:#?}");

    let mut short = base.clone();
    short.expect = short
        .expect
        .replacen("ext         ...", "ext         ..", 1);
    let (_, f) = check(&truth.world, &short);
    assert!(f[0].contains("bad matrix"), "{f:#?}");

    let mut missing_row = base;
    missing_row.expect = missing_row
        .expect
        .lines()
        .filter(|l| !l.trim_start().starts_with("ops/mon"))
        .collect::<Vec<_>>()
        .join("\n");
    let (_, f) = check(&truth.world, &missing_row);
    assert!(f[0].contains("rows"), "{f:#?}");
}
