//! The Kubernetes lock: a `coordination.k8s.io/v1` Lease in
//! calico-node's namespace, read and written the way client-go's
//! `leaderelection` does.
//!
//! - Every write carries the resourceVersion it was decided on, so two
//!   candidates that both saw the lease free cannot both take it: the API
//!   server accepts the first write and answers 409 Conflict to the other.
//! - Expiry is judged on the *local* monotonic clock: a follower counts
//!   `leaseDurationSeconds` from the moment it saw the Lease change, not
//!   from the holder's `renewTime`, so the nodes' wall clocks need not
//!   agree. Only a Lease we have never seen change (we just started) may
//!   be judged by its `renewTime`, and then with
//!   [`CLOCK_SKEW_ALLOWANCE`] on top.
//! - Followers poll (no watch: fewer permissions, and the lock's cost
//!   does not depend on a watch staying healthy) and read from the API
//!   server's cache (`resourceVersion=0`), so a cluster of many nodes
//!   costs etcd nothing between changes. A stale read is harmless: the
//!   write it leads to conflicts, and the retry reads fresh.
//! - The holder writes its renewal straight from the version it wrote
//!   last: one request per renewal.
//! - Release writes the Lease with no holder, so the next poll of any
//!   follower takes it.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{GetParams, PostParams};
use tokio::time::Instant;

use super::{LeaseLock, LockSpec, Outcome, Timing};
use crate::{Error, Revision};

/// The namespace of the Lease: calico-node's own (deploy/calico-node.yaml),
/// where its Role grants exactly this Lease.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// How far another node's wall clock may be off ours before we would
/// misjudge its Lease on first sight. NTP keeps nodes within milliseconds;
/// five seconds off is a broken clock, and even then the cost is bounded:
/// the holder's next renewal conflicts with our take-over and it steps
/// down, one retry period of overlap.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5);

/// The Lease's spec in the terms the election reasons in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `None` (or absent in the object): nobody holds it.
    pub holder: Option<String>,
    pub lease_duration: Duration,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl LeaseRecord {
    pub fn from_spec(spec: Option<&LeaseSpec>) -> LeaseRecord {
        let secs = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
        LeaseRecord {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            // A Lease without a duration has expired: nothing keeps it.
            lease_duration: Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
            acquire_time: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }

    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: self.holder.clone(),
            lease_duration_seconds: Some(
                i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..Default::default()
        }
    }
}

/// When we saw the Lease at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub version: String,
    /// When we first saw this version.
    pub at: Instant,
    /// We have never seen the Lease change: `at` is when we started
    /// looking, not when it was last renewed.
    pub first: bool,
}

impl Observation {
    /// After reading the Lease at `version` at `now`.
    pub fn next(prev: Option<&Observation>, version: &str, now: Instant) -> Observation {
        match prev {
            None => Observation {
                version: version.to_string(),
                at: now,
                first: true,
            },
            Some(p) if p.version == version => p.clone(),
            Some(_) => Observation {
                version: version.to_string(),
                at: now,
                first: false,
            },
        }
    }
}

/// Whether the Lease's holder has lost its claim, as far as we can tell
/// at `now` (and `wall`, our wall clock).
pub fn expired(record: &LeaseRecord, seen: &Observation, now: Instant, wall: Timestamp) -> bool {
    if now >= seen.at + record.lease_duration {
        return true;
    }
    let Some(renewed) = record.renew_time.filter(|_| seen.first) else {
        return false;
    };
    let limit = record.lease_duration + CLOCK_SKEW_ALLOWANCE;
    let age_ms = wall
        .as_millisecond()
        .saturating_sub(renewed.as_millisecond());
    u128::try_from(age_ms).is_ok_and(|age| age > limit.as_millis())
}

/// What to do about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create (when there is none) or update the Lease to this.
    Write(LeaseRecord),
    /// Someone else holds it.
    Wait { holder: Option<String> },
}

/// The decision of one attempt: `current` is the Lease (if there is one)
/// and when we saw it; `lease_duration` is ours, in whole seconds.
pub fn decide(
    current: Option<(&LeaseRecord, &Observation)>,
    me: &str,
    lease_duration: Duration,
    now: Instant,
    wall: Timestamp,
) -> Decision {
    let Some((record, seen)) = current else {
        return Decision::Write(LeaseRecord {
            holder: Some(me.to_string()),
            lease_duration,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: 0,
        });
    };
    match record.holder.as_deref() {
        // Ours (also after a restart of this instance): renew.
        Some(h) if h == me => Decision::Write(LeaseRecord {
            lease_duration,
            renew_time: Some(wall),
            acquire_time: record.acquire_time.or(Some(wall)),
            ..record.clone()
        }),
        Some(h) if !expired(record, seen, now, wall) => Decision::Wait {
            holder: Some(h.to_string()),
        },
        // Free, or its holder's claim ran out: take it.
        previous => Decision::Write(LeaseRecord {
            holder: Some(me.to_string()),
            lease_duration,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: if previous.is_some() {
                record.transitions.saturating_add(1)
            } else {
                record.transitions
            },
        }),
    }
}

