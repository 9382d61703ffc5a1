//! `confd run` as a library call: [`run`] starts every task, serves the
//! health socket, and stops it all when `shutdown` resolves.

use std::future::Future;
use std::path::PathBuf;

use datastore::DatastoreConfig;
use proto::health_service::HealthReporter;
use proto::uds::{ServerTask, UdsError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::push::{self, Target};
use crate::secret_watch;
use crate::sync::{self, Published, SyncOptions};

/// What `confd run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// This node's name (Calico's NODENAME).
    pub node: String,
    pub datastore: DatastoreConfig,
    /// With etcd: the directory holding BGP passwords as `<secret>/<key>`
    /// files.
    pub secrets_dir: Option<PathBuf>,
    /// With Kubernetes: the namespace of the password Secrets; `None`:
    /// the client's default (inside a pod, its own namespace).
    pub secrets_namespace: Option<String>,
    /// `CALICO_ROUTER_ID`.
    pub router_id: Option<crate::state::RouterId>,
    /// `None`: no bird on this node (no BGP); felix only.
    pub bird_socket: Option<PathBuf>,
    pub felix_socket: PathBuf,
    /// Where the human-readable rendering goes.
    pub render_file: PathBuf,
    /// confd's own control socket (health).
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up the datastore client: {0}")]
    Datastore(#[from] datastore::Error),
    #[error(transparent)]
    Socket(#[from] UdsError),
}

/// Ready once a configuration is published; not ready, with why, while
/// syncing or when the node cannot be configured.
async fn track_readiness(mut rx: watch::Receiver<Published>, health: HealthReporter) {
    loop {
        match &*rx.borrow_and_update() {
            Published::Config(_) => health.set_ready(),
            Published::Error(e) => health.set_not_ready(e.clone()),
            Published::Syncing => health.set_not_ready("syncing with the datastore"),
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Watches the datastore and configures this node's bird and felix until
/// `shutdown` resolves; then stops every task it started.
pub async fn run(cfg: RunConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let client = cfg.datastore.connect().await?;
    let health = HealthReporter::new("confd");
    let listener = proto::uds::bind(&cfg.socket).await?;
    let server = ServerTask::spawn(
        tonic::transport::Server::builder().add_service(health.service()),
        listener,
        cfg.socket.clone(),
    );

    let secrets = secret_watch::source_for(
        &cfg.datastore,
        cfg.secrets_dir.as_deref(),
        cfg.secrets_namespace.as_deref(),
    )
    .await?;
    let services = crate::services::source_for(&cfg.datastore).await;
    let sync = sync::start(
        client,
        SyncOptions {
            node: cfg.node.clone(),
            secrets,
            services,
            router_id: cfg.router_id,
        },
    );
    let mut tasks = JoinSet::new();
    if let Some(bird) = &cfg.bird_socket {
        tasks.spawn(push::deliver(Target::Bird, bird.clone(), sync.subscribe()));
    }
    tasks.spawn(push::deliver(
        Target::Felix,
        cfg.felix_socket.clone(),
        sync.subscribe(),
    ));
    tasks.spawn(push::write_rendering(
        cfg.render_file.clone(),
        sync.subscribe(),
    ));
    tasks.spawn(track_readiness(sync.subscribe(), health));
    tracing::info!(node = %cfg.node, datastore = ?cfg.datastore, "confd started");

    shutdown.await;
    tracing::info!("confd stopping");
    tasks.shutdown().await;
    drop(sync);
    server.shutdown().await;
    Ok(())
}
