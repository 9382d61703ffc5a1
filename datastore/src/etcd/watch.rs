//! A watch that survives etcd going away.
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
//!
//! The task ends when the consumer drops the stream.

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{EtcdBackend, codec};
use crate::backend::{Kv, WATCH_BACKOFF_MIN, WatchEvent, WatchStream, report_and_back_off};
use crate::{Error, Key, ListKey};

const CHANNEL: usize = 1024;

pub(super) fn spawn(backend: EtcdBackend, list: ListKey, after: Option<i64>) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let task = WatchTask {
            backend,
            list,
            tx,
            last: after.unwrap_or(0),
            need_snapshot: after.is_none(),
        };
        task.run().await;
    });
    Box::pin(ReceiverStream::new(rx))
}

struct WatchTask {
    backend: EtcdBackend,
    list: ListKey,
    tx: mpsc::Sender<Result<WatchEvent, Error>>,
    /// The revision of the last event delivered (or snapshot taken).
    last: i64,
    need_snapshot: bool,
}

/// Why one etcd watch stream ended.
enum Ended {
    ConsumerGone,
    /// Reconnect from `last + 1`.
    Broken(Error),
    /// History we need is gone; relist.
    Compacted,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            if self.need_snapshot {
                match self.backend.list_prefix(&self.list).await {
                    Ok((items, rev)) => {
                        self.last = rev;
                        self.need_snapshot = false;
                        let ev = WatchEvent::Snapshot {
                            items,
                            revision: rev.into(),
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
                Ended::Compacted => {
                    tracing::warn!(watch = %self.list, after = self.last,
                        "watch history compacted; relisting");
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

    async fn stream_once(&mut self, backoff: &mut Duration) -> Ended {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.last + 1)
            .with_progress_notify();
        let mut wc = self.backend.client.watch_client();
        let prefix = self.list.etcd_prefix();
        let what = self.list.to_string();
        let created = tokio::select! {
            r = self.backend.timed(&what, wc.watch(prefix, Some(opts))) => r,
            _ = self.tx.closed() => return Ended::ConsumerGone,
        };
        let mut stream = match created {
            Ok(s) => s,
            Err(e) => return Ended::Broken(e),
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = self.tx.closed() => return Ended::ConsumerGone,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return Ended::Broken(super::unavailable(
                        &self.backend.cfg,
                        "watch stream closed by the server",
                    ));
                }
                Err(e) => {
                    return Ended::Broken(super::map_err(
                        &self.backend.cfg,
                        &self.list.to_string(),
                        e,
                    ));
                }
            };
            if resp.compact_revision() > 0 {
                return Ended::Compacted;
            }
            if resp.canceled() {
                return Ended::Broken(super::unavailable(
                    &self.backend.cfg,
                    &format!("watch cancelled by etcd: {}", resp.cancel_reason()),
                ));
            }
            *backoff = WATCH_BACKOFF_MIN;
            if resp.events().is_empty() {
                // A progress notification promises every event up to its
                // header revision has been sent. The "created" response
                // promises nothing of the sort.
                if !resp.created()
                    && let Some(h) = resp.header()
                {
                    self.last = self.last.max(h.revision());
                }
                continue;
            }
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
                let out = match ev.event_type() {
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
                };
                if self.tx.send(Ok(out)).await.is_err() {
                    return Ended::ConsumerGone;
                }
            }
            // All events of a revision arrive in one response, so advancing
            // only after the whole response never skips half a transaction.
            if let Some(max) = resp
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision())
                .max()
            {
                self.last = self.last.max(max);
            }
        }
    }
}
