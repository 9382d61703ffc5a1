//! The manifests in `deploy/` are what the code expects: every document
//! parses as its typed Kubernetes object (and nothing in it is dropped by
//! that parse, which catches misspelt fields), the DaemonSet sets only
//! environment variables calico-node and its children read and with
//! values calico-node accepts, its probes reach the endpoints calico-node
//! serves, the ClusterRole grants exactly what the datastore needs, the
//! leader election's Role exactly its Lease, the passwords' Role lets
//! calico-node read Secrets in its own namespace and nowhere else, and
//! the CNI configuration parses as the plugin's configuration.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One typed document of a manifest.
#[derive(Debug)]
enum Doc {
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    ConfigMap(Box<ConfigMap>),
    DaemonSet(Box<DaemonSet>),
    Crd(Box<CustomResourceDefinition>),
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first place where `a` and `b` differ, as a JSON path.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_difference(&p, u, v) {
                            return Some(d);
                        }
                    }
                    (Some(_), None) => return Some(format!("{p} is not a field of the type")),
                    (None, Some(_)) => return Some(format!("{p} appears after the round trip")),
                    (None, None) => {}
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{path}[{i}]"), u, v)),
        // Schema bounds are f64 in the typed object: 128 comes back 128.0.
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// Parses `json` as `T` and checks that serializing it back gives the same
/// document: a field the type does not know would silently vanish.
fn typed<T: DeserializeOwned + Serialize>(file: &str, json: &Value) -> T {
    let obj: T = serde_json::from_value(json.clone()).unwrap_or_else(|e| {
        panic!(
            "{file}: {} {:?} does not parse as its type: {e}",
            json["kind"], json["metadata"]["name"]
        )
    });
    let back = serde_json::to_value(&obj).unwrap();
    if let Some(d) = first_difference("", json, &back) {
        panic!(
            "{file}: {} {:?}: {d}",
            json["kind"], json["metadata"]["name"]
        );
    }
    obj
}

