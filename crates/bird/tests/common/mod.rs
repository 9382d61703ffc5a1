//! Shared harness of the netns tests: our `bird` binary and BIRD 2 as
//! processes inside lab namespaces, and bounded polling.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Netns, NsProcess};
use proto::bird::bird_client::BirdClient;
use proto::bird::{self as pb, ListPeersRequest, ListRoutesRequest};

pub const BIRD2: &str = "/usr/sbin/bird";

/// Polls `f` until it returns `Some`, or panics after `timeout` with
/// `what` and the diagnostics `diag` gathers.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    diag: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two namespaces joined by a veth pair: `a` (10.0.0.1, fd00::1) and `b`
/// (10.0.0.2, fd00::2).
pub fn pair(tag_a: &str, tag_b: &str) -> (Netns, Netns) {
    let _ = lab::sweep_stale();
    let a = Netns::create(tag_a).unwrap();
    let b = Netns::create(tag_b).unwrap();
    lab::veth(&a, "eth0", &b, "eth0").unwrap();
    a.ip(&["addr", "add", "10.0.0.1/24", "dev", "eth0"])
        .unwrap();
    b.ip(&["addr", "add", "10.0.0.2/24", "dev", "eth0"])
        .unwrap();
    // nodad: the address is usable at once, not after duplicate detection.
    a.ip(&["addr", "add", "fd00::1/64", "dev", "eth0", "nodad"])
        .unwrap();
    b.ip(&["addr", "add", "fd00::2/64", "dev", "eth0", "nodad"])
        .unwrap();
    (a, b)
}

/// Our daemon (`bird run`) inside a namespace.
pub struct Ours {
    pub proc: NsProcess,
    pub socket: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ours {
    pub fn start(ns: &Netns, toml: &str) -> Ours {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bird.toml");
        std::fs::write(&config, toml).unwrap();
        let socket = dir.path().join("run/bird.sock");
        let log = dir.path().join("bird.log");
        let proc = ns
            .spawn(
                env!("CARGO_BIN_EXE_bird"),
                &[
                    "run",
                    "--config",
                    config.to_str().unwrap(),
                    "--socket",
                    socket.to_str().unwrap(),
                ],
                Some(&log),
            )
            .unwrap();
        let ours = Ours {
            proc,
            socket,
            log,
            _dir: dir,
        };
        wait_for(
            "our bird's control socket",
            Duration::from_secs(20),
            || ours.try_peers(),
            || ours.log_text(),
        );
        ours
    }

    pub fn log_text(&self) -> String {
        format!(
            "--- our bird log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn try_peers(&self) -> Option<Vec<pb::Peer>> {
        Self::rt().block_on(async {
            let ch = proto::uds::connect(&self.socket).await.ok()?;
            let r = BirdClient::new(ch)
                .list_peers(ListPeersRequest {})
                .await
                .ok()?;
            Some(r.into_inner().peers)
        })
    }

    pub fn peers(&self) -> Vec<pb::Peer> {
        self.try_peers().unwrap()
    }

    pub fn peer(&self, addr: &str) -> pb::Peer {
        let want: std::net::IpAddr = addr.parse().unwrap();
        self.peers()
            .into_iter()
            .find(|p| std::net::IpAddr::try_from(p.address.as_ref().unwrap()).unwrap() == want)
            .unwrap()
    }

    pub fn established(&self, addr: &str) -> bool {
        self.peer(addr).state == pb::SessionState::Established as i32
    }

    pub fn routes(&self) -> Vec<pb::Route> {
        Self::rt().block_on(async {
            let ch = proto::uds::connect(&self.socket).await.unwrap();
            let mut s = BirdClient::new(ch)
                .list_routes(ListRoutesRequest { peer: None })
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(b) = s.message().await.unwrap() {
                out.extend(b.routes);
            }
            out
        })
    }

    /// The received route for `prefix`, if any.
    pub fn route(&self, prefix: &str) -> Option<pb::Route> {
        let want: ipnetwork::IpNetwork = prefix.parse().unwrap();
        self.routes()
            .into_iter()
            .find(|r| ipnetwork::IpNetwork::try_from(r.prefix.as_ref().unwrap()).unwrap() == want)
    }

    /// Runs the CLI: `bird show <args> --socket ...`.
    pub fn show(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_bird"))
            .arg("show")
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bird show {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// BIRD 2 inside a namespace, run in the foreground with its own control
/// socket.
pub struct Bird2 {
    pub proc: NsProcess,
    pub socket: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bird2 {
    pub fn start(ns: &Netns, conf: &str) -> Bird2 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, conf).unwrap();
        let socket = dir.path().join("bird.ctl");
        let log = dir.path().join("bird2.log");
        let proc = ns
            .spawn(
                BIRD2,
                &[
                    "-f",
                    "-c",
                    path.to_str().unwrap(),
                    "-s",
                    socket.to_str().unwrap(),
                ],
                Some(&log),
            )
            .unwrap();
        let b = Bird2 {
            proc,
            socket,
            log,
            _dir: dir,
        };
        wait_for(
            "BIRD 2 control socket",
            Duration::from_secs(20),
            || b.try_birdc(&["show", "status"]),
            || std::fs::read_to_string(&b.log).unwrap_or_default(),
        );
        b
    }

    fn try_birdc(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn birdc(&self, args: &[&str]) -> String {
        self.try_birdc(args)
            .unwrap_or_else(|| panic!("birdc {args:?} failed; log:\n{}", self.log_text()))
    }

    pub fn log_text(&self) -> String {
        format!(
            "--- BIRD 2 log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Whether protocol `name` is in BGP state Established.
    pub fn established(&self, name: &str) -> bool {
        self.birdc(&["show", "protocols", "all", name])
            .contains("BGP state:          Established")
    }

    /// `show route all <prefix>`, or `None` when BIRD has no such route.
    pub fn route(&self, prefix: &str) -> Option<String> {
        let out = self.birdc(&["show", "route", "all", prefix]);
        out.contains(prefix.split('/').next().unwrap())
            .then_some(out)
    }
}

pub fn path_asns(r: &pb::Route) -> Vec<u32> {
    r.as_path.iter().flat_map(|s| s.asns.clone()).collect()
}

pub fn next_hop(r: &pb::Route) -> String {
    std::net::IpAddr::try_from(r.next_hop.as_ref().unwrap())
        .unwrap()
        .to_string()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
