//! One resumable watch, whichever store is behind it.
//!
//! ```text
//!   (no resume point) ─► list ─► Snapshot ─┐
//!                                          ▼
//!        watch from R ──► answers ─► events to the consumer; R moves on
//!              ▲              │
//!              │              ├─ closed normally ─► watch again from R at once
//!              ├── back off ◄─┴─ broken ─► Err to the consumer
//!              │                 too old ─► relist (a fresh Snapshot)
//!   list fails ┘
//! ```
//!
//! The skeleton is the same for etcd and Kubernetes; what differs — how to
//! list, how to open a watch, what an answer means and when history is
//! gone — each backend supplies through [`WatchSource`]. `R` only moves to
//! a point the store handed out, after the events up to it were delivered,
//! so a resumed watch repeats nothing and skips nothing.
//!
//! The task ends when the consumer drops the stream.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::{Kv, Revision, WatchEvent, WatchStream};
use crate::{Error, ListKey};

const CHANNEL: usize = 1024;

/// First wait of a watch task after its stream broke; it doubles up to
/// [`WATCH_BACKOFF_MAX`] and starts over once the store answers again.
pub(crate) const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a backend supplies to watch one set.
pub(crate) trait WatchSource: Send + 'static {
    /// Where a watch resumes: etcd's revision, Kubernetes' resourceVersion.
    type Resume: Clone + Send + Into<Revision>;
    /// One open watch on the store.
    type Feed: Send;

    /// The set watched, for logs.
    fn set(&self) -> &ListKey;

    /// Everything in the set now, and the point to watch on from.
    fn list(&mut self) -> impl Future<Output = Result<(Vec<Kv>, Self::Resume), Error>> + Send;

    /// Opens a watch for the changes after `from`.
    fn watch(
        &mut self,
        from: &Self::Resume,
    ) -> impl Future<Output = Result<Self::Feed, Interrupt>> + Send;

    /// The store's next answer on `feed`, or why the feed is over.
    fn next(
        &mut self,
        feed: &mut Self::Feed,
    ) -> impl Future<Output = Result<Answer<Self::Resume>, Interrupt>> + Send;

    /// Says, in the backend's own terms, that the watch cannot resume after
    /// `from` and lists again.
    fn log_relist(&self, from: &Self::Resume);
}

/// One answer from the store: it is alive, so the back-off starts over.
#[derive(Debug)]
pub(crate) struct Answer<R> {
    /// To deliver, in order.
    pub events: Vec<WatchEvent>,
    /// Where to resume once `events` are delivered, if that moved (an
    /// event's revision, a bookmark, a progress notification).
    pub resume: Option<R>,
}

impl<R> Default for Answer<R> {
    fn default() -> Self {
        Answer {
            events: Vec::new(),
            resume: None,
        }
    }
}

/// Why a watch on the store ended, which says how to go on.
#[derive(Debug)]
pub(crate) enum Interrupt {
    /// Ended in the ordinary way (the server's own timeout): watch again
    /// from the same point at once, reporting nothing.
    Closed,
    /// Broken (store down, connection lost): report it to the consumer,
    /// back off, and watch again from the same point.
    Broken(Error),
    /// The store no longer has the history after the resume point: list
    /// again and hand the consumer a fresh snapshot.
    TooOld,
}

/// Starts the watch task: from just after `after`, or with a snapshot.
pub(crate) fn spawn<S: WatchSource>(source: S, after: Option<S::Resume>) -> WatchStream {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(run(source, after, tx));
    Box::pin(ReceiverStream::new(rx))
}

type Tx = mpsc::Sender<Result<WatchEvent, Error>>;