/// The record that gives the Lease up: no holder, and a one-second
/// duration (the smallest there is) for readers that look only at that.
pub fn released(record: &LeaseRecord, wall: Timestamp) -> LeaseRecord {
    LeaseRecord {
        holder: None,
        lease_duration: Duration::from_secs(1),
        renew_time: Some(wall),
        ..record.clone()
    }
}

pub struct KubeLock {
    api: Api<Lease>,
    server: String,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
    request_timeout: Duration,
    /// The Lease as last read or written: its resourceVersion guards the
    /// next write.
    last: Option<Lease>,
    seen: Option<Observation>,
}

fn version(l: &Lease) -> String {
    l.metadata.resource_version.clone().unwrap_or_default()
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

impl KubeLock {
    /// The lock `spec` names, as a Lease in `namespace`, through `client`
    /// (`server` names the API server in errors).
    pub fn new(
        client: kube::Client,
        server: &str,
        namespace: &str,
        spec: &LockSpec,
        request_timeout: Duration,
    ) -> Self {
        KubeLock {
            api: Api::namespaced(client, namespace),
            server: server.to_string(),
            namespace: namespace.to_string(),
            name: spec.name.clone(),
            identity: spec.identity.clone(),
            timing: spec.timing,
            request_timeout,
            last: None,
            seen: None,
        }
    }

    fn what(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }

    fn map(&self, verb: &'static str, expected: Option<&Lease>, e: kube::Error) -> Error {
        let unavailable = |reason: String| Error::Unavailable {
            endpoints: self.server.clone(),
            reason,
            hint: "check that the Kubernetes API server is up and reachable from this node",
        };
        match e {
            kube::Error::Api(s) => match (s.code, s.reason.as_str()) {
                (404, _) => Error::NotFound { key: self.what() },
                (409, "AlreadyExists") => Error::AlreadyExists { key: self.what() },
                (409, _) => Error::Conflict {
                    key: self.what(),
                    expected: Revision(expected.map(version).unwrap_or_default()),
                },
                (401 | 403, _) => Error::Forbidden {
                    verb,
                    resource: format!(
                        "leases.coordination.k8s.io {}/{} (granted by a Role in that namespace)",
                        self.namespace, self.name
                    ),
                    reason: s.message.clone(),
                },
                (429 | 500..=599, _) => {
                    unavailable(format!("{} ({} {})", s.message, s.code, s.reason))
                }
                _ => Error::Backend {
                    key: self.what(),
                    reason: format!(
                        "the API server answered {} {}: {}",
                        s.code, s.reason, s.message
                    ),
                },
            },
            kube::Error::HyperError(e) => unavailable(e.to_string()),
            kube::Error::Service(e) => unavailable(e.to_string()),
            other => Error::Backend {
                key: self.what(),
                reason: other.to_string(),
            },
        }
    }

    /// One request with a deadline.
    async fn call<T>(
        &self,
        verb: &'static str,
        expected: Option<&Lease>,
        fut: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(r) => r.map_err(|e| self.map(verb, expected, e)),
            Err(_) => Err(Error::Unavailable {
                endpoints: self.server.clone(),
                reason: format!(
                    "no answer within {:?} to {verb} {}",
                    self.request_timeout,
                    self.what()
                ),
                hint: "check that the Kubernetes API server is up and reachable from this node",
            }),
        }
    }

    /// The Lease, from the API server's cache unless `fresh`.
    async fn read(&self, fresh: bool) -> Result<Option<Lease>, Error> {
        let gp = if fresh {
            GetParams::default()
        } else {
            GetParams::any()
        };
        match self
            .call("get", None, self.api.get_with(&self.name, &gp))
            .await
        {
            Ok(l) => Ok(Some(l)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `record` over `current` (creating the Lease when there is
    /// none).
    async fn write(&self, current: Option<&Lease>, record: &LeaseRecord) -> Result<Lease, Error> {
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(record.to_spec()),
                };
                self.call(
                    "create",
                    None,
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
            }
            Some(l) => {
                let mut next = l.clone();
                next.spec = Some(merge(l.spec.as_ref(), record.to_spec()));
                self.call(
                    "update",
                    Some(l),
                    self.api.replace(&self.name, &PostParams::default(), &next),
                )
                .await
            }
        }
    }
}

/// `ours` with the fields we do not manage (coordinated leader election's
/// preferredHolder and strategy) kept as they are in `theirs`.
fn merge(theirs: Option<&LeaseSpec>, ours: LeaseSpec) -> LeaseSpec {
    LeaseSpec {
        preferred_holder: theirs.and_then(|s| s.preferred_holder.clone()),
        strategy: theirs.and_then(|s| s.strategy.clone()),
        ..ours
    }
}

#[async_trait]
impl LeaseLock for KubeLock {
    fn describe(&self) -> String {
        format!("{} {}", self.server, self.what())
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, Error> {
        let started = Instant::now();
        let mut current = match self.last.take() {
            Some(l) if holder(&l) == Some(self.identity.as_str()) => Some(l),
            _ => self.read(false).await?,
        };
        // A conflict means our view was stale: one more round on a fresh
        // read, then leave it to the next attempt.
        for round in 0..2 {
            let now = Instant::now();
            let wall = Timestamp::now();
            if let Some(l) = &current {
                self.seen = Some(Observation::next(self.seen.as_ref(), &version(l), now));
            }
            let record = current
                .as_ref()
                .map(|l| LeaseRecord::from_spec(l.spec.as_ref()));
            let lease_duration = Duration::from_secs(self.timing.lease_seconds().unsigned_abs());
            let decision = decide(
                record.as_ref().zip(self.seen.as_ref()),
                &self.identity,
                lease_duration,
                now,
                wall,
            );
            let next = match decision {
                Decision::Wait { holder } => {
                    self.last = current;
                    return Ok(Outcome::NotHeld { holder });
                }
                Decision::Write(next) => next,
            };
            match self.write(current.as_ref(), &next).await {
                Ok(written) => {
                    self.seen = Some(Observation {
                        version: version(&written),
                        at: now,
                        first: false,
                    });
                    self.last = Some(written);
                    return Ok(Outcome::Held {
                        renewed_at: started,
                    });
                }
                Err(Error::Conflict { .. } | Error::AlreadyExists { .. }) if round == 0 => {
                    current = self.read(true).await?;
                }
                Err(Error::Conflict { .. } | Error::AlreadyExists { .. }) => {
                    return Ok(Outcome::NotHeld { holder: None });
                }
                // Deleted under us (by hand): not ours any more. Step down
                // now; the next attempt creates it afresh.
                Err(Error::NotFound { .. }) => {
                    self.seen = None;
                    return Ok(Outcome::NotHeld { holder: None });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Outcome::NotHeld { holder: None })
    }

    async fn release(&mut self) -> Result<(), Error> {
        // What we last wrote, if it is at hand. An attempt cut short (the
        // campaign stops while a renewal is in flight) leaves nothing, or
        // a version the server has moved past with the very renewal whose
        // answer was dropped: then the Lease is read afresh, and released
        // if it is still ours.
        let ours = |l: &Lease| holder(l) == Some(self.identity.as_str());
        let mut current = self.last.take().filter(|l| ours(l));
        for round in 0..2 {
            let l = match current.take() {
                Some(l) => l,
                None => match self.read(true).await? {
                    Some(l) if ours(&l) => l,
                    // Not ours (any more), or gone: nothing to give.
                    _ => return Ok(()),
                },
            };
            let record = released(&LeaseRecord::from_spec(l.spec.as_ref()), Timestamp::now());
            match self.write(Some(&l), &record).await {
                Ok(_) | Err(Error::NotFound { .. }) => return Ok(()),
                // Moved on since we read it: look again, once.
                Err(Error::Conflict { .. }) if round == 0 => {}
                Err(Error::Conflict { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn wall(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("in range")
    }

    fn held_by(h: &str, renewed: i64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(h.into()),
            lease_duration: secs(15),
            acquire_time: Some(wall(renewed)),
            renew_time: Some(wall(renewed)),
            transitions: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_lease_is_created_and_ours_is_renewed() {
        let now = Instant::now();
        match decide(None, "a", secs(15), now, wall(1000)) {
            Decision::Write(r) => {
                assert_eq!(r.holder.as_deref(), Some("a"));
                assert_eq!(r.lease_duration, secs(15));
                assert_eq!(r.renew_time, Some(wall(1000)));
                assert_eq!(r.transitions, 0);
            }
            other => panic!("{other:?}"),
        }
        let mine = held_by("a", 900);
        let seen = Observation::next(None, "7", now);
        match decide(Some((&mine, &seen)), "a", secs(15), now, wall(1000)) {
            Decision::Write(r) => {
                assert_eq!(r.renew_time, Some(wall(1000)));
                // Renewing is not a transition, and keeps the acquire time.
                assert_eq!(r.acquire_time, Some(wall(900)));
                assert_eq!(r.transitions, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn anothers_lease_expires_a_lease_duration_after_we_saw_it_change() {
        let t0 = Instant::now();
        // Renewed a moment ago by b's clock, which agrees with ours.
        let rec = held_by("b", 1000);
        let mut seen = Observation::next(None, "7", t0);
        let at = |seen: &Observation, wall_s| {
            decide(
                Some((&rec, seen)),
                "a",
                secs(15),
                Instant::now(),
                wall(wall_s),
            )
        };
        assert_eq!(
            at(&seen, 1000),
            Decision::Wait {
                holder: Some("b".into())
            }
        );
        // b renews (a new version) at t0 + 10 s: the count starts over.
        tokio::time::advance(secs(10)).await;
        seen = Observation::next(Some(&seen), "8", Instant::now());
        assert!(!seen.first);
        tokio::time::advance(secs(14)).await;
        assert!(matches!(at(&seen, 1024), Decision::Wait { .. }));
        tokio::time::advance(secs(1)).await;
        match at(&seen, 1025) {
            Decision::Write(r) => {
                assert_eq!(r.holder.as_deref(), Some("a"));
                assert_eq!(r.acquire_time, Some(wall(1025)));
                assert_eq!(r.transitions, 4, "a change of holder is a transition");
            }
            other => panic!("{other:?}"),
        }
        // The same version seen again keeps its first sighting.
        let again = Observation::next(Some(&seen), "8", Instant::now());
        assert_eq!(again.at, seen.at);
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clocks_only_count_on_first_sight_and_with_the_skew_allowance() {
        let now = Instant::now();
        let rec = held_by("b", 1000);
        let first = Observation::next(None, "7", now);
        // 15 s lease + 5 s allowance: at 20 s old it still stands, past
        // that it is a leftover of a holder long gone.
        assert!(!expired(&rec, &first, now, wall(1020)));
        assert!(expired(&rec, &first, now, wall(1021)));
        // A renewal from the future (b's clock ahead of ours) stands.
        assert!(!expired(&rec, &first, now, wall(990)));
        // Once we have seen it change, only our own clock counts: b's
        // renewTime may say anything.
        let changed = Observation::next(Some(&first), "8", now);
        assert!(!expired(&rec, &changed, now, wall(5000)));
        // No renewTime at all: only our clock.
        let bare = LeaseRecord {
            renew_time: None,
            ..rec.clone()
        };
        assert!(!expired(&bare, &first, now, wall(5000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_or_durationless_lease_is_free_at_once() {
        let now = Instant::now();
        let gone = released(&held_by("b", 1000), wall(1001));
        assert_eq!(gone.holder, None);
        assert_eq!(gone.lease_duration, secs(1));
        let seen = Observation::next(None, "9", now);
        match decide(Some((&gone, &seen)), "a", secs(15), now, wall(1001)) {
            Decision::Write(r) => {
                assert_eq!(r.holder.as_deref(), Some("a"));
                assert_eq!(r.transitions, 3, "taking a free lease is no transition");
            }
            other => panic!("{other:?}"),
        }
        // An empty holderIdentity and a missing duration read as free and
        // expired.
        let spec = LeaseSpec {
            holder_identity: Some(String::new()),
            ..Default::default()
        };
        let rec = LeaseRecord::from_spec(Some(&spec));
        assert_eq!(rec.holder, None);
        let spec = LeaseSpec {
            holder_identity: Some("b".into()),
            ..Default::default()
        };
        let rec = LeaseRecord::from_spec(Some(&spec));
        assert!(expired(&rec, &seen, now, wall(1001)));
    }

    #[test]
    fn the_record_round_trips_through_the_lease_spec() {
        let rec = held_by("node-1", 1000);
        assert_eq!(LeaseRecord::from_spec(Some(&rec.to_spec())), rec);
        let spec = merge(
            Some(&LeaseSpec {
                strategy: Some("OldestEmulationVersion".into()),
                ..Default::default()
            }),
            rec.to_spec(),
        );
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
    }
}
