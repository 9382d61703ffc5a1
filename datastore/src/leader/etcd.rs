//! The etcd lock: a key created under an etcd lease.
//!
//! - **Acquire**: grant a lease (TTL = the lease duration) and create
//!   `/calico/calico-rs/leader/v1/<name>` = identity, attached to it, in a
//!   transaction guarded by `create_revision == 0` (the key does not
//!   exist). Exactly one of several candidates' transactions succeeds.
//! - **Renew**: a keepalive on the lease every retry period. etcd itself
//!   expires the lease, and deletes the key with it, when keepalives stop
//!   for the TTL — a crashed leader needs no one to notice it.
//! - **Follow**: watch the key from just after the revision it was read
//!   at (so no deletion falls between the read and the watch); a deletion
//!   means try now. No polling: a follower costs etcd one watch.
//! - **Lose**: a keepalive answered with TTL 0 (the lease expired or was
//!   revoked), or our key deleted or overwritten (an operator's hand),
//!   ends our hold at once.
//! - **Release**: revoke the lease; etcd deletes the key in the same step
//!   and every follower's watch fires.
//!
//! A key that holds our own identity under another lease is an earlier
//! run of this instance that died without releasing: we take it over (a
//! transaction on its mod revision) rather than wait for it to expire.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::time::Instant;

use super::{LeaseLock, LockSpec, Outcome, Signal, Timing};
use crate::{Backend, Error, EtcdBackend};

/// Where the locks live: under Calico's `/calico/` root, beside (not
/// inside) the prefixes Calico itself reads.
pub const KEY_PREFIX: &str = "/calico/calico-rs/leader/v1/";

/// How long a follower waits before re-arming a watch that broke, so a
/// watch that fails at once does not turn into a busy loop.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A lease we keep alive, and its keepalive stream.
struct Lease {
    id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// A keepalive went out and its answer was never read (the attempt
    /// was cut short): that answer would pass for the next one's, so the
    /// stream is replaced instead of reused.
    unanswered: bool,
}

pub struct EtcdLock {
    backend: EtcdBackend,
    key: String,
    identity: String,
    timing: Timing,
    lease: Option<Lease>,
    /// Our key exists under our lease, as far as we know.
    holding: bool,
    watch: Option<etcd_client::WatchStream>,
}

