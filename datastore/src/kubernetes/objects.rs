//! Pods and Namespaces as policy reads them: local structs with only the
//! fields felix uses, not `k8s_openapi`'s full types. calico-node must
//! stay small on every node, and every full Kubernetes type's
//! deserialiser costs code, and every full object memory; a Pod is read
//! as its name, namespace, labels, node, host-network flag, phase,
//! addresses and named container ports, and nothing else is kept.
//!
//! The Kubernetes backend slims each object as it arrives
//! ([`slim_pod`], [`slim_namespace`]), so the watch carries only these
//! fields on to the consumer.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The annotation Calico's CNI plugin writes the pod's addresses into as
/// soon as it has them (before kubelet reports `status.podIPs`).
pub const POD_IPS_ANNOTATION: &str = "cni.projectcalico.org/podIPs";
/// ... its first address.
pub const POD_IP_ANNOTATION: &str = "cni.projectcalico.org/podIP";
/// ... and the sandbox those addresses are for.
pub const CONTAINER_ID_ANNOTATION: &str = "cni.projectcalico.org/containerID";

/// A core/v1 Pod, slimmed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Container {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i32,
    /// TCP (the default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Pending, Running, Succeeded, Failed, Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PodIp {
    pub ip: String,
}

impl Pod {
    /// Whether the pod ran and ended (`Succeeded` or `Failed`): its
    /// addresses may already belong to another pod.
    pub fn terminated(&self) -> bool {
        matches!(
            self.status.phase.as_deref(),
            Some("Succeeded") | Some("Failed")
        )
    }

    /// The pod's addresses as text: the CNI plugin's annotation when it is
    /// there (written at once), else `status.podIPs` (kubelet's report).
    pub fn ip_strings(&self) -> Vec<String> {
        if let Some(a) = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POD_IPS_ANNOTATION))
            .filter(|a| !a.trim().is_empty())
        {
            return a.split(',').map(|s| s.trim().to_string()).collect();
        }
        self.status.pod_ips.iter().map(|p| p.ip.clone()).collect()
    }
}

/// A core/v1 Namespace, slimmed: its name and labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

macro_rules! core_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_resource!(Pod, "Pod", "pods", k8s_openapi::NamespaceResourceScope);
core_resource!(
    Namespace,
    "Namespace",
    "namespaces",
    k8s_openapi::ClusterResourceScope
);

/// The metadata kept: identity, labels, and Calico's own annotations.
fn slim_meta(meta: ObjectMeta) -> ObjectMeta {
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("cni.projectcalico.org/"))
        .collect();
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        annotations: (!annotations.is_empty()).then_some(annotations),
        deletion_timestamp: meta.deletion_timestamp,
        ..Default::default()
    }
}

/// A Pod as the API server sent it → the slim model form; `None` if it
/// does not parse.
pub fn slim_pod(obj: &Value) -> Option<Value> {
    let mut pod: Pod = serde_json::from_value(obj.clone()).ok()?;
    pod.metadata = slim_meta(pod.metadata);
    pod.spec
        .containers
        .retain(|c| c.ports.iter().any(|p| p.name.is_some()));
    for c in &mut pod.spec.containers {
        c.ports.retain(|p| p.name.is_some());
    }
    serde_json::to_value(&pod).ok()
}

/// A Namespace as the API server sent it → the slim model form.
pub fn slim_namespace(obj: &Value) -> Option<Value> {
    let mut ns: Namespace = serde_json::from_value(obj.clone()).ok()?;
    ns.metadata = slim_meta(ns.metadata);
    serde_json::to_value(&ns).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_keeps_only_what_policy_reads() {
        let full = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "prod", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                                "cni.projectcalico.org/podIPs": "10.65.0.5"},
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "web", "image": "nginx", "ports": [
                        {"name": "http", "containerPort": 80},
                        {"containerPort": 9090}
                    ]},
                    {"name": "sidecar", "image": "x", "ports": [{"containerPort": 1}]}
                ],
                "volumes": [{"name": "v"}]
            },
            "status": {"phase": "Running", "podIPs": [{"ip": "10.65.0.5"}],
                       "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let slim = slim_pod(&full).unwrap();
        assert_eq!(
            slim,
            json!({
                "metadata": {
                    "name": "web-0", "namespace": "prod", "uid": "u1", "resourceVersion": "7",
                    "labels": {"app": "web"},
                    "annotations": {"cni.projectcalico.org/podIPs": "10.65.0.5"}
                },
                "spec": {"nodeName": "node-1",
                         "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.65.0.5"}]}
            })
        );
        let pod: Pod = serde_json::from_value(slim).unwrap();
        assert_eq!(pod.ip_strings(), ["10.65.0.5"]);
        assert!(!pod.terminated());
    }

    #[test]
    fn addresses_come_from_the_annotation_first_then_the_status() {
        let mut pod = Pod::default();
        pod.status.pod_ips = vec![PodIp {
            ip: "10.0.0.1".into(),
        }];
        assert_eq!(pod.ip_strings(), ["10.0.0.1"]);
        pod.metadata.annotations = Some(BTreeMap::from([(
            POD_IPS_ANNOTATION.to_string(),
            "10.0.0.2, fd00::2".to_string(),
        )]));
        assert_eq!(pod.ip_strings(), ["10.0.0.2", "fd00::2"]);
        pod.status.phase = Some("Failed".into());
        assert!(pod.terminated());
    }
}
