//! The routing table: Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out, sans-IO.
//!
//! [`Rib`] is plain data driven by method calls (an UPDATE from a peer, a
//! session up or down, a timer, a configuration change) with time passed
//! in; the RIB task in [`crate::speaker`] feeds it. It never blocks and
//! never does I/O: what goes out is left in each peer's [`AdjRibOut`] and
//! each route-stream [`Watcher`], which the connection writers and the
//! stream tasks drain at their own pace, and the few things that need a
//! session task (cut a session that sent too many prefixes, ask a peer
//! for a refresh) come out of [`Rib::take_actions`].
//!
//! # Storage
//! One [`table::Table`] holds every path of every prefix: a peer's
//! Adj-RIB-In is its paths there, the Loc-RIB is the first path of each
//! prefix (and the ECMP set behind it). Nothing is duplicated between the
//! two, and a path is 8 bytes (peer id, interned attribute id, flags), so
//! a million single-path IPv4 prefixes take about 12 MB plus the attribute
//! sets, which are interned in [`attrs::AttrStore`].
//!
//! # Flow of a change
//! `apply_update` → per prefix: import policy ([`crate::policy`]), insert
//! or remove the peer's path, re-run selection ([`best`]) when the prefix
//! has several paths → the prefixes whose best path or ECMP set changed are
//! collected → at the end of the operation each changed prefix is offered
//! to every watcher and, through [`export::export`], to every established
//! peer's Adj-RIB-Out.

pub mod attrs;
pub mod best;
pub mod export;
pub mod out;
mod peers;
mod query;
pub mod table;
pub mod watch;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipnetwork::IpNetwork;

use crate::fsm::Negotiated;
use crate::packet::Family;
use crate::packet::attributes::{DecodeCtx, PathAttrs};
use crate::packet::nlri::NlriIter;
use crate::packet::notification::Notification;
use crate::packet::update::Update;
use crate::policy::{self, LocalPolicy, PeerPolicy, Rejection};

pub use attrs::{AttrId, AttrStore};
pub use out::{AdjRibOut, OutBatch};
pub use peers::PeerState;
pub use query::{Chunk, RouteRow, RowFilter, Rows};
pub use table::{Path, PeerId, Table};
pub use watch::{Changes, StreamRoute, Watcher};

use attrs::Rank;
use best::Candidate;
use table::{Paths, Removed, Signature, Upserted};

/// A peer's slot in the RIB and the incarnation of that slot: events from
/// a removed peer's task cannot touch a newer peer given the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub id: PeerId,
    pub epoch: u32,
}

/// The routes of one UPDATE, owned, as the peer task hands them over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpdateMsg {
    pub withdrawn: Vec<IpNetwork>,
    /// Announced prefixes with their attributes (the IPv4 NLRI field and
    /// MP_REACH_NLRI can carry different next hops).
    pub announced: Vec<(Arc<PathAttrs>, Vec<IpNetwork>)>,
    pub end_of_rib: Option<Family>,
}

fn collect(dst: &mut Vec<IpNetwork>, nlri: &NlriIter<'_>, ok: bool, ignored: &mut usize) {
    if ok {
        dst.extend(nlri.clone());
    } else {
        *ignored += nlri.clone().count();
    }
}

impl UpdateMsg {
    /// Turns a decoded UPDATE into routes, keeping only the families the
    /// session negotiated; returns how many prefixes were ignored for
    /// that.
    pub fn from_update(u: &Update<'_>, ctx: &DecodeCtx, families: &[Family]) -> (UpdateMsg, usize) {
        let v4 = families.contains(&Family::Ipv4Unicast);
        let mut ignored = 0;
        let mut msg = UpdateMsg {
            end_of_rib: u.end_of_rib(),
            ..UpdateMsg::default()
        };
        collect(&mut msg.withdrawn, &u.withdrawn, v4, &mut ignored);
        if let Some(w) = &u.mp_unreach {
            let ok = families.contains(&w.family);
            collect(&mut msg.withdrawn, &w.withdrawn, ok, &mut ignored);
        }
        if u.treat_as_withdraw() {
            // RFC 7606 section 2: "the UPDATE message [...] is processed as
            // though all contained routes had been withdrawn".
            collect(&mut msg.withdrawn, &u.nlri, v4, &mut ignored);
            if let Some(r) = &u.mp_reach {
                let ok = families.contains(&r.family);
                collect(&mut msg.withdrawn, &r.nlri, ok, &mut ignored);
            }
            return (msg, ignored);
        }
        if !u.nlri.is_empty() {
            let mut nets = Vec::new();
            collect(&mut nets, &u.nlri, v4, &mut ignored);
            if !nets.is_empty() {
                msg.announced.push((Arc::new(u.ipv4_attrs(ctx)), nets));
            }
        }
        if let (Some(r), Some(a)) = (&u.mp_reach, u.mp_attrs(ctx)) {
            let mut nets = Vec::new();
            collect(
                &mut nets,
                &r.nlri,
                families.contains(&r.family),
                &mut ignored,
            );
            if !nets.is_empty() {
                msg.announced.push((Arc::new(a), nets));
            }
        }
        (msg, ignored)
    }

