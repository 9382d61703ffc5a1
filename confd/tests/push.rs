//! The pusher against a recording BgpConfigService on a Unix socket: a
//! configuration is sent once, a change promptly, and a restarted bird is
//! configured again without anything changing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confd::push::{self, Target};
use confd::sync::Published;
use confd::{BgpConfig, FelixConfig, NodeConfig};
use proto::bgpconfig::bgp_config_service_server::{BgpConfigService, BgpConfigServiceServer};
use proto::bgpconfig::{ApplyBgpConfigReply, BgpConfig as WireBgpConfig};
use proto::uds::ServerTask;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<WireBgpConfig>>>);

impl Recorder {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn last_asn(&self) -> Option<u32> {
        self.0.lock().unwrap().last().map(|c| c.asn)
    }
}

#[tonic::async_trait]
impl BgpConfigService for Recorder {
    async fn apply(
        &self,
        req: Request<WireBgpConfig>,
    ) -> Result<Response<ApplyBgpConfigReply>, Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ApplyBgpConfigReply::default()))
    }
}

async fn serve(path: &Path, rec: Recorder) -> ServerTask {
    ServerTask::spawn(
        tonic::transport::Server::builder().add_service(BgpConfigServiceServer::new(rec)),
        proto::uds::bind(path).await.unwrap(),
        path.to_path_buf(),
    )
}

fn config(asn: u32, nat: bool) -> Published {
    let pool: ippool_crd::IPPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16", "natOutgoing": nat},
    }))
    .unwrap();
    let pool = pool.config().unwrap();
    Published::Config(Box::new(NodeConfig {
        bgp: BgpConfig {
            node: "node-1".into(),
            router_id: "10.0.0.1".parse().unwrap(),
            asn,
            listen_port: 179,
            rr_cluster_id: None,
            mesh_enabled: true,
            peers: vec![],
            advertise: vec![],
            pool_cidrs: vec![pool.cidr],
            listen_address: None,
            listen_address_v6: None,
            log_severity: "Info".into(),
            ignored_interfaces: vec![],
            prefix_communities: vec![],
            invalid_prefix_advertisements: vec![],
        },
        felix: FelixConfig {
            node: "node-1".into(),
            node_ip: Some("10.0.0.1/24".parse().unwrap()),
            pools: vec![pool],
            invalid_pools: vec![],
            local_blocks: vec![],
            ipip_tunnel_addr: None,
            vxlan: None,
            vteps: vec![],
            node_ipv6: None,
            vxlan_v6: None,
            vteps_v6: vec![],
            peer_routes: vec![],
        },
    }))
}

async fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn bird_gets_each_configuration_once_and_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bird.sock");
    let rec = Recorder::default();
    let server = serve(&sock, rec.clone()).await;
    let (tx, rx) = watch::channel(Published::Syncing);
    let pusher = tokio::spawn(push::deliver(Target::Bird, sock.clone(), rx));

    // Nothing is sent before there is a configuration.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rec.count(), 0);

    tx.send_replace(config(64512, false));
    wait_until("the first push", Duration::from_secs(5), || {
        rec.count() == 1
    })
    .await;
    // A configuration that does not change is not sent again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(rec.count(), 1, "sent once");

    // A change to felix's half only is not bird's business.
    tx.send_replace(config(64512, true));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rec.count(), 1, "felix-only change");

    // A change to bird's half arrives promptly.
    tx.send_replace(config(64513, true));
    let took = wait_until("the changed push", Duration::from_secs(5), || {
        rec.last_asn() == Some(64513)
    })
    .await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(rec.count(), 2);

    // bird restarts: a new process on the same socket, with nothing
    // configured. It gets the configuration without any change.
    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rec2 = Recorder::default();
    let _server2 = serve(&sock, rec2.clone()).await;
    let took = wait_until("the push after the restart", Duration::from_secs(5), || {
        rec2.count() == 1
    })
    .await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(rec2.last_asn(), Some(64513));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rec2.count(), 1, "sent once to the new bird too");
    assert_eq!(rec.count(), 2, "nothing more to the old one");

    // The publisher goes away: the pusher ends.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(2), pusher)
        .await
        .unwrap()
        .unwrap();
}
