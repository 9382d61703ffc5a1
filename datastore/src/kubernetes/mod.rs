//! The Kubernetes backend (Calico's "KDD" layout): Calico's resources as
//! `crd.projectcalico.org/v1` custom resources (cluster-scoped), Calico's
//! Node as annotations on the Kubernetes Node. See [`resources`] for
//! where each key lives.
//!
//! ```text
//!   Backend call ──► KubeBackend ──HTTP (kube::Client)──► API server
//!                     get/list:  GET  .../ippools[/name]   (lists paged, one snapshot;
//!                                a GET that got no answer at all is sent once more)
//!                     create:    POST .../ippools          409 AlreadyExists
//!                     update:    PUT  .../ippools/name     metadata.resourceVersion = CAS; 409 Conflict
//!                                PATCH /api/v1/nodes/name  merge patch of our annotations + resourceVersion
//!                     status:    PUT  .../ippools/name/status
//!                     delete:    DELETE .../name           preconditions.resourceVersion
//!   watch ──► watch task: list (Snapshot) ─► GET ?watch=true&resourceVersion=R&allowWatchBookmarks=true
//!                  bookmarks advance R; 410 Gone ─► relist, Snapshot; broken ─► Err, resume from R
//! ```
//!
//! Revisions are resourceVersions, opaque strings: they are only handed
//! back, never compared. A missing CRD is [`Error::CrdMissing`], which
//! tells the operator to apply `deploy/crds.yaml`.

mod errors;
pub mod objects;
pub mod resources;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::core::Request;
use kube::core::params::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backend::{Backend, Kv, Revision, WatchStream};
use crate::leader::kubernetes::{KubeLock, LEASE_NAMESPACE};
use crate::leader::{LeaseLock, LockSpec};
use crate::{Error, Key, ListKey};
use errors::Ctx;
pub use resources::ApiType;

/// Page size for lists: big lists arrive in pages, all of one snapshot.
const PAGE: u32 = 500;
/// How often a consistent paged list may be restarted because its
/// continue token expired before the list gives up.
const LIST_RESTARTS: usize = 3;

/// Tuning for [`KubeBackend`].
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Deadline of one request (get, list page, create, update, delete).
    pub request_timeout: Duration,
    /// The server ends each watch after this long (`timeoutSeconds`); the
    /// watch then resumes from its last resourceVersion. A watch silent
    /// for this plus 30 s is treated as a dead connection.
    pub watch_timeout: Duration,
    /// Objects per list page.
    pub page_size: u32,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            request_timeout: Duration::from_secs(10),
            watch_timeout: Duration::from_secs(290),
            page_size: PAGE,
        }
    }
}

#[derive(Clone)]
pub struct KubeBackend {
    client: kube::Client,
    /// "Kubernetes API at https://10.96.0.1:443", for errors and logs.
    server: Arc<str>,
    opts: KubeOptions,
}

impl KubeBackend {
    /// A backend on an existing client (tests hand in one whose transport
    /// is a recorded API server). `server` names it in errors.
    pub fn new(client: kube::Client, server: &str, opts: KubeOptions) -> Self {
        KubeBackend {
            client,
            server: format!("Kubernetes API at {server}").into(),
            opts,
        }
    }

    /// Connects the way Calico's KDD does: the kubeconfig named by
    /// `KUBECONFIG` (or `~/.kube/config`) when there is one, else the
    /// in-cluster service account. Does not wait for the API server.
    pub async fn connect() -> Result<Self, Error> {
        Self::from_config(infer_config().await?, KubeOptions::default())
    }

    pub fn from_config(config: kube::Config, opts: KubeOptions) -> Result<Self, Error> {
        let (client, server) = client_for(config)?;
        Ok(Self::new(client, &server, opts))
    }