fn load(file: &str) -> Vec<Doc> {
    let text = std::fs::read_to_string(repo().join(file))
        .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        let yaml = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(de)
            .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
        if yaml.is_null() {
            continue; // a comment-only document
        }
        let json: Value = serde_json::to_value(&yaml).unwrap();
        let api = json["apiVersion"].as_str().unwrap_or("");
        let kind = json["kind"].as_str().unwrap_or("");
        docs.push(match (api, kind) {
            ("v1", "ServiceAccount") => Doc::ServiceAccount(typed(file, &json)),
            ("v1", "ConfigMap") => Doc::ConfigMap(typed(file, &json)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => Doc::ClusterRole(typed(file, &json)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                Doc::ClusterRoleBinding(typed(file, &json))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => Doc::Role(typed(file, &json)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => Doc::RoleBinding(typed(file, &json)),
            ("apps/v1", "DaemonSet") => Doc::DaemonSet(typed(file, &json)),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => Doc::Crd(typed(file, &json)),
            _ => panic!(
                "{file}: unexpected kind {api:?}/{kind:?}; add it to this test's list if it belongs"
            ),
        });
    }
    docs
}

/// The documents of deploy/calico-node.yaml: one of each kind but the
/// namespaced Roles and their bindings, of which there may be several.
struct NodeManifest {
    sa: ServiceAccount,
    role: ClusterRole,
    binding: ClusterRoleBinding,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config: ConfigMap,
    ds: DaemonSet,
}

fn node_manifest() -> NodeManifest {
    let (mut sa, mut role, mut binding, mut config, mut ds) = (None, None, None, None, None);
    let (mut roles, mut role_bindings) = (Vec::new(), Vec::new());
    for doc in load("deploy/calico-node.yaml") {
        let dup = match doc {
            Doc::Role(d) => {
                roles.push(*d);
                false
            }
            Doc::RoleBinding(d) => {
                role_bindings.push(*d);
                false
            }
            Doc::ServiceAccount(d) => sa.replace(*d).is_some(),
            Doc::ClusterRole(d) => role.replace(*d).is_some(),
            Doc::ClusterRoleBinding(d) => binding.replace(*d).is_some(),
            Doc::ConfigMap(d) => config.replace(*d).is_some(),
            Doc::DaemonSet(d) => ds.replace(*d).is_some(),
            Doc::Crd(_) => panic!("CRDs belong in deploy/crds.yaml"),
        };
        assert!(!dup, "deploy/calico-node.yaml has a kind twice");
    }
    NodeManifest {
        sa: sa.expect("no ServiceAccount"),
        role: role.expect("no ClusterRole"),
        binding: binding.expect("no ClusterRoleBinding"),
        roles,
        role_bindings,
        config: config.expect("no ConfigMap"),
        ds: ds.expect("no DaemonSet"),
    }
}

fn container<'a>(ds: &'a DaemonSet, name: &str, init: bool) -> &'a Container {
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let list = if init {
        pod.init_containers.as_deref().unwrap_or_default()
    } else {
        &pod.containers
    };
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The literal environment of a container (valueFrom entries excluded).
fn literal_env(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect()
}

#[test]
fn every_deploy_yaml_document_parses_as_its_typed_object() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    assert_eq!(files, ["calico-node.yaml", "crds.yaml"]);
    let crds = load("deploy/crds.yaml");
    assert_eq!(crds.len(), ippool_crd::crdgen::crds().unwrap().len());
    assert_eq!(crds.len(), 11);
    let names: BTreeSet<String> = crds
        .iter()
        .map(|d| match d {
            Doc::Crd(c) => c.spec.names.plural.clone(),
            other => panic!("deploy/crds.yaml holds a {other:?}"),
        })
        .collect();
    let generated: BTreeSet<String> = ippool_crd::crdgen::crds()
        .unwrap()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .collect();
    assert_eq!(names, generated);
    let m = node_manifest();
    assert_eq!(m.sa.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(m.sa.metadata.name.as_deref(), Some("calico-node"));
    assert_eq!(m.config.metadata.name.as_deref(), Some("calico-config"));
    assert_eq!(m.ds.metadata.namespace.as_deref(), Some("kube-system"));
}

#[test]
fn unknown_fields_and_kinds_are_refused() {
    // The round trip catches what serde would silently drop.
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "x", "namspace": "kube-system" }
    });
    let err = std::panic::catch_unwind(|| typed::<ServiceAccount>("t.yaml", &json)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains(".metadata.namspace"), "{msg}");
    let json = serde_json::json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} });
    assert!(
        std::panic::catch_unwind(|| typed::<ServiceAccount>("t.yaml", &json)).is_err(),
        "a ConfigMap must not parse as a ServiceAccount"
    );
}

#[test]
fn the_daemonset_is_a_privileged_host_network_node_agent() {
    let m = node_manifest();
    let spec = m.ds.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name, m.sa.metadata.name);
    // One toleration with operator Exists and no key tolerates every taint.
    let tol = pod.tolerations.as_deref().unwrap_or_default();
    assert!(
        tol.iter().any(|t| t.operator.as_deref() == Some("Exists")
            && t.key.is_none()
            && t.effect.is_none()),
        "the DaemonSet must tolerate every taint: {tol:?}"
    );
    let labels = spec.selector.match_labels.clone().unwrap_or_default();
    let tmpl = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(labels.iter().all(|(k, v)| tmpl.get(k) == Some(v)));

    let node = container(&m.ds, "calico-node", false);
    let init = container(&m.ds, "install-cni", true);
    for c in [node, init] {
        assert_eq!(
            c.security_context.as_ref().and_then(|s| s.privileged),
            Some(true),
            "{}",
            c.name
        );
        assert_eq!(c.image, node.image, "both containers use the one image");
    }
    assert_eq!(node.args.as_deref(), Some(&["run".to_string()][..]));
    let req = node.resources.as_ref().unwrap().requests.clone().unwrap();
    assert_eq!(req["cpu"].0, "250m");
    assert!(req.contains_key("memory"));

    // Host paths each container needs, mounted at the same place.
    let volumes: BTreeMap<String, String> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.host_path.as_ref().unwrap().path.clone()))
        .collect();
    let mounts = |c: &Container| -> BTreeMap<String, String> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| (volumes[&m.name].clone(), m.mount_path.clone()))
            .collect()
    };
    let node_mounts = mounts(node);
    for p in [
        "/lib/modules",
        "/run/xtables.lock",
        "/var/run/calico",
        "/var/lib/calico",
        "/var/run/netns",
    ] {
        assert_eq!(node_mounts.get(p).map(String::as_str), Some(p), "{p}");
    }
    // felix opens the pod's network namespace by the path the runtime gave
    // the CNI plugin; namespaces made after calico-node started must show
    // up in its container too.
    let netns = node
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/var/run/netns")
        .unwrap();
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    let init_mounts = mounts(init);
    for p in ["/opt/cni/bin", "/etc/cni/net.d"] {
        assert_eq!(
            init_mounts.get(p).cloned(),
            Some(format!("/host{p}")),
            "{p}"
        );
    }
}

