//! Service advertisement: the Kubernetes Service addresses this node
//! advertises over BGP, as Calico does, from the default
//! BGPConfiguration's `serviceClusterIPs`, `serviceExternalIPs` and
//! `serviceLoadBalancerIPs`:
//!
//! | what | advertised by |
//! |---|---|
//! | each `serviceClusterIPs` / `serviceExternalIPs` CIDR | every node |
//! | each `serviceLoadBalancerIPs` CIDR (aggregation Enabled, the default) | every node |
//! | a LoadBalancer IP inside them, aggregation Disabled | every node, as /32 (/128) |
//! | the cluster IPs, external IPs and LoadBalancer IPs of a Service with `externalTrafficPolicy: Local`, each inside its kind's CIDRs | only the nodes with a ready endpoint of it, as /32 (/128) |
//! | the cluster IPs of a Service with `internalTrafficPolicy: Local` | likewise |
//!
//! A router peering with the nodes thus reaches any node for a Service
//! (equal-cost over the CIDR), and for a Local one only the nodes that
//! can answer without a second hop (the longer prefix wins), which keeps
//! the client's source address. Addresses outside the configured CIDRs
//! are never advertised: the CIDRs are the operator's allow-list.
//!
//! Services and EndpointSlices come from the Kubernetes API
//! ([`datastore::services`]); the watch runs only while the default
//! BGPConfiguration names a service range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::DatastoreConfig;
use datastore::services::{KubeServices, NsName, ServiceAddrs, ServicesEvent, SliceEndpoints};
use ipnetwork::IpNetwork;
use ippool_crd::{BGPConfiguration, ServiceLoadBalancerAggregation};

/// What confd knows of the cluster's Services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceState {
    pub services: BTreeMap<NsName, ServiceAddrs>,
    pub slices: BTreeMap<NsName, SliceEndpoints>,
}

impl ServiceState {
    /// Applies one event of the watch; `false` if nothing changed.
    pub fn apply(&mut self, ev: ServicesEvent) -> bool {
        match ev {
            ServicesEvent::Services(s) if s != self.services => self.services = s,
            ServicesEvent::Slices(s) if s != self.slices => self.slices = s,
            _ => return false,
        }
        true
    }

    /// The nodes with a ready endpoint of Service `ns/name`.
    fn ready_nodes(&self, ns: &str, name: &str) -> BTreeSet<&str> {
        self.slices
            .iter()
            .filter(|((sns, _), s)| sns == ns && s.service == name)
            .flat_map(|(_, s)| s.ready_nodes.iter().map(String::as_str))
            .collect()
    }
}

/// Whether `cfg` (the default BGPConfiguration) asks for any service
/// advertisement: then Services must be watched.
pub fn wanted(cfg: Option<&BGPConfiguration>) -> bool {
    cfg.is_some_and(|c| {
        let s = &c.spec;
        [
            &s.service_cluster_ips,
            &s.service_external_ips,
            &s.service_load_balancer_ips,
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
    })
}

/// Where Services are read from: the Kubernetes API, with the Kubernetes
/// datastore, or with etcd when a Kubernetes client configuration is
/// there (`KUBECONFIG`, or a pod's service account). `None` (with a
/// warning when it was expected to work): only the ranges are advertised.
pub async fn source_for(datastore: &DatastoreConfig) -> Option<KubeServices> {
    let expected = match datastore {
        DatastoreConfig::Kubernetes => true,
        DatastoreConfig::Etcdv3(_) => {
            std::env::var_os("KUBECONFIG").is_some()
                || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        }
    };
    if !expected {
        return None;
    }
    match KubeServices::connect().await {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Kubernetes Services: service advertisement will announce the configured ranges only");
            None
        }
    }
}

fn host(ip: IpAddr) -> IpNetwork {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(ip, len).unwrap_or_else(|_| IpNetwork::from(ip))
}

