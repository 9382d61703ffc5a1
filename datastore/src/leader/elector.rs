//! The campaign task: drives a [`LeaseLock`] with a [`Campaign`] and
//! publishes [`Leadership`].
//!
//! ```text
//!   loop:
//!     attempt ─────────────── bounded by the renew deadline; meanwhile the
//!       │                     lapse deadline may pass (step down), or stop
//!       ▼
//!     Campaign::observe, step ──► watch::Sender<Leadership> (+ log line)
//!       │
//!     wait until next_attempt ── or lock.changed() (Lost: step down first)
//!                             ── or the lapse deadline, or stop
//!   stop (Elector::release): step down, publish, lock.release()
//! ```

use std::future::Future;
use std::pin::pin;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};

use super::{Campaign, Leadership, LeaseLock, Signal, Timing, TimingError, Transition};
use crate::Error;

/// A running campaign. Hands out [`Leadership`] updates; stops on
/// [`Elector::release`] (giving the lock up) or when dropped (without
/// giving it up: to the others that is a crash, and the lock passes on
/// once it expires).
pub struct Elector {
    leadership: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
    describe: String,
}

impl Elector {
    /// Starts campaigning on `lock` (the task runs on the current tokio
    /// runtime).
    pub fn start(lock: Box<dyn LeaseLock>, timing: Timing) -> Result<Elector, TimingError> {
        timing.validate()?;
        let describe = lock.describe();
        let (tx, rx) = watch::channel(Leadership::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(campaign(lock, timing, tx, stop_rx));
        Ok(Elector {
            leadership: rx,
            stop: Some(stop_tx),
            task: Some(task),
            describe,
        })
    }

    /// Leadership as it changes (`wait_for(|l| l.leading)` to wait for
    /// the lead).
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Leadership now.
    pub fn leadership(&self) -> Leadership {
        self.leadership.borrow().clone()
    }

    /// The lock, for logs.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Stops campaigning, steps down (subscribers see `leading: false`)
    /// and gives the lock up so the next leader need not wait for it to
    /// expire. Stop the guarded tasks *before* this: once the lock is
    /// released another instance may start its own at once.
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::Backend {
                    key: self.describe.clone(),
                    reason: format!("the campaign task failed: {e}"),
                }),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Publishes a transition: the log line, then the subscribers.
fn publish(
    camp: &Campaign,
    change: Option<Transition>,
    tx: &watch::Sender<Leadership>,
    lock: &str,
    identity: &str,
) {
    match &change {
        Some(Transition::Gained { term }) => {
            tracing::info!(lock, identity, term, "became leader");
        }
        Some(Transition::Lost { term, reason }) => {
            tracing::warn!(lock, identity, term, ?reason, "no longer leader");
        }
        None => {}
    }
    let now = camp.leadership();
    tx.send_if_modified(|l| {
        if *l == now {
            false
        } else {
            *l = now;
            true
        }
    });
}

/// What ended a wait.
enum Woken<T> {
    Done(T),
    Lapse,
    Stop,
}

/// Awaits `fut`, stepping down if the lapse deadline passes meanwhile;
/// `None` when asked to stop.
async fn while_leading<T>(
    fut: impl Future<Output = T>,
    camp: &mut Campaign,
    tx: &watch::Sender<Leadership>,
    stop: &mut oneshot::Receiver<()>,
    names: (&str, &str),
) -> Option<T> {
    let mut fut = pin!(fut);
    loop {
        let lapse = camp.lapse_at();
        let woken = tokio::select! {
            r = &mut fut => Woken::Done(r),
            _ = sleep_until(lapse.unwrap_or_else(Instant::now)), if lapse.is_some() => Woken::Lapse,
            _ = &mut *stop => Woken::Stop,
        };
        match woken {
            Woken::Done(r) => return Some(r),
            Woken::Lapse => {
                let change = camp.step(Instant::now());
                publish(camp, change, tx, names.0, names.1);
            }
            Woken::Stop => return None,
        }
    }
}

async fn campaign(
    mut lock: Box<dyn LeaseLock>,
    timing: Timing,
    tx: watch::Sender<Leadership>,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let describe = lock.describe();
    let identity = lock.identity().to_string();
    let names = (describe.as_str(), identity.as_str());
    let mut camp = Campaign::new(identity.clone(), timing);
    tracing::info!(lock = %describe, identity = %identity, ?timing, "campaigning for leadership");
    loop {
        // An attempt that takes longer than the renew deadline could not
        // keep us leader anyway.
        let attempt = timeout(timing.renew_deadline, lock.try_acquire_or_renew());
        let Some(result) = while_leading(attempt, &mut camp, &tx, &mut stop, names).await else {
            break;
        };
        match result {
            Ok(Ok(outcome)) => camp.observe(outcome),
            Ok(Err(e)) => {
                tracing::warn!(lock = %describe, error = %e, "leader election: attempt failed; retrying");
            }
            Err(_) => tracing::warn!(
                lock = %describe,
                limit = ?timing.renew_deadline,
                "leader election: no answer in time; retrying"
            ),
        }
        let change = camp.step(Instant::now());
        publish(&camp, change, &tx, names.0, names.1);

        let next = camp.next_attempt(Instant::now(), lock.watching(), rand::random::<f64>());
        let waited = while_leading(
            async {
                tokio::select! {
                    _ = sleep_until(next) => None,
                    s = lock.changed() => Some(s),
                }
            },
            &mut camp,
            &tx,
            &mut stop,
            names,
        )
        .await;
        match waited {
            None => break,
            Some(Some(Signal::Lost)) => {
                camp.observe(super::Outcome::NotHeld { holder: None });
                let change = camp.step(Instant::now());
                publish(&camp, change, &tx, names.0, names.1);
            }
            Some(Some(Signal::Recheck) | None) => {}
        }
    }
    let change = camp.release();
    publish(&camp, change, &tx, names.0, names.1);
    let released = lock.release().await;
    match &released {
        Ok(()) => tracing::info!(lock = %describe, identity = %identity, "released the lock"),
        Err(e) => {
            tracing::warn!(lock = %describe, error = %e, "could not release the lock; it expires by itself")
        }
    }
    released
}

#[cfg(test)]
mod tests {
    //! The task around the campaign, against an in-memory lock with the
    //! Kubernetes Lease's rules, on tokio's paused clock.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::leader::Outcome;

