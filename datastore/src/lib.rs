//! The datastore: one typed get / list / watch / create / compare-and-swap
//! update / delete interface over Calico's resources, whichever store holds
//! them, and IPAM on top of it.
//!
//! ```text
//!   confd, IPAM, calico-node ──► Client (typed: IPPool, BGPPeer, blocks...)
//!                                   │ model-form JSON + revisions
//!                                   ▼
//!                            dyn Backend ──► EtcdBackend (Calico's etcd v3 layout)
//!                                        └─► KubeBackend (CRDs + Node annotations)
//! ```
//!
//! The etcd backend uses Calico's key layout and value formats, so a
//! calico-rs node reads what Calico wrote. Watches resume after a dropped
//! connection without losing or repeating an event, and fall back to a
//! fresh snapshot only when etcd has compacted the history they need; the
//! skeleton of that (list, snapshot, stream, resume or relist) is written
//! once, in `watch`, over what each backend supplies.
//! IPAM ([`ipam`]) follows Calico's block/affinity/handle model.
//! [`secrets`] reads Kubernetes Secrets one by one (confd's BGP
//! passwords in Kubernetes mode).

mod backend;
mod client;
mod error;
pub mod etcd;
pub mod ipam;
mod key;
pub mod kubernetes;
pub mod leader;
pub mod pool_status;
pub mod secrets;
pub mod services;
mod watch;

pub use backend::{Backend, Kv, Revision, WatchEvent, WatchStream};
pub use client::{Client, Resource, ResourceEvent, ResourceWatch, Versioned};
pub use error::Error;
pub use etcd::{EtcdAuth, EtcdBackend, EtcdConfig, EtcdTls};
pub use key::{Key, ListKey, ResourceKind, check_name};
pub use kubernetes::{KubeBackend, KubeOptions};

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
            other => Err(Error::Config(format!(
                "DATASTORE_TYPE {other:?} is not supported; use etcdv3 or kubernetes"
            ))),
        }
    }
}

impl DatastoreType {
    /// Calico's rule for which datastore to use: `DATASTORE_TYPE` when it
    /// is set, else `kubernetes` inside a pod (`KUBERNETES_SERVICE_HOST` is
    /// set), else `etcdv3`. `get` reads one environment variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let set = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        match set("DATASTORE_TYPE") {
            Some(t) => t.trim().parse(),
            None if set("KUBERNETES_SERVICE_HOST").is_some() => Ok(DatastoreType::Kubernetes),
            None => Ok(DatastoreType::Etcdv3),
        }
    }

    /// The `DATASTORE_TYPE` value naming this datastore.
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreType::Etcdv3 => "etcdv3",
            DatastoreType::Kubernetes => "kubernetes",
        }
    }
}

/// The etcd endpoints used when `ETCD_ENDPOINTS` is not set.
pub const DEFAULT_ETCD_ENDPOINTS: &str = "http://127.0.0.1:2379";

/// Which datastore to connect to and how, from Calico's environment
/// variables. Every binary (calico-node, confd, felix) builds its
/// [`Client`] through this, so they all select the backend the same way.
#[derive(Debug, Clone)]
pub enum DatastoreConfig {
    /// `DATASTORE_TYPE=etcdv3`, at `ETCD_ENDPOINTS`.
    Etcdv3(EtcdConfig),
    /// `DATASTORE_TYPE=kubernetes`: the API server named by `KUBECONFIG`,
    /// or the in-cluster service account.
    Kubernetes,
}