/// Environment variables read by calico-node (exported by the node crate)
/// and, through inheritance, by its children (their clap `env = "..."`,
/// in each daemon's `cli` module).
fn variables_read() -> BTreeSet<String> {
    let mut read: BTreeSet<String> = node::settings::ENV_VARS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for main in ["felix/src/cli.rs", "confd/src/cli.rs", "bird/src/cli.rs"] {
        let src = std::fs::read_to_string(repo().join(main)).unwrap();
        for part in src.split("env = \"").skip(1) {
            if let Some((name, _)) = part.split_once('"') {
                read.insert(name.to_string());
            }
        }
    }
    read
}

#[test]
fn the_daemonset_env_is_what_calico_node_reads() {
    let m = node_manifest();
    let node = container(&m.ds, "calico-node", false);
    let read = variables_read();
    assert!(
        read.contains("FELIX_ROUTEREFRESHINTERVAL"),
        "felix's vars: {read:?}"
    );
    let env = node.env.as_deref().unwrap();
    for e in env {
        assert!(
            read.contains(&e.name),
            "the DaemonSet sets {} but nothing in calico-node, confd, bird or felix reads it",
            e.name
        );
    }
    // NODENAME is the Kubernetes node's name.
    let nodename = env.iter().find(|e| e.name == "NODENAME").unwrap();
    let field = nodename
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));

    // The values are ones calico-node accepts, and mean what they should.
    let mut vars = literal_env(node);
    vars.insert("NODENAME".into(), "node-1".into());
    assert_eq!(vars["DATASTORE_TYPE"], "kubernetes");
    let s = node::settings::Settings::from_env(|k| vars.get(k).cloned())
        .unwrap_or_else(|e| panic!("calico-node refuses the DaemonSet's env: {e}"));
    let pool = s.default_pool.unwrap();
    assert_eq!(pool.block_size, 26);
    assert!(matches!(
        s.ip,
        node::settings::IpSetting::Autodetect(node::autodetect::Method::FirstFound)
    ));
    // Metrics are off unless switched on, and the declared port is theirs.
    assert_eq!(s.metrics_addr, None);
    vars.insert("FELIX_PROMETHEUSMETRICSENABLED".into(), "true".into());
    let on = node::settings::Settings::from_env(|k| vars.get(k).cloned()).unwrap();
    let port = on.metrics_addr.unwrap().port;
    let ports = node.ports.as_deref().unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some("metrics") && p.container_port == i32::from(port)),
        "the metrics port {port} is not declared: {ports:?}"
    );

    // install-cni's variables are the ones its script uses, from the
    // ConfigMap's keys.
    let init = container(&m.ds, "install-cni", true);
    let script = init.args.as_deref().unwrap().join("\n");
    let data = m.config.data.clone().unwrap();
    for e in init.env.as_deref().unwrap() {
        assert!(
            script.contains(&format!("${}", e.name))
                || script.contains(&format!("${{{}}}", e.name)),
            "install-cni sets {} but its script does not use it",
            e.name
        );
        if let Some(r) = e
            .value_from
            .as_ref()
            .and_then(|v| v.config_map_key_ref.as_ref())
        {
            assert_eq!(r.name, "calico-config");
            assert!(
                data.contains_key(&r.key),
                "calico-config has no key {}",
                r.key
            );
        }
    }
}

