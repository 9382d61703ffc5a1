//! confd run as calico-node runs it, against a real API server, pushing
//! to a recording BgpConfigService: what each push carried.

use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};

use proto::bgpconfig::bgp_config_service_server::{BgpConfigService, BgpConfigServiceServer};
use proto::bgpconfig::{ApplyBgpConfigReply, BgpConfig};
use tests::kube::KubeServer;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<BgpConfig>>>);

#[tonic::async_trait]
impl BgpConfigService for Recorder {
    async fn apply(
        &self,
        req: Request<BgpConfig>,
    ) -> Result<Response<ApplyBgpConfigReply>, Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ApplyBgpConfigReply::default()))
    }
}

impl Recorder {
    pub fn all(&self) -> Vec<BgpConfig> {
        self.0.lock().unwrap().clone()
    }
}

pub async fn serve_recorder(path: &Path, rec: Recorder) -> tokio::sync::oneshot::Sender<()> {
    let listener = proto::uds::bind(path).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder().add_service(BgpConfigServiceServer::new(rec));
    let p = path.to_path_buf();
    tokio::spawn(async move {
        let _ = proto::uds::serve(router, listener, &p, async {
            let _ = rx.await;
        })
        .await;
    });
    tx
}

pub struct Confd(pub Child);
impl Drop for Confd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn confd_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("confd")
}

pub fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)).unwrap()
}

pub fn apply(k: &KubeServer, yaml: &str) {
    let out = k.apply(yaml).unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