    pub fn prefixes(&self) -> usize {
        self.withdrawn.len() + self.announced.iter().map(|(_, n)| n.len()).sum::<usize>()
    }
}

/// What the RIB needs a session task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RibAction {
    /// Cut the session with this NOTIFICATION (max-prefix).
    Reset {
        peer: PeerKey,
        notification: Notification,
    },
    /// Ask the peer to send `family` again (RFC 2918): import policy
    /// changed and routes refused before may now be accepted.
    RouteRefresh { peer: PeerKey, family: Family },
}

/// The session details the RIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Tells this session's writer from an older one's.
    pub generation: u64,
    pub negotiated: Negotiated,
    /// Our end of the connection: next-hop self.
    pub local_addr: Option<IpAddr>,
    /// We sent the RFC 8538 "N" bit.
    pub n_bit: bool,
}

/// What one UPDATE did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub announced: usize,
    pub withdrawn: usize,
    pub rejected: usize,
    pub rejection: Option<Rejection>,
}

/// Counters the control socket reads without asking the RIB task.
#[derive(Debug, Default)]
pub struct RibStats {
    pub loc_rib_v4: AtomicU64,
    pub loc_rib_v6: AtomicU64,
    pub attr_sets: AtomicU64,
}

/// Per-peer counters, likewise.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub received_v4: AtomicU64,
    pub received_v6: AtomicU64,
    pub stale: AtomicU64,
    pub rejected: AtomicU64,
}

impl PeerStats {
    pub fn received(&self) -> u64 {
        self.received_v4.load(Ordering::Relaxed) + self.received_v6.load(Ordering::Relaxed)
    }
}

/// Prefixes of an UPDATE looked up together (see [`Table::prefetch`]).
const PREFETCH_GROUP: usize = 32;

pub(crate) fn fidx(f: Family) -> usize {
    match f {
        Family::Ipv4Unicast => 0,
        Family::Ipv6Unicast => 1,
    }
}

#[derive(Debug)]
pub struct Rib {
    local: LocalPolicy,
    table: Table,
    attrs: AttrStore,
    /// Indexed by peer id; slot 0 (this speaker) stays empty.
    peers: Vec<Option<PeerState>>,
    originated: BTreeSet<IpNetwork>,
    watchers: Vec<Arc<Watcher>>,
    /// Start-up selection deferral (RFC 4724 section 4.1): until every
    /// peer has sent End-of-RIB, or this deadline, End-of-RIB markers are
    /// held back and the route stream does not declare its snapshot
    /// complete.
    startup_deadline: Instant,
    converged: bool,
    actions: Vec<RibAction>,
    /// Prefixes whose best path or ECMP set changed in the current
    /// operation, with the new best path (`None`: gone). A prefix may
    /// appear more than once; later entries are newer.
    changed: Vec<(IpNetwork, Option<Path>)>,
    stats: Arc<RibStats>,
}

