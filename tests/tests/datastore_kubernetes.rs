//! What is particular to the Kubernetes backend, against a real
//! kube-apiserver (`tests::kube::KubeServer`, with `deploy/crds.yaml`
//! applied): paged lists and a continue token that expires, a read that
//! meets a closed connection, watch bookmarks and resume, 410 Gone →
//! relist + Snapshot, 409 Conflict → `Error::Conflict` and a retry that
//! succeeds, a missing CRD, Calico nodes as annotated Kubernetes Nodes, the
//! status subresource, calico-node's pool status writer, and what
//! `kubectl get ippools -o wide` and `kubectl describe ippool` show.
//!
//! The client's requests are seen, and some held back for a moment, by a
//! layer inside the client ([`tests::kube::Wire`]): every answer, 409 and
//! 410 included, is the API server's own.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use datastore::ipam::{AssignRequest, Ipam, pod_handle};
use datastore::{Client, Error, Key, KubeOptions, ListKey, ResourceEvent};
use futures::StreamExt;
use ippool_crd::{IPPool, IPPoolSpec, Node};
use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tests::kube::{KubeServer, Wire};

const POOLS: &str = "/apis/crd.projectcalico.org/v1/ippools";
const BLOCKS: &str = "/apis/crd.projectcalico.org/v1/ipamblocks";

fn opts(page_size: u32) -> KubeOptions {
    KubeOptions {
        page_size,
        ..Default::default()
    }
}

/// A real API server with Calico's CRDs, and a datastore on it whose
/// requests the test sees.
async fn cluster(opts: KubeOptions) -> (KubeServer, Client, Wire) {
    tests::init_tracing();
    let server = KubeServer::start().unwrap();
    server.install_crds().unwrap();
    let (c, wire) = server.observed_datastore(opts).await.unwrap();
    (server, c, wire)
}

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec::new(cidr))
}

/// The object at `path` as the API server stores it.
fn stored(server: &KubeServer, path: &str) -> Value {
    serde_json::from_str(&server.kubectl(&["get", "--raw", path]).unwrap()).unwrap()
}

/// Another writer: merge-patches a label onto the object at `path`.
async fn touch(admin: &kube::Client, path: &str) {
    let req = http::Request::patch(path)
        .header("Content-Type", "application/merge-patch+json")
        .body(
            serde_json::to_vec(&json!({"metadata": {"labels": {"touched-by": "another-writer"}}}))
                .unwrap(),
        )
        .unwrap();
    let _: Value = admin.request(req).await.unwrap();
}

/// The object path of a request line (`PUT /apis/.../name?` → `/apis/.../name`).
fn path_of(line: &str) -> String {
    let path = line.split_once(' ').unwrap().1;
    path.split('?').next().unwrap().to_string()
}

async fn next<S, T>(w: &mut S) -> Result<T, Error>
where
    S: futures::Stream<Item = Result<T, Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("no watch event within 30s")
        .expect("watch ended")
}

/// The next event, passing over interruptions (reported while the watch
/// reconnects).
async fn next_event<S, T>(w: &mut S) -> T
where
    S: futures::Stream<Item = Result<T, Error>> + Unpin,
{
    for _ in 0..50 {
        match next(w).await {
            Ok(ev) => return ev,
            Err(e) => tracing::info!(error = %e, "watch interruption"),
        }
    }
    panic!("the watch never recovered");
}

/// Waits (at most 30 s) until `f` holds for the client's requests.
async fn wait_for_requests(wire: &Wire, what: &str, f: impl Fn(&[String]) -> bool) {
    for _ in 0..300 {
        if f(&wire.requests()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}; requests: {:#?}", wire.requests());
}

fn is_watch_of(collection: &str) -> impl Fn(&str) -> bool + Send + 'static {
    let prefix = format!("GET {collection}?");
    move |r: &str| r.starts_with(&prefix) && r.contains("watch=true")
}

fn is_list_of(collection: &str) -> impl Fn(&str) -> bool + Send + 'static {
    let prefix = format!("GET {collection}?");
    move |r: &str| r.starts_with(&prefix) && !r.contains("watch=true")
}

/// A query parameter of a request line.
fn param<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let query = line.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// resourceVersions are opaque to the backend; this test knows they are
/// etcd revisions, so it can say which came first.
fn rv_number(rv: &str) -> u64 {
    rv.parse()
        .unwrap_or_else(|_| panic!("{rv} is not an etcd revision"))
}

