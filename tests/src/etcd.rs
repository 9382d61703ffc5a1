//! A real etcd (Debian's `etcd-server`) for one test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long etcd may take to answer /health after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct EtcdServer {
    /// Debian's `etcd` (3.4) unless the caller names another build.
    binary: PathBuf,
    dir: tempfile::TempDir,
    ip: std::net::IpAddr,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port(ip: std::net::IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// A RAM-backed directory when there is one: etcd fsyncs every write, and
/// tests do thousands of them.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it is healthy.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
    }

    /// Starts etcd listening on `ip` (an address of the calling thread's
    /// network namespace, so other lab namespaces can reach it).
    pub fn start_on(ip: std::net::IpAddr) -> anyhow::Result<Self> {
        Self::start_binary(Path::new("etcd"), ip)
    }

    /// Starts the etcd at `binary` (the 3.6 that scripts/k8s-build.sh
    /// builds for kube-apiserver, say) on `ip`.
    pub fn start_binary(binary: &Path, ip: std::net::IpAddr) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("calico-rs-etcd-")
            .tempdir_in(scratch_root())
            .context("creating etcd data directory")?;
        let mut s = EtcdServer {
            binary: binary.to_path_buf(),
            dir,
            ip,
            client_port: 0,
            peer_port: 0,
            child: None,
        };
        // A free port can be taken by a parallel test between our probe
        // and etcd's bind: then try again on other ports (bounded).
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            s.client_port = free_port(ip)?;
            s.peer_port = free_port(ip)?;
            if s.peer_port == s.client_port {
                continue;
            }
            match s.spawn() {
                Ok(()) => return Ok(s),
                Err(e)
                    if attempt < ATTEMPTS && e.to_string().contains("address already in use") =>
                {
                    let _ = std::fs::remove_dir_all(s.data_dir());
                }
                Err(e) => return Err(e),
            }
        }
        bail!("etcd found no free ports in {ATTEMPTS} attempts")
    }

    /// `http://<ip>:<port>`, as ETCD_ENDPOINTS takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let client = self.endpoint();
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))?;
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (is the etcd-server package installed? scripts/install-deps.sh installs it)")?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("etcd exited at start ({status}); log:\n{}", self.log());
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "etcd not healthy after {START_TIMEOUT:?}; log:\n{}",
            self.log()
        )
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect((self.ip, self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// What etcd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// SIGKILL, like a crash or an OOM kill: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