impl Rib {
    pub fn new(local: LocalPolicy, startup_deadline: Instant) -> Rib {
        Rib {
            local,
            table: Table::default(),
            attrs: AttrStore::default(),
            peers: vec![None],
            originated: BTreeSet::new(),
            watchers: Vec::new(),
            startup_deadline,
            converged: false,
            actions: Vec::new(),
            changed: Vec::new(),
            stats: Arc::new(RibStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<RibStats> {
        self.stats.clone()
    }

    pub fn local(&self) -> &LocalPolicy {
        &self.local
    }

    pub fn converged(&self) -> bool {
        self.converged
    }

    pub fn take_actions(&mut self) -> Vec<RibAction> {
        std::mem::take(&mut self.actions)
    }

    fn peer(&self, id: PeerId) -> Option<&PeerState> {
        self.peers.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut PeerState> {
        self.peers
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
    }

    /// The peer in slot `key.id`, if it is still that incarnation.
    fn keyed(&self, key: PeerKey) -> Option<&PeerState> {
        self.peer(key.id).filter(|p| p.epoch == key.epoch)
    }

    fn keyed_mut(&mut self, key: PeerKey) -> Option<&mut PeerState> {
        self.peer_mut(key.id).filter(|p| p.epoch == key.epoch)
    }

    /// Applies one UPDATE from `key`'s established session.
    pub fn apply_update(&mut self, key: PeerKey, msg: UpdateMsg, now: Instant) -> Applied {
        let mut out = Applied::default();
        let Some(p) = self.keyed(key).filter(|p| p.session.is_some()) else {
            return out;
        };
        let peer = p.policy.clone();
        let session = policy::SessionView {
            internal: p.internal,
            local_addr: p.session.as_ref().and_then(|s| s.local_addr),
        };
        let id = key.id;
        for group in msg.withdrawn.chunks(PREFETCH_GROUP) {
            self.table.prefetch(group);
            for n in group {
                if self.withdraw(id, *n) {
                    out.withdrawn += 1;
                }
            }
        }
        for (attrs, nets) in msg.announced {
            if let Err(why) = policy::check_path(&self.local, &peer, &attrs)
                .and_then(|()| policy::check_next_hop(&self.local, &peer, session, &attrs))
            {
                out.rejected += nets.len();
                out.rejection = Some(why);
                for n in nets {
                    self.withdraw(id, n);
                }
                continue;
            }
            let iface = policy::import_interface(&self.local, &peer, &attrs);
            let aid = self.attrs.intern(attrs);
            for group in nets.chunks(PREFETCH_GROUP) {
                self.table.prefetch(group);
                for &n in group {
                    if let Err(why) = policy::check_import(&self.local, &peer, &n, iface.as_deref())
                    {
                        out.rejected += 1;
                        out.rejection = Some(why);
                        self.withdraw(id, n);
                    } else {
                        self.announce(id, n, aid);
                        out.announced += 1;
                    }
                }
            }
            self.attrs.release_if_unused(aid);
        }
        if out.rejected > 0
            && let Some(p) = self.peer(id)
        {
            p.stats
                .rejected
                .fetch_add(out.rejected as u64, Ordering::Relaxed);
        }
        if let Some(f) = msg.end_of_rib {
            self.end_of_rib(key, f, now);
        }
        self.check_max_prefixes(key);
        self.flush_changes();
        out
    }

    fn check_max_prefixes(&mut self, key: PeerKey) {
        let Some(p) = self.keyed_mut(key) else {
            return;
        };
        let total = p.accepted[0] + p.accepted[1];
        if p.tripped || !policy::max_prefixes_exceeded(&p.policy, total) {
            return;
        }
        p.tripped = true;
        let limit = policy::effective_max_prefixes(&p.policy);
        let family = if p.accepted[1] > p.accepted[0] {
            Family::Ipv6Unicast
        } else {
            Family::Ipv4Unicast
        };
        self.actions.push(RibAction::Reset {
            peer: key,
            notification: Notification::max_prefixes(family, limit),
        });
    }

    fn count(&mut self, id: PeerId, net: &IpNetwork, delta: isize, stale_gone: bool) {
        if let Some(p) = self.peer_mut(id) {
            let i = fidx(Family::of(net));
            p.accepted[i] = p.accepted[i].saturating_add_signed(delta);
            if stale_gone {
                p.stale = p.stale.saturating_sub(1);
            }
        }
    }

    /// Adds or replaces `id`'s path for `net`.
    fn announce(&mut self, id: PeerId, net: IpNetwork, attr: AttrId) {
        self.attrs.retain(attr);
        let path = Path::new(id, attr);
        match self.table.upsert(net, path) {
            Upserted::Single { old: None } => {
                self.count(id, &net, 1, false);
                self.changed.push((net, Some(path)));
            }
            Upserted::Single { old: Some(o) } => {
                self.count(id, &net, 0, o.stale());
                self.attrs.release(o.attr);
                if o.attr != attr {
                    self.changed.push((net, Some(path)));
                }
            }
            Upserted::Multi { old, before } => {
                match old {
                    None => self.count(id, &net, 1, false),
                    Some(o) => {
                        self.count(id, &net, 0, o.stale());
                        self.attrs.release(o.attr);
                    }
                }
                self.reselect(net, before);
            }
        }
    }

    /// Removes `id`'s path for `net`; whether there was one.
    fn withdraw(&mut self, id: PeerId, net: IpNetwork) -> bool {
        match self.table.remove(&net, id) {
            Removed::Nothing => false,
            Removed::Last(o) => {
                self.count(id, &net, -1, o.stale());
                self.attrs.release(o.attr);
                self.changed.push((net, None));
                true
            }
            Removed::OneOf { old, before } => {
                self.count(id, &net, -1, old.stale());
                self.attrs.release(old.attr);
                self.reselect(net, before);
                true
            }
        }
    }

    fn candidate(&self, p: &Path) -> Candidate {
        let rank = self.attrs.rank(p.attr).unwrap_or(Rank {
            local_pref: None,
            as_path_len: u32::MAX,
            origin: u8::MAX,
            med: u32::MAX,
            neighbor_as: None,
            originator_id: None,
            cluster_list_len: u32::MAX,
        });
        match self.peer(p.peer) {
            Some(ps) if p.peer != PeerId::LOCAL => Candidate {
                rank,
                local: false,
                external: !ps.internal,
                igp_cost: ps.policy.igp_cost,
                peer_id: ps.router_id,
                peer_addr: ps.policy.address,
            },
            _ => Candidate {
                rank,
                local: true,
                external: false,
                igp_cost: None,
                peer_id: self.local.router_id,
                peer_addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            },
        }
    }

    /// Re-runs selection for a prefix with several paths.
    fn reselect(&mut self, net: IpNetwork, before: Signature) {
        let Some(paths) = self.table.get(&net) else {
            if !before.0.is_empty() {
                self.changed.push((net, None));
            }
            return;
        };
        let cands: Vec<Candidate> = paths.paths.iter().map(|p| self.candidate(p)).collect();
        let sel = best::select(&cands);
        self.table.reorder(&net, &sel.order, sel.ecmp);
        let Some(after) = self.table.get(&net) else {
            return;
        };
        if after.signature() != before {
            self.changed.push((net, Some(after.best())));
        }
    }

    /// The attributes of our own block `net`.
    fn local_attrs(&self, net: &IpNetwork) -> Arc<PathAttrs> {
        let (communities, large_communities) =
            policy::communities_for(net, &self.local.communities);
        Arc::new(PathAttrs {
            communities,
            large_communities,
            ..PathAttrs::default()
        })
    }

    /// Makes `prefixes` exactly the set of blocks this speaker originates.
    pub fn set_originated(&mut self, prefixes: &[IpNetwork]) {
        let new: BTreeSet<IpNetwork> = prefixes
            .iter()
            .filter_map(|n| IpNetwork::new(n.network(), n.prefix()).ok())
            .collect();
        for n in self
            .originated
            .difference(&new)
            .copied()
            .collect::<Vec<_>>()
        {
            self.withdraw(PeerId::LOCAL, n);
        }
        for n in &new {
            let aid = self.attrs.intern(self.local_attrs(n));
            self.announce(PeerId::LOCAL, *n, aid);
        }
        self.originated = new;
        self.flush_changes();
    }

    pub fn originated(&self) -> impl Iterator<Item = &IpNetwork> {
        self.originated.iter()
    }

    /// Replaces the speaker-wide policy: pools, communities, cluster id.
    /// Routes now refused are dropped, peers that may now send routes we
    /// refused are asked for a refresh, and every peer's exports are
    /// re-evaluated.
    pub fn set_local(&mut self, local: LocalPolicy) {
        if local == self.local {
            return;
        }
        let import_changed = local.pools != self.local.pools
            || local.node_networks != self.local.node_networks
            || local.node_interfaces != self.local.node_interfaces
            || local.import != self.local.import;
        let communities_changed = local.communities != self.local.communities;
        self.local = local;
        if communities_changed {
            let own: Vec<IpNetwork> = self.originated.iter().copied().collect();
            self.set_originated(&own);
        }
        if import_changed {
            self.enforce_import(None);
        }
        let ids: Vec<PeerId> = (1..self.peers.len() as u16).map(PeerId).collect();
        for id in ids {
            self.export_all(id, true);
        }
        self.flush_changes();
    }

    /// Drops paths the import policy (filters included) now refuses
    /// (prefix or next hop),
    /// and asks every peer that can for a refresh of what it refused
    /// before.
    ///
    /// `only`: just that peer's paths and refresh (its import filters
    /// changed); `None`: every peer (the speaker-wide policy changed).
    fn enforce_import(&mut self, only: Option<PeerId>) {
        type Entry = (PeerKey, PeerPolicy, policy::SessionView, Vec<Family>, bool);
        let peers: Vec<(PeerId, Entry)> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let p = p.as_ref()?;
                let id = PeerId(i as u16);
                if only.is_some_and(|o| o != id) {
                    return None;
                }
                let s = p.session.as_ref();
                let view = policy::SessionView {
                    internal: p.internal,
                    local_addr: s.and_then(|s| s.local_addr),
                };
                Some((
                    id,
                    (
                        PeerKey { id, epoch: p.epoch },
                        p.policy.clone(),
                        view,
                        s.map(|s| s.negotiated.families.clone()).unwrap_or_default(),
                        s.is_some_and(|s| s.negotiated.route_refresh),
                    ),
                ))
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        let mut drop = Vec::new();
        for (net, paths) in self.table.iter_after(None) {
            for (id, (_, pol, view, ..)) in &peers {
                let Some(path) = paths.find(*id) else {
                    continue;
                };
                let attrs = self.attrs.get(path.attr);
                let iface = attrs.and_then(|a| policy::import_interface(&self.local, pol, a));
                let refused = policy::check_import(&self.local, pol, &net, iface.as_deref())
                    .is_err()
                    || attrs.is_some_and(|a| {
                        policy::check_next_hop(&self.local, pol, *view, a).is_err()
                    });
                if refused {
                    drop.push((*id, net));
                }
            }
        }
        for (id, net) in drop {
            self.withdraw(id, net);
        }
        for (_, (key, _, _, families, refresh)) in peers {
            if refresh {
                for family in families {
                    self.actions
                        .push(RibAction::RouteRefresh { peer: key, family });
                }
            }
        }
    }

    /// What `target` should have for `net` given its best path.
    fn export_for(
        &self,
        net: &IpNetwork,
        best: Path,
        target_id: PeerId,
        target: &export::Target<'_>,
    ) -> Option<PathAttrs> {
        if best.peer == target_id {
            return None;
        }
        let attrs = self.attrs.get(best.attr)?;
        let src = if best.peer == PeerId::LOCAL {
            export::Source::Local
        } else {
            let sp = self.peer(best.peer)?;
            export::Source::Peer {
                policy: &sp.policy,
                internal: sp.internal,
                router_id: sp.router_id,
            }
        };
        export::export(&self.local, net, &src, attrs, target)
    }

    /// The route stream's view of a prefix: nothing for our own blocks.
    fn stream_view(&self, paths: Paths<'_>) -> Option<StreamRoute> {
        let best = paths.best();
        if best.peer == PeerId::LOCAL {
            return None;
        }
        let from_node = self.peer(best.peer).is_some_and(|p| p.policy.calico_node);
        let mut next_hops: Vec<IpAddr> = paths
            .ecmp_set()
            .iter()
            .filter(|p| p.peer != PeerId::LOCAL)
            .filter_map(|p| self.attrs.get(p.attr)?.next_hop)
            .collect();
        next_hops.sort_unstable();
        next_hops.dedup();
        (!next_hops.is_empty()).then_some(StreamRoute {
            next_hops,
            from_node,
        })
    }

    /// Offers every changed prefix to the watchers and the established
    /// peers, then updates the counters.
    fn flush_changes(&mut self) {
        if !self.changed.is_empty() {
            let mut changed = std::mem::take(&mut self.changed);
            self.watchers.retain(|w| Arc::strong_count(w) > 1);
            for w in &self.watchers {
                let mut st = w.lock();
                let mut any = false;
                for (n, _) in &changed {
                    // Only what the watcher queues is looked at: the
                    // stream carries the ECMP set, read from the table
                    // (which also makes duplicates agree on the final
                    // state).
                    if st.wants(n) {
                        let view = self.table.get(n).and_then(|p| self.stream_view(p));
                        st.changed(*n, view);
                        any = true;
                    }
                }
                drop(st);
                if any {
                    w.notify();
                }
            }
            for (i, slot) in self.peers.iter().enumerate() {
                let Some((p, s)) = slot.as_ref().and_then(|p| Some((p, p.session.as_ref()?)))
                else {
                    continue;
                };
                let id = PeerId(i as u16);
                let target = p.target(s);
                let mut out = p.out.lock();
                for (n, best) in &changed {
                    let d = best.and_then(|b| self.export_for(n, b, id, &target));
                    out.set(*n, d);
                }
                let wake = out.pending() > 0;
                drop(out);
                if wake {
                    p.out.notify();
                }
            }
            changed.clear();
            self.changed = changed;
        }
        for p in self.peers.iter().flatten() {
            p.publish();
        }
        self.stats
            .loc_rib_v4
            .store(self.table.len_v4() as u64, Ordering::Relaxed);
        self.stats
            .loc_rib_v6
            .store(self.table.len_v6() as u64, Ordering::Relaxed);
        self.stats
            .attr_sets
            .store(self.attrs.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