#[tokio::test]
async fn lists_are_read_in_pages_with_continue_tokens() {
    let (_server, c, wire) = cluster(opts(10)).await;
    for i in 0..23 {
        c.create(&pool(&format!("p{i:02}"), &format!("10.{i}.0.0/16")))
            .await
            .unwrap();
    }
    let pools: Vec<IPPool> = c.list().await.unwrap();
    let names: Vec<_> = pools.iter().map(|p| p.name().to_string()).collect();
    let want: Vec<_> = (0..23).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, want);
    let lists = wire.requests_where(is_list_of(POOLS));
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert!(
        lists.iter().all(|r| param(r, "limit") == Some("10")),
        "{lists:#?}"
    );
    assert!(param(&lists[0], "continue").is_none());
    assert!(param(&lists[1], "continue").is_some() && param(&lists[2], "continue").is_some());
}

#[tokio::test]
async fn an_expired_continue_token_starts_the_list_over() {
    let (mut server, c, wire) = cluster(opts(10)).await;
    for i in 0..23 {
        c.create(&pool(&format!("p{i:02}"), &format!("10.{i}.0.0/16")))
            .await
            .unwrap();
    }
    // The second page waits while the pools change, the API server
    // restarts (its watch cache, which would still serve the first page's
    // snapshot, starts afresh) and etcd compacts away that snapshot.
    let mut held =
        wire.hold_next(|r| r.starts_with(&format!("GET {POOLS}?")) && r.contains("continue="));
    let list = tokio::spawn({
        let c = c.clone();
        async move { c.list::<IPPool>().await }
    });
    held.reached().await;
    let other = server.datastore(opts(500)).await.unwrap();
    let late = other.create(&pool("p23", "10.23.0.0/16")).await.unwrap();
    server.restart_apiserver().unwrap();
    server
        .compact_etcd(late.metadata.resource_version.as_deref().unwrap())
        .unwrap();
    held.release();

    // 410 Expired for the token: the list starts over, and is one
    // consistent snapshot of the new state.
    let pools = list.await.unwrap().unwrap();
    let names: Vec<_> = pools.iter().map(|p| p.name().to_string()).collect();
    let want: Vec<_> = (0..24).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, want);
    let lists = wire.requests_where(is_list_of(POOLS));
    let continued: Vec<bool> = lists
        .iter()
        .map(|r| param(r, "continue").is_some())
        .collect();
    // The first page; the token, sent again because the restart closed
    // the connection under it, then refused (410); the whole list again.
    assert_eq!(
        continued,
        [false, true, true, false, true, true],
        "{lists:#?}"
    );
    assert_eq!(lists[1], lists[2]);
    assert_ne!(
        param(&lists[2], "continue"),
        param(&lists[4], "continue"),
        "the new list's token is of the new snapshot"
    );
}

#[tokio::test]
async fn a_read_on_a_connection_the_api_server_closed_is_sent_again() {
    let (mut server, c, wire) = cluster(opts(500)).await;
    c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    assert!(c.get::<IPPool>("a").await.unwrap().is_some());
    // The client sends on the connection it keeps open just as the API
    // server restarts: the close and the request cross.
    let get = format!("GET {POOLS}/a");
    let mut held = wire.hold_next({
        let get = get.clone();
        move |r| r == get
    });
    let read = tokio::spawn({
        let c = c.clone();
        async move { c.get::<IPPool>("a").await }
    });
    held.reached().await;
    server.restart_apiserver().unwrap();
    held.release();
    assert!(read.await.unwrap().unwrap().is_some());
    assert_eq!(
        wire.requests_where(|r| r == get).len(),
        3,
        "the get was not sent again"
    );

    // Writes are not repeated behind the caller's back: one that reached
    // the server before the connection broke would be applied twice (or
    // fail as a conflict with itself). The caller hears of it and decides.
    let mut held = wire.hold_next(|r| r.starts_with(&format!("POST {POOLS}")));
    let write = tokio::spawn({
        let c = c.clone();
        async move { c.create(&pool("b", "10.2.0.0/16")).await }
    });
    held.reached().await;
    server.restart_apiserver().unwrap();
    held.release();
    let err = write.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(
        wire.requests_where(|r| r.starts_with(&format!("POST {POOLS}")))
            .len(),
        2,
        "{:#?}",
        wire.requests()
    );
}

