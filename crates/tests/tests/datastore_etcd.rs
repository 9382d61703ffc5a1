//! The etcd backend against a real etcd: CRUD, compare-and-swap, Calico's
//! key layout (checked with etcdctl, an independent reader), and a dead
//! datastore giving a clear error instead of a hang.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use datastore::{Client, Error, EtcdBackend, EtcdConfig, Key, ListKey};
use ippool_crd::{IPPool, IPPoolSpec};
use tests::EtcdServer;

async fn client(etcd: &EtcdServer) -> Client {
    datastore::connect_etcd(&etcd.endpoint()).await.unwrap()
}

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(
        name,
        IPPoolSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
    )
}

fn etcdctl_get(etcd: &EtcdServer, key: &str) -> String {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "get",
            key,
            "--print-value-only",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn create_get_update_delete_with_compare_and_swap() {
    tests::init_tracing();
    let etcd = EtcdServer::start().unwrap();
    let c = client(&etcd).await;

    let created = c.create(&pool("p1", "10.65.0.0/16")).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.uid.is_some());

    let err = c.create(&pool("p1", "10.66.0.0/16")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");

    let got: IPPool = c.get("p1").await.unwrap().unwrap();
    assert_eq!(got.spec.cidr, "10.65.0.0/16");
    assert_eq!(got.metadata.resource_version.as_deref(), Some(rv1.as_str()));

    // A writer holding the current revision wins; one holding an old one
    // gets a conflict and nothing changes.
    let mut a = got.clone();
    a.spec.nat_outgoing = Some(true);
    let a = c.update(&a).await.unwrap();
    let mut stale = got.clone();
    stale.spec.disabled = Some(true);
    let err = c.update(&stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let now: IPPool = c.get("p1").await.unwrap().unwrap();
    assert_eq!(now.spec.nat_outgoing, Some(true));
    assert_ne!(now.spec.disabled, Some(true));
    assert_eq!(now.metadata.resource_version, a.metadata.resource_version);

    // Update without a resourceVersion is refused with advice.
    let mut blind = now.clone();
    blind.metadata.resource_version = None;
    let err = c.update(&blind).await.unwrap_err();
    assert!(err.to_string().contains("read it first"), "{err}");

    // Conditional delete.
    let old_rev = datastore::Revision(rv1);
    let err = c.delete::<IPPool>("p1", Some(&old_rev)).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let cur = datastore::Revision(now.metadata.resource_version.unwrap());
    c.delete::<IPPool>("p1", Some(&cur)).await.unwrap();
    assert!(c.get::<IPPool>("p1").await.unwrap().is_none());
    let err = c.delete::<IPPool>("p1", None).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let mut gone = a.clone();
    gone.metadata.resource_version = Some("1".into());
    let err = c.update(&gone).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn resources_and_ipam_use_calicos_etcd_layout() {
    let etcd = EtcdServer::start().unwrap();
    let c = client(&etcd).await;
    c.create(&pool("default-ipv4-ippool", "192.168.0.0/16"))
        .await
        .unwrap();
    let raw = etcdctl_get(
        &etcd,
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool",
    );
    let v: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(v["apiVersion"], "projectcalico.org/v3");
    assert_eq!(v["kind"], "IPPool");
    assert_eq!(v["spec"]["cidr"], "192.168.0.0/16");

    let key = Key::Affinity {
        host: "node-1".into(),
        cidr: "192.168.0.64/26".parse().unwrap(),
    };
    let aff = ippool_crd::BlockAffinitySpec {
        state: ippool_crd::AffinityState::Confirmed,
        node: "node-1".into(),
        cidr: "192.168.0.64/26".into(),
        deleted: false,
        affinity_type: None,
    };
    c.create_value(&key, &aff).await.unwrap();
    let raw = etcdctl_get(
        &etcd,
        "/calico/ipam/v2/host/node-1/ipv4/block/192.168.0.64-26",
    );
    let v: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"state": "confirmed", "deleted": false})
    );
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
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, key);
}

#[tokio::test]
async fn lists_are_complete_across_pages() {
    let etcd = EtcdServer::start().unwrap();
    let c = client(&etcd).await;
    // More than one page (500) of handles.
    let n = 1_203;
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
    assert_eq!(all[0].1.value.handle_id, "h00000");
    assert_eq!(all[n - 1].1.value.handle_id, format!("h{:05}", n - 1));
}

#[tokio::test]
async fn corrupt_values_are_skipped_in_lists_and_reported_on_get() {
    let etcd = EtcdServer::start().unwrap();
    let c = client(&etcd).await;
    c.create(&pool("good", "10.1.0.0/16")).await.unwrap();
    let st = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.endpoint(),
            "put",
            "/calico/resources/v3/projectcalico.org/ippools/bad",
            "{not json",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let pools: Vec<IPPool> = c.list().await.unwrap();
    assert_eq!(pools.len(), 1, "the good pool is still listed");
    let err = c.get::<IPPool>("bad").await.unwrap_err();
    assert!(err.to_string().contains("IPPool \"bad\""), "{err}");
}

#[tokio::test]
async fn names_that_would_escape_their_key_are_refused() {
    let etcd = EtcdServer::start().unwrap();
    let c = client(&etcd).await;
    let err = c
        .create(&pool("../nodes/x", "10.0.0.0/16"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey(_)), "{err}");
}

#[tokio::test]
async fn a_dead_datastore_is_a_clear_error_not_a_hang() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = EtcdConfig::new([format!("http://127.0.0.1:{port}")]);
    cfg.request_timeout = Duration::from_secs(2);
    let c = Client::new(EtcdBackend::connect(cfg).await.unwrap());
    let t = Instant::now();
    let err = c.get::<IPPool>("x").await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("ETCD_ENDPOINTS"), "{err}");
    assert!(err.is_transient());
}
