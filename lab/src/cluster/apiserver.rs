//! The lab's Kubernetes mode (`--datastore kubernetes`): a real
//! kube-apiserver and kube-controller-manager ([`crate::kube`]) in a
//! namespace of their own beside etcd's, on etcd 3.6 from the same build
//! (`scripts/k8s-build.sh`), holding what calico-node reads and writes.
//!
//! ```text
//!   <lab>-etcd ───── etcd0 ┐                    etcd 3.6: the API server's storage only
//!   <lab>-apiserver ─ api0 ┤ <lab>-router       kube-apiserver :6443, kube-controller-manager
//!                          ├── node-0 ... node-N   calico-node, KUBECONFIG = its ServiceAccount's token
//! ```
//!
//! The lab then plays the parts a cluster's installer and kubelet play:
//! it applies `deploy/crds.yaml` and the RBAC objects of
//! `deploy/calico-node.yaml` with kubectl, registers each node as a Node
//! (with its InternalIP) before calico-node starts there, hands each
//! calico-node a token of the DaemonSet's ServiceAccount (TokenRequest),
//! never the admin's, and makes each lab pod a Pod object bound to its
//! node before the CNI ADD that names it, and reports it Running with its
//! address once the ADD returned (kubelet's part). No kubelet runs: the
//! Nodes go NotReady once the controller-manager notices no kubelet
//! reports (the Pods tolerate that, so nothing evicts them).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use serde_json::{Value, json};

use super::state::{KubeState, LabState, NodeState, ServiceAccountRef};
use super::{ClusterError, procs};
use crate::kube::{self as control, ControlPlane, ControlPlaneSpec};
use crate::netns::{Netns, process_alive, veth};

/// The API server namespace's address (its leg to the router) and the
/// router's; every node reaches it through its default route.
pub const APISERVER_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 254, 1);
pub const APISERVER_ROUTER_IP: Ipv4Addr = Ipv4Addr::new(172, 29, 254, 254);
pub const APISERVER_PORT: u16 = 6443;

/// A cold kube-apiserver on two busy cores takes 10-20 s to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// calico-node's token lifetime. No kubelet rotates it, so it outlives
/// any lab (TokenRequest's default is one hour).
const TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Lab pods live in this Kubernetes namespace (the `K8S_POD_NAMESPACE`
/// that [`crate::cni::invoke`] passes).
pub const POD_NAMESPACE: &str = "default";

/// What the lab applies, as this build of it was compiled with them.
pub const CRDS: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml"));
pub const CALICO_NODE_MANIFEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/calico-node.yaml"
));

/// The binaries Kubernetes mode runs, all from one `k8s-build.sh` build.
pub const BINARIES: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "etcd",
];

/// The kinds of `deploy/calico-node.yaml` that make calico-node's
/// identity and its rights.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "--datastore kubernetes runs a real kube-apiserver, which is not built yet: \
         build it with `scripts/k8s-build.sh` (several minutes the first time) and pass \
         the directory it prints last, `--k8s-bin \"$(scripts/k8s-build.sh | tail -1)\"` \
         or CALICO_K8S_BIN"
    )]
    NoBinDir,
    #[error(
        "{} has no {binary}; rebuild the Kubernetes binaries with `scripts/k8s-build.sh` \
         and pass the directory it prints last as --k8s-bin (or CALICO_K8S_BIN)",
        dir.display()
    )]
    MissingBinary { dir: PathBuf, binary: &'static str },
    #[error(
        "this lab runs on etcd; `{0}` needs one made with `calico-lab up --datastore kubernetes`"
    )]
    NotKubernetes(&'static str),
    #[error("kubectl {args} failed: {stderr}")]
    Kubectl { args: String, stderr: String },
    #[error("Kubernetes API: {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: ::kube::Error,
    },
    #[error("Kubernetes client for {path}: {reason}")]
    Client { path: PathBuf, reason: String },
    #[error("deploy/calico-node.yaml: {0}")]
    Manifest(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(::kube::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Kube(KubeError::Api { what, source })
}

/// How long the lab's own requests (Nodes, Pods, tokens) are made again
/// while the API server fails them transiently.
const TRANSIENT_RETRY: Duration = Duration::from_secs(30);

/// Whether a failed request may succeed if made again unchanged: the
/// server overloaded or failing (429, 5xx; a slow etcd is a 500
/// "etcdserver: request timed out") or not reached at all.
fn transient(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => true,
        _ => false,
    }
}

