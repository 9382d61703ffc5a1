//! The election's state machine, without I/O: what the attempts on the
//! lock found goes in, whether we lead (and when to try next) comes out.
//!
//! We lead from a successful acquisition until either the datastore says
//! someone else holds the lock, or [`Timing::renew_deadline`] passes since
//! the start of the last renewal that succeeded. Counting from the *start*
//! of the request is what makes that safe: the datastore stamped the
//! renewal no earlier than we sent it, so our own deadline always falls
//! at least `lease_duration - renew_deadline` before anyone else's view of
//! the lease can expire, whatever happened to the answer on its way back.

use std::time::Duration;

use tokio::time::Instant;

use super::{JITTER, Leadership, Outcome, Timing};

/// Why we stopped leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No renewal succeeded within the renew deadline (datastore down or
    /// slow): the others may take the lock once it expires.
    Lapsed,
    /// The datastore says we do not hold the lock (`holder` does, or
    /// nobody: our lease was revoked, our key deleted).
    NotHolder { holder: Option<String> },
    /// We gave it up (clean shutdown).
    Released,
}

/// A change of leadership, for the log and the guarded tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Gained { term: u64 },
    Lost { term: u64, reason: LossReason },
}

/// One instance's view of the election.
#[derive(Debug, Clone)]
pub struct Campaign {
    timing: Timing,
    identity: String,
    /// While we hold the lock: when the last successful renewal was sent.
    renewed_at: Option<Instant>,
    /// Who else holds the lock, as last seen.
    holder: Option<String>,
    /// What was last reported by [`Campaign::step`].
    leading: bool,
    term: u64,
}

impl Campaign {
    pub fn new(identity: impl Into<String>, timing: Timing) -> Self {
        Campaign {
            timing,
            identity: identity.into(),
            renewed_at: None,
            holder: None,
            leading: false,
            term: 0,
        }
    }

