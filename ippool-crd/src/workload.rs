//! Calico's WorkloadEndpoint and Profile (`projectcalico.org/v3`), as the
//! etcd datastore holds them: a workload endpoint is one pod's interface
//! (written by the CNI side when the pod is added, with the pod's labels,
//! addresses and profiles); a profile `kns.<namespace>` carries the
//! namespace's labels for namespace selectors (`labelsToApply`, each
//! prefixed `pcns.`). With the Kubernetes datastore Calico derives both
//! from Pods and Namespaces and neither is stored.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The orchestrator of Kubernetes pods.
pub const ORCHESTRATOR_K8S: &str = "k8s";
/// The prefix of a namespace's profile: `kns.<namespace>`.
pub const NAMESPACE_PROFILE_PREFIX: &str = "kns.";
/// The prefix Calico gives namespace labels in a profile's
/// `labelsToApply`.
pub const NAMESPACE_LABEL_PREFIX: &str = "pcns.";

/// A named port of an endpoint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    pub port: u16,
}

/// One workload's network interface.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "WorkloadEndpoint",
    plural = "workloadendpoints",
    singular = "workloadendpoint",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "A Calico workload endpoint: one pod interface, its labels, addresses and profiles."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    /// `k8s` for pods.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    /// The node the endpoint is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// The pod-side interface name (`eth0`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// The endpoint's addresses, as /32 and /128 CIDRs.
    #[serde(rename = "ipNetworks", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    /// Profiles applied when no policy selects the endpoint, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The host-side interface name (`caliXXXXXXXXXXX`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// A Calico profile. calico-rs reads only the namespace profiles'
/// `labelsToApply` (see the module doc).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "projectcalico.org",
    version = "v3",
    kind = "Profile",
    plural = "profiles",
    singular = "profile",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Calico profile: labels applied to the endpoints that name it, and default rules."
)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    /// Labels every endpoint naming this profile inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_to_apply: Option<BTreeMap<String, String>>,
    /// Rules, kept as stored (calico-rs applies a namespace profile as
    /// Calico's Kubernetes namespace profile: allow both ways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub ingress: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub egress: Option<Vec<serde_json::Value>>,
}

impl Profile {
    /// The namespace profile of `namespace` with its labels, as Calico's
    /// kube-controllers writes it: `labelsToApply` holds each label with
    /// `pcns.` before its key, and `pcns.projectcalico.org/name`.
    pub fn for_namespace(namespace: &str, labels: &BTreeMap<String, String>) -> Profile {
        let mut apply: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone()))
            .collect();
        apply.insert(
            format!("{NAMESPACE_LABEL_PREFIX}projectcalico.org/name"),
            namespace.to_string(),
        );
        let allow = vec![serde_json::json!({"action": "Allow"})];
        Profile::new(
            &format!("{NAMESPACE_PROFILE_PREFIX}{namespace}"),
            ProfileSpec {
                labels_to_apply: Some(apply),
                ingress: Some(allow.clone()),
                egress: Some(allow),
            },
        )
    }

    /// For a `kns.<namespace>` profile: the namespace, and its labels
    /// without the `pcns.` prefix (other labels it applies are left out).
    pub fn namespace_labels(&self) -> Option<(&str, BTreeMap<String, String>)> {
        let ns = self
            .metadata
            .name
            .as_deref()?
            .strip_prefix(NAMESPACE_PROFILE_PREFIX)?;
        let labels = self
            .spec
            .labels_to_apply
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix(NAMESPACE_LABEL_PREFIX)?.to_string(),
                    v.clone(),
                ))
            })
            .collect();
        Some((ns, labels))
    }
}

/// Calico's name of a pod's workload endpoint:
/// `<node>-k8s-<pod>-<endpoint>`, each part's dashes doubled so the name
/// splits back unambiguously. `None` if a part is empty or begins or ends
/// with a dash (Calico refuses those).
pub fn workload_endpoint_name(node: &str, pod: &str, endpoint: &str) -> Option<String> {
    let parts = [node, ORCHESTRATOR_K8S, pod, endpoint];
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        if p.is_empty() || p.starts_with('-') || p.ends_with('-') {
            return None;
        }
        out.push(p.replace('-', "--"));
    }
    Some(out.join("-"))
}

/// The parts of a workload endpoint name (the inverse of
/// [`workload_endpoint_name`]): every single dash separates, a double
/// dash is a dash inside a part.
pub fn split_workload_endpoint_name(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = name.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        if c == '-' && !first {
            if chars.peek() == Some(&'-') {
                chars.next();
                cur.push('-');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        first = false;
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_escape_dashes_like_calico() {
        assert_eq!(
            workload_endpoint_name("node-1", "web-0", "eth0").as_deref(),
            Some("node--1-k8s-web--0-eth0")
        );
        assert_eq!(
            workload_endpoint_name("n", "p", "eth0").as_deref(),
            Some("n-k8s-p-eth0")
        );
        assert_eq!(workload_endpoint_name("n", "-p", "eth0"), None);
        assert_eq!(workload_endpoint_name("n", "p-", "eth0"), None);
        assert_eq!(workload_endpoint_name("", "p", "eth0"), None);
        for (node, pod) in [("node-1", "web-0"), ("a--b", "c---d"), ("n", "p")] {
            let name = workload_endpoint_name(node, pod, "eth0").unwrap();
            assert_eq!(
                split_workload_endpoint_name(&name),
                [node, "k8s", pod, "eth0"],
                "{name}"
            );
        }
    }

    #[test]
    fn a_namespace_profile_carries_the_labels_prefixed() {
        let p = Profile::for_namespace("prod", &BTreeMap::from([("team".into(), "a".into())]));
        assert_eq!(p.metadata.name.as_deref(), Some("kns.prod"));
        let apply = p.spec.labels_to_apply.clone().unwrap();
        assert_eq!(apply["pcns.team"], "a");
        assert_eq!(apply["pcns.projectcalico.org/name"], "prod");
        let (ns, labels) = p.namespace_labels().unwrap();
        assert_eq!(ns, "prod");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["projectcalico.org/name"], "prod");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["spec"]["labelsToApply"]["pcns.team"], "a");
        let other = Profile::new("ksa.prod.default", ProfileSpec::default());
        assert!(other.namespace_labels().is_none());
    }
}