/// `f` until it succeeds or fails for good, for at most
/// [`TRANSIENT_RETRY`]. A create that timed out may have been stored: the
/// callers take "already exists" as done.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T, ::kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ::kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + TRANSIENT_RETRY;
    loop {
        match f().await {
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::info!(what, error = %e, "transient Kubernetes API failure; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// The directory with the Kubernetes binaries, checked.
pub fn check_bin_dir(dir: Option<&Path>) -> Result<PathBuf, KubeError> {
    let dir = dir.ok_or(KubeError::NoBinDir)?;
    for binary in BINARIES {
        if !dir.join(binary).is_file() {
            return Err(KubeError::MissingBinary {
                dir: dir.to_path_buf(),
                binary,
            });
        }
    }
    Ok(dir.to_path_buf())
}

/// The lab's control plane, or the error for a command that needs one.
pub fn kube_state<'a>(st: &'a LabState, what: &'static str) -> Result<&'a KubeState, ClusterError> {
    st.kube
        .as_ref()
        .ok_or(ClusterError::Kube(KubeError::NotKubernetes(what)))
}

/// The documents of a multi-document YAML stream, as text (comments kept).
fn documents(yaml: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in yaml.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&yaml[start..at]);
            start = at + line.len();
        }
        at += line.len();
    }
    docs.push(&yaml[start..]);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// calico-node's RBAC objects from its manifest, and the ServiceAccount
/// its DaemonSet runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rbac {
    /// The ServiceAccount, (Cluster)Role and (Cluster)RoleBinding
    /// documents, verbatim, for `kubectl apply`.
    pub yaml: String,
    pub kinds: Vec<String>,
    pub service_account: ServiceAccountRef,
}

pub fn rbac(manifest: &str) -> Result<Rbac, KubeError> {
    let mut yaml = String::new();
    let mut kinds = Vec::new();
    let mut daemonset_sa = None;
    for doc in documents(manifest) {
        let v: Value = serde_yaml_ng::from_str(doc)
            .map_err(|e| KubeError::Manifest(format!("a document does not parse: {e}")))?;
        let kind = v["kind"].as_str().unwrap_or_default();
        if RBAC_KINDS.contains(&kind) {
            yaml.push_str("---\n");
            yaml.push_str(doc);
            kinds.push(kind.to_string());
        }
        if kind == "DaemonSet" {
            let sa = v
                .pointer("/spec/template/spec/serviceAccountName")
                .and_then(Value::as_str);
            let ns = v.pointer("/metadata/namespace").and_then(Value::as_str);
            if let (Some(sa), Some(ns)) = (sa, ns) {
                daemonset_sa = Some(ServiceAccountRef {
                    namespace: ns.to_string(),
                    name: sa.to_string(),
                });
            }
        }
    }
    let service_account = daemonset_sa.ok_or_else(|| {
        KubeError::Manifest("no DaemonSet with a namespace and a serviceAccountName".into())
    })?;
    for needed in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
        if !kinds.iter().any(|k| k == needed) {
            return Err(KubeError::Manifest(format!("it has no {needed}")));
        }
    }
    Ok(Rbac {
        yaml,
        kinds,
        service_account,
    })
}

