//! Kubernetes Services and EndpointSlices, read and watched cluster-wide,
//! for service advertisement (BGPConfiguration `serviceClusterIPs`,
//! `serviceExternalIPs`, `serviceLoadBalancerIPs`): which service
//! addresses exist, with which traffic policies, and on which nodes each
//! service has a ready endpoint.
//!
//! ```text
//!  KubeServices::watch() ─► two tasks, Services and EndpointSlices, each:
//!    list  GET /api/v1/services (/apis/discovery.k8s.io/v1/endpointslices)
//!            ─► the whole set, slimmed         R = list's resourceVersion
//!    watch from R: ADDED / MODIFIED / DELETED ─► the whole set again
//!            BOOKMARK ─► R;  stream ends ─► watch again;  410 Gone ─► list
//!    a failed request ─► Failed(error), then list again (1 s, doubling to
//!    30 s); the sets sent last stay the truth meanwhile
//! ```
//!
//! What is kept of each object is only what advertisement decides with
//! ([`ServiceAddrs`], [`SliceEndpoints`]); a set is sent only when that
//! changed, so endpoint churn that does not move a ready endpoint between
//! nodes costs nothing downstream.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::secrets::{is_gone, is_gone_err};
use crate::{Error, KubeOptions};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const SILENCE_SLACK: Duration = Duration::from_secs(30);

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `(namespace, name)`.
pub type NsName = (String, String);

/// A Service's addresses and traffic policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAddrs {
    /// `spec.clusterIPs` (none for a headless Service).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// `spec.internalTrafficPolicy: Local`.
    pub internal_local: bool,
}

/// The nodes an EndpointSlice has ready endpoints on, and its Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceEndpoints {
    /// The Service's name (same namespace as the slice).
    pub service: String,
    pub ready_nodes: BTreeSet<String>,
}

/// What [`ServicesWatch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicesEvent {
    /// Every Service now.
    Services(BTreeMap<NsName, ServiceAddrs>),
    /// Every EndpointSlice that names a Service, now.
    Slices(BTreeMap<NsName, SliceEndpoints>),
    /// A request failed; the watch lists again after a back-off.
    Failed(String),
}

/// A Service as advertisement sees it. Addresses that do not parse
/// (`None` of a headless Service, an empty string) are left out.
pub fn service_addrs(s: &Service) -> ServiceAddrs {
    let ips = |v: Option<&Vec<String>>| -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = v
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let spec = s.spec.as_ref();
    let mut cluster_ips = ips(spec.and_then(|s| s.cluster_ips.as_ref()));
    if cluster_ips.is_empty()
        && let Some(ip) = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|a| a.parse().ok())
    {
        cluster_ips.push(ip);
    }
    let lb: Vec<String> = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    ServiceAddrs {
        cluster_ips,
        external_ips: ips(spec.and_then(|s| s.external_ips.as_ref())),
        load_balancer_ips: ips(Some(&lb)),
        external_local: spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local"),
        internal_local: spec.and_then(|s| s.internal_traffic_policy.as_deref()) == Some("Local"),
    }
}

/// An EndpointSlice as advertisement sees it; `None` when it names no
/// Service. An endpoint counts when it is on a node and not reported
/// unready (a missing `ready` condition means ready, as the API says).
pub fn slice_endpoints(s: &EndpointSlice) -> Option<SliceEndpoints> {
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let ready_nodes = s
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.node_name.clone())
        .collect();
    Some(SliceEndpoints {
        service,
        ready_nodes,
    })
}

/// Reads Services and EndpointSlices of every namespace.
#[derive(Clone)]
pub struct KubeServices {
    client: kube::Client,
    server: String,
    opts: KubeOptions,
}

