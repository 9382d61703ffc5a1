//! Peers in the RIB: configuration, sessions going up and down, graceful
//! restart (stale marking and sweeping, see [`crate::gr`]), timers, and
//! the start-up deferral.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ipnetwork::IpNetwork;

use super::{AdjRibOut, PeerId, PeerKey, PeerStats, Rib, SessionInfo, export, fidx, table::STALE};
use crate::fsm::DownCause;
use crate::gr;
use crate::packet::Family;
use crate::policy::PeerPolicy;

/// One peer as the RIB knows it.
#[derive(Debug)]
pub struct PeerState {
    pub(super) epoch: u32,
    pub(super) policy: PeerPolicy,
    pub(super) internal: bool,
    pub(super) session: Option<SessionInfo>,
    /// The peer's BGP Identifier, kept while its routes are stale.
    pub(super) router_id: Ipv4Addr,
    /// Paths in the table per family.
    pub(super) accepted: [usize; 2],
    pub(super) stale: usize,
    /// Families whose paths are stale (graceful restart under way).
    pub(super) stale_families: Vec<Family>,
    /// The session is down; its stale routes go at this time.
    pub(super) restart_deadline: Option<Instant>,
    /// The session is back; stale routes without End-of-RIB go at this
    /// time.
    pub(super) stale_deadline: Option<Instant>,
    pub(super) eor_received: Vec<Family>,
    /// A max-prefix reset was asked for this session.
    pub(super) tripped: bool,
    pub(super) out: Arc<AdjRibOut>,
    pub(super) stats: Arc<PeerStats>,
}

impl PeerState {
    pub(super) fn target<'a>(&'a self, s: &'a SessionInfo) -> export::Target<'a> {
        export::Target {
            policy: &self.policy,
            internal: self.internal,
            router_id: s.negotiated.peer_id,
            local_addr: s.local_addr,
            families: &s.negotiated.families,
        }
    }

    /// Every family sent End-of-RIB (or cannot: no graceful restart).
    fn initial_sync_done(&self) -> bool {
        match &self.session {
            None => false,
            Some(s) => {
                s.negotiated.peer_gr.is_none()
                    || s.negotiated
                        .families
                        .iter()
                        .all(|f| self.eor_received.contains(f))
            }
        }
    }

    pub(super) fn publish(&self) {
        self.stats
            .received_v4
            .store(self.accepted[0] as u64, Ordering::Relaxed);
        self.stats
            .received_v6
            .store(self.accepted[1] as u64, Ordering::Relaxed);
        self.stats.stale.store(self.stale as u64, Ordering::Relaxed);
    }
}

impl Rib {
    /// Adds a configured peer (its session is not up yet), with a new
    /// Adj-RIB-Out and counters.
    pub fn add_peer(
        &mut self,
        key: PeerKey,
        policy: PeerPolicy,
    ) -> (Arc<AdjRibOut>, Arc<PeerStats>) {
        let out = Arc::new(AdjRibOut::default());
        let stats = Arc::new(PeerStats::default());
        self.add_peer_with(key, policy, out.clone(), stats.clone());
        (out, stats)
    }

    /// Adds a configured peer whose Adj-RIB-Out and counters the caller
    /// created (the speaker hands them to the peer's task too).
    pub fn add_peer_with(
        &mut self,
        key: PeerKey,
        policy: PeerPolicy,
        out: Arc<AdjRibOut>,
        stats: Arc<PeerStats>,
    ) {
        let i = usize::from(key.id.0);
        if i == 0 {
            // Slot 0 is this speaker; callers never hand it out.
            return;
        }
        if self.peers.get(i).is_some_and(Option::is_some) {
            self.flush_peer(key.id, None, false);
        }
        if self.peers.len() <= i {
            self.peers.resize_with(i + 1, || None);
        }
        self.peers[i] = Some(PeerState {
            epoch: key.epoch,
            internal: policy.internal(self.local.asn),
            router_id: Ipv4Addr::UNSPECIFIED,
            policy,
            session: None,
            accepted: [0, 0],
            stale: 0,
            stale_families: Vec::new(),
            restart_deadline: None,
            stale_deadline: None,
            eor_received: Vec::new(),
            tripped: false,
            out,
            stats,
        });
        self.flush_changes();
    }