/// `kubectl --kubeconfig <admin> ARGS` from the router namespace (the
/// host cannot reach the lab's addresses), `input` on stdin; its stdout.
pub fn kubectl(st: &LabState, args: &[&str], input: Option<&str>) -> Result<String, ClusterError> {
    let ks = kube_state(st, "kubectl")?;
    let mut cmd = ks.control_plane.kubectl(Some(&st.router_ns), args);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let failed = |stderr: String| {
        ClusterError::Kube(KubeError::Kubectl {
            args: args.join(" "),
            stderr,
        })
    };
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kube-rs client as the admin (call from a thread in the router
/// namespace).
pub async fn admin_client(cp: &ControlPlane) -> Result<::kube::Client, ClusterError> {
    let path = &cp.admin_kubeconfig;
    let bad = |reason: String| {
        ClusterError::Kube(KubeError::Client {
            path: path.clone(),
            reason,
        })
    };
    let kc = ::kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let cfg = ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    ::kube::Client::try_from(cfg).map_err(|e| bad(e.to_string()))
}

/// Runs `f` with an admin client, from a thread in the router namespace.
pub fn with_admin<T, F, Fut>(st: &LabState, f: F) -> Result<T, ClusterError>
where
    F: FnOnce(::kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
    T: Send + 'static,
{
    let cp = kube_state(st, "the Kubernetes API")?.control_plane.clone();
    let router = Netns::existing(&st.router_ns)?;
    router.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Datastore(format!("cannot start a runtime: {e}")))?;
        rt.block_on(async move { f(admin_client(&cp).await?).await })
    })?
}

/// Makes the API server's namespace beside etcd's, with one leg to the
/// router, and writes the control plane's certificates and command lines
/// (nothing runs yet).
pub fn prepare(
    st: &LabState,
    router: &Netns,
    dir: &Path,
    bin_dir: &Path,
) -> Result<KubeState, ClusterError> {
    let ns = Netns::create_named(&format!("{}apiserver", st.prefix()))?;
    ns.keep();
    veth(&ns, "eth0", router, "api0")?;
    ns.ip(&["addr", "add", &format!("{APISERVER_IP}/24"), "dev", "eth0"])?;
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &APISERVER_ROUTER_IP.to_string(),
    ])?;
    router.ip(&[
        "addr",
        "add",
        &format!("{APISERVER_ROUTER_IP}/24"),
        "dev",
        "api0",
    ])?;
    let control_plane = control::prepare(&ControlPlaneSpec {
        bin_dir: bin_dir.to_path_buf(),
        dir: dir.join("kube"),
        etcd_endpoints: st.etcd_endpoint.clone(),
        address: IpAddr::V4(APISERVER_IP),
        port: APISERVER_PORT,
    })?;
    let service_account = rbac(CALICO_NODE_MANIFEST)?.service_account;
    Ok(KubeState {
        ns: ns.name().to_string(),
        control_plane,
        apiserver_pid: None,
        controller_manager_pid: None,
        service_account,
    })
}

/// Starts kube-apiserver, detached, in its namespace; its pid.
pub fn spawn_apiserver(ks: &KubeState, dir: &Path) -> Result<i32, ClusterError> {
    let cp = &ks.control_plane;
    procs::spawn_detached(
        &ks.ns,
        &cp.apiserver_bin(),
        &cp.apiserver_args,
        &[],
        &dir.join("logs/kube-apiserver.log"),
    )
}

/// Waits until the API server (process `pid`) is ready as the nodes see
/// it, from the router; how long that took.
pub fn wait_ready(st: &LabState, pid: i32, dir: &Path) -> Result<Duration, ClusterError> {
    let ks = kube_state(st, "waiting for the API server")?;
    ks.control_plane
        .wait_ready(Some(&st.router_ns), READY_TIMEOUT, || process_alive(pid))
        .map_err(|e| {
            ClusterError::Spec(format!(
                "{e}; its log: {}",
                dir.join("logs/kube-apiserver.log").display()
            ))
        })
}

pub fn start_controller_manager(ks: &KubeState, dir: &Path) -> Result<i32, ClusterError> {
    let cp = &ks.control_plane;
    procs::spawn_detached(
        &ks.ns,
        &cp.controller_manager_bin(),
        &cp.controller_manager_args,
        &[],
        &dir.join("logs/kube-controller-manager.log"),
    )
}

