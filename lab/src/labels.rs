//! Pod labels in etcd mode. Calico's CNI plugin copies a pod's labels from
//! the Kubernetes Pod onto its WorkloadEndpoint; an etcd-mode lab has no
//! Kubernetes, so the lab is the orchestrator and writes them on the
//! WorkloadEndpoint itself, as `calicoctl label workloadendpoint` would.
//! Labels written before the pod is added are kept by felix's ADD (it
//! fills in the endpoint's spec and Calico's own two labels); labels
//! written after move the endpoint at once.

use std::collections::BTreeMap;

use datastore::{Client, Error};
use ippool_crd::WorkloadEndpoint;
use ippool_crd::workload::workload_endpoint_name;

/// How often a write that lost a race with felix is tried again.
const ATTEMPTS: usize = 5;

/// Sets the labels of pod `namespace/pod` on `node` (its interface
/// `eth0`) to `labels`, keeping Calico's `projectcalico.org/*` labels.
/// Creates a labels-only endpoint when the pod is not added yet.
pub async fn label_pod(
    client: &Client,
    node: &str,
    namespace: &str,
    pod: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let name = workload_endpoint_name(node, pod, "eth0").ok_or_else(|| {
        Error::InvalidKey(format!(
            "pod {pod:?} on node {node:?} has no workload endpoint name"
        ))
    })?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let r = match client.get_in::<WorkloadEndpoint>(namespace, &name).await? {
            Some(mut w) => {
                let mut l: BTreeMap<String, String> = w
                    .metadata
                    .labels
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("projectcalico.org/"))
                    .collect();
                l.extend(labels.clone());
                w.metadata.labels = Some(l);
                client.update(&w).await.map(drop)
            }
            None => {
                let mut w = WorkloadEndpoint::new(&name, Default::default());
                w.metadata.namespace = Some(namespace.into());
                w.metadata.labels = Some(labels.clone());
                client.create(&w).await.map(drop)
            }
        };
        match r {
            Ok(()) => return Ok(()),
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
