//! confd's datastore sync against a real etcd.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use confd::secret_watch::SecretSource;
use confd::sync::{self, Published, SyncOptions};
use confd::{NodeConfig, PeerKind};
use datastore::Client;
use datastore::ipam::{AssignRequest, Ipam};
use ippool_crd::{BGPPeer, IPPool, Node};
use serde_json::json;
use tests::EtcdServer;
use tokio::sync::watch;

fn node(name: &str, ip: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"bgp": {"ipv4Address": ip}},
    }))
    .unwrap()
}

async fn create_basics(c: &Client) {
    c.create(&node("node-1", "10.0.0.1/24")).await.unwrap();
    c.create(&node("node-2", "10.0.0.2/24")).await.unwrap();
    let pool: IPPool = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.65.0.0/16", "ipipMode": "CrossSubnet", "natOutgoing": true},
    }))
    .unwrap();
    c.create(&pool).await.unwrap();
}

/// Waits (bounded) for a published config satisfying `pred`.
async fn wait_for(
    rx: &mut watch::Receiver<Published>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&NodeConfig) -> bool,
) -> NodeConfig {
    let deadline = Instant::now() + timeout;
    loop {
        if let Published::Config(c) = &*rx.borrow_and_update()
            && pred(c)
        {
            return (**c).clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!(
                "timed out after {timeout:?} waiting for {what}; last: {:?}",
                *rx.borrow()
            ),
        }
    }
}

fn has_peer(c: &NodeConfig, addr: &str) -> bool {
    c.bgp.peers.iter().any(|p| p.address.to_string() == addr)
}

#[tokio::test]
async fn confd_publishes_a_complete_config_and_follows_changes_quickly() {
    tests::init_tracing();
    let mut etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    create_basics(&c).await;

    let s = sync::start(
        c.clone(),
        SyncOptions {
            node: "node-1".into(),
            secrets: SecretSource::None,
            services: None,
            router_id: None,
        },
    );
    let mut rx = s.subscribe();
    // The very first configuration is already complete: it has the mesh
    // peer (nothing half-synced is ever published).
    let first = wait_for(&mut rx, "first config", Duration::from_secs(10), |_| true).await;
    assert!(has_peer(&first, "10.0.0.2"), "{first:?}");
    assert_eq!(first.bgp.peers[0].kind, PeerKind::Mesh);
    assert_eq!(first.felix.pools.len(), 1);
    assert!(first.bgp.advertise.is_empty());

    // A new BGPPeer reaches the config well under a second.
    let tor: BGPPeer = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {"peerIP": "10.0.0.254", "asNumber": 65001},
    }))
    .unwrap();
    let t = Instant::now();
    c.create(&tor).await.unwrap();
    wait_for(&mut rx, "the ToR peer", Duration::from_secs(5), |c| {
        has_peer(c, "10.0.0.254")
    })
    .await;
    let took = t.elapsed();
    println!("BGPPeer create -> new config: {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");

    // A confirmed block of this node is advertised.
    let ipam = Ipam::new(c.clone());
    let a = ipam
        .auto_assign(&AssignRequest {
            handle: "h".into(),
            host: "node-1".into(),
            num_v4: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let cfg = wait_for(&mut rx, "the block", Duration::from_secs(5), |c| {
        !c.bgp.advertise.is_empty()
    })
    .await;
    assert!(cfg.bgp.advertise[0].contains(a.v4[0]));
    assert_eq!(cfg.felix.local_blocks, cfg.bgp.advertise);

    // etcd dies: the last config stays; when it is back, changes flow again.
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(&*rx.borrow(), Published::Config(_)));
    etcd.restart().unwrap();
    let c2 = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c2.delete::<Node>("node-2", None).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    wait_for(&mut rx, "node-2 gone", Duration::from_secs(30), |c| {
        !has_peer(c, "10.0.0.2")
    })
    .await;
}

#[tokio::test]
async fn an_unregistered_node_is_reported_not_guessed() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    create_basics(&c).await;
    let s = sync::start(
        c,
        SyncOptions {
            node: "ghost".into(),
            secrets: SecretSource::None,
            services: None,
            router_id: None,
        },
    );
    let mut rx = s.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Published::Error(e) = &*rx.borrow_and_update() {
            assert!(e.contains("not registered"), "{e}");
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, rx.changed())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn bgp_passwords_are_read_from_the_secrets_directory() {
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    create_basics(&c).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bgp-secrets")).unwrap();
    std::fs::write(dir.path().join("bgp-secrets/other"), "x\n").unwrap();
    let tor: BGPPeer = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": {"name": "tor"},
        "spec": {"peerIP": "10.0.0.254", "asNumber": 65001,
                 "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}}},
    }))
    .unwrap();
    c.create(&tor).await.unwrap();
    let s = sync::start(
        c,
        SyncOptions {
            node: "node-1".into(),
            secrets: SecretSource::Dir(dir.path().to_path_buf()),
            services: None,
            router_id: None,
        },
    );
    let mut rx = s.subscribe();
    let tor_of = |c: &NodeConfig| {
        c.bgp
            .peers
            .iter()
            .find(|p| p.address.to_string() == "10.0.0.254")
            .cloned()
    };
    // The key is missing: the peer is held down, with the file it wants.
    let cfg = wait_for(&mut rx, "config", Duration::from_secs(10), |c| {
        tor_of(c).is_some()
    })
    .await;
    let p = tor_of(&cfg).unwrap();
    assert_eq!(p.password, None);
    let why = p.password_unavailable.unwrap();
    assert_eq!(
        why,
        format!(
            "password secret {} has no key 'tor': session held down",
            dir.path().join("bgp-secrets").display()
        )
    );
    // The file appears (kubelet updating a mounted Secret): the peer gets
    // its password with nothing else changing in the datastore.
    std::fs::write(dir.path().join("bgp-secrets/tor"), "hunter2\n").unwrap();
    let cfg = wait_for(&mut rx, "the password", Duration::from_secs(10), |c| {
        tor_of(c).is_some_and(|p| p.password.is_some())
    })
    .await;
    let p = tor_of(&cfg).unwrap();
    assert_eq!(p.password.as_deref(), Some("hunter2"));
    assert_eq!(p.password_unavailable, None);
}