/// What an installer does before calico-node can run: Calico's CRDs
/// (waited for until the server serves them) and calico-node's
/// ServiceAccount, ClusterRole and bindings, all with `kubectl apply`.
/// Returns the RBAC kinds applied.
pub fn install(st: &LabState) -> Result<Vec<String>, ClusterError> {
    kubectl(st, &["apply", "-f", "-"], Some(CRDS))?;
    kubectl(
        st,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
        None,
    )?;
    let rbac = rbac(CALICO_NODE_MANIFEST)?;
    kubectl(st, &["apply", "-f", "-"], Some(&rbac.yaml))?;
    // The authorizer learns of new bindings from a watch: wait until it
    // grants the ServiceAccount what calico-node asks for first, so no
    // node starts into a 403.
    let user = rbac.service_account.user();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let check = [
        "auth",
        "can-i",
        "watch",
        "ippools.crd.projectcalico.org",
        "--as",
        &user,
    ];
    while kubectl(st, &check, None).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(ClusterError::Timeout(format!(
                "the API server does not grant {user} `watch ippools` 30 s after the ClusterRole \
                 of deploy/calico-node.yaml was applied"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(rbac.kinds)
}

/// The Node object kubelet would register for `node`: its name and
/// hostname label, its InternalIP. A route reflector also carries what
/// Calico reads from the Node for that (label and cluster ID annotation),
/// since with this datastore the Calico node *is* the Kubernetes Node.
pub fn node_object(node: &NodeState, route_reflector: bool) -> Value {
    let mut labels = json!({
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": std::env::consts::ARCH,
    });
    let mut annotations = json!({});
    if route_reflector {
        labels["route-reflector"] = json!("true");
        annotations["projectcalico.org/RouteReflectorClusterID"] = json!("244.0.0.1");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": annotations},
        "status": {"addresses": [
            {"type": "InternalIP", "address": node.ip.to_string()},
            {"type": "Hostname", "address": node.name},
        ]},
    })
}

/// Registers `nodes` as Node objects (as their kubelets would), before
/// calico-node starts on them. The API server ignores the status of a
/// created object, so the addresses go in through the status subresource,
/// as kubelet's own status updates do.
pub fn register_nodes(st: &LabState, nodes: &[(NodeState, bool)]) -> Result<(), ClusterError> {
    let objects: Vec<(String, Value)> = nodes
        .iter()
        .map(|(n, rr)| (n.name.clone(), node_object(n, *rr)))
        .collect();
    with_admin(st, move |client| async move {
        let api: Api<Node> = Api::all(client);
        let pp = PostParams::default();
        for (name, obj) in objects {
            let node: Node = serde_json::from_value(obj)
                .map_err(|e| ClusterError::Spec(format!("Node {name}: {e}")))?;
            let created = match retrying("create Node", || api.create(&pp, &node)).await {
                Ok(n) => n,
                Err(::kube::Error::Api(s)) if s.code == 409 => {
                    retrying("get Node", || api.get(&name))
                        .await
                        .map_err(api_err(format!("get Node {name}")))?
                }
                Err(e) => return Err(api_err(format!("create Node {name}"))(e)),
            };
            let has_address = created
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| a.iter().any(|a| a.type_ == "InternalIP"));
            if !has_address {
                let status = json!({"status": node.status});
                let params = ::kube::api::PatchParams::default();
                let patch = ::kube::api::Patch::Merge(&status);
                retrying("set Node addresses", || {
                    api.patch_status(&name, &params, &patch)
                })
                .await
                .map_err(api_err(format!("set the addresses of Node {name}")))?;
            }
        }
        Ok(())
    })
}

/// Gets calico-node on `node` a token of the DaemonSet's ServiceAccount
/// (TokenRequest, as kubelet does for a pod) and writes the kubeconfig
/// it runs with: only what the manifest's ClusterRole grants, never the
/// admin's rights.
pub fn write_node_kubeconfig(st: &LabState, node: &NodeState) -> Result<PathBuf, ClusterError> {
    let ks = kube_state(st, "a ServiceAccount token")?;
    let sa = ks.service_account.clone();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let token = with_admin(st, move |client| async move {
        let api: Api<ServiceAccount> = Api::namespaced(client, &sa.namespace);
        let pp = PostParams::default();
        let tr = retrying("TokenRequest", || {
            api.create_token_request(&sa.name, &pp, &request)
        })
        .await
        .map_err(api_err(format!(
            "TokenRequest for ServiceAccount {}/{}",
            sa.namespace, sa.name
        )))?;
        tr.status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClusterError::Datastore("TokenRequest returned no token".into()))
    })?;
    std::fs::create_dir_all(&node.run_dir).map_err(super::io_err(&node.run_dir))?;
    let path = node.kubeconfig();
    let text = ks
        .control_plane
        .kubeconfig_for(&ks.service_account.user(), &token);
    write_private(&path, &text)?;
    Ok(path)
}

