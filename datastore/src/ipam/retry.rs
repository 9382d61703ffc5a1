//! Retrying a compare-and-swap write that lost a race, within one bound per
//! IPAM operation.
//!
//! Every IPAM write is conditional on the revision it read; when another
//! writer got there first, the attempt is dropped and made again from a
//! fresh read. These writes nest: a pass over a node's blocks allocates in
//! each block, and allocating in a block adjusts the handle. A retry loop
//! per level multiplies (three levels of 200 let one call make 200 × 200 ×
//! 200 attempts), so one operation (`auto_assign`, `assign_ip`,
//! `release_by_handle`, `release_ips`) carries one [`Budget`], and every
//! loop it runs, at any depth, draws its retries from it: a loop is
//! unbounded by itself and ends when its write goes through or the
//! operation's budget is spent.
//!
//! # The bound: [`DEFAULT_MAX_RETRIES`] retries per operation
//!
//! IPAM's contended objects are a node's blocks, which every pod added or
//! deleted on that node writes, and the unclaimed blocks that nodes race
//! for; a handle belongs to one pod. A conflict on a block means another
//! operation's write to it went through, and an operation writes a block
//! once, so with K operations at once on a node's blocks, one of them loses
//! at most K − 1 times. kubelet runs at most `maxPods` pods on a node (110
//! by default), so 128 retries let a whole node's pods be added or deleted
//! at the same moment and still succeed. The time is bounded too: the
//! back-off starts at 2 ms, doubles up to 100 ms, and is drawn between half
//! and all of that, so 128 retries sleep between 6.2 s and 12.3 s in all,
//! well inside the 60 s the CNI plugin gives felix to add a pod: contention
//! surfaces as [`IpamError::Contention`], not as a timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::IpamError;
use crate::Key;

/// Retries one IPAM operation may make in all (see the module docs for
/// why this number).
pub const DEFAULT_MAX_RETRIES: usize = 128;

/// The wait after an operation's first conflict; it doubles with each
/// further conflict, up to [`BACK_OFF_MAX`].
const BACK_OFF_FIRST: Duration = Duration::from_millis(2);
/// A cap, so that once contention clears a loser notices within 100 ms.
const BACK_OFF_MAX: Duration = Duration::from_millis(100);

/// The retries left to one IPAM operation, shared by every loop it runs.
/// A loop reads, modifies and writes conditionally; when the write
/// conflicts it calls [`Budget::conflict`] and goes round again, and when
/// the budget is spent that call is the operation's error.
#[derive(Debug)]
pub(super) struct Budget {
    /// What the operation is doing, for the error: "allocating for <handle>".
    what: String,
    limit: usize,
    /// Retries taken, and conflicts met. Atomic only so that a `&Budget`
    /// can be held across an await in a `Send` future: one operation never
    /// retries two things at once.
    retries: AtomicUsize,
    conflicts: AtomicUsize,
}

impl Budget {
    pub(super) fn new(what: impl Into<String>, limit: usize) -> Self {
        Budget {
            what: what.into(),
            limit,
            retries: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
        }
    }

