//! Shared harness of the netns tests: our `bird` binary and BIRD 2 as
//! processes inside lab namespaces, and bounded polling.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Netns, NsProcess};
use proto::bgpconfig::{self as bgp, bgp_config_service_client::BgpConfigServiceClient};
use proto::bird::bird_client::BirdClient;
use proto::bird::{self as pb, ListPeersRequest, ListRoutesRequest};
use proto::routes_client;

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
    /// For `restart`: only daemons started in a shared (topology)
    /// namespace can be restarted.
    ns: Option<std::sync::Arc<Netns>>,
    ns_name: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Ours {
    /// Started from a TOML configuration.
    pub fn start(ns: &Netns, toml: &str) -> Ours {
        Self::launch(ns, None, Some(toml), &[])
    }

    /// Started from a TOML configuration, in a lab topology node.
    pub fn start_in(ns: &std::sync::Arc<Netns>, toml: &str, extra: &[&str]) -> Ours {
        Self::launch(ns, Some(ns.clone()), Some(toml), extra)
    }

    /// Started with no configuration: it waits for `apply`.
    pub fn start_unconfigured(ns: &std::sync::Arc<Netns>, extra: &[&str]) -> Ours {
        Self::launch(ns, Some(ns.clone()), None, extra)
    }

    fn launch(
        ns: &Netns,
        shared: Option<std::sync::Arc<Netns>>,
        toml: Option<&str>,
        extra: &[&str],
    ) -> Ours {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/bird.sock");
        let log = dir.path().join("bird.log");
        let mut args: Vec<String> = vec!["run".into()];
        if let Some(toml) = toml {
            let config = dir.path().join("bird.toml");
            std::fs::write(&config, toml).unwrap();
            args.extend(["--config".into(), config.to_str().unwrap().into()]);
        }
        args.extend(["--socket".into(), socket.to_str().unwrap().into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Self::spawn(ns, &args, &log);
        let ours = Ours {
            proc,
            socket,
            log,
            ns: shared,
            ns_name: ns.name().to_string(),
            dir,
            args,
        };
        ours.wait_ready();
        ours
    }

    fn spawn(ns: &Netns, args: &[String], log: &Path) -> NsProcess {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.spawn(env!("CARGO_BIN_EXE_bird"), &args, Some(log))
            .unwrap()
    }

    fn wait_ready(&self) {
        wait_for(
            "our bird's control socket",
            Duration::from_secs(20),
            || self.try_peers(),
            || self.log_text(),
        );
    }

    /// Kills the daemon with SIGKILL (no NOTIFICATION goes out).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the daemon again on the same control socket, with a new TOML
    /// configuration (when given).
    pub fn restart(&mut self, toml: Option<&str>) {
        self.proc.kill();
        if let Some(toml) = toml {
            std::fs::write(self.dir.path().join("bird.toml"), toml).unwrap();
        }
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"--- restarted ---\n"));
        let ns = self
            .ns
            .clone()
            .expect("restart needs a daemon started with start_in");
        self.proc = Self::spawn(&ns, &self.args, &self.log);
        self.wait_ready();
    }

    pub fn log_text(&self) -> String {
        format!(
            "--- our bird log ({}) ---\n{}",
            self.ns_name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    pub fn rt() -> tokio::runtime::Runtime {
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

    fn list(&self, best_only: bool) -> Vec<pb::Route> {
        Self::rt().block_on(async {
            let ch = proto::uds::connect(&self.socket).await.unwrap();
            let mut s = BirdClient::new(ch)
                .list_routes(ListRoutesRequest {
                    peer: None,
                    best_only,
                })
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

    /// Every path of every prefix.
    pub fn routes(&self) -> Vec<pb::Route> {
        self.list(false)
    }

    /// The Loc-RIB: the best path of each prefix.
    pub fn best_routes(&self) -> Vec<pb::Route> {
        self.list(true)
    }

    /// The received route for `prefix`, if any.
    pub fn route(&self, prefix: &str) -> Option<pb::Route> {
        let want: ipnetwork::IpNetwork = prefix.parse().unwrap();
        self.routes().into_iter().find(|r| prefix_of(r) == want)
    }

    /// Every path of `prefix`.
    pub fn paths(&self, prefix: &str) -> Vec<pb::Route> {
        let want: ipnetwork::IpNetwork = prefix.parse().unwrap();
        self.routes()
            .into_iter()
            .filter(|r| prefix_of(r) == want)
            .collect()
    }

    /// The Loc-RIB as (prefix, next hop) pairs, sorted; our own blocks as
    /// next hop "local".
    pub fn loc_rib(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .best_routes()
            .iter()
            .map(|r| {
                let nh = if r.local {
                    "local".to_string()
                } else {
                    next_hop(r)
                };
                (prefix_of(r).to_string(), nh)
            })
            .collect();
        v.sort();
        v
    }

    /// Pushes a configuration as confd does.
    pub fn apply(&self, cfg: bgp::BgpConfig) -> bgp::ApplyBgpConfigReply {
        Self::rt().block_on(async {
            let ch = proto::uds::connect(&self.socket).await.unwrap();
            BgpConfigServiceClient::new(ch)
                .apply(cfg)
                .await
                .unwrap_or_else(|e| panic!("Apply failed: {e}\n{}", self.log_text()))
                .into_inner()
        })
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

pub fn prefix_of(r: &pb::Route) -> ipnetwork::IpNetwork {
    ipnetwork::IpNetwork::try_from(r.prefix.as_ref().unwrap()).unwrap()
}

/// What a felix-like consumer of a route stream sees, as changes to what
/// it holds: routes added or moved and routes gone, the view equal to
/// bird's table (a snapshot was applied), the stream lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    Changed {
        upserts: Vec<(ipnetwork::IpNetwork, std::net::IpAddr)>,
        withdraws: Vec<ipnetwork::IpNetwork>,
    },
    InSync,
    Disconnected {
        reason: String,
    },
}

/// A felix-like consumer of a daemon's route stream
/// (`proto::routes_client::watch`, what felix runs), with a runtime of its
/// own.
pub struct Watch {
    rt: tokio::runtime::Runtime,
    stream: Box<dyn tokio_stream::Stream<Item = routes_client::RouteEvent> + Send + Unpin>,
    /// What the consumer holds, applied from the events.
    pub view: std::collections::BTreeMap<String, Vec<String>>,
    pub events: Vec<RouteEvent>,
    /// Events of the last client event not handed out yet.
    queued: std::collections::VecDeque<RouteEvent>,
}

impl Watch {
    pub fn new(socket: &Path) -> Watch {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Watch {
            rt,
            stream: Box::new(routes_client::watch(socket.to_path_buf())),
            view: Default::default(),
            events: Vec::new(),
            queued: Default::default(),
        }
    }

    /// Applies one client event to `view`; returns what changed.
    fn apply(&mut self, ev: routes_client::RouteEvent) -> Vec<RouteEvent> {
        use routes_client::RouteEvent as E;
        let mut upserts = Vec::new();
        let mut withdraws = Vec::new();
        let mut upsert = |view: &mut std::collections::BTreeMap<String, Vec<String>>,
                          p: ipnetwork::IpNetwork,
                          nh: routes_client::NextHops| {
            let hops: Vec<String> = nh.as_slice().iter().map(|h| h.to_string()).collect();
            if view.insert(p.to_string(), hops.clone()) != Some(hops) {
                upserts.push((p, nh.first()));
            }
        };
        match ev {
            E::Connected | E::Unreachable { .. } => return Vec::new(),
            E::Disconnected { reason } => return vec![RouteEvent::Disconnected { reason }],
            E::Changes(changes) => {
                for (p, nh) in changes {
                    match nh {
                        Some(nh) => upsert(&mut self.view, p, nh),
                        None => {
                            if self.view.remove(&p.to_string()).is_some() {
                                withdraws.push(p);
                            }
                        }
                    }
                }
            }
            E::Replace(all) => {
                let keep: std::collections::HashSet<String> =
                    all.iter().map(|(p, _)| p.to_string()).collect();
                let gone: Vec<String> = self
                    .view
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.view.remove(&k);
                    withdraws.push(k.parse().unwrap());
                }
                for (p, nh) in all {
                    upsert(&mut self.view, p, nh);
                }
            }
        }
        if upserts.is_empty() && withdraws.is_empty() {
            return Vec::new();
        }
        vec![RouteEvent::Changed { upserts, withdraws }]
    }

    /// The next event within `timeout`, applied to `view`.
    pub fn next(&mut self, timeout: Duration) -> Option<RouteEvent> {
        use tokio_stream::StreamExt;
        let deadline = Instant::now() + timeout;
        while self.queued.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.stream.next()).await })
                .ok()
                .flatten()?;
            let snapshot = matches!(ev, routes_client::RouteEvent::Replace(_));
            let out = self.apply(ev);
            self.queued.extend(out);
            if snapshot {
                self.queued.push_back(RouteEvent::InSync);
            }
        }
        let ev = self.queued.pop_front()?;
        self.events.push(ev.clone());
        Some(ev)
    }

    /// Consumes events until `pred(view)` holds after an `InSync` has been
    /// seen, or panics after `timeout`.
    pub fn until(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut synced = self.events.contains(&RouteEvent::InSync);
        while !(synced && pred(self)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out waiting for {what}; view {:?}; events {:?}",
                    self.view, self.events
                );
            }
            if let Some(RouteEvent::InSync) = self.next(left.min(Duration::from_millis(200))) {
                synced = true;
            }
        }
    }

    /// Consumes events until `pred(events)` holds, or panics after
    /// `timeout`.
    pub fn until_events(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[RouteEvent]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out waiting for {what}; events {:?}", self.events);
            }
            self.next(left.min(Duration::from_millis(200)));
        }
    }

    /// Every prefix withdrawn among the events seen so far.
    pub fn withdrawn(&self) -> Vec<String> {
        self.events
            .iter()
            .flat_map(|e| match e {
                RouteEvent::Changed { withdraws, .. } => {
                    withdraws.iter().map(|w| w.to_string()).collect()
                }
                _ => Vec::new(),
            })
            .collect()
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

    /// Replaces the configuration file and has BIRD apply it (`birdc
    /// configure`): protocols whose configuration changed restart, the
    /// others are left alone.
    pub fn reconfigure(&self, conf: &str) {
        std::fs::write(self._dir.path().join("bird.conf"), conf).unwrap();
        let out = self.birdc(&["configure"]);
        // "in progress": BIRD is still shutting down the protocols the
        // change restarts; it finishes on its own.
        assert!(
            out.contains("Reconfigured") || out.contains("Reconfiguration in progress"),
            "birdc configure: {out}"
        );
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
        // birdc exits 1 with "Network not found" when there is none.
        let out = self.try_birdc(&["show", "route", "all", prefix])?;
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

/// An address on the wire.
pub fn wire_addr(s: &str) -> Option<proto::common::IpAddress> {
    Some(s.parse::<std::net::IpAddr>().unwrap().into())
}

/// What confd sends node `a` of [`pair`] (10.0.0.1, AS 64512): one passive
/// external peer, `peer` in AS 65001; the caller sets the rest.
pub fn node_a_config(peer: &str) -> bgp::BgpConfig {
    bgp::BgpConfig {
        node: "node-a".into(),
        router_id: wire_addr("10.0.0.1"),
        asn: 64512,
        listen_port: 179,
        peers: vec![bgp::BgpPeerConfig {
            name: format!("Global_{}", peer.replace(['.', ':'], "_")),
            address: wire_addr(peer),
            asn: 65001,
            kind: bgp::PeerKind::Global as i32,
            passive: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}
