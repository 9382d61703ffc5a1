//! Kubernetes Secrets of one namespace, each read and watched on its own:
//! where confd gets BGP passwords (`secretKeyRef`) in Kubernetes mode.
//!
//! ```text
//!  KubeSecrets::watch(name) ─► one task per Secret, events on a channel:
//!    list  GET  /api/v1/namespaces/NS/secrets?fieldSelector=metadata.name=NAME
//!            ─► Current(Some(data)) or Current(None)        R = list's resourceVersion
//!    watch GET  ...&watch=true&resourceVersion=R&allowWatchBookmarks=true
//!            ADDED / MODIFIED ─► Current(Some(data));  DELETED ─► Current(None)
//!            BOOKMARK ─► R;  stream ends, breaks, 410 Gone ─► list again
//!    a failed request ─► Failed(error), then retry (1 s, doubling to 30 s)
//! ```
//!
//! Every request carries the field selector on the Secret's name, so
//! calico-node reads only the Secrets its peerings name, and works with a
//! Role narrowed to those names (`resourceNames`): the API server
//! authorizes list and watch against `resourceNames` exactly when the
//! request selects one name this way. Events are only sent when what is
//! known changes (a relist that finds the same data sends nothing).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::Status;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Error, KubeOptions};

/// A Secret's keys and their values.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// First wait after a failed request; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How much longer than the server-side watch timeout a watch may stay
/// silent before its connection is taken for dead.
const SILENCE_SLACK: Duration = Duration::from_secs(30);

/// Why a Secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// 401/403: the credentials or the RBAC rules do not allow it.
    #[error(
        "the Kubernetes API server refused to {verb} Secret {secret}: {reason}; calico-node \
         needs get, list and watch on secrets in its own namespace (the Role and RoleBinding \
         calico-node-bgp-passwords in deploy/calico-node.yaml)"
    )]
    Forbidden {
        verb: &'static str,
        /// `namespace/name`.
        secret: String,
        reason: String,
    },
    /// No answer, or an answer that is not about the Secret (overload,
    /// server error).
    #[error(
        "cannot {verb} Secret {secret} at {server}: {reason}; check that the Kubernetes API \
         server is up and reachable from this node"
    )]
    Unavailable {
        verb: &'static str,
        secret: String,
        server: String,
        reason: String,
    },
}

impl SecretError {
    /// Whether the Secret may well be readable on the next try with
    /// nothing changed (the server was unreachable or overloaded), as
    /// opposed to the server having refused this reader.
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretError::Unavailable { .. })
    }
}

/// What a watch on one Secret reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    /// The Secret as the API server now has it; `None`: there is no
    /// Secret of that name.
    Current(Option<SecretData>),
    /// It could not be read; the watch keeps trying.
    Failed(SecretError),
}

/// Reads Secrets of one namespace through the Kubernetes API.
#[derive(Clone)]
pub struct KubeSecrets {
    client: kube::Client,
    namespace: String,
    /// "https://10.96.0.1:443", for errors.
    server: String,
    opts: KubeOptions,
}

