//! What the policy source knows, and the snapshot it makes of it: plain
//! data, changed one datastore event at a time, no I/O.
//!
//! Policies are converted when they change (not on every snapshot), and a
//! policy that does not convert is logged once per change and kept as its
//! error. Endpoints are kept without their namespace's labels; the
//! snapshot joins the two, so a namespace relabelled moves all its pods.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::ResourceEvent;
use datastore::kubernetes::objects::{Namespace, Pod};
use ippool_crd::policy::Protocol;
use ippool_crd::workload::NAMESPACE_PROFILE_PREFIX;
use ippool_crd::{GlobalNetworkPolicy, NetworkPolicy, Profile as CalicoProfile, WorkloadEndpoint};
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::policy::{Endpoint, NamedPort, Policy, PolicyError, PolicySet, PolicySnapshot, Profile};
use crate::policy::{calico, k8s, labels};
use crate::workload::naming;

/// One watched kind: a feed of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feed {
    KubernetesPolicies,
    CalicoPolicies,
    GlobalPolicies,
    Pods,
    Namespaces,
    WorkloadEndpoints,
    Profiles,
}

impl Feed {
    /// What each datastore holds the cluster's policy in.
    pub fn of(kubernetes: bool) -> &'static [Feed] {
        if kubernetes {
            &[
                Feed::KubernetesPolicies,
                Feed::CalicoPolicies,
                Feed::GlobalPolicies,
                Feed::Pods,
                Feed::Namespaces,
            ]
        } else {
            &[
                Feed::CalicoPolicies,
                Feed::GlobalPolicies,
                Feed::WorkloadEndpoints,
                Feed::Profiles,
            ]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Feed::KubernetesPolicies => "NetworkPolicies (networking.k8s.io)",
            Feed::CalicoPolicies => "Calico NetworkPolicies",
            Feed::GlobalPolicies => "GlobalNetworkPolicies",
            Feed::Pods => "Pods",
            Feed::Namespaces => "Namespaces",
            Feed::WorkloadEndpoints => "WorkloadEndpoints",
            Feed::Profiles => "Profiles",
        }
    }
}

/// One datastore event, typed.
#[derive(Debug, Clone)]
pub enum Change {
    KubernetesPolicy(ResourceEvent<KubeNetworkPolicy>),
    CalicoPolicy(ResourceEvent<NetworkPolicy>),
    GlobalPolicy(ResourceEvent<GlobalNetworkPolicy>),
    Pod(ResourceEvent<Pod>),
    Namespace(ResourceEvent<Namespace>),
    WorkloadEndpoint(ResourceEvent<WorkloadEndpoint>),
    Profile(ResourceEvent<CalicoProfile>),
}

impl Change {
    pub fn feed(&self) -> Feed {
        match self {
            Change::KubernetesPolicy(_) => Feed::KubernetesPolicies,
            Change::CalicoPolicy(_) => Feed::CalicoPolicies,
            Change::GlobalPolicy(_) => Feed::GlobalPolicies,
            Change::Pod(_) => Feed::Pods,
            Change::Namespace(_) => Feed::Namespaces,
            Change::WorkloadEndpoint(_) => Feed::WorkloadEndpoints,
            Change::Profile(_) => Feed::Profiles,
        }
    }
}

/// An endpoint, and where it is.
#[derive(Debug, Clone, PartialEq)]
struct Located {
    /// Without its namespace's labels (the snapshot adds them).
    endpoint: Endpoint,
    node: String,
    /// The host side of its veth.
    iface: String,
}

/// A policy's place: which feed, and its `namespace/name` or name.
type PolicyKey = (Feed, String);

/// The source's state.
#[derive(Debug)]
pub struct Index {
    node: String,
    iface_prefix: String,
    feeds: &'static [Feed],
    listed: BTreeSet<Feed>,
    policies: BTreeMap<PolicyKey, Result<Policy, PolicyError>>,
    /// By the datastore object's `namespace/name` (a pod's, or a workload
    /// endpoint's).
    endpoints: BTreeMap<String, Located>,
    /// Namespace → its labels (Namespaces, or `kns.` Profiles).
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

fn object_id(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl Index {
    /// For the Kubernetes datastore (`kubernetes`) or etcd.
    pub fn new(node: &str, iface_prefix: &str, kubernetes: bool) -> Index {
        Index {
            node: node.to_string(),
            iface_prefix: iface_prefix.to_string(),
            feeds: Feed::of(kubernetes),
            listed: BTreeSet::new(),
            policies: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            namespaces: BTreeMap::new(),
        }
    }

    pub fn feeds(&self) -> &'static [Feed] {
        self.feeds
    }

    /// Every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.feeds.iter().all(|f| self.listed.contains(f))
    }

