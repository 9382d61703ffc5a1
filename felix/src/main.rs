//! `felix run`: starts the dataplane (route reconciler, IPIP tunnel device,
//! NAT table, MTU file) in this network namespace and keeps it running
//! until SIGINT / SIGTERM.
//!
//! With `--socket` (how calico-node runs it) felix serves its gRPC
//! services there — configuration from confd, pod interfaces for the CNI
//! plugin (with IPAM, given `--node` and the datastore), status and health
//! — watches bird's routes when `--bird-socket` is given, re-adopts the
//! pods recorded in its state directory, and deletes no stale route until
//! confd's configuration and bird's first snapshot are in. Without it,
//! felix runs standalone: it only keeps its own routes, tunnel, NAT table
//! and MTU file tidy.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use felix::dataplane::{Dataplane, DataplaneConfig};
use felix::routes::ReconcilerConfig;
use felix::tunnel::BackendChoice;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "felix", version, about = "calico-rs dataplane agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the route reconciler until interrupted.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Seconds between full dump-and-diff resyncs.
    #[arg(long, env = "FELIX_ROUTEREFRESHINTERVAL", default_value_t = 90.0)]
    resync_interval: f64,
    /// Seconds unknown routes survive on a newly appeared pod interface.
    #[arg(long, env = "FELIX_ROUTECLEANUPGRACEPERIOD", default_value_t = 10.0)]
    grace_period: f64,
    /// Routing table to manage.
    #[arg(long, default_value_t = felix::routes::MAIN_TABLE)]
    table: u32,
    /// Pod interface name prefix (repeatable).
    #[arg(long = "iface-prefix", default_values_t = vec!["cali".to_string()])]
    iface_prefixes: Vec<String>,
    /// IP-in-IP backend: the kernel's ipip device, felix's userspace
    /// tunnel (TUN + raw socket), or auto (kernel if the kernel has ipip).
    #[arg(long, env = "FELIX_IPIPBACKEND", default_value_t = BackendChoice::Auto)]
    ipip_backend: BackendChoice,
    /// felix's state directory; the pod MTU is written to `<dir>/mtu`.
    #[arg(long, env = "FELIX_STATEDIR", default_value = felix::mtu::DEFAULT_STATE_DIR)]
    state_dir: std::path::PathBuf,
    /// Where the CNI plugin reads the pod MTU (default `<state-dir>/mtu`).
    #[arg(long, env = "FELIX_MTUFILE")]
    mtu_file: Option<std::path::PathBuf>,
    /// Seconds between read-backs of the tunnel device, underlay MTU and
    /// NAT table.
    #[arg(long, env = "FELIX_DATAPLANEREFRESHINTERVAL", default_value_t = 90.0)]
    refresh_interval: f64,
    /// Serve felix's gRPC services on this Unix socket (managed mode).
    #[arg(long, env = "FELIX_SOCKET")]
    socket: Option<std::path::PathBuf>,
    /// Watch bird's best routes on this socket.
    #[arg(long, env = "FELIX_BIRD_SOCKET")]
    bird_socket: Option<std::path::PathBuf>,
    /// This node's name (for IPAM and to check confd's configuration).
    #[arg(long, env = "NODENAME")]
    node: Option<String>,
    /// Datastore for IPAM: etcdv3 or kubernetes; unset: kubernetes inside
    /// a pod (KUBERNETES_SERVICE_HOST set), else etcdv3.
    #[arg(long, env = "DATASTORE_TYPE")]
    datastore_type: Option<String>,
    /// Comma-separated etcd URLs; without it the CNI plugin gets no IPAM.
    #[arg(long, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds, not {v}"))
}

