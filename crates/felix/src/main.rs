//! `felix run`: starts the route reconciler in this network namespace and
//! keeps it running until SIGINT / SIGTERM. Configuration and the gRPC
//! services (confd, bird, CNI) arrive in later issues; until then nothing
//! feeds it desired routes, so it only cleans up stale routes of its own.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use felix::routes::{Reconciler, ReconcilerConfig};
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
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds, not {v}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
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
    let config = ReconcilerConfig {
        table: args.table,
        iface_prefixes: args.iface_prefixes,
        resync_interval: seconds("resync-interval", args.resync_interval)?,
        grace_period: seconds("grace-period", args.grace_period)?,
        ..ReconcilerConfig::default()
    };
    let reconciler = Reconciler::start(config).context("starting the route reconciler")?;
    let handle = reconciler.handle();
    let report = handle.flush().await.context("first resync")?;
    tracing::info!(
        ops = report.ops,
        failures = report.failures.len(),
        "route reconciler running"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    tracing::info!("stopping; routes stay in the kernel");
    reconciler.stop().await;
    Ok(())
}