    /// Changes a peer's policy in place (its session stays up) and
    /// re-evaluates what it is sent.
    pub fn set_peer_policy(&mut self, key: PeerKey, policy: PeerPolicy) {
        let asn = self.local.asn;
        let mut import_changed = false;
        if let Some(p) = self.keyed_mut(key) {
            p.internal = policy.internal(asn);
            import_changed = p.policy.import_filter != policy.import_filter;
            p.policy = policy;
        }
        if import_changed {
            // Drops what the filters now refuse, and asks for a refresh
            // of what they refused before.
            self.enforce_import(Some(key.id));
        }
        self.export_all(key.id, true);
        self.check_max_prefixes(key);
        self.flush_changes();
    }

    /// Removes a peer and every route it sent (no graceful restart: it was
    /// deconfigured).
    pub fn remove_peer(&mut self, key: PeerKey, now: Instant) {
        if self.keyed(key).is_none() {
            return;
        }
        self.flush_peer(key.id, None, false);
        if let Some(slot) = self.peers.get_mut(usize::from(key.id.0)) {
            if let Some(p) = slot.as_ref() {
                p.out.lock().clear();
            }
            *slot = None;
        }
        self.flush_changes();
        self.check_startup(now);
    }

    /// The session of `key` is established.
    pub fn peer_up(&mut self, key: PeerKey, session: SessionInfo, now: Instant) {
        let Some(p) = self.keyed_mut(key) else {
            return;
        };
        p.router_id = session.negotiated.peer_id;
        p.restart_deadline = None;
        p.eor_received.clear();
        p.tripped = false;
        let stale = std::mem::take(&mut p.stale_families);
        let (keep, flush): (Vec<Family>, Vec<Family>) = stale
            .into_iter()
            .partition(|f| gr::keep_on_reconnect(*f, &session.negotiated));
        p.stale_deadline = (!keep.is_empty()).then(|| now + gr::STALE_ROUTES_TIME);
        p.stale_families = keep;
        p.out
            .lock()
            .reset(session.generation, session.negotiated.four_octet_as);
        let families = session.negotiated.families.clone();
        p.session = Some(session);
        for f in flush {
            self.flush_peer(key.id, Some(f), true);
        }
        self.export_all(key.id, false);
        let learns = self.peer(key.id).is_some_and(|p| {
            p.session
                .as_ref()
                .is_some_and(|s| export::receives_learned(&self.local, &p.target(s)))
        });
        let hold = !self.converged && learns;
        if let Some(p) = self.keyed(key) {
            p.out.lock().end_of_rib(&families, hold);
            p.out.notify();
        }
        self.flush_changes();
        self.check_startup(now);
    }

    /// The session of `key` went down for `cause`: its routes are kept as
    /// stale or flushed (see [`crate::gr`]).
    pub fn peer_down(&mut self, key: PeerKey, cause: &DownCause, now: Instant) {
        let Some(p) = self.keyed_mut(key) else {
            return;
        };
        let Some(s) = p.session.take() else {
            return;
        };
        p.out.lock().clear();
        p.eor_received.clear();
        p.tripped = false;
        let mut keep = gr::keep_on_down(cause, &s.negotiated, s.n_bit);
        // Routes still stale from an earlier restart stay stale only if
        // this restart covers their family too.
        for f in Family::ALL {
            if !keep.contains(&f) {
                self.flush_peer(key.id, Some(f), false);
            }
        }
        keep.retain(|f| self.peer(key.id).is_some_and(|p| p.accepted[fidx(*f)] > 0));
        let mut marked = 0;
        for f in &keep {
            marked += self.table.flag_peer(key.id, *f, STALE);
        }
        if let Some(p) = self.keyed_mut(key) {
            p.stale += marked;
            p.stale_deadline = None;
            p.restart_deadline = (!keep.is_empty()).then(|| now + gr::restart_time(&s.negotiated));
            p.stale_families = keep;
            p.publish();
        }
        self.flush_changes();
    }

    /// End-of-RIB for `family` from `key`: its stale routes of the family
    /// that were not re-announced go.
    pub(super) fn end_of_rib(&mut self, key: PeerKey, family: Family, now: Instant) {
        let Some(p) = self.keyed_mut(key) else {
            return;
        };
        if !p.eor_received.contains(&family) {
            p.eor_received.push(family);
        }
        let sweep = p.stale_families.contains(&family);
        p.stale_families.retain(|f| *f != family);
        if p.stale_families.is_empty() {
            p.stale_deadline = None;
        }
        if sweep {
            self.flush_peer(key.id, Some(family), true);
        }
        self.check_startup(now);
    }

