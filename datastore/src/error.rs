//! The datastore's errors. Each says which object was involved and, where
//! the user can do something about it, what.

use crate::Revision;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{key} does not exist")]
    NotFound { key: String },

    #[error("{key} already exists")]
    AlreadyExists { key: String },

    /// A compare-and-swap write lost a race: the object changed since it was
    /// read. Callers re-read and retry.
    #[error("{key} was modified concurrently (expected revision {expected}); re-read and retry")]
    Conflict { key: String, expected: Revision },

    /// The datastore cannot be reached or did not answer in time. `hint`
    /// says what to check (the etcd endpoints, the kubeconfig, ...).
    #[error("datastore unavailable ({endpoints}): {reason}; {hint}")]
    Unavailable {
        endpoints: String,
        reason: String,
        hint: &'static str,
    },

    /// The Kubernetes API server does not serve one of Calico's resource
    /// types: the CustomResourceDefinitions are not installed.
    #[error(
        "the Kubernetes API server has no {resource} resource: Calico's CustomResourceDefinitions \
         are not installed; install them with `kubectl apply -f deploy/crds.yaml`"
    )]
    CrdMissing { resource: String },

    /// The Kubernetes API server refused the request (401/403): the
    /// credentials or the RBAC rules are wrong.
    #[error(
        "the Kubernetes API server refused to {verb} {resource}: {reason}; check calico-node's \
         ServiceAccount and ClusterRole (deploy/calico-node.yaml)"
    )]
    Forbidden {
        verb: &'static str,
        resource: String,
        reason: String,
    },

    /// etcd refused this client's login (`ETCD_USERNAME`,
    /// `ETCD_PASSWORD`) or the user's role lacks a permission.
    #[error("etcd refused {who}: {reason}; {hint}")]
    EtcdAuth {
        who: String,
        reason: String,
        hint: &'static str,
    },

    /// A stored value does not parse as the type its key says it is.
    #[error("{key} holds a value that is not a valid {kind}: {source}")]
    Decode {
        key: String,
        kind: &'static str,
        source: serde_json::Error,
    },

    #[error("cannot encode {kind} for {key}: {source}")]
    Encode {
        key: String,
        kind: &'static str,
        source: serde_json::Error,
    },

    /// The settings that select and reach the datastore are wrong
    /// (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`, a default pool from the
    /// environment): nothing was sent.
    #[error("bad datastore configuration: {0}")]
    Config(String),

    /// A name or key that cannot be stored (empty, contains '/', ...).
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// The kind has no place in this datastore: Kubernetes' own objects
    /// (Pods, Namespaces, networking.k8s.io NetworkPolicies) are not in
    /// etcd, and Calico keeps WorkloadEndpoints and Profiles in etcd only
    /// (with Kubernetes it derives them from Pods and Namespaces).
    #[error("{kind} objects are not stored in {store}: {reason}")]
    NotStored {
        kind: &'static str,
        store: &'static str,
        reason: &'static str,
    },

    /// Anything else the backend reported.
    #[error("datastore error on {key}: {reason}")]
    Backend { key: String, reason: String },
}

impl Error {
    /// Whether retrying the same operation later may succeed without any
    /// change by the caller.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Conflict { .. })
    }
}
