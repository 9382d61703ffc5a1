//! `calico-node run` as a library call: [`run`] registers the node, starts
//! the children and every task of the agent, and stops them all when
//! `shutdown` resolves. The picture is in the crate documentation.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datastore::DatastoreConfig;
use datastore::leader::{CLUSTER_TASKS_LOCK, ElectionError, LockSpec, Timing};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::cluster_tasks;
use crate::health::{self, Shared, Sockets};
use crate::metrics;
use crate::readiness::{ALL_PEERS_THRESHOLD, BgpReadiness};
use crate::settings::Settings;
use crate::startup::{self, StartupError};
use crate::supervisor::{ChildSpec, Supervisor};

/// How long start-up waits for an unreachable datastore before giving up
/// (a node that boots before etcd waits rather than crash-looping).
const DATASTORE_WAIT: Duration = Duration::from_secs(300);
/// How often the IPIP tunnel address is checked against the pools.
const TUNNEL_ADDRESS_INTERVAL: Duration = Duration::from_secs(5);
/// How long a stopping calico-node tries to give up the cluster-tasks
/// lock. The DaemonSet grants 10 s to stop (terminationGracePeriodSeconds)
/// and the children stop meanwhile; a release that cannot get through in
/// this time leaves the lock to expire (the lease duration, 15 s) instead.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// What `calico-node run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub settings: Settings,
    /// How confd, bird and felix are started.
    pub programs: Programs,
}

/// Where the children's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Programs {
    /// calico-node's own executable, as `calico-node felix run ...` (and
    /// confd, bird): the way Calico's calico-node runs its parts. The
    /// node's four processes then map one file, so the code they share
    /// (tokio, the gRPC and datastore clients, TLS, libc's pages aside)
    /// is in memory once per node rather than once per process.
    Bundled(PathBuf),
    /// Separate `confd`, `bird` and `felix` executables in this directory
    /// (`--bin-dir` / `CALICO_BIN_DIR`, e.g. to try a rebuilt felix).
    Dir(PathBuf),
}

impl Programs {
    /// The program and the arguments that come before the child's own.
    fn command(&self, child: &str) -> (PathBuf, Vec<String>) {
        match self {
            Programs::Bundled(exe) => (exe.clone(), vec![child.to_string()]),
            Programs::Dir(dir) => (dir.join(child), Vec::new()),
        }
    }
}