#[tokio::test]
async fn the_probes_reach_calico_nodes_health_endpoints() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = node_manifest();
    let node = container(&m.ds, "calico-node", false);
    let mut vars = literal_env(node);
    vars.insert("NODENAME".into(), "node-1".into());
    let s = node::settings::Settings::from_env(|k| vars.get(k).cloned()).unwrap();

    // calico-node's own server, on a free port: a probe path it does not
    // serve answers 404.
    let shared: node::health::Shared = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(node::health::serve_on(listener, shared));

    for (probe, kind) in [
        (node.liveness_probe.as_ref(), "liveness"),
        (node.readiness_probe.as_ref(), "readiness"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no httpGet {kind} probe"));
        assert_eq!(
            get.host.as_deref(),
            Some(s.health_addr.ip().to_string().as_str()),
            "{kind}: with hostNetwork the probe must go where calico-node binds"
        );
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p,
            other => panic!("{kind}: use a numeric port, not {other:?}"),
        };
        assert_eq!(port, i32::from(s.health_addr.port()), "{kind}");
        let path = get.path.as_deref().unwrap();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        assert!(
            !out.starts_with("HTTP/1.1 404"),
            "{kind}: calico-node does not serve {path}"
        );
    }
}

/// What the datastore's Kubernetes backend calls, per resource: reads go
/// through get / list (+ watch for what confd watches), the IPAM writes
/// through create / update (PUT with resourceVersion) / delete with
/// preconditions, pool status through PUT .../ippools/NAME/status, and
/// Node writes are merge patches of Calico's annotations (kubelet owns the
/// Node objects). See datastore/src/kubernetes/mod.rs.
const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "nodes", &["get", "list", "watch", "patch"]),
    (
        "crd.projectcalico.org",
        "ippools",
        &["get", "list", "watch", "create"],
    ),
    ("crd.projectcalico.org", "ippools/status", &["update"]),
    (
        "crd.projectcalico.org",
        "bgppeers",
        &["get", "list", "watch"],
    ),
    (
        "crd.projectcalico.org",
        "bgpconfigurations",
        &["get", "list", "watch"],
    ),
    (
        "crd.projectcalico.org",
        "bgpfilters",
        &["get", "list", "watch"],
    ),
    (
        "crd.projectcalico.org",
        "ipamblocks",
        &["get", "list", "watch", "create", "update", "delete"],
    ),
    (
        "crd.projectcalico.org",
        "ipamhandles",
        &["get", "list", "create", "update", "delete"],
    ),
    (
        "crd.projectcalico.org",
        "blockaffinities",
        &["get", "list", "watch", "create", "update", "delete"],
    ),
    ("crd.projectcalico.org", "ipamconfigs", &["get"]),
    ("crd.projectcalico.org", "ipreservations", &["get", "list"]),
    // felix's policy source: read-only.
    (
        "networking.k8s.io",
        "networkpolicies",
        &["get", "list", "watch"],
    ),
    (
        "crd.projectcalico.org",
        "networkpolicies",
        &["get", "list", "watch"],
    ),
    (
        "crd.projectcalico.org",
        "globalnetworkpolicies",
        &["get", "list", "watch"],
    ),
    ("", "pods", &["get", "list", "watch"]),
    // felix's CNI ADD writes the pod's addresses on it (Calico's
    // cni.projectcalico.org/podIPs), a merge patch through the status
    // subresource: the Pod itself stays read-only.
    ("", "pods/status", &["patch"]),
    ("", "namespaces", &["get", "list", "watch"]),
    // confd's service advertisement (datastore::services): read-only.
    ("", "services", &["list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
];

#[test]
fn the_cluster_role_grants_exactly_what_the_datastore_uses() {
    let m = node_manifest();
    let mut granted = BTreeSet::new();
    for rule in m.role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(g != "*" && r != "*" && v != "*", "no wildcards: {rule:?}");
                    assert!(
                        granted.insert((g.clone(), r.clone(), v.clone())),
                        "granted twice: {g} {r} {v}"
                    );
                }
            }
        }
    }
    let want: BTreeSet<(String, String, String)> = RBAC
        .iter()
        .flat_map(|(g, r, vs)| {
            vs.iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect();
    let extra: Vec<_> = granted.difference(&want).collect();
    let missing: Vec<_> = want.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "extra: {extra:?}\nmissing: {missing:?}"
    );

    // Every Calico resource the role names is one deploy/crds.yaml defines.
    let plurals: BTreeSet<String> = ippool_crd::crdgen::crds()
        .unwrap()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .collect();
    for (g, r, _) in RBAC {
        if *g == "crd.projectcalico.org" {
            let base = r.split('/').next().unwrap();
            assert!(
                plurals.contains(base),
                "{r} is not a CRD in deploy/crds.yaml"
            );
        }
    }
    assert_eq!(plurals.len(), 11);
    // Every CRD is granted; the policy resources (and what their selectors
    // see: pods, namespaces) read-only, as felix's policy source reads them.
    assert!(plurals.iter().all(|p| RBAC.iter().any(|(_, r, _)| r == p)));
    for (g, r) in [
        ("crd.projectcalico.org", "networkpolicies"),
        ("crd.projectcalico.org", "globalnetworkpolicies"),
        ("networking.k8s.io", "networkpolicies"),
        ("", "pods"),
        ("", "namespaces"),
    ] {
        let verbs: BTreeSet<&str> = granted
            .iter()
            .filter(|(gg, rr, _)| gg == g && rr == r)
            .map(|(_, _, v)| v.as_str())
            .collect();
        assert_eq!(
            verbs,
            BTreeSet::from(["get", "list", "watch"]),
            "{g} {r} must be granted read-only"
        );
    }

    // The binding gives the role to the DaemonSet's service account.
    assert_eq!(m.binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&m.binding.role_ref.name),
        m.role.metadata.name.as_ref()
    );
    let subjects = m.binding.subjects.clone().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), m.sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, m.sa.metadata.namespace);
}

