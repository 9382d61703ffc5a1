//! Calico's IPAM annotations through the real CNI plugin and felix, in
//! Kubernetes mode against a real API server, with felix and confd reading
//! it as calico-node's ServiceAccount (so a missing RBAC rule fails here):
//! the pod's `cni.projectcalico.org/ipv4pools` beats its namespace's, which
//! beats the CNI config; `ipAddrs` gives exactly the addresses asked for;
//! a Manual pool is used only when named; a namespaceSelector keeps a pool
//! to its namespaces; an IPReservation's addresses are never handed out.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use lab::Netns;
use lab::cni::{CniCall, CniOut};
use serde_json::{Value, json};
use tests::agent::{Proc, build_many};
use tests::kube::KubeServer;

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

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
           "metadata": {"name": name}, "spec": spec})
}

fn namespace(name: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels, "annotations": annotations}})
}

fn pod(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"nodeName": "node-1",
                    "containers": [{"name": "main", "image": "registry.invalid/none"}]}})
}

/// Forwards `127.0.0.1:port` inside `ns` to the API server on the host's
/// loopback: felix and confd run in the node's namespace, whose loopback is
/// its own. The listener is made in the namespace, the connections out of
/// it from the host's (a socket keeps the namespace it was made in).
fn forward_api_server(ns: &Netns, port: u16) {
    let listener = ns
        .run(move || TcpListener::bind(("127.0.0.1", port)).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { continue };
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
            pipe(outbound, inbound);
        }
    });
}

fn cni(bin: &Path, cmd: &str, netns: &Path, ns: &str, pod: &str, conf: &str) -> CniOut {
    lab::cni::invoke(&CniCall {
        plugin: bin,
        command: cmd,
        container: &format!("c-{pod}"),
        netns,
        namespace: ns,
        pod,
        config: conf,
        node_ns: None,
    })
    .unwrap()
}