#[tokio::test]
async fn a_watch_resumes_from_the_last_bookmark() {
    // The server ends each watch after 5 s and sends a bookmark 2 s
    // before it does.
    let (server, c, wire) = cluster(KubeOptions {
        watch_timeout: Duration::from_secs(5),
        ..opts(500)
    })
    .await;
    c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    assert!(matches!(
        next(&mut w).await.unwrap(),
        ResourceEvent::Snapshot { ref items, .. } if items.len() == 1
    ));
    wait_for_requests(&wire, "the watch did not start", |r| {
        r.iter().any(|l| is_watch_of(POOLS)(l))
    })
    .await;
    let first = wire.requests_where(is_watch_of(POOLS)).remove(0);
    assert_eq!(
        param(&first, "allowWatchBookmarks"),
        Some("true"),
        "{first}"
    );
    let first_rv = param(&first, "resourceVersion").unwrap().to_string();

    // Other collections move the resourceVersion on; the pool watch hears
    // of it only through a bookmark.
    let mut last = String::new();
    for i in 0..3 {
        last = c
            .create_value(
                &Key::Handle {
                    id: format!("h{i}"),
                },
                &ippool_crd::IPAMHandleSpec::new(format!("h{i}")),
            )
            .await
            .unwrap()
            .0;
    }
    // A consistent read of the pools makes the API server fetch etcd's
    // current revision into its pool cache, whose bookmarks carry it;
    // otherwise it learns of it only from etcd's progress notifications
    // (every 10 minutes), and bookmarks would carry the last pool's version.
    let other = server.datastore(opts(500)).await.unwrap();
    other.list::<IPPool>().await.unwrap();

    // The watch ends (timeoutSeconds) and the client watches again from
    // the bookmark's version, not from the last pool's.
    wait_for_requests(&wire, "the watch was not resumed", |r| {
        r.iter().filter(|l| is_watch_of(POOLS)(l)).count() >= 2
    })
    .await;
    let resumed = wire.requests_where(is_watch_of(POOLS)).remove(1);
    let rv = param(&resumed, "resourceVersion").unwrap();
    assert!(
        rv_number(rv) >= rv_number(&last),
        "resumed from {rv}, before the handles' writes (up to {last}); first watch from {first_rv}"
    );
    assert_eq!(
        param(&resumed, "allowWatchBookmarks"),
        Some("true"),
        "{resumed}"
    );

    // Nothing was repeated, nothing is lost, and there was no relist.
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    match next(&mut w).await.unwrap() {
        ResourceEvent::Created(p) => assert_eq!(p.name(), "b"),
        other => panic!("expected Created b, got {other:?}"),
    }
    assert_eq!(wire.requests_where(is_list_of(POOLS)).len(), 1);
}

