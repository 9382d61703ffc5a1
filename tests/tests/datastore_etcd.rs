//! What is particular to the etcd backend, against a real etcd: Calico's
//! key layout (checked with etcdctl, an independent reader), corrupt
//! values, and a dead datastore giving a clear error instead of a hang.
//! CRUD, compare-and-swap, paging, watches and IPAM are in
//! `datastore_conformance.rs`, run on both backends.
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
