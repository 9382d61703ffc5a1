//! Leader election: one instance per cluster runs the cluster-wide tasks
//! (IPPool status, and the IPAM clean-up that follows), whichever
//! datastore holds the cluster.
//!
//! ```text
//!   Elector::start(lock, timing)
//!       │ spawns
//!       ▼
//!   campaign task ── try_acquire_or_renew ──► LeaseLock ──► etcd: lease (TTL, keepalive)
//!       │  Campaign (pure):                         │         + key created under it
//!       │  held / not held / failed,                │         by a txn, watched for deletion
//!       │  lapse at renew deadline                  │   └──► Kubernetes: coordination.k8s.io/v1
//!       │  ◄── Signal (key deleted, hold lost) ─────┘         Lease, resourceVersion-guarded
//!       ▼
//!   watch::Sender<Leadership> ──► guarded tasks start on `leading`,
//!                                  are cancelled when it drops
//! ```
//!
//! A leader keeps leading only while it renews: it steps down on its own
//! once [`Timing::renew_deadline`] has passed since the last renewal that
//! succeeded, which is [`Timing::lease_duration`] minus a margin before
//! anyone else may take the lock. It also steps down at once when the
//! datastore says someone else holds it. [`Elector::release`] (a clean
//! shutdown) gives the lock up so the next leader starts at once rather
//! than after the lease runs out; dropping the [`Elector`] without it is a
//! crash as far as the others can tell.
//!
//! The decisions are plain functions over plain data ([`campaign`], and
//! the Lease judgement in [`kubernetes`]); the tasks around them only do
//! the I/O.

pub mod campaign;
mod elector;
pub mod etcd;
pub mod kubernetes;

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{Client, Error};
pub use campaign::{Campaign, LossReason, Transition};
pub use elector::Elector;

/// The lock calico-node's once-per-cluster tasks run under.
pub const CLUSTER_TASKS_LOCK: &str = "calico-rs-cluster-tasks";

/// How long a holder's claim lasts without renewal: the longest the
/// cluster tasks pause when their leader dies without a word. client-go's
/// default. Pool status and IPAM clean-up can wait a quarter of a minute;
/// a shorter lease would hand leadership around whenever the datastore
/// stalls for a few seconds (an etcd leader election, an API server
/// restart), and cost more renewals.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps leading without a successful renewal.
/// client-go's default. The five seconds left of the lease are the margin
/// between the old leader stopping and the first moment anyone else may
/// start: they cover a renewal in flight and clocks that run at slightly
/// different rates on different nodes.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a leader renews, and a follower without a watch looks again.
/// client-go's default: five tries within the renew deadline, so one or
/// two lost requests do not cost the leadership; and the longest a
/// released Kubernetes Lease waits for its next holder.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Followers that poll wait `retry_period × (1 + JITTER × u)`, `u` uniform
/// in [0, 1), so a cluster's nodes do not all ask in the same instant
/// (client-go jitters for the same reason, by up to 1.2 periods; a fifth
/// keeps a released lock's hand-over short).
pub const JITTER: f64 = 0.2;

/// The three durations of an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a claim lasts unrenewed (the etcd lease's TTL, the Lease's
    /// `leaseDurationSeconds`; rounded up to whole seconds, which both
    /// datastores count in).
    pub lease_duration: Duration,
    /// A leader steps down when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Renewal interval, and a polling follower's.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

/// Durations that would let two instances lead at once, or never let one
/// renew in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration \
         ({lease_duration:?}): a leader must stop before others may start"
    )]
    DeadlineNotBeforeExpiry {
        renew_deadline: Duration,
        lease_duration: Duration,
    },
    #[error(
        "the retry period ({retry_period:?}, {JITTER} more with jitter) must be shorter than the \
         renew deadline ({renew_deadline:?}): a leader must get to renew before it steps down"
    )]
    RetryNotBeforeDeadline {
        retry_period: Duration,
        renew_deadline: Duration,
    },
    #[error("the retry period must be more than zero")]
    ZeroRetry,
}

