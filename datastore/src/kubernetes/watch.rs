//! A watch on the Kubernetes API that survives the API server going away,
//! resumes where it left off, and relists when history is gone.
//!
//! ```text
//!   (no revision) ─► list ─► Snapshot ─┐
//!                                      ▼
//!     GET ...?watch=true&resourceVersion=R&allowWatchBookmarks=true&timeoutSeconds=T
//!        ADDED / MODIFIED / DELETED ─► Created / Updated / Deleted; R = object's RV
//!        BOOKMARK                   ─► R = bookmark's RV (nothing delivered)
//!        stream ends (timeout)      ─► watch again from R
//!        error, dead connection     ─► Err to the consumer, back off, watch again from R
//!        410 Gone / ERROR Expired   ─► list again ─► Snapshot
//! ```
//!
//! `R` only ever moves to a version the server handed out, so a resumed
//! watch replays nothing already delivered and skips nothing after it.
//! Bookmarks keep `R` fresh while the set is quiet, so a long idle watch
//! can resume without a relist. Kubernetes Nodes change every few seconds
//! for reasons that are not Calico's (heartbeats, conditions); a Node whose
//! Calico view did not change is not reported.
//!
//! The task ends when the consumer drops the stream.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kube::core::params::WatchParams;
use kube::core::{Request, WatchEvent as KubeEvent};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::KubeBackend;
use super::errors::{self, Ctx};
use super::resources::{self, ApiType};
use crate::backend::{
    Kv, Revision, WATCH_BACKOFF_MIN, WatchEvent, WatchStream, report_and_back_off,
};
use crate::{Error, Key, ListKey};

const CHANNEL: usize = 1024;
/// How much longer than the server-side watch timeout a watch may stay
/// silent before the connection is taken for dead.
const SILENCE_SLACK: Duration = Duration::from_secs(30);

pub(super) fn spawn(backend: KubeBackend, list: ListKey, after: Option<String>) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let after = after.filter(|r| !r.is_empty());
    tokio::spawn(async move {
        let task = WatchTask {
            ty: ApiType::of_list(&list),
            backend,
            list,
            tx,
            need_snapshot: after.is_none(),
            rv: after.unwrap_or_default(),
            seen_nodes: HashMap::new(),
        };
        task.run().await;
    });
    Box::pin(ReceiverStream::new(rx))
}

struct WatchTask {
    backend: KubeBackend,
    list: ListKey,
    ty: ApiType,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
    /// The resourceVersion to watch from: the last one delivered, listed
    /// or bookmarked.
    rv: String,
    need_snapshot: bool,
    /// For Nodes only: the Calico view last delivered per node.
    seen_nodes: HashMap<Key, Vec<u8>>,
}

