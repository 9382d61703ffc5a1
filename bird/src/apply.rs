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
    /// The listen IP bird started with (its TOML file's; `None`: none),
    /// read at the first apply: what a push without `listen_address`
    /// (bindMode back to None) returns to.
    started_with: Arc<std::sync::OnceLock<Option<std::net::IpAddr>>>,
}

/// The service, for the control socket's router.
pub fn service(speaker: Arc<Speaker>) -> BgpConfigServiceServer<ApplyService> {
    BgpConfigServiceServer::new(ApplyService {
        speaker,
        last: Arc::default(),
        started_with: Arc::default(),
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
        let started = *self
            .started_with
            .get_or_init(|| current.as_ref().map(|c| c.listen.ip()));
        let mut base = current.clone();
        if let Some(b) = base.as_mut() {
            b.listen
                .set_ip(started.unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)));
        }
        let cfg = Config::from_proto(&pb, base.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // First, so that this push's own lines follow the new level.
        if !pb.log_severity.is_empty() {
            proto::daemon::apply_log_severity(&pb.log_severity);
        }
        // confd pushes every second; only a change is worth a line.
        if current.as_ref() != Some(&cfg) {
            info!(node = %pb.node, peers = cfg.peers.len(), blocks = cfg.advertise.len(), "configuration from confd");
        }
        let report = self.speaker.apply(cfg.clone()).await?;
        *last = Some(cfg);
        Ok(Response::new(ApplyBgpConfigReply {
            peers_added: report.added,
            peers_removed: report.removed,
            peers_changed: report.changed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib_task::RibHandle;
    use crate::test_logs::Logs;
    use proto::common::IpAddress;

    fn addr(s: &str) -> Option<IpAddress> {
        Some(s.parse::<std::net::IpAddr>().unwrap().into())
    }

    #[tokio::test]
    async fn the_same_push_again_changes_nothing_and_logs_nothing() {
        let (rib, mut events) = RibHandle::detached();
        let svc = ApplyService {
            speaker: Speaker::with_rib(rib, tokio::spawn(async {})),
            last: Arc::default(),
            started_with: Arc::default(),
        };
        // A free port rather than BGP's 179.
        let port = std::net::TcpListener::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pb = pb::BgpConfig {
            node: "node-1".into(),
            router_id: addr("10.0.0.1"),
            asn: 64512,
            listen_port: u32::from(port),
            advertise: vec![
                "10.65.1.0/26"
                    .parse::<ipnetwork::IpNetwork>()
                    .unwrap()
                    .into(),
            ],
            ..Default::default()
        };
        svc.apply(Request::new(pb.clone())).await.unwrap();
        while events.try_recv().is_ok() {}

        let (logs, _guard) = Logs::capture();
        let reply = svc.apply(Request::new(pb)).await.unwrap().into_inner();
        assert_eq!(
            (reply.peers_added, reply.peers_removed, reply.peers_changed),
            (0, 0, 0)
        );
        assert!(events.try_recv().is_err(), "nothing re-originated");
        assert_eq!(logs.text(), "", "no log line");
    }
}
