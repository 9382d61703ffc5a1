//! A real Kubernetes control plane — `kube-apiserver` and
//! `kube-controller-manager` built from the pinned Kubernetes release
//! (`scripts/k8s-build.sh`) — for the tests and the lab's Kubernetes mode.
//!
//! [`prepare`] writes everything the two processes read (a CA, the API
//! server's serving certificate, the service-account signing key, a token
//! file with the admin identity, kubeconfigs) and returns their command
//! lines; the caller decides how they run (children of a test, or
//! detached processes of the lab in a namespace of their own). Then
//! [`ControlPlane::wait_ready`] polls `/readyz` with the built `kubectl`.
//!
//! The server is set up as a cluster operator's would be: secure port
//! only, RBAC (and the Node authorizer) on, a CA clients verify against,
//! bound service-account tokens (TokenRequest), privileged containers
//! allowed (the calico-node DaemonSet needs them).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::netns::LabError;

/// The first address of the service range: the `kubernetes` Service.
const SERVICE_CIDR: &str = "10.96.0.0/16";
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// What a control plane needs to be set up.
#[derive(Debug, Clone)]
pub struct ControlPlaneSpec {
    /// Where `kube-apiserver`, `kube-controller-manager` and `kubectl` are.
    pub bin_dir: PathBuf,
    /// Certificates, keys, tokens and kubeconfigs go here (created, 0700).
    pub dir: PathBuf,
    /// etcd's client URL(s), comma-separated.
    pub etcd_endpoints: String,
    /// The API server binds, and advertises, this address.
    pub address: IpAddr,
    pub port: u16,
}

/// The files and command lines of a control plane, ready to start. The
/// lab records it in its state file to start the API server again; the
/// admin token stays out of that file (it is in the admin kubeconfig and
/// the token file, both readable by their owner only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControlPlane {
    pub bin_dir: PathBuf,
    pub dir: PathBuf,
    /// `https://<address>:<port>`.
    pub url: String,
    /// The CA every client verifies the server with (PEM).
    pub ca_pem: String,
    /// A bearer token of `system:masters`.
    #[serde(skip)]
    pub admin_token: String,
    /// A kubeconfig for the admin (`kubectl --kubeconfig`, kube-rs).
    pub admin_kubeconfig: PathBuf,
    pub apiserver_args: Vec<String>,
    pub controller_manager_args: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pki(e: rcgen::Error) -> LabError {
    LabError::Topology(format!("control plane certificates: {e}"))
}

/// Writes `data` readable by its owner only (keys, tokens).
fn write_private(path: &Path, data: &str) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data.as_bytes()).map_err(io(path))
}

/// 32 random bytes as hex, from the kernel.
fn random_token() -> Result<String, LabError> {
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 32];
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io(path))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A kubeconfig for `user` authenticating with `token` against `url`,
/// verifying the server with `ca_pem`.
pub fn kubeconfig(url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use std::fmt::Write;
    let mut ca_b64 = String::new();
    base64(ca_pem.as_bytes(), &mut ca_b64);
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: calico-rs\n  \
           cluster:\n    \
             server: {url}\n    \
             certificate-authority-data: {ca_b64}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: {user}\n  \
           context:\n    \
             cluster: calico-rs\n    \
             user: {user}\n\
         current-context: {user}\n"
    );
    s
}