    /// The peer asked for our routes again (ROUTE-REFRESH).
    pub fn refresh_out(&mut self, key: PeerKey, family: Family) {
        let Some(p) = self.keyed(key) else {
            return;
        };
        {
            let mut out = p.out.lock();
            let sent: Vec<IpNetwork> = out
                .sent_prefixes()
                .filter(|n| Family::of(n) == family)
                .collect();
            out.forget(&sent);
            out.add_end_of_rib(family);
        }
        self.export_all(key.id, false);
        if let Some(p) = self.keyed(key) {
            p.out.notify();
        }
    }

    /// Removes `id`'s paths of `family` (all families: `None`), only the
    /// stale ones with `only_stale`.
    pub(super) fn flush_peer(&mut self, id: PeerId, family: Option<Family>, only_stale: bool) {
        const CHUNK: usize = 4096;
        // Nothing to scan the table for.
        if let Some(p) = self.peer(id) {
            let paths = match family {
                Some(f) => p.accepted[fidx(f)],
                None => p.accepted[0] + p.accepted[1],
            };
            if paths == 0 || (only_stale && p.stale == 0) {
                return;
            }
        }
        let mut after: Option<IpNetwork> = None;
        loop {
            let mut batch = Vec::with_capacity(CHUNK);
            let mut last = None;
            for (net, paths) in self.table.iter_after(after) {
                last = Some(net);
                if family.is_some_and(|f| Family::of(&net) != f) {
                    continue;
                }
                if paths.find(id).is_some_and(|p| !only_stale || p.stale()) {
                    batch.push(net);
                    if batch.len() == CHUNK {
                        break;
                    }
                }
            }
            for net in &batch {
                self.withdraw(id, *net);
            }
            if batch.len() < CHUNK {
                break;
            }
            after = last;
        }
        if let Some(p) = self.peer(id) {
            p.publish();
        }
    }

    /// Offers every prefix to `id`'s Adj-RIB-Out. With `full`, prefixes
    /// not to be sent are offered too, so that what was sent and should
    /// not have been is withdrawn.
    pub(super) fn export_all(&self, id: PeerId, full: bool) {
        let Some(p) = self.peer(id) else {
            return;
        };
        let Some(s) = p.session.as_ref() else {
            return;
        };
        let target = p.target(s);
        let mut out = p.out.lock();
        for (net, paths) in self.table.iter_after(None) {
            let d = self.export_for(&net, paths.best(), id, &target);
            if full || d.is_some() {
                out.set(net, d);
            }
        }
        let wake = out.pending() > 0;
        drop(out);
        if wake {
            p.out.notify();
        }
    }

    /// Ends the start-up deferral when every configured peer has sent its
    /// End-of-RIB, or at the deadline.
    pub(super) fn check_startup(&mut self, now: Instant) {
        if self.converged {
            return;
        }
        let mut peers = self.peers.iter().flatten().peekable();
        let all_synced = peers.peek().is_some() && peers.all(PeerState::initial_sync_done);
        if !all_synced && now < self.startup_deadline {
            return;
        }
        self.converged = true;
        for p in self.peers.iter().flatten() {
            p.out.lock().release_end_of_rib();
            p.out.notify();
        }
        for w in &self.watchers {
            w.lock().converged = true;
            w.notify();
        }
    }

    /// The next time [`Rib::on_timer`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let startup = (!self.converged).then_some(self.startup_deadline);
        self.peers
            .iter()
            .flatten()
            .flat_map(|p| [p.restart_deadline, p.stale_deadline])
            .chain([startup])
            .flatten()
            .min()
    }

    /// Runs what is due at `now`: the start-up deadline, restart and stale
    /// timers.
    pub fn on_timer(&mut self, now: Instant) {
        self.check_startup(now);
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
                (due(p.restart_deadline) || due(p.stale_deadline)).then_some(PeerId(i as u16))
            })
            .collect();
        for id in due {
            if let Some(p) = self.peer_mut(id) {
                p.restart_deadline = None;
                p.stale_deadline = None;
                p.stale_families.clear();
            }
            self.flush_peer(id, None, true);
        }
        self.flush_changes();
    }

    /// The keys of every configured peer.
    pub fn peer_keys(&self) -> Vec<PeerKey> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref().map(|p| PeerKey {
                    id: PeerId(i as u16),
                    epoch: p.epoch,
                })
            })
            .collect()
    }
}
