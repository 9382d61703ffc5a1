//! felix's gRPC surface on its control socket:
//!
//! ```text
//!  confd ──DataplaneConfigService──┐
//!  CNI   ──WorkloadService─────────┼──► Shared { DataplaneHandle, PodInterfaces,
//!  node  ──FelixStatusService──────┤     Ipam, WorkloadStore, flags }
//!        ──Health──────────────────┘
//!  bird  ◄──RouteService (felix is the client, see bgpfeed)
//! ```
//!
//! Readiness: felix is ready once confd's configuration arrived and, when
//! it watches bird, bird's first route snapshot is in. The same two events
//! release route deletions held since start (a restarted felix never
//! removes routes only because their owners have not re-sent them yet).

mod config;
mod status;
mod workload;

use std::sync::{Arc, Mutex};

use datastore::ipam::Ipam;
use proto::felix::dataplane_config_service_server::DataplaneConfigServiceServer;
use proto::felix::felix_status_service_server::FelixStatusServiceServer;
use proto::felix::workload_service_server::WorkloadServiceServer;
use proto::health_service::HealthReporter;
use tokio::sync::watch;

use crate::dataplane::DataplaneHandle;
use crate::routes::RouteHandle;
use crate::store::WorkloadStore;
use crate::workload::PodInterfaces;

pub use config::{Config, parse as parse_config};

pub struct State {
    pub node: String,
    pub dataplane: DataplaneHandle,
    pub routes: RouteHandle,
    pub workloads: Arc<PodInterfaces>,
    pub store: WorkloadStore,
    pub ipam: Option<Ipam>,
    /// In etcd mode: where the pods' WorkloadEndpoints are written (see
    /// `policy::source::wep`). `None` with the Kubernetes datastore (the
    /// Pod is the endpoint) or without a datastore.
    pub endpoints: Option<datastore::Client>,
    /// In Kubernetes mode: where a pod's addresses are annotated at ADD
    /// (`cni.projectcalico.org/podIPs`, as Calico's CNI plugin does), so
    /// that every felix's policy knows them before kubelet reports the
    /// pod's status.
    pub pods: Option<datastore::Client>,
    /// What the policy dataplane has in the kernel; an ADD waits (a
    /// bounded time) until the new pod's interface is programmed. `None`
    /// without policy.
    pub policy_programmed: Option<watch::Receiver<crate::policy::nft::Programmed>>,
    pub container_iface: String,
    pub configured: watch::Sender<bool>,
    pub routes_synced: watch::Sender<bool>,
    /// Whether felix watches bird (else routes count as synced).
    pub watches_bird: bool,
    pub last_config: Mutex<Option<Config>>,
    /// CNI request durations, reported in the status reply.
    pub cni_metrics: crate::metrics::CniMetrics,
    /// Sandboxes whose ADD is under way: a GC leaves them alone.
    pub adding: Mutex<std::collections::HashSet<String>>,
}

pub type Shared = Arc<State>;

/// The tonic router with every felix service.
pub fn router(state: Shared, health: &HealthReporter) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .add_service(health.service())
        .add_service(DataplaneConfigServiceServer::new(config::ConfigService(
            state.clone(),
        )))
        .add_service(WorkloadServiceServer::new(workload::CniService(
            state.clone(),
        )))
        .add_service(FelixStatusServiceServer::new(status::StatusService(state)))
}

/// Re-adopts the pods recorded on disk whose interfaces still exist, and
/// forgets the rest. Returns (restored, dropped).
pub async fn restore_workloads(state: &State) -> (usize, usize) {
    let mut restored = 0;
    let mut dropped = 0;
    for rec in state.store.list() {
        match state.workloads.restore(&rec.workload()).await {
            Ok(true) => restored += 1,
            Ok(false) => {
                tracing::info!(container = %rec.container_id, iface = %rec.host_iface,
                    "recorded pod's interface is gone; forgetting it");
                let _ = state.store.remove(&rec.container_id);
                dropped += 1;
            }
            Err(e) => {
                tracing::warn!(container = %rec.container_id, error = %e, "cannot re-adopt pod");
                dropped += 1;
            }
        }
    }
    (restored, dropped)
}

/// Follows `configured` and `routes_synced`: publishes readiness, and the
/// first time both hold, lets the reconciler delete stale routes.
pub async fn track_readiness(state: Shared, health: HealthReporter) {
    let mut configured = state.configured.subscribe();
    let mut synced = state.routes_synced.subscribe();
    let mut released = false;
    loop {
        let c = *configured.borrow_and_update();
        let r = *synced.borrow_and_update() || !state.watches_bird;
        match (c, r) {
            (true, true) => {
                health.set_ready();
                if !released {
                    if let Err(e) = state.routes.mark_in_sync() {
                        tracing::warn!(error = %e, "cannot release held route deletions");
                    } else {
                        tracing::info!("in sync: stale routes may now be removed");
                    }
                    released = true;
                }
            }
            (false, _) => health.set_not_ready("waiting for configuration from confd"),
            (true, false) => health.set_not_ready("waiting for the first route snapshot from bird"),
        }
        tokio::select! {
            r = configured.changed() => if r.is_err() { return },
            r = synced.changed() => if r.is_err() { return },
        }
    }
}
