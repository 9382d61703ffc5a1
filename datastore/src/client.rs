//! The typed layer every component uses: `client.get::<IPPool>("default")`,
//! `client.update(&pool)` (compare-and-swap on its resourceVersion),
//! `client.watch::<BGPPeer>(None)`; and model-form values at IPAM keys.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backend::{Backend, Kv, Revision, WatchEvent, WatchStream};
use crate::{Error, Key, ListKey, ResourceKind};

/// A named Calico resource the datastore stores (IPPool, BGPPeer, ...).
pub trait Resource:
    kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    const KIND: ResourceKind;
}

impl Resource for ippool_crd::IPPool {
    const KIND: ResourceKind = ResourceKind::IPPool;
}
impl Resource for ippool_crd::BGPPeer {
    const KIND: ResourceKind = ResourceKind::BGPPeer;
}
impl Resource for ippool_crd::BGPConfiguration {
    const KIND: ResourceKind = ResourceKind::BGPConfiguration;
}
impl Resource for ippool_crd::BGPFilter {
    const KIND: ResourceKind = ResourceKind::BGPFilter;
}
impl Resource for ippool_crd::Node {
    const KIND: ResourceKind = ResourceKind::Node;
}
impl Resource for ippool_crd::NetworkPolicy {
    const KIND: ResourceKind = ResourceKind::NetworkPolicy;
}
impl Resource for ippool_crd::GlobalNetworkPolicy {
    const KIND: ResourceKind = ResourceKind::GlobalNetworkPolicy;
}
impl Resource for ippool_crd::IPReservation {
    const KIND: ResourceKind = ResourceKind::IPReservation;
}
impl Resource for ippool_crd::WorkloadEndpoint {
    const KIND: ResourceKind = ResourceKind::WorkloadEndpoint;
}
impl Resource for ippool_crd::Profile {
    const KIND: ResourceKind = ResourceKind::Profile;
}
impl Resource for k8s_openapi::api::networking::v1::NetworkPolicy {
    const KIND: ResourceKind = ResourceKind::KubernetesNetworkPolicy;
}
impl Resource for crate::kubernetes::objects::Pod {
    const KIND: ResourceKind = ResourceKind::Pod;
}
impl Resource for crate::kubernetes::objects::Namespace {
    const KIND: ResourceKind = ResourceKind::Namespace;
}

/// A value and the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

/// A typed watch event for a resource kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent<R> {
    /// Replace everything you know of this kind with these.
    Snapshot {
        items: Vec<R>,
        revision: Revision,
    },
    Created(R),
    Updated(R),
    Deleted {
        name: String,
        /// For namespaced kinds.
        namespace: Option<String>,
        revision: Revision,
    },
}

/// Cheap to clone; every clone shares one backend connection.
#[derive(Clone)]
pub struct Client {
    backend: Arc<dyn Backend>,
}

fn decode<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    })
}

fn encode<T: Serialize>(key: &Key, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|source| Error::Encode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    })
}

/// Turns a stored object into `R`: whichever API version it was stored
/// under, with the name taken from the key and the revision as its
/// resourceVersion.
fn decode_resource<R: Resource>(kv: &Kv) -> Result<R, Error> {
    let Key::Resource {
        name, namespace, ..
    } = &kv.key
    else {
        return Err(Error::InvalidKey(format!(
            "{} is not a resource key",
            kv.key
        )));
    };
    let mut v: Value = decode(&kv.key, &kv.value)?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::Decode {
            key: kv.key.to_string(),
            kind: kv.key.value_kind(),
            source: serde::de::Error::custom("expected a JSON object"),
        });
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("name".into(), Value::String(name.clone()));
        if let Some(ns) = namespace {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        meta.insert(
            "resourceVersion".into(),
            Value::String(kv.revision.0.clone()),
        );
    }
    let mut r: R = serde_json::from_value(v).map_err(|source| Error::Decode {
        key: kv.key.to_string(),
        kind: kv.key.value_kind(),
        source,
    })?;
    r.meta_mut().resource_version = Some(kv.revision.0.clone());
    Ok(r)
}

fn resource_key<R: Resource>(obj: &R) -> Result<Key, Error> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or_else(|| Error::InvalidKey(format!("{} has no metadata.name", R::KIND.kind())))?;
    let key = if R::KIND.namespaced() {
        let ns = obj.meta().namespace.clone().ok_or_else(|| {
            Error::InvalidKey(format!(
                "{} {name:?} has no metadata.namespace",
                R::KIND.kind()
            ))
        })?;
        Key::namespaced(R::KIND, ns, name)
    } else {
        Key::resource(R::KIND, name)
    };
    key.validate()?;
    Ok(key)
}