/// Why one watch request ended.
enum Ended {
    ConsumerGone,
    /// The server closed the stream normally (its timeout): watch again.
    Closed,
    /// Watch again from `rv` after reporting this and backing off.
    Broken(Error),
    /// `rv` is older than the server's history: relist.
    Gone,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            if self.need_snapshot {
                match self.backend.list_objects(&self.list).await {
                    Ok((items, rv)) => {
                        self.rv = rv;
                        self.need_snapshot = false;
                        if self.ty == ApiType::Node {
                            self.seen_nodes = items
                                .iter()
                                .map(|kv| (kv.key.clone(), kv.value.clone()))
                                .collect();
                        }
                        let ev = WatchEvent::Snapshot {
                            items,
                            revision: Revision(self.rv.clone()),
                        };
                        if self.tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if !self.pause_after(e, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.stream_once(&mut backoff).await {
                Ended::ConsumerGone => return,
                Ended::Closed => {}
                Ended::Gone => {
                    tracing::info!(watch = %self.list, rv = %self.rv,
                        "resourceVersion too old to resume the watch (410 Gone); relisting");
                    self.need_snapshot = true;
                }
                Ended::Broken(e) => {
                    if !self.pause_after(e, &mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reports `e` to the consumer and sleeps before the next attempt.
    /// Returns false if the consumer is gone.
    async fn pause_after(&self, e: Error, backoff: &mut Duration) -> bool {
        report_and_back_off(&self.tx, &self.list, e, backoff).await
    }

    fn ctx(&self) -> Ctx<'_> {
        self.backend.ctx(self.ty, &self.list, "watch", None)
    }

    async fn stream_once(&mut self, backoff: &mut Duration) -> Ended {
        let timeout = self.backend.opts.watch_timeout;
        let wp = WatchParams {
            timeout: Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1)),
            bookmarks: true,
            ..Default::default()
        };
        let req = match Request::new(self.ty.collection_path()).watch(&wp, &self.rv) {
            Ok(r) => r,
            Err(e) => {
                return Ended::Broken(Error::Backend {
                    key: self.list.to_string(),
                    reason: format!("cannot build the watch request: {e}"),
                });
            }
        };
        let started = tokio::select! {
            r = tokio::time::timeout(
                self.backend.opts.request_timeout,
                self.backend.client.request_events::<Value>(req),
            ) => r,
            _ = self.tx.closed() => return Ended::ConsumerGone,
        };
        let events = match started {
            Err(_) => {
                return Ended::Broken(self.ctx().unavailable(format!(
                    "no answer within {:?} to watch {}",
                    self.backend.opts.request_timeout, self.list
                )));
            }
            Ok(Err(e)) if errors::is_gone_err(&e) => return Ended::Gone,
            Ok(Err(e)) => return Ended::Broken(self.ctx().map(e)),
            Ok(Ok(s)) => s,
        };
        let mut events = std::pin::pin!(events);
        let silence = timeout + SILENCE_SLACK;
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(silence, events.next()) => n,
                _ = self.tx.closed() => return Ended::ConsumerGone,
            };
            let ev = match next {
                Err(_) => {
                    return Ended::Broken(
                        self.ctx()
                            .unavailable(format!("the watch was silent for {silence:?}")),
                    );
                }
                Ok(None) => return Ended::Closed,
                Ok(Some(Err(e))) if errors::is_gone_err(&e) => return Ended::Gone,
                Ok(Some(Err(e))) => return Ended::Broken(self.ctx().map(e)),
                Ok(Some(Ok(ev))) => ev,
            };
            *backoff = WATCH_BACKOFF_MIN;
            let out = match ev {
                KubeEvent::Bookmark(b) => {
                    if !b.metadata.resource_version.is_empty() {
                        self.rv = b.metadata.resource_version;
                    }
                    continue;
                }
                KubeEvent::Error(status) if errors::is_gone(&status) => return Ended::Gone,
                KubeEvent::Error(status) => return Ended::Broken(self.ctx().map_status(&status)),
                KubeEvent::Added(obj) => self.object_event(&obj, Change::Added),
                KubeEvent::Modified(obj) => self.object_event(&obj, Change::Modified),
                KubeEvent::Deleted(obj) => self.object_event(&obj, Change::Deleted),
            };
            if let Some(out) = out
                && self.tx.send(Ok(out)).await.is_err()
            {
                return Ended::ConsumerGone;
            }
        }
    }

    /// Turns one object event into the datastore's, advancing `rv`.
    /// `None` for objects outside the watched set, objects that are not
    /// well formed, and Nodes whose Calico view did not change.
    fn object_event(&mut self, obj: &Value, change: Change) -> Option<WatchEvent> {
        if let Some(rv) = resources::revision_of(obj) {
            self.rv = rv.to_string();
        }
        let Some(kv) = resources::from_object(self.ty, obj) else {
            tracing::warn!(
                watch = %self.list,
                name = obj.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or("?"),
                "skipping an object that is not well formed"
            );
            return None;
        };
        if !self.list.contains(&kv.key) {
            return None;
        }
        let Kv {
            key,
            value,
            revision,
        } = kv;
        if change == Change::Deleted {
            self.seen_nodes.remove(&key);
            return Some(WatchEvent::Deleted { key, revision });
        }
        if self.ty == ApiType::Node {
            if self.seen_nodes.get(&key) == Some(&value) {
                return None;
            }
            self.seen_nodes.insert(key.clone(), value.clone());
        }
        let kv = Kv {
            key,
            value,
            revision,
        };
        Some(match change {
            Change::Added => WatchEvent::Created(kv),
            _ => WatchEvent::Updated(kv),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}