fn write_private(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(super::io_err(path))?;
    f.write_all(text.as_bytes()).map_err(super::io_err(path))
}

/// What a lab pod is in Kubernetes: its namespace, labels and named
/// container ports (what network policies select and name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    /// Empty: the lab's `app=calico-lab`.
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

impl Default for PodMeta {
    fn default() -> Self {
        PodMeta {
            namespace: POD_NAMESPACE.to_string(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
        }
    }
}

/// A named container port (`http`: TCP 80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

/// The Pod object of lab pod `name` on `node`: bound to the node (the
/// scheduler's part), tolerating every taint (no kubelet reports, so the
/// node goes NotReady and would otherwise evict it).
pub fn pod_object(name: &str, node: &str, meta: &PodMeta) -> Value {
    let labels = if meta.labels.is_empty() {
        json!({"app": "calico-lab"})
    } else {
        json!(meta.labels)
    };
    let ports: Vec<Value> = meta
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "protocol": p.protocol, "containerPort": p.port}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": meta.namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "pod", "image": "registry.k8s.io/pause:3.10", "ports": ports}],
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 0,
        },
    })
}

/// The Kubernetes namespace of recorded lab pod `name`.
fn namespace_of(st: &LabState, name: &str) -> String {
    st.pods
        .iter()
        .find(|p| p.name == name)
        .map_or_else(|| POD_NAMESPACE.to_string(), |p| p.namespace.clone())
}

/// Creates the Pod object of a lab pod (kept if it exists: a retried add).
pub fn create_pod(
    st: &LabState,
    name: &str,
    node: &str,
    meta: &PodMeta,
) -> Result<(), ClusterError> {
    let pod: Pod = serde_json::from_value(pod_object(name, node, meta))
        .map_err(|e| ClusterError::Spec(format!("Pod {name}: {e}")))?;
    let (name, ns) = (name.to_string(), meta.namespace.clone());
    with_admin(st, move |client| async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let pp = PostParams::default();
        match retrying("create Pod", || api.create(&pp, &pod)).await {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!("create Pod {ns}/{name}"))(e)),
        }
    })
}

/// Reports a lab pod running with `ip`, as kubelet does once the CNI ADD
/// has returned (`status.podIP(s)`, phase Running): what selectors of
/// network policies on other nodes learn the pod's address from.
pub fn set_pod_running(st: &LabState, name: &str, ip: IpAddr) -> Result<(), ClusterError> {
    let (name, ns) = (name.to_string(), namespace_of(st, name));
    let patch = json!({"status": {"phase": "Running", "podIP": ip.to_string(),
                                  "podIPs": [{"ip": ip.to_string()}]}});
    with_admin(st, move |client| async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retrying("set Pod status", || api.patch_status(&name, &pp, &patch))
            .await
            .map(drop)
            .map_err(api_err(format!("status of Pod {ns}/{name}")))
    })
}

/// Deletes a lab pod's Pod object at once, as kubelet finishes a deletion
/// once the pod's sandbox is gone (after the CNI DEL).
pub fn delete_pod(st: &LabState, name: &str) -> Result<(), ClusterError> {
    let (name, ns) = (name.to_string(), namespace_of(st, name));
    with_admin(st, move |client| async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        match api
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err(format!("delete Pod {ns}/{name}"))(e)),
        }
    })
}

