//! What is particular to the Kubernetes backend, against the fake API
//! server (`tests::kube_fake`, the API's real request/response shapes
//! through kube's real client): paged lists, watch bookmarks and resume,
//! 410 Gone → relist + Snapshot, 409 Conflict → `Error::Conflict` and a
//! retry that succeeds, a missing CRD, Calico nodes as annotated
//! Kubernetes Nodes, the status subresource, and the IPPool printer
//! columns of `deploy/crds.yaml` over a status-bearing pool.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use datastore::ipam::{AssignRequest, Ipam, pod_handle};
use datastore::{Client, Error, Key, KubeBackend, KubeOptions, ListKey, ResourceEvent, Revision};
use futures::StreamExt;
use ippool_crd::{IPPool, IPPoolSpec, Node};
use serde_json::{Value, json};
use tests::kube_fake::{FakeApiServer, NODES};

const POOLS: &str = "/apis/crd.projectcalico.org/v1/ippools";
const BLOCKS: &str = "/apis/crd.projectcalico.org/v1/ipamblocks";

fn client(server: &FakeApiServer, page_size: u32) -> Client {
    tests::init_tracing();
    let opts = KubeOptions {
        page_size,
        ..Default::default()
    };
    Client::new(KubeBackend::new(server.client(), "fake", opts))
}

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec::new(cidr))
}

async fn next<S, T>(w: &mut S) -> Result<T, Error>
where
    S: futures::Stream<Item = Result<T, Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("no watch event within 10s")
        .expect("watch ended")
}

/// Waits until `f` holds for the server's request log.
async fn wait_for_request(server: &FakeApiServer, what: &str, f: impl Fn(&[String]) -> bool) {
    for _ in 0..200 {
        if f(&server.requests()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}; requests: {:#?}", server.requests());
}

fn watch_requests(server: &FakeApiServer, collection: &str) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(&format!("GET {collection}?")) && r.contains("watch=true"))
        .collect()
}

#[tokio::test]
async fn lists_are_read_in_pages_with_continue_tokens() {
    let server = FakeApiServer::new();
    let c = client(&server, 10);
    for i in 0..23 {
        c.create(&pool(&format!("p{i:02}"), &format!("10.{i}.0.0/16")))
            .await
            .unwrap();
    }
    let pools: Vec<IPPool> = c.list().await.unwrap();
    let names: Vec<_> = pools.iter().map(|p| p.name().to_string()).collect();
    let want: Vec<_> = (0..23).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, want);
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with(&format!("GET {POOLS}?")))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert!(lists.iter().all(|r| r.contains("limit=10")), "{lists:#?}");
    assert!(!lists[0].contains("continue="));
    assert!(lists[1].contains("continue=") && lists[2].contains("continue="));
}

#[tokio::test]
async fn a_watch_resumes_from_the_last_bookmark() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    assert!(matches!(
        next(&mut w).await.unwrap(),
        ResourceEvent::Snapshot { ref items, .. } if items.len() == 1
    ));
    wait_for_request(&server, "the watch did not start", |_| {
        !watch_requests(&server, POOLS).is_empty()
    })
    .await;
    let first = &watch_requests(&server, POOLS)[0];
    assert!(first.contains("allowWatchBookmarks=true"), "{first}");

    // Other collections move the resourceVersion on; the pool watch
    // hears of it only through a bookmark.
    for i in 0..3 {
        c.create_value(
            &Key::Handle {
                id: format!("h{i}"),
            },
            &ippool_crd::IPAMHandleSpec::new(format!("h{i}")),
        )
        .await
        .unwrap();
    }
    let bookmark = server.bookmark();
    // The server ends the watch (its timeoutSeconds): the client watches
    // again from the bookmark's version, not from the old one.
    server.close_watches();
    wait_for_request(&server, "the watch was not resumed", |_| {
        watch_requests(&server, POOLS).len() >= 2
    })
    .await;
    let resumed = &watch_requests(&server, POOLS)[1];
    assert!(
        resumed.contains(&format!("resourceVersion={bookmark}")),
        "resumed from the wrong version: {resumed}"
    );
    assert!(resumed.contains("allowWatchBookmarks=true"), "{resumed}");

    // Nothing was repeated, nothing is lost.
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    match next(&mut w).await.unwrap() {
        ResourceEvent::Created(p) => assert_eq!(p.name(), "b"),
        other => panic!("expected Created b, got {other:?}"),
    }
    // No relist happened.
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {POOLS}?")) && !r.contains("watch=true"))
        .count();
    assert_eq!(lists, 1);
}