impl Client {
    pub fn new(backend: impl Backend) -> Self {
        Client {
            backend: Arc::new(backend),
        }
    }

    pub fn from_arc(backend: Arc<dyn Backend>) -> Self {
        Client { backend }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    // ---- model-form values at arbitrary keys (IPAM) ----

    pub async fn get_value<T: DeserializeOwned>(
        &self,
        key: &Key,
    ) -> Result<Option<Versioned<T>>, Error> {
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                value: decode(key, &kv.value)?,
                revision: kv.revision,
            })),
        }
    }

    /// Every value in the set. Values that do not decode are skipped with a
    /// warning, so one corrupt object cannot block IPAM for a whole cluster.
    pub async fn list_values<T: DeserializeOwned>(
        &self,
        list: &ListKey,
    ) -> Result<Vec<(Key, Versioned<T>)>, Error> {
        let (items, _) = self.backend.list(list).await?;
        let mut out = Vec::with_capacity(items.len());
        for kv in items {
            match decode::<T>(&kv.key, &kv.value) {
                Ok(value) => out.push((
                    kv.key,
                    Versioned {
                        value,
                        revision: kv.revision,
                    },
                )),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable object"),
            }
        }
        Ok(out)
    }

    pub async fn create_value<T: Serialize>(
        &self,
        key: &Key,
        value: &T,
    ) -> Result<Revision, Error> {
        self.backend.create(key, encode(key, value)?).await
    }

    pub async fn update_value<T: Serialize>(
        &self,
        key: &Key,
        value: &T,
        expected: &Revision,
    ) -> Result<Revision, Error> {
        self.backend
            .update(key, encode(key, value)?, expected)
            .await
    }

    pub async fn delete_key(&self, key: &Key, expected: Option<&Revision>) -> Result<(), Error> {
        self.backend.delete(key, expected).await
    }

    // ---- named resources ----

    pub async fn get<R: Resource>(&self, name: &str) -> Result<Option<R>, Error> {
        let key = Key::resource(R::KIND, name);
        key.validate()?;
        match self.backend.get(&key).await? {
            None => Ok(None),
            Some(kv) => decode_resource(&kv).map(Some),
        }
    }

    /// [`Client::get`] for a namespaced kind.
    pub async fn get_in<R: Resource>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<R>, Error> {
        let key = Key::namespaced(R::KIND, namespace, name);
        key.validate()?;
        match self.backend.get(&key).await? {
            None => Ok(None),
            Some(kv) => decode_resource(&kv).map(Some),
        }
    }

    /// Merges `annotations` into a namespaced object's metadata (see
    /// [`Backend::annotate`]); an empty value removes that annotation.
    pub async fn annotate_in<R: Resource>(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let key = Key::namespaced(R::KIND, namespace, name);
        key.validate()?;
        self.backend.annotate(&key, annotations).await
    }

    /// Every object of the kind (of every namespace, for namespaced kinds).
    pub async fn list<R: Resource>(&self) -> Result<Vec<R>, Error> {
        let (items, _) = self.backend.list(&ListKey::Resources(R::KIND)).await?;
        Ok(items
            .iter()
            .filter_map(|kv| match decode_resource::<R>(kv) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable resource");
                    None
                }
            })
            .collect())
    }

    /// Creates the object; returns it as stored (with resourceVersion,
    /// creationTimestamp and uid set).
    pub async fn create<R: Resource>(&self, obj: &R) -> Result<R, Error> {
        let key = resource_key(obj)?;
        let mut obj = obj.clone();
        let meta = obj.meta_mut();
        meta.resource_version = None;
        if meta.creation_timestamp.is_none() {
            meta.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        if meta.uid.is_none() {
            meta.uid = Some(new_uid());
        }
        let rev = self.backend.create(&key, encode(&key, &obj)?).await?;
        obj.meta_mut().resource_version = Some(rev.0);
        Ok(obj)
    }

    /// Replaces the object if it is still at its `metadata.resourceVersion`
    /// (compare-and-swap); returns it with the new resourceVersion.
    pub async fn update<R: Resource>(&self, obj: &R) -> Result<R, Error> {
        let key = resource_key(obj)?;
        let expected = obj.meta().resource_version.clone().ok_or_else(|| {
            Error::InvalidKey(format!(
                "{key} has no metadata.resourceVersion; read it first, then update"
            ))
        })?;
        let mut obj = obj.clone();
        obj.meta_mut().resource_version = None;
        let rev = self
            .backend
            .update(&key, encode(&key, &obj)?, &Revision(expected))
            .await?;
        obj.meta_mut().resource_version = Some(rev.0);
        Ok(obj)
    }

    /// Writes the object's status (compare-and-swap on its
    /// resourceVersion, like [`Client::update`]). With the Kubernetes
    /// datastore this goes to the status subresource, the only place the
    /// API server takes status from; the spec in `obj` is then ignored.
    pub async fn update_status<R: Resource>(&self, obj: &R) -> Result<R, Error> {
        let key = resource_key(obj)?;
        let expected = obj.meta().resource_version.clone().ok_or_else(|| {
            Error::InvalidKey(format!(
                "{key} has no metadata.resourceVersion; read it first, then update its status"
            ))
        })?;
        let mut obj = obj.clone();
        obj.meta_mut().resource_version = None;
        let rev = self
            .backend
            .update_status(&key, encode(&key, &obj)?, &Revision(expected))
            .await?;
        obj.meta_mut().resource_version = Some(rev.0);
        Ok(obj)
    }

    pub async fn delete<R: Resource>(
        &self,
        name: &str,
        expected: Option<&Revision>,
    ) -> Result<(), Error> {
        self.backend
            .delete(&Key::resource(R::KIND, name), expected)
            .await
    }

    /// [`Client::delete`] for a namespaced kind.
    pub async fn delete_in<R: Resource>(
        &self,
        namespace: &str,
        name: &str,
        expected: Option<&Revision>,
    ) -> Result<(), Error> {
        self.backend
            .delete(&Key::namespaced(R::KIND, namespace, name), expected)
            .await
    }

    /// Watches one resource kind (every namespace of a namespaced one).
    /// Without `after`, starts with a snapshot.
    pub async fn watch<R: Resource>(
        &self,
        after: Option<Revision>,
    ) -> Result<ResourceWatch<R>, Error> {
        let inner = self
            .backend
            .watch(&ListKey::Resources(R::KIND), after)
            .await?;
        Ok(ResourceWatch {
            inner,
            _r: PhantomData,
        })
    }

    /// Watches raw (model-form) values, e.g. blocks or affinities.
    pub async fn watch_raw(
        &self,
        list: &ListKey,
        after: Option<Revision>,
    ) -> Result<WatchStream, Error> {
        self.backend.watch(list, after).await
    }
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-4{:01x}{:02x}-{:01x}{:01x}{:02x}-{}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6] & 0x0f,
        b[7],
        8 | (b[8] & 0x03),
        b[8] >> 4,
        b[9],
        b[10..]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// A stream of [`ResourceEvent`]s. Objects that do not decode are skipped
