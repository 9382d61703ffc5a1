//! felix's policy source against the real datastores: a real API server
//! (read with the token of calico-node's ServiceAccount, so a missing RBAC
//! rule fails here) and a real etcd (WorkloadEndpoints written by felix's
//! own CNI path). Each test checks the published snapshot's endpoints,
//! local interfaces, policies and errors as the cluster changes, and
//! prints (does not assert) how long each change took to reach a snapshot.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::{Client, DatastoreType, KubeOptions};
use felix::policy::PolicySnapshot;
use felix::policy::source::wep::{self, PodEndpoint};
use felix::policy::source::{self, SourceConfig};
use felix::workload::naming::host_iface_name;
use ippool_crd::{GlobalNetworkPolicy, IPPool, NetworkPolicy, Profile, WorkloadEndpoint};
use lab::Netns;
use lab::cni::{CniCall, CniOut};
use serde_json::json;
use tests::EtcdServer;
use tests::agent::{AgentDirs, build_many, spawn_confd, spawn_felix};
use tests::kube::KubeServer;
use tokio::sync::watch;

type Rx = watch::Receiver<Arc<PolicySnapshot>>;

const WAIT: Duration = Duration::from_secs(30);

fn source_cfg(node: &str) -> SourceConfig {
    SourceConfig {
        node: node.into(),
        iface_prefix: "cali".into(),
    }
}

/// Waits until the newest snapshot satisfies `pred`; returns it and how
/// long that took from `since`.
async fn wait_for(
    rx: &mut Rx,
    what: &str,
    since: Instant,
    pred: impl Fn(&PolicySnapshot) -> bool,
) -> Arc<PolicySnapshot> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        {
            let s = rx.borrow_and_update().clone();
            if pred(&s) {
                println!("{what}: in a snapshot after {:?}", since.elapsed());
                return s;
            }
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            let s = rx.borrow().clone();
            panic!(
                "{what}: not in a snapshot within {WAIT:?}; last: synced {} endpoints {:?} local {:?} policies {:?} errors {:?}",
                s.synced,
                s.endpoints.keys().collect::<Vec<_>>(),
                s.local,
                policy_names(&s),
                s.errors
            );
        }
    }
}

fn policy_names(s: &PolicySnapshot) -> Vec<String> {
    s.policies
        .policies()
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

fn error_names(s: &PolicySnapshot) -> Vec<String> {
    s.errors.iter().map(|e| e.name.clone()).collect()
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)).unwrap()
}

fn apply(k: &KubeServer, yaml: &str) {
    let out = k.apply(yaml).unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_yaml(ns: &str, name: &str, node: &str, labels: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {labels}
spec:
  nodeName: {node}
{extra_spec}  containers:
    - name: main
      image: registry.invalid/none
      ports:
        - name: http
          containerPort: 8080
"
    )
}

