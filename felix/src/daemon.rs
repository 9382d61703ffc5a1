//! `felix run` as a library call: [`run`] starts the dataplane and, in
//! managed mode, felix's services, and stops it all when `shutdown`
//! resolves.
//!
//! Managed mode (how calico-node runs felix: a control socket is given)
//! serves configuration from confd, pod interfaces for the CNI plugin
//! (with IPAM, given the node and a datastore), status and health; watches
//! bird's routes when a bird socket is given; re-adopts the pods recorded
//! in the state directory; and deletes no stale route until confd's
//! configuration and bird's first snapshot are in. Standalone, felix only
//! keeps its own routes, tunnel, NAT table and MTU file tidy.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datastore::{DatastoreConfig, DatastoreType};
use proto::health_service::HealthReporter;
use proto::uds::{ServerTask, UdsError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dataplane::{Dataplane, DataplaneConfig, DataplaneError};
use crate::policy::PolicySnapshot;
use crate::policy::nft::Programmed;
use crate::policy::source::{self as policy_source, SourceConfig};
use crate::service;
use crate::store::WorkloadStore;
use crate::tunnel::BackendChoice;
use crate::workload::WorkloadConfig;

/// What `felix run` is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub dataplane: DataplaneConfig,
    /// `None`: standalone.
    pub managed: Option<ManagedConfig>,
}