    /// Feeds the result of one attempt.
    pub fn observe(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Held { renewed_at } => {
                // An answer overtaken by a later one must not move the
                // deadline back.
                self.renewed_at = Some(self.renewed_at.map_or(renewed_at, |r| r.max(renewed_at)));
                self.holder = None;
            }
            Outcome::NotHeld { holder } => {
                self.renewed_at = None;
                self.holder = holder.filter(|h| !h.is_empty());
            }
        }
    }

    /// Whether we may lead at `now`.
    fn may_lead(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|t| now < t + self.timing.renew_deadline)
    }

    /// Brings the published state up to `now`; returns the change, if any.
    pub fn step(&mut self, now: Instant) -> Option<Transition> {
        match (self.leading, self.may_lead(now)) {
            (false, true) => {
                self.leading = true;
                self.term += 1;
                Some(Transition::Gained { term: self.term })
            }
            (true, false) => {
                self.leading = false;
                let reason = if self.renewed_at.is_some() {
                    LossReason::Lapsed
                } else {
                    LossReason::NotHolder {
                        holder: self.holder.clone(),
                    }
                };
                Some(Transition::Lost {
                    term: self.term,
                    reason,
                })
            }
            _ => None,
        }
    }

    /// We give the lock up: from now on we do not lead.
    pub fn release(&mut self) -> Option<Transition> {
        self.renewed_at = None;
        self.holder = None;
        if !self.leading {
            return None;
        }
        self.leading = false;
        Some(Transition::Lost {
            term: self.term,
            reason: LossReason::Released,
        })
    }

    /// While leading: when we stop unless a renewal succeeds first.
    pub fn lapse_at(&self) -> Option<Instant> {
        self.renewed_at
            .filter(|_| self.leading)
            .map(|t| t + self.timing.renew_deadline)
    }

    /// When to try next, after an attempt at `now`. A holder (even one
    /// whose renewals have been failing) renews every retry period. A
    /// follower whose lock reports changes (`watched`) only re-checks
    /// once a lease duration, in case a change went unreported; one that
    /// must poll does so every retry period, stretched by `jitter` (in
    /// [0, 1)) times [`JITTER`].
    pub fn next_attempt(&self, now: Instant, watched: bool, jitter: f64) -> Instant {
        if self.renewed_at.is_some() {
            return now + self.timing.retry_period;
        }
        if watched {
            return now + self.timing.lease_duration;
        }
        let stretch = 1.0 + JITTER * jitter.clamp(0.0, 1.0);
        now + self.timing.retry_period.mul_f64(stretch)
    }

    /// What the guarded tasks are told.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            leading: self.leading,
            term: self.term,
            holder: if self.leading {
                Some(self.identity.clone())
            } else {
                self.holder.clone()
            },
        }
    }

    /// How long until the published state would change by itself.
    pub fn until_lapse(&self, now: Instant) -> Option<Duration> {
        self.lapse_at().map(|t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn campaign() -> Campaign {
        Campaign::new("node-a", Timing::default())
    }

    fn held(at: Instant) -> Outcome {
        Outcome::Held { renewed_at: at }
    }

    #[tokio::test(start_paused = true)]
    async fn an_acquisition_makes_us_leader_until_the_renew_deadline() {
        let mut c = campaign();
        let t0 = Instant::now();
        assert_eq!(c.step(t0), None);
        assert!(!c.leadership().leading);
        c.observe(held(t0));
        assert_eq!(c.step(Instant::now()), Some(Transition::Gained { term: 1 }));
        let l = c.leadership();
        assert!(l.leading);
        assert_eq!(l.holder.as_deref(), Some("node-a"));
        assert_eq!(c.lapse_at(), Some(t0 + secs(10)));

        // Renewals every retry period keep it.
        for _ in 0..20 {
            tokio::time::advance(secs(2)).await;
            c.observe(held(Instant::now()));
            assert_eq!(c.step(Instant::now()), None);
        }
        // Then renewals fail: leadership lasts exactly the renew deadline
        // from the start of the last good one.
        let last = Instant::now();
        tokio::time::advance(secs(10) - Duration::from_millis(1)).await;
        assert_eq!(c.step(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            c.step(Instant::now()),
            Some(Transition::Lost {
                term: 1,
                reason: LossReason::Lapsed
            })
        );
        assert_eq!(Instant::now(), last + secs(10));
        assert!(!c.leadership().leading);
        // Still ours as far as we know: we keep renewing at the retry
        // period, and a renewal that gets through makes a new term.
        assert_eq!(
            c.next_attempt(Instant::now(), true, 0.0),
            Instant::now() + secs(2)
        );
        c.observe(held(Instant::now()));
        assert_eq!(c.step(Instant::now()), Some(Transition::Gained { term: 2 }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_when_the_renewal_was_sent() {
        let mut c = campaign();
        let sent = Instant::now();
        // The answer took 9 s to come back: one second of leadership left.
        tokio::time::advance(secs(9)).await;
        c.observe(held(sent));
        assert!(c.step(Instant::now()).is_some());
        assert_eq!(c.until_lapse(Instant::now()), Some(secs(1)));
        // An answer older than the one we have does not shorten it.
        c.observe(held(sent + secs(5)));
        c.observe(held(sent));
        assert_eq!(c.lapse_at(), Some(sent + secs(15)));
        // An answer already past its deadline never makes us leader.
        let mut late = campaign();
        late.observe(held(sent));
        tokio::time::advance(secs(2)).await;
        assert_eq!(late.step(Instant::now()), None);
        assert!(!late.leadership().leading);
    }

    #[tokio::test(start_paused = true)]
    async fn someone_else_holding_it_ends_our_leadership_at_once() {
        let mut c = campaign();
        c.observe(held(Instant::now()));
        c.step(Instant::now());
        c.observe(Outcome::NotHeld {
            holder: Some("node-b".into()),
        });
        assert_eq!(
            c.step(Instant::now()),
            Some(Transition::Lost {
                term: 1,
                reason: LossReason::NotHolder {
                    holder: Some("node-b".into())
                }
            })
        );
        let l = c.leadership();
        assert!(!l.leading);
        assert_eq!(l.holder.as_deref(), Some("node-b"));
        assert_eq!(l.term, 1);
        assert_eq!(c.lapse_at(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn followers_poll_with_jitter_or_rely_on_their_watch() {
        let mut c = campaign();
        let now = Instant::now();
        c.observe(Outcome::NotHeld {
            holder: Some("node-b".into()),
        });
        assert_eq!(c.next_attempt(now, false, 0.0), now + secs(2));
        assert_eq!(
            c.next_attempt(now, false, 0.5),
            now + Duration::from_millis(2200)
        );
        // Out-of-range jitter is clamped.
        assert_eq!(
            c.next_attempt(now, false, 7.0),
            now + Duration::from_millis(2400)
        );
        assert_eq!(c.next_attempt(now, true, 0.5), now + secs(15));
        // A leader renews every retry period, watch or not.
        c.observe(held(now));
        c.step(now);
        assert_eq!(c.next_attempt(now, true, 0.9), now + secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn release_steps_down_once() {
        let mut c = campaign();
        assert_eq!(c.release(), None);
        c.observe(held(Instant::now()));
        c.step(Instant::now());
        assert_eq!(
            c.release(),
            Some(Transition::Lost {
                term: 1,
                reason: LossReason::Released
            })
        );
        assert_eq!(c.release(), None);
        assert_eq!(c.step(Instant::now()), None);
        assert_eq!(c.leadership().holder, None);
    }
}