/// with a warning; `Err` items are the backend's recoverable interruptions.
pub struct ResourceWatch<R> {
    inner: WatchStream,
    _r: PhantomData<fn() -> R>,
}

impl<R: Resource> Stream for ResourceWatch<R> {
    type Item = Result<ResourceEvent<R>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let ev = match self.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(ev))) => ev,
            };
            let typed = match ev {
                WatchEvent::Snapshot { items, revision } => ResourceEvent::Snapshot {
                    items: items
                        .iter()
                        .filter_map(|kv| {
                            decode_resource::<R>(kv)
                                .inspect_err(|e| {
                                    tracing::warn!(error = %e, "skipping unreadable resource in snapshot");
                                })
                                .ok()
                        })
                        .collect(),
                    revision,
                },
                WatchEvent::Created(kv) => match decode_resource::<R>(&kv) {
                    Ok(r) => ResourceEvent::Created(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping unreadable resource in watch");
                        continue;
                    }
                },
                WatchEvent::Updated(kv) => match decode_resource::<R>(&kv) {
                    Ok(r) => ResourceEvent::Updated(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping unreadable resource in watch");
                        continue;
                    }
                },
                WatchEvent::Deleted { key, revision } => match key {
                    Key::Resource {
                        name, namespace, ..
                    } => ResourceEvent::Deleted {
                        name,
                        namespace,
                        revision,
                    },
                    _ => continue,
                },
            };
            return Poll::Ready(Some(Ok(typed)));
        }
    }
}