    /// Applies one event; says whether the snapshot changed.
    pub fn apply(&mut self, change: Change) -> bool {
        let feed = change.feed();
        let was_synced = self.synced();
        let changed = match change {
            Change::KubernetesPolicy(ev) => self.policy_event(feed, ev, |p| {
                (
                    object_id(p.metadata.namespace.as_deref(), name_of(&p.metadata)),
                    k8s::convert(p),
                )
            }),
            Change::CalicoPolicy(ev) => self.policy_event(feed, ev, |p| {
                (
                    object_id(p.metadata.namespace.as_deref(), name_of(&p.metadata)),
                    calico::convert_namespaced(p),
                )
            }),
            Change::GlobalPolicy(ev) => self.policy_event(feed, ev, |p| {
                (name_of(&p.metadata).to_string(), calico::convert_global(p))
            }),
            Change::Pod(ev) => {
                let (node, prefix) = (self.node.clone(), self.iface_prefix.clone());
                self.endpoint_event(feed, ev, |p| pod_endpoint(p, &node, &prefix))
            }
            Change::WorkloadEndpoint(ev) => {
                let prefix = self.iface_prefix.clone();
                self.endpoint_event(feed, ev, |w| wep_endpoint(w, &prefix))
            }
            Change::Namespace(ev) => self.namespace_event(feed, ev, |n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                Some((name_of(&n.metadata).to_string(), labels))
            }),
            Change::Profile(ev) => self.namespace_event(feed, ev, |p| {
                let (ns, labels) = p.namespace_labels()?;
                Some((ns.to_string(), labels))
            }),
        };
        changed || (!was_synced && self.synced())
    }

    fn policy_event<R>(
        &mut self,
        feed: Feed,
        ev: ResourceEvent<R>,
        convert: impl Fn(&R) -> (String, Result<Policy, PolicyError>),
    ) -> bool {
        match ev {
            ResourceEvent::Snapshot { items, .. } => {
                self.listed.insert(feed);
                let fresh: BTreeMap<PolicyKey, _> = items
                    .iter()
                    .map(|p| {
                        let (name, r) = convert(p);
                        ((feed, name), r)
                    })
                    .collect();
                let old: Vec<PolicyKey> = self
                    .policies
                    .keys()
                    .filter(|(f, _)| *f == feed)
                    .cloned()
                    .collect();
                let mut changed = false;
                for k in old {
                    if !fresh.contains_key(&k) {
                        self.policies.remove(&k);
                        changed = true;
                    }
                }
                for (k, r) in fresh {
                    changed |= self.put_policy(k, r);
                }
                changed
            }
            ResourceEvent::Created(p) | ResourceEvent::Updated(p) => {
                let (name, r) = convert(&p);
                self.put_policy((feed, name), r)
            }
            ResourceEvent::Deleted {
                name, namespace, ..
            } => {
                let key = (feed, object_id(namespace.as_deref(), &name));
                self.policies.remove(&key).is_some()
            }
        }
    }

    fn put_policy(&mut self, key: PolicyKey, r: Result<Policy, PolicyError>) -> bool {
        if self.policies.get(&key) == Some(&r) {
            return false;
        }
        // Logged once per change: an unchanged bad policy read again (a
        // relist, a resync) says nothing new.
        if let Err(e) = &r {
            tracing::warn!(policy = %e.name, "{e}");
        } else if matches!(self.policies.get(&key), Some(Err(_))) {
            tracing::info!(policy = %key.1, "policy converts again; enforcing it");
        }
        self.policies.insert(key, r);
        true
    }

    fn endpoint_event<R: kube::Resource>(
        &mut self,
        feed: Feed,
        ev: ResourceEvent<R>,
        located: impl Fn(&R) -> Option<Located>,
    ) -> bool {
        let id = |r: &R| object_id(r.meta().namespace.as_deref(), name_of(r.meta()));
        match ev {
            ResourceEvent::Snapshot { items, .. } => {
                self.listed.insert(feed);
                let fresh: BTreeMap<String, Located> = items
                    .iter()
                    .filter_map(|r| Some((id(r), located(r)?)))
                    .collect();
                let changed = fresh != self.endpoints;
                self.endpoints = fresh;
                changed
            }
            ResourceEvent::Created(r) | ResourceEvent::Updated(r) => {
                let key = id(&r);
                match located(&r) {
                    Some(l) => {
                        if self.endpoints.get(&key) == Some(&l) {
                            return false;
                        }
                        self.endpoints.insert(key, l);
                        true
                    }
                    None => self.endpoints.remove(&key).is_some(),
                }
            }
            ResourceEvent::Deleted {
                name, namespace, ..
            } => self
                .endpoints
                .remove(&object_id(namespace.as_deref(), &name))
                .is_some(),
        }
    }

    fn namespace_event<R>(
        &mut self,
        feed: Feed,
        ev: ResourceEvent<R>,
        labels_of: impl Fn(&R) -> Option<(String, BTreeMap<String, String>)>,
    ) -> bool {
        match ev {
            ResourceEvent::Snapshot { items, .. } => {
                self.listed.insert(feed);
                let fresh: BTreeMap<_, _> = items.iter().filter_map(&labels_of).collect();
                let changed = fresh != self.namespaces;
                self.namespaces = fresh;
                changed
            }
            ResourceEvent::Created(r) | ResourceEvent::Updated(r) => match labels_of(&r) {
                Some((ns, labels)) => {
                    if self.namespaces.get(&ns) == Some(&labels) {
                        return false;
                    }
                    self.namespaces.insert(ns, labels);
                    true
                }
                None => false,
            },
            ResourceEvent::Deleted { name, .. } => {
                // A Namespace by its name; a Profile `kns.<namespace>`.
                let ns = match feed {
                    Feed::Profiles => match name.strip_prefix(NAMESPACE_PROFILE_PREFIX) {
                        Some(ns) => ns.to_string(),
                        None => return false,
                    },
                    _ => name,
                };
                self.namespaces.remove(&ns).is_some()
            }
        }
    }

    /// The snapshot of what is known now.
    pub fn snapshot(&self) -> PolicySnapshot {
        let mut endpoints = BTreeMap::new();
        let mut local = BTreeMap::new();
        // Every namespace gets Calico's namespace profile (allow all);
        // in etcd, also one an endpoint names whose Profile is not
        // stored (there is no kube-controllers to write it).
        let mut profile_namespaces: BTreeSet<&str> =
            self.namespaces.keys().map(String::as_str).collect();
        for l in self.endpoints.values() {
            let mut ep = l.endpoint.clone();
            if let Some(labels) = self.namespaces.get(&ep.namespace) {
                ep.namespace_labels = labels.clone();
            }
            for p in &l.endpoint.profiles {
                if let Some(ns) = p.strip_prefix(NAMESPACE_PROFILE_PREFIX) {
                    profile_namespaces.insert(ns);
                }
            }
            let id = ep.id();
            if l.node == self.node {
                local.insert(id.clone(), l.iface.clone());
            }
            endpoints.insert(id, ep);
        }
        let profiles = profile_namespaces
            .into_iter()
            .map(Profile::namespace)
            .collect();
        let mut policies = Vec::new();
        let mut errors = Vec::new();
        for r in self.policies.values() {
            match r {
                Ok(p) => policies.push(p.clone()),
                Err(e) => errors.push(e.clone()),
            }
        }
        PolicySnapshot {
            policies: PolicySet::new(policies, profiles),
            endpoints,
            local,
            errors,
            synced: self.synced(),
        }
    }
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn parse_ips<'a>(what: &str, texts: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    texts
        .into_iter()
        .filter_map(|t| {
            // A CIDR (a workload endpoint's ipNetworks) or a bare address.
            let addr = t.split('/').next().unwrap_or(t);
            match addr.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    tracing::warn!(
                        endpoint = what,
                        address = t,
                        "skipping an address that does not parse"
                    );
                    None
                }
            }
        })
        .collect()
}