    fn ctx<'a>(
        &'a self,
        ty: ApiType,
        what: impl ToString,
        verb: &'static str,
        expected: Option<&'a Revision>,
    ) -> Ctx<'a> {
        Ctx {
            server: &self.server,
            ty,
            what: what.to_string(),
            verb,
            expected,
        }
    }

    /// One request with a deadline.
    async fn call<T: DeserializeOwned>(
        &self,
        ctx: &Ctx<'_>,
        req: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<T, Error> {
        self.call_raw(ctx, req).await?.map_err(|e| ctx.map(e))
    }

    /// [`Self::call`], leaving the API's own failure unmapped (the outer
    /// error is a timeout or a request that could not be built).
    async fn call_raw<T: DeserializeOwned>(
        &self,
        ctx: &Ctx<'_>,
        req: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Result<T, kube::Error>, Error> {
        let req = req.map_err(|e| Error::Backend {
            key: ctx.what.clone(),
            reason: format!("cannot build the request: {e}"),
        })?;
        // The connection kept open since an earlier request may be closed
        // by the server (a restart, an idle timeout, a load balancer) just
        // as this request goes out on it: it fails without any answer. A
        // read is safe to send again, once, on a new connection, as
        // client-go does for GETs; a write is not (the server may have
        // applied it), so its caller hears of the failure.
        let again = (req.method() == http::Method::GET).then(|| copy_request(&req));
        let attempts = async {
            match (self.client.request::<T>(req).await, again) {
                (Err(e), Some(req)) if is_unanswered(&e) => {
                    tracing::debug!(error = %e, what = %ctx.what,
                        "read failed without an answer; sending it again");
                    self.client.request::<T>(req).await
                }
                (result, _) => result,
            }
        };
        tokio::time::timeout(self.opts.request_timeout, attempts)
            .await
            .map_err(|_| {
                ctx.unavailable(format!(
                    "no answer within {:?} to {} {}",
                    self.opts.request_timeout, ctx.verb, ctx.what
                ))
            })
    }

    /// Every object of a set, all from one snapshot, and the
    /// resourceVersion that snapshot is as of. A paged list whose continue
    /// token expires (410) starts again from the first page.
    pub(crate) async fn list_objects(&self, list: &ListKey) -> Result<(Vec<Kv>, String), Error> {
        list.validate()?;
        let ty = ApiType::of_list(list)?;
        let req = Request::new(ty.collection_path());
        let ctx = self.ctx(ty, list, "list", None);
        'restart: for _ in 0..LIST_RESTARTS {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            let mut snapshot_rv: Option<String> = None;
            loop {
                let lp = ListParams {
                    limit: Some(self.opts.page_size),
                    continue_token: token.clone(),
                    ..Default::default()
                };
                let page: Value = match self.call_raw(&ctx, req.list(&lp)).await? {
                    Ok(p) => p,
                    Err(e) if token.is_some() && errors::is_gone_err(&e) => {
                        tracing::info!(list = %list, "list continue token expired; relisting");
                        continue 'restart;
                    }
                    Err(e) => return Err(ctx.map(e)),
                };
                let rv = page
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                snapshot_rv.get_or_insert(rv);
                for item in page
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match resources::from_object(ty, item) {
                        Some(kv) if list.contains(&kv.key) => out.push(kv),
                        Some(_) => {}
                        None => tracing::warn!(
                            list = %list,
                            name = item.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or("?"),
                            "skipping an object that is not well formed"
                        ),
                    }
                }
                match page
                    .pointer("/metadata/continue")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    Some(t) => token = Some(t.to_string()),
                    None => return Ok((out, snapshot_rv.unwrap_or_default())),
                }
            }
        }
        Err(Error::Backend {
            key: list.to_string(),
            reason: format!(
                "the list kept changing faster than it could be read ({LIST_RESTARTS} attempts)"
            ),
        })
    }
}

