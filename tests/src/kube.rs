//! A real Kubernetes API server for one test: etcd 3.6, `kube-apiserver`
//! and `kube-controller-manager` from `scripts/k8s-build.sh` (the directory
//! in `CALICO_K8S_BIN`, which `scripts/test.sh` sets), on free loopback
//! ports, set up by [`lab::kube::prepare`]. Everything it started stops
//! when it drops, also while a failing test unwinds.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use lab::kube::{ControlPlane, ControlPlaneSpec};

use crate::EtcdServer;

pub mod wire;
pub use wire::Wire;

/// How long the API server may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory with the Kubernetes binaries.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CALICO_K8S_BIN")
        .map(PathBuf::from)
        .context(
            "CALICO_K8S_BIN is not set: run scripts/test.sh, or export \
         CALICO_K8S_BIN=$(scripts/k8s-build.sh | tail -1)",
        )?;
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
        "etcd",
        "etcdctl",
    ] {
        if !dir.join(b).is_file() {
            bail!(
                "{} has no {b}; rebuild with scripts/k8s-build.sh",
                dir.display()
            );
        }
    }
    Ok(dir)
}

pub struct KubeServer {
    pub cp: ControlPlane,
    pub etcd: EtcdServer,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
    dir: tempfile::TempDir,
}

fn spawn(program: PathBuf, args: &[String], log: PathBuf) -> anyhow::Result<Child> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("{}", log.display()))?;
    Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

impl KubeServer {
    /// etcd, kube-apiserver and kube-controller-manager on loopback; waits
    /// until the API server is ready.
    pub fn start() -> anyhow::Result<KubeServer> {
        let bin = bin_dir()?;
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let etcd = EtcdServer::start_binary(&bin.join("etcd"), localhost)?;
        let dir = tempfile::Builder::new()
            .prefix("calico-rs-kube-")
            .tempdir()?;
        // A port taken between this probe and the server's bind makes the
        // server exit at once: then try another (bounded).
        let mut last = None;
        for _ in 0..5 {
            let port = TcpListener::bind((localhost, 0))?.local_addr()?.port();
            let cp = lab::kube::prepare(&ControlPlaneSpec {
                bin_dir: bin.clone(),
                dir: dir.path().join("pki"),
                etcd_endpoints: etcd.endpoint(),
                address: localhost,
                port,
            })?;
            let mut apiserver = spawn(
                cp.apiserver_bin(),
                &cp.apiserver_args,
                dir.path().join("kube-apiserver.log"),
            )?;
            let ready = cp.wait_ready(None, READY_TIMEOUT, || {
                matches!(apiserver.try_wait(), Ok(None))
            });
            match ready {
                Ok(_) => {
                    let controller_manager = spawn(
                        cp.controller_manager_bin(),
                        &cp.controller_manager_args,
                        dir.path().join("kube-controller-manager.log"),
                    )?;
                    return Ok(KubeServer {
                        cp,
                        etcd,
                        apiserver: Some(apiserver),
                        controller_manager: Some(controller_manager),
                        dir,
                    });
                }
                Err(e) => {
                    let _ = apiserver.kill();
                    let _ = apiserver.wait();
                    last = Some(e);
                }
            }
        }
        let log =
            std::fs::read_to_string(dir.path().join("kube-apiserver.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "kube-apiserver did not start: {}\nlast lines of its log:\n{}",
            last.map(|e| e.to_string()).unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// `kubectl` as the admin; fails the call (not the test) on a non-zero
    /// exit, with kubectl's stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl_output(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl` as the admin, whatever its exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.cp
            .kubectl(None, args)
            .output()
            .context("running kubectl")
    }

    /// `kubectl apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut child = self
            .cp
            .kubectl(None, &["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl apply")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// A kube-rs client as the admin.
    pub async fn admin_client(&self) -> anyhow::Result<kube::Client> {
        self.client_from(&std::fs::read_to_string(&self.cp.admin_kubeconfig)?)
            .await
    }

    /// A kube-rs client from a kubeconfig's text.
    pub async fn client_from(&self, kubeconfig: &str) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// A bound token for ServiceAccount `namespace/name` (TokenRequest,
    /// as kubelet gets one for a pod).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        Ok(self
            .kubectl(&["-n", namespace, "create", "token", name, "--duration=1h"])?
            .trim()
            .to_string())
    }

    /// Installs `deploy/crds.yaml` as an operator does (`kubectl apply`)
    /// and waits until the API server serves every CRD (`Established`):
    /// until then a request for its resource is a 404.
    pub fn install_crds(&self) -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds.yaml");
        let out = self.apply(&std::fs::read_to_string(path).context(path)?)?;
        if !out.status.success() {
            bail!(
                "kubectl apply -f deploy/crds.yaml failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])?;
        Ok(())
    }

    /// The datastore on this API server as the admin (the Kubernetes
    /// backend over kube's HTTPS client).
    pub async fn datastore(
        &self,
        opts: datastore::KubeOptions,
    ) -> anyhow::Result<datastore::Client> {
        Ok(datastore::Client::new(datastore::KubeBackend::new(
            self.admin_client().await?,
            &self.cp.url,
            opts,
        )))
    }

    /// [`Self::datastore`] whose requests a test can see and time
    /// ([`Wire`]).
    pub async fn observed_datastore(
        &self,
        opts: datastore::KubeOptions,
    ) -> anyhow::Result<(datastore::Client, Wire)> {
        let kc = kube::config::Kubeconfig::from_yaml(&std::fs::read_to_string(
            &self.cp.admin_kubeconfig,
        )?)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let wire = Wire::default();
        let client = kube::client::ClientBuilder::try_from(cfg)?
            .with_layer(&wire.layer())
            .build();
        let c = datastore::Client::new(datastore::KubeBackend::new(client, &self.cp.url, opts));
        Ok((c, wire))
    }

    /// Compacts etcd's history up to `revision` (a resourceVersion this
    /// API server handed out: they are etcd revisions), as the API server
    /// itself does every 5 minutes: reads at older revisions then fail.
    pub fn compact_etcd(&self, revision: &str) -> anyhow::Result<()> {
        let out = Command::new(bin_dir()?.join("etcdctl"))
            .args(["--endpoints", &self.etcd.endpoint(), "compact", revision])
            .stdin(Stdio::null())
            .output()
            .context("running etcdctl")?;
        if !out.status.success() {
            bail!(
                "etcdctl compact {revision} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Stops the API server (SIGKILL); etcd and the data stay.
    pub fn kill_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the API server again after [`Self::kill_apiserver`], on the
    /// same port and etcd, and waits until it is ready. Its watch cache
    /// starts empty at the current resourceVersion: a watch from an older
    /// one gets 410 Gone, as after any API server restart.
    pub fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.kill_apiserver();
        let mut apiserver = spawn(
            self.cp.apiserver_bin(),
            &self.cp.apiserver_args,
            self.dir.path().join("kube-apiserver.log"),
        )?;
        let ready = self.cp.wait_ready(None, READY_TIMEOUT, || {
            matches!(apiserver.try_wait(), Ok(None))
        });
        self.apiserver = Some(apiserver);
        ready?;
        Ok(())
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        for c in [self.controller_manager.take(), self.apiserver.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