async fn run<S: WatchSource>(mut source: S, mut resume: Option<S::Resume>, tx: Tx) {
    let mut backoff = WATCH_BACKOFF_MIN;
    loop {
        let mut at = match resume.take() {
            Some(at) => at,
            None => match source.list().await {
                Ok((items, at)) => {
                    let snapshot = WatchEvent::Snapshot {
                        items,
                        revision: at.clone().into(),
                    };
                    if tx.send(Ok(snapshot)).await.is_err() {
                        return;
                    }
                    at
                }
                Err(e) => {
                    if !report_and_back_off(&tx, source.set(), e, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let Some(interrupt) = stream_once(&mut source, &tx, &mut at, &mut backoff).await else {
            return;
        };
        match interrupt {
            Interrupt::Closed => resume = Some(at),
            Interrupt::TooOld => source.log_relist(&at),
            Interrupt::Broken(e) => {
                if !report_and_back_off(&tx, source.set(), e, &mut backoff).await {
                    return;
                }
                resume = Some(at);
            }
        }
    }
}

/// Watches from `at` until the watch ends, delivering what the store
/// sends and moving `at` on. `None` once the consumer is gone.
async fn stream_once<S: WatchSource>(
    source: &mut S,
    tx: &Tx,
    at: &mut S::Resume,
    backoff: &mut Duration,
) -> Option<Interrupt> {
    let opened = tokio::select! {
        r = source.watch(at) => r,
        _ = tx.closed() => return None,
    };
    let mut feed = match opened {
        Ok(feed) => feed,
        Err(interrupt) => return Some(interrupt),
    };
    loop {
        let answer = tokio::select! {
            a = source.next(&mut feed) => a,
            _ = tx.closed() => return None,
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(interrupt) => return Some(interrupt),
        };
        *backoff = WATCH_BACKOFF_MIN;
        for ev in answer.events {
            if tx.send(Ok(ev)).await.is_err() {
                return None;
            }
        }
        if let Some(next) = answer.resume {
            *at = next;
        }
    }
}

/// Reports `e` to the consumer, then sleeps `backoff` (doubled for next
/// time, up to [`WATCH_BACKOFF_MAX`]). Returns false if the consumer is
/// gone.
async fn report_and_back_off(tx: &Tx, list: &ListKey, e: Error, backoff: &mut Duration) -> bool {
    tracing::debug!(watch = %list, error = %e, "watch interrupted; retrying");
    if tx.send(Err(e)).await.is_err() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = tx.closed() => return false,
    }
    *backoff = (*backoff * 2).min(WATCH_BACKOFF_MAX);
    true
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use tokio::time::Instant;

    use super::*;
    use crate::Key;

    /// What the skeleton asked of the store, and when.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        List(Duration),
        Watch(i64, Duration),
    }

    type Feed = VecDeque<Result<Answer<i64>, Interrupt>>;

    /// A store that plays a script: each list and each watch takes the
    /// next entry, each feed yields its answers in turn; once a script runs
    /// out the call waits forever, as an idle store would.
    struct Scripted {
        set: ListKey,
        lists: VecDeque<Result<(Vec<Kv>, i64), Error>>,
        watches: VecDeque<Result<Feed, Interrupt>>,
        calls: Arc<Mutex<Vec<Call>>>,
        started: Instant,
        /// Dropped with the source: tells a test the task has ended.
        _alive: tokio::sync::oneshot::Sender<()>,
    }

    impl Scripted {
        fn record(&self, call: impl FnOnce(Duration) -> Call) {
            self.calls
                .lock()
                .unwrap()
                .push(call(self.started.elapsed()));
        }
    }

    impl WatchSource for Scripted {
        type Resume = i64;
        type Feed = Feed;

        fn set(&self) -> &ListKey {
            &self.set
        }

        async fn list(&mut self) -> Result<(Vec<Kv>, i64), Error> {
            self.record(Call::List);
            match self.lists.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }

        async fn watch(&mut self, from: &i64) -> Result<Feed, Interrupt> {
            self.record(|t| Call::Watch(*from, t));
            match self.watches.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }

        async fn next(&mut self, feed: &mut Feed) -> Result<Answer<i64>, Interrupt> {
            match feed.pop_front() {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }

        fn log_relist(&self, _from: &i64) {}
    }

    struct Run {
        stream: WatchStream,
        calls: Arc<Mutex<Vec<Call>>>,
        ended: tokio::sync::oneshot::Receiver<()>,
    }

    fn start(
        after: Option<i64>,
        lists: Vec<Result<(Vec<Kv>, i64), Error>>,
        watches: Vec<Result<Feed, Interrupt>>,
    ) -> Run {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (alive, ended) = tokio::sync::oneshot::channel();
        let source = Scripted {
            set: ListKey::Blocks,
            lists: lists.into(),
            watches: watches.into(),
            calls: calls.clone(),
            started: Instant::now(),
            _alive: alive,
        };
        Run {
            stream: spawn(source, after),
            calls,
            ended,
        }
    }

    impl Run {
        async fn next(&mut self) -> Result<WatchEvent, Error> {
            tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("nothing delivered within a minute")
                .expect("the watch ended")
        }

        /// Nothing more is delivered while the store stays quiet.
        async fn quiet(&mut self) {
            let r = tokio::time::timeout(Duration::from_secs(60), self.stream.next()).await;
            assert!(r.is_err(), "expected nothing, got {r:?}");
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn kv(name: &str, rev: i64) -> Kv {
        Kv {
            key: Key::Handle { id: name.into() },
            value: b"{}".to_vec(),
            revision: rev.into(),
        }
    }

    fn created(name: &str, rev: i64) -> Result<Answer<i64>, Interrupt> {
        Ok(Answer {
            events: vec![WatchEvent::Created(kv(name, rev))],
            resume: Some(rev),
        })
    }

    fn progress(rev: i64) -> Result<Answer<i64>, Interrupt> {
        Ok(Answer {
            events: Vec::new(),
            resume: Some(rev),
        })
    }

    fn broken(why: &str) -> Interrupt {
        Interrupt::Broken(Error::Backend {
            key: "blocks".into(),
            reason: why.into(),
        })
    }

    fn snapshot_of(ev: &WatchEvent) -> Option<(usize, Revision)> {
        match ev {
            WatchEvent::Snapshot { items, revision } => Some((items.len(), revision.clone())),
            _ => None,
        }
    }

    const T0: Duration = Duration::ZERO;

    #[tokio::test(start_paused = true)]
    async fn a_new_watch_lists_once_then_watches_from_the_listed_revision() {
        let mut w = start(
            None,
            vec![Ok((vec![kv("a", 5), kv("b", 9)], 10))],
            vec![Ok(Feed::from([created("c", 11)]))],
        );
        let first = w.next().await.unwrap();
        assert_eq!(snapshot_of(&first), Some((2, Revision::from(10))));
        assert_eq!(w.next().await.unwrap(), WatchEvent::Created(kv("c", 11)));
        w.quiet().await;
        assert_eq!(w.calls(), [Call::List(T0), Call::Watch(10, T0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_from_a_revision_starts_without_a_snapshot() {
        let mut w = start(Some(7), vec![], vec![Ok(Feed::from([created("c", 8)]))]);
        assert_eq!(w.next().await.unwrap(), WatchEvent::Created(kv("c", 8)));
        assert_eq!(w.calls(), [Call::Watch(7, T0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn too_old_relists_and_sends_one_snapshot_per_relist() {
        let mut w = start(
            None,
            vec![
                Ok((vec![kv("a", 5)], 10)),
                Ok((vec![kv("b", 20)], 20)),
                Ok((vec![kv("b", 20), kv("c", 30)], 30)),
            ],
            vec![
                Ok(Feed::from([created("x", 11), Err(Interrupt::TooOld)])),
                // Opening the watch can find the history gone too.
                Err(Interrupt::TooOld),
                Ok(Feed::from([created("d", 31)])),
            ],
        );
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(w.next().await.unwrap());
        }
        w.quiet().await;
        let snapshots: Vec<_> = seen.iter().filter_map(snapshot_of).collect();
        assert_eq!(
            snapshots,
            [
                (1, Revision::from(10)),
                (1, Revision::from(20)),
                (2, Revision::from(30)),
            ],
            "{seen:?}"
        );
        assert_eq!(seen[1], WatchEvent::Created(kv("x", 11)));
        assert_eq!(seen[4], WatchEvent::Created(kv("d", 31)));
        // A relist is no error to report, and waits for nothing.
        assert_eq!(
            w.calls(),
            [
                Call::List(T0),
                Call::Watch(10, T0),
                Call::List(T0),
                Call::Watch(20, T0),
                Call::List(T0),
                Call::Watch(30, T0),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_watch_resumes_after_the_last_event_without_a_relist() {
        let mut w = start(
            None,
            vec![Ok((vec![], 10))],
            vec![
                Ok(Feed::from([
                    created("c", 11),
                    progress(15),
                    Err(broken("connection reset")),
                ])),
                Err(broken("connection refused")),
                Ok(Feed::from([created("d", 16)])),
            ],
        );
        assert!(snapshot_of(&w.next().await.unwrap()).is_some());
        assert_eq!(w.next().await.unwrap(), WatchEvent::Created(kv("c", 11)));
        // Both interruptions reach the consumer, as errors it can show.
        for reason in ["connection reset", "connection refused"] {
            let err = w.next().await.unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert_eq!(w.next().await.unwrap(), WatchEvent::Created(kv("d", 16)));
        // Resumed from the progress point, never relisted; the back-off
        // doubled while nothing answered.
        let ms = Duration::from_millis;
        assert_eq!(
            w.calls(),
            [
                Call::List(T0),
                Call::Watch(10, T0),
                Call::Watch(15, ms(100)),
                Call::Watch(15, ms(300)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_restarts_the_back_off() {
        let ms = Duration::from_millis;
        let mut w = start(
            Some(1),
            vec![],
            vec![
                Err(broken("down")),
                Err(broken("down")),
                Ok(Feed::from([created("a", 2), Err(broken("reset"))])),
                Ok(Feed::new()),
            ],
        );
        for _ in 0..2 {
            w.next().await.unwrap_err();
        }
        w.next().await.unwrap();
        w.next().await.unwrap_err();
        w.quiet().await;
        // 100 ms, 200 ms, then back to 100 ms after the answer.
        assert_eq!(
            w.calls(),
            [
                Call::Watch(1, T0),
                Call::Watch(1, ms(100)),
                Call::Watch(1, ms(300)),
                Call::Watch(2, ms(400)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_closed_normally_is_opened_again_at_once_without_a_report() {
        let mut w = start(
            Some(1),
            vec![],
            vec![
                Ok(Feed::from([created("a", 2), Err(Interrupt::Closed)])),
                Ok(Feed::new()),
            ],
        );
        assert_eq!(w.next().await.unwrap(), WatchEvent::Created(kv("a", 2)));
        w.quiet().await;
        assert_eq!(w.calls(), [Call::Watch(1, T0), Call::Watch(2, T0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_list_is_reported_and_retried_after_a_back_off() {
        let mut w = start(
            None,
            vec![
                Err(Error::Backend {
                    key: "blocks".into(),
                    reason: "down".into(),
                }),
                Ok((vec![kv("a", 3)], 3)),
            ],
            vec![],
        );
        w.next().await.unwrap_err();
        assert!(snapshot_of(&w.next().await.unwrap()).is_some());
        let ms = Duration::from_millis;
        assert_eq!(
            w.calls(),
            [Call::List(T0), Call::List(ms(100)), Call::Watch(3, ms(100))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_the_consumer_drops_the_stream() {
        let w = start(Some(1), vec![], vec![Ok(Feed::new())]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(w.stream);
        tokio::time::timeout(Duration::from_secs(1), w.ended)
            .await
            .expect("the watch task is still running")
            .unwrap_err();
    }
}
