//! Reads the Secrets BGP passwords come from: one task per Secret the
//! peerings name, each telling the sync loop what it learns.
//!
//! ```text
//!  SecretSource::Kubernetes ─► datastore::secrets::KubeSecrets::watch(name)
//!                              (list + watch of that one Secret)
//!  SecretSource::Dir        ─► reads <dir>/<name>/ every DIR_POLL (kubelet
//!                              updates a mounted Secret volume in place)
//!        │ (name, SecretUpdate), only when something changed
//!        ▼
//!  sync loop (crate::sync) ─► ClusterState.secrets ─► recompute
//! ```
//!
//! [`SecretReaders::sync`] starts a reader for each newly named Secret and
//! stops the readers of Secrets no longer named, so confd reads exactly
//! the Secrets its peerings need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datastore::DatastoreConfig;
use datastore::secrets::{KubeSecrets, SecretEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::secrets::{SecretOrigin, SecretState, SecretUpdate};

/// How often a Secret directory is read again.
pub const DIR_POLL: Duration = Duration::from_secs(2);

/// Where confd reads BGP passwords from.
#[derive(Debug, Clone, Default)]
pub enum SecretSource {
    /// Nowhere: a peering that asks for a password is held down.
    #[default]
    None,
    /// The etcd datastore: `<dir>/<secret>/<key>` files, laid out like a
    /// mounted Kubernetes Secret volume (Calico mounts one too).
    Dir(PathBuf),
    /// The Kubernetes datastore: Secrets in calico-node's namespace, read
    /// and watched through the API.
    Kubernetes(KubeSecrets),
}

impl SecretSource {
    /// Where a Secret is, for messages.
    pub fn origin(&self) -> SecretOrigin {
        match self {
            SecretSource::None => SecretOrigin::None,
            SecretSource::Dir(d) => SecretOrigin::Dir(d.clone()),
            SecretSource::Kubernetes(k) => SecretOrigin::Kubernetes {
                namespace: k.namespace().to_string(),
            },
        }
    }
}

/// The source the datastore calls for: Secrets through the API with the
/// Kubernetes datastore (in `namespace`, else the client's default: a
/// pod's own namespace), the directory `dir` with etcd.
pub async fn source_for(
    datastore: &DatastoreConfig,
    dir: Option<&Path>,
    namespace: Option<&str>,
) -> Result<SecretSource, datastore::Error> {
    match datastore {
        DatastoreConfig::Kubernetes => {
            if let Some(dir) = dir {
                tracing::warn!(dir = %dir.display(), "CALICO_BGP_SECRETS_DIR is ignored with the Kubernetes datastore: BGP passwords are read from Secrets through the API");
            }
            let k = KubeSecrets::connect(namespace).await?;
            tracing::info!(
                namespace = k.namespace(),
                "BGP passwords come from Kubernetes Secrets"
            );
            Ok(SecretSource::Kubernetes(k))
        }
        DatastoreConfig::Etcdv3(_) => {
            if let Some(ns) = namespace {
                tracing::warn!(
                    namespace = ns,
                    "CALICO_BGP_SECRETS_NAMESPACE is ignored with the etcd datastore: BGP passwords are read from CALICO_BGP_SECRETS_DIR"
                );
            }
            Ok(dir.map_or(SecretSource::None, |d| SecretSource::Dir(d.to_path_buf())))
        }
    }
}

/// What a Kubernetes watch event tells about the Secret. An API server
/// that cannot be reached is an outage; a refusal (RBAC) is an answer.
pub fn update_of(ev: SecretEvent) -> SecretUpdate {
    match ev {
        SecretEvent::Current(Some(data)) => SecretUpdate::Known(SecretState::Present(data)),
        SecretEvent::Current(None) => SecretUpdate::Known(SecretState::Missing),
        SecretEvent::Failed(e) if e.is_transient() => SecretUpdate::Outage(e.to_string()),
        SecretEvent::Failed(e) => SecretUpdate::Known(SecretState::Unreadable(e.to_string())),
    }
}

/// Reads the directory of Secret `name` under `dir`: every file not
/// starting with a dot is a key (a Secret volume also holds `..data` and
/// timestamped directories, which are how kubelet swaps contents
/// atomically; the keys are symlinks through them).
pub fn read_dir_secret(dir: &Path, name: &str) -> SecretState {
    // The name comes from the datastore: one path segment, never a way
    // out of the directory.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return SecretState::Unreadable(format!(
            "{name:?} is not a valid Secret name (one path segment, not starting with a dot)"
        ));
    }
    let path = dir.join(name);
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SecretState::Missing,
        Err(e) => {
            return SecretState::Unreadable(format!("cannot list {}: {e}", path.display()));
        }
    };
    let mut data = BTreeMap::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                return SecretState::Unreadable(format!("cannot list {}: {e}", path.display()));
            }
        };
        let Some(key) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let file = entry.path();
        // Follows the volume's symlinks; directories are not keys.
        if key.starts_with('.') || !file.is_file() {
            continue;
        }
        match std::fs::read(&file) {
            Ok(v) => {
                data.insert(key, v);
            }
            Err(e) => {
                return SecretState::Unreadable(format!("cannot read {}: {e}", file.display()));
            }
        }
    }
    SecretState::Present(data)
}