fn named_port(protocol: Option<&str>, port: i64) -> Option<NamedPort> {
    let protocol =
        Protocol::parse(&IntOrString::String(protocol.unwrap_or("TCP").to_string())).ok()?;
    Some(NamedPort {
        protocol,
        port: u16::try_from(port).ok().filter(|p| *p > 0)?,
    })
}

/// A pod as an endpoint: not for host-network pods (they are the host's
/// addresses), ended pods (their addresses may be another pod's by now)
/// or pods not yet on a node.
fn pod_endpoint(pod: &Pod, node: &str, prefix: &str) -> Option<Located> {
    if pod.spec.host_network || pod.terminated() {
        return None;
    }
    let on = pod.spec.node_name.clone().filter(|n| !n.is_empty())?;
    let ns = pod.metadata.namespace.as_deref()?;
    let name = pod.metadata.name.as_deref()?;
    let mut ep = Endpoint::pod(
        ns,
        name,
        pod.metadata.labels.clone().unwrap_or_default(),
        BTreeMap::new(),
        Vec::new(),
    );
    let ips = pod.ip_strings();
    ep.addresses = parse_ips(&ep.id(), ips.iter().map(String::as_str));
    for c in &pod.spec.containers {
        for p in &c.ports {
            if let (Some(pn), Some(np)) = (
                &p.name,
                named_port(p.protocol.as_deref(), i64::from(p.container_port)),
            ) {
                ep.named_ports.insert(pn.clone(), np);
            }
        }
    }
    let iface = if on == node {
        naming::host_iface_name(prefix, ns, name)
    } else {
        String::new()
    };
    Some(Located {
        endpoint: ep,
        node: on,
        iface,
    })
}

