//! The `confd` binary against a real etcd, pushing to a recording
//! BgpConfigService on a Unix socket; and its one-shot `render`.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::confd::{Confd, Recorder, confd_bin, serve_recorder};

use ippool_crd::{BGPPeer, IPPool, Node};
use proto::bgpconfig::BgpConfig;
use serde_json::json;
use tests::EtcdServer;

fn build_confd() {
    // All node binaries in one invocation: the same dependency builds the
    // other tests use, instead of a confd-only feature set.
    tests::agent::build_node_binaries(false).unwrap();
}

async fn seed(c: &datastore::Client) {
    for (name, ip) in [("node-1", "10.0.0.1/24"), ("node-2", "10.0.0.2/24")] {
        let n: Node = serde_json::from_value(json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": ip}},
        }))
        .unwrap();
        c.create(&n).await.unwrap();
    }
    let pool: IPPool = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16"},
    }))
    .unwrap();
    c.create(&pool).await.unwrap();
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peers_of(c: &BgpConfig) -> Vec<String> {
    c.peers.iter().map(|p| p.name.clone()).collect()
}

#[tokio::test]
async fn confd_pushes_config_to_bird_and_repushes_after_a_restart() {
    tests::init_tracing();
    build_confd();
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    seed(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let bird_sock = dir.path().join("bird.sock");
    let render = dir.path().join("confd/config.txt");
    let rec = Recorder::default();
    let stop = serve_recorder(&bird_sock, rec.clone()).await;

    let _confd = Confd(
        Command::new(confd_bin())
            .args([
                "run",
                "--node",
                "node-1",
                "--etcd-endpoints",
                &etcd.endpoint(),
            ])
            .arg("--bird-socket")
            .arg(&bird_sock)
            .arg("--felix-socket")
            .arg(dir.path().join("felix.sock"))
            .arg("--render-file")
            .arg(&render)
            .arg("--socket")
            .arg(dir.path().join("confd.sock"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let r = rec.clone();
    wait_until("first push", Duration::from_secs(20), || {
        r.all()
            .last()
            .is_some_and(|c| peers_of(c) == ["Mesh_10_0_0_2"])
    })
    .await;
    let first = rec.all()[0].clone();
    assert_eq!(first.asn, 64512);
    assert_eq!(first.node, "node-1");

    // A change in the datastore reaches bird well under a second.
    let tor: BGPPeer = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BGPPeer",
        "metadata": {"name": "tor"}, "spec": {"peerIP": "10.0.0.254", "asNumber": 65001},
    }))
    .unwrap();
    let t = Instant::now();
    c.create(&tor).await.unwrap();
    let r = rec.clone();
    wait_until("the ToR in a push", Duration::from_secs(5), || {
        r.all()
            .last()
            .is_some_and(|c| peers_of(c).contains(&"Global_10_0_0_254".to_string()))
    })
    .await;
    let took = t.elapsed();
    println!("datastore change -> pushed to bird: {took:?}");
    assert!(took < Duration::from_millis(900), "{took:?}");

    // The rendering is on disk for an operator.
    let text = std::fs::read_to_string(&render).unwrap();
    assert!(text.contains("Global_10_0_0_254"), "{text}");

    // bird restarts (a new process, nothing configured): it is sent the
    // config again without any datastore change.
    drop(stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rec2 = Recorder::default();
    let _stop2 = serve_recorder(&bird_sock, rec2.clone()).await;
    let r = rec2.clone();
    wait_until("re-push after restart", Duration::from_secs(10), || {
        r.all().last().is_some_and(|c| peers_of(c).len() == 2)
    })
    .await;
}

#[tokio::test]
async fn confd_render_prints_the_nodes_config() {
    build_confd();
    let etcd = EtcdServer::start().unwrap();
    let c = datastore::connect_etcd(&etcd.endpoint()).await.unwrap();
    seed(&c).await;
    let out = Command::new(confd_bin())
        .args([
            "render",
            "--node",
            "node-2",
            "--etcd-endpoints",
            &etcd.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("router id      10.0.0.2"), "{text}");
    assert!(text.contains("Mesh_10_0_0_1"), "{text}");

    // An unknown node: a clear error and a non-zero exit.
    let out = Command::new(confd_bin())
        .args([
            "render",
            "--node",
            "ghost",
            "--etcd-endpoints",
            &etcd.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
}
