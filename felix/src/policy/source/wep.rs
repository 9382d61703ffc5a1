//! The WorkloadEndpoint felix writes for a pod in etcd mode, as Calico's
//! CNI plugin does: `<node>-k8s-<pod>-<iface>` in the pod's namespace,
//! orchestrator `k8s`, the node, pod, container ID, interface names, MAC,
//! the addresses as /32 and /128, profile `kns.<namespace>`, and the
//! labels `projectcalico.org/namespace` and `projectcalico.org/orchestrator`.
//!
//! In Kubernetes mode the Pod is the endpoint; felix only writes the
//! pod's addresses on it at ADD ([`annotate_pod`]).
//!
//! Where the pod's own labels come from: Calico's CNI plugin reads them
//! from the Kubernetes Pod; an etcd-mode cluster here has no Kubernetes,
//! so the orchestrator (the lab, a test, an operator with the datastore
//! client — what `calicoctl label workloadendpoint` does) writes them on
//! the WorkloadEndpoint. An ADD keeps the labels already on an endpoint of
//! that name (a retried ADD, labels written ahead of the pod), setting only
//! Calico's two; a DEL removes the endpoint only if it is still this
//! container's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::kubernetes::objects::{
    CONTAINER_ID_ANNOTATION, POD_IP_ANNOTATION, POD_IPS_ANNOTATION, Pod,
};
use datastore::{Client, Error};
use ippool_crd::workload::{NAMESPACE_PROFILE_PREFIX, ORCHESTRATOR_K8S, workload_endpoint_name};
use ippool_crd::{WorkloadEndpoint, WorkloadEndpointSpec};

use crate::policy::labels;

/// How often a write that lost a race (the orchestrator relabelling at the
/// same moment) is tried again.
const ATTEMPTS: usize = 5;

/// One pod's endpoint, as felix made it.
#[derive(Debug, Clone)]
pub struct PodEndpoint<'a> {
    pub node: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container_id: &'a str,
    /// Pod side (`eth0`).
    pub container_iface: &'a str,
    /// Host side (`cali…`).
    pub host_iface: &'a str,
    pub mac: &'a str,
    pub ips: &'a [IpAddr],
}

impl PodEndpoint<'_> {
    /// Calico's name for it; an error if a part cannot be in one.
    pub fn name(&self) -> Result<String, Error> {
        workload_endpoint_name(self.node, self.pod, self.container_iface).ok_or_else(|| {
            Error::InvalidKey(format!(
                "no workload endpoint name for pod {:?} on node {:?} interface {:?}: \
                 each must be non-empty and not begin or end with '-'",
                self.pod, self.node, self.container_iface
            ))
        })
    }

    fn spec(&self) -> WorkloadEndpointSpec {
        WorkloadEndpointSpec {
            orchestrator: ORCHESTRATOR_K8S.into(),
            node: self.node.into(),
            container_id: self.container_id.into(),
            pod: self.pod.into(),
            endpoint: self.container_iface.into(),
            ip_networks: self
                .ips
                .iter()
                .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
                .collect(),
            profiles: vec![format!("{NAMESPACE_PROFILE_PREFIX}{}", self.namespace)],
            interface_name: self.host_iface.into(),
            mac: self.mac.into(),
            ..Default::default()
        }
    }

    fn calico_labels(&self, mut l: BTreeMap<String, String>) -> BTreeMap<String, String> {
        l.insert(labels::NAMESPACE.into(), self.namespace.into());
        l.insert(labels::ORCHESTRATOR.into(), ORCHESTRATOR_K8S.into());
        l
    }
}

/// Creates or updates the pod's WorkloadEndpoint (keeping labels already
/// on it). Returns it as stored.
pub async fn write(client: &Client, ep: &PodEndpoint<'_>) -> Result<WorkloadEndpoint, Error> {
    let name = ep.name()?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let r = match client
            .get_in::<WorkloadEndpoint>(ep.namespace, &name)
            .await?
        {
            Some(mut existing) => {
                existing.spec = ep.spec();
                let labels = existing.metadata.labels.take().unwrap_or_default();
                existing.metadata.labels = Some(ep.calico_labels(labels));
                client.update(&existing).await
            }
            None => {
                let mut w = WorkloadEndpoint::new(&name, ep.spec());
                w.metadata.namespace = Some(ep.namespace.into());
                w.metadata.labels = Some(ep.calico_labels(BTreeMap::new()));
                client.create(&w).await
            }
        };
        match r {
            Ok(w) => return Ok(w),
            Err(
                e @ (Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }),
            ) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Backend {
        key: name,
        reason: "the workload endpoint kept changing".into(),
    }))
}

/// Kubernetes mode: writes the pod's addresses on its Pod, as Calico's CNI
/// plugin does (`cni.projectcalico.org/podIP`, `podIPs`, `containerID`),
/// through the Pod's status subresource. Every felix's policy source
/// reads them from there ([`datastore::kubernetes::objects::Pod::ip_strings`])
/// without waiting for kubelet to report the pod's status after the ADD.
pub async fn annotate_pod(client: &Client, ep: &PodEndpoint<'_>) -> Result<(), Error> {
    let cidrs: Vec<String> = ep
        .ips
        .iter()
        .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
        .collect();
    let annotations = BTreeMap::from([
        (
            POD_IP_ANNOTATION.to_string(),
            cidrs.first().cloned().unwrap_or_default(),
        ),
        (POD_IPS_ANNOTATION.to_string(), cidrs.join(",")),
        (
            CONTAINER_ID_ANNOTATION.to_string(),
            ep.container_id.to_string(),
        ),
    ]);
    client
        .annotate_in::<Pod>(ep.namespace, ep.pod, &annotations)
        .await
}

/// Deletes the pod's WorkloadEndpoint if it is this container's (a newer
/// pod of the same name keeps its own). Gone already is fine.
pub async fn remove(client: &Client, ep: &PodEndpoint<'_>) -> Result<(), Error> {
    let name = ep.name()?;
    for _ in 0..ATTEMPTS {
        let Some(w) = client
            .get_in::<WorkloadEndpoint>(ep.namespace, &name)
            .await?
        else {
            return Ok(());
        };
        if !w.spec.container_id.is_empty() && w.spec.container_id != ep.container_id {
            tracing::info!(endpoint = %name, owner = %w.spec.container_id,
                "workload endpoint belongs to another container; leaving it");
            return Ok(());
        }
        let rev = w.metadata.resource_version.clone().map(datastore::Revision);
        match client
            .delete_in::<WorkloadEndpoint>(ep.namespace, &name, rev.as_ref())
            .await
        {
            Ok(()) | Err(Error::NotFound { .. }) => return Ok(()),
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Backend {
        key: name,
        reason: "the workload endpoint kept changing while it was being deleted".into(),
    })
}
