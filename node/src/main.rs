//! `calico-node`: the per-node agent.
//!
//! ```text
//! calico-node run       # register, create the default pool, supervise confd/bird/felix
//! calico-node status    # the BGP peer table, like `calicoctl node status`
//! ```
//! Configuration comes from Calico's environment variables (NODENAME, IP,
//! IP_AUTODETECTION_METHOD, AS, CALICO_IPV4POOL_*, DATASTORE_TYPE,
//! ETCD_ENDPOINTS, ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use datastore::DatastoreConfig;
use node::health::{self, Shared, Sockets};
use node::metrics;
use node::pool_status;
use node::readiness::{ALL_PEERS_THRESHOLD, BgpReadiness};
use node::settings::Settings;
use node::startup;
use node::status;
use node::supervisor::{ChildSpec, Supervisor};

#[derive(Parser)]
#[command(name = "calico-node", version, about = "calico-rs node agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the node agent (the DaemonSet's main process).
    Run {
        /// Directory holding the confd, bird and felix binaries (default:
        /// next to calico-node).
        #[arg(long, env = "CALICO_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Print the BGP peer table.
    Status {
        /// bird's control socket.
        #[arg(long, env = "CALICO_RUN_DIR", default_value = "/run/calico")]
        run_dir: PathBuf,
    },
}

fn sockets(run_dir: &Path) -> Sockets {
    Sockets {
        confd: run_dir.join("confd.sock"),
        bird: run_dir.join("bird.sock"),
        felix: run_dir.join("felix.sock"),
    }
}

/// The three children and how they are started.
fn children(s: &Settings, bin_dir: &Path) -> Vec<ChildSpec> {
    let socks = sockets(&s.run_dir);
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
    vec![
        ChildSpec {
            name: "confd",
            program: bin_dir.join("confd"),
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
            program: bin_dir.join("bird"),
            args: vec![
                "run".into(),
                "--socket".into(),
                socks.bird.display().to_string(),
            ],
            env: env.clone(),
        },
        ChildSpec {
            name: "felix",
            program: bin_dir.join("felix"),
            args: vec![
                "run".into(),
                "--socket".into(),
                socks.felix.display().to_string(),
                "--bird-socket".into(),
                socks.bird.display().to_string(),
            ],
            env,
        },
    ]
}

async fn run(bin_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let shutdown = proto::daemon::shutdown_signal()?;
    let settings = Settings::from_env(|k| std::env::var(k).ok())?;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .context("cannot find calico-node's own path")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin")),
    };
    std::fs::create_dir_all(&settings.run_dir)
        .with_context(|| format!("cannot create {}", settings.run_dir.display()))?;
    let client = settings.datastore.connect().await?;
    if matches!(settings.datastore, DatastoreConfig::Kubernetes) {
        tokio::spawn(pool_status::run(
            client.clone(),
            pool_status::Options::default(),
        ));
    }

    let addr = startup::resolve_address(&settings.ip)?;
    tracing::info!(node = %settings.nodename, address = ?addr, "starting");
    // Wait (bounded) for the datastore rather than crash-looping.
    let limit = Duration::from_secs(300);
    startup::with_datastore_retry("register node", limit, || {
        startup::register_node(&client, &settings, addr)
    })
    .await?;
    if let Some(pool) = &settings.default_pool {
        startup::with_datastore_retry("default pool", limit, || {
            startup::ensure_default_pool(&client, pool)
        })
        .await?;
    }

    // The IPIP tunnel address follows the pools (Calico's
    // allocate-tunnel-addrs): now, and every few seconds.
    let tunnel_client = client.clone();
    let node_name = settings.nodename.clone();
    let tunnel = tokio::spawn(async move {
        loop {
            if let Err(e) = startup::sync_tunnel_address(&tunnel_client, &node_name).await {
                tracing::warn!(error = %e, "tunnel address not synced; retrying");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });

    let sup = Arc::new(Supervisor::start(children(&settings, &bin_dir)));
    let shared: Shared = Arc::default();
    let s2 = sup.clone();
    let poller = tokio::spawn(health::poll(
        sockets(&settings.run_dir),
        shared.clone(),
        move || s2.status(),
        BgpReadiness::new(Instant::now(), ALL_PEERS_THRESHOLD),
    ));
    let addr = settings.health_addr;
    let server = tokio::spawn(async move {
        if let Err(e) = health::serve(addr, shared).await {
            tracing::error!(%addr, error = %e, "health endpoint failed");
        }
    });
    let metrics = match settings.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let socks = sockets(&settings.run_dir);
            let src = metrics::Sources {
                bird: socks.bird,
                felix: socks.felix,
                client: client.clone(),
                node: settings.nodename.clone(),
            };
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            Some(tokio::spawn(async move {
                if let Err(e) = metrics::serve_on(listener, src).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            }))
        }
        None => None,
    };
    tracing::info!(health = %settings.health_addr, "calico-node running");
    shutdown.await;
    tracing::info!("calico-node stopping; children get SIGTERM");
    poller.abort();
    server.abort();
    tunnel.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    match Arc::try_unwrap(sup) {
        Ok(sup) => sup.stop().await,
        Err(_) => tracing::warn!("supervisor still shared at shutdown"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calico-node: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Run { bin_dir } => run(bin_dir).await,
            Cmd::Status { run_dir } => {
                let text = status::render(&sockets(&run_dir).bird).await?;
                print!("{text}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