/// Sets the pod's phase and addresses through the status subresource, as
/// kubelet does.
fn set_status(k: &KubeServer, ns: &str, name: &str, phase: &str, ip: &str) {
    let patch = json!({"status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}});
    k.kubectl(&[
        "-n",
        ns,
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_pods_namespaces_and_policies_reach_the_snapshot_read_as_calico_node() {
    tests::init_tracing();
    let k = KubeServer::start().unwrap();
    // The RBAC of the DaemonSet, but no Calico CRDs yet; Nodes for the
    // pods (the pod garbage collector deletes pods of unknown nodes).
    apply(&k, &repo_file("deploy/calico-node.yaml"));
    for n in ["node-1", "node-2"] {
        apply(
            &k,
            &format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {n}\n"),
        );
    }
    let token = k
        .service_account_token("kube-system", "calico-node")
        .unwrap();
    let kube = k
        .client_from(&k.cp.kubeconfig_for("calico-node", &token))
        .await
        .unwrap();
    let ds = Client::new(datastore::KubeBackend::new(
        kube,
        &k.cp.url,
        KubeOptions::default(),
    ));
    let admin = k.datastore(KubeOptions::default()).await.unwrap();
    let mut rx = source::spawn(ds, DatastoreType::Kubernetes, source_cfg("node-1"));

    // Calico's policy kinds cannot be listed: nothing is published, the
    // snapshot stays unsynced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!rx.borrow().synced, "synced without Calico's CRDs");
    let installed = Instant::now();
    k.install_crds().unwrap();
    let s = wait_for(&mut rx, "first sync after the CRDs", installed, |s| {
        s.synced
    })
    .await;
    assert!(s.endpoints.is_empty(), "{:?}", s.endpoints);

    // Namespaces and pods: two on this node (one host-network), two on
    // another, one that has ended.
    apply(
        &k,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels: {team: a}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: dev\n",
    );
    let t = Instant::now();
    apply(&k, &pod_yaml("prod", "web", "node-1", "{app: web}", ""));
    apply(
        &k,
        &pod_yaml(
            "prod",
            "agent",
            "node-1",
            "{app: agent}",
            "  hostNetwork: true\n",
        ),
    );
    apply(&k, &pod_yaml("prod", "db", "node-2", "{app: db}", ""));
    apply(&k, &pod_yaml("dev", "cli", "node-2", "{app: cli}", ""));
    apply(&k, &pod_yaml("dev", "job", "node-2", "{app: job}", ""));
    set_status(&k, "prod", "web", "Running", "10.65.1.2");
    set_status(&k, "prod", "agent", "Running", "10.0.0.1");
    set_status(&k, "prod", "db", "Running", "10.65.2.2");
    set_status(&k, "dev", "cli", "Running", "10.65.2.3");
    set_status(&k, "dev", "job", "Succeeded", "10.65.2.4");
    let s = wait_for(&mut rx, "pods", t, |s| {
        s.endpoints.len() == 3 && s.endpoints.values().all(|e| !e.addresses.is_empty())
    })
    .await;
    assert_eq!(
        s.endpoints.keys().collect::<Vec<_>>(),
        ["dev/cli", "prod/db", "prod/web"]
    );
    assert_eq!(
        s.local,
        BTreeMap::from([(
            "prod/web".to_string(),
            host_iface_name("cali", "prod", "web")
        )])
    );
    let web = &s.endpoints["prod/web"];
    assert_eq!(
        web.addresses,
        ["10.65.1.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(web.labels["app"], "web");
    assert_eq!(web.namespace_labels["team"], "a");
    assert_eq!(web.named_ports["http"].port, 8080);
    assert!(s.policies.profile("kns.prod").is_some());
    assert!(s.policies.profile("kns.dev").is_some());

    // Policies: a Kubernetes one, a global one, and a Calico one whose
    // selector the CRD schema cannot check (`=` is not an operator).
    let t = Instant::now();
    apply(
        &k,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  namespace: prod\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {team: a}}\n",
    );
    let gnp: GlobalNetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "deny-dev"},
        "spec": {"order": 10, "selector": "projectcalico.org/namespace == 'dev'",
                 "egress": [{"action": "Deny"}], "types": ["Egress"]}
    }))
    .unwrap();
    admin.create(&gnp).await.unwrap();
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bad", "namespace": "prod"},
        "spec": {"selector": "app = 'x'", "ingress": [{"action": "Allow"}]}
    }))
    .unwrap();
    let bad = admin.create(&bad).await.unwrap();
    let s = wait_for(&mut rx, "policies", t, |s| {
        policy_names(s).len() == 2 && s.errors.len() == 1
    })
    .await;
    assert_eq!(policy_names(&s), ["deny-dev", "prod/knp.default.web"]);
    assert_eq!(error_names(&s), ["prod/bad"]);
    assert!(
        s.errors[0].message.contains("spec.selector"),
        "{}",
        s.errors[0]
    );

    // A policy change alone, timed from the write.
    let mut fixed = bad.clone();
    fixed.spec.selector = Some("app == 'x'".into());
    let t = Instant::now();
    admin.update(&fixed).await.unwrap();
    let s = wait_for(&mut rx, "a fixed policy", t, |s| s.errors.is_empty()).await;
    // Calico's order: 10, then Kubernetes' 1000, then unordered.
    assert_eq!(
        policy_names(&s),
        ["deny-dev", "prod/knp.default.web", "prod/bad"]
    );

    // A label change moves an endpoint; a namespace's labels move its pods.
    let t = Instant::now();
    k.kubectl(&["-n", "prod", "label", "pod", "db", "app=web", "--overwrite"])
        .unwrap();
    wait_for(&mut rx, "a pod relabelled (kubectl)", t, |s| {
        s.endpoints["prod/db"].labels.get("app").map(String::as_str) == Some("web")
    })
    .await;
    let t = Instant::now();
    k.kubectl(&["label", "namespace", "dev", "team=a"]).unwrap();
    wait_for(&mut rx, "a namespace relabelled (kubectl)", t, |s| {
        s.endpoints["dev/cli"]
            .namespace_labels
            .get("team")
            .map(String::as_str)
            == Some("a")
    })
    .await;

    // A deleted pod goes; a deleted policy goes.
    let t = Instant::now();
    k.kubectl(&[
        "-n",
        "prod",
        "delete",
        "pod",
        "db",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    let s = wait_for(&mut rx, "a pod deleted (kubectl)", t, |s| {
        !s.endpoints.contains_key("prod/db")
    })
    .await;
    assert_eq!(s.endpoints.len(), 2);
    let t = Instant::now();
    admin
        .delete::<GlobalNetworkPolicy>("deny-dev", None)
        .await
        .unwrap();
    let s = wait_for(&mut rx, "a policy deleted", t, |s| {
        policy_names(s).len() == 2
    })
    .await;
    assert!(s.synced);
    assert_eq!(policy_names(&s), ["prod/knp.default.web", "prod/bad"]);

    // A source started now reads it all from its first lists: the same
    // view.
    let kube = k
        .client_from(&k.cp.kubeconfig_for("calico-node", &token))
        .await
        .unwrap();
    let ds = Client::new(datastore::KubeBackend::new(
        kube,
        &k.cp.url,
        KubeOptions::default(),
    ));
    let mut fresh = source::spawn(ds, DatastoreType::Kubernetes, source_cfg("node-1"));
    let f = wait_for(
        &mut fresh,
        "a new source's first sync",
        Instant::now(),
        |s| s.synced,
    )
    .await;
    assert_eq!(f.endpoints, s.endpoints);
    assert_eq!(f.local, s.local);
    assert_eq!(f.policies.policies(), s.policies.policies());
    assert!(f.errors.is_empty());
}

/// A workload endpoint as felix writes it for a pod.
fn pod_ep<'a>(
    node: &'a str,
    ns: &'a str,
    pod: &'a str,
    ips: &'a [std::net::IpAddr],
) -> PodEndpoint<'a> {
    PodEndpoint {
        node,
        namespace: ns,
        pod,
        container_id: pod,
        container_iface: "eth0",
        host_iface: "cali0000000000",
        mac: "ee:ee:ee:ee:ee:ee",
        ips,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_workload_endpoints_profiles_and_policies_reach_the_snapshot() {
    tests::init_tracing();
    let mut etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();

    // etcd down when the source starts: nothing listed, nothing synced.
    etcd.kill();
    let mut rx = source::spawn(c.clone(), DatastoreType::Etcdv3, source_cfg("node-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!rx.borrow().synced, "synced with etcd down");
    let t = Instant::now();
    etcd.restart().unwrap();
    wait_for(&mut rx, "first sync once etcd is back", t, |s| s.synced).await;

    let ip1 = ["10.65.1.2".parse().unwrap()];
    let ip2 = ["10.65.2.2".parse().unwrap()];
    let t = Instant::now();
    let web = wep::write(&c, &pod_ep("node-1", "prod", "web", &ip1))
        .await
        .unwrap();
    wep::write(&c, &pod_ep("node-2", "prod", "db", &ip2))
        .await
        .unwrap();
    c.create(&Profile::for_namespace(
        "prod",
        &BTreeMap::from([("team".to_string(), "a".to_string())]),
    ))
    .await
    .unwrap();
    let s = wait_for(&mut rx, "workload endpoints", t, |s| {
        s.endpoints.len() == 2
            && s.endpoints["prod/web"]
                .namespace_labels
                .contains_key("team")
    })
    .await;
    assert_eq!(s.local["prod/web"], "cali0000000000");
    assert_eq!(s.local.len(), 1);
    assert_eq!(s.endpoints["prod/db"].addresses, ip2);
    assert!(s.policies.profile("kns.prod").is_some());

    // etcd goes away: the view stays as it was (synced, nothing dropped),
    // and once etcd is back the watches resume.
    let before = rx.borrow().clone();
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let during = rx.borrow();
        assert!(during.synced);
        assert_eq!(during.endpoints, before.endpoints);
    }
    etcd.restart().unwrap();
    // The client reconnects to the restarted etcd by itself (bounded).
    let deadline = Instant::now() + WAIT;
    while let Err(e) = c.list::<Profile>().await {
        assert!(Instant::now() < deadline, "etcd did not come back: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Policies, one of them invalid as stored (etcd has no schema).
    let t = Instant::now();
    let np: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"selector": "app == 'web'", "ingress": [{"action": "Allow", "protocol": "TCP",
                 "destination": {"ports": ["http"]}}]}
    }))
    .unwrap();
    c.create(&np).await.unwrap();
    let bad: GlobalNetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
        "metadata": {"name": "bad"},
        "spec": {"ingress": [{"action": "Accept"}]}
    }))
    .unwrap();
    c.create(&bad).await.unwrap();
    let s = wait_for(&mut rx, "policies", t, |s| {
        policy_names(s).len() == 1 && s.errors.len() == 1
    })
    .await;
    assert_eq!(policy_names(&s), ["prod/web"]);
    assert_eq!(error_names(&s), ["bad"]);
    assert!(s.errors[0].message.contains("Accept"), "{}", s.errors[0]);
    // The endpoints are the policy's namespace's.
    let sel = &s.policies.policies()[0];
    assert_eq!(sel.namespace.as_deref(), Some("prod"));

    // Labels written on the endpoint (what `calicoctl label` does) move it;
    // felix writing the endpoint again keeps them.
    let t = Instant::now();
    let mut labelled = c
        .get_in::<WorkloadEndpoint>("prod", web.metadata.name.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    labelled
        .metadata
        .labels
        .get_or_insert_default()
        .insert("app".into(), "web".into());
    c.update(&labelled).await.unwrap();
    wait_for(&mut rx, "a workload endpoint relabelled", t, |s| {
        s.endpoints["prod/web"]
            .labels
            .get("app")
            .map(String::as_str)
            == Some("web")
    })
    .await;
    let again = wep::write(&c, &pod_ep("node-1", "prod", "web", &ip1))
        .await
        .unwrap();
    let l = again.metadata.labels.unwrap();
    assert_eq!(l["app"], "web");
    assert_eq!(l["projectcalico.org/namespace"], "prod");

    // Removed: gone from the snapshot. Another container's endpoint of
    // the same pod name is left alone.
    let mut other = pod_ep("node-2", "prod", "db", &ip2);
    other.container_id = "someone-else";
    wep::remove(&c, &other).await.unwrap();
    assert_eq!(c.list::<WorkloadEndpoint>().await.unwrap().len(), 2);
    let t = Instant::now();
    wep::remove(&c, &pod_ep("node-2", "prod", "db", &ip2))
        .await
        .unwrap();
    let s = wait_for(&mut rx, "a workload endpoint removed", t, |s| {
        !s.endpoints.contains_key("prod/db")
    })
    .await;
    assert_eq!(s.endpoints.len(), 1);
    assert!(s.synced);
}