/// The leader election of the once-per-cluster tasks
/// (`datastore::leader::kubernetes`) reads and renews one Lease by name
/// and creates it the first time, in calico-node's own namespace: a
/// namespaced Role with exactly that, bound to the DaemonSet's service
/// account. Followers poll, so no list or watch.
#[test]
fn the_leader_election_role_grants_exactly_its_lease() {
    use datastore::leader::CLUSTER_TASKS_LOCK;
    use datastore::leader::kubernetes::LEASE_NAMESPACE;

    let m = node_manifest();
    let ns = m.sa.metadata.namespace.clone();
    assert_eq!(ns.as_deref(), Some(LEASE_NAMESPACE));
    let name = "calico-node-leader-election";
    let role = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Role {name}"));
    assert_eq!(role.metadata.namespace, ns);
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.non_resource_urls.is_none());
        let names = rule.resource_names.clone().unwrap_or_default();
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    assert!(
                        granted.insert((g.clone(), r.clone(), v.clone(), names.clone())),
                        "granted twice: {g} {r} {v}"
                    );
                }
            }
        }
    }
    let lease = vec![CLUSTER_TASKS_LOCK.to_string()];
    let want: BTreeSet<(String, String, String, Vec<String>)> = [
        ("get", lease.clone()),
        ("update", lease.clone()),
        ("create", vec![]),
    ]
    .into_iter()
    .map(|(v, names)| {
        (
            "coordination.k8s.io".to_string(),
            "leases".to_string(),
            v.to_string(),
            names,
        )
    })
    .collect();
    assert_eq!(granted, want);

    // Every Role is bound, in its own namespace, to the DaemonSet's
    // service account only.
    for role in &m.roles {
        let rname = role.metadata.name.clone().unwrap();
        let bindings: Vec<&RoleBinding> = m
            .role_bindings
            .iter()
            .filter(|b| b.role_ref.kind == "Role" && b.role_ref.name == rname)
            .collect();
        assert_eq!(
            bindings.len(),
            1,
            "Role {rname} is bound {} times",
            bindings.len()
        );
        let b = bindings[0];
        assert_eq!(b.metadata.namespace, role.metadata.namespace, "{rname}");
        let subjects = b.subjects.clone().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(Some(&subjects[0].name), m.sa.metadata.name.as_ref());
        assert_eq!(subjects[0].namespace, ns);
    }
    assert_eq!(
        m.role_bindings.len(),
        m.roles.len(),
        "a RoleBinding without its Role"
    );
}