fn revision(ctx: &Ctx<'_>, obj: &Value) -> Result<Revision, Error> {
    resources::revision_of(obj)
        .map(|r| Revision(r.to_string()))
        .ok_or_else(|| Error::Backend {
            key: ctx.what.clone(),
            reason: "the API server answered without a resourceVersion".into(),
        })
}

#[async_trait]
impl Backend for KubeBackend {
    fn describe(&self) -> String {
        self.server.to_string()
    }

    async fn get(&self, key: &Key) -> Result<Option<Kv>, Error> {
        key.validate()?;
        let ty = ApiType::of_key(key)?;
        let ctx = self.ctx(ty, key, "get", None);
        let name = resources::object_name(key);
        let req =
            Request::new(resources::collection_path_of(ty, key)).get(&name, &Default::default());
        let obj: Value = match self.call(&ctx, req).await {
            Ok(o) => o,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match resources::from_object(ty, &obj) {
            Some(kv) if &kv.key == key => Ok(Some(kv)),
            // A handle ID differing only in case, or a hand-edited object
            // whose spec no longer matches its name: not this key.
            Some(kv) => {
                tracing::warn!(%key, stored = %kv.key, name, "object holds a different key; ignoring it");
                Ok(None)
            }
            None => Err(Error::Backend {
                key: key.to_string(),
                reason: format!("{} {name:?} is not well formed", ty.kind()),
            }),
        }
    }

    async fn list(&self, list: &ListKey) -> Result<(Vec<Kv>, Revision), Error> {
        let (items, rv) = self.list_objects(list).await?;
        Ok((items, Revision(rv)))
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, Error> {
        key.validate()?;
        let ty = ApiType::of_key(key)?;
        let ctx = self.ctx(ty, key, "create", None);
        if ty == ApiType::Node {
            // Kubelet registers Kubernetes Nodes; Calico only annotates them.
            return match self.get(key).await? {
                Some(_) => Err(Error::AlreadyExists {
                    key: key.to_string(),
                }),
                None => Err(Error::Backend {
                    key: key.to_string(),
                    reason: "there is no Kubernetes Node of that name; with \
                             DATASTORE_TYPE=kubernetes, kubelet registers nodes and NODENAME \
                             must be the Kubernetes node name"
                        .into(),
                }),
            };
        }
        let body = serde_json::to_vec(&resources::to_object(key, &value, None)?).map_err(|e| {
            Error::Encode {
                key: key.to_string(),
                kind: key.value_kind(),
                source: e,
            }
        })?;
        let req = Request::new(resources::collection_path_of(ty, key))
            .create(&PostParams::default(), body);
        let obj: Value = self.call(&ctx, req).await?;
        revision(&ctx, &obj)
    }

    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &Revision,
    ) -> Result<Revision, Error> {
        key.validate()?;
        let ty = ApiType::of_key(key)?;
        let ctx = self.ctx(ty, key, "update", Some(expected));
        let name = resources::object_name(key);
        let req = Request::new(resources::collection_path_of(ty, key));
        let obj: Value = if ty == ApiType::Node {
            let patch = resources::node_patch(key, &value, &expected.0)?;
            self.call(
                &ctx,
                req.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?
        } else {
            let body = encode(key, &resources::to_object(key, &value, Some(&expected.0))?)?;
            self.call(&ctx, req.replace(&name, &PostParams::default(), body))
                .await?
        };
        revision(&ctx, &obj)
    }

    async fn update_status(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: &Revision,
    ) -> Result<Revision, Error> {
        let ty = ApiType::of_key(key)?;
        if !ty.has_status_subresource() {
            return self.update(key, value, expected).await;
        }
        key.validate()?;
        let ctx = self.ctx(ty, key, "update the status of", Some(expected));
        let name = resources::object_name(key);
        let body = encode(key, &resources::to_object(key, &value, Some(&expected.0))?)?;
        let req = Request::new(resources::collection_path_of(ty, key)).replace_subresource(
            "status",
            &name,
            &PostParams::default(),
            body,
        );
        let obj: Value = self.call(&ctx, req).await?;
        revision(&ctx, &obj)
    }

    /// A merge patch of `metadata.annotations`; for a Pod through its
    /// `status` subresource, as Calico's CNI plugin writes the pod's
    /// addresses (its RBAC is `pods/status: patch`, not `pods: patch`).
    async fn annotate(
        &self,
        key: &Key,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), Error> {
        key.validate()?;
        let ty = ApiType::of_key(key)?;
        let ctx = self.ctx(ty, key, "annotate", None);
        let name = resources::object_name(key);
        let values: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| {
                let v = if v.is_empty() {
                    Value::Null
                } else {
                    Value::String(v.clone())
                };
                (k.clone(), v)
            })
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": values}});
        let req = Request::new(resources::collection_path_of(ty, key));
        let pp = PatchParams::default();
        let req = if ty == ApiType::Pod {
            req.patch_subresource("status", &name, &pp, &Patch::Merge(&patch))
        } else {
            req.patch(&name, &pp, &Patch::Merge(&patch))
        };
        let _: Value = self.call(&ctx, req).await?;
        Ok(())
    }

    async fn delete(&self, key: &Key, expected: Option<&Revision>) -> Result<(), Error> {
        key.validate()?;
        let ty = ApiType::of_key(key)?;
        if ty == ApiType::Node {
            return Err(Error::Backend {
                key: key.to_string(),
                reason: "with DATASTORE_TYPE=kubernetes a Calico node is its Kubernetes Node; \
                         delete that (kubectl delete node) instead"
                    .into(),
            });
        }
        let ctx = self.ctx(ty, key, "delete", expected);
        let dp = DeleteParams {
            preconditions: expected.map(|r| Preconditions {
                resource_version: Some(r.0.clone()),
                uid: None,
            }),
            ..Default::default()
        };
        let req = Request::new(resources::collection_path_of(ty, key))
            .delete(&resources::object_name(key), &dp);
        // 200 with the object or a Success Status: either way it is gone.
        let _: Value = self.call(&ctx, req).await?;
        Ok(())
    }

    fn lease_lock(&self, spec: &LockSpec) -> Result<Box<dyn LeaseLock>, Error> {
        Ok(Box::new(KubeLock::new(
            self.client.clone(),
            &self.server,
            LEASE_NAMESPACE,
            spec,
            self.opts.request_timeout,
        )))
    }

    async fn watch(&self, list: &ListKey, after: Option<Revision>) -> Result<WatchStream, Error> {
        list.validate()?;
        let ty = ApiType::of_list(list)?;
        Ok(watch::spawn(
            self.clone(),
            list.clone(),
            ty,
            after.map(|r| r.0),
        ))
    }
}

/// A request failed in transport: no HTTP answer came back.
fn is_unanswered(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

fn copy_request(req: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

fn encode(key: &Key, v: &Value) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|source| Error::Encode {
        key: key.to_string(),
        kind: key.value_kind(),
        source,
    })
}

/// The client configuration Calico's KDD uses: the kubeconfig named by
/// `KUBECONFIG` (or `~/.kube/config`) when there is one, else the
/// in-cluster service account.
pub(crate) async fn infer_config() -> Result<kube::Config, Error> {
    kube::Config::infer().await.map_err(|e| Error::Unavailable {
        endpoints: "Kubernetes API".into(),
        reason: format!("no Kubernetes client configuration: {e}"),
        hint: "set KUBECONFIG, or run inside a pod with a service account",
    })
}

/// A client for `config`, and its server's URL (for messages).
pub(crate) fn client_for(config: kube::Config) -> Result<(kube::Client, String), Error> {
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| Error::Unavailable {
        endpoints: format!("Kubernetes API at {server}"),
        reason: format!("cannot build the client: {e}"),
        hint: "check the kubeconfig's certificates and credentials",
    })?;
    Ok((client, server))
}
