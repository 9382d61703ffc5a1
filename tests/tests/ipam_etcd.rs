//! IPAM against a real etcd: concurrency, exhaustion, limits, borrowing,
//! rollback and crash repair.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use datastore::ipam::{AssignRequest, Ipam, IpamError, IpamOptions, pod_handle};
use datastore::{Client, Key};
use ipnetwork::IpNetwork;
use ippool_crd::IPPool;
use serde_json::json;
use tests::EtcdServer;

async fn setup(pools: &[serde_json::Value]) -> (EtcdServer, Client) {
    tests::init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    for p in pools {
        let pool: IPPool = serde_json::from_value(p.clone()).unwrap();
        c.create(&pool).await.unwrap();
    }
    (etcd, c)
}

fn pool(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn req(handle: &str, host: &str, v4: usize) -> AssignRequest {
    AssignRequest {
        handle: handle.into(),
        host: host.into(),
        num_v4: v4,
        attrs: BTreeMap::from([("node".into(), host.into())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn eight_tasks_on_three_nodes_allocate_2000_ips_without_duplicates() {
    let (_etcd, c) = setup(&[pool("p", json!({"cidr": "10.65.0.0/20", "blockSize": 26}))]).await;
    let ipam = Ipam::new(c.clone());
    let nodes = ["node-0", "node-1", "node-2"];
    let tasks = 8;
    let per_task = 250;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let ipam = ipam.clone();
            let node = nodes[t % nodes.len()].to_string();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..per_task {
                    let h = pod_handle(&format!("t{t}-pod{i}"));
                    let a = ipam.auto_assign(&req(&h, &node, 1)).await.unwrap();
                    assert_eq!(a.v4.len(), 1);
                    got.push((node.clone(), h, a.v4[0]));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    println!("2000 allocations took {:?}", started.elapsed());
    assert_eq!(all.len(), tasks * per_task);

    let distinct: HashSet<IpAddr> = all.iter().map(|(_, _, ip)| *ip).collect();
    assert_eq!(distinct.len(), all.len(), "an IP was handed out twice");

    // Every node's IPs lie in that node's own blocks.
    for node in nodes {
        let blocks: Vec<IpNetwork> = ipam.host_blocks(node).await.unwrap();
        assert!(!blocks.is_empty());
        assert!(blocks.len() <= 20);
        for (n, _, ip) in all.iter().filter(|(n, _, _)| n == node) {
            assert!(
                blocks.iter().any(|b| b.contains(*ip)),
                "{ip} of {n} is not in its blocks {blocks:?}"
            );
        }
    }
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.allocations.len(), all.len());
    for a in &audit.allocations {
        assert_eq!(
            a.block_host.as_deref(),
            a.handle.as_ref().and_then(|h| all
                .iter()
                .find(|(_, hh, _)| hh == h)
                .map(|(n, _, _)| n.as_str()))
        );
    }

    // Release every handle, concurrently.
    let releases: Vec<_> = all
        .chunks(all.len() / tasks)
        .map(|chunk| {
            let ipam = ipam.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for (_, h, ip) in chunk {
                    assert_eq!(ipam.release_by_handle(&h).await.unwrap(), vec![ip]);
                }
            })
        })
        .collect();
    for r in releases {
        r.await.unwrap();
    }
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(
        audit.allocations.len(),
        0,
        "releasing every handle leaves zero allocated"
    );
    let handles = c
        .list_values::<ippool_crd::IPAMHandleSpec>(&datastore::ListKey::Handles)
        .await
        .unwrap();
    assert!(handles.is_empty(), "{} handles left", handles.len());
}

#[tokio::test]
async fn a_disabled_pool_is_a_clear_error() {
    let (_etcd, c) = setup(&[pool(
        "off",
        json!({"cidr": "10.66.0.0/16", "disabled": true}),
    )])
    .await;
    let ipam = Ipam::new(c);
    let t = Instant::now();
    let err = ipam.auto_assign(&req("h", "node-1", 1)).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("pool off is disabled"), "{msg}");
    assert!(msg.contains("node-1"), "{msg}");
}

#[tokio::test]
async fn a_full_pool_is_a_clear_error_not_a_hang() {
    let (_etcd, c) = setup(&[pool(
        "tiny",
        json!({"cidr": "10.67.0.0/29", "blockSize": 29}),
    )])
    .await;
    let ipam = Ipam::new(c);
    for i in 0..8 {
        ipam.auto_assign(&req(&format!("a{i}"), "node-a", 1))
            .await
            .unwrap();
    }
    let t = Instant::now();
    let err = ipam.auto_assign(&req("a8", "node-a", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    let err = ipam.auto_assign(&req("b0", "node-b", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
    // Borrowing was tried too (strictAffinity is off by default).
    assert!(err.to_string().contains("claimed and full"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Nothing leaked by the failed attempts.
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.allocations.len(), 8);
}

#[tokio::test]
async fn max_blocks_per_host_is_enforced() {
    let (_etcd, c) = setup(&[pool("p", json!({"cidr": "10.68.0.0/24", "blockSize": 30}))]).await;
    let ipam = Ipam::with_options(
        c,
        IpamOptions {
            max_blocks_per_host: 2,
            ..Default::default()
        },
    );
    let a = ipam.auto_assign(&req("h1", "node-1", 8)).await.unwrap();
    assert_eq!(a.v4.len(), 8);
    let err = ipam.auto_assign(&req("h2", "node-1", 1)).await.unwrap_err();
    assert!(
        matches!(err, IpamError::BlockLimit { limit: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("maxBlocksPerHost"), "{err}");
    // Another node is unaffected.
    ipam.auto_assign(&req("h3", "node-2", 1)).await.unwrap();
}

#[tokio::test]
async fn borrowing_by_default_and_not_once_strict_affinity_is_turned_on() {
    let (_etcd, c) = setup(&[pool(
        "one-block",
        json!({"cidr": "10.69.0.0/26", "blockSize": 26}),
    )])
    .await;
    let ipam = Ipam::new(c.clone());
    ipam.auto_assign(&req("a", "node-a", 1)).await.unwrap();
    // As in Calico (strictAffinity false): node-b borrows from node-a's
    // block when no block is left.
    let b = ipam.auto_assign(&req("b", "node-b", 1)).await.unwrap();
    let block: IpNetwork = "10.69.0.0/26".parse().unwrap();
    assert!(block.contains(b.v4[0]));
    let audit = ipam.audit().await.unwrap();
    let borrowed = audit.allocations.iter().find(|a| a.ip == b.v4[0]).unwrap();
    assert_eq!(borrowed.block_host.as_deref(), Some("node-a"));

    let cfg = ippool_crd::IPAMConfigurationSpec {
        strict_affinity: true,
        ..Default::default()
    };
    c.create_value(&Key::IpamConfig, &cfg).await.unwrap();
    let err = ipam.auto_assign(&req("c", "node-c", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_dual_stack_request_leaves_nothing_allocated() {
    let (_etcd, c) = setup(&[pool("v4", json!({"cidr": "10.70.0.0/16"}))]).await;
    let ipam = Ipam::new(c);
    let mut r = req("dual", "node-1", 1);
    r.num_v6 = 1;
    let err = ipam.auto_assign(&r).await.unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    assert!(err.to_string().contains("IPv6"), "{err}");
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert!(
        audit.allocations.is_empty(),
        "the IPv4 address was rolled back"
    );
}

#[tokio::test]
async fn dual_stack_allocates_from_both_families() {
    let (_etcd, c) = setup(&[
        pool("v4", json!({"cidr": "10.71.0.0/16"})),
        pool("v6", json!({"cidr": "fd00:71::/112"})),
    ])
    .await;
    let ipam = Ipam::new(c);
    let mut r = req("dual", "node-1", 1);
    r.num_v6 = 1;
    let a = ipam.auto_assign(&r).await.unwrap();
    assert!(a.v4[0].is_ipv4());
    assert!(a.v6[0].is_ipv6());
    let blocks = ipam.host_blocks("node-1").await.unwrap();
    assert!(
        blocks
            .iter()
            .any(|b| b.prefix() == 122 && b.contains(a.v6[0]))
    );
    assert!(
        blocks
            .iter()
            .any(|b| b.prefix() == 26 && b.contains(a.v4[0]))
    );
    let mut freed = ipam.release_by_handle("dual").await.unwrap();
    freed.sort();
    let mut want = vec![a.v4[0], a.v6[0]];
    want.sort();
    assert_eq!(freed, want);
}

#[tokio::test]
async fn a_claim_interrupted_after_creating_the_block_is_repaired() {
    let (_etcd, c) = setup(&[pool("p", json!({"cidr": "10.72.0.0/26"}))]).await;
    // Simulate a crash between phase 2 and 3: block exists and is ours,
    // the affinity is still pending.
    let cidr: IpNetwork = "10.72.0.0/26".parse().unwrap();
    let block = datastore::ipam::block::Block::new(cidr, "node-1");
    c.create_value(&Key::Block { cidr }, &block.spec)
        .await
        .unwrap();
    let pending = ippool_crd::BlockAffinitySpec {
        state: ippool_crd::AffinityState::Pending,
        node: "node-1".into(),
        cidr: cidr.to_string(),
        deleted: false,
        affinity_type: None,
    };
    let aff = Key::Affinity {
        host: "node-1".into(),
        cidr,
    };
    c.create_value(&aff, &pending).await.unwrap();

    let ipam = Ipam::new(c.clone());
    assert!(
        ipam.host_blocks("node-1").await.unwrap().is_empty(),
        "pending is not advertised"
    );
    let a = ipam.auto_assign(&req("h", "node-1", 1)).await.unwrap();
    assert!(cidr.contains(a.v4[0]));
    assert_eq!(ipam.host_blocks("node-1").await.unwrap(), vec![cidr]);
}

#[tokio::test]
async fn releasing_an_unknown_handle_is_not_an_error() {
    let (_etcd, c) = setup(&[]).await;
    let ipam = Ipam::new(c);
    assert!(
        ipam.release_by_handle("k8s-pod-network.nope")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn empty_blocks_of_a_departed_node_are_released() {
    let (_etcd, c) = setup(&[pool("p", json!({"cidr": "10.73.0.0/24"}))]).await;
    let ipam = Ipam::new(c);
    ipam.auto_assign(&req("h", "node-1", 1)).await.unwrap();
    assert!(
        ipam.release_empty_blocks("node-1")
            .await
            .unwrap()
            .is_empty(),
        "still in use"
    );
    ipam.release_by_handle("h").await.unwrap();
    let released = ipam.release_empty_blocks("node-1").await.unwrap();
    assert_eq!(released.len(), 1);
    assert!(ipam.host_blocks("node-1").await.unwrap().is_empty());
    let audit = ipam.audit().await.unwrap();
    assert!(audit.blocks.is_empty() && audit.problems.is_empty());
}

#[tokio::test]
async fn tunnel_address_is_allocated_once_from_a_tunnel_pool_and_kept() {
    use datastore::ipam::ipip_tunnel_handle;
    let (_etcd, c) = setup(&[
        pool(
            "workloads",
            json!({"cidr": "10.70.0.0/24", "allowedUses": ["Workload"]}),
        ),
        pool(
            "tunnels",
            json!({"cidr": "10.71.0.0/24", "allowedUses": ["Tunnel"]}),
        ),
    ])
    .await;
    let ipam = Ipam::new(c.clone());
    let tunnels: IpNetwork = "10.71.0.0/24".parse().unwrap();

    let a = ipam.ensure_tunnel_address("node-0").await.unwrap();
    assert!(tunnels.contains(a), "{a} is not from the Tunnel pool");
    assert_eq!(ipam.ensure_tunnel_address("node-0").await.unwrap(), a);
    assert_eq!(
        ipam.ips_by_handle(&ipip_tunnel_handle("node-0"))
            .await
            .unwrap(),
        vec![a]
    );
    let b = ipam.ensure_tunnel_address("node-1").await.unwrap();
    assert_ne!(a, b);

    // Three callers at once for each of twenty nodes, each its own Ipam as
    // separate processes would be (calico-node restarting while its old
    // instance still runs): every caller of a node gets the same address,
    // and the node holds only that one. (Each caller used to allocate and
    // keep the lowest: one that returned before a lower address landed
    // was left holding a released one.)
    for round in 0..20 {
        let node = format!("node-{}", 2 + round);
        let callers: Vec<Ipam> = (0..3).map(|_| Ipam::new(c.clone())).collect();
        let got =
            futures::future::join_all(callers.iter().map(|i| i.ensure_tunnel_address(&node))).await;
        let got: Vec<_> = got.into_iter().map(Result::unwrap).collect();
        assert!(got.iter().all(|ip| *ip == got[0]), "{node}: {got:?}");
        assert_eq!(
            ipam.ips_by_handle(&ipip_tunnel_handle(&node))
                .await
                .unwrap(),
            vec![got[0]],
            "{node}"
        );
    }
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);

    // The pool stops allowing tunnels: the address moves to a pool that
    // does, and the old one is freed.
    let mut t: IPPool = c.get("tunnels").await.unwrap().unwrap();
    t.spec.allowed_uses = Some(vec![ippool_crd::AllowedUse::Workload]);
    c.update(&t).await.unwrap();
    let both: IPPool = serde_json::from_value(pool(
        "both",
        json!({"cidr": "10.72.0.0/24", "allowedUses": ["Workload", "Tunnel"]}),
    ))
    .unwrap();
    c.create(&both).await.unwrap();
    let moved = ipam.ensure_tunnel_address("node-0").await.unwrap();
    assert!(
        "10.72.0.0/24".parse::<IpNetwork>().unwrap().contains(moved),
        "{moved}"
    );
    assert_eq!(
        ipam.ips_by_handle(&ipip_tunnel_handle("node-0"))
            .await
            .unwrap(),
        vec![moved]
    );
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert!(
        !audit.allocations.iter().any(|al| al.ip == a),
        "{a} still allocated"
    );
}

/// What a caller leaves while it allocates `node`'s IPIP tunnel address:
/// the node's handle, holding nothing yet.
async fn claim_tunnel_handle(c: &Client, node: &str) {
    let handle = datastore::ipam::ipip_tunnel_handle(node);
    c.create_value(
        &Key::Handle { id: handle.clone() },
        &ippool_crd::IPAMHandleSpec {
            handle_id: handle,
            block: Default::default(),
            deleted: false,
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_tunnel_address_claim_is_waited_for_and_taken_over_once_its_claimer_is_dead() {
    use datastore::ipam::ipip_tunnel_handle;
    let (_etcd, c) = setup(&[pool(
        "tunnels",
        json!({"cidr": "10.71.0.0/24", "allowedUses": ["Tunnel"]}),
    )])
    .await;
    let tunnels: IpNetwork = "10.71.0.0/24".parse().unwrap();
    let timeout = Duration::from_millis(1500);
    let ipam = Ipam::with_options(
        c.clone(),
        IpamOptions {
            tunnel_claim_timeout: timeout,
            ..Default::default()
        },
    );

    // A live claimer: the second caller waits and gets the claimer's
    // address, rather than allocating one the claimer will not know of.
    claim_tunnel_handle(&c, "node-0").await;
    let waiter = tokio::spawn({
        let ipam = ipam.clone();
        async move { ipam.ensure_tunnel_address("node-0").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut claimer = req(&ipip_tunnel_handle("node-0"), "node-0", 1);
    claimer.used_for = Some(ippool_crd::AllowedUse::Tunnel);
    let claimed = Ipam::new(c.clone()).auto_assign(&claimer).await.unwrap().v4[0];
    let got = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("waited for ever")
        .unwrap()
        .unwrap();
    assert_eq!(got, claimed);
    assert_eq!(
        ipam.ips_by_handle(&ipip_tunnel_handle("node-0"))
            .await
            .unwrap(),
        vec![claimed]
    );

    // A dead one: taken over once it has stood empty for the timeout.
    claim_tunnel_handle(&c, "node-1").await;
    let started = Instant::now();
    let ip = tokio::time::timeout(
        Duration::from_secs(30),
        ipam.ensure_tunnel_address("node-1"),
    )
    .await
    .expect("waited on a dead claim for ever")
    .unwrap();
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    assert!(tunnels.contains(ip) && ip != claimed, "{ip}");
    assert_eq!(
        ipam.ips_by_handle(&ipip_tunnel_handle("node-1"))
            .await
            .unwrap(),
        vec![ip]
    );
    assert_eq!(ipam.ensure_tunnel_address("node-1").await.unwrap(), ip);
}

#[tokio::test]
async fn tunnel_address_without_a_tunnel_pool_is_a_clear_error() {
    let (_etcd, c) = setup(&[pool(
        "workloads",
        json!({"cidr": "10.70.0.0/24", "allowedUses": ["Workload"]}),
    )])
    .await;
    let err = Ipam::new(c)
        .ensure_tunnel_address("node-0")
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
}

/// What happens to a block write, once armed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Applied by etcd, but the answer never arrives.
    Answer,
    /// Lost on the way: never applied.
    Request,
    /// The request is lost, and so is every read until disarmed.
    Everything,
}

/// The real etcd backend behind a link that, once armed, loses the next
/// block write (and, with [`Loss::Everything`], the reads after it).
struct LossyLink {
    inner: datastore::EtcdBackend,
    armed: std::sync::Mutex<Option<Loss>>,
    reads_fail: std::sync::atomic::AtomicBool,
}

fn lost(what: &str) -> datastore::Error {
    datastore::Error::Unavailable {
        endpoints: "etcd behind a lossy link".into(),
        reason: format!("{what}: deadline exceeded"),
        hint: "a test",
    }
}

#[async_trait::async_trait]
impl datastore::Backend for LossyLink {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &Key) -> Result<Option<datastore::Kv>, datastore::Error> {
        if self.reads_fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(lost("get"));
        }
        self.inner.get(key).await
    }
    async fn list(
        &self,
        list: &datastore::ListKey,
    ) -> Result<(Vec<datastore::Kv>, datastore::Revision), datastore::Error> {
        self.inner.list(list).await
    }
    async fn create(
        &self,
        key: &Key,
        value: Vec<u8>,
    ) -> Result<datastore::Revision, datastore::Error> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &datastore::Revision,
    ) -> Result<datastore::Revision, datastore::Error> {
        let loss = match key {
            Key::Block { .. } => self.armed.lock().unwrap().take(),
            _ => None,
        };
        match loss {
            None => self.inner.update(key, value, expected).await,
            Some(Loss::Answer) => {
                self.inner.update(key, value, expected).await?;
                Err(lost("update"))
            }
            Some(Loss::Request) => Err(lost("update")),
            Some(Loss::Everything) => {
                self.reads_fail
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(lost("update"))
            }
        }
    }
    async fn delete(
        &self,
        key: &Key,
        expected: Option<&datastore::Revision>,
    ) -> Result<(), datastore::Error> {
        self.inner.delete(key, expected).await
    }
    async fn watch(
        &self,
        list: &datastore::ListKey,
        after: Option<datastore::Revision>,
    ) -> Result<datastore::WatchStream, datastore::Error> {
        self.inner.watch(list, after).await
    }
}

#[tokio::test]
async fn a_block_write_whose_answer_is_lost_neither_leaks_nor_double_allocates() {
    let (etcd, c) = setup(&[pool("p", json!({"cidr": "10.74.0.0/26"}))]).await;
    let link = std::sync::Arc::new(LossyLink {
        inner: datastore::EtcdBackend::connect(datastore::EtcdConfig::new([etcd.endpoint()]))
            .await
            .unwrap(),
        armed: std::sync::Mutex::new(None),
        reads_fail: std::sync::atomic::AtomicBool::new(false),
    });
    let lossy = Client::from_arc(link.clone());
    let ipam = Ipam::new(lossy);
    let audit = std::sync::Arc::new(Ipam::new(c));
    // The first address claims the block (its writes are creates).
    ipam.auto_assign(&req("warm", "node-1", 1)).await.unwrap();
    let clean = |what: &'static str| {
        let audit = audit.clone();
        async move {
            let a = audit.audit().await.unwrap();
            assert!(a.problems.is_empty(), "{what}: {:?}", a.problems);
            a.allocations
        }
    };

    // Applied, answer lost: the allocation stands, counted once.
    *link.armed.lock().unwrap() = Some(Loss::Answer);
    let got = ipam.auto_assign(&req("h1", "node-1", 1)).await.unwrap();
    assert!(link.armed.lock().unwrap().is_none(), "the loss was not hit");
    assert_eq!(ipam.ips_by_handle("h1").await.unwrap(), got.v4);
    assert_eq!(clean("answer lost").await.len(), 2);
    assert_eq!(ipam.release_by_handle("h1").await.unwrap(), got.v4);

    // Lost on the way: an error, and nothing held.
    *link.armed.lock().unwrap() = Some(Loss::Request);
    assert!(ipam.auto_assign(&req("h2", "node-1", 1)).await.is_err());
    assert!(ipam.ips_by_handle("h2").await.unwrap().is_empty());
    assert_eq!(clean("request lost").await.len(), 1);

    // Lost, and the block cannot be read to find out: an error; the
    // handle keeps its count (never undone on ambiguity), and releasing
    // the handle (the CNI retry does) settles it.
    *link.armed.lock().unwrap() = Some(Loss::Everything);
    assert!(ipam.auto_assign(&req("h3", "node-1", 1)).await.is_err());
    link.reads_fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(ipam.release_by_handle("h3").await.unwrap().is_empty());
    assert_eq!(clean("everything lost, then released").await.len(), 1);
}

fn reservation(name: &str, cidrs: &[&str]) -> ippool_crd::IPReservation {
    serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPReservation",
        "metadata": {"name": name},
        "spec": {"reservedCIDRs": cidrs},
    }))
    .unwrap()
}

/// Addresses in an IPReservation are never auto-assigned: the block holding
/// them is still claimed and its other addresses used, a block wholly
/// reserved is passed over, and a reserved address can still be asked for
/// by name. The reservation is stored where Calico keeps it.
#[tokio::test]
async fn reserved_addresses_are_never_auto_assigned() {
    let (_etcd, c) = setup(&[pool("p", json!({"cidr": "10.65.0.0/28", "blockSize": 29}))]).await;
    // The first block's first four addresses and the whole second block
    // (host bits in a CIDR are ignored, as Calico does).
    c.create(&reservation("gw", &["10.65.0.0/30", "10.65.0.9/29"]))
        .await
        .unwrap();
    let raw = c
        .backend()
        .get(&Key::resource(datastore::ResourceKind::IPReservation, "gw"))
        .await
        .unwrap()
        .unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(stored["kind"], "IPReservation");
    assert_eq!(
        stored["spec"]["reservedCIDRs"],
        json!(["10.65.0.0/30", "10.65.0.9/29"])
    );
    let ipam = Ipam::new(c.clone());
    let mut got = Vec::new();
    for i in 0..4 {
        let a = ipam
            .auto_assign(&req(&pod_handle(&format!("r{i}")), "node-1", 1))
            .await
            .unwrap();
        got.extend(a.v4);
    }
    got.sort();
    let want: Vec<IpAddr> = (4..8)
        .map(|i| format!("10.65.0.{i}").parse().unwrap())
        .collect();
    assert_eq!(got, want);
    // Only reserved addresses are left: a clear error, nothing taken.
    let e = ipam
        .auto_assign(&req(&pod_handle("r-more"), "node-1", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IpamError::Exhausted { .. } | IpamError::BlockLimit { .. }
        ),
        "{e}"
    );
    // Both blocks were claimed, but nothing in them is reserved-and-taken.
    assert_eq!(ipam.host_blocks("node-1").await.unwrap().len(), 2);
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.allocations.len(), 4);
    // Asked for by address, a reserved one is given (as Calico does).
    let ip: IpAddr = "10.65.0.1".parse().unwrap();
    ipam.assign_ip(ip, &pod_handle("exact"), "node-1", &BTreeMap::new())
        .await
        .unwrap();
    // Releasing the reservation makes its addresses assignable again.
    c.delete::<ippool_crd::IPReservation>("gw", None)
        .await
        .unwrap();
    let a = ipam
        .auto_assign(&req(&pod_handle("r-after"), "node-1", 1))
        .await
        .unwrap();
    assert!(!got.contains(&a.v4[0]) && a.v4[0] != ip, "{a:?}");
}

/// A Manual pool is only used when asked for by name or CIDR; otherwise
/// the error says why it was passed over.
#[tokio::test]
async fn a_manual_pool_is_used_only_when_asked_for() {
    let (_etcd, c) = setup(&[
        pool(
            "manual",
            json!({"cidr": "10.70.0.0/24", "assignmentMode": "Manual"}),
        ),
        pool("auto", json!({"cidr": "10.65.0.0/24"})),
    ])
    .await;
    let ipam = Ipam::new(c.clone());
    let manual: IpNetwork = "10.70.0.0/24".parse().unwrap();
    for i in 0..5 {
        let a = ipam
            .auto_assign(&req(&pod_handle(&format!("a{i}")), "node-1", 1))
            .await
            .unwrap();
        assert!(!manual.contains(a.v4[0]), "{a:?}");
    }
    for asked in ["manual", "10.70.0.0/24"] {
        let mut r = req(&pod_handle(&format!("m-{}", asked.len())), "node-1", 1);
        r.pools_v4 = vec![asked.to_string()];
        let a = ipam.auto_assign(&r).await.unwrap();
        assert!(manual.contains(a.v4[0]), "{asked}: {a:?}");
    }
    // With only the Manual pool left, auto-assignment refuses and says why.
    c.delete::<IPPool>("auto", None).await.unwrap();
    let e = ipam
        .auto_assign(&req(&pod_handle("none"), "node-1", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::NoPool { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("pool manual is assignmentMode Manual"),
        "{e}"
    );
}

/// A pool's namespaceSelector: pods of matching namespaces may use it,
/// others (and pods whose namespace is unknown) may not, even by name.
#[tokio::test]
async fn a_namespace_selector_limits_a_pool_to_its_namespaces() {
    let (_etcd, c) = setup(&[pool(
        "team-a",
        json!({"cidr": "10.80.0.0/24", "namespaceSelector": "team == 'a'", "allowedUses": ["Workload"]}),
    )])
    .await;
    let ipam = Ipam::new(c.clone());
    let labels = |team: &str| Some(BTreeMap::from([("team".to_string(), team.to_string())]));
    let mut r = req(&pod_handle("pa"), "node-1", 1);
    r.namespace_labels = labels("a");
    let a = ipam.auto_assign(&r).await.unwrap();
    assert!(
        "10.80.0.0/24"
            .parse::<IpNetwork>()
            .unwrap()
            .contains(a.v4[0])
    );
    for (ns, handle) in [(labels("b"), "pb"), (None, "pnone")] {
        let mut r = req(&pod_handle(handle), "node-1", 1);
        r.namespace_labels = ns;
        r.pools_v4 = vec!["team-a".into()];
        let e = ipam.auto_assign(&r).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("pool team-a's namespaceSelector does not select the pod's namespace"),
            "{e}"
        );
    }
    // Another, unrestricted pool serves the rest.
    let other: IPPool =
        serde_json::from_value(pool("all", json!({"cidr": "10.65.0.0/24"}))).unwrap();
    c.create(&other).await.unwrap();
    let mut r = req(&pod_handle("pb2"), "node-1", 1);
    r.namespace_labels = labels("b");
    let b = ipam.auto_assign(&r).await.unwrap();
    assert!(
        "10.65.0.0/24"
            .parse::<IpNetwork>()
            .unwrap()
            .contains(b.v4[0])
    );
}