/// A merge patch that leaves an object with exactly `labels` (keys it
/// has and `labels` lacks are set to null, which removes them), keeping
/// those named in `keep`.
fn labels_patch(
    current: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
    keep: &[&str],
) -> Value {
    let mut l = serde_json::Map::new();
    for k in current.into_iter().flat_map(|c| c.keys()) {
        if !labels.contains_key(k) && !keep.contains(&k.as_str()) {
            l.insert(k.clone(), Value::Null);
        }
    }
    for (k, v) in labels {
        l.insert(k.clone(), json!(v));
    }
    json!({"metadata": {"labels": l}})
}

/// Replaces the labels of recorded lab pod `name` (on its Pod object).
pub fn set_pod_labels(
    st: &LabState,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ClusterError> {
    let (name, ns, labels) = (name.to_string(), namespace_of(st, name), labels.clone());
    with_admin(st, move |client| async move {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        let pod = retrying("get Pod", || api.get(&name))
            .await
            .map_err(api_err(format!("get Pod {ns}/{name}")))?;
        let patch = labels_patch(pod.metadata.labels.as_ref(), &labels, &[]);
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retrying("label Pod", || api.patch(&name, &pp, &patch))
            .await
            .map(drop)
            .map_err(api_err(format!("label Pod {ns}/{name}")))
    })
}

/// Replaces the labels of Kubernetes namespace `name` (the API server's
/// own `kubernetes.io/metadata.name` stays).
pub fn set_namespace_labels(
    st: &LabState,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ClusterError> {
    let (name, labels) = (name.to_string(), labels.clone());
    with_admin(st, move |client| async move {
        let api: Api<Namespace> = Api::all(client);
        let ns = retrying("get Namespace", || api.get(&name))
            .await
            .map_err(api_err(format!("get Namespace {name}")))?;
        let patch = labels_patch(
            ns.metadata.labels.as_ref(),
            &labels,
            &["kubernetes.io/metadata.name"],
        );
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retrying("label Namespace", || api.patch(&name, &pp, &patch))
            .await
            .map(drop)
            .map_err(api_err(format!("label Namespace {name}")))
    })
}

/// How long a new namespace may take to get its `default`
/// ServiceAccount (the controller-manager makes it; Pods are refused
/// until it exists).
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates Kubernetes namespace `name` with `labels` (the API server adds
/// `kubernetes.io/metadata.name`) and waits until Pods can be made in it.
pub fn create_namespace(
    st: &LabState,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ClusterError> {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
    .map_err(|e| ClusterError::Spec(format!("Namespace {name}: {e}")))?;
    let name = name.to_string();
    with_admin(st, move |client| async move {
        let api: Api<Namespace> = Api::all(client.clone());
        let pp = PostParams::default();
        match retrying("create Namespace", || api.create(&pp, &ns)).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(api_err(format!("create Namespace {name}"))(e)),
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        let deadline = tokio::time::Instant::now() + SERVICE_ACCOUNT_TIMEOUT;
        loop {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => {
                    return Err(ClusterError::Timeout(format!(
                        "namespace {name} has no default ServiceAccount {} s after it was \
                         made; is kube-controller-manager running?",
                        SERVICE_ACCOUNT_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(api_err(format!("get ServiceAccount {name}/default"))(e)),
            }
        }
    })
}

/// Whether the API server answers `/readyz` now (as the nodes see it).
pub fn ready(st: &LabState) -> bool {
    let Some(ks) = &st.kube else {
        return false;
    };
    ks.control_plane
        .kubectl(Some(&st.router_ns), &["get", "--raw", "/readyz"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"ok"))
}

/// A one-line description of the control plane for `status`.
pub fn describe(st: &LabState) -> String {
    let Some(ks) = &st.kube else {
        return format!("etcd {}", st.etcd_endpoint);
    };
    let running = |pid: Option<i32>| match pid {
        Some(p) if process_alive(p) => format!("running (pid {p})"),
        _ => "NOT RUNNING".to_string(),
    };
    format!(
        "kubernetes: kube-apiserver {} {}, kube-controller-manager {}, on etcd 3.6 at {}; \
         calico-node runs as {} (KUBECONFIG <node run dir>/kubeconfig); \
         admin kubeconfig {} (`calico-lab exec` sets it)",
        ks.control_plane.url,
        running(ks.apiserver_pid),
        running(ks.controller_manager_pid),
        st.etcd_endpoint,
        ks.service_account.user(),
        ks.control_plane.admin_kubeconfig.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_split_on_their_separators_only() {
        let docs = documents("# head\n---\na: 1\n---\n# only a comment\n---\nb: '---'\n");
        assert_eq!(docs, vec!["a: 1\n", "b: '---'\n"]);
    }

    #[test]
    fn the_shipped_manifest_gives_rbac_objects_and_the_daemonsets_account() {
        let r = rbac(CALICO_NODE_MANIFEST).unwrap();
        assert_eq!(
            r.service_account,
            ServiceAccountRef {
                namespace: "kube-system".into(),
                name: "calico-node".into()
            }
        );
        assert_eq!(
            r.service_account.user(),
            "system:serviceaccount:kube-system:calico-node"
        );
        for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"] {
            assert!(r.kinds.iter().any(|k| k == kind), "{:?}", r.kinds);
        }
        // Only identity and rights: no workload, no configuration.
        assert!(!r.yaml.contains("kind: DaemonSet"));
        assert!(!r.yaml.contains("kind: ConfigMap"));
        assert!(r.yaml.contains("kind: ClusterRole\n"));
    }

    #[test]
    fn a_manifest_without_the_daemonsets_account_is_refused() {
        let e = rbac("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n").unwrap_err();
        assert!(e.to_string().contains("serviceAccountName"), "{e}");
    }

    #[test]
    fn nodes_and_pods_are_what_kubelet_and_the_scheduler_would_make() {
        let node = NodeState {
            name: "node-1".into(),
            ns: "calico-lab-node-1".into(),
            ip: Ipv4Addr::new(172, 30, 1, 1),
            prefix_len: 24,
            subnet: 1,
            gateway: Ipv4Addr::new(172, 30, 1, 254),
            ip6: None,
            gateway6: None,
            run_dir: PathBuf::from("/run/calico-lab/calico-lab/nodes/node-1"),
            pid: None,
        };
        let n: Node = serde_json::from_value(node_object(&node, true)).unwrap();
        let addrs = n.status.unwrap().addresses.unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "172.30.1.1");
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["route-reflector"], "true");
        assert_eq!(labels["kubernetes.io/hostname"], "node-1");
        let p: Pod =
            serde_json::from_value(pod_object("pod-1-0", "node-1", &PodMeta::default())).unwrap();
        assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some(POD_NAMESPACE));
        assert_eq!(p.metadata.labels.unwrap()["app"], "calico-lab");
        // A pod of a policy test: its namespace, labels and named ports.
        let meta = PodMeta {
            namespace: "prod".into(),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            ports: vec![NamedPort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
            }],
        };
        let p: Pod = serde_json::from_value(pod_object("pod-0-1", "node-0", &meta)).unwrap();
        assert_eq!(p.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        let port = &p.spec.unwrap().containers[0].ports.clone().unwrap()[0];
        assert_eq!(
            (
                port.name.as_deref(),
                port.container_port,
                port.protocol.as_deref()
            ),
            (Some("http"), 80, Some("TCP"))
        );
    }

    #[test]
    fn a_labels_patch_removes_what_is_not_wanted_but_what_is_kept() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let current = l(&[
            ("a", "1"),
            ("b", "2"),
            ("kubernetes.io/metadata.name", "dev"),
        ]);
        let p = labels_patch(
            Some(&current),
            &l(&[("b", "3"), ("c", "4")]),
            &["kubernetes.io/metadata.name"],
        );
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"a": null, "b": "3", "c": "4"}}})
        );
    }

    #[test]
    fn a_missing_bin_dir_says_how_to_build_it() {
        let e = check_bin_dir(None).unwrap_err().to_string();
        assert!(
            e.contains("scripts/k8s-build.sh") && e.contains("--k8s-bin"),
            "{e}"
        );
        let e = check_bin_dir(Some(Path::new("/nonexistent")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kube-apiserver") && e.contains("CALICO_K8S_BIN"),
            "{e}"
        );
    }
}
