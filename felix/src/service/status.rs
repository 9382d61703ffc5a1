//! FelixStatusService: what the node agent and operators ask felix.

use proto::felix::felix_status_service_server::FelixStatusService;
use proto::felix::{Counter, FelixStatusReply, FelixStatusRequest};
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
            counters: st
                .tunnel
                .iter()
                .filter(|_| st.ipip_enabled)
                .map(|t| (t.device.as_str(), t.backend, "ipip", &t.stats))
                .chain(
                    st.vxlan
                        .iter()
                        .map(|v| (v.device.as_str(), v.backend, "vxlan", &v.stats)),
                )
                .chain(st.vxlan6.iter().map(|v| {
                    (
                        v.device.as_str(),
                        crate::tunnel::BackendKind::Kernel,
                        "vxlan",
                        &v.stats,
                    )
                }))
                .flat_map(|(device, backend, encap, stats)| {
                    tunnel_counters(device, &backend.to_string(), encap, stats)
                })
                .collect(),
        }))
    }
}

/// A tunnel device's counters as Prometheus series: packets and bytes each
/// way, and what the userspace backends drop, by reason (the kernel's
/// devices count their own drops, which `ip -s link` shows; those are
/// zero here).
fn tunnel_counters(
    device: &str,
    backend: &str,
    encap: &str,
    st: &crate::tunnel::TunnelStats,
) -> Vec<Counter> {
    let series = |name: &str, help: &str, extra: (&str, &str), value: u64| Counter {
        name: name.to_string(),
        help: help.to_string(),
        labels: [
            ("device", device),
            ("backend", backend),
            ("encapsulation", encap),
            extra,
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        value,
    };
    const PACKETS: &str = "felix_tunnel_packets_total";
    const PACKETS_HELP: &str = "Packets through the tunnel device, by direction.";
    const BYTES: &str = "felix_tunnel_bytes_total";
    const BYTES_HELP: &str = "Bytes through the tunnel device, by direction.";
    const DROPS: &str = "felix_tunnel_dropped_packets_total";
    const DROPS_HELP: &str = "Packets felix's userspace tunnel dropped, by reason.";
    vec![
        series(PACKETS, PACKETS_HELP, ("direction", "tx"), st.tx_packets),
        series(PACKETS, PACKETS_HELP, ("direction", "rx"), st.rx_packets),
        series(BYTES, BYTES_HELP, ("direction", "tx"), st.tx_bytes),
        series(BYTES, BYTES_HELP, ("direction", "rx"), st.rx_bytes),
        series(DROPS, DROPS_HELP, ("reason", "tx_no_route"), st.tx_no_route),
        series(DROPS, DROPS_HELP, ("reason", "tx_too_big"), st.tx_too_big),
        series(DROPS, DROPS_HELP, ("reason", "tx_error"), st.tx_errors),
        series(
            DROPS,
            DROPS_HELP,
            ("reason", "rx_unknown_source"),
            st.rx_unknown_source,
        ),
        series(
            DROPS,
            DROPS_HELP,
            ("reason", "rx_malformed"),
            st.rx_malformed,
        ),
        series(DROPS, DROPS_HELP, ("reason", "rx_error"), st.rx_errors),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_counters_label_every_series_and_carry_the_values() {
        let st = crate::tunnel::TunnelStats {
            tx_packets: 1,
            rx_bytes: 2,
            rx_unknown_source: 3,
            ..Default::default()
        };
        let c = tunnel_counters("vxlan.calico", "userspace", "vxlan", &st);
        assert_eq!(c.len(), 10);
        let find = |name: &str, k: &str, v: &str| {
            c.iter()
                .find(|c| c.name == name && c.labels.get(k).map(String::as_str) == Some(v))
                .unwrap()
                .value
        };
        assert_eq!(find("felix_tunnel_packets_total", "direction", "tx"), 1);
        assert_eq!(find("felix_tunnel_bytes_total", "direction", "rx"), 2);
        assert_eq!(
            find(
                "felix_tunnel_dropped_packets_total",
                "reason",
                "rx_unknown_source"
            ),
            3
        );
        assert!(c.iter().all(|c| c.labels["device"] == "vxlan.calico"
            && c.labels["backend"] == "userspace"
            && c.labels["encapsulation"] == "vxlan"));
    }
}