impl std::fmt::Debug for KubeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSecrets")
            .field("namespace", &self.namespace)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl KubeSecrets {
    /// Secrets in `namespace`, read with `client`; `server` names the API
    /// server in errors.
    pub fn new(client: kube::Client, server: &str, namespace: &str, opts: KubeOptions) -> Self {
        KubeSecrets {
            client,
            namespace: namespace.to_string(),
            server: server.to_string(),
            opts,
        }
    }

    /// Connects the way the Kubernetes datastore does (`KUBECONFIG`, else
    /// the in-cluster service account) to the Secrets of `namespace`, or,
    /// when that is `None`, of the client's default namespace: inside a
    /// pod, the pod's own (read from its service account), which for
    /// calico-node is where its Role lets it read Secrets.
    pub async fn connect(namespace: Option<&str>) -> Result<Self, Error> {
        let config = crate::kubernetes::infer_config().await?;
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let (client, server) = crate::kubernetes::client_for(config)?;
        Ok(Self::new(
            client,
            &server,
            &namespace,
            KubeOptions::default(),
        ))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Watches Secret `name`: its first event says whether it exists (or
    /// why it cannot be read), later ones each change. The watch runs
    /// until the returned [`SecretWatch`] is dropped.
    pub fn watch(&self, name: &str) -> SecretWatch {
        let (tx, rx) = mpsc::channel(8);
        let reader = Reader {
            api: Api::namespaced(self.client.clone(), &self.namespace),
            secret: format!("{}/{name}", self.namespace),
            selector: format!("metadata.name={name}"),
            name: name.to_string(),
            server: self.server.clone(),
            opts: self.opts.clone(),
            last: None,
            tx,
        };
        let task = tokio::spawn(async move {
            let tx = reader.tx.clone();
            tokio::select! {
                _ = reader.run() => {}
                // Stop at once when nobody listens, even mid-request.
                _ = tx.closed() => {}
            }
        });
        SecretWatch { rx, task }
    }
}

/// The events of one watched Secret; the watch stops when this drops.
#[derive(Debug)]
pub struct SecretWatch {
    rx: mpsc::Receiver<SecretEvent>,
    task: JoinHandle<()>,
}

impl SecretWatch {
    /// The next change; `None` only if the watch task ended.
    pub async fn recv(&mut self) -> Option<SecretEvent> {
        self.rx.recv().await
    }
}

impl Drop for SecretWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one round of list-then-watch ended.
enum Round {
    /// History is gone (410): list again.
    Relist,
    /// A request failed: wait, then list again.
    Failed(SecretError),
}

struct Reader {
    api: Api<Secret>,
    name: String,
    /// `namespace/name`, for errors.
    secret: String,
    selector: String,
    server: String,
    opts: KubeOptions,
    /// What was last sent, so a relist that finds the same sends nothing.
    last: Option<SecretEvent>,
    tx: mpsc::Sender<SecretEvent>,
}

fn data_of(s: Secret) -> SecretData {
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

impl Reader {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.round().await {
                Round::Relist => backoff = BACKOFF_MIN,
                Round::Failed(e) => {
                    tracing::warn!(secret = %self.secret, error = %e, retry_in = ?backoff, "cannot read Secret");
                    self.send(SecretEvent::Failed(e)).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn send(&mut self, ev: SecretEvent) {
        if self.last.as_ref() == Some(&ev) {
            return;
        }
        self.last = Some(ev.clone());
        // A closed channel ends the task (see `KubeSecrets::watch`).
        let _ = self.tx.send(ev).await;
    }

    /// Lists the Secret, then watches it from there, resuming the watch
    /// each time the server ends it, until history is gone or a request
    /// fails.
    async fn round(&mut self) -> Round {
        let lp = ListParams::default().fields(&self.selector);
        let list = match tokio::time::timeout(self.opts.request_timeout, self.api.list(&lp)).await {
            Err(_) => return Round::Failed(self.no_answer("list")),
            Ok(Err(e)) => return Round::Failed(self.error("list", e)),
            Ok(Ok(l)) => l,
        };
        let mut rv = list.metadata.resource_version.unwrap_or_default();
        let current = list
            .items
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(self.name.as_str()))
            .map(data_of);
        self.send(SecretEvent::Current(current)).await;

        let timeout = u32::try_from(self.opts.watch_timeout.as_secs())
            .unwrap_or(u32::MAX)
            .max(1);
        let wp = WatchParams::default()
            .fields(&self.selector)
            .timeout(timeout);
        let silence = self.opts.watch_timeout + SILENCE_SLACK;
        loop {
            let started =
                tokio::time::timeout(self.opts.request_timeout, self.api.watch(&wp, &rv)).await;
            let mut events = match started {
                Err(_) => return Round::Failed(self.no_answer("watch")),
                Ok(Err(e)) if is_gone_err(&e) => return Round::Relist,
                Ok(Err(e)) => return Round::Failed(self.error("watch", e)),
                Ok(Ok(s)) => Box::pin(s),
            };
            loop {
                let ev = match tokio::time::timeout(silence, events.next()).await {
                    Err(_) => return Round::Failed(self.no_answer("watch")),
                    // The server ended the watch (its timeout): resume.
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Round::Failed(self.error("watch", e)),
                    Ok(Some(Ok(ev))) => ev,
                };
                match ev {
                    WatchEvent::Added(s) | WatchEvent::Modified(s) => {
                        if let Some(v) = &s.metadata.resource_version {
                            rv = v.clone();
                        }
                        self.send(SecretEvent::Current(Some(data_of(s)))).await;
                    }
                    WatchEvent::Deleted(s) => {
                        if let Some(v) = &s.metadata.resource_version {
                            rv = v.clone();
                        }
                        self.send(SecretEvent::Current(None)).await;
                    }
                    WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                    WatchEvent::Error(status) if is_gone(&status) => return Round::Relist,
                    WatchEvent::Error(status) => {
                        return Round::Failed(self.status("watch", &status));
                    }
                }
            }
        }
    }

    fn no_answer(&self, verb: &'static str) -> SecretError {
        SecretError::Unavailable {
            verb,
            secret: self.secret.clone(),
            server: self.server.clone(),
            reason: format!("no answer within {:?}", self.opts.request_timeout),
        }
    }

    fn status(&self, verb: &'static str, s: &Status) -> SecretError {
        from_status(verb, &self.secret, &self.server, s)
    }

    fn error(&self, verb: &'static str, e: kube::Error) -> SecretError {
        match e {
            kube::Error::Api(s) => self.status(verb, &s),
            kube::Error::Auth(e) => SecretError::Forbidden {
                verb,
                secret: self.secret.clone(),
                reason: e.to_string(),
            },
            other => SecretError::Unavailable {
                verb,
                secret: self.secret.clone(),
                server: self.server.clone(),
                reason: other.to_string(),
            },
        }
    }
}

/// A failure `Status` from the API server (an HTTP error body, or a
/// watch's ERROR event) as the error about `secret`.
fn from_status(verb: &'static str, secret: &str, server: &str, s: &Status) -> SecretError {
    match s.code {
        401 | 403 => SecretError::Forbidden {
            verb,
            secret: secret.to_string(),
            reason: s.message.clone(),
        },
        code => SecretError::Unavailable {
            verb,
            secret: secret.to_string(),
            server: server.to_string(),
            reason: format!("the API server answered {code} {}: {}", s.reason, s.message),
        },
    }
}

/// 410 Gone / Expired: the resourceVersion is older than the history the
/// API server keeps; listing again is the remedy.
pub(crate) fn is_gone(s: &Status) -> bool {
    s.code == 410 || s.reason == "Expired" || s.reason == "Gone"
}

pub(crate) fn is_gone_err(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if is_gone(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: &str) -> Status {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_refusal_names_the_secret_and_the_role_to_fix() {
        let forbidden = status(
            r#"{"status":"Failure","reason":"Forbidden","code":403,
            "message":"secrets \"bgp-passwords\" is forbidden: User \"system:serviceaccount:kube-system:calico-node\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""}"#,
        );
        let e = from_status("list", "default/bgp-passwords", "https://k", &forbidden);
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains("refused to list Secret default/bgp-passwords")
                && text.contains("cannot list resource")
                && text.contains("deploy/calico-node.yaml"),
            "{text}"
        );
    }

    #[test]
    fn overload_and_server_errors_are_transient() {
        for code in [429, 500, 503] {
            let s = status(&format!(
                r#"{{"status":"Failure","reason":"x","code":{code},"message":"busy"}}"#
            ));
            let e = from_status("watch", "kube-system/p", "https://k", &s);
            assert!(e.is_transient(), "{code}: {e}");
            assert!(e.to_string().contains("busy"), "{e}");
        }
    }

    #[test]
    fn expired_history_is_recognised() {
        assert!(is_gone(&status(
            r#"{"status":"Failure","reason":"Expired","code":410,"message":"too old"}"#
        )));
        assert!(!is_gone(&status(r#"{"status":"Failure","code":500}"#)));
    }
}