/// A workload endpoint as an endpoint, named by its pod.
fn wep_endpoint(w: &WorkloadEndpoint, prefix: &str) -> Option<Located> {
    let ns = w.metadata.namespace.as_deref()?;
    let pod = if w.spec.pod.is_empty() {
        w.metadata.name.as_deref()?
    } else {
        w.spec.pod.as_str()
    };
    let mut own = w.metadata.labels.clone().unwrap_or_default();
    // Calico's own labels: the model adds them to what selectors see.
    own.remove(labels::NAMESPACE);
    own.remove(labels::ORCHESTRATOR);
    let mut ep = Endpoint::pod(ns, pod, own, BTreeMap::new(), Vec::new());
    ep.addresses = parse_ips(&ep.id(), w.spec.ip_networks.iter().map(String::as_str));
    ep.profiles = w.spec.profiles.clone();
    for p in &w.spec.ports {
        if let Some(np) = named_port(Some(&p.protocol), i64::from(p.port)) {
            ep.named_ports.insert(p.name.clone(), np);
        }
    }
    let iface = if w.spec.interface_name.is_empty() {
        naming::host_iface_name(prefix, ns, pod)
    } else {
        w.spec.interface_name.clone()
    };
    Some(Located {
        endpoint: ep,
        node: w.spec.node.clone(),
        iface,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use datastore::Revision;
    use serde_json::json;

    use super::*;

    fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
        }))
        .unwrap()
    }

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn snap<R>(items: Vec<R>) -> ResourceEvent<R> {
        ResourceEvent::Snapshot {
            items,
            revision: Revision("1".into()),
        }
    }

    fn kube_index() -> Index {
        Index::new("node-1", "cali", true)
    }

    #[test]
    fn synced_only_once_every_kind_is_listed() {
        let mut ix = kube_index();
        assert!(!ix.snapshot().synced);
        assert!(ix.apply(Change::Pod(snap(vec![pod(
            "a",
            "p",
            "node-1",
            "10.0.0.1",
            json!({})
        )]))));
        assert!(ix.apply(Change::Namespace(snap(vec![ns("a", json!({}))]))));
        assert!(!ix.apply(Change::KubernetesPolicy(snap(vec![]))));
        assert!(!ix.apply(Change::CalicoPolicy(snap(vec![]))));
        assert!(!ix.synced());
        // The last list changes nothing but makes the view complete.
        assert!(ix.apply(Change::GlobalPolicy(snap(vec![]))));
        let s = ix.snapshot();
        assert!(s.synced);
        assert_eq!(s.endpoints.len(), 1);
        assert_eq!(
            s.local.get("a/p").map(String::as_str),
            Some(naming::host_iface_name("cali", "a", "p").as_str())
        );
        let ep = &s.endpoints["a/p"];
        assert_eq!(ep.named_ports["http"].port, 8080);
        assert_eq!(ep.named_ports["http"].protocol, Protocol::TCP);
        assert!(s.policies.profile("kns.a").is_some());
    }

    #[test]
    fn endpoints_follow_pods_and_namespaces() {
        let mut ix = kube_index();
        ix.apply(Change::Namespace(snap(vec![ns("a", json!({"team": "x"}))])));
        ix.apply(Change::Pod(snap(vec![
            pod("a", "p", "node-1", "10.0.0.1", json!({"app": "web"})),
            pod("a", "q", "node-2", "10.0.0.2", json!({})),
        ])));
        let s = ix.snapshot();
        assert_eq!(s.endpoints["a/p"].namespace_labels["team"], "x");
        assert_eq!(s.local.keys().collect::<Vec<_>>(), ["a/p"]);

        // The same pod again (a status heartbeat): nothing to publish.
        assert!(!ix.apply(Change::Pod(ResourceEvent::Updated(pod(
            "a",
            "p",
            "node-1",
            "10.0.0.1",
            json!({"app": "web"})
        )))));
        // Relabelled.
        assert!(ix.apply(Change::Pod(ResourceEvent::Updated(pod(
            "a",
            "p",
            "node-1",
            "10.0.0.1",
            json!({"app": "db"})
        )))));
        assert_eq!(ix.snapshot().endpoints["a/p"].labels["app"], "db");
        // The namespace relabelled moves its pods.
        assert!(ix.apply(Change::Namespace(ResourceEvent::Updated(ns(
            "a",
            json!({"team": "y"})
        )))));
        assert_eq!(ix.snapshot().endpoints["a/q"].namespace_labels["team"], "y");
        // Ended pods and host-network pods are not endpoints.
        let mut done = pod("a", "q", "node-2", "10.0.0.2", json!({}));
        done.status.phase = Some("Succeeded".into());
        assert!(ix.apply(Change::Pod(ResourceEvent::Updated(done))));
        let mut host = pod("a", "h", "node-1", "10.1.0.1", json!({}));
        host.spec.host_network = true;
        assert!(!ix.apply(Change::Pod(ResourceEvent::Created(host))));
        assert!(ix.apply(Change::Pod(ResourceEvent::Deleted {
            name: "p".into(),
            namespace: Some("a".into()),
            revision: Revision("9".into()),
        })));
        assert!(ix.snapshot().endpoints.is_empty());
    }

    #[test]
    fn a_bad_policy_is_an_error_and_the_others_apply() {
        let mut ix = kube_index();
        let good: GlobalNetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "good"}, "spec": {"selector": "all()", "ingress": [{"action": "Deny"}]}
        }))
        .unwrap();
        let bad: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "bad", "namespace": "a"}, "spec": {"selector": "app = 'x'"}
        }))
        .unwrap();
        ix.apply(Change::GlobalPolicy(snap(vec![good])));
        assert!(ix.apply(Change::CalicoPolicy(ResourceEvent::Created(bad.clone()))));
        // The same bad policy again is no change (and is not logged again).
        assert!(!ix.apply(Change::CalicoPolicy(ResourceEvent::Updated(bad))));
        let s = ix.snapshot();
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert_eq!(s.errors[0].name, "a/bad");
        let names: Vec<_> = s
            .policies
            .policies()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["good"]);
        // A relist without it drops it.
        assert!(ix.apply(Change::CalicoPolicy(snap(vec![]))));
        assert!(ix.snapshot().errors.is_empty());
    }

    #[test]
    fn workload_endpoints_and_namespace_profiles_in_etcd() {
        let mut ix = Index::new("node-1", "cali", false);
        let wep: WorkloadEndpoint = serde_json::from_value(json!({
            "metadata": {"name": "node--1-k8s-web-eth0", "namespace": "prod",
                         "labels": {"app": "web", "projectcalico.org/namespace": "prod",
                                    "projectcalico.org/orchestrator": "k8s"}},
            "spec": {"orchestrator": "k8s", "node": "node-1", "pod": "web", "endpoint": "eth0",
                     "interfaceName": "cali0123456789a", "ipNetworks": ["10.65.0.7/32"],
                     "profiles": ["kns.prod"],
                     "ports": [{"name": "dns", "protocol": "UDP", "port": 53}]}
        }))
        .unwrap();
        ix.apply(Change::WorkloadEndpoint(snap(vec![wep])));
        ix.apply(Change::CalicoPolicy(snap(vec![])));
        ix.apply(Change::GlobalPolicy(snap(vec![])));
        // No Profile stored: the namespace profile is still there.
        assert!(ix.apply(Change::Profile(snap(vec![]))));
        let s = ix.snapshot();
        assert!(s.synced);
        let ep = &s.endpoints["prod/web"];
        assert_eq!(ep.addresses, ["10.65.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(ep.labels.len(), 1);
        assert_eq!(ep.named_ports["dns"].protocol, Protocol::UDP);
        assert_eq!(s.local["prod/web"], "cali0123456789a");
        assert!(s.policies.profile("kns.prod").is_some());
        // The namespace's labels come from its profile.
        let p =
            CalicoProfile::for_namespace("prod", &BTreeMap::from([("env".into(), "live".into())]));
        assert!(ix.apply(Change::Profile(ResourceEvent::Created(p))));
        assert_eq!(
            ix.snapshot().endpoints["prod/web"].namespace_labels["env"],
            "live"
        );
        assert!(ix.apply(Change::Profile(ResourceEvent::Deleted {
            name: "kns.prod".into(),
            namespace: None,
            revision: Revision("3".into()),
        })));
        assert!(
            ix.snapshot().endpoints["prod/web"]
                .namespace_labels
                .is_empty()
        );
    }
}
