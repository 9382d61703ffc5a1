//! The demo's network policy: pod-0-0 gets `role=db`, pod-1-0 `role=web`,
//! and a Calico NetworkPolicy lets only `role=web` pods reach `role=db`
//! ones. Labels go where each datastore keeps them: on the Pod in
//! Kubernetes mode, on the WorkloadEndpoint in etcd mode (the lab is the
//! orchestrator there, see [`crate::labels`]).
//!
//! Also: any policy manifest (Kubernetes NetworkPolicy, Calico
//! NetworkPolicy or GlobalNetworkPolicy) written through the lab's
//! datastore and deleted again ([`apply_manifests`], [`delete_written`]),
//! for policy tests.

use std::collections::BTreeMap;

use ::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use ippool_crd::{CalicoResource, GlobalNetworkPolicy, NetworkPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use serde::Deserialize;
use serde_json::{Value, json};

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

/// A policy [`apply_manifests`] wrote, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Kubernetes { namespace: String, name: String },
    Calico { namespace: String, name: String },
    Global { name: String },
}

/// Writes every policy of a (multi-document) manifest: Kubernetes
/// `networking.k8s.io/v1` NetworkPolicies to the API server (Kubernetes
/// mode only), Calico NetworkPolicies and GlobalNetworkPolicies (either
/// Calico API version) through the lab's datastore. Stops at the first
/// failure (a lab test then removes the whole lab).
pub fn apply_manifests(st: &LabState, yaml: &str) -> Result<Vec<Written>, ClusterError> {
    let mut kube = Vec::new();
    let mut calico = Vec::new();
    let mut written = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let bad = |e: String| ClusterError::Spec(format!("policy document {}: {e}", i + 1));
        let v = Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        if v["apiVersion"] == "networking.k8s.io/v1" {
            if st.kube.is_none() {
                return Err(bad(
                    "a Kubernetes NetworkPolicy needs a lab made with `--datastore kubernetes`"
                        .into(),
                ));
            }
            let np: KubeNetworkPolicy =
                serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
            written.push(Written::Kubernetes {
                namespace: np.metadata.namespace.clone().unwrap_or_default(),
                name: np.metadata.name.clone().unwrap_or_default(),
            });
            kube.push(np);
            continue;
        }
        let r = CalicoResource::from_value(v).map_err(|e| bad(e.to_string()))?;
        match &r {
            CalicoResource::NetworkPolicy(p) => written.push(Written::Calico {
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                name: p.metadata.name.clone().unwrap_or_default(),
            }),
            CalicoResource::GlobalNetworkPolicy(p) => written.push(Written::Global {
                name: p.metadata.name.clone().unwrap_or_default(),
            }),
            other => return Err(bad(format!("not a policy: {other:?}"))),
        }
        calico.push(r);
    }
    if !kube.is_empty() {
        apiserver::with_admin(st, move |client| async move {
            for np in kube {
                let ns = np.metadata.namespace.clone().unwrap_or_default();
                let api: Api<KubeNetworkPolicy> = Api::namespaced(client.clone(), &ns);
                api.create(&PostParams::default(), &np).await.map_err(|e| {
                    ClusterError::Datastore(format!(
                        "create NetworkPolicy {ns}/{}: {e}",
                        np.metadata.name.as_deref().unwrap_or_default()
                    ))
                })?;
            }
            Ok(())
        })?;
    }
    if !calico.is_empty() {
        with_datastore(st, move |c| async move {
            for r in calico {
                match r {
                    CalicoResource::NetworkPolicy(p) => c.create(&p).await.map(drop)?,
                    CalicoResource::GlobalNetworkPolicy(p) => c.create(&p).await.map(drop)?,
                    _ => {}
                }
            }
            Ok::<_, datastore::Error>(())
        })?;
    }
    Ok(written)
}

/// Deletes what [`apply_manifests`] wrote; a policy already gone is fine.
pub fn delete_written(st: &LabState, written: &[Written]) -> Result<(), ClusterError> {
    let kube: Vec<(String, String)> = written
        .iter()
        .filter_map(|w| match w {
            Written::Kubernetes { namespace, name } => Some((namespace.clone(), name.clone())),
            _ => None,
        })
        .collect();
    let calico: Vec<Written> = written
        .iter()
        .filter(|w| !matches!(w, Written::Kubernetes { .. }))
        .cloned()
        .collect();
    if !kube.is_empty() {
        apiserver::with_admin(st, move |client| async move {
            for (ns, name) in kube {
                let api: Api<KubeNetworkPolicy> = Api::namespaced(client.clone(), &ns);
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(::kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(ClusterError::Datastore(format!(
                            "delete NetworkPolicy {ns}/{name}: {e}"
                        )));
                    }
                }
            }
            Ok(())
        })?;
    }
    if !calico.is_empty() {
        with_datastore(st, move |c| async move {
            for w in calico {
                let r = match &w {
                    Written::Calico { namespace, name } => {
                        c.delete_in::<NetworkPolicy>(namespace, name, None).await
                    }
                    Written::Global { name } => c.delete::<GlobalNetworkPolicy>(name, None).await,
                    Written::Kubernetes { .. } => Ok(()),
                };
                match r {
                    Ok(()) | Err(datastore::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}
