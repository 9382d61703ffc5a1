//! A watch that survives etcd going away: etcd's side of the resumable
//! watch in [`crate::watch`].
//!
//! ```text
//!   etcd ──watch stream──► watch task ──mpsc──► WatchStream (consumer)
//!                            │  on error: report Err, back off, re-create
//!                            │  the etcd watch from last_delivered + 1
//!                            └─ on compaction: relist, send Snapshot
//! ```
//!
//! Resuming from `last_delivered + 1` is what makes "nothing lost, nothing
//! repeated" hold: etcd keeps history across a restart (same data dir), so
//! every revision after the last one we handed out is replayed, and none
//! before it. Progress notifications let us advance the resume point while
//! the watched keys are quiet, so a long-idle watch does not resume from a
//! revision that has since been compacted.

use etcd_client::{EventType, WatchOptions, WatchResponse};

use super::{EtcdBackend, codec};
use crate::backend::{Kv, WatchEvent, WatchStream};
use crate::watch::{self, Answer, Interrupt, WatchSource};
use crate::{Error, Key, ListKey};

pub(super) fn spawn(backend: EtcdBackend, list: ListKey, after: Option<i64>) -> WatchStream {
    watch::spawn(EtcdWatch { backend, list }, after)
}

/// One watched prefix of etcd. Its resume point is the revision of the
/// last event delivered (or of the snapshot taken).
struct EtcdWatch {
    backend: EtcdBackend,
    list: ListKey,
}

/// One etcd watch stream, and the revision it has reached.
struct Feed {
    stream: etcd_client::WatchStream,
    last: i64,
}

impl WatchSource for EtcdWatch {
    type Resume = i64;
    type Feed = Feed;

    fn set(&self) -> &ListKey {
        &self.list
    }

    async fn list(&mut self) -> Result<(Vec<Kv>, i64), Error> {
        self.backend.list_prefix(&self.list).await
    }

    async fn watch(&mut self, from: &i64) -> Result<Feed, Interrupt> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1)
            .with_progress_notify();
        let mut wc = self.backend.client.watch_client();
        let prefix = self.list.etcd_prefix();
        let what = self.list.to_string();
        match self
            .backend
            .timed(&what, wc.watch(prefix, Some(opts)))
            .await
        {
            Ok(stream) => Ok(Feed {
                stream,
                last: *from,
            }),
            Err(e) => Err(Interrupt::Broken(e)),
        }
    }

    async fn next(&mut self, feed: &mut Feed) -> Result<Answer<i64>, Interrupt> {
        let resp = match feed.stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Err(Interrupt::Broken(super::unavailable(
                    &self.backend.cfg,
                    "watch stream closed by the server",
                )));
            }
            Err(e) => {
                return Err(Interrupt::Broken(super::map_err(
                    &self.backend.cfg,
                    &self.list.to_string(),
                    e,
                )));
            }
        };
        if resp.compact_revision() > 0 {
            return Err(Interrupt::TooOld);
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            // etcd cancels a new watch when it does not know the login's
            // token (lost in an etcd restart: "invalid auth token", or
            // "permission denied" from some versions) or when the role
            // lacks the read permission. The retry logs in again, and the
            // error says what to check if that was not it.
            let status =
                if reason.contains("invalid auth token") || reason.contains("user name is empty") {
                    Some(tonic::Status::unauthenticated(reason))
                } else if reason.contains("permission denied") {
                    Some(tonic::Status::permission_denied(reason))
                } else {
                    None
                };
            if let Some(status) = status {
                self.backend.forget_login();
                if let Some(e) =
                    super::auth_error(&self.backend.cfg, &self.list.to_string(), &status)
                {
                    return Err(Interrupt::Broken(e));
                }
            }
            return Err(Interrupt::Broken(super::unavailable(
                &self.backend.cfg,
                &format!("watch cancelled by etcd: {reason}"),
            )));
        }
        let events = self.events(&resp);
        let reached = if resp.events().is_empty() {
            // A progress notification promises every event up to its
            // header revision has been sent. The "created" response
            // promises nothing of the sort.
            resp.header()
                .filter(|_| !resp.created())
                .map(|h| h.revision())
        } else {
            // All events of a revision arrive in one response, so advancing
            // only after the whole response never skips half a transaction.
            resp.events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision())
                .max()
        };
        let resume = reached.map(|r| {
            feed.last = feed.last.max(r);
            feed.last
        });
        Ok(Answer { events, resume })
    }

    fn log_relist(&self, from: &i64) {
        tracing::warn!(watch = %self.list, after = *from, "watch history compacted; relisting");
    }
}

impl EtcdWatch {
    /// The response's events in the watched set, as the datastore's.
    fn events(&self, resp: &WatchResponse) -> Vec<WatchEvent> {
        let mut out = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision();
            let Some(key) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(Key::from_etcd_path)
                .filter(|k| self.list.contains(k))
            else {
                continue;
            };
            out.push(match ev.event_type() {
                EventType::Delete => WatchEvent::Deleted {
                    key,
                    revision: rev.into(),
                },
                EventType::Put => match codec::decode(&key, kv.value()) {
                    Ok(value) => {
                        let item = Kv {
                            key,
                            value,
                            revision: rev.into(),
                        };
                        if kv.create_revision() == rev {
                            WatchEvent::Created(item)
                        } else {
                            WatchEvent::Updated(item)
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping unreadable object in watch");
                        continue;
                    }
                },
            });
        }
        out
    }
}