#[tokio::test]
async fn gone_history_relists_and_sends_a_snapshot() {
    let (mut server, c, wire) = cluster(opts(500)).await;
    c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    assert!(matches!(
        next(&mut w).await.unwrap(),
        ResourceEvent::Snapshot { .. }
    ));
    wait_for_requests(&wire, "the watch did not start", |r| {
        r.iter().any(|l| is_watch_of(POOLS)(l))
    })
    .await;

    // The API server goes away: the watch breaks and cannot resume.
    server.kill_apiserver();
    match next(&mut w).await {
        Err(e) => {
            assert!(matches!(e, Error::Unavailable { .. }), "{e}");
            assert!(e.is_transient());
        }
        Ok(ev) => panic!("expected the interruption to be reported, got {ev:?}"),
    }
    // It comes back with a fresh watch cache, and the pools change before
    // the watch's next attempt to resume gets through.
    let mut held = wire.hold_next(is_watch_of(POOLS));
    server.restart_apiserver().unwrap();
    let other = server.datastore(opts(500)).await.unwrap();
    other.delete::<IPPool>("a", None).await.unwrap();
    other.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    held.reached().await;
    held.release();

    // The resumed watch gets 410 Expired: the client lists again and
    // hands over the whole new state.
    let (items, revision) = match next_event(&mut w).await {
        ResourceEvent::Snapshot { items, revision } => (items, revision),
        other => panic!("expected a Snapshot after 410 Gone, got {other:?}"),
    };
    let names: Vec<_> = items.iter().map(|p| p.name().to_string()).collect();
    assert_eq!(names, ["b"]);
    // And it goes on watching from the new list.
    wait_for_requests(&wire, "no watch from the new list", |r| {
        r.iter()
            .any(|l| is_watch_of(POOLS)(l) && param(l, "resourceVersion") == Some(&revision.0))
    })
    .await;
    c.create(&pool("c", "10.3.0.0/16")).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Created(p) => assert_eq!(p.name(), "c"),
        other => panic!("expected Created c, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watch_from_before_the_api_servers_history_starts_with_a_snapshot() {
    let (mut server, c, _wire) = cluster(opts(500)).await;
    let a = c.create(&pool("a", "10.1.0.0/16")).await.unwrap();
    c.create(&pool("b", "10.2.0.0/16")).await.unwrap();
    // A restarted API server's history starts at its restart.
    server.restart_apiserver().unwrap();
    let old = datastore::Revision(a.metadata.resource_version.unwrap());
    let mut w = c.watch::<IPPool>(Some(old)).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Snapshot { items, .. } => assert_eq!(items.len(), 2),
        other => panic!("expected a Snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn conflicts_are_conflict_errors_and_retries_succeed() {
    let (server, c, wire) = cluster(opts(500)).await;
    let admin = server.admin_client().await.unwrap();
    let p = c.create(&pool("p", "10.1.0.0/16")).await.unwrap();

    // Another writer gets in between our read and our write: the server's
    // 409 Conflict is the datastore's Conflict, with the revision the
    // write expected.
    let a = admin.clone();
    wire.before_next(
        |r| r.starts_with(&format!("PUT {POOLS}/p?")),
        move |line| async move { touch(&a, &path_of(&line)).await },
    );
    let mut mine = p.clone();
    mine.spec.nat_outgoing = Some(true);
    match c.update(&mine).await.unwrap_err() {
        Error::Conflict { expected, key } => {
            assert_eq!(Some(expected.0), p.metadata.resource_version);
            assert!(key.contains("\"p\""), "{key}");
        }
        other => panic!("expected Conflict, got {other}"),
    }
    // Re-read and retry: it lands, and keeps the other writer's change.
    let mut fresh: IPPool = c.get("p").await.unwrap().unwrap();
    fresh.spec.nat_outgoing = Some(true);
    c.update(&fresh).await.unwrap();
    let obj = stored(&server, &format!("{POOLS}/p"));
    assert_eq!(obj["spec"]["natOutgoing"], json!(true));
    assert_eq!(obj["metadata"]["labels"]["touched-by"], "another-writer");

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
    let block_puts = || {
        wire.requests_where(|r| r.starts_with(&format!("PUT {BLOCKS}/")))
            .len()
    };
    let puts_before = block_puts();
    let a = admin.clone();
    wire.before_next(
        |r| r.starts_with(&format!("PUT {BLOCKS}/")),
        move |line| async move { touch(&a, &path_of(&line)).await },
    );
    let second = ipam.auto_assign(&req("pod-2")).await.unwrap();
    assert_ne!(first.v4, second.v4);
    let puts = block_puts() - puts_before;
    assert!(puts >= 2, "the block write was not retried ({puts} PUTs)");
    assert_eq!(
        ipam.ips_by_handle(&pod_handle("pod-2")).await.unwrap(),
        second.v4
    );

    // Two callers of the node's tunnel address at once: the first's claim
    // (an IPAMHandle holding nothing) goes through the API server, the
    // second waits on it, and both get the one address.
    let (one, two) = (Ipam::new(c.clone()), Ipam::new(c.clone()));
    let (x, y) = tokio::join!(
        one.ensure_tunnel_address("node-1"),
        two.ensure_tunnel_address("node-1")
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y);
    assert_eq!(
        ipam.ips_by_handle(&datastore::ipam::ipip_tunnel_handle("node-1"))
            .await
            .unwrap(),
        vec![x]
    );
}

#[tokio::test]
async fn a_missing_crd_says_to_apply_the_crds() {
    tests::init_tracing();
    // No deploy/crds.yaml on this one.
    let server = KubeServer::start().unwrap();
    let c = server.datastore(opts(500)).await.unwrap();
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

/// A Node as kubelet registers it (there is no kubelet here).
fn kubelet_node(name: &str, labels: Value, annotations: Value) -> K8sNode {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"podCIDR": "10.244.0.0/24"},
    }))
    .unwrap()
}