fn address(o: &CniOut) -> IpAddr {
    assert_eq!(o.code, 0, "{} {}", o.json, o.stderr);
    let a = o.json["ips"][0]["address"].as_str().unwrap();
    a.split('/').next().unwrap().parse().unwrap()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

#[test]
fn pod_and_namespace_annotations_pick_pools_and_addresses_through_felix() {
    tests::init_tracing();
    let built = build_many(&[("felix", "felix"), ("confd", "confd"), ("cni", "calico")]).unwrap();
    let [felix, confd, calico] = <[_; 3]>::try_from(built).unwrap();
    let k = KubeServer::start().unwrap();
    k.install_crds().unwrap();
    apply(&k, &repo_file("deploy/calico-node.yaml"));
    let none = json!({});
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Node",
         "metadata": {"name": "node-1",
                      "annotations": {"projectcalico.org/IPv4Address": "10.0.0.1/24"}}},
        pool("default", json!({"cidr": "10.65.0.0/16"})),
        pool("special", json!({"cidr": "10.99.0.0/24", "assignmentMode": "Manual"})),
        pool("team", json!({"cidr": "10.98.0.0/24", "namespaceSelector": "team == 'a'",
                            "allowedUses": ["Workload"]})),
        {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPReservation",
         "metadata": {"name": "low-special"}, "spec": {"reservedCIDRs": ["10.99.0.0/25"]}},
        namespace("plain", none.clone(), none.clone()),
        namespace("annotated", none.clone(),
                  json!({"cni.projectcalico.org/ipv4pools": "[\"10.99.0.0/24\"]"})),
        namespace("team-a", json!({"team": "a"}), none.clone()),
        pod("plain", "p-default", none.clone()),
        pod("plain", "p-special", json!({"cni.projectcalico.org/ipv4pools": "[\"special\"]"})),
        pod("annotated", "p-ns", none.clone()),
        pod("annotated", "p-pod-wins", json!({"cni.projectcalico.org/ipv4pools": "[\"default\"]"})),
        pod("plain", "p-exact", json!({"cni.projectcalico.org/ipAddrs": "[\"10.65.200.7\"]"})),
        pod("plain", "p-taken", json!({"cni.projectcalico.org/ipAddrs": "[\"10.65.200.7\"]"})),
        pod("plain", "p-nopool", json!({"cni.projectcalico.org/ipAddrs": "[\"192.0.2.1\"]"})),
        pod("team-a", "p-team", json!({"cni.projectcalico.org/ipv4pools": "[\"team\"]"})),
        pod("plain", "p-not-team", json!({"cni.projectcalico.org/ipv4pools": "[\"team\"]"})),
        pod("plain", "p-bad", json!({"cni.projectcalico.org/ipv4pools": "special"})),
    ]});
    apply(&k, &objects.to_string());

    // felix and confd as calico-node, in the node's namespace.
    let token = k
        .service_account_token("kube-system", "calico-node")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, k.cp.kubeconfig_for("calico-node", &token)).unwrap();
    let port: u16 = k.cp.url.rsplit(':').next().unwrap().parse().unwrap();
    let (node, _gw) = tests::agent::node_with_uplink("iknode", "ikgw").unwrap();
    forward_api_server(&node, port);
    let felix_sock = dir.join("felix.sock");
    let spawn = |bin: &Path, args: Vec<String>, log: &str| {
        let (bin, kc, out) = (bin.to_path_buf(), kubeconfig.clone(), dir.join(log));
        node.run(move || {
            let f = std::fs::File::create(out).unwrap();
            Proc(
                std::process::Command::new(bin)
                    .args(args)
                    .env("DATASTORE_TYPE", "kubernetes")
                    .env("KUBECONFIG", kc)
                    .env("CALICO_BGP_SECRETS_NAMESPACE", "kube-system")
                    .env("RUST_LOG", "info")
                    .stdin(std::process::Stdio::null())
                    .stdout(f.try_clone().unwrap())
                    .stderr(f)
                    .spawn()
                    .unwrap(),
            )
        })
        .unwrap()
    };
    let d = |p: &str| dir.join(p).display().to_string();
    let _felix = spawn(
        &felix,
        [
            "run",
            "--node",
            "node-1",
            "--socket",
            &d("felix.sock"),
            "--state-dir",
            &d("state"),
        ]
        .map(String::from)
        .to_vec(),
        "felix.log",
    );
    let _confd = spawn(
        &confd,
        [
            "run",
            "--node",
            "node-1",
            "--bird-socket",
            &d("bird.sock"),
            "--felix-socket",
            &d("felix.sock"),
            "--render-file",
            &d("confd.txt"),
            "--socket",
            &d("confd.sock"),
        ]
        .map(String::from)
        .to_vec(),
        "confd.log",
    );
    let conf = lab::cni::network_config(&felix_sock);
    let mut netns = Vec::new();
    // The first ADD waits for felix to start and hear from confd.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let pod_ns = Netns::create("ikfirst").unwrap();
        let o = cni(&calico, "ADD", &pod_ns.path(), "plain", "p-default", &conf);
        if o.code == 0 || Instant::now() > deadline {
            netns.push(pod_ns);
            break o;
        }
        drop(pod_ns);
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut add = |ns: &str, name: &str| {
        let pod_ns = Netns::create(&format!("ikp{}", netns.len())).unwrap();
        let o = cni(&calico, "ADD", &pod_ns.path(), ns, name, &conf);
        netns.push(pod_ns);
        o
    };

    let felix_log = || std::fs::read_to_string(dir.join("felix.log")).unwrap_or_default();
    assert_eq!(
        first.code,
        0,
        "{} {}\n{}",
        first.json,
        first.stderr,
        felix_log()
    );
    // No annotation: auto-assignment, never from the Manual pool or the
    // namespace-limited one.
    assert!(
        net("10.65.0.0/16").contains(address(&first)),
        "{}",
        first.json
    );

    // The pod's annotation: a Manual pool by name; its reserved half is
    // never used.
    let special = address(&add("plain", "p-special"));
    assert!(net("10.99.0.128/25").contains(special), "{special}");
    // The namespace's annotation (by CIDR) applies when the pod has none...
    let by_ns = address(&add("annotated", "p-ns"));
    assert!(net("10.99.0.128/25").contains(by_ns), "{by_ns}");
    assert_ne!(by_ns, special);
    // ... and the pod's beats it.
    let pod_wins = address(&add("annotated", "p-pod-wins"));
    assert!(net("10.65.0.0/16").contains(pod_wins), "{pod_wins}");

    // ipAddrs: exactly that address; taken, or outside every pool, a clear
    // error.
    let exact = address(&add("plain", "p-exact"));
    assert_eq!(exact, "10.65.200.7".parse::<IpAddr>().unwrap());
    let taken = add("plain", "p-taken");
    assert_ne!(taken.code, 0);
    let text = format!("{} {}", taken.json, taken.stderr);
    assert!(
        text.contains("10.65.200.7 is already allocated")
            && text.contains("cni.projectcalico.org/ipAddrs"),
        "{text}"
    );
    let nopool = add("plain", "p-nopool");
    let text = format!("{} {}", nopool.json, nopool.stderr);
    assert!(
        text.contains("192.0.2.1 is not inside any IP pool"),
        "{text}"
    );

    // namespaceSelector: the team's namespace may use its pool; another
    // namespace may not, even by name.
    let team = address(&add("team-a", "p-team"));
    assert!(net("10.98.0.0/24").contains(team), "{team}");
    let not_team = add("plain", "p-not-team");
    let text = format!("{} {}", not_team.json, not_team.stderr);
    assert!(
        text.contains("pool team's namespaceSelector does not select the pod's namespace"),
        "{text}"
    );
    // A malformed annotation says which and how to fix it.
    let bad = add("plain", "p-bad");
    let text = format!("{} {}", bad.json, bad.stderr);
    assert!(
        text.contains("pod annotation cni.projectcalico.org/ipv4pools")
            && text.contains("JSON list"),
        "{text}"
    );
    // Failed ADDs kept nothing: DEL of every pod leaves IPAM empty.
    for (ns, name) in [
        ("plain", "p-default"),
        ("plain", "p-special"),
        ("annotated", "p-ns"),
        ("annotated", "p-pod-wins"),
        ("plain", "p-exact"),
        ("team-a", "p-team"),
    ] {
        let o = cni(&calico, "DEL", Path::new("/nonexistent"), ns, name, &conf);
        assert_eq!(o.code, 0, "DEL {ns}/{name}: {} {}", o.json, o.stderr);
    }
    let handles = k
        .kubectl(&["get", "ipamhandles.crd.projectcalico.org", "-o", "name"])
        .unwrap();
    assert!(handles.trim().is_empty(), "left behind: {handles}");
}