#[tokio::test]
async fn gone_history_relists_and_sends_a_snapshot() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    assert!(matches!(
        next(&mut w).await.unwrap(),
        ResourceEvent::Snapshot { .. }
    ));
    wait_for_request(&server, "the watch did not start", |_| {
        !watch_requests(&server, POOLS).is_empty()
    })
    .await;

    // The connection drops and stays down while the pools change and the
    // history behind the API server is compacted.
    server.refuse_watches(true);
    server.close_watches();
    match next(&mut w).await {
        Err(e) => {
            assert!(matches!(e, Error::Unavailable { .. }), "{e}");
            assert!(e.is_transient());
        }
        Ok(ev) => panic!("expected the interruption to be reported, got {ev:?}"),
    }
    c.delete::<IPPool>("a", None).await.unwrap();
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    server.compact();
    server.refuse_watches(false);

    // The resumed watch gets 410 Expired: the client lists again and
    // hands over the whole new state.
    let mut interruptions = 0;
    let snapshot = loop {
        match next(&mut w).await {
            Err(e) => {
                interruptions += 1;
                assert!(interruptions < 20, "the watch never recovered: {e}");
            }
            Ok(ResourceEvent::Snapshot { items, revision }) => break (items, revision),
            Ok(other) => panic!("expected a Snapshot after 410 Gone, got {other:?}"),
        }
    };
    let names: Vec<_> = snapshot.0.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["b"]);
    assert_eq!(snapshot.1, Revision(server.resource_version().to_string()));
    // And it goes on watching from the new list.
    c.create(&pool("c", "10.3.0.0/16")).await.unwrap();
    match next(&mut w).await.unwrap() {
        ResourceEvent::Created(p) => assert_eq!(p.name(), "c"),
        other => panic!("expected Created c, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_starts_with_a_snapshot() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    let a = c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    server.compact();
    let old = Revision(a.metadata.resource_version.unwrap());
    let mut w = c.watch::<IPPool>(Some(old)).await.unwrap();
    match next(&mut w).await.unwrap() {
        ResourceEvent::Snapshot { items, .. } => assert_eq!(items.len(), 2),
        other => panic!("expected a Snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn conflicts_are_conflict_errors_and_retries_succeed() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    let p = c.create(&pool("p", "10.1.0.0/16")).await.unwrap();

    // A concurrent writer gets in first: 409 Conflict from the server is
    // the datastore's Conflict, with the revision the write expected.
    server.interfere_with_next_write(&format!("{POOLS}/p"));
    let mut mine = p.clone();
    mine.spec.nat_outgoing = Some(true);
    match c.update(&mine).await.unwrap_err() {
        Error::Conflict { expected, key } => {
            assert_eq!(Some(expected.0), p.metadata.resource_version);
            assert!(key.contains("\"p\""), "{key}");
        }
        other => panic!("expected Conflict, got {other}"),
    }
    // Re-read and retry: it lands.
    let mut fresh: IPPool = c.get("p").await.unwrap().unwrap();
    fresh.spec.nat_outgoing = Some(true);
    c.update(&fresh).await.unwrap();
    assert_eq!(
        server.object(POOLS, "p").unwrap()["spec"]["natOutgoing"],
        json!(true)
    );

    // IPAM's compare-and-swap loop rides over a lost race on its block.
    let ipam = Ipam::new(c.clone());
    let req = |h: &str| AssignRequest {
        handle: pod_handle(h),
        host: "node-1".into(),
        num_v4: 1,
        attrs: BTreeMap::new(),
        ..Default::default()
    };
    let first = ipam.auto_assign(&req("pod-1")).await.unwrap();
    let puts_before = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("PUT {BLOCKS}/")))
        .count();
    server.interfere_with_next_write(BLOCKS);
    let second = ipam.auto_assign(&req("pod-2")).await.unwrap();
    assert_ne!(first.v4, second.v4);
    let puts = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("PUT {BLOCKS}/")))
        .count()
        - puts_before;
    assert!(puts >= 2, "the block write was not retried ({puts} PUTs)");
    assert_eq!(
        ipam.ips_by_handle(&pod_handle("pod-2")).await.unwrap(),
        second.v4
    );
}

