//! `calico.bgpconfig.v1.BgpConfigService`: confd pushes the node's whole
//! BGP configuration; it becomes a [`Config`] ([`Config::from_proto`]) and
//! goes through [`Speaker::apply`].

use std::sync::Arc;

use proto::bgpconfig::bgp_config_service_server::{BgpConfigService, BgpConfigServiceServer};
use proto::bgpconfig::{self as pb, ApplyBgpConfigReply};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::config::Config;
use crate::speaker::Speaker;

#[derive(Debug, Clone)]
pub struct ApplyService {
    speaker: Arc<Speaker>,
    /// Serialises applies, and remembers the last one as the base for the
    /// listen address.
    last: Arc<tokio::sync::Mutex<Option<Config>>>,
}

/// The service, for the control socket's router.
pub fn service(speaker: Arc<Speaker>) -> BgpConfigServiceServer<ApplyService> {
    BgpConfigServiceServer::new(ApplyService {
        speaker,
        last: Arc::default(),
    })
}

#[tonic::async_trait]
impl BgpConfigService for ApplyService {
    async fn apply(
        &self,
        req: Request<pb::BgpConfig>,
    ) -> Result<Response<ApplyBgpConfigReply>, Status> {
        let pb = req.into_inner();
        let mut last = self.last.lock().await;
        let current = match last.as_ref() {
            Some(c) => Some(c.clone()),
            None => self.speaker.config().await,
        };
        let cfg = Config::from_proto(&pb, current.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        info!(node = %pb.node, peers = cfg.peers.len(), blocks = cfg.advertise.len(), "configuration from confd");
        let report = self.speaker.apply(cfg.clone()).await?;
        *last = Some(cfg);
        Ok(Response::new(ApplyBgpConfigReply {
            peers_added: report.added,
            peers_removed: report.removed,
            peers_changed: report.changed,
        }))
    }
}
