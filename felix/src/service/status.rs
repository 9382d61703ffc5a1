//! FelixStatusService: what the node agent and operators ask felix.

use proto::felix::felix_status_service_server::FelixStatusService;
use proto::felix::{FelixStatusReply, FelixStatusRequest};
use tonic::{Request, Response, Status};

use super::Shared;

pub struct StatusService(pub Shared);

#[tonic::async_trait]
impl FelixStatusService for StatusService {
    async fn status(
        &self,
        _: Request<FelixStatusRequest>,
    ) -> Result<Response<FelixStatusReply>, Status> {
        let s = &self.0;
        let st = s
            .dataplane
            .status()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(FelixStatusReply {
            ipip_backend: if st.ipip_enabled {
                st.tunnel
                    .as_ref()
                    .map(|t| t.backend.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            routes_programmed: count(st.routes.programmed),
            routes_failing: count(st.routes.desired.saturating_sub(st.routes.programmed)),
            workloads: count(s.workloads.list().len()),
            configured: *s.configured.borrow(),
            routes_synced: *s.routes_synced.borrow() || !s.watches_bird,
            pod_mtu: st.pod_mtu,
            histograms: st
                .routes
                .metrics
                .to_proto()
                .into_iter()
                .chain(s.cni_metrics.to_proto())
                .collect(),
        }))
    }
}