#[tokio::test]
async fn a_missing_crd_says_to_apply_the_crds() {
    let server = FakeApiServer::without_crds();
    let c = client(&server, 500);
    let err = c.list::<IPPool>().await.unwrap_err();
    assert!(matches!(err, Error::CrdMissing { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("ippools.crd.projectcalico.org"), "{text}");
    assert!(text.contains("kubectl apply -f deploy/crds.yaml"), "{text}");
    assert!(!err.is_transient());

    // A get of a missing *type* is the same error, not "no such object".
    let err = c
        .get_value::<ippool_crd::IPAMBlockSpec>(&Key::Block {
            cidr: "10.0.0.0/26".parse().unwrap(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CrdMissing { ref resource } if resource == "ipamblocks.crd.projectcalico.org"),
        "{err}"
    );
    // And a watch reports it too.
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    let err = next(&mut w).await.unwrap_err();
    assert!(matches!(err, Error::CrdMissing { .. }), "{err}");
    // Nodes are core: they still work.
    assert!(c.list::<Node>().await.unwrap().is_empty());
}

#[tokio::test]
async fn calico_nodes_are_annotated_kubernetes_nodes() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    server.add_node(
        "node-1",
        json!({"kubernetes.io/hostname": "node-1", "rack": "r1"}),
        json!({
            "projectcalico.org/IPv4Address": "10.0.0.1/24",
            "projectcalico.org/ASNumber": "64513",
            "node.alpha.kubernetes.io/ttl": "0",
        }),
    );
    let node: Node = c.get("node-1").await.unwrap().unwrap();
    assert_eq!(node.bgp_ipv4().unwrap().to_string(), "10.0.0.1/24");
    assert_eq!(node.asn(), Some(64513));
    assert_eq!(node.labels()["rack"], "r1");

    let mut w = c.watch::<Node>(None).await.unwrap();
    assert!(matches!(
        next(&mut w).await.unwrap(),
        ResourceEvent::Snapshot { ref items, .. } if items.len() == 1
    ));

    // Calico's fields are written as annotations by a merge patch that
    // leaves the rest of the Node (kubelet's) alone.
    let mut n = node.clone();
    let bgp = n.spec.bgp.get_or_insert_with(Default::default);
    bgp.ipv4_ipip_tunnel_addr = Some("10.65.0.1".into());
    bgp.route_reflector_cluster_id = Some("224.0.0.1".into());
    c.update(&n).await.unwrap();
    let stored = server.object(NODES, "node-1").unwrap();
    let ann = &stored["metadata"]["annotations"];
    assert_eq!(ann["projectcalico.org/IPv4IPIPTunnelAddr"], "10.65.0.1");
    assert_eq!(
        ann["projectcalico.org/RouteReflectorClusterID"],
        "224.0.0.1"
    );
    assert_eq!(ann["projectcalico.org/IPv4Address"], "10.0.0.1/24");
    assert_eq!(ann["node.alpha.kubernetes.io/ttl"], "0");
    assert_eq!(stored["spec"]["podCIDR"], "10.244.0.0/24");
    assert_eq!(stored["status"]["conditions"][0]["type"], "Ready");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("PATCH /api/v1/nodes/node-1"))
    );

    // The stale copy conflicts (the patch carries the resourceVersion).
    let err = c.update(&node).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");

    // Kubelet heartbeats are not Calico changes; the annotation change is.
    match next(&mut w).await.unwrap() {
        ResourceEvent::Updated(n) => {
            assert_eq!(n.ipip_tunnel_addr().unwrap().to_string(), "10.65.0.1");
        }
        other => panic!("expected Updated, got {other:?}"),
    }
    server.heartbeat_node("node-1");
    server.heartbeat_node("node-1");
    server.add_node("node-2", json!({}), json!({}));
    match next(&mut w).await.unwrap() {
        ResourceEvent::Created(n) => assert_eq!(n.name(), "node-2"),
        other => panic!("heartbeats must not be reported; got {other:?}"),
    }

    // Kubelet registers nodes; Calico does not create or delete them.
    let err = c
        .create(&Node::new("node-9", Default::default()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NODENAME"), "{err}");
    let err = c.delete::<Node>("node-1", None).await.unwrap_err();
    assert!(err.to_string().contains("kubectl delete node"), "{err}");
}

#[tokio::test]
async fn status_is_written_through_the_status_subresource() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    let p = c.create(&pool("p", "10.1.0.0/16")).await.unwrap();
    let mut st = p.clone();
    st.status = Some(ippool_crd::IPPoolStatus {
        allocated_blocks: Some(2),
        ..Default::default()
    });
    // The spec sent with a status write is ignored by the server.
    st.spec.disabled = Some(true);
    let st = c.update_status(&st).await.unwrap();
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r == &format!("PUT {POOLS}/p/status?"))
            || server
                .requests()
                .iter()
                .any(|r| r.starts_with(&format!("PUT {POOLS}/p/status"))),
        "{:#?}",
        server.requests()
    );
    let stored = server.object(POOLS, "p").unwrap();
    assert_eq!(stored["status"]["allocatedBlocks"], 2);
    assert!(stored["spec"].get("disabled").is_none());
    // A spec update keeps the status (the server owns that split).
    let mut again: IPPool = c.get("p").await.unwrap().unwrap();
    assert_eq!(
        again.metadata.resource_version,
        st.metadata.resource_version
    );
    again.spec.nat_outgoing = Some(true);
    again.status = None;
    c.update(&again).await.unwrap();
    let stored = server.object(POOLS, "p").unwrap();
    assert_eq!(stored["status"]["allocatedBlocks"], 2);
    assert_eq!(stored["spec"]["natOutgoing"], true);
}