/// Managed mode's settings.
#[derive(Debug, Clone)]
pub struct ManagedConfig {
    /// felix's control socket.
    pub socket: PathBuf,
    /// bird's control socket, to watch its best routes.
    pub bird_socket: Option<PathBuf>,
    /// This node's name (for IPAM and to check confd's configuration).
    pub node: Option<String>,
    /// The datastore IPAM uses; `None`: pod adds fail (no IPAM).
    pub ipam: Option<DatastoreConfig>,
    /// Where the pods felix made are recorded, to re-adopt them after a
    /// restart.
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the dataplane (FELIX_IPIPBACKEND={ipip_backend})")]
    Start {
        ipip_backend: BackendChoice,
        #[source]
        source: DataplaneError,
    },
    #[error("first resync")]
    FirstResync(#[source] DataplaneError),
    #[error("dataplane status")]
    Status(#[source] DataplaneError),
    #[error("the route reconciler is not running")]
    NoReconciler,
    #[error("cannot set up the datastore client for IPAM: {0}")]
    Datastore(#[from] datastore::Error),
    #[error("opening the state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Socket(#[from] UdsError),
}

/// Runs felix until `shutdown` resolves. Routes and the NAT table stay in
/// the kernel when it stops.
pub async fn run(cfg: RunConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let ipip_backend = cfg.dataplane.ipip_backend;
    let dataplane = Dataplane::start(cfg.dataplane)
        .await
        .map_err(|source| RunError::Start {
            ipip_backend,
            source,
        })?;
    let handle = dataplane.handle();
    let report = handle.flush().await.map_err(RunError::FirstResync)?;
    let status = handle.status().await.map_err(RunError::Status)?;
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

    let managed = match cfg.managed {
        Some(m) => Some(Managed::start(m, &dataplane).await?),
        None => None,
    };
    shutdown.await;
    if let Some(m) = managed {
        m.stop().await;
    }
    tracing::info!("stopping; routes and the NAT table stay in the kernel");
    dataplane.stop().await;
    Ok(())
}

/// Managed mode's running parts: the control socket's server and the
/// tasks beside it (readiness, bird's route feed), and the policy
/// source's snapshots. Dropping it aborts them.
struct Managed {
    server: ServerTask,
    tasks: JoinSet<()>,
    /// The policy source's newest snapshot; `None` without a datastore.
    /// The source's task ends when every receiver (this, the policy
    /// dataplane's) is dropped.
    #[allow(dead_code)]
    policy: Option<watch::Receiver<Arc<PolicySnapshot>>>,
}

impl Managed {
    async fn start(cfg: ManagedConfig, dataplane: &Dataplane) -> Result<Managed, RunError> {
        let ipam = match &cfg.ipam {
            Some(ds) if cfg.node.is_some() => Some(datastore::ipam::Ipam::new(ds.connect().await?)),
            _ => {
                tracing::warn!("no --node / ETCD_ENDPOINTS: pod adds will fail (no IPAM)");
                None
            }
        };
        let store = WorkloadStore::open(&cfg.state_dir).map_err(|source| RunError::StateDir {
            path: cfg.state_dir.clone(),
            source,
        })?;
        let routes = dataplane.routes().ok_or(RunError::NoReconciler)?;
        let workload_cfg = WorkloadConfig::default();
        let policy_iface_prefix = workload_cfg.iface_prefix.clone();
        let datastore_type = cfg.ipam.as_ref().map(DatastoreConfig::datastore_type);
        // The policy source and, in etcd mode, the WorkloadEndpoint
        // writes share IPAM's datastore client.
        let client = ipam.as_ref().map(|i| i.client().clone());
        let endpoints = match (&client, datastore_type) {
            (Some(c), Some(DatastoreType::Etcdv3)) => Some(c.clone()),
            _ => None,
        };
        let pods = match (&client, datastore_type) {
            (Some(c), Some(DatastoreType::Kubernetes)) => Some(c.clone()),
            _ => None,
        };
        let policy = match (client, datastore_type, &cfg.node) {
            (Some(c), Some(t), Some(node)) => {
                tracing::info!(datastore = t.as_str(), "starting the policy source");
                Some(policy_source::spawn(
                    c,
                    t,
                    SourceConfig {
                        node: node.clone(),
                        iface_prefix: workload_cfg.iface_prefix.clone(),
                    },
                ))
            }
            _ => None,
        };
        let (programmed_tx, programmed) = watch::channel(Programmed::Starting);
        let state = Arc::new(service::State {
            node: cfg.node.clone().unwrap_or_default(),
            dataplane: dataplane.handle(),
            routes,
            workloads: dataplane.workloads(),
            store,
            ipam,
            endpoints,
            pods,
            policy_programmed: policy.is_some().then_some(programmed),
            container_iface: workload_cfg.container_iface,
            configured: watch::channel(false).0,
            routes_synced: watch::channel(false).0,
            watches_bird: cfg.bird_socket.is_some(),
            last_config: Mutex::new(None),
            cni_metrics: Default::default(),
            adding: Default::default(),
        });
        let (restored, dropped) = service::restore_workloads(&state).await;
        tracing::info!(restored, dropped, "pods from a previous run");

        let health = HealthReporter::new("felix");
        let mut tasks = JoinSet::new();
        // The policy dataplane programs each snapshot the source
        // publishes (nothing until the source has read every kind once).
        if let Some(rx) = &policy {
            tasks.spawn(crate::policy::nft::run_reporting(
                rx.clone(),
                crate::policy::nft::PolicyDataplaneConfig {
                    iface_prefix: policy_iface_prefix,
                    ..Default::default()
                },
                programmed_tx,
            ));
        }
        tasks.spawn(service::track_readiness(state.clone(), health.clone()));
        if let Some(bird) = &cfg.bird_socket {
            tasks.spawn(crate::bgpfeed::run(
                bird.clone(),
                dataplane.handle(),
                state.routes_synced.clone(),
            ));
        }
        let listener = proto::uds::bind(&cfg.socket).await?;
        let server = ServerTask::spawn(
            service::router(state, &health),
            listener,
            cfg.socket.clone(),
        );
        tracing::info!(socket = %cfg.socket.display(), "serving felix's services");
        Ok(Managed {
            server,
            tasks,
            policy,
        })
    }

    /// Stops serving (in-flight calls finish), then the other tasks.
    async fn stop(self) {
        let Managed {
            server, mut tasks, ..
        } = self;
        server.shutdown().await;
        tasks.shutdown().await;
    }
}
