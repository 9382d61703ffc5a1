//! A watch on the Kubernetes API that survives the API server going away,
//! resumes where it left off, and relists when history is gone: the API
//! server's side of the resumable watch in [`crate::watch`].
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

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::core::params::WatchParams;
use kube::core::{Request, WatchEvent as KubeEvent};
use serde_json::Value;

use super::KubeBackend;
use super::errors::{self, Ctx};
use super::resources::{self, ApiType};
use crate::backend::{Kv, Revision, WatchEvent, WatchStream};
use crate::watch::{self, Answer, Interrupt, WatchSource};
use crate::{Error, Key, ListKey};

/// How much longer than the server-side watch timeout a watch may stay
/// silent before the connection is taken for dead.
const SILENCE_SLACK: Duration = Duration::from_secs(30);

pub(super) fn spawn(
    backend: KubeBackend,
    list: ListKey,
    ty: ApiType,
    after: Option<String>,
) -> WatchStream {
    let source = KubeWatch {
        ty,
        backend,
        list,
        seen_nodes: HashMap::new(),
    };
    watch::spawn(source, after.filter(|r| !r.is_empty()).map(Revision))
}

/// One watched collection. Its resume point is the resourceVersion last
/// delivered, listed or bookmarked.
struct KubeWatch {
    backend: KubeBackend,
    list: ListKey,
    ty: ApiType,
    /// For Nodes only: the Calico view last delivered per node.
    seen_nodes: HashMap<Key, Vec<u8>>,
}

type Events = Pin<Box<dyn Stream<Item = Result<KubeEvent<Value>, kube::Error>> + Send>>;

/// One watch request's event stream.
struct Feed {
    events: Events,
    /// How the watch ends after the answer already given (see `next`).
    ending: Option<Interrupt>,
}

impl WatchSource for KubeWatch {
    type Resume = Revision;
    type Feed = Feed;

    fn set(&self) -> &ListKey {
        &self.list
    }

    async fn list(&mut self) -> Result<(Vec<Kv>, Revision), Error> {
        let (items, rv) = self.backend.list_objects(&self.list).await?;
        if self.ty == ApiType::Node {
            self.seen_nodes = items
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect();
        }
        Ok((items, Revision(rv)))
    }

    async fn watch(&mut self, from: &Revision) -> Result<Feed, Interrupt> {
        let timeout = self.backend.opts.watch_timeout;
        let wp = WatchParams {
            timeout: Some(u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1)),
            bookmarks: true,
            ..Default::default()
        };
        let req = Request::new(self.ty.collection_path())
            .watch(&wp, &from.0)
            .map_err(|e| {
                Interrupt::Broken(Error::Backend {
                    key: self.list.to_string(),
                    reason: format!("cannot build the watch request: {e}"),
                })
            })?;
        let started = tokio::time::timeout(
            self.backend.opts.request_timeout,
            self.backend.client.request_events::<Value>(req),
        )
        .await;
        match started {
            Err(_) => Err(Interrupt::Broken(self.ctx().unavailable(format!(
                "no answer within {:?} to watch {}",
                self.backend.opts.request_timeout, self.list
            )))),
            Ok(Err(e)) if errors::is_gone_err(&e) => Err(Interrupt::TooOld),
            Ok(Err(e)) => Err(Interrupt::Broken(self.ctx().map(e))),
            Ok(Ok(events)) => Ok(Feed {
                events: Box::pin(events),
                ending: None,
            }),
        }
    }

    async fn next(&mut self, feed: &mut Feed) -> Result<Answer<Revision>, Interrupt> {
        if let Some(ending) = feed.ending.take() {
            return Err(ending);
        }
        let silence = self.backend.opts.watch_timeout + SILENCE_SLACK;
        let ev = match tokio::time::timeout(silence, feed.events.next()).await {
            Err(_) => {
                return Err(Interrupt::Broken(
                    self.ctx()
                        .unavailable(format!("the watch was silent for {silence:?}")),
                ));
            }
            Ok(None) => return Err(Interrupt::Closed),
            Ok(Some(Err(e))) if errors::is_gone_err(&e) => return Err(Interrupt::TooOld),
            Ok(Some(Err(e))) => return Err(Interrupt::Broken(self.ctx().map(e))),
            Ok(Some(Ok(ev))) => ev,
        };
        let (event, resume) = match ev {
            KubeEvent::Bookmark(b) => {
                let rv = b.metadata.resource_version;
                (None, (!rv.is_empty()).then_some(Revision(rv)))
            }
            KubeEvent::Error(status) => {
                // An ERROR event is an answer like any other, so the
                // back-off starts over; the watch ends on the next call.
                feed.ending = Some(if errors::is_gone(&status) {
                    Interrupt::TooOld
                } else {
                    Interrupt::Broken(self.ctx().map_status(&status))
                });
                (None, None)
            }
            KubeEvent::Added(obj) => self.object_event(&obj, Change::Added),
            KubeEvent::Modified(obj) => self.object_event(&obj, Change::Modified),
            KubeEvent::Deleted(obj) => self.object_event(&obj, Change::Deleted),
        };
        Ok(Answer {
            events: event.into_iter().collect(),
            resume,
        })
    }

    fn log_relist(&self, from: &Revision) {
        tracing::info!(watch = %self.list, rv = %from,
            "resourceVersion too old to resume the watch (410 Gone); relisting");
    }
}

impl KubeWatch {
    fn ctx(&self) -> Ctx<'_> {
        self.backend.ctx(self.ty, &self.list, "watch", None)
    }

    /// Turns one object event into the datastore's, with the
    /// resourceVersion to resume from after it. No event for objects
    /// outside the watched set, objects that are not well formed, and
    /// Nodes whose Calico view did not change; the resourceVersion moves on
    /// all the same.
    fn object_event(
        &mut self,
        obj: &Value,
        change: Change,
    ) -> (Option<WatchEvent>, Option<Revision>) {
        let rv = resources::revision_of(obj).map(|rv| Revision(rv.to_string()));
        (self.convert(obj, change), rv)
    }

    fn convert(&mut self, obj: &Value, change: Change) -> Option<WatchEvent> {
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
