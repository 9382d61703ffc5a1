//! Watchers of the Loc-RIB: the route stream to felix.
//!
//! A watcher first walks the table (a snapshot, in chunks, resumable by
//! prefix) and then receives changes. Changes made while the walk is under
//! way are queued only for prefixes the walk has already passed; the walk
//! reads the others in their new state when it gets there. So the snapshot
//! needs no copy of the table, and every prefix reaches the watcher with
//! its latest state.
//!
//! Changes coalesce per prefix in `pending` (like [`super::out`]), which
//! is bounded: a watcher that falls more than [`PENDING_MAX`] prefixes
//! behind (a million routes arriving in a tenth of a second will do that
//! to any reader) drops its queue and walks the table again, marking the
//! stream `resync`; the consumer keeps what it has and sweeps, at the next
//! snapshot end, what the new walk did not contain. A slow reader so costs
//! the RIB neither memory nor time in proportion to the table, and never
//! sees outdated intermediate states.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use ipnetwork::IpNetwork;
use tokio::sync::Notify;

/// Queued changes per watcher before it is made to walk the table again.
pub const PENDING_MAX: usize = 16 * 1024;

/// A best route as felix sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRoute {
    /// The next hops of the ECMP set, sorted, without duplicates.
    pub next_hops: Vec<IpAddr>,
    /// The best path came from a calico node (a remote block), not a
    /// router.
    pub from_node: bool,
}

#[derive(Debug)]
pub struct WatchState {
    /// The snapshot walk: still going, and the last prefix it passed.
    pub(super) scanning: bool,
    pub(super) after: Option<IpNetwork>,
    pending: HashMap<IpNetwork, Option<StreamRoute>>,
    /// Changes were dropped during the current walk: walk again after it.
    overflow: bool,
    /// The next batch starts a new snapshot.
    resync: bool,
    /// The RIB has converged after start-up: the snapshot may be declared
    /// complete.
    pub(super) converged: bool,
}

/// One subscriber of the route stream.
#[derive(Debug)]
pub struct Watcher {
    state: Mutex<WatchState>,
    notify: Notify,
}

/// What a watcher takes from its queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub upserts: Vec<(IpNetwork, StreamRoute)>,
    pub withdraws: Vec<IpNetwork>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.withdraws.is_empty()
    }
}

impl Watcher {
    pub(super) fn new(converged: bool) -> Watcher {
        Watcher {
            state: Mutex::new(WatchState {
                scanning: true,
                after: None,
                pending: HashMap::new(),
                overflow: false,
                resync: false,
                converged,
            }),
            notify: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn notify(&self) {
        self.notify.notify_one();
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Takes up to `max` queued changes.
    pub fn take(&self, max: usize) -> Changes {
        let mut st = self.lock();
        let keys: Vec<IpNetwork> = st.pending.keys().take(max).copied().collect();
        let mut out = Changes::default();
        for k in keys {
            match st.pending.remove(&k) {
                Some(Some(r)) => out.upserts.push((k, r)),
                Some(None) => out.withdraws.push(k),
                None => {}
            }
        }
        out
    }

    /// A walk is under way: read it with `Rib::snapshot_chunk`.
    pub fn scanning(&self) -> bool {
        self.lock().scanning
    }

    /// The walk is over (with nothing dropped during it) and the RIB has
    /// converged: the consumer may drop whatever it held from before that
    /// this snapshot did not contain.
    pub fn snapshot_complete(&self) -> bool {
        let st = self.lock();
        !st.scanning && !st.overflow && st.converged
    }

    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

impl WatchState {
    /// Whether a change of `net` must be queued: the walk has passed it
    /// (or is over) and the queue has not been given up.
    pub(super) fn wants(&self, net: &IpNetwork) -> bool {
        let passed = self.after.is_some_and(|a| *net <= a);
        (!self.scanning || passed) && !self.overflow
    }

    /// Records the new state of `net` (call when `wants`).
    pub(super) fn changed(&mut self, net: IpNetwork, route: Option<StreamRoute>) {
        if !self.wants(&net) {
            return;
        }
        if self.pending.len() >= PENDING_MAX && !self.pending.contains_key(&net) {
            self.pending = HashMap::new();
            self.overflow = true;
            if !self.scanning {
                self.restart_walk();
            }
            return;
        }
        self.pending.insert(net, route);
    }

    /// Whether the walk starting now is a new snapshot (asked once).
    pub(super) fn take_resync(&mut self) -> bool {
        std::mem::take(&mut self.resync)
    }

    fn restart_walk(&mut self) {
        self.scanning = true;
        self.after = None;
        self.overflow = false;
        self.resync = true;
    }

    /// The walk reached the end of the table: done, or (if changes were
    /// dropped meanwhile) start over.
    pub(super) fn walk_finished(&mut self) {
        if self.overflow {
            self.restart_walk();
        } else {
            self.scanning = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn route() -> StreamRoute {
        StreamRoute {
            next_hops: vec!["10.0.0.2".parse().unwrap()],
            from_node: true,
        }
    }

    #[test]
    fn changes_ahead_of_the_walk_are_left_to_the_walk() {
        let w = Watcher::new(false);
        {
            let mut st = w.lock();
            st.after = Some(net("10.1.0.0/26"));
            st.changed(net("10.2.0.0/26"), Some(route()));
            st.changed(net("10.0.0.0/26"), Some(route()));
            st.changed(net("10.1.0.0/26"), None);
        }
        let c = w.take(10);
        assert_eq!(c.upserts, vec![(net("10.0.0.0/26"), route())]);
        assert_eq!(c.withdraws, vec![net("10.1.0.0/26")]);
    }

    #[test]
    fn after_the_walk_every_change_is_queued_and_coalesced() {
        let w = Watcher::new(true);
        {
            let mut st = w.lock();
            st.walk_finished();
            st.changed(net("10.2.0.0/26"), Some(route()));
            st.changed(net("10.2.0.0/26"), None);
        }
        assert!(w.snapshot_complete());
        assert_eq!(
            w.take(10),
            Changes {
                upserts: vec![],
                withdraws: vec![net("10.2.0.0/26")]
            }
        );
        assert!(!w.has_pending());
    }

    #[test]
    fn a_watcher_too_far_behind_drops_its_queue_and_walks_again() {
        let w = Watcher::new(true);
        w.lock().walk_finished();
        {
            let mut st = w.lock();
            for i in 0..=PENDING_MAX as u32 {
                let n = IpNetwork::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24)
                    .unwrap();
                st.changed(n, Some(route()));
            }
        }
        assert!(!w.has_pending(), "queue dropped");
        assert!(w.scanning(), "walking again");
        assert!(w.lock().take_resync());
        assert!(!w.lock().take_resync(), "said once");
        assert!(!w.snapshot_complete());
        // An overflow during a walk restarts it when it ends.
        {
            let mut st = w.lock();
            st.after = Some(net("255.0.0.0/8"));
            for i in 0..=PENDING_MAX as u32 {
                let n = IpNetwork::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24)
                    .unwrap();
                st.changed(n, Some(route()));
            }
            assert!(st.overflow);
            st.walk_finished();
            assert!(st.scanning && st.after.is_none() && !st.overflow);
        }
        assert!(w.lock().take_resync());
        w.lock().walk_finished();
        assert!(w.snapshot_complete());
    }
}
