//! The backend interface: what every datastore (etcd v3, Kubernetes) offers.
//!
//! Values cross this boundary as JSON in the *model form*: for named
//! resources the whole object as `crd.projectcalico.org/v1` shapes it, for
//! IPAM objects the spec of the matching CRD (IPAMBlockSpec, ...). Each
//! backend translates the model form to its own storage format, so the
//! typed layer above never sees backend details.
//!
//! Revisions are opaque strings (an etcd mod revision, a Kubernetes
//! resourceVersion): callers only hand them back for compare-and-swap or to
//! resume a watch.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::leader::{LeaseLock, LockSpec};
use crate::{Error, Key, ListKey};

/// Where an object stood when it was read; passed back to make a write
/// conditional on nothing having changed since.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<i64> for Revision {
    fn from(r: i64) -> Self {
        Revision(r.to_string())
    }
}

/// One stored object: its key, model-form JSON and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Key,
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// What a watch reports, in datastore order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete current contents of the watched set, as of `revision`.
    /// Sent first when a watch starts without a revision, and again whenever
    /// the backend cannot resume where it left off (history compacted):
    /// consumers replace their whole view with it.
    Snapshot {
        items: Vec<Kv>,
        revision: Revision,
    },
    Created(Kv),
    Updated(Kv),
    Deleted {
        key: Key,
        revision: Revision,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> &Revision {
        match self {
            WatchEvent::Snapshot { revision, .. } | WatchEvent::Deleted { revision, .. } => {
                revision
            }
            WatchEvent::Created(kv) | WatchEvent::Updated(kv) => &kv.revision,
        }
    }
}

/// A watch that lives until dropped. An `Err` item reports a problem the
/// watch is recovering from (datastore down, reconnecting); the stream goes
/// on and, once the datastore is back, continues exactly after the last
/// event it delivered: nothing lost, nothing repeated.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Error>> + Send>>;

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// For logs and errors: "etcd at http://10.0.0.1:2379".
    fn describe(&self) -> String;

    async fn get(&self, key: &Key) -> Result<Option<Kv>, Error>;

    /// Every object in the set, and the revision the listing is as of.
    async fn list(&self, list: &ListKey) -> Result<(Vec<Kv>, Revision), Error>;

    /// Creates `key`; fails with `AlreadyExists` if it exists.
    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, Error>;

    /// Replaces `key` only if it is still at `expected`; `Conflict`
    /// otherwise, `NotFound` if it is gone.
    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &Revision,
    ) -> Result<Revision, Error>;

    /// Replaces only the *status* of a resource, if it is still at
    /// `expected` (Kubernetes keeps status in a subresource of its own,
    /// and a plain update leaves it untouched there). Stores that keep
    /// status inside the object, like etcd, replace the whole value: the
    /// default.
    async fn update_status(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &Revision,
    ) -> Result<Revision, Error> {
        self.update(key, value, expected).await
    }

    /// Deletes `key`, only if still at `expected` when one is given.
    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<(), Error>;

    /// Merges `annotations` into the object's metadata without reading it
    /// (a merge patch: other annotations, the spec and the status are left
    /// alone; an empty value removes that annotation). For objects another
    /// component owns, like a Pod's `cni.projectcalico.org/podIPs`. A
    /// backend without such objects says so.
    async fn annotate(
        &self,
        key: &Key,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let _ = annotations;
        Err(Error::Backend {
            key: key.to_string(),
            reason: format!("{} cannot annotate objects", self.describe()),
        })
    }

    /// Watches a set: from just after `after` when given, else starting with
    /// a [`WatchEvent::Snapshot`].
    async fn watch(&self, list: &ListKey, after: Option<Revision>) -> Result<WatchStream, Error>;

    /// The lock a leader election campaigns for in this datastore (see
    /// [`crate::leader`]). A backend without one says so.
    fn lease_lock(&self, spec: &LockSpec) -> Result<Box<dyn LeaseLock>, Error> {
        Err(Error::Backend {
            key: spec.name.clone(),
            reason: format!("{} offers no leader election", self.describe()),
        })
    }
}
