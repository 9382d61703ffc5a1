//! `confd`: watches the datastore and configures this node's bird and felix.
//!
//! ```text
//! confd run    [--node N] [--etcd-endpoints URLS] [--bird-socket P] [--felix-socket P] ...
//! confd render [--node N] [--etcd-endpoints URLS]    # print this node's config once
//! ```

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::RunConfig;
use crate::secret_watch::source_for;
use crate::sync::{self, Published, SyncOptions};
use anyhow::{Context, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use datastore::{DatastoreConfig, DatastoreType};

#[derive(Parser)]
#[command(
    name = "confd",
    version,
    about = "Renders calico-rs node configuration from the datastore"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// This node's name (Calico's NODENAME).
    #[arg(long, env = "NODENAME")]
    node: String,
    /// etcdv3 or kubernetes; unset: kubernetes inside a pod
    /// (KUBERNETES_SERVICE_HOST set), else etcdv3.
    #[arg(long, env = "DATASTORE_TYPE", value_parser = PossibleValuesParser::new(
        [DatastoreType::Etcdv3.as_str(), DatastoreType::Kubernetes.as_str()]))]
    datastore_type: Option<String>,
    /// Comma-separated etcd URLs (etcdv3; default http://127.0.0.1:2379).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
    /// With etcd: the directory holding BGP passwords as <secret>/<key>
    /// files (a mounted Secret volume).
    #[arg(long, env = "CALICO_BGP_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// With Kubernetes: the namespace of the BGP password Secrets
    /// (default: the client's namespace; inside a pod, its own).
    #[arg(long, env = "CALICO_BGP_SECRETS_NAMESPACE")]
    secrets_namespace: Option<String>,
    /// The BGP router ID when it is not the node's IPv4 address: an IPv4
    /// address, or `hash` (from the node's name; for IPv6-only nodes).
    #[arg(long, env = "CALICO_ROUTER_ID")]
    router_id: Option<crate::state::RouterId>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Watch the datastore and push configuration until stopped.
    Run {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "/run/calico/bird.sock")]
        bird_socket: PathBuf,
        /// No bird on this node (calico-node's CALICO_NETWORKING_BACKEND
        /// vxlan or none): configure felix only.
        #[arg(long)]
        no_bird: bool,
        #[arg(long, default_value = "/run/calico/felix.sock")]
        felix_socket: PathBuf,
        /// Where the human-readable rendering goes.
        #[arg(long, default_value = "/run/calico/confd/config.txt")]
        render_file: PathBuf,
        /// confd's own control socket (health).
        #[arg(long, default_value = "/run/calico/confd.sock")]
        socket: PathBuf,
    },
    /// Print this node's configuration once and exit.
    Render {
        #[command(flatten)]
        common: Common,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
}

/// The datastore the flags (or, for those not given, the environment)
/// select, by the rule every calico-rs binary shares.
fn datastore_config(c: &Common) -> anyhow::Result<DatastoreConfig> {
    Ok(DatastoreConfig::from_lookup(|k| match k {
        "DATASTORE_TYPE" => c.datastore_type.clone(),
        "ETCD_ENDPOINTS" => c.etcd_endpoints.clone(),
        _ => std::env::var(k).ok(),
    })?)
}

/// One thread runs confd's tasks: they wait on the datastore and the gRPC
/// sockets and never compute for long.
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
    proto::daemon::init_logging(proto::daemon::LogTo::Stdout);
    match cli.cmd {
        Cmd::Render { common, timeout } => {
            let datastore = datastore_config(&common)?;
            let client = datastore.connect().await?;
            let secrets = source_for(
                &datastore,
                common.secrets_dir.as_deref(),
                common.secrets_namespace.as_deref(),
            )
            .await?;
            let services = crate::services::source_for(&datastore).await;
            let s = sync::start(
                client,
                SyncOptions {
                    node: common.node.clone(),
                    secrets,
                    services,
                    router_id: common.router_id,
                },
            );
            let mut rx = s.subscribe();
            let wait = async {
                loop {
                    match &*rx.borrow_and_update() {
                        Published::Config(c) => return Ok(crate::render::render(c)),
                        Published::Error(e) => return Err(anyhow::anyhow!("{e}")),
                        Published::Syncing => {}
                    }
                    if rx.changed().await.is_err() {
                        bail!("sync stopped");
                    }
                }
            };
            let text = tokio::time::timeout(Duration::from_secs(timeout), wait)
                .await
                .with_context(|| {
                    format!("no configuration within {timeout}s; is the datastore reachable?")
                })??;
            print!("{text}");
            Ok(())
        }
        Cmd::Run {
            common,
            bird_socket,
            no_bird,
            felix_socket,
            render_file,
            socket,
        } => {
            let cfg = RunConfig {
                datastore: datastore_config(&common)?,
                node: common.node,
                secrets_dir: common.secrets_dir,
                secrets_namespace: common.secrets_namespace,
                router_id: common.router_id,
                bird_socket: (!no_bird).then_some(bird_socket),
                felix_socket,
                render_file,
                socket,
            };
            crate::run(cfg, proto::daemon::shutdown_signal()?).await?;
            Ok(())
        }
    }
}
