//! What every datastore backend must do, as functions over a [`Client`]:
//! `tests/datastore_conformance.rs` runs each of them against a real etcd
//! and against a real Kubernetes API server ([`crate::kube`]), so the two
//! backends are held to the same behaviour.
//!
//! Each function panics (with what went wrong) if the backend misbehaves.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use datastore::ipam::{AssignRequest, Ipam, pod_handle};
use datastore::{Client, Error, Key, ListKey, ResourceEvent, Revision};
use futures::StreamExt;
use ippool_crd::{IPPool, IPPoolSpec, IPPoolStatus};

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, IPPoolSpec::new(cidr))
}

fn rev_of(p: &IPPool) -> Revision {
    Revision(p.metadata.resource_version.clone().unwrap())
}

/// Create, get, compare-and-swap update, conditional delete.
pub async fn crud_with_compare_and_swap(c: &Client) {
    let created = c.create(&pool("p1", "10.65.0.0/16")).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.uid.is_some());

    let err = c.create(&pool("p1", "10.66.0.0/16")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let got: IPPool = c.get("p1").await.unwrap().unwrap();
    assert_eq!(got.spec.cidr, "10.65.0.0/16");
    assert_eq!(got.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    assert!(c.get::<IPPool>("nope").await.unwrap().is_none());

    // A writer holding the current revision wins; one holding an old one
    // gets a conflict and nothing changes.
    let mut a = got.clone();
    a.spec.nat_outgoing = Some(true);
    let a = c.update(&a).await.unwrap();
    assert_ne!(a.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    let mut stale = got.clone();
    stale.spec.disabled = Some(true);
    let err = c.update(&stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.is_transient());
    let now: IPPool = c.get("p1").await.unwrap().unwrap();
    assert_eq!(now.spec.nat_outgoing, Some(true));
    assert_ne!(now.spec.disabled, Some(true));
    assert_eq!(now.metadata.resource_version, a.metadata.resource_version);

    let mut blind = now.clone();
    blind.metadata.resource_version = None;
    let err = c.update(&blind).await.unwrap_err();
    assert!(err.to_string().contains("read it first"), "{err}");

    let err = c
        .delete::<IPPool>("p1", Some(&Revision(rv1)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    c.delete::<IPPool>("p1", Some(&rev_of(&now))).await.unwrap();
    assert!(c.get::<IPPool>("p1").await.unwrap().is_none());
    let err = c.delete::<IPPool>("p1", None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let err = c.update(&now).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

/// Many writers doing read-modify-write with the usual retry-on-conflict
/// loop: every increment lands exactly once.
pub async fn concurrent_read_modify_write_loses_nothing(c: &Client) {
    c.create(&pool("counter", "10.70.0.0/16")).await.unwrap();
    let writers = 6;
    let each = 5;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..each {
                    loop {
                        let mut p: IPPool = c.get("counter").await.unwrap().unwrap();
                        let labels = p.metadata.labels.get_or_insert_with(Default::default);
                        let n: u32 = labels.get("n").map_or(0, |v| v.parse().unwrap());
                        labels.insert("n".into(), (n + 1).to_string());
                        match c.update(&p).await {
                            Ok(_) => break,
                            Err(Error::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let p: IPPool = c.get("counter").await.unwrap().unwrap();
    assert_eq!(
        p.metadata.labels.unwrap()["n"],
        (writers * each).to_string(),
        "an increment was lost or applied twice"
    );
}

/// The status is written (and compare-and-swapped) like the object.
pub async fn status_updates_are_compare_and_swap(c: &Client) {
    let p = c.create(&pool("st", "10.80.0.0/16")).await.unwrap();
    let mut with_status = p.clone();
    with_status.status = Some(IPPoolStatus {
        allocated_blocks: Some(3),
        ..Default::default()
    });
    let written = c.update_status(&with_status).await.unwrap();
    assert_ne!(
        written.metadata.resource_version,
        p.metadata.resource_version
    );
    let got: IPPool = c.get("st").await.unwrap().unwrap();
    assert_eq!(got.status.as_ref().unwrap().allocated_blocks, Some(3));
    assert_eq!(got.spec.cidr, "10.80.0.0/16");
    // Stale: refused, nothing written.
    let mut stale = with_status.clone();
    stale.status.as_mut().unwrap().allocated_blocks = Some(9);
    let err = c.update_status(&stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let got: IPPool = c.get("st").await.unwrap().unwrap();
    assert_eq!(got.status.unwrap().allocated_blocks, Some(3));
}

/// IPAM values (model form) at IPAM keys: create, get, list by host.
pub async fn ipam_values_round_trip(c: &Client) {
    let cidr = "192.168.0.64/26".parse().unwrap();
    let key = Key::Affinity {
        host: "node-1".into(),
        cidr,
    };
    let aff = ippool_crd::BlockAffinitySpec {
        state: ippool_crd::AffinityState::Confirmed,
        node: "node-1".into(),
        cidr: "192.168.0.64/26".into(),
        deleted: false,
        affinity_type: None,
    };
    c.create_value(&key, &aff).await.unwrap();
    let other = Key::Affinity {
        host: "node-10".into(),
        cidr: "192.168.0.128/26".parse().unwrap(),
    };
    let aff2 = ippool_crd::BlockAffinitySpec {
        node: "node-10".into(),
        cidr: "192.168.0.128/26".into(),
        ..aff.clone()
    };
    c.create_value(&other, &aff2).await.unwrap();
    let err = c.create_value(&key, &aff).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let back = c
        .get_value::<ippool_crd::BlockAffinitySpec>(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.value, aff);
    let listed = c
        .list_values::<ippool_crd::BlockAffinitySpec>(&ListKey::Affinities {
            host: Some("node-1".into()),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "node-10's affinity is not node-1's");
    assert_eq!(listed[0].0, key);
    let all = c
        .list_values::<ippool_crd::BlockAffinitySpec>(&ListKey::Affinities { host: None })
        .await
        .unwrap();
    assert_eq!(all.len(), 2);

    let mut pending = back.value.clone();
    pending.state = ippool_crd::AffinityState::Pending;
    let rev = c
        .update_value(&key, &pending, &back.revision)
        .await
        .unwrap();
    let err = c
        .update_value(&key, &aff, &back.revision)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    c.delete_key(&key, Some(&rev)).await.unwrap();
    assert!(
        c.get_value::<ippool_crd::BlockAffinitySpec>(&key)
            .await
            .unwrap()
            .is_none()
    );
}

/// `n` handles (more than a page) all come back, in order.
pub async fn lists_are_complete_across_pages(c: &Client, n: usize) {
    let futs = (0..n).map(|i| {
        let c = c.clone();
        async move {
            let spec = ippool_crd::IPAMHandleSpec {
                handle_id: format!("h{i:05}"),
                ..Default::default()
            };
            c.create_value(
                &Key::Handle {
                    id: spec.handle_id.clone(),
                },
                &spec,
            )
            .await
            .unwrap();
        }
    });
    futures::future::join_all(futs).await;
    let all = c
        .list_values::<ippool_crd::IPAMHandleSpec>(&ListKey::Handles)
        .await
        .unwrap();
    assert_eq!(all.len(), n);
    let ids: HashSet<_> = all.iter().map(|(_, v)| v.value.handle_id.clone()).collect();
    assert_eq!(ids.len(), n, "a handle was listed twice");
    assert_eq!(all[0].1.value.handle_id, "h00000");
    assert_eq!(all[n - 1].1.value.handle_id, format!("h{:05}", n - 1));
}

/// Names that cannot be stored are refused before reaching the store.
pub async fn names_that_would_escape_their_key_are_refused(c: &Client) {
    let err = c
        .create(&pool("../nodes/x", "10.0.0.0/16"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
}

async fn next_event<S, T>(w: &mut S) -> T
where
    S: futures::Stream<Item = Result<T, Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(ev))) => return ev,
            Ok(Some(Err(e))) => tracing::info!(error = %e, "watch interruption"),
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("no watch event within 10s"),
        }
    }
}

/// A watch starts with a snapshot, then reports each change once, in
/// order; one resumed from a revision replays exactly what came after it.
pub async fn watch_snapshot_changes_and_resume(c: &Client) {
    c.create(&pool("w1", "10.90.0.0/16")).await.unwrap();
    let mut w = c.watch::<IPPool>(None).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Snapshot { items, .. } => {
            let names: Vec<_> = items.iter().map(|p| p.name().to_string()).collect();
            assert_eq!(names, ["w1"]);
        }
        other => panic!("expected a snapshot first, got {other:?}"),
    }
    let p2 = c.create(&pool("w2", "10.91.0.0/16")).await.unwrap();
    let created_rev = match next_event(&mut w).await {
        ResourceEvent::Created(p) => {
            assert_eq!(p.name(), "w2");
            assert_eq!(p.metadata.resource_version, p2.metadata.resource_version);
            rev_of(&p)
        }
        other => panic!("expected Created, got {other:?}"),
    };
    let mut p2m = p2.clone();
    p2m.spec.nat_outgoing = Some(true);
    c.update(&p2m).await.unwrap();
    c.delete::<IPPool>("w1", None).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Updated(p) => assert_eq!(p.spec.nat_outgoing, Some(true)),
        other => panic!("expected Updated, got {other:?}"),
    }
    match next_event(&mut w).await {
        ResourceEvent::Deleted { name, .. } => assert_eq!(name, "w1"),
        other => panic!("expected Deleted, got {other:?}"),
    }
    drop(w);

    // Resume from just after the create: the update and delete again,
    // and nothing before them.
    let mut w = c.watch::<IPPool>(Some(created_rev)).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Updated(p) => assert_eq!(p.name(), "w2"),
        other => panic!("expected the update first, got {other:?}"),
    }
    match next_event(&mut w).await {
        ResourceEvent::Deleted { name, .. } => assert_eq!(name, "w1"),
        other => panic!("expected Deleted, got {other:?}"),
    }
    // And new changes keep coming.
    c.create(&pool("w3", "10.92.0.0/16")).await.unwrap();
    match next_event(&mut w).await {
        ResourceEvent::Created(p) => assert_eq!(p.name(), "w3"),
        other => panic!("expected Created w3, got {other:?}"),
    }
}

/// IPAM on the backend: concurrent assignments from three nodes (racing
/// on blocks and handles, so compare-and-swap conflicts are retried) give
/// distinct addresses in each node's own blocks; release frees them all.
pub async fn ipam_concurrent_assign_and_release(c: &Client) {
    let p: IPPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "ipam-pool"},
        "spec": {"cidr": "10.100.0.0/22", "blockSize": 28},
    }))
    .unwrap();
    c.create(&p).await.unwrap();
    let ipam = Ipam::new(c.clone());
    let nodes = ["node-a", "node-b", "node-c"];
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let ipam = ipam.clone();
            let node = nodes[t % nodes.len()].to_string();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..12 {
                    let h = pod_handle(&format!("t{t}-pod{i}"));
                    let req = AssignRequest {
                        handle: h.clone(),
                        host: node.clone(),
                        num_v4: 1,
                        attrs: BTreeMap::from([("node".into(), node.clone())]),
                        ..Default::default()
                    };
                    let a = ipam.auto_assign(&req).await.unwrap();
                    assert_eq!(a.v4.len(), 1);
                    got.push((node.clone(), h, a.v4[0]));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<IpAddr> = all.iter().map(|(_, _, ip)| *ip).collect();
    assert_eq!(distinct.len(), all.len(), "an IP was handed out twice");
    for node in nodes {
        let blocks = ipam.host_blocks(node).await.unwrap();
        for (_, _, ip) in all.iter().filter(|(n, _, _)| n == node) {
            assert!(
                blocks.iter().any(|b| b.contains(*ip)),
                "{ip} not in {node}'s blocks"
            );
        }
    }
    let audit = ipam.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.allocations.len(), all.len());
    for (_, h, ip) in &all {
        assert_eq!(ipam.release_by_handle(h).await.unwrap(), vec![*ip]);
    }
    assert!(ipam.audit().await.unwrap().allocations.is_empty());
}

/// A BGPFilter with every field set comes back as written (on Kubernetes:
/// nothing pruned by the CRD's schema), is listed, updated and deleted.
pub async fn bgp_filters_round_trip(c: &Client) {
    let f: ippool_crd::BGPFilter = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPFilter",
        "metadata": {"name": "tor-filter"},
        "spec": {
            "exportV4": [
                {"action": "Accept", "matchOperator": "In", "cidr": "77.0.0.0/16", "source": "RemotePeers"},
                {"action": "Reject"}
            ],
            "importV4": [
                {"action": "Accept", "matchOperator": "In", "cidr": "55.0.0.0/16", "prefixLength": {"min": 30, "max": 32}},
                {"action": "Reject", "matchOperator": "NotIn", "cidr": "44.0.0.0/16", "interface": "eth*"}
            ],
            "exportV6": [{"action": "Reject", "matchOperator": "NotEqual", "cidr": "fd00::/8"}],
            "importV6": [{"action": "Accept", "matchOperator": "Equal", "cidr": "5000::/64"}]
        }
    }))
    .unwrap();
    f.validate().unwrap();
    c.create(&f).await.unwrap();
    let got: ippool_crd::BGPFilter = c.get("tor-filter").await.unwrap().unwrap();
    assert_eq!(got.spec, f.spec);
    let all: Vec<ippool_crd::BGPFilter> = c.list().await.unwrap();
    assert_eq!(all.len(), 1);
    let mut changed = got.clone();
    changed.spec.export_v6 = None;
    let changed = c.update(&changed).await.unwrap();
    let got: ippool_crd::BGPFilter = c.get("tor-filter").await.unwrap().unwrap();
    assert_eq!(got.spec.export_v6, None);
    assert_eq!(got.spec.import_v4, f.spec.import_v4);
    c.delete::<ippool_crd::BGPFilter>(
        "tor-filter",
        Some(&Revision(
            changed.metadata.resource_version.clone().unwrap(),
        )),
    )
    .await
    .unwrap();
    assert!(
        c.get::<ippool_crd::BGPFilter>("tor-filter")
            .await
            .unwrap()
            .is_none()
    );
}
