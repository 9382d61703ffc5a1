//! `felix run`: starts the dataplane (route reconciler, IPIP tunnel device,
//! NAT table, MTU file) in this network namespace and keeps it running
//! until SIGINT / SIGTERM. The gRPC services that feed it (confd, bird,
//! CNI) arrive in later issues; until then nothing gives it desired
//! routes, so it cleans up stale routes of its own, picks and logs the
//! IPIP backend, and keeps its NAT table and MTU file in place.

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
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds, not {v}"))
}

#[tokio::main]
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

    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping; routes and the NAT table stay in the kernel");
    dataplane.stop().await;
    Ok(())
}