impl EtcdLock {
    pub fn new(backend: EtcdBackend, spec: &LockSpec) -> Self {
        EtcdLock {
            backend,
            key: format!("{KEY_PREFIX}{}", spec.name),
            identity: spec.identity.clone(),
            timing: spec.timing,
            lease: None,
            holding: false,
            watch: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// One keepalive on our lease: `true` if it lives on, `false` if it is
    /// gone (expired, revoked, or we never had one).
    async fn keep_alive(&mut self) -> Result<bool, Error> {
        let backend = &self.backend;
        let Some(lease) = self.lease.as_mut() else {
            return Ok(false);
        };
        let answer = if lease.unanswered {
            None
        } else {
            lease.unanswered = true;
            let answer = backend
                .timed(&self.key, async {
                    lease.keeper.keep_alive().await?;
                    lease.stream.message().await
                })
                .await
                .ok()
                .flatten();
            lease.unanswered = answer.is_none();
            answer
        };
        match answer {
            Some(resp) if resp.ttl() > 0 => Ok(true),
            Some(_) => {
                self.lease = None;
                Ok(false)
            }
            // The stream ended, broke (etcd restarted, the connection
            // dropped) or cannot be trusted: open a new one on the same
            // lease, which etcd refuses if the lease expired meanwhile.
            None => {
                let id = lease.id;
                let mut lc = backend.etcd().lease_client();
                match backend.timed(&self.key, lc.keep_alive(id)).await {
                    Ok((keeper, stream)) => {
                        self.lease = Some(Lease {
                            id,
                            keeper,
                            stream,
                            unanswered: false,
                        });
                        Ok(true)
                    }
                    Err(Error::Backend { reason, .. }) if reason.contains("lease not found") => {
                        self.lease = None;
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// A live lease to put the key under, and when it was last renewed.
    async fn ensure_lease(&mut self) -> Result<(i64, Instant), Error> {
        let sent = Instant::now();
        if self.keep_alive().await?
            && let Some(l) = &self.lease
        {
            return Ok((l.id, sent));
        }
        let sent = Instant::now();
        let mut lc = self.backend.etcd().lease_client();
        let granted = self
            .backend
            .timed(&self.key, lc.grant(self.timing.lease_seconds(), None))
            .await?;
        let id = granted.id();
        let (keeper, stream) = self.backend.timed(&self.key, lc.keep_alive(id)).await?;
        self.lease = Some(Lease {
            id,
            keeper,
            stream,
            unanswered: false,
        });
        Ok((id, sent))
    }

    /// Watches the key for what happens after `revision`.
    async fn arm_watch(&mut self, revision: i64) {
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut wc = self.backend.etcd().watch_client();
        match self
            .backend
            .timed(&self.key, wc.watch(self.key.clone(), Some(opts)))
            .await
        {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "cannot watch the lock; polling instead");
                self.watch = None;
            }
        }
    }

    /// While holding, with no watch (it broke): is the key still ours?
    /// Then watch it again.
    async fn verify_hold(&mut self) -> Result<Option<String>, Error> {
        let mut kv = self.backend.etcd().kv_client();
        let resp = self
            .backend
            .timed(&self.key, kv.get(self.key.clone(), None))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let lease = self.lease.as_ref().map(|l| l.id);
        match resp.kvs().first() {
            Some(item)
                if item.value() == self.identity.as_bytes() && Some(item.lease()) == lease =>
            {
                self.arm_watch(revision).await;
                Ok(None)
            }
            other => Ok(Some(
                other
                    .map(|item| String::from_utf8_lossy(item.value()).into_owned())
                    .unwrap_or_default(),
            )),
        }
    }

    /// Gives our lease back (and with it the key, if it is under it).
    async fn revoke_lease(&mut self) -> Result<(), Error> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let mut lc = self.backend.etcd().lease_client();
        match self.backend.timed(&self.key, lc.revoke(lease.id)).await {
            Ok(_) => Ok(()),
            // Already expired: nothing left to give back.
            Err(Error::Backend { reason, .. }) if reason.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn let_go(&mut self) {
        self.holding = false;
        self.watch = None;
    }
}

fn holder_of(resp: &etcd_client::TxnResponse) -> Option<String> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    })
}

#[async_trait]
impl LeaseLock for EtcdLock {
    fn describe(&self) -> String {
        format!("{} key {}", self.backend.describe(), self.key)
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, Error> {
        if self.holding {
            let sent = Instant::now();
            if !self.keep_alive().await? {
                tracing::warn!(key = %self.key, "our etcd lease is gone (expired or revoked)");
                self.let_go();
                return Ok(Outcome::NotHeld { holder: None });
            }
            if self.watch.is_none()
                && let Some(holder) = self.verify_hold().await?
            {
                self.let_go();
                return Ok(Outcome::NotHeld {
                    holder: Some(holder).filter(|h| !h.is_empty()),
                });
            }
            return Ok(Outcome::Held { renewed_at: sent });
        }

        let mut kv = self.backend.etcd().kv_client();
        let resp = self
            .backend
            .timed(&self.key, kv.get(self.key.clone(), None))
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let existing = resp.kvs().first();
        let guard = match existing {
            Some(item) if item.value() != self.identity.as_bytes() => {
                let holder = String::from_utf8_lossy(item.value()).into_owned();
                self.arm_watch(revision).await;
                return Ok(Outcome::NotHeld {
                    holder: Some(holder),
                });
            }
            // An earlier run of ours: replace it if nobody else has.
            Some(item) => {
                Compare::mod_revision(self.key.clone(), CompareOp::Equal, item.mod_revision())
            }
            None => Compare::create_revision(self.key.clone(), CompareOp::Equal, 0),
        };
        let (lease, renewed_at) = self.ensure_lease().await?;
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(
                self.key.clone(),
                self.identity.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let resp = self.backend.timed(&self.key, kv.txn(txn)).await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        self.arm_watch(revision).await;
        if resp.succeeded() {
            self.holding = true;
            return Ok(Outcome::Held { renewed_at });
        }
        // Someone else was quicker. Our lease would linger unrenewed until
        // it expired, and a keepalive on an expired lease waits for etcd's
        // next sweep (up to half a second) before it says so, which would
        // slow our next try: give it back now.
        if let Err(e) = self.revoke_lease().await {
            tracing::debug!(key = %self.key, error = %e, "cannot revoke our unused lease; it expires by itself");
        }
        Ok(Outcome::NotHeld {
            holder: holder_of(&resp),
        })
    }

    fn watching(&self) -> bool {
        self.watch.is_some()
    }

    async fn changed(&mut self) -> Signal {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        let our_lease = self.lease.as_ref().map(|l| l.id);
        loop {
            let resp = match watch.message().await {
                Ok(Some(resp)) if !resp.canceled() && resp.compact_revision() == 0 => resp,
                // Broken, cancelled, or compacted past where it started:
                // look again (after a pause, in case it breaks at once).
                _ => {
                    self.watch = None;
                    tokio::time::sleep(WATCH_RETRY).await;
                    return Signal::Recheck;
                }
            };
            for ev in resp.events() {
                let ours = ev.kv().is_some_and(|kv| {
                    kv.value() == self.identity.as_bytes() && Some(kv.lease()) == our_lease
                });
                match ev.event_type() {
                    EventType::Delete => {
                        let lost = self.holding;
                        self.let_go();
                        return if lost { Signal::Lost } else { Signal::Recheck };
                    }
                    EventType::Put if self.holding && !ours => {
                        self.let_go();
                        return Signal::Lost;
                    }
                    EventType::Put => {}
                }
            }
        }
    }

    async fn release(&mut self) -> Result<(), Error> {
        self.let_go();
        self.revoke_lease().await
    }
}