impl Debug for KubeServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeServices")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeServices {
    pub fn new(client: kube::Client, server: &str, opts: KubeOptions) -> Self {
        KubeServices {
            client,
            server: server.to_string(),
            opts,
        }
    }

    /// Connects the way the Kubernetes datastore does (`KUBECONFIG`, else
    /// the in-cluster service account).
    pub async fn connect() -> Result<Self, Error> {
        let (client, server) =
            crate::kubernetes::client_for(crate::kubernetes::infer_config().await?)?;
        Ok(Self::new(client, &server, KubeOptions::default()))
    }

    /// Starts watching both kinds; the watch stops when the returned
    /// [`ServicesWatch`] drops.
    pub fn watch(&self) -> ServicesWatch {
        let (tx, rx) = mpsc::channel(16);
        let services = Reader {
            api: Api::<Service>::all(self.client.clone()),
            what: "services",
            server: self.server.clone(),
            opts: self.opts.clone(),
            tx: tx.clone(),
        };
        let slices = Reader {
            api: Api::<EndpointSlice>::all(self.client.clone()),
            what: "endpointslices",
            server: self.server.clone(),
            opts: self.opts.clone(),
            tx,
        };
        let tasks = vec![
            tokio::spawn(services.run(|s| Some(service_addrs(s)), ServicesEvent::Services)),
            tokio::spawn(slices.run(slice_endpoints, ServicesEvent::Slices)),
        ];
        ServicesWatch { rx, tasks }
    }
}

