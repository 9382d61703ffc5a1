//! The cluster's IPAM garbage collector (`node::ipam_gc`) on a real etcd:
//! a deleted pod's address, a deleted node's pod and tunnel addresses and
//! its block are released only after the grace period, a live pod's never,
//! and afterwards `calicoctl ipam check`'s report is clean. The deleted
//! node's WorkloadEndpoints go after the same grace; a live node's stay.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use datastore::Client;
use datastore::ipam::{AssignRequest, Ipam};
use ippool_crd::{IPPool, IPPoolSpec, Node, WorkloadEndpoint};
use node::ipam_gc::Collector;
use serde_json::json;
use tests::EtcdServer;
use tokio::time::Instant;

async fn node(c: &Client, name: &str) {
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": name}, "spec": {}
    }))
    .unwrap();
    c.create(&n).await.unwrap();
}

async fn wep(c: &Client, node: &str, pod: &str) {
    let w: WorkloadEndpoint = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "WorkloadEndpoint",
        "metadata": {"name": format!("{node}-k8s-{pod}-eth0"), "namespace": "default"},
        "spec": {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                 "interfaceName": format!("cali{pod}")}
    }))
    .unwrap();
    c.create(&w).await.unwrap();
}

async fn assign(ipam: &Ipam, handle: &str, host: &str, attrs: &[(&str, &str)]) -> std::net::IpAddr {
    ipam.auto_assign(&AssignRequest {
        handle: handle.into(),
        host: host.into(),
        num_v4: 1,
        attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    })
    .await
    .unwrap()
    .v4[0]
}

#[tokio::test]
async fn leaks_and_deleted_nodes_are_collected_after_the_grace_period_and_live_pods_never() {
    tests::init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    c.create(&IPPool::new("pool", IPPoolSpec::new("10.70.0.0/16")))
        .await
        .unwrap();
    node(&c, "node-1").await;
    node(&c, "node-2").await;
    let ipam = Ipam::new(c.clone());
    let pod =
        |p: &'static str, n: &'static str| [("namespace", "default"), ("pod", p), ("node", n)];
    let web = assign(
        &ipam,
        "k8s-pod-network.web",
        "node-1",
        &pod("web", "node-1"),
    )
    .await;
    let gone = assign(
        &ipam,
        "k8s-pod-network.gone",
        "node-1",
        &pod("gone", "node-1"),
    )
    .await;
    let old = assign(
        &ipam,
        "k8s-pod-network.old",
        "node-2",
        &pod("old", "node-2"),
    )
    .await;
    let tunnel = assign(
        &ipam,
        "ipip-tunnel-addr-node-2",
        "node-2",
        &[("node", "node-2"), ("type", "ipipTunnelAddress")],
    )
    .await;
    // "web" and "old" have WorkloadEndpoints (felix writes one per pod it
    // set up), "gone" has none; then node-2 is deleted, and "old" with it.
    wep(&c, "node-1", "web").await;
    wep(&c, "node-2", "old").await;
    c.delete::<Node>("node-2", None).await.unwrap();

    let grace = Duration::from_secs(900);
    let t0 = Instant::now();
    let mut gc = Collector::new();
    // First sight: nothing is released (a pod may still be being set up).
    let r = gc.round(&ipam, grace, t0).await.unwrap();
    assert_eq!(r.released, Vec::<std::net::IpAddr>::new(), "{r:?}");
    assert_eq!(r.waiting, 3, "{r:?}");
    assert!(r.blocks_freed.is_empty(), "{r:?}");
    assert!(r.endpoints_deleted.is_empty(), "{r:?}");
    // "gone" comes back (its pod's endpoint appears): its clock restarts.
    wep(&c, "node-1", "gone").await;
    let r = gc.round(&ipam, grace, t0 + grace / 2).await.unwrap();
    assert_eq!(r.waiting, 2, "{r:?}");
    c.delete_in::<WorkloadEndpoint>("default", "node-1-k8s-gone-eth0", None)
        .await
        .unwrap();
    // Past the grace: node-2's pod and tunnel addresses go, and with them
    // its block; "gone" was seen again only now, so it waits.
    let r = gc
        .round(&ipam, grace, t0 + grace + grace / 4)
        .await
        .unwrap();
    let mut released = r.released.clone();
    released.sort();
    let mut want = vec![old, tunnel];
    want.sort();
    assert_eq!(released, want, "{r:?}");
    assert_eq!(r.waiting, 1, "{r:?}");
    assert_eq!(r.blocks_freed.len(), 1, "{r:?}");
    assert_eq!(r.endpoints_deleted, vec!["default/node-2-k8s-old-eth0"]);
    let r = gc.round(&ipam, grace, t0 + 3 * grace).await.unwrap();
    assert_eq!(r.released, vec![gone], "{r:?}");

    // The live pod kept its address; IPAM is consistent.
    let report = ipam.leak_report().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    let blocks = ipam.all_blocks().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].host(), Some("node-1"));
    let held: Vec<_> = datastore::ipam::leaks::held_addresses(&blocks[0])
        .into_iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(held, vec![web]);
    let weps: Vec<String> = c
        .list::<WorkloadEndpoint>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|w| w.metadata.name)
        .collect();
    assert_eq!(weps, vec!["node-1-k8s-web-eth0"]);
}