/// Standard base64 with padding (kubeconfig's `*-data` fields).
fn base64(data: &[u8], out: &mut String) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// Creates `spec.dir` with the control plane's PKI, token file and
/// kubeconfigs, and returns the command lines to run.
pub fn prepare(spec: &ControlPlaneSpec) -> Result<ControlPlane, LabError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &spec.dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;

    // The cluster CA.
    let ca_key = KeyPair::generate().map_err(pki)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "calico-rs lab CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(pki)?;
    let ca = Issuer::new(ca_params, ca_key);

    // The API server's serving certificate: every name a client in the
    // lab or a pod may use.
    let server_key = KeyPair::generate().map_err(pki)?;
    let mut server_params = CertificateParams::new(vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        "localhost".to_string(),
    ])
    .map_err(pki)?;
    for ip in [
        spec.address,
        IpAddr::from([127, 0, 0, 1]),
        KUBERNETES_SERVICE_IP
            .parse()
            .map_err(|_| LabError::Topology("bad service address".into()))?,
    ] {
        server_params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &ca).map_err(pki)?;

    // Signs and verifies service-account tokens (ECDSA P-256, PKCS#8).
    let sa_key = KeyPair::generate().map_err(pki)?;

    let ca_pem = ca_cert.pem();
    let file = |name: &str| dir.join(name);
    std::fs::write(file("ca.crt"), &ca_pem).map_err(io(&file("ca.crt")))?;
    write_private(&file("ca.key"), &ca.key().serialize_pem())?;
    std::fs::write(file("apiserver.crt"), server_cert.pem()).map_err(io(&file("apiserver.crt")))?;
    write_private(&file("apiserver.key"), &server_key.serialize_pem())?;
    write_private(&file("sa.key"), &sa_key.serialize_pem())?;
    std::fs::write(file("sa.pub"), sa_key.public_key_pem()).map_err(io(&file("sa.pub")))?;

    let admin_token = random_token()?;
    write_private(
        &file("tokens.csv"),
        &format!("{admin_token},admin,admin,\"system:masters\"\n"),
    )?;
    let url = match spec.address {
        IpAddr::V4(a) => format!("https://{a}:{}", spec.port),
        IpAddr::V6(a) => format!("https://[{a}]:{}", spec.port),
    };
    let admin_kubeconfig = file("admin.kubeconfig");
    write_private(
        &admin_kubeconfig,
        &kubeconfig(&url, &ca_pem, "admin", &admin_token),
    )?;

    let path = |name: &str| file(name).display().to_string();
    let apiserver_args = vec![
        format!("--etcd-servers={}", spec.etcd_endpoints),
        format!("--bind-address={}", spec.address),
        format!("--advertise-address={}", spec.address),
        format!("--secure-port={}", spec.port),
        format!("--tls-cert-file={}", path("apiserver.crt")),
        format!("--tls-private-key-file={}", path("apiserver.key")),
        format!("--client-ca-file={}", path("ca.crt")),
        format!("--token-auth-file={}", path("tokens.csv")),
        "--authorization-mode=Node,RBAC".to_string(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
        format!("--service-account-key-file={}", path("sa.pub")),
        format!("--service-account-signing-key-file={}", path("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--allow-privileged=true".to_string(),
        "--profiling=false".to_string(),
    ];
    let controller_manager_args = vec![
        format!("--kubeconfig={}", admin_kubeconfig.display()),
        format!("--authentication-kubeconfig={}", admin_kubeconfig.display()),
        format!("--authorization-kubeconfig={}", admin_kubeconfig.display()),
        format!("--service-account-private-key-file={}", path("sa.key")),
        format!("--root-ca-file={}", path("ca.crt")),
        format!("--cluster-signing-cert-file={}", path("ca.crt")),
        format!("--cluster-signing-key-file={}", path("ca.key")),
        "--leader-elect=false".to_string(),
        "--bind-address=127.0.0.1".to_string(),
        "--secure-port=0".to_string(),
        "--profiling=false".to_string(),
    ];
    Ok(ControlPlane {
        bin_dir: spec.bin_dir.clone(),
        dir: dir.clone(),
        url,
        ca_pem,
        admin_token,
        admin_kubeconfig,
        apiserver_args,
        controller_manager_args,
    })
}

impl ControlPlane {
    pub fn apiserver_bin(&self) -> PathBuf {
        self.bin_dir.join("kube-apiserver")
    }

    pub fn controller_manager_bin(&self) -> PathBuf {
        self.bin_dir.join("kube-controller-manager")
    }

    pub fn kubectl_bin(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// `kubectl --kubeconfig <admin> ARGS` (in namespace `ns`, if given).
    pub fn kubectl(&self, ns: Option<&str>, args: &[&str]) -> Command {
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(self.kubectl_bin());
                c
            }
            None => Command::new(self.kubectl_bin()),
        };
        c.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// A kubeconfig for `user` with `token` (a ServiceAccount's, say).
    pub fn kubeconfig_for(&self, user: &str, token: &str) -> String {
        kubeconfig(&self.url, &self.ca_pem, user, token)
    }

    /// Polls `/readyz` (every 200 ms, for at most `limit`) until the API
    /// server answers `ok`; `alive` says whether its process still runs.
    pub fn wait_ready(
        &self,
        ns: Option<&str>,
        limit: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<Duration, LabError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            if !alive() {
                return Err(LabError::Topology(format!(
                    "kube-apiserver exited during start-up; see its log in {}",
                    self.dir.display()
                )));
            }
            if let Ok(out) = self.kubectl(ns, &["get", "--raw", "/readyz"]).output() {
                if out.status.success() && out.stdout.starts_with(b"ok") {
                    return Ok(start.elapsed());
                }
                last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::Topology(format!(
            "kube-apiserver at {} not ready within {} s: {last}",
            self.url,
            limit.as_secs()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_as_the_standard_says() {
        let enc = |s: &str| {
            let mut o = String::new();
            base64(s.as_bytes(), &mut o);
            o
        };
        assert_eq!(enc(""), "");
        assert_eq!(enc("f"), "Zg==");
        assert_eq!(enc("fo"), "Zm8=");
        assert_eq!(enc("foo"), "Zm9v");
        assert_eq!(enc("foobar"), "Zm9vYmFy");
    }

    #[test]
    fn prepare_writes_private_keys_and_a_kubeconfig_naming_the_server() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::env::temp_dir().join(format!("calico-rs-kube-test-{}", std::process::id()));
        let spec = ControlPlaneSpec {
            bin_dir: PathBuf::from("/nonexistent"),
            dir: tmp.clone(),
            etcd_endpoints: "http://127.0.0.1:2379".into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 6443,
        };
        let cp = prepare(&spec).unwrap();
        let mode = |f: &str| std::fs::metadata(tmp.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("sa.key"), 0o600);
        assert_eq!(mode("tokens.csv"), 0o600);
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(cp.url, "https://127.0.0.1:6443");
        let kc = std::fs::read_to_string(&cp.admin_kubeconfig).unwrap();
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        assert!(kc.contains(&format!("token: {}", cp.admin_token)));
        assert!(
            cp.apiserver_args
                .iter()
                .any(|a| a == "--authorization-mode=Node,RBAC")
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