/// Secrets are read (list and watch, one name at a time, by confd's
/// password readers); `get` is granted too, as in the Role Calico
/// documents for BGP passwords, so a Role copied from there and this one
/// are interchangeable.
#[test]
fn the_role_lets_calico_node_read_secrets_in_its_own_namespace_only() {
    let m = node_manifest();
    let role = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("calico-node-bgp-passwords"))
        .expect("no Role calico-node-bgp-passwords");
    let ns = m.sa.metadata.namespace.clone();
    assert_eq!(role.metadata.namespace, ns, "calico-node's namespace");
    let rules = role.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    assert_eq!(r.api_groups.as_deref(), Some(&["".to_string()][..]));
    assert_eq!(r.resources.as_deref(), Some(&["secrets".to_string()][..]));
    assert_eq!(r.verbs, ["get", "list", "watch"]);
    assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
    // No ClusterRole rule grants Secrets anywhere.
    assert!(
        m.role.rules.iter().flatten().all(|r| !r
            .resources
            .iter()
            .flatten()
            .any(|x| x == "secrets")),
        "secrets only through the namespaced Role"
    );

    let b = m
        .role_bindings
        .iter()
        .find(|b| b.role_ref.name == "calico-node-bgp-passwords")
        .expect("no RoleBinding for calico-node-bgp-passwords");
    assert_eq!(b.metadata.namespace, ns);
    assert_eq!(b.role_ref.kind, "Role");
    assert_eq!(Some(&b.role_ref.name), role.metadata.name.as_ref());
    let subjects = b.subjects.clone().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), m.sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, ns);
    // The name the readers' Forbidden error tells the operator to check.
    let hint = datastore::secrets::SecretError::Forbidden {
        verb: "list",
        secret: "kube-system/p".into(),
        reason: String::new(),
    }
    .to_string();
    assert!(
        hint.contains(role.metadata.name.as_deref().unwrap()),
        "{hint}"
    );
}

#[test]
fn the_configmaps_cni_config_is_one_the_plugin_accepts() {
    let m = node_manifest();
    let data = m.config.data.clone().unwrap();
    let mtu = &data["veth_mtu"];
    assert!(mtu.parse::<u32>().is_ok(), "veth_mtu {mtu:?}");
    // What install-cni writes.
    let init = container(&m.ds, "install-cni", true);
    let script = init.args.as_deref().unwrap().join("\n");
    assert!(
        script.contains("__CNI_MTU__") && script.contains("/host/etc/cni/net.d/10-calico.conflist")
    );
    let text = data["cni_network_config"].replace("__CNI_MTU__", mtu);
    let list: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("cni_network_config is not JSON after install-cni: {e}"));
    let plugins = list["plugins"].as_array().unwrap();
    let mut entry = plugins[0].clone();
    assert_eq!(entry["type"], "calico");
    // The binary install-cni copies is the plugin named by "type".
    assert!(script.contains("/host/opt/cni/bin/calico"));
    // The runtime hands each plugin its entry with name and cniVersion.
    entry["name"] = list["name"].clone();
    entry["cniVersion"] = list["cniVersion"].clone();
    let conf = cni::NetConf::parse(&serde_json::to_vec(&entry).unwrap())
        .unwrap_or_else(|e| panic!("the plugin refuses the ConfigMap's config: {e:?}"));
    assert_eq!(conf.families(), (true, false));
    assert_eq!(conf.datastore_type.as_deref(), Some("kubernetes"));
    // The plugin talks to felix through the run directory calico-node uses,
    // which is the host's (felix's socket is <run dir>/felix.sock).
    let node = container(&m.ds, "calico-node", false);
    let run_dir = literal_env(node)["CALICO_RUN_DIR"].clone();
    assert_eq!(
        conf.felix_socket.unwrap(),
        Path::new(&run_dir).join("felix.sock")
    );
    assert!(
        node.volume_mounts
            .iter()
            .flatten()
            .any(|v| v.mount_path == run_dir),
        "{run_dir} must be a host mount"
    );
}

#[test]
fn the_dockerfile_ships_every_binary() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(text.contains("cargo build --release --locked --bins"));
    for bin in ["calico-node", "confd", "bird", "felix", "calico"] {
        assert!(
            text.contains(&format!("target/release/{bin} "))
                || text.contains(&format!("target/release/{bin}\n")),
            "the image lacks {bin}"
        );
    }
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/calico-node\"]"));
    // The install-cni script copies from where the image puts it.
    let m = node_manifest();
    let script = container(&m.ds, "install-cni", true)
        .args
        .as_deref()
        .unwrap()
        .join("\n");
    assert!(script.contains("/usr/local/bin/calico ") && text.contains("/usr/local/bin/"));
}