/// The service routes `node` advertises (sorted, without duplicates).
pub fn routes(
    cfg: Option<&BGPConfiguration>,
    services: &ServiceState,
    node: &str,
) -> Vec<IpNetwork> {
    let Some(cfg) = cfg else {
        return Vec::new();
    };
    let spec = &cfg.spec;
    let cluster = spec.service_cluster_ip_networks();
    let external = spec.service_external_ip_networks();
    let lb = spec.service_load_balancer_ip_networks();
    let aggregate_lb = spec.service_load_balancer_aggregation.unwrap_or_default()
        == ServiceLoadBalancerAggregation::Enabled;
    let mut out: BTreeSet<IpNetwork> = cluster.iter().chain(&external).copied().collect();
    if aggregate_lb {
        out.extend(lb.iter().copied());
    }
    let inside = |ranges: &[IpNetwork], ip: &IpAddr| ranges.iter().any(|r| r.contains(*ip));
    for ((ns, name), svc) in &services.services {
        let local_here = (svc.external_local || svc.internal_local)
            && services.ready_nodes(ns, name).contains(node);
        // local_here implies a Local policy of either kind.
        if local_here {
            out.extend(
                svc.cluster_ips
                    .iter()
                    .filter(|ip| inside(&cluster, ip))
                    .map(|ip| host(*ip)),
            );
        }
        if svc.external_local {
            if local_here {
                out.extend(
                    svc.external_ips
                        .iter()
                        .filter(|ip| inside(&external, ip))
                        .chain(svc.load_balancer_ips.iter().filter(|ip| inside(&lb, ip)))
                        .map(|ip| host(*ip)),
                );
            }
        } else if !aggregate_lb {
            out.extend(
                svc.load_balancer_ips
                    .iter()
                    .filter(|ip| inside(&lb, ip))
                    .map(|ip| host(*ip)),
            );
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> BGPConfiguration {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "crd.projectcalico.org/v1",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": json
        }))
        .unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn key(name: &str) -> NsName {
        ("default".to_string(), name.to_string())
    }

    fn state() -> ServiceState {
        let mut s = ServiceState::default();
        // Cluster policy everywhere.
        s.services.insert(
            key("web"),
            ServiceAddrs {
                cluster_ips: ips(&["10.96.0.10"]),
                external_ips: ips(&["192.0.2.10"]),
                load_balancer_ips: ips(&["198.51.100.10"]),
                ..Default::default()
            },
        );
        // externalTrafficPolicy: Local, one ready endpoint on node-1.
        s.services.insert(
            key("local"),
            ServiceAddrs {
                cluster_ips: ips(&["10.96.0.20", "fd00:96::20"]),
                external_ips: ips(&["192.0.2.20", "203.0.113.20"]),
                load_balancer_ips: ips(&["198.51.100.20"]),
                external_local: true,
                ..Default::default()
            },
        );
        // internalTrafficPolicy: Local, endpoint on node-2.
        s.services.insert(
            key("internal"),
            ServiceAddrs {
                cluster_ips: ips(&["10.96.0.30"]),
                internal_local: true,
                ..Default::default()
            },
        );
        s.slices.insert(
            key("local-abc"),
            SliceEndpoints {
                service: "local".into(),
                ready_nodes: ["node-1".to_string()].into(),
            },
        );
        s.slices.insert(
            key("internal-abc"),
            SliceEndpoints {
                service: "internal".into(),
                ready_nodes: ["node-2".to_string()].into(),
            },
        );
        // A slice of the same name in another namespace is not ours.
        s.slices.insert(
            ("other".into(), "local-x".into()),
            SliceEndpoints {
                service: "local".into(),
                ready_nodes: ["node-0".to_string()].into(),
            },
        );
        s
    }

    fn texts(v: Vec<IpNetwork>) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_node_advertises_the_ranges_and_local_services_only_where_their_endpoints_are() {
        let c = cfg(serde_json::json!({
            "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": "fd00:96::/112"}],
            "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}],
            "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}]
        }));
        let s = state();
        let ranges = [
            "10.96.0.0/12",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "fd00:96::/112",
        ];
        assert_eq!(texts(routes(Some(&c), &s, "node-0")), ranges);
        // node-1 has the Local service's endpoint: its cluster IPs, the
        // external IP inside the range (not 203.0.113.20) and its LB IP.
        let mut want1: Vec<&str> = ranges.to_vec();
        want1.extend([
            "10.96.0.20/32",
            "192.0.2.20/32",
            "198.51.100.20/32",
            "fd00:96::20/128",
        ]);
        want1.sort_by_key(|s| s.parse::<IpNetwork>().unwrap());
        assert_eq!(texts(routes(Some(&c), &s, "node-1")), want1);
        let mut want2: Vec<&str> = ranges.to_vec();
        want2.push("10.96.0.30/32");
        want2.sort_by_key(|s| s.parse::<IpNetwork>().unwrap());
        assert_eq!(texts(routes(Some(&c), &s, "node-2")), want2);
    }

    #[test]
    fn without_aggregation_each_load_balancer_ip_goes_out_alone() {
        let c = cfg(serde_json::json!({
            "serviceLoadBalancerIPs": [{"cidr": "198.51.100.0/24"}],
            "serviceLoadBalancerAggregation": "Disabled"
        }));
        let s = state();
        // The Cluster service's LB IP from every node; the Local one's
        // only from node-1; no range, no cluster or external IPs.
        assert_eq!(texts(routes(Some(&c), &s, "node-0")), ["198.51.100.10/32"]);
        assert_eq!(
            texts(routes(Some(&c), &s, "node-1")),
            ["198.51.100.10/32", "198.51.100.20/32"]
        );
    }

    #[test]
    fn nothing_without_a_configuration_or_ranges_and_the_watch_is_wanted_only_then() {
        let s = state();
        assert!(routes(None, &s, "node-1").is_empty());
        let empty = cfg(serde_json::json!({"serviceClusterIPs": []}));
        assert!(routes(Some(&empty), &s, "node-1").is_empty());
        assert!(!wanted(Some(&empty)));
        assert!(!wanted(None));
        assert!(wanted(Some(&cfg(serde_json::json!({
            "serviceExternalIPs": [{"cidr": "192.0.2.0/24"}]
        })))));
    }

    #[test]
    fn an_endpoint_leaving_a_node_takes_its_host_route_with_it() {
        let c = cfg(serde_json::json!({"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}));
        let mut s = state();
        assert!(texts(routes(Some(&c), &s, "node-1")).contains(&"10.96.0.20/32".to_string()));
        let mut slices = s.slices.clone();
        slices.get_mut(&key("local-abc")).unwrap().ready_nodes = ["node-0".to_string()].into();
        assert!(s.apply(ServicesEvent::Slices(slices.clone())));
        assert!(!s.apply(ServicesEvent::Slices(slices)), "no change");
        assert!(!texts(routes(Some(&c), &s, "node-1")).contains(&"10.96.0.20/32".to_string()));
        assert!(texts(routes(Some(&c), &s, "node-0")).contains(&"10.96.0.20/32".to_string()));
    }
}