impl Timing {
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.retry_period.is_zero() {
            return Err(TimingError::ZeroRetry);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingError::DeadlineNotBeforeExpiry {
                renew_deadline: self.renew_deadline,
                lease_duration: self.lease_duration,
            });
        }
        if self.retry_period.mul_f64(1.0 + JITTER) >= self.renew_deadline {
            return Err(TimingError::RetryNotBeforeDeadline {
                retry_period: self.retry_period,
                renew_deadline: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// The lease duration in the whole seconds the datastores count in,
    /// rounded up: others wait at least as long as we said.
    pub fn lease_seconds(&self) -> i64 {
        let d = self.lease_duration;
        let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if d.subsec_nanos() > 0 {
            whole.saturating_add(1)
        } else {
            whole.max(1)
        }
    }
}

/// Why an election could not start.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Timing(#[from] TimingError),
    #[error(transparent)]
    Datastore(#[from] Error),
}

/// What an instance knows of the election, as published to the tasks it
/// guards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This instance leads now: its guarded tasks may run.
    pub leading: bool,
    /// How often this instance has become leader. A consumer that sees a
    /// new term knows leadership was lost in between, even if it never saw
    /// `leading` false.
    pub term: u64,
    /// Who holds the lock as last seen (this instance's identity while it
    /// leads); `None` when nobody does or it is not known.
    pub holder: Option<String>,
}

/// What one attempt on the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// We hold the lock. Our claim was renewed no earlier than
    /// `renewed_at` (the moment the request that renewed it was sent):
    /// the renew deadline counts from there.
    Held { renewed_at: Instant },
    /// We do not hold it; `holder` does (`None`: nobody, or unknown).
    NotHeld { holder: Option<String> },
}

/// A change the datastore reported between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Something changed (the lock was freed, a watch broke): try now.
    Recheck,
    /// Our hold is gone (our key deleted or overwritten): step down now,
    /// then try again.
    Lost,
}

/// One datastore's lock: the I/O of an election. The [`Elector`] calls it
/// from one task, never concurrently.
#[async_trait]
pub trait LeaseLock: Send + 'static {
    /// For logs: "etcd key /calico/...", "Lease kube-system/...".
    fn describe(&self) -> String;

    /// Who we claim to be.
    fn identity(&self) -> &str;

    /// Takes the lock if it is free or expired, renews it if we hold it.
    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, Error>;

    /// Whether [`LeaseLock::changed`] will report the lock being freed, so
    /// a follower need not poll.
    fn watching(&self) -> bool {
        false
    }

    /// Resolves when the datastore reports a change worth acting on before
    /// the next timed attempt. Locks without a watch never resolve.
    async fn changed(&mut self) -> Signal {
        std::future::pending().await
    }

    /// Gives the lock up if we hold it, so the next holder need not wait
    /// for it to expire.
    async fn release(&mut self) -> Result<(), Error>;
}

/// What to campaign for, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSpec {
    /// The lock's name ([`CLUSTER_TASKS_LOCK`]).
    pub name: String,
    /// This instance (calico-node: the node name).
    pub identity: String,
    pub timing: Timing,
}

impl Client {
    /// The datastore's lock for `spec` (an etcd lease and key, or a
    /// Kubernetes Lease in [`kubernetes::LEASE_NAMESPACE`]).
    pub fn lease_lock(&self, spec: &LockSpec) -> Result<Box<dyn LeaseLock>, Error> {
        self.backend().lease_lock(spec)
    }

    /// Starts campaigning for `spec`'s lock.
    pub fn elector(&self, spec: &LockSpec) -> Result<Elector, ElectionError> {
        Ok(Elector::start(self.lease_lock(spec)?, spec.timing)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_gos_defaults_are_valid_and_bad_timings_are_refused() {
        assert_eq!(Timing::default().validate(), Ok(()));
        assert_eq!(Timing::default().lease_seconds(), 15);
        let t = |l, d, r| Timing {
            lease_duration: Duration::from_millis(l),
            renew_deadline: Duration::from_millis(d),
            retry_period: Duration::from_millis(r),
        };
        assert!(matches!(
            t(10_000, 10_000, 1_000).validate(),
            Err(TimingError::DeadlineNotBeforeExpiry { .. })
        ));
        assert!(matches!(
            t(15_000, 10_000, 9_000).validate(),
            Err(TimingError::RetryNotBeforeDeadline { .. })
        ));
        assert_eq!(t(15_000, 10_000, 0).validate(), Err(TimingError::ZeroRetry));
        // Whole seconds, rounded up; never zero.
        assert_eq!(t(2_500, 2_000, 500).lease_seconds(), 3);
        assert_eq!(t(300, 200, 50).lease_seconds(), 1);
    }
}
