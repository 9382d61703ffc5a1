//! Service advertisement against a real kube-apiserver with
//! `deploy/crds.yaml` and `deploy/calico-node.yaml` applied: the `confd`
//! binary runs in Kubernetes mode with calico-node's ServiceAccount token
//! (so it reads Services and EndpointSlices with exactly the shipped
//! ClusterRole) and pushes to a recording BgpConfigService; what it
//! tells bird to advertise follows the BGPConfiguration, the Services and
//! where their endpoints are.
//!
//! Needs `CALICO_K8S_BIN` (see `tests::kube`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::confd::{Recorder, apply, kube_node, kube_with_calico, start_confd};
use proto::bgpconfig::BgpConfig;

fn advertised(c: &BgpConfig) -> Vec<String> {
    let mut v: Vec<String> = c
        .advertise
        .iter()
        .filter_map(|p| ipnetwork::IpNetwork::try_from(p).ok())
        .map(|n| n.to_string())
        .collect();
    v.sort();
    v
}

/// Waits (bounded) for a push whose advertised set satisfies `pred`;
/// returns it and how long it took.
async fn wait_for(
    rec: &Recorder,
    what: &str,
    pred: impl Fn(&[String]) -> bool,
    log: &Path,
) -> (Vec<String>, Duration) {
    let t = Instant::now();
    let c = rec
        .wait_last(
            what,
            |c| pred(&advertised(c)),
            |c| format!("{:?}", advertised(c)),
            log,
        )
        .await;
    (advertised(&c), t.elapsed())
}

fn objects() -> String {
    format!(
        "{}{}\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  ports: [{{port: 80}}]
  externalIPs: [192.0.2.20]
---
apiVersion: v1
kind: Service
metadata: {{name: everywhere, namespace: default}}
spec:
  ports: [{{port: 80}}]
",
        kube_node("node-1", "10.0.0.1/24"),
        kube_node("node-2", "10.0.0.2/24"),
    )
}

/// The EndpointSlice of `web` with one ready endpoint on `node`.
fn slice(node: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - addresses: [10.65.0.5]
    nodeName: {node}
    conditions: {{ready: true}}
ports: [{{port: 80}}]
"
    )
}

const BGP_CONFIG: &str = "apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata: {name: default}
spec:
  serviceClusterIPs: [{cidr: 10.96.0.0/12}]
  serviceExternalIPs: [{cidr: 192.0.2.0/24}]
  serviceLoadBalancerIPs: [{cidr: 198.51.100.0/24}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_advertises_service_ranges_and_a_local_services_addresses_only_while_it_has_its_endpoint()
 {
    tests::init_tracing();
    tests::agent::build_node_binaries(false).unwrap();
    let k = kube_with_calico();
    apply(&k, &objects());
    let cluster_ip = k
        .kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .unwrap();
    let cluster_ip = cluster_ip.trim().to_string();
    assert!(
        cluster_ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "{cluster_ip}"
    );
    // The LoadBalancer address, as a load-balancer controller sets it.
    k.kubectl(&[
        "patch",
        "service",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.20"}]}}}"#,
    ])
    .unwrap();

    let confd = start_confd(&k, "node-1").await;
    let (rec, log, dir) = (&confd.rec, &confd.log, confd.dir.path());

    // No service range configured: nothing of the Services goes out (and
    // confd does not read them).
    wait_for(rec, "a first push", |_| true, log).await;
    let ranges = ["10.96.0.0/12", "192.0.2.0/24", "198.51.100.0/24"];
    assert!(
        advertised(rec.all().last().unwrap())
            .iter()
            .all(|p| !ranges.contains(&p.as_str())),
        "{:?}",
        rec.all().last().map(advertised)
    );

    apply(&k, BGP_CONFIG);
    let (a, _) = wait_for(
        rec,
        "the service ranges",
        |a| ranges.iter().all(|r| a.iter().any(|p| p == r)),
        log,
    )
    .await;
    // web is Local and has no endpoint here (none at all yet).
    let hosts = [
        format!("{cluster_ip}/32"),
        "192.0.2.20/32".to_string(),
        "198.51.100.20/32".to_string(),
    ];
    assert!(hosts.iter().all(|h| !a.contains(h)), "{a:?}");

    // Its endpoint is on this node: its cluster, external and LB IPs.
    apply(&k, &slice("node-1"));
    let (a, took) = wait_for(
        rec,
        "web's addresses from node-1",
        |a| hosts.iter().all(|h| a.contains(h)),
        log,
    )
    .await;
    println!("endpoint on node-1 -> its /32s advertised: {took:?}");
    assert!(ranges.iter().all(|r| a.iter().any(|p| p == r)), "{a:?}");

    // The endpoint moves to node-2: the /32s leave node-1 within a
    // second, the ranges stay.
    apply(&k, &slice("node-2"));
    let (a, took) = wait_for(
        rec,
        "web's addresses gone from node-1",
        |a| hosts.iter().all(|h| !a.contains(h)),
        log,
    )
    .await;
    println!("endpoint moved to node-2 -> /32s withdrawn from node-1: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(ranges.iter().all(|r| a.iter().any(|p| p == r)), "{a:?}");

    // Service advertisement switched off: the ranges go too.
    k.kubectl(&[
        "delete",
        "bgpconfigurations.crd.projectcalico.org",
        "default",
    ])
    .unwrap();
    wait_for(
        rec,
        "no service range",
        |a| ranges.iter().all(|r| !a.iter().any(|p| p == r)),
        log,
    )
    .await;
    let err = std::fs::read_to_string(dir.join("confd.err")).unwrap_or_default();
    let out = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !out.contains("cannot read Kubernetes services"),
        "{out}\n{err}"
    );
}