fn cni(bin: &Path, cmd: &str, container: &str, netns: &Path, pod: &str, conf: &str) -> CniOut {
    lab::cni::invoke(&CniCall {
        plugin: bin,
        command: cmd,
        container,
        netns,
        namespace: "default",
        pod,
        config: conf,
        node_ns: None,
    })
    .unwrap()
}

/// In etcd mode, a pod added through the real CNI plugin and felix gets
/// Calico's WorkloadEndpoint (name, fields, labels), the policy source
/// sees it, labels the lab writes (before or after the ADD) survive the
/// ADD, and DEL removes it.
#[test]
fn cni_add_through_felix_writes_calicos_workload_endpoint_and_del_removes_it() {
    tests::init_tracing();
    let built = build_many(&[("felix", "felix"), ("confd", "confd"), ("cni", "calico")]).unwrap();
    let [felix, confd, calico] = <[_; 3]>::try_from(built).unwrap();
    let (node, _gw) = tests::agent::node_with_uplink("wepnode", "wepgw").unwrap();
    let pod_ns = Netns::create("weppod").unwrap();
    let pod_path = pod_ns.path();

    node.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _pod_ns = pod_ns;
            let tmp = tempfile::tempdir().unwrap();
            let d = AgentDirs {
                dir: tmp.path().to_path_buf(),
            };
            let etcd = EtcdServer::start().unwrap();
            let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
            tests::agent::register_uplink_node(&c).await.unwrap();
            let pool: IPPool = serde_json::from_value(json!({
                "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16"},
            }))
            .unwrap();
            c.create(&pool).await.unwrap();
            let _felix = spawn_felix(&felix, &d, "node-1", &etcd.endpoint(), &[]).unwrap();
            let _confd = spawn_confd(&confd, &d, "node-1", &etcd.endpoint()).unwrap();
            let conf = lab::cni::network_config(&d.felix_socket());
            let mut rx = source::spawn(c.clone(), DatastoreType::Etcdv3, source_cfg("node-1"));

            // The orchestrator (the lab) labels the pod before it is added.
            let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
            lab::labels::label_pod(&c, "node-1", "default", "pod-a", &web)
                .await
                .unwrap();

            // ADD (retried while felix starts and waits for confd).
            let deadline = Instant::now() + Duration::from_secs(20);
            let (add, t) = loop {
                let t = Instant::now();
                let o = cni(&calico, "ADD", "ca", &pod_path, "pod-a", &conf);
                if o.code == 0 || Instant::now() > deadline {
                    break (o, t);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(add.code, 0, "{}", add.json);
            let ip = add.json["ips"][0]["address"].as_str().unwrap().to_string();
            let host_iface = host_iface_name("cali", "default", "pod-a");
            assert_eq!(add.json["interfaces"][0]["name"], host_iface.as_str());

            // Calico's name and key, and Calico's fields.
            let name = "node--1-k8s-pod--a-eth0";
            let key = datastore::Key::namespaced(
                datastore::ResourceKind::WorkloadEndpoint,
                "default",
                name,
            );
            assert_eq!(
                key.etcd_path(),
                "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node--1-k8s-pod--a-eth0"
            );
            let raw = c.backend().get(&key).await.unwrap().expect("no workload endpoint");
            let stored: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
            assert_eq!(stored["apiVersion"], "projectcalico.org/v3");
            assert_eq!(stored["kind"], "WorkloadEndpoint");
            assert_eq!(stored["metadata"]["namespace"], "default");
            let spec = &stored["spec"];
            assert_eq!(spec["orchestrator"], "k8s");
            assert_eq!(spec["node"], "node-1");
            assert_eq!(spec["pod"], "pod-a");
            assert_eq!(spec["endpoint"], "eth0");
            assert_eq!(spec["containerID"], "ca");
            assert_eq!(spec["interfaceName"], host_iface.as_str());
            assert_eq!(spec["ipNetworks"], json!([ip]));
            assert_eq!(spec["profiles"], json!(["kns.default"]));
            assert_eq!(spec["mac"], add.json["interfaces"][1]["mac"]);
            assert_eq!(
                stored["metadata"]["labels"],
                json!({"app": "web", "projectcalico.org/namespace": "default",
                       "projectcalico.org/orchestrator": "k8s"})
            );

            // The source sees it: an endpoint of this node, on its veth.
            let addr: std::net::IpAddr = ip.split('/').next().unwrap().parse().unwrap();
            let s = wait_for(&mut rx, "a pod added through CNI (from the ADD)", t, |s| {
                s.endpoints
                    .get("default/pod-a")
                    .is_some_and(|e| e.addresses == [addr])
            })
            .await;
            assert_eq!(s.endpoints["default/pod-a"].labels, web);
            assert_eq!(s.local["default/pod-a"], host_iface);
            assert!(s.policies.profile("kns.default").is_some());

            // Relabelled after the ADD: the endpoint moves; felix's
            // retried ADD keeps the labels.
            let db = BTreeMap::from([("app".to_string(), "db".to_string())]);
            let t = Instant::now();
            lab::labels::label_pod(&c, "node-1", "default", "pod-a", &db)
                .await
                .unwrap();
            wait_for(&mut rx, "a pod relabelled (lab, etcd)", t, |s| {
                s.endpoints.get("default/pod-a").map(|e| &e.labels) == Some(&db)
            })
            .await;
            let again = cni(&calico, "ADD", "ca", &pod_path, "pod-a", &conf);
            assert_eq!(again.code, 0, "{}", again.json);
            let w = c
                .get_in::<WorkloadEndpoint>("default", name)
                .await
                .unwrap()
                .unwrap();
            let labels = w.metadata.labels.unwrap();
            assert_eq!(labels["app"], "db");
            assert_eq!(labels["projectcalico.org/orchestrator"], "k8s");

            // DEL removes it (twice is fine), and the source drops it.
            let t = Instant::now();
            assert_eq!(cni(&calico, "DEL", "ca", &pod_path, "pod-a", &conf).code, 0);
            assert_eq!(cni(&calico, "DEL", "ca", &pod_path, "pod-a", &conf).code, 0);
            assert!(
                c.get_in::<WorkloadEndpoint>("default", name)
                    .await
                    .unwrap()
                    .is_none()
            );
            let s = wait_for(&mut rx, "a pod deleted through CNI (from the DEL)", t, |s| {
                s.endpoints.is_empty()
            })
            .await;
            assert!(s.local.is_empty());
        });
    })
    .unwrap();
}
