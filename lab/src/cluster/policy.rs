//! The demo's network policy: pod-0-0 gets `role=db`, pod-1-0 `role=web`,
//! and a Calico NetworkPolicy lets only `role=web` pods reach `role=db`
//! ones. Labels go where each datastore keeps them: on the Pod in
//! Kubernetes mode, on the WorkloadEndpoint in etcd mode (the lab is the
//! orchestrator there, see [`crate::labels`]).

use std::collections::BTreeMap;

use ::kube::api::{Api, Patch, PatchParams};
use ippool_crd::NetworkPolicy;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::state::LabState;
use super::{ClusterError, apiserver, with_datastore};

/// The namespace lab pods are in.
const NAMESPACE: &str = "default";
/// The policy's name.
pub const NAME: &str = "demo-db";
/// The pod that becomes `role=db`, and the one that becomes `role=web`.
pub const DB: &str = "pod-0-0";
pub const WEB: &str = "pod-1-0";

/// Labels the two pods and writes the policy.
pub fn apply(st: &LabState) -> Result<(), ClusterError> {
    for (pod, role) in [(DB, "db"), (WEB, "web")] {
        label(st, pod, role)?;
    }
    let np: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "NetworkPolicy",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"selector": "role == 'db'", "types": ["Ingress"],
                 "ingress": [{"action": "Allow", "source": {"selector": "role == 'web'"}}]}
    }))
    .map_err(|e| ClusterError::Spec(format!("the demo policy: {e}")))?;
    with_datastore(st, move |c| async move { c.create(&np).await.map(drop) })
}

/// Deletes the policy (the labels stay; nothing selects by them then).
pub fn remove(st: &LabState) -> Result<(), ClusterError> {
    with_datastore(st, |c| async move {
        c.delete_in::<NetworkPolicy>(NAMESPACE, NAME, None).await
    })
}

fn label(st: &LabState, pod: &str, role: &str) -> Result<(), ClusterError> {
    let labels = BTreeMap::from([("role".to_string(), role.to_string())]);
    let pod = pod.to_string();
    if st.kube.is_some() {
        let patch = json!({"metadata": {"labels": labels}});
        return apiserver::with_admin(st, move |client| async move {
            let api: Api<Pod> = Api::namespaced(client, NAMESPACE);
            api.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|e| ClusterError::Datastore(format!("label Pod {pod}: {e}")))
        });
    }
    let node = st
        .pods
        .iter()
        .find(|p| p.name == pod)
        .map(|p| p.node.clone())
        .ok_or_else(|| ClusterError::Spec(format!("no pod {pod}")))?;
    with_datastore(st, move |c| async move {
        crate::labels::label_pod(&c, &node, NAMESPACE, &pod, &labels).await
    })
}
