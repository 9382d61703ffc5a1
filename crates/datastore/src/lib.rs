//! The datastore: one typed get / list / watch / create / compare-and-swap
//! update / delete interface over Calico's resources, whichever store holds
//! them, and IPAM on top of it.
//!
//! ```text
//!   confd, IPAM, calico-node ──► Client (typed: IPPool, BGPPeer, blocks...)
//!                                   │ model-form JSON + revisions
//!                                   ▼
//!                            dyn Backend ──► EtcdBackend (Calico's etcd v3 layout)
//!                                        └─► Kubernetes CRDs (its own issue)
//! ```
//!
//! The etcd backend uses Calico's key layout and value formats, so a
//! calico-rs node reads what Calico wrote. Watches resume after a dropped
//! connection without losing or repeating an event, and fall back to a
//! fresh snapshot only when etcd has compacted the history they need.
//! IPAM ([`ipam`]) follows Calico's block/affinity/handle model.

mod backend;
mod client;
mod error;
pub mod etcd;
pub mod ipam;
mod key;

pub use backend::{Backend, Kv, Revision, WatchEvent, WatchStream};
pub use client::{Client, Resource, ResourceEvent, ResourceWatch, Versioned};
pub use error::Error;
pub use etcd::{EtcdBackend, EtcdConfig};
pub use key::{Key, ListKey, ResourceKind, check_name};

/// Which datastore Calico's `DATASTORE_TYPE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreType {
    Etcdv3,
    Kubernetes,
}

impl std::str::FromStr for DatastoreType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "etcdv3" => Ok(DatastoreType::Etcdv3),
            "kubernetes" => Ok(DatastoreType::Kubernetes),
            other => Err(Error::InvalidKey(format!(
                "DATASTORE_TYPE {other:?} is not supported; use etcdv3 or kubernetes"
            ))),
        }
    }
}

/// Connects to etcd at Calico's `ETCD_ENDPOINTS`-style endpoint list.
pub async fn connect_etcd(endpoints: &str) -> Result<Client, Error> {
    let cfg = EtcdConfig::from_endpoints_var(endpoints)?;
    Ok(Client::new(EtcdBackend::connect(cfg).await?))
}