impl DatastoreConfig {
    /// From the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From variables read through `get` (see [`DatastoreType::from_lookup`]
    /// for the selection rule; `ETCD_ENDPOINTS` defaults to
    /// [`DEFAULT_ETCD_ENDPOINTS`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        match DatastoreType::from_lookup(&get)? {
            DatastoreType::Etcdv3 => {
                let endpoints = get("ETCD_ENDPOINTS")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_ETCD_ENDPOINTS.to_string());
                let mut cfg = EtcdConfig::from_endpoints_var(&endpoints)?;
                cfg.tls = etcd::EtcdTls::from_lookup(&get)?;
                cfg.auth = etcd::EtcdAuth::from_lookup(&get)?;
                cfg.check_tls()?;
                Ok(DatastoreConfig::Etcdv3(cfg))
            }
            DatastoreType::Kubernetes => Ok(DatastoreConfig::Kubernetes),
        }
    }

    pub fn datastore_type(&self) -> DatastoreType {
        match self {
            DatastoreConfig::Etcdv3(_) => DatastoreType::Etcdv3,
            DatastoreConfig::Kubernetes => DatastoreType::Kubernetes,
        }
    }

    /// Sets up the client. Neither backend waits for its server here: a
    /// node agent starts (and keeps its dataplane) while the datastore is
    /// down, and the first request reports it.
    pub async fn connect(&self) -> Result<Client, Error> {
        match self {
            DatastoreConfig::Etcdv3(cfg) => {
                Ok(Client::new(EtcdBackend::connect(cfg.clone()).await?))
            }
            DatastoreConfig::Kubernetes => Ok(Client::new(KubeBackend::connect().await?)),
        }
    }
}

impl Client {
    /// Connects to the datastore Calico's environment variables select
    /// (see [`DatastoreConfig::from_env`]).
    pub async fn from_env() -> Result<Client, Error> {
        DatastoreConfig::from_env()?.connect().await
    }
}

/// Connects to etcd at Calico's `ETCD_ENDPOINTS`-style endpoint list.
pub async fn connect_etcd(endpoints: &str) -> Result<Client, Error> {
    let cfg = EtcdConfig::from_endpoints_var(endpoints)?;
    Ok(Client::new(EtcdBackend::connect(cfg).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn datastore_type_follows_calicos_rule() {
        let t = |vars: &[(&str, &str)]| DatastoreType::from_lookup(lookup(vars));
        assert_eq!(t(&[]).unwrap(), DatastoreType::Etcdv3);
        assert_eq!(
            t(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]).unwrap(),
            DatastoreType::Kubernetes
        );
        // An explicit choice wins over the in-cluster default.
        assert_eq!(
            t(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("DATASTORE_TYPE", "etcdv3")
            ])
            .unwrap(),
            DatastoreType::Etcdv3
        );
        assert_eq!(
            t(&[("DATASTORE_TYPE", "kubernetes")]).unwrap(),
            DatastoreType::Kubernetes
        );
        // Empty means unset.
        assert_eq!(
            t(&[("DATASTORE_TYPE", ""), ("KUBERNETES_SERVICE_HOST", "")]).unwrap(),
            DatastoreType::Etcdv3
        );
        let err = t(&[("DATASTORE_TYPE", "etcd")]).unwrap_err();
        assert!(
            matches!(&err, Error::Config(_)) && !err.to_string().contains("invalid key"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "bad datastore configuration: DATASTORE_TYPE \"etcd\" is not supported; use etcdv3 or kubernetes"
        );
        let err = DatastoreConfig::from_lookup(lookup(&[("ETCD_ENDPOINTS", "10.0.0.1:2379")]))
            .unwrap_err();
        assert!(matches!(&err, Error::Config(_)), "{err:?}");
    }

    #[test]
    fn etcd_config_takes_etcd_endpoints_or_the_default() {
        match DatastoreConfig::from_lookup(lookup(&[])).unwrap() {
            DatastoreConfig::Etcdv3(c) => assert_eq!(c.endpoints, vec![DEFAULT_ETCD_ENDPOINTS]),
            other => panic!("{other:?}"),
        }
        match DatastoreConfig::from_lookup(lookup(&[(
            "ETCD_ENDPOINTS",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
        )]))
        .unwrap()
        {
            DatastoreConfig::Etcdv3(c) => assert_eq!(c.endpoints.len(), 2),
            other => panic!("{other:?}"),
        }
        let err = DatastoreConfig::from_lookup(lookup(&[("ETCD_ENDPOINTS", "10.0.0.1:2379")]))
            .unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let k = DatastoreConfig::from_lookup(lookup(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("ETCD_ENDPOINTS", "not even a url"),
        ]))
        .unwrap();
        assert_eq!(k.datastore_type(), DatastoreType::Kubernetes);
    }
}