/// The events of a running watch; it stops when this drops.
#[derive(Debug)]
pub struct ServicesWatch {
    rx: mpsc::Receiver<ServicesEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServicesWatch {
    /// The next event; `None` only if both tasks ended.
    pub async fn recv(&mut self) -> Option<ServicesEvent> {
        self.rx.recv().await
    }
}

impl Drop for ServicesWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Reader<K> {
    api: Api<K>,
    /// The resource's plural, for errors.
    what: &'static str,
    server: String,
    opts: KubeOptions,
    tx: mpsc::Sender<ServicesEvent>,
}

enum Round {
    Relist,
    Failed(String),
    /// Nobody listens any more.
    Closed,
}

fn key_of<K: kube::Resource>(o: &K) -> Option<NsName> {
    let m = o.meta();
    Some((m.namespace.clone().unwrap_or_default(), m.name.clone()?))
}

impl<K> Reader<K>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    async fn run<T: Clone + PartialEq + Send + 'static>(
        self,
        slim: fn(&K) -> Option<T>,
        wrap: fn(BTreeMap<NsName, T>) -> ServicesEvent,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut last: Option<BTreeMap<NsName, T>> = None;
        loop {
            match self.round(slim, wrap, &mut last).await {
                Round::Closed => return,
                Round::Relist => backoff = BACKOFF_MIN,
                Round::Failed(e) => {
                    tracing::warn!(resource = self.what, error = %e, retry_in = ?backoff,
                        "cannot read Kubernetes services for advertisement");
                    if self.tx.send(ServicesEvent::Failed(e)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn failure(&self, verb: &str, e: impl std::fmt::Display) -> Round {
        Round::Failed(format!(
            "cannot {verb} {} at {}: {e}; calico-node needs list and watch on services and \
             endpointslices (the ClusterRole in deploy/calico-node.yaml)",
            self.what, self.server
        ))
    }

    async fn round<T: Clone + PartialEq>(
        &self,
        slim: fn(&K) -> Option<T>,
        wrap: fn(BTreeMap<NsName, T>) -> ServicesEvent,
        last: &mut Option<BTreeMap<NsName, T>>,
    ) -> Round {
        let list = match tokio::time::timeout(
            self.opts.request_timeout,
            self.api.list(&ListParams::default()),
        )
        .await
        {
            Err(_) => return self.failure("list", "no answer"),
            Ok(Err(e)) => return self.failure("list", e),
            Ok(Ok(l)) => l,
        };
        let mut rv = list.metadata.resource_version.unwrap_or_default();
        let mut set: BTreeMap<NsName, T> = list
            .items
            .iter()
            .filter_map(|o| Some((key_of(o)?, slim(o)?)))
            .collect();
        let send = |set: &BTreeMap<NsName, T>, last: &mut Option<BTreeMap<NsName, T>>| {
            if last.as_ref() == Some(set) {
                return None;
            }
            *last = Some(set.clone());
            Some(wrap(set.clone()))
        };
        if let Some(ev) = send(&set, last)
            && self.tx.send(ev).await.is_err()
        {
            return Round::Closed;
        }
        let timeout = u32::try_from(self.opts.watch_timeout.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        let wp = WatchParams::default().timeout(timeout);
        let silence = self.opts.watch_timeout + SILENCE_SLACK;
        loop {
            let started =
                tokio::time::timeout(self.opts.request_timeout, self.api.watch(&wp, &rv)).await;
            let mut events = match started {
                Err(_) => return self.failure("watch", "no answer"),
                Ok(Err(e)) if is_gone_err(&e) => return Round::Relist,
                Ok(Err(e)) => return self.failure("watch", e),
                Ok(Ok(s)) => Box::pin(s),
            };
            loop {
                let ev = match tokio::time::timeout(silence, events.next()).await {
                    Err(_) => return self.failure("watch", "the watch went silent"),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return self.failure("watch", e),
                    Ok(Some(Ok(ev))) => ev,
                };
                match ev {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                        if let Some(v) = &o.meta().resource_version {
                            rv = v.clone();
                        }
                        let Some(k) = key_of(&o) else { continue };
                        match slim(&o) {
                            Some(t) => set.insert(k, t),
                            None => set.remove(&k),
                        };
                    }
                    WatchEvent::Deleted(o) => {
                        if let Some(v) = &o.meta().resource_version {
                            rv = v.clone();
                        }
                        if let Some(k) = key_of(&o) {
                            set.remove(&k);
                        }
                    }
                    WatchEvent::Bookmark(b) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(status) if is_gone(&status) => return Round::Relist,
                    WatchEvent::Error(status) => {
                        return self.failure(
                            "watch",
                            format!("{} {}: {}", status.code, status.reason, status.message),
                        );
                    }
                }
                if let Some(ev) = send(&set, last)
                    && self.tx.send(ev).await.is_err()
                {
                    return Round::Closed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_service_keeps_its_addresses_and_policies_and_drops_what_does_not_parse() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                "externalIPs": ["192.0.2.7", "not-an-ip"],
                "externalTrafficPolicy": "Local"
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}, {"hostname": "lb.example"}]}}
        }));
        let a = service_addrs(&s);
        assert_eq!(
            a.cluster_ips,
            vec![
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00:96::10".parse().unwrap()
            ]
        );
        assert_eq!(a.external_ips, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            a.load_balancer_ips,
            vec!["198.51.100.9".parse::<IpAddr>().unwrap()]
        );
        assert!(a.external_local && !a.internal_local);

        let headless = service_addrs(&svc(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "internalTrafficPolicy": "Local"}
        })));
        assert!(headless.cluster_ips.is_empty());
        assert!(headless.internal_local);
    }

    #[test]
    fn a_slice_names_the_nodes_of_its_ready_endpoints() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.65.0.2"], "nodeName": "node-0", "conditions": {"ready": true}},
                {"addresses": ["10.65.1.2"], "nodeName": "node-1", "conditions": {"ready": false}},
                {"addresses": ["10.65.2.2"], "nodeName": "node-2"},
                {"addresses": ["10.65.3.2"]}
            ]
        }))
        .unwrap();
        let e = slice_endpoints(&s).unwrap();
        assert_eq!(e.service, "web");
        assert_eq!(
            e.ready_nodes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["node-0", "node-2"]
        );
        // A slice that names no Service is nobody's.
        let mut orphan = s.clone();
        orphan.metadata.labels = None;
        assert!(slice_endpoints(&orphan).is_none());
    }
}