    /// One lock shared by several electors: holder, when it was last
    /// renewed, and whether the "datastore" answers.
    #[derive(Default)]
    struct Store {
        holder: Option<String>,
        renewed: Option<Instant>,
        down: bool,
    }

    struct MemLock {
        store: Arc<Mutex<Store>>,
        me: String,
        lease: Duration,
    }

    #[async_trait]
    impl LeaseLock for MemLock {
        fn describe(&self) -> String {
            "memory lock".into()
        }
        fn identity(&self) -> &str {
            &self.me
        }
        async fn try_acquire_or_renew(&mut self) -> Result<Outcome, Error> {
            let sent = Instant::now();
            let down = self.store.lock().map(|s| s.down).unwrap_or(true);
            if down {
                // A datastore that never answers.
                std::future::pending::<()>().await;
            }
            let mut s = self.store.lock().expect("store");
            let free = match (&s.holder, s.renewed) {
                (None, _) => true,
                (Some(h), _) if *h == self.me => true,
                (Some(_), Some(r)) => sent >= r + self.lease,
                (Some(_), None) => true,
            };
            if free {
                s.holder = Some(self.me.clone());
                s.renewed = Some(sent);
                Ok(Outcome::Held { renewed_at: sent })
            } else {
                Ok(Outcome::NotHeld {
                    holder: s.holder.clone(),
                })
            }
        }
        async fn release(&mut self) -> Result<(), Error> {
            let mut s = self.store.lock().expect("store");
            if s.holder.as_deref() == Some(&self.me) {
                s.holder = None;
            }
            Ok(())
        }
    }

    fn elector(store: &Arc<Mutex<Store>>, me: &str) -> Elector {
        let timing = Timing::default();
        let lock = MemLock {
            store: store.clone(),
            me: me.into(),
            lease: timing.lease_duration,
        };
        Elector::start(Box::new(lock), timing).expect("valid timing")
    }

    fn leaders(es: &[&Elector]) -> Vec<String> {
        es.iter()
            .filter(|e| e.leadership().leading)
            .filter_map(|e| e.leadership().holder)
            .collect()
    }

    async fn wait_leading(e: &Elector) -> Instant {
        let mut rx = e.subscribe();
        rx.wait_for(|l| l.leading).await.expect("campaign running");
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn one_leads_a_crashed_leader_is_replaced_after_the_lease_and_a_release_at_once() {
        let store = Arc::new(Mutex::new(Store::default()));
        let a = elector(&store, "a");
        wait_leading(&a).await;
        let b = elector(&store, "b");
        let c = elector(&store, "c");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(leaders(&[&a, &b, &c]), ["a"]);
        assert_eq!(b.leadership().holder.as_deref(), Some("a"));

        // a crashes: no release. Someone else leads once a's last renewal
        // is a lease duration old, and within one (jittered) retry of it.
        let crashed = Instant::now();
        drop(a);
        let (next, took) = tokio::select! {
            t = wait_leading(&b) => (&b, t),
            t = wait_leading(&c) => (&c, t),
        };
        let after = took - crashed;
        assert!(
            after <= Duration::from_secs(15) + Duration::from_millis(2400),
            "{after:?}"
        );
        assert!(after >= Duration::from_secs(13), "{after:?}");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(leaders(&[&b, &c]).len(), 1);

        // A clean release hands over within one poll.
        let (next, other) = if std::ptr::eq(next, &b) {
            (b, c)
        } else {
            (c, b)
        };
        let released = Instant::now();
        next.release().await.expect("released");
        let took = wait_leading(&other).await - released;
        assert!(took <= Duration::from_millis(2400), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_datastore_stops_answering_steps_down_at_the_renew_deadline() {
        let store = Arc::new(Mutex::new(Store::default()));
        let a = elector(&store, "a");
        let gained = wait_leading(&a).await;
        let mut rx = a.subscribe();
        tokio::time::sleep(Duration::from_secs(7)).await;
        // Renewals at 0, 2, 4, 6 s went through; from now on none answers.
        store.lock().expect("store").down = true;
        let last_renewal = gained + Duration::from_secs(6);
        rx.wait_for(|l| !l.leading).await.expect("running");
        assert_eq!(Instant::now() - last_renewal, Duration::from_secs(10));
        // Before anyone else could take it over (lease: 15 s).
        assert!(Instant::now() < last_renewal + Duration::from_secs(15));
        // The datastore returns: the renewal (still ours) makes a new term.
        store.lock().expect("store").down = false;
        rx.wait_for(|l| l.leading).await.expect("running");
        assert_eq!(a.leadership().term, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn release_steps_down_before_giving_the_lock_up() {
        let store = Arc::new(Mutex::new(Store::default()));
        let a = elector(&store, "a");
        wait_leading(&a).await;
        let rx = a.subscribe();
        a.release().await.expect("released");
        assert!(!rx.borrow().leading);
        assert_eq!(store.lock().expect("store").holder, None);
    }
}