/// A kubelet heartbeat: the Ready condition's time moves on.
async fn heartbeat(nodes: &Api<K8sNode>, name: &str, n: u32) {
    let now = format!("2025-01-01T00:00:{n:02}Z");
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": "2025-01-01T00:00:00Z",
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn calico_nodes_are_annotated_kubernetes_nodes() {
    let (server, c, wire) = cluster(opts(500)).await;
    let nodes: Api<K8sNode> = Api::all(server.admin_client().await.unwrap());
    nodes
        .create(
            &PostParams::default(),
            &kubelet_node(
                "node-1",
                json!({"kubernetes.io/hostname": "node-1", "rack": "r1"}),
                json!({
                    "projectcalico.org/IPv4Address": "10.0.0.1/24",
                    "projectcalico.org/ASNumber": "64513",
                }),
            ),
        )
        .await
        .unwrap();
    heartbeat(&nodes, "node-1", 1).await;
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
    // leaves the rest of the Node (kubelet's, the controllers') alone. The
    // controller manager writes Nodes too (taints, its own annotations), so
    // this is the usual read-modify-write loop.
    let mut written = None;
    for _ in 0..5 {
        let mut n: Node = c.get("node-1").await.unwrap().unwrap();
        let bgp = n.spec.bgp.get_or_insert_with(Default::default);
        bgp.ipv4_ipip_tunnel_addr = Some("10.65.0.1".into());
        bgp.route_reflector_cluster_id = Some("224.0.0.1".into());
        match c.update(&n).await {
            Ok(n) => {
                written = Some(n);
                break;
            }
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(written.is_some(), "the node kept changing");
    let stored = stored(&server, "/api/v1/nodes/node-1");
    let ann = &stored["metadata"]["annotations"];
    assert_eq!(ann["projectcalico.org/IPv4IPIPTunnelAddr"], "10.65.0.1");
    assert_eq!(
        ann["projectcalico.org/RouteReflectorClusterID"],
        "224.0.0.1"
    );
    assert_eq!(ann["projectcalico.org/IPv4Address"], "10.0.0.1/24");
    assert_eq!(stored["metadata"]["labels"]["rack"], "r1");
    assert_eq!(stored["spec"]["podCIDR"], "10.244.0.0/24");
    assert_eq!(stored["status"]["conditions"][0]["type"], "Ready");
    assert!(
        wire.requests()
            .iter()
            .any(|r| r.starts_with("PATCH /api/v1/nodes/node-1"))
    );
    assert!(
        !wire
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT /api/v1/nodes")),
        "a Node is never replaced whole"
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
    heartbeat(&nodes, "node-1", 2).await;
    heartbeat(&nodes, "node-1", 3).await;
    nodes
        .create(
            &PostParams::default(),
            &kubelet_node("node-2", json!({}), json!({})),
        )
        .await
        .unwrap();
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
    let (server, c, wire) = cluster(opts(500)).await;
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
        wire.requests()
            .iter()
            .any(|r| r.starts_with(&format!("PUT {POOLS}/p/status"))),
        "{:#?}",
        wire.requests()
    );
    let obj = stored(&server, &format!("{POOLS}/p"));
    assert_eq!(obj["status"]["allocatedBlocks"], 2);
    assert_ne!(obj["spec"]["disabled"], json!(true));
    // A spec update keeps the status (the server owns that split).
    let mut again: IPPool = c.get("p").await.unwrap().unwrap();
    assert_eq!(
        again.metadata.resource_version,
        st.metadata.resource_version
    );
    again.spec.nat_outgoing = Some(true);
    again.status = None;
    c.update(&again).await.unwrap();
    let obj = stored(&server, &format!("{POOLS}/p"));
    assert_eq!(obj["status"]["allocatedBlocks"], 2);
    assert_eq!(obj["spec"]["natOutgoing"], true);
}

#[tokio::test]
async fn affinities_of_one_host_are_filtered_from_the_whole_list() {
    let (server, c, _wire) = cluster(opts(500)).await;
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
    let obj = stored(
        &server,
        "/apis/crd.projectcalico.org/v1/blockaffinities/node-1-10-0-0-0-26",
    );
    assert_eq!(obj["spec"]["node"], "node-1");
    assert_eq!(obj["spec"]["cidr"], "10.0.0.0/26");
}

#[tokio::test]
async fn calico_node_keeps_pool_status_current_writing_only_changes() {
    let (server, c, wire) = cluster(opts(500)).await;
    c.create(&pool("old", "10.65.0.0/16")).await.unwrap();
    c.create(&pool("young", "10.65.1.0/24")).await.unwrap();
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
        wire.requests_where(|r| r.starts_with("PUT ") && r.contains("/status"))
            .len()
    };
    // Two calico-nodes: the first writes both pools, the second nothing.
    let c2 = server.datastore(self::opts(500)).await.unwrap();
    assert_eq!(node::pool_status::reconcile(&c, &opts).await.unwrap(), 2);
    assert_eq!(node::pool_status::reconcile(&c2, &opts).await.unwrap(), 0);
    assert_eq!(status_puts(), 2);
    let old = stored(&server, &format!("{POOLS}/old"));
    assert_eq!(old["status"]["conditions"][0]["reason"], "OK");
    assert_eq!(old["status"]["allocatedBlocks"], 1);
    assert_eq!(old["status"]["allocatedAddresses"], 1);
    // Created in the same second or later: older, or the smaller name.
    let young = stored(&server, &format!("{POOLS}/young"));
    assert_eq!(young["status"]["conditions"][0]["reason"], "CIDROverlap");
    assert_eq!(young["status"]["conditions"][0]["status"], "False");

    // A change (pool disabled) races another writer: retried, written once.
    let mut p: IPPool = c.get("old").await.unwrap().unwrap();
    p.spec.disabled = Some(true);
    c.update(&p).await.unwrap();
    let admin = server.admin_client().await.unwrap();
    wire.before_next(
        |r| r.starts_with(&format!("PUT {POOLS}/old/status")),
        move |line| async move {
            touch(&admin, path_of(&line).trim_end_matches("/status")).await;
        },
    );
    assert_eq!(node::pool_status::reconcile(&c, &opts).await.unwrap(), 1);
    let old = stored(&server, &format!("{POOLS}/old"));
    assert_eq!(old["status"]["conditions"][0]["reason"], "PoolDisabled");
    assert_eq!(
        wire.requests_where(|r| r.starts_with(&format!("PUT {POOLS}/old/status")))
            .len(),
        3,
        "one write, one lost race, one retry"
    );
    assert_eq!(node::pool_status::reconcile(&c2, &opts).await.unwrap(), 0);
}

/// The literal environment of the calico-node container in
/// deploy/calico-node.yaml.
fn daemonset_env() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/calico-node.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let ds: Value = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .find(|d: &Value| d["kind"] == "DaemonSet")
        .unwrap();
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "calico-node")
        .unwrap()["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Runs of spaces as one, so kubectl's column alignment does not matter.
fn squeeze(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn kubectl_shows_the_default_pool_and_the_status_calico_node_wrote() {
    let (server, c, _wire) = cluster(opts(500)).await;
    // The default pool, as calico-node creates it from the DaemonSet's
    // environment on a cluster without one.
    let mut env = daemonset_env();
    env.insert("NODENAME".into(), "node-1".into());
    let settings = node::settings::Settings::from_env(|k| env.get(k).cloned()).unwrap();
    let default_pool = settings.default_pool.unwrap();
    assert!(
        node::startup::ensure_default_pool(&c, &default_pool)
            .await
            .unwrap()
    );
    // Five pods on node-1, and calico-node's status writer.
    let ipam = Ipam::new(c.clone());
    for i in 0..5 {
        let req = AssignRequest {
            handle: pod_handle(&format!("pod-{i}")),
            host: "node-1".into(),
            num_v4: 1,
            attrs: BTreeMap::from([("node".into(), "node-1".into())]),
            ..Default::default()
        };
        ipam.auto_assign(&req).await.unwrap();
    }
    let status_opts = node::pool_status::Options::default();
    assert_eq!(
        node::pool_status::reconcile(&c, &status_opts)
            .await
            .unwrap(),
        1
    );

    let narrow = server.kubectl(&["get", "ippools"]).unwrap();
    let wide = server.kubectl(&["get", "ippools", "-o", "wide"]).unwrap();
    let describe = server
        .kubectl(&["describe", "ippool", "default-ipv4-ippool"])
        .unwrap();
    // For the README.
    println!(
        "$ kubectl get ippools -o wide\n{wide}\n$ kubectl describe ippool default-ipv4-ippool\n{describe}"
    );

    let header = |t: &str| {
        t.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        header(&narrow),
        "NAME CIDR IPIP VXLAN NAT BLOCKSIZE DISABLED AGE"
    );
    assert_eq!(
        header(&wide),
        "NAME CIDR IPIP VXLAN NAT BLOCKSIZE DISABLED AGE DISABLEBGPEXPORT SELECTOR \
         ALLOCATABLE BLOCKS USED INBLOCKS"
    );
    let row: Vec<&str> = wide.lines().nth(1).unwrap().split_whitespace().collect();
    let (before_age, after_age) = (&row[..7], &row[8..]);
    assert_eq!(
        before_age,
        [
            "default-ipv4-ippool",
            "192.168.0.0/16",
            "CrossSubnet",
            "Never",
            "true",
            "26",
            "false"
        ]
    );
    assert!(row[7].ends_with('s'), "age {}", row[7]);
    // One /26 block, five addresses used of its 64.
    assert_eq!(after_age, ["false", "all()", "OK", "1", "5", "64"]);

    let d = squeeze(&describe);
    for line in [
        "Name: default-ipv4-ippool",
        "API Version: crd.projectcalico.org/v1",
        "Kind: IPPool",
        "Block Size: 26",
        "Cidr: 192.168.0.0/16",
        "Ipip Mode: CrossSubnet",
        "Nat Outgoing: true",
        "Node Selector: all()",
        "Vxlan Mode: Never",
        "Allocated Addresses: 5",
        "Allocated Blocks: 1",
        "Block Addresses: 64",
        "Message: addresses can be assigned from this pool",
        "Reason: OK",
        "Status: True",
        "Type: Allocatable",
    ] {
        assert!(
            d.lines().any(|l| l == line),
            "describe lacks {line:?}:\n{describe}"
        );
    }
}

#[tokio::test]
async fn a_pod_is_annotated_through_its_status_and_keeps_the_rest() {
    use datastore::kubernetes::objects::{POD_IPS_ANNOTATION, Pod};
    let (server, c, wire) = cluster(opts(500)).await;
    let admin = server.admin_client().await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin, "default");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"},
                     "annotations": {"owner": "team-a"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    let set = BTreeMap::from([(POD_IPS_ANNOTATION.to_string(), "10.65.0.7/32".to_string())]);
    c.annotate_in::<Pod>("default", "web", &set).await.unwrap();
    // A merge patch of the status subresource (what calico-node's RBAC,
    // pods/status patch, allows), not a write of the whole Pod.
    wait_for_requests(&wire, "the status patch", |reqs| {
        reqs.iter().any(|l| {
            l.starts_with("PATCH ") && l.contains("/api/v1/namespaces/default/pods/web/status")
        })
    })
    .await;
    let first = stored(&server, "/api/v1/namespaces/default/pods/web");
    assert_eq!(
        first["metadata"]["annotations"][POD_IPS_ANNOTATION],
        "10.65.0.7/32"
    );
    assert_eq!(first["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(first["metadata"]["labels"]["app"], "web");
    assert_eq!(first["spec"]["containers"][0]["image"], "busybox");
    let read: Pod = c.get_in("default", "web").await.unwrap().unwrap();
    assert_eq!(read.ip_strings(), ["10.65.0.7/32"]);

    // An empty value removes the annotation; a Pod that is not there is
    // NotFound.
    let unset = BTreeMap::from([(POD_IPS_ANNOTATION.to_string(), String::new())]);
    c.annotate_in::<Pod>("default", "web", &unset)
        .await
        .unwrap();
    let stored2 = stored(&server, "/api/v1/namespaces/default/pods/web");
    assert!(
        stored2["metadata"]["annotations"]
            .get(POD_IPS_ANNOTATION)
            .is_none()
    );
    assert_eq!(stored2["metadata"]["annotations"]["owner"], "team-a");
    assert!(matches!(
        c.annotate_in::<Pod>("default", "gone", &set).await,
        Err(Error::NotFound { .. })
    ));
}
