//! confd run as calico-node runs it, against a real API server, pushing
//! to a recording BgpConfigService: what each push carried.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

    /// Waits (up to 30 s, polling every 20 ms) for the last push to
    /// satisfy `pred`, and returns it; on timeout panics with `what`, the
    /// last push as `show` renders it, and confd's `log`.
    pub async fn wait_last(
        &self,
        what: &str,
        pred: impl Fn(&BgpConfig) -> bool,
        show: impl Fn(&BgpConfig) -> String,
        log: &Path,
    ) -> BgpConfig {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(c) = self.all().last()
                && pred(c)
            {
                return c.clone();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last push: {:?}\nconfd log:\n{}",
                    self.all().last().map(&show),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// A core/v1 Node with Calico's IPv4 address annotation, as YAML ending
/// in a document separator.
pub fn kube_node(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    \
         projectcalico.org/IPv4Address: {ip}\n---\n"
    )
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

/// The namespace calico-node runs in (its ServiceAccount, its Secrets).
pub const CALICO_NS: &str = "kube-system";

/// A real API server with `deploy/crds.yaml` (established) and
/// `deploy/calico-node.yaml` applied.
pub fn kube_with_calico() -> KubeServer {
    let k = KubeServer::start().unwrap();
    apply(&k, &repo_file("deploy/crds.yaml"));
    k.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ])
    .unwrap();
    apply(&k, &repo_file("deploy/calico-node.yaml"));
    k
}

/// The `confd` binary run for `node` as calico-node runs it: Kubernetes
/// mode with the calico-node ServiceAccount's token and nothing more,
/// pushing to [`RunningConfd::rec`]. Stops when dropped.
pub struct RunningConfd {
    pub rec: Recorder,
    /// Its stdout (the log).
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
    _confd: Confd,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn start_confd(k: &KubeServer, node: &str) -> RunningConfd {
    let token = k.service_account_token(CALICO_NS, "calico-node").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, k.cp.kubeconfig_for("calico-node", &token)).unwrap();
    let bird_sock = dir.path().join("bird.sock");
    let rec = Recorder::default();
    let stop = serve_recorder(&bird_sock, rec.clone()).await;
    let log = dir.path().join("confd.log");
    let confd = Confd(
        Command::new(confd_bin())
            .args(["run", "--node", node, "--bird-socket"])
            .arg(&bird_sock)
            .arg("--felix-socket")
            .arg(dir.path().join("felix.sock"))
            .arg("--render-file")
            .arg(dir.path().join("config.txt"))
            .arg("--socket")
            .arg(dir.path().join("confd.sock"))
            .env("DATASTORE_TYPE", "kubernetes")
            .env("KUBECONFIG", &kubeconfig)
            // A pod reads its namespace from its service account; this
            // process runs outside one.
            .env("CALICO_BGP_SECRETS_NAMESPACE", CALICO_NS)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("confd.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    RunningConfd {
        rec,
        log,
        dir,
        _confd: confd,
        _stop: stop,
    }
}