/// One thread runs felix's tasks: they wait on netlink, nft, gRPC and the
/// datastore and never compute for long (the userspace tunnel has threads
/// of its own). A second worker bought nothing but a thread's stack and
/// malloc arena.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Plain text when the log goes to a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything is started, so a SIGTERM during start-up is a clean
    // stop rather than the default kill.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let routes = ReconcilerConfig {
        table: args.table,
        iface_prefixes: args.iface_prefixes.clone(),
        resync_interval: seconds("resync-interval", args.resync_interval)?,
        grace_period: seconds("grace-period", args.grace_period)?,
        // Managed: keep routes from a previous run until confd and bird
        // have re-sent what should exist.
        start_in_sync: args.socket.is_none(),
        ..ReconcilerConfig::default()
    };
    let mut workloads = felix::workload::WorkloadConfig::default();
    if let Some(p) = args.iface_prefixes.first() {
        workloads.iface_prefix = p.clone();
    }
    let config = DataplaneConfig {
        ipip_backend: args.ipip_backend,
        mtu_file: Some(
            args.mtu_file
                .clone()
                .unwrap_or_else(|| args.state_dir.join(felix::mtu::MTU_FILE)),
        ),
        refresh_interval: seconds("refresh-interval", args.refresh_interval)?,
        routes,
        workloads,
        ..DataplaneConfig::default()
    };
    let dataplane = Dataplane::start(config).await.with_context(|| {
        format!(
            "starting the dataplane (FELIX_IPIPBACKEND={})",
            args.ipip_backend
        )
    })?;
    let handle = dataplane.handle();
    let report = handle.flush().await.context("first resync")?;
    let status = handle.status().await.context("dataplane status")?;
    tracing::info!(
        ops = report.routes.ops,
        failures = report.routes.failures.len(),
        ipip_backend = %status.tunnel.as_ref().map_or_else(|| "none".to_string(), |t| t.backend.to_string()),
        tunnel_device = %status.tunnel.as_ref().map_or("", |t| t.device.as_str()),
        pod_mtu = status.pod_mtu,
        "route reconciler running"
    );
    if let Some(e) = &report.nat_error {
        tracing::warn!(error = %e, "NAT table not written yet; retrying");
    }

    let managed = match &args.socket {
        Some(socket) => Some(serve(&args, socket, &dataplane).await?),
        None => None,
    };

    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    if let Some((stop, server, tasks)) = managed {
        let _ = stop.send(());
        let _ = server.await;
        for t in tasks {
            t.abort();
        }
    }
    tracing::info!("stopping; routes and the NAT table stay in the kernel");
    dataplane.stop().await;
    Ok(())
}

type Managed = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// Managed mode: services on the socket, bird's routes, re-adopted pods.
async fn serve(
    args: &RunArgs,
    socket: &std::path::Path,
    dataplane: &Dataplane,
) -> anyhow::Result<Managed> {
    use felix::service;
    use std::sync::Arc;

    let datastore = datastore::DatastoreConfig::from_lookup(|k| match k {
        "DATASTORE_TYPE" => args.datastore_type.clone(),
        "ETCD_ENDPOINTS" => args.etcd_endpoints.clone(),
        _ => std::env::var(k).ok(),
    })?;
    // etcd without ETCD_ENDPOINTS: no IPAM (standalone runs).
    let usable = matches!(datastore, datastore::DatastoreConfig::Kubernetes)
        || args.etcd_endpoints.is_some();
    let ipam = match &args.node {
        Some(_) if usable => Some(datastore::ipam::Ipam::new(datastore.connect().await?)),
        _ => {
            tracing::warn!("no --node / ETCD_ENDPOINTS: pod adds will fail (no IPAM)");
            None
        }
    };
    let store = felix::store::WorkloadStore::open(&args.state_dir)
        .with_context(|| format!("opening the state directory {}", args.state_dir.display()))?;
    let routes = dataplane
        .routes()
        .context("the route reconciler is not running")?;
    let state = Arc::new(service::State {
        node: args.node.clone().unwrap_or_default(),
        dataplane: dataplane.handle(),
        routes,
        workloads: dataplane.workloads(),
        store,
        ipam,
        container_iface: felix::workload::WorkloadConfig::default().container_iface,
        configured: tokio::sync::watch::channel(false).0,
        routes_synced: tokio::sync::watch::channel(false).0,
        watches_bird: args.bird_socket.is_some(),
        last_config: std::sync::Mutex::new(None),
        cni_metrics: Default::default(),
    });
    let (restored, dropped) = service::restore_workloads(&state).await;
    tracing::info!(restored, dropped, "pods from a previous run");

    let health = proto::health_service::HealthReporter::new("felix");
    let mut tasks = vec![tokio::spawn(service::track_readiness(
        state.clone(),
        health.clone(),
    ))];
    if let Some(bird) = &args.bird_socket {
        tasks.push(tokio::spawn(felix::bgpfeed::run(
            bird.clone(),
            dataplane.handle(),
            state.routes_synced.clone(),
        )));
    }
    let listener = proto::uds::bind(socket).await?;
    let router = service::router(state, &health);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let path = socket.to_path_buf();
    let server = tokio::spawn(async move {
        if let Err(e) = proto::uds::serve(router, listener, &path, async {
            let _ = stopped.await;
        })
        .await
        {
            tracing::error!(error = %e, "felix's control socket failed");
        }
    });
    tracing::info!(socket = %socket.display(), "serving felix's services");
    Ok((stop, server, tasks))
}
