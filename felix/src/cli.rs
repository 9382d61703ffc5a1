//! `felix run`: starts the dataplane (route reconciler, IPIP tunnel device,
//! NAT table, MTU file) in this network namespace and keeps it running
//! until SIGINT / SIGTERM; with `--socket` (how calico-node runs it), also
//! felix's services (see [`crate::daemon`]).

use std::time::Duration;

use crate::daemon::{ManagedConfig, RunConfig};
use crate::dataplane::DataplaneConfig;
use crate::routes::ReconcilerConfig;
use crate::tunnel::BackendChoice;
use anyhow::Context;
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use datastore::{DatastoreConfig, DatastoreType};
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
    #[arg(long, default_value_t = crate::routes::MAIN_TABLE)]
    table: u32,
    /// Pod interface name prefix (repeatable).
    #[arg(long = "iface-prefix", default_values_t = vec!["cali".to_string()])]
    iface_prefixes: Vec<String>,
    /// IP-in-IP backend: the kernel's ipip device, felix's userspace
    /// tunnel (TUN + raw socket), or auto (kernel if the kernel has ipip).
    #[arg(long, env = "FELIX_IPIPBACKEND", default_value_t = BackendChoice::Auto)]
    ipip_backend: BackendChoice,
    /// VXLAN backend: the kernel's vxlan device, felix's userspace VTEP
    /// (TUN + UDP socket with segmentation offload), or auto (kernel if
    /// the kernel has vxlan).
    #[arg(long, env = "FELIX_VXLANBACKEND", default_value_t = BackendChoice::Auto)]
    vxlan_backend: BackendChoice,
    /// felix's state directory; the pod MTU is written to `<dir>/mtu`.
    #[arg(long, env = "FELIX_STATEDIR", default_value = crate::mtu::DEFAULT_STATE_DIR)]
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
    #[arg(long, env = "DATASTORE_TYPE", value_parser = PossibleValuesParser::new(
        [DatastoreType::Etcdv3.as_str(), DatastoreType::Kubernetes.as_str()]))]
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
pub fn main<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    proto::daemon::abort_on_panic();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // Plain text when the log goes to a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Run(args) => {
            let cfg = run_config(args)?;
            crate::run(cfg, proto::daemon::shutdown_signal()?).await?;
            Ok(())
        }
    }
}

fn run_config(args: RunArgs) -> anyhow::Result<RunConfig> {
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
    let mut workloads = crate::workload::WorkloadConfig::default();
    if let Some(p) = args.iface_prefixes.first() {
        workloads.iface_prefix = p.clone();
    }
    let dataplane = DataplaneConfig {
        ipip_backend: args.ipip_backend,
        vxlan_backend: args.vxlan_backend,
        mtu_file: Some(
            args.mtu_file
                .clone()
                .unwrap_or_else(|| args.state_dir.join(crate::mtu::MTU_FILE)),
        ),
        refresh_interval: seconds("refresh-interval", args.refresh_interval)?,
        routes,
        workloads,
        ..DataplaneConfig::default()
    };
    let managed = match args.socket {
        Some(socket) => {
            let datastore = DatastoreConfig::from_lookup(|k| match k {
                "DATASTORE_TYPE" => args.datastore_type.clone(),
                "ETCD_ENDPOINTS" => args.etcd_endpoints.clone(),
                _ => std::env::var(k).ok(),
            })?;
            // etcd without ETCD_ENDPOINTS: no IPAM (standalone runs).
            let usable =
                matches!(datastore, DatastoreConfig::Kubernetes) || args.etcd_endpoints.is_some();
            Some(ManagedConfig {
                socket,
                bird_socket: args.bird_socket,
                node: args.node,
                ipam: usable.then_some(datastore),
                state_dir: args.state_dir,
            })
        }
        None => None,
    };
    Ok(RunConfig { dataplane, managed })
}