#[tokio::test]
async fn affinities_of_one_host_are_filtered_from_the_whole_list() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    for (host, cidr) in [("node-1", "10.0.0.0/26"), ("node-10", "10.0.0.64/26")] {
        let cidr: ipnetwork::IpNetwork = cidr.parse().unwrap();
        c.create_value(
            &Key::Affinity {
                host: host.into(),
                cidr,
            },
            &ippool_crd::BlockAffinitySpec::pending(host, &cidr),
        )
        .await
        .unwrap();
    }
    let mine = c
        .list_values::<ippool_crd::BlockAffinitySpec>(&ListKey::Affinities {
            host: Some("node-1".into()),
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    // Stored under Calico's KDD name, with node and cidr in the spec.
    let obj = server
        .object(
            "/apis/crd.projectcalico.org/v1/blockaffinities",
            "node-1-10-0-0-0-26",
        )
        .unwrap();
    assert_eq!(obj["spec"]["node"], "node-1");
    assert_eq!(obj["spec"]["cidr"], "10.0.0.0/26");
}

// ---- printer columns ----

/// The subset of kubectl's JSONPath the CRD columns use: `.a.b`, and a
/// filter `[?(@.k=="v")]` on a list.
fn jsonpath<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut rest = path.strip_prefix('.')?;
    while !rest.is_empty() {
        if let Some(f) = rest.strip_prefix("[?(@.") {
            let (cond, after) = f.split_once(")]")?;
            let (k, want) = cond.split_once("==")?;
            let want = want.trim_matches('"');
            v = v
                .as_array()?
                .iter()
                .find(|item| item.get(k).and_then(Value::as_str) == Some(want))?;
            rest = after.strip_prefix('.').unwrap_or(after);
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        v = v.get(&rest[..end])?;
        rest = rest[end..].strip_prefix('.').unwrap_or(&rest[end..]);
    }
    Some(v)
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[tokio::test]
async fn ippool_wide_columns_show_status_and_usage() {
    // The columns as deploy/crds.yaml declares them.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let ippool_crd: Value = yaml
        .split("\n---\n")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .find(|d| d["spec"]["names"]["kind"] == "IPPool")
        .unwrap();
    let version = &ippool_crd["spec"]["versions"][0];
    assert!(
        version["subresources"].get("status").is_some(),
        "the IPPool CRD must have the status subresource"
    );
    let columns = version["additionalPrinterColumns"].as_array().unwrap();

    // A pool whose status calico-node computed, stored by the API server.
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    // The default pool as calico-node creates it from the DaemonSet's env.
    let mut spec = IPPoolSpec::new("10.65.0.0/16");
    spec.ipip_mode = Some(ippool_crd::EncapMode::CrossSubnet);
    spec.vxlan_mode = Some(ippool_crd::EncapMode::Never);
    spec.nat_outgoing = Some(true);
    spec.block_size = Some(26);
    spec.node_selector = Some("all()".into());
    let p = c
        .create(&IPPool::new("default-ipv4-ippool", spec))
        .await
        .unwrap();
    let mut block = ippool_crd::IPAMBlockSpec::empty("10.65.0.0/26".parse().unwrap()).unwrap();
    for slot in block.allocations.iter_mut().take(5) {
        *slot = Some(0);
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    );
    let statuses = datastore::pool_status::pool_statuses(std::slice::from_ref(&p), &[block], &now);
    let mut with = p.clone();
    with.status = Some(statuses["default-ipv4-ippool"].clone());
    c.update_status(&with).await.unwrap();
    let obj = server.object(POOLS, "default-ipv4-ippool").unwrap();

    let cells: Vec<(String, String, i64)> = columns
        .iter()
        .filter(|c| c["type"] != "date")
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                cell(jsonpath(&obj, c["jsonPath"].as_str().unwrap())),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("CIDR", "10.65.0.0/16", 0),
        ("IPIP", "CrossSubnet", 0),
        ("VXLAN", "Never", 0),
        ("NAT", "true", 0),
        ("BlockSize", "26", 0),
        ("Disabled", "<none>", 0),
        ("Allocatable", "OK", 1),
        ("Blocks", "1", 1),
        ("Used", "5", 1),
        ("InBlocks", "64", 1),
    ];
    let want: Vec<(String, String, i64)> = want
        .iter()
        .map(|(n, v, p)| (n.to_string(), v.to_string(), *p))
        .collect();
    assert_eq!(cells, want);

    // The object as the API server holds it, for rendering with kubectl
    // (scripts/kubectl-offline.sh).
    let out =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ippool-default-ipv4-ippool.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&obj).unwrap()).unwrap();

    // What `kubectl describe` shows of the status.
    let cond = &obj["status"]["conditions"][0];
    assert_eq!(cond["type"], "Allocatable");
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "OK");
    assert_eq!(cond["lastTransitionTime"], "2023-11-14T22:13:20Z");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("can be assigned")
    );
}