    /// Another writer changed `key` between our read and our write: takes
    /// a retry and waits a jittered back-off before the caller reads again,
    /// or, with the budget spent, returns [`IpamError::Contention`].
    pub(super) async fn conflict(&self, key: &Key) -> Result<(), IpamError> {
        let conflicts = self.conflicts.fetch_add(1, Ordering::Relaxed) + 1;
        self.take_retry(key)?;
        let wait = back_off(conflicts, rand::random::<f64>());
        tracing::trace!(what = %self.what, resource = %key, conflicts, ?wait,
            "lost a compare-and-swap race; retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The caller changed `key` itself (claimed a block) and goes round
    /// again to use it: nobody is in the way, so no wait, but it still takes
    /// a retry, so that no loop runs unbounded.
    pub(super) fn again(&self, key: &Key) -> Result<(), IpamError> {
        self.take_retry(key)
    }

    /// The error for a conflict on `key` that the caller does not retry.
    pub(super) fn give_up(&self, key: &Key) -> IpamError {
        let conflicts = self.conflicts.fetch_add(1, Ordering::Relaxed) + 1;
        self.contention(key, conflicts)
    }

    fn take_retry(&self, key: &Key) -> Result<(), IpamError> {
        if self.retries.fetch_add(1, Ordering::Relaxed) >= self.limit {
            return Err(self.contention(key, self.conflicts.load(Ordering::Relaxed)));
        }
        Ok(())
    }

    fn contention(&self, key: &Key, conflicts: usize) -> IpamError {
        IpamError::Contention {
            what: self.what.clone(),
            resource: key.to_string(),
            attempts: conflicts,
        }
    }
}

/// The wait after an operation's `conflicts`th conflict: the first wait
/// doubled `conflicts - 1` times, at most [`BACK_OFF_MAX`], of which
/// `unit` (in `[0, 1)`) picks a point between half and all. The random
/// part splits up writers that collided (the same wait would collide them
/// again); the fixed half keeps the growth.
pub(super) fn back_off(conflicts: usize, unit: f64) -> Duration {
    let doublings = u32::try_from(conflicts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let full = BACK_OFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACK_OFF_MAX);
    let half = full / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn block() -> Key {
        Key::Block {
            cidr: "10.65.0.0/26".parse().unwrap(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A compare-and-swap loop as IPAM writes them, over a fake write that
    /// conflicts on `key` `k` times and then goes through; `calls` counts
    /// the attempts.
    async fn write(
        budget: &Budget,
        key: &Key,
        k: usize,
        calls: &mut usize,
    ) -> Result<usize, IpamError> {
        loop {
            *calls += 1;
            if *calls > k {
                return Ok(*calls);
            }
            budget.conflict(key).await?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_conflicts_k_times_succeeds_on_attempt_k_plus_one() {
        let budget = Budget::new("allocating for h", 10);
        let mut calls = 0;
        let started = Instant::now();
        let got = write(&budget, &block(), 3, &mut calls).await.unwrap();
        assert_eq!(got, 4);
        // Three back-offs, each between half and all of 2, 4, 8 ms.
        let waited = started.elapsed();
        assert!(waited >= ms(7) && waited <= ms(14), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_always_conflicts_gives_up_naming_the_resource() {
        let budget = Budget::new("allocating for h", 5);
        let mut calls = 0;
        let err = write(&budget, &block(), usize::MAX, &mut calls)
            .await
            .unwrap_err();
        // The first attempt and five retries.
        assert_eq!(calls, 6);
        match &err {
            IpamError::Contention {
                what,
                resource,
                attempts,
            } => {
                assert_eq!(what, "allocating for h");
                assert_eq!(resource, "IPAM block 10.65.0.0/26");
                assert_eq!(*attempts, 6);
            }
            other => panic!("expected Contention, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("IPAM block 10.65.0.0/26"), "{msg}");
        assert!(msg.contains("retry the request"), "{msg}");
    }

    #[tokio::test(start_paused = true)]
    async fn nested_loops_share_one_budget() {
        let budget = Budget::new("releasing handle h", 5);
        let handle = Key::Handle { id: "h".into() };
        let (mut outer, mut inner) = (0, 0);
        // An outer write that conflicts twice, then runs an inner write
        // that never gets through: the inner one has only the three retries
        // the outer one left, not five of its own.
        let err = async {
            loop {
                outer += 1;
                if outer > 2 {
                    return write(&budget, &block(), usize::MAX, &mut inner).await;
                }
                budget.conflict(&handle).await?;
            }
        }
        .await
        .unwrap_err();
        assert!(matches!(err, IpamError::Contention { .. }), "{err}");
        assert_eq!((outer, inner), (3, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn going_again_after_progress_does_not_wait_but_counts() {
        let budget = Budget::new("allocating for h", 3);
        let started = Instant::now();
        for _ in 0..3 {
            budget.again(&block()).unwrap();
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The budget is spent: the next retry of any kind gives up.
        let mut calls = 0;
        let err = write(&budget, &block(), 1, &mut calls).await.unwrap_err();
        assert!(matches!(err, IpamError::Contention { .. }), "{err}");
        assert_eq!(calls, 1);
    }

    #[test]
    fn giving_up_without_a_retry_counts_the_conflict() {
        let budget = Budget::new("confirming", 5);
        match budget.give_up(&block()) {
            IpamError::Contention { attempts, .. } => assert_eq!(attempts, 1),
            other => panic!("expected Contention, got {other:?}"),
        }
    }

    #[test]
    fn back_off_doubles_up_to_its_cap_with_jitter_between_half_and_all() {
        for (n, full) in [(1, 2), (2, 4), (3, 8), (6, 64), (7, 100), (500, 100)] {
            assert_eq!(back_off(n, 0.0), ms(full) / 2, "conflict {n}");
            assert_eq!(back_off(n, 0.5), ms(full) * 3 / 4, "conflict {n}");
            assert!(back_off(n, 0.999_999) <= ms(full), "conflict {n}");
        }
    }

    #[test]
    fn the_default_bound_sleeps_less_than_the_cni_deadline() {
        let (mut least, mut most) = (Duration::ZERO, Duration::ZERO);
        for n in 1..=DEFAULT_MAX_RETRIES {
            least += back_off(n, 0.0);
            most += back_off(n, 1.0);
        }
        // The figures the module docs give.
        assert_eq!(least, ms(6_163));
        assert_eq!(most, ms(12_326));
    }
}
