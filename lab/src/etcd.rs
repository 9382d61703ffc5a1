//! etcd (Debian's `etcd-server`) for the lab and the tests, started one
//! way: [`EtcdSpec::args`] for its command line, [`wait_healthy`] for its
//! `/health`. `calico-lab up` runs it detached in the lab's etcd namespace
//! (`cluster::procs::start_etcd`); a test runs an [`EtcdServer`], a child
//! process on free ports with its data in a private directory, that the
//! test can kill and restart on the same data.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer `/health` after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(
        "starting etcd (is the etcd-server package installed? scripts/install-deps.sh installs it): {0}"
    )]
    Spawn(#[source] std::io::Error),
    #[error("etcd exited at start ({status}); log {log_file}:\n{log}")]
    Exited {
        status: ExitStatus,
        log_file: PathBuf,
        log: String,
    },
    #[error("etcd not healthy after {timeout:?}; log {log_file}:\n{log}")]
    NotHealthy {
        timeout: Duration,
        log_file: PathBuf,
        log: String,
    },
    #[error("etcd found no free ports in {0} attempts")]
    NoFreePorts(usize),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl EtcdError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EtcdError + '_ {
        move |source| EtcdError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One single-member etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdSpec<'a> {
    pub name: &'a str,
    pub data_dir: &'a Path,
    /// Where clients connect (`ETCD_ENDPOINTS`).
    pub client: SocketAddr,
    /// Where the (only) member listens for peers.
    pub peer: SocketAddr,
    /// `error` for tests (quiet), `warn` for the lab.
    pub log_level: &'a str,
    /// `--unsafe-no-fsync` (etcd 3.5 and newer only): writes reach the
    /// page cache, not the disk, before etcd answers. For data that must
    /// not outlive the machine anyway, on a disk too busy to sync in time.
    pub no_fsync: bool,
}

impl EtcdSpec<'_> {
    /// etcd's command line.
    pub fn args(&self) -> Vec<String> {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={}={peer}", self.name),
            "--initial-cluster-state=new".to_string(),
            "--logger=zap".to_string(),
            format!("--log-level={}", self.log_level),
        ]
        .into_iter()
        .chain(self.no_fsync.then(|| "--unsafe-no-fsync".to_string()))
        .collect()
    }
}

/// Whether etcd at `addr` answers `GET /health` with healthy (from the
/// calling thread's network namespace).
pub fn is_healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// Waits until etcd at `addr` is healthy. `exited` says whether the
/// process has ended meanwhile (then waiting is pointless); `log_file` is
/// quoted in the error.
pub fn wait_healthy(
    addr: SocketAddr,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<ExitStatus>,
    log_file: &Path,
) -> Result<(), EtcdError> {
    let log = || std::fs::read_to_string(log_file).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = exited() {
            return Err(EtcdError::Exited {
                status,
                log_file: log_file.to_path_buf(),
                log: log(),
            });
        }
        if is_healthy(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(EtcdError::NotHealthy {
        timeout,
        log_file: log_file.to_path_buf(),
        log: log(),
    })
}

/// A real etcd for one test, killed when dropped.
pub struct EtcdServer {
    /// Debian's `etcd` (3.4) unless the caller names another build.
    binary: PathBuf,
    dir: tempfile::TempDir,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port(ip: IpAddr) -> std::io::Result<u16> {
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
    pub fn start() -> Result<Self, EtcdError> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Starts etcd listening on `ip` (an address of the calling thread's
    /// network namespace, so other lab namespaces can reach it).
    pub fn start_on(ip: IpAddr) -> Result<Self, EtcdError> {
        Self::start_binary(Path::new("etcd"), ip)
    }

    /// Starts the etcd at `binary` (the 3.6 that scripts/k8s-build.sh
    /// builds for kube-apiserver, say) on `ip`.
    pub fn start_binary(binary: &Path, ip: IpAddr) -> Result<Self, EtcdError> {
        let root = scratch_root();
        let dir = tempfile::Builder::new()
            .prefix("calico-rs-etcd-")
            .tempdir_in(&root)
            .map_err(EtcdError::io(&root))?;
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
            s.client_port = free_port(ip).map_err(EtcdError::Spawn)?;
            s.peer_port = free_port(ip).map_err(EtcdError::Spawn)?;
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
        Err(EtcdError::NoFreePorts(ATTEMPTS))
    }

    /// `http://<ip>:<port>`, as ETCD_ENDPOINTS takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr())
    }

    fn client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.client_port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> Result<(), EtcdError> {
        let data_dir = self.data_dir();
        let spec = EtcdSpec {
            name: "test",
            data_dir: &data_dir,
            client: self.client_addr(),
            peer: SocketAddr::new(self.ip, self.peer_port),
            log_level: "error",
            no_fsync: false,
        };
        let log_file = self.log_file();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_file)
            .map_err(EtcdError::io(&log_file))?;
        let log2 = log.try_clone().map_err(EtcdError::io(&log_file))?;
        let child = Command::new(&self.binary)
            .args(spec.args())
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log)
            .spawn()
            .map_err(EtcdError::Spawn)?;
        self.child = Some(child);
        let child = &mut self.child;
        wait_healthy(
            spec.client,
            START_TIMEOUT,
            || child.as_mut().and_then(|c| c.try_wait().ok().flatten()),
            &log_file,
        )
    }

    /// What etcd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// SIGKILL, like a crash or an OOM kill: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
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