/// The running readers, one per Secret; all stop when this drops.
pub struct SecretReaders<T> {
    source: SecretSource,
    tx: mpsc::Sender<T>,
    wrap: fn(String, SecretUpdate) -> T,
    tasks: BTreeMap<String, JoinHandle<()>>,
}

impl<T> Drop for SecretReaders<T> {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

impl<T: Send + 'static> SecretReaders<T> {
    /// Readers on `source` whose updates go to `tx`, as `wrap` makes them.
    pub fn new(
        source: SecretSource,
        tx: mpsc::Sender<T>,
        wrap: fn(String, SecretUpdate) -> T,
    ) -> Self {
        SecretReaders {
            source,
            tx,
            wrap,
            tasks: BTreeMap::new(),
        }
    }

    /// Whether a reader for `name` runs (an update for a Secret no longer
    /// read may still be queued).
    pub fn reads(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// Reads exactly the Secrets in `wanted`; returns the names it stopped
    /// reading.
    pub fn sync(&mut self, wanted: &BTreeSet<String>) -> Vec<String> {
        let stopped: Vec<String> = self
            .tasks
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        for name in &stopped {
            if let Some(t) = self.tasks.remove(name) {
                t.abort();
            }
            tracing::info!(secret = %self.source.origin().describe(name), "no peering names this Secret any more: not reading it");
        }
        for name in wanted {
            if self.tasks.contains_key(name) {
                continue;
            }
            let task = match &self.source {
                SecretSource::None => continue,
                SecretSource::Dir(dir) => tokio::spawn(poll_dir(
                    dir.clone(),
                    name.clone(),
                    self.tx.clone(),
                    self.wrap,
                )),
                SecretSource::Kubernetes(k) => tokio::spawn(follow_kube(
                    k.clone(),
                    name.clone(),
                    self.tx.clone(),
                    self.wrap,
                )),
            };
            tracing::info!(secret = %self.source.origin().describe(name), "reading BGP password Secret");
            self.tasks.insert(name.clone(), task);
        }
        stopped
    }
}

async fn poll_dir<T>(
    dir: PathBuf,
    name: String,
    tx: mpsc::Sender<T>,
    wrap: fn(String, SecretUpdate) -> T,
) {
    let mut last = None;
    loop {
        let now = read_dir_secret(&dir, &name);
        if last.as_ref() != Some(&now) {
            last = Some(now.clone());
            if tx
                .send(wrap(name.clone(), SecretUpdate::Known(now)))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::time::sleep(DIR_POLL).await;
    }
}

async fn follow_kube<T>(
    secrets: KubeSecrets,
    name: String,
    tx: mpsc::Sender<T>,
    wrap: fn(String, SecretUpdate) -> T,
) {
    let mut watch = secrets.watch(&name);
    while let Some(ev) = watch.recv().await {
        if tx.send(wrap(name.clone(), update_of(ev))).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::secrets::SecretError;

    #[test]
    fn a_refusal_is_an_answer_and_an_unreachable_server_an_outage() {
        let forbidden = SecretError::Forbidden {
            verb: "list",
            secret: "default/p".into(),
            reason: "no".into(),
        };
        assert!(matches!(
            update_of(SecretEvent::Failed(forbidden)),
            SecretUpdate::Known(SecretState::Unreadable(why)) if why.contains("refused")
        ));
        let down = SecretError::Unavailable {
            verb: "watch",
            secret: "kube-system/p".into(),
            server: "https://k".into(),
            reason: "connection refused".into(),
        };
        assert!(matches!(
            update_of(SecretEvent::Failed(down)),
            SecretUpdate::Outage(why) if why.contains("connection refused")
        ));
        assert_eq!(
            update_of(SecretEvent::Current(None)),
            SecretUpdate::Known(SecretState::Missing)
        );
    }

    #[test]
    fn a_secret_directory_reads_like_a_mounted_volume() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_dir_secret(dir.path(), "p"), SecretState::Missing);
        // kubelet's layout: keys are symlinks into a timestamped directory
        // that `..data` points at.
        let p = dir.path().join("p");
        std::fs::create_dir_all(p.join("..2026_01_01")).unwrap();
        std::fs::write(p.join("..2026_01_01/tor"), "k1\n").unwrap();
        std::os::unix::fs::symlink("..2026_01_01", p.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tor", p.join("tor")).unwrap();
        assert_eq!(
            read_dir_secret(dir.path(), "p"),
            SecretState::Present([("tor".to_string(), b"k1\n".to_vec())].into())
        );
        for bad in ["..", "a/b", ""] {
            assert!(
                matches!(read_dir_secret(dir.path(), bad), SecretState::Unreadable(_)),
                "{bad:?}"
            );
        }
    }
}