#[tokio::test]
async fn calico_node_keeps_pool_status_current_writing_only_changes() {
    let server = FakeApiServer::new();
    let c = client(&server, 500);
    c.create(&pool("old", "10.65.0.0/16")).await.unwrap();
    let mut young = pool("young", "10.65.1.0/24");
    young.metadata.creation_timestamp = None;
    c.create(&young).await.unwrap();
    let ipam = Ipam::new(c.clone());
    let req = AssignRequest {
        handle: pod_handle("pod-1"),
        host: "node-1".into(),
        num_v4: 1,
        attrs: BTreeMap::new(),
        pools_v4: vec!["old".into()],
        ..Default::default()
    };
    ipam.auto_assign(&req).await.unwrap();

    let opts = node::pool_status::Options::default();
    let status_puts = || {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("PUT ") && r.contains("/status"))
            .count()
    };
    // Two calico-nodes: the first writes both pools, the second nothing.
    let c2 = client(&server, 500);
    assert_eq!(node::pool_status::reconcile(&c, &opts).await.unwrap(), 2);
    assert_eq!(node::pool_status::reconcile(&c2, &opts).await.unwrap(), 0);
    assert_eq!(status_puts(), 2);
    let old = server.object(POOLS, "old").unwrap();
    assert_eq!(old["status"]["conditions"][0]["reason"], "OK");
    assert_eq!(old["status"]["allocatedBlocks"], 1);
    assert_eq!(old["status"]["allocatedAddresses"], 1);
    // Both were created in the same second by the fake: the name decides.
    let young = server.object(POOLS, "young").unwrap();
    assert_eq!(young["status"]["conditions"][0]["reason"], "CIDROverlap");
    assert_eq!(young["status"]["conditions"][0]["status"], "False");

    // A change (pool disabled) races another writer: retried, written once.
    let mut p: IPPool = c.get("old").await.unwrap().unwrap();
    p.spec.disabled = Some(true);
    c.update(&p).await.unwrap();
    server.interfere_with_next_write(&format!("{POOLS}/old"));
    assert_eq!(node::pool_status::reconcile(&c2, &opts).await.unwrap(), 1);
    let old = server.object(POOLS, "old").unwrap();
    assert_eq!(old["status"]["conditions"][0]["reason"], "PoolDisabled");
    assert_eq!(node::pool_status::reconcile(&c, &opts).await.unwrap(), 0);
}
