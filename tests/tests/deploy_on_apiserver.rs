//! `deploy/` on a real kube-apiserver: `kubectl apply -f deploy/crds.yaml`
//! is accepted and every CRD is served; the server enforces the CRDs'
//! schemas and CEL rules with our messages (every case of
//! `ippool-crd/tests/crd_rules.yaml`); Calico's documented objects are
//! stored without a field pruned; and `deploy/calico-node.yaml` applies.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};
use tests::kube::KubeServer;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn server_with_crds() -> KubeServer {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    server.install_crds().unwrap();
    server
}

/// `kubectl apply` of one object: Ok(kubectl's output), or Err(its stderr).
fn apply(server: &KubeServer, obj: &Value) -> Result<String, String> {
    let out = server.apply(&obj.to_string()).unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn calico_object(kind: &str, name: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    })
}

#[test]
fn every_crd_is_accepted_structural_and_served() {
    let server = server_with_crds();
    let crds: Value =
        serde_json::from_str(&server.kubectl(&["get", "crd", "-o", "json"]).unwrap()).unwrap();
    let mut served = BTreeSet::new();
    for crd in crds["items"].as_array().unwrap() {
        let name = crd["metadata"]["name"].as_str().unwrap();
        let conditions: Vec<(String, String)> = crd["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for want in ["Established", "NamesAccepted"] {
            assert!(
                conditions.contains(&(want.to_string(), "True".to_string())),
                "{name}: {conditions:?}"
            );
        }
        assert!(
            !conditions.iter().any(|(t, _)| t == "NonStructuralSchema"),
            "{name}: {conditions:?}"
        );
        served.insert(name.to_string());
    }
    let ours: BTreeSet<String> = ippool_crd::crdgen::crds()
        .unwrap()
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(served, ours);
    // kubectl finds every kind by its short name, as Calico's users type it.
    for plural in ours.iter().map(|n| n.split('.').next().unwrap()) {
        server.kubectl(&["get", plural]).unwrap();
    }
}

#[derive(Deserialize)]
struct Case {
    kind: String,
    spec: Value,
    #[serde(default)]
    old: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

#[test]
fn the_api_server_enforces_the_crd_rules_with_our_messages() {
    let path = repo().join("ippool-crd/tests/crd_rules.yaml");
    let cases: Vec<Case> =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let server = server_with_crds();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("case-{i}");
        if let Some(old) = &case.old {
            apply(&server, &calico_object(&case.kind, &name, old))
                .unwrap_or_else(|e| panic!("{} {old}: the old object is refused: {e}", case.kind));
        }
        let got = apply(&server, &calico_object(&case.kind, &name, &case.spec));
        let ok = match (&case.error, &got) {
            (None, Ok(_)) => true,
            (Some(want), Err(stderr)) => {
                stderr.contains(&format!("The {} \"{name}\" is invalid: ", case.kind))
                    && stderr.contains(want.as_str())
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} {} (old {:?}):\n  want {:?}\n  got  {got:?}",
                case.kind, case.spec, case.old, case.error
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fields the CRD schemas default: the server adds them when absent.
const SCHEMA_DEFAULTS: &[(&str, &str)] = &[
    ("IPPool", "ipipMode"),
    ("IPPool", "vxlanMode"),
    ("IPPool", "natOutgoing"),
    ("IPPool", "disabled"),
    ("IPPool", "disableBGPExport"),
    ("IPPool", "nodeSelector"),
    ("IPPool", "assignmentMode"),
    ("IPAMConfig", "autoAllocateBlocks"),
    ("IPAMConfig", "strictAffinity"),
];

#[test]
fn calicos_documented_objects_are_stored_without_losing_a_field() {
    let server = server_with_crds();
    let dir = repo().join("ippool-crd/tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let mut obj = Value::deserialize(doc).unwrap();
            // Nodes are Kubernetes Nodes, not a CRD.
            if obj.is_null() || obj["kind"] == "Node" {
                continue;
            }
            // Calico's API (projectcalico.org/v3) stores its objects as
            // these; IPAMConfiguration's stored kind is IPAMConfig.
            obj["apiVersion"] = json!("crd.projectcalico.org/v1");
            if obj["kind"] == "IPAMConfiguration" {
                obj["kind"] = json!("IPAMConfig");
            }
            let what = format!(
                "{}: {} {}",
                file.file_name().unwrap().to_string_lossy(),
                obj["kind"],
                obj["metadata"]["name"]
            );
            // --validate=strict: a field the schema does not know is an
            // error, not a warning and a silently pruned field.
            let out = server
                .cp
                .kubectl(
                    None,
                    &["create", "--validate=strict", "-o", "json", "-f", "-"],
                )
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .unwrap()
                        .write_all(obj.to_string().as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            assert!(
                out.status.success(),
                "{what} is refused: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
            let (sent, back) = (obj["spec"].as_object().unwrap(), &stored["spec"]);
            for (field, value) in sent {
                assert_eq!(&back[field], value, "{what}: spec.{field}");
            }
            for field in back.as_object().unwrap().keys() {
                assert!(
                    sent.contains_key(field)
                        || SCHEMA_DEFAULTS.contains(&(obj["kind"].as_str().unwrap(), field)),
                    "{what}: spec.{field} appeared"
                );
            }
            // The next document may reuse the name.
            server
                .kubectl(&[
                    "delete",
                    obj["kind"].as_str().unwrap(),
                    obj["metadata"]["name"].as_str().unwrap(),
                ])
                .unwrap();
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fixtures");
}

#[test]
fn calico_node_yaml_applies_after_the_crds() {
    let server = server_with_crds();
    let yaml = std::fs::read_to_string(repo().join("deploy/calico-node.yaml")).unwrap();
    let out = server.apply(&yaml).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for created in [
        "serviceaccount/calico-node created",
        "clusterrole.rbac.authorization.k8s.io/calico-node created",
        "clusterrolebinding.rbac.authorization.k8s.io/calico-node created",
        "role.rbac.authorization.k8s.io/calico-node-leader-election created",
        "rolebinding.rbac.authorization.k8s.io/calico-node-leader-election created",
        "configmap/calico-config created",
        "daemonset.apps/calico-node created",
    ] {
        assert!(stdout.contains(created), "{stdout}");
    }
    // The API server holds the DaemonSet as written (its defaulting aside):
    // what the manifest's tests check is what the cluster runs.
    let ds: Value = serde_json::from_str(
        &server
            .kubectl(&[
                "-n",
                "kube-system",
                "get",
                "daemonset",
                "calico-node",
                "-o",
                "json",
            ])
            .unwrap(),
    )
    .unwrap();
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers[0]["name"], "calico-node");
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], true);
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        "calico-node"
    );
    // And applying it again changes nothing.
    let again = server.apply(&yaml).unwrap();
    assert!(again.status.success());
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.lines().all(|l| l.ends_with(" unchanged")),
        "{stdout}"
    );
}