/// The daemons `calico-node <name> ...` runs in-process (see
/// [`Programs::Bundled`]).
pub const BUNDLED: [&str; 3] = ["confd", "bird", "felix"];

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the datastore client: {0}")]
    Datastore(#[from] datastore::Error),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("cannot campaign for the cluster tasks: {0}")]
    Election(#[from] ElectionError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl Sockets {
    /// The children's control sockets in calico-node's run directory.
    pub fn in_run_dir(run_dir: &Path) -> Sockets {
        Sockets {
            confd: run_dir.join("confd.sock"),
            bird: run_dir.join("bird.sock"),
            felix: run_dir.join("felix.sock"),
        }
    }
}

/// Removes `--bird-socket P` from `args`; `no_bird` adds confd's
/// `--no-bird` in its place.
fn drop_bird_socket(args: &mut Vec<String>, no_bird: bool) {
    if let Some(i) = args.iter().position(|a| a == "--bird-socket") {
        args.drain(i..(i + 2).min(args.len()));
        if no_bird {
            args.push("--no-bird".into());
        }
    }
}

/// The three children (two without BGP) and how they are started.
pub fn children(s: &Settings, programs: &Programs) -> Vec<ChildSpec> {
    let socks = Sockets::in_run_dir(&s.run_dir);
    let run = s.run_dir.display().to_string();
    let mut env = vec![
        ("NODENAME".to_string(), s.nodename.clone()),
        (
            "DATASTORE_TYPE".to_string(),
            s.datastore.datastore_type().as_str().to_string(),
        ),
    ];
    if let DatastoreConfig::Etcdv3(etcd) = &s.datastore {
        env.push(("ETCD_ENDPOINTS".to_string(), etcd.endpoints.join(",")));
    }
    let specs = vec![
        ChildSpec {
            name: "confd",
            program: Default::default(),
            args: vec![
                "run".into(),
                "--bird-socket".into(),
                socks.bird.display().to_string(),
                "--felix-socket".into(),
                socks.felix.display().to_string(),
                "--render-file".into(),
                format!("{run}/confd/config.txt"),
                "--socket".into(),
                socks.confd.display().to_string(),
            ],
            env: env.clone(),
        },
        ChildSpec {
            name: "bird",
            program: Default::default(),
            args: vec![
                "run".into(),
                "--socket".into(),
                socks.bird.display().to_string(),
            ],
            env: env.clone(),
        },
        ChildSpec {
            name: "felix",
            program: Default::default(),
            args: vec![
                "run".into(),
                "--socket".into(),
                socks.felix.display().to_string(),
                "--bird-socket".into(),
                socks.bird.display().to_string(),
            ],
            env,
        },
    ];
    // Without BGP (CALICO_NETWORKING_BACKEND vxlan or none) bird does not
    // run, confd configures felix only, and felix takes no routes from BGP.
    let bgp = s.networking_backend.runs_bgp();
    specs
        .into_iter()
        .filter(|spec| bgp || spec.name != "bird")
        .map(|mut spec| {
            if !bgp {
                drop_bird_socket(&mut spec.args, spec.name == "confd");
            }
            spec
        })
        .map(|mut spec| {
            let (program, mut args) = programs.command(spec.name);
            args.append(&mut spec.args);
            spec.program = program;
            spec.args = args;
            spec
        })
        .collect()
}

/// Keeps the IPIP tunnel address in step with the pools (Calico's
/// allocate-tunnel-addrs): now, and every few seconds.
async fn sync_tunnel_address(client: datastore::Client, node: String) {
    loop {
        if let Err(e) = startup::sync_tunnel_address(&client, &node).await {
            tracing::warn!(error = %e, "tunnel address not synced; retrying");
        }
        tokio::time::sleep(TUNNEL_ADDRESS_INTERVAL).await;
    }
}

/// Runs the node agent until `shutdown` resolves; then stops its tasks and
/// gives the children SIGTERM.
pub async fn run(cfg: RunConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let RunConfig { settings, programs } = cfg;
    std::fs::create_dir_all(&settings.run_dir).map_err(|source| RunError::RunDir {
        path: settings.run_dir.clone(),
        source,
    })?;
    let client = settings.datastore.connect().await?;
    let mut tasks = JoinSet::new();

    let addr = startup::resolve_address(&settings.ip)?;
    tracing::info!(node = %settings.nodename, address = ?addr, "starting");
    startup::with_datastore_retry("register node", DATASTORE_WAIT, || {
        startup::register_node(&client, &settings, addr)
    })
    .await?;
    for pool in settings
        .default_pool
        .iter()
        .chain(&settings.default_pool_v6)
    {
        startup::with_datastore_retry("default pool", DATASTORE_WAIT, || {
            startup::ensure_default_pool(&client, pool)
        })
        .await?;
    }
    tasks.spawn(sync_tunnel_address(
        client.clone(),
        settings.nodename.clone(),
    ));
    // Only once this node is set up does it stand for the cluster tasks.
    let elector = client.elector(&LockSpec {
        name: CLUSTER_TASKS_LOCK.into(),
        identity: settings.nodename.clone(),
        timing: Timing::default(),
    })?;
    tasks.spawn(cluster_tasks::run(
        elector.subscribe(),
        client.clone(),
        settings.nodename.clone(),
        settings.ipam_gc.clone(),
    ));

    let metrics_listener = match settings
        .metrics_addr
        .map(|m| m.addr(addr.map(|a| std::net::IpAddr::V4(a.ip()))))
    {
        Some(addr) => Some((
            addr,
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Metrics { addr, source })?,
        )),
        None => None,
    };

    let sup = Supervisor::start(children(&settings, &programs));
    let shared: Shared = Shared::default();
    let statuses = sup.statuses();
    tasks.spawn(health::poll(
        Sockets::in_run_dir(&settings.run_dir),
        shared.clone(),
        move || statuses.get(),
        settings
            .networking_backend
            .runs_bgp()
            .then(|| BgpReadiness::new(Instant::now(), ALL_PEERS_THRESHOLD)),
    ));
    let health_addr = settings.health_addr;
    tasks.spawn(async move {
        if let Err(e) = health::serve(health_addr, shared).await {
            tracing::error!(addr = %health_addr, error = %e, "health endpoint failed");
        }
    });
    if let Some((addr, listener)) = metrics_listener {
        let socks = Sockets::in_run_dir(&settings.run_dir);
        let src = metrics::Sources {
            bird: socks.bird,
            felix: socks.felix,
            client: client.clone(),
            node: settings.nodename.clone(),
            leadership: Some(elector.subscribe()),
        };
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        tasks.spawn(async move {
            if let Err(e) = metrics::serve_on(listener, src).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(health = %health_addr, "calico-node running");

    shutdown.await;
    tracing::info!("calico-node stopping; children get SIGTERM");
    // The cluster tasks stop before the lock is given up: the next leader
    // may start its own the moment it is.
    tasks.shutdown().await;
    let release = async {
        match tokio::time::timeout(RELEASE_TIMEOUT, elector.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster-tasks lock not released; it expires by itself")
            }
            Err(_) => tracing::warn!(
                limit = ?RELEASE_TIMEOUT,
                "cluster-tasks lock not released in time; it expires by itself"
            ),
        }
    };
    tokio::join!(release, sup.stop());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn settings() -> Settings {
        Settings::from_env(|k| (k == "NODENAME").then(|| "node-1".to_string())).unwrap()
    }

    #[test]
    fn bundled_children_run_calico_node_with_their_name_first() {
        let exe = PathBuf::from("/usr/bin/calico-node");
        let specs = children(&settings(), &Programs::Bundled(exe.clone()));
        let names: Vec<_> = specs.iter().map(|c| c.name).collect();
        assert_eq!(names, BUNDLED);
        for c in &specs {
            assert_eq!(c.program, exe);
            assert_eq!(c.args[0], c.name);
            assert_eq!(c.args[1], "run");
        }
    }

    #[test]
    fn without_bgp_bird_does_not_run_and_nobody_looks_for_it() {
        for backend in ["vxlan", "none", "VXLAN"] {
            let s = Settings::from_env(|k| match k {
                "NODENAME" => Some("node-1".to_string()),
                "CALICO_NETWORKING_BACKEND" => Some(backend.to_string()),
                _ => None,
            })
            .unwrap();
            let specs = children(&s, &Programs::Dir("/opt/calico".into()));
            let names: Vec<_> = specs.iter().map(|c| c.name).collect();
            assert_eq!(names, ["confd", "felix"], "{backend}");
            for c in &specs {
                assert!(!c.args.iter().any(|a| a.contains("bird.sock")), "{c:?}");
            }
            assert!(specs[0].args.contains(&"--no-bird".to_string()));
        }
        let bad = Settings::from_env(|k| match k {
            "NODENAME" => Some("node-1".to_string()),
            "CALICO_NETWORKING_BACKEND" => Some("gobgp".to_string()),
            _ => None,
        })
        .unwrap_err();
        assert!(
            bad.to_string().contains("CALICO_NETWORKING_BACKEND"),
            "{bad}"
        );
    }

    #[test]
    fn a_bin_dir_runs_separate_executables() {
        let specs = children(&settings(), &Programs::Dir("/opt/calico".into()));
        for c in &specs {
            assert_eq!(c.program, Path::new("/opt/calico").join(c.name));
            assert_eq!(c.args[0], "run");
        }
    }
}
