//! `confd`: watches the datastore and configures this node's bird and felix.
//!
//! ```text
//! confd run    [--node N] [--etcd-endpoints URLS] [--bird-socket P] [--felix-socket P] ...
//! confd render [--node N] [--etcd-endpoints URLS]    # print this node's config once
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use confd::push::{self, Target};
use confd::sync::{self, Published, SyncOptions};
use datastore::DatastoreConfig;
use proto::health_service::HealthReporter;

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
    #[arg(long, env = "DATASTORE_TYPE")]
    datastore_type: Option<String>,
    /// Comma-separated etcd URLs (etcdv3; default http://127.0.0.1:2379).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    etcd_endpoints: Option<String>,
    /// Directory holding BGP passwords as <secret>/<key> files.
    #[arg(long, env = "CALICO_BGP_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Watch the datastore and push configuration until stopped.
    Run {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "/run/calico/bird.sock")]
        bird_socket: PathBuf,
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

async fn connect(c: &Common) -> anyhow::Result<datastore::Client> {
    Ok(datastore_config(c)?.connect().await?)
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

fn start_sync(client: datastore::Client, c: &Common) -> sync::DatastoreSync {
    sync::start(
        client,
        SyncOptions {
            node: c.node.clone(),
            secrets_dir: c.secrets_dir.clone(),
        },
    )
}

/// One thread runs confd's tasks: they wait on the datastore and the gRPC
/// sockets and never compute for long.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Render { common, timeout } => {
            let client = connect(&common).await?;
            let s = start_sync(client, &common);
            let mut rx = s.subscribe();
            let wait = async {
                loop {
                    match &*rx.borrow_and_update() {
                        Published::Config(c) => return Ok(confd::render::render(c)),
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
            felix_socket,
            render_file,
            socket,
        } => {
            let shutdown = proto::daemon::shutdown_signal()?;
            let client = connect(&common).await?;
            let health = HealthReporter::new("confd");
            let listener = proto::uds::bind(&socket).await?;
            let router = tonic::transport::Server::builder().add_service(health.service());
            let sock = socket.clone();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                proto::uds::serve(router, listener, &sock, async {
                    let _ = stop_rx.await;
                })
                .await
            });

            let s = start_sync(client, &common);
            let _bird = tokio::spawn(push::deliver(Target::Bird, bird_socket, s.subscribe()));
            let _felix = tokio::spawn(push::deliver(Target::Felix, felix_socket, s.subscribe()));
            let _file = tokio::spawn(push::write_rendering(render_file, s.subscribe()));
            let mut rx = s.subscribe();
            tracing::info!(node = %common.node, datastore = ?datastore_config(&common)?, "confd started");
            let ready = health.clone();
            let readiness = tokio::spawn(async move {
                loop {
                    match &*rx.borrow_and_update() {
                        Published::Config(_) => ready.set_ready(),
                        Published::Error(e) => ready.set_not_ready(e.clone()),
                        Published::Syncing => ready.set_not_ready("syncing with the datastore"),
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            shutdown.await;
            tracing::info!("confd stopping");
            readiness.abort();
            let _ = stop_tx.send(());
            let _ = server.await;
            Ok(())
        }
    }
}
