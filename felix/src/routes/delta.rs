//! The pure half of route reconciliation: desired routes in, kernel routes
//! (from a dump, or from what felix itself wrote) in, the minimal list of
//! netlink operations out. No sockets, no clocks; the reconciler feeds it
//! and does the I/O.
//!
//! State, per destination prefix:
//! - `desired`: what callers asked for; when two [`Layer`]s want one
//!   prefix, the workload's (`workload`), with the block route kept
//!   aside (`shadowed`) until the workload's goes.
//! - `actual`: the route felix owns in the kernel for that prefix, as last
//!   dumped or written.
//! - `dirty`: prefixes where the two may differ. Invariant: every prefix
//!   whose `desired` does not match its `actual` is dirty, so a plan only
//!   looks at dirty prefixes and a change of one route costs one operation.
//!
//! A full resync marks every `actual` slot with the resync's epoch as the
//! dump visits it and sweeps the unvisited afterwards, so a resync that
//! finds nothing to do allocates nothing.
//!
//! Races this has to live with (the kernel is shared):
//! - Someone else's route in the slot felix wants (same prefix and metric):
//!   felix does not overwrite it. A new route is written with
//!   `NLM_F_EXCL`; `EEXIST` or a dump showing the foreign route makes the
//!   prefix a *conflict*, reported and retried at the next resync.
//! - A pod interface the CNI plugin just made may carry routes felix has
//!   not been told about yet; the reconciler classifies those as
//!   [`Seen::OwnedInGrace`] and they are left alone until the grace period
//!   ends.
//! - A link or route deletion event read only after a resync already saw
//!   the change (and felix wrote the route again) makes
//!   [`RouteDelta::forget_routes_via`] / [`RouteDelta::forget_deleted`]
//!   forget a route the kernel has: the rewrite's `EEXIST` makes the prefix
//!   a conflict and asks for a full resync, which finds the route felix's
//!   and clears it.
//! - Two routes of felix's for one prefix (different metrics, e.g. left by
//!   an older run): one is kept as `actual` (the one matching the desired
//!   route, if any) and the other is deleted as *stale*.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

use super::fasthash::{FastMap, FastSet};
use super::{KernelRoute, Layer, Route};

/// How to write a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `NLM_F_CREATE | NLM_F_EXCL`: felix believes the slot is empty, and
    /// must not overwrite a route someone else put there.
    Create,
    /// `NLM_F_CREATE | NLM_F_REPLACE`: the slot holds a route felix owns.
    Replace,
}

/// One netlink operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Delete(KernelRoute),
    Write(Route, WriteMode),
}

impl Op {
    pub fn dst(&self) -> IpNetwork {
        match self {
            Op::Delete(k) => k.dst,
            Op::Write(r, _) => r.dst,
        }
    }
}

/// The result of one operation, as the kernel acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Done,
    /// The kernel refused it with this errno.
    Failed(i32),
    /// No acknowledgement arrived (the socket overflowed): the kernel may
    /// or may not have done it; only a resync can tell.
    Unknown,
}

/// How the reconciler classifies a dumped kernel route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not felix's; never changed. Matters only if it sits in a slot felix
    /// wants.
    Foreign,
    /// Felix's to replace or delete.
    Owned,
    /// Felix's, but on a pod interface still inside its grace period: kept
    /// unless felix wants that prefix anyway.
    OwnedInGrace,
}

/// What [`RouteDelta::record`] learned from a batch of results.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    pub failures: Vec<(Op, OpResult)>,
    /// A failure that only a fresh dump can explain (a conflict appeared,
    /// or acknowledgements were lost).
    pub needs_resync: bool,
}

/// Counters of one full resync.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResyncCounts {
    pub owned_seen: usize,
    pub deferred: usize,
    pub conflicts: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    route: KernelRoute,
    epoch: u64,
}

/// Desired-vs-kernel tracker for one routing table.
#[derive(Debug)]
pub struct RouteDelta {
    table: u32,
    protocol: u8,
    /// The route wanted for each prefix: the highest [`Layer`]'s.
    desired: FastMap<IpNetwork, Route>,
    /// Prefixes whose desired route is a workload's.
    workload: FastSet<IpNetwork>,
    /// Block routes hidden under a workload route of the same prefix.
    shadowed: FastMap<IpNetwork, Route>,
    /// A B-tree, not a hash map: a dump arrives in prefix order, so the
    /// resync's lookups walk the tree sequentially and stay in cache, where
    /// hash lookups of 100,000 routes were bound by cache and TLB misses
    /// (about 70 against 85 ms per no-change resync, see BENCHMARKS.md).
    actual: BTreeMap<IpNetwork, Slot>,
    dirty: FastSet<IpNetwork>,
    stale: Vec<KernelRoute>,
    conflicts: FastSet<IpNetwork>,
    epoch: u64,
    counts: ResyncCounts,
    /// Desired prefixes the current resync found matching in the kernel;
    /// when it reaches `desired.len()` nothing desired is missing.
    matched: usize,
    /// Set when a resync saw duplicates, which `matched` cannot count.
    recount: bool,
}

impl RouteDelta {
    pub fn new(table: u32, protocol: u8) -> RouteDelta {
        RouteDelta {
            table,
            protocol,
            desired: FastMap::default(),
            workload: FastSet::default(),
            shadowed: FastMap::default(),
            actual: BTreeMap::new(),
            dirty: FastSet::default(),
            stale: Vec::new(),
            conflicts: FastSet::default(),
            epoch: 0,
            counts: ResyncCounts::default(),
            matched: 0,
            recount: false,
        }
    }

    pub fn desired(&self, dst: &IpNetwork) -> Option<&Route> {
        self.desired.get(dst)
    }

    pub fn desired_len(&self) -> usize {
        self.desired.len()
    }

    /// How many prefixes felix believes it has programmed.
    pub fn actual_len(&self) -> usize {
        self.actual.len()
    }

    /// Whether a plan would do anything (conflicts alone do not count).
    pub fn has_work(&self) -> bool {
        !self.stale.is_empty() || self.dirty.iter().any(|d| !self.conflicts.contains(d))
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &IpNetwork> {
        self.conflicts.iter()
    }

    /// Whether felix's route for `dst` (if any) is in the kernel as wanted.
    pub fn in_sync(&self, dst: &IpNetwork) -> bool {
        !self.dirty.contains(dst)
    }

    /// Desires a block route ([`Layer::Blocks`]).
    pub fn set(&mut self, route: Route) {
        self.set_in(Layer::Blocks, route);
    }

    /// Takes back a block route ([`Layer::Blocks`]).
    pub fn remove(&mut self, dst: IpNetwork) {
        self.remove_in(Layer::Blocks, dst);
    }

    fn put(&mut self, route: Route) {
        let dst = route.dst;
        self.desired.insert(dst, route);
        self.refresh(dst);
    }

    fn take(&mut self, dst: IpNetwork) {
        if self.desired.remove(&dst).is_some() {
            self.refresh(dst);
        }
    }

    /// Desires `route` on behalf of `layer`. A workload route takes the
    /// prefix from a block route (which waits underneath, in
    /// `shadowed`); a block route for a prefix a workload holds only
    /// replaces the one waiting underneath.
    pub fn set_in(&mut self, layer: Layer, route: Route) {
        let dst = route.dst;
        match layer {
            Layer::Workload => {
                if self.workload.insert(dst)
                    && let Some(below) = self.desired.get(&dst)
                {
                    self.shadowed.insert(dst, below.clone());
                }
                self.put(route);
            }
            Layer::Blocks if self.workload.contains(&dst) => {
                self.shadowed.insert(dst, route);
            }
            Layer::Blocks => self.put(route),
        }
    }

    /// Takes back `layer`'s wish for `dst`; another layer's stays. When a
    /// workload route goes, the block route waiting underneath (a learned
    /// route for the address, now elsewhere) becomes the desired one.
    pub fn remove_in(&mut self, layer: Layer, dst: IpNetwork) {
        match layer {
            Layer::Workload => {
                if self.workload.remove(&dst) {
                    match self.shadowed.remove(&dst) {
                        Some(below) => self.put(below),
                        None => self.take(dst),
                    }
                }
            }
            Layer::Blocks if self.workload.contains(&dst) => {
                self.shadowed.remove(&dst);
            }
            Layer::Blocks => self.take(dst),
        }
    }

    /// Re-derives whether `dst` is dirty.
    fn refresh(&mut self, dst: IpNetwork) {
        let clean = match (self.desired.get(&dst), self.actual.get(&dst)) {
            (None, None) => true,
            (Some(d), Some(a)) => d.matches(&a.route),
            _ => false,
        };
        if clean {
            if !self.dirty.is_empty() {
                self.dirty.remove(&dst);
            }
        } else {
            self.dirty.insert(dst);
        }
    }

    /// The operations that bring the kernel to the desired state, deletes
    /// first (a delete can free the slot a write needs). With
    /// `delete_undesired` false, owned routes nobody asked for are kept:
    /// until its callers have told it everything, felix cannot tell a stale
    /// route from one it simply has not heard about yet.
    pub fn plan(&mut self, delete_undesired: bool) -> Vec<Op> {
        let mut deletes = Vec::new();
        let mut writes = Vec::new();
        if delete_undesired {
            deletes.extend(self.stale.drain(..).map(Op::Delete));
        }
        for dst in &self.dirty {
            let desired = self.desired.get(dst);
            let actual = self.actual.get(dst).map(|s| s.route);
            match (desired, actual) {
                (Some(d), None) => {
                    if !self.conflicts.contains(dst) {
                        writes.push(Op::Write(d.clone(), WriteMode::Create));
                    }
                }
                (Some(d), Some(a)) if a.same_slot(d) => {
                    writes.push(Op::Write(d.clone(), WriteMode::Replace))
                }
                (Some(d), Some(a)) => {
                    deletes.push(Op::Delete(a));
                    if !self.conflicts.contains(dst) {
                        writes.push(Op::Write(d.clone(), WriteMode::Create));
                    }
                }
                (None, Some(a)) => {
                    if delete_undesired {
                        deletes.push(Op::Delete(a));
                    }
                }
                (None, None) => {}
            }
        }
        deletes.append(&mut writes);
        deletes
    }

    /// Takes the kernel's answers to a plan (same order, same length).
    pub fn record(&mut self, ops: &[Op], results: &[OpResult]) -> RecordOutcome {
        let mut out = RecordOutcome::default();
        for (op, result) in ops.iter().zip(results) {
            match (op, result) {
                (Op::Delete(k), OpResult::Done)
                | (Op::Delete(k), OpResult::Failed(libc::ESRCH)) => {
                    if self.actual.get(&k.dst).is_some_and(|s| s.route == *k) {
                        self.actual.remove(&k.dst);
                    }
                    self.refresh(k.dst);
                }
                (Op::Write(r, _), OpResult::Done) => {
                    let route = KernelRoute::from_desired(r, self.table, self.protocol);
                    self.actual.insert(
                        r.dst,
                        Slot {
                            route,
                            epoch: self.epoch,
                        },
                    );
                    self.conflicts.remove(&r.dst);
                    self.refresh(r.dst);
                }
                (Op::Write(r, WriteMode::Create), OpResult::Failed(libc::EEXIST)) => {
                    self.conflicts.insert(r.dst);
                    out.needs_resync = true;
                    out.failures.push((op.clone(), *result));
                }
                (Op::Delete(k), _) => {
                    // A stale route stays stale; an `actual` one stays dirty.
                    if self.actual.get(&k.dst).is_none_or(|s| s.route != *k) {
                        self.stale.push(*k);
                    }
                    out.needs_resync |= *result == OpResult::Unknown;
                    out.failures.push((op.clone(), *result));
                }
                (Op::Write(..), _) => {
                    out.needs_resync |= *result == OpResult::Unknown;
                    out.failures.push((op.clone(), *result));
                }
            }
        }
        out
    }

    /// Forgets the routes felix believed were programmed out of link
    /// `ifindex`, which the kernel removed with the link: all of them when
    /// the link was deleted, the IPv4 ones when it went down (IPv4 drops a
    /// downed link's routes silently; IPv6 announces what it drops, and
    /// [`RouteDelta::forget_deleted`] takes those). What a full dump would
    /// show, without the dump: a desired route among them becomes dirty
    /// (to be written again), an undesired one is simply gone. Returns how
    /// many were forgotten.
    ///
    /// Only routes whose out interface felix knows are found: a gateway
    /// route felix wrote is recorded without the interface the kernel
    /// resolved until a dump has shown it. The caller therefore uses this
    /// for pod interfaces only, which carry `dev` routes, and keeps the full
    /// resync for any other link.
    pub fn forget_routes_via(&mut self, ifindex: u32, ipv4_only: bool) -> usize {
        let through = |k: &KernelRoute| k.oif == Some(ifindex) && !(ipv4_only && k.dst.is_ipv6());
        self.stale.retain(|k| !through(k));
        let gone: Vec<IpNetwork> = self
            .actual
            .iter()
            .filter(|(_, slot)| through(&slot.route))
            .map(|(dst, _)| *dst)
            .collect();
        for dst in &gone {
            self.actual.remove(dst);
            self.refresh(*dst);
        }
        gone.len()
    }

    /// Takes a route deletion the kernel announced. If it is the route felix
    /// holds for that prefix (same kernel slot: table, prefix, metric, and
    /// felix's protocol) or a stale one, it is forgotten as a dump would
    /// forget it; returns whether it was. Anything else (someone else's
    /// route went) is left to a full resync, which may find a conflict
    /// resolved.
    pub fn forget_deleted(&mut self, k: &KernelRoute) -> bool {
        if k.table != self.table {
            return false;
        }
        let same = |a: &KernelRoute| {
            a.dst == k.dst && a.metric == k.metric && a.protocol == k.protocol && a.kind == k.kind
        };
        let before = self.stale.len();
        self.stale.retain(|a| !same(a));
        if self.stale.len() != before {
            return true;
        }
        if self.actual.get(&k.dst).is_some_and(|s| same(&s.route)) {
            self.actual.remove(&k.dst);
            self.refresh(k.dst);
            return true;
        }
        false
    }

    /// Starts a full resync: the caller then feeds every route of the
    /// table through [`RouteDelta::observe`] and ends with
    /// [`RouteDelta::finish_resync`]. A resync abandoned half-way (the dump
    /// failed) is harmless: the next one starts over.
    pub fn begin_resync(&mut self) {
        self.epoch += 1;
        self.stale.clear();
        self.conflicts.clear();
        self.counts = ResyncCounts::default();
        self.matched = 0;
        self.recount = false;
    }

    pub fn observe(&mut self, k: &KernelRoute, seen: Seen) {
        if k.table != self.table {
            return;
        }
        let dst = k.dst;
        match seen {
            Seen::Foreign => {
                if self.desired.get(&dst).is_some_and(|d| k.same_slot(d)) {
                    self.conflicts.insert(dst);
                    self.counts.conflicts += 1;
                }
                return;
            }
            Seen::OwnedInGrace if !self.desired.contains_key(&dst) => {
                self.counts.deferred += 1;
                return;
            }
            Seen::Owned | Seen::OwnedInGrace => {}
        }
        self.counts.owned_seen += 1;
        let epoch = self.epoch;
        match self.actual.get_mut(&dst) {
            Some(slot) if slot.epoch == epoch => {
                // A second owned route for this prefix in one dump.
                self.recount = true;
                let wants_new = self.desired.get(&dst).is_some_and(|d| d.matches(k));
                if wants_new {
                    self.stale.push(slot.route);
                    slot.route = *k;
                } else {
                    self.stale.push(*k);
                }
            }
            Some(slot) => {
                slot.epoch = epoch;
                if slot.route == *k {
                    // The common, no-change case: nothing else to do unless
                    // the prefix was dirty (a write that failed earlier).
                    if self.dirty.is_empty() || !self.dirty.contains(&dst) {
                        self.matched += 1;
                        return;
                    }
                } else {
                    slot.route = *k;
                }
            }
            None => {
                self.actual.insert(dst, Slot { route: *k, epoch });
            }
        }
        self.refresh(dst);
        if !self.dirty.contains(&dst) && self.desired.contains_key(&dst) {
            self.matched += 1;
        }
    }

    pub fn finish_resync(&mut self) -> ResyncCounts {
        let epoch = self.epoch;
        let all_matched = !self.recount && self.matched == self.desired.len();
        let RouteDelta {
            desired,
            actual,
            dirty,
            ..
        } = self;
        // Routes felix believed in that the kernel no longer has.
        actual.retain(|dst, slot| {
            if slot.epoch == epoch {
                return true;
            }
            if desired.contains_key(dst) {
                dirty.insert(*dst);
            } else {
                dirty.remove(dst);
            }
            false
        });
        // Desired routes the dump never showed (never written, or written
        // and then deleted by someone).
        for (dst, route) in desired.iter().filter(|_| !all_matched) {
            if !actual.get(dst).is_some_and(|s| route.matches(&s.route)) {
                dirty.insert(*dst);
            }
        }
        self.counts.conflicts = self.conflicts.len();
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{FELIX_PROTOCOL, Layer, MAIN_TABLE, RouteTarget};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn tracker() -> RouteDelta {
        RouteDelta::new(MAIN_TABLE, FELIX_PROTOCOL)
    }

    fn kernel_of(r: &Route) -> KernelRoute {
        KernelRoute::from_desired(r, MAIN_TABLE, FELIX_PROTOCOL)
    }

    fn all_done(d: &mut RouteDelta, ops: &[Op]) {
        let results = vec![OpResult::Done; ops.len()];
        let out = d.record(ops, &results);
        assert!(out.failures.is_empty());
    }

    fn resync(d: &mut RouteDelta, kernel: &[(KernelRoute, Seen)]) -> ResyncCounts {
        d.begin_resync();
        for (k, seen) in kernel {
            d.observe(k, *seen);
        }
        d.finish_resync()
    }

    fn block(i: u32) -> Route {
        let dst =
            IpNetwork::new(std::net::Ipv4Addr::from(0x0a00_0000 + i * 64).into(), 26).unwrap();
        Route::via(dst, "192.168.0.2".parse().unwrap())
    }

    #[test]
    fn new_route_is_one_create() {
        let mut d = tracker();
        let r = Route::blackhole(net("10.0.0.0/26"));
        d.set(r.clone());
        assert_eq!(d.plan(true), vec![Op::Write(r.clone(), WriteMode::Create)]);
    }

    #[test]
    fn applied_route_leaves_nothing_to_do() {
        let mut d = tracker();
        d.set(Route::blackhole(net("10.0.0.0/26")));
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        assert!(!d.has_work());
        assert!(d.plan(true).is_empty());
    }

    #[test]
    fn one_change_among_many_is_one_op() {
        let mut d = tracker();
        for i in 0..1000 {
            d.set(block(i));
        }
        let ops = d.plan(true);
        assert_eq!(ops.len(), 1000);
        all_done(&mut d, &ops);
        let moved = Route::via(block(500).dst, "192.168.0.3".parse().unwrap());
        d.set(moved.clone());
        assert_eq!(
            d.plan(true),
            vec![Op::Write(moved.clone(), WriteMode::Replace)]
        );
    }

    #[test]
    fn setting_the_same_route_again_is_free() {
        let mut d = tracker();
        d.set(block(1));
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        d.set(block(1));
        assert!(!d.has_work());
    }

    #[test]
    fn a_bgp_route_never_replaces_or_deletes_a_local_pod_route() {
        // Issue 19 item 6: a peer announcing a local pod's /32 must not
        // take its route, and withdrawing it must not delete it.
        let pod = Route::dev(net("10.65.1.5/32"), 42);
        let learned = Route::via(pod.dst, "192.168.0.9".parse().unwrap());
        for pod_first in [true, false] {
            let mut d = tracker();
            if pod_first {
                d.set_in(Layer::Workload, pod.clone());
                d.set_in(Layer::Blocks, learned.clone());
            } else {
                d.set_in(Layer::Blocks, learned.clone());
                d.set_in(Layer::Workload, pod.clone());
            }
            assert_eq!(d.desired(&pod.dst), Some(&pod), "pod_first={pod_first}");
            assert_eq!(
                d.plan(true),
                vec![Op::Write(pod.clone(), WriteMode::Create)]
            );
            let ops = d.plan(true);
            all_done(&mut d, &ops);
            d.remove_in(Layer::Blocks, pod.dst);
            assert_eq!(d.desired(&pod.dst), Some(&pod));
            assert!(d.plan(true).is_empty(), "the withdrawal deletes nothing");
        }
        // The pod goes: a learned route for the address (it moved to
        // another node) takes the slot again.
        let mut d = tracker();
        d.set_in(Layer::Workload, pod.clone());
        d.set_in(Layer::Blocks, learned.clone());
        d.remove_in(Layer::Workload, pod.dst);
        assert_eq!(d.desired(&pod.dst), Some(&learned));
        d.remove_in(Layer::Blocks, pod.dst);
        assert_eq!(d.desired(&pod.dst), None);
        assert_eq!(d.desired_len(), 0);
    }

    #[test]
    fn set_then_remove_before_apply_cancels_out() {
        let mut d = tracker();
        d.set(block(1));
        d.remove(block(1).dst);
        assert!(d.plan(true).is_empty());
    }

    #[test]
    fn removal_deletes_exactly_the_programmed_route() {
        let mut d = tracker();
        let r = block(3);
        d.set(r.clone());
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        d.remove(r.dst);
        assert_eq!(d.plan(true), vec![Op::Delete(kernel_of(&r))]);
    }

    #[test]
    fn metric_change_deletes_old_slot_before_creating_new() {
        let mut d = tracker();
        let r = block(3);
        d.set(r.clone());
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        let r2 = r.with_metric(20);
        d.set(r2.clone());
        assert_eq!(
            d.plan(true),
            vec![
                Op::Delete(kernel_of(&r)),
                Op::Write(r2.clone(), WriteMode::Create)
            ]
        );
    }

    #[test]
    fn no_change_resync_is_clean() {
        let mut d = tracker();
        let routes: Vec<Route> = (0..100).map(block).collect();
        for r in &routes {
            d.set(r.clone());
        }
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        let kernel: Vec<_> = routes.iter().map(|r| (kernel_of(r), Seen::Owned)).collect();
        let counts = resync(&mut d, &kernel);
        assert_eq!(counts.owned_seen, 100);
        assert!(!d.has_work());
    }

    #[test]
    fn route_deleted_behind_our_back_is_recreated_after_resync() {
        let mut d = tracker();
        let (a, b) = (block(1), block(2));
        d.set(a.clone());
        d.set(b.clone());
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        resync(&mut d, &[(kernel_of(&a), Seen::Owned)]);
        assert_eq!(d.plan(true), vec![Op::Write(b.clone(), WriteMode::Create)]);
    }

    #[test]
    fn stale_owned_route_from_previous_run_is_deleted() {
        let mut d = tracker();
        let stale = kernel_of(&block(9));
        resync(&mut d, &[(stale, Seen::Owned)]);
        assert_eq!(d.plan(true), vec![Op::Delete(stale)]);
    }

    #[test]
    fn undesired_routes_survive_until_in_sync() {
        let mut d = tracker();
        let stale = kernel_of(&block(9));
        resync(&mut d, &[(stale, Seen::Owned)]);
        let wanted = block(1);
        d.set(wanted.clone());
        let ops = d.plan(false);
        assert_eq!(ops, vec![Op::Write(wanted.clone(), WriteMode::Create)]);
        all_done(&mut d, &ops);
        assert_eq!(d.plan(true), vec![Op::Delete(stale)]);
    }

    #[test]
    fn foreign_routes_are_never_touched() {
        let mut d = tracker();
        let mut foreign = kernel_of(&block(4));
        foreign.protocol = libc::RTPROT_STATIC;
        let counts = resync(&mut d, &[(foreign, Seen::Foreign)]);
        assert_eq!(counts.conflicts, 0);
        assert!(d.plan(true).is_empty());
    }

    #[test]
    fn foreign_route_in_our_slot_is_a_conflict_not_an_overwrite() {
        let mut d = tracker();
        let r = block(4);
        d.set(r.clone());
        let mut foreign = kernel_of(&r);
        foreign.protocol = libc::RTPROT_STATIC;
        let counts = resync(&mut d, &[(foreign, Seen::Foreign)]);
        assert_eq!(counts.conflicts, 1);
        assert!(d.plan(true).is_empty());
        assert!(!d.has_work());
        assert_eq!(d.conflicts().copied().collect::<Vec<_>>(), vec![r.dst]);
        // The operator removes theirs; the next resync writes ours.
        resync(&mut d, &[]);
        assert_eq!(d.plan(true), vec![Op::Write(r.clone(), WriteMode::Create)]);
    }

    #[test]
    fn foreign_route_with_other_metric_is_no_conflict() {
        let mut d = tracker();
        let r = block(4);
        d.set(r.clone());
        let mut foreign = kernel_of(&r.with_metric(100));
        foreign.protocol = libc::RTPROT_STATIC;
        resync(&mut d, &[(foreign, Seen::Foreign)]);
        assert_eq!(d.plan(true), vec![Op::Write(r.clone(), WriteMode::Create)]);
    }

    #[test]
    fn create_refused_with_eexist_becomes_a_conflict_and_asks_for_resync() {
        let mut d = tracker();
        let r = block(4);
        d.set(r.clone());
        let ops = d.plan(true);
        let out = d.record(&ops, &[OpResult::Failed(libc::EEXIST)]);
        assert!(out.needs_resync);
        assert_eq!(out.failures.len(), 1);
        assert!(d.plan(true).is_empty());
    }

    #[test]
    fn failed_write_stays_dirty_for_retry() {
        let mut d = tracker();
        let r = block(4);
        d.set(r.clone());
        let ops = d.plan(true);
        let out = d.record(&ops, &[OpResult::Failed(libc::ENETUNREACH)]);
        assert!(!out.needs_resync);
        assert_eq!(d.plan(true), ops);
    }

    #[test]
    fn lost_acks_ask_for_resync() {
        let mut d = tracker();
        d.set(block(4));
        let ops = d.plan(true);
        assert!(d.record(&ops, &[OpResult::Unknown]).needs_resync);
    }

    #[test]
    fn failed_stale_delete_is_retried() {
        let mut d = tracker();
        let stale = kernel_of(&block(9));
        resync(&mut d, &[(stale, Seen::Owned)]);
        let ops = d.plan(true);
        d.record(&ops, &[OpResult::Failed(libc::EBUSY)]);
        assert_eq!(d.plan(true), vec![Op::Delete(stale)]);
    }

    #[test]
    fn delete_of_already_gone_route_counts_as_done() {
        let mut d = tracker();
        let stale = kernel_of(&block(9));
        resync(&mut d, &[(stale, Seen::Owned)]);
        let ops = d.plan(true);
        let out = d.record(&ops, &[OpResult::Failed(libc::ESRCH)]);
        assert!(out.failures.is_empty());
        assert!(!d.has_work());
    }

    #[test]
    fn route_in_grace_is_kept_unless_wanted() {
        let mut d = tracker();
        let mut cni = kernel_of(&Route::dev(net("10.0.0.7/32"), 5));
        cni.protocol = libc::RTPROT_BOOT;
        let counts = resync(&mut d, &[(cni, Seen::OwnedInGrace)]);
        assert_eq!(counts.deferred, 1);
        assert!(d.plan(true).is_empty());
        // After the grace period it is an ordinary unknown owned route.
        resync(&mut d, &[(cni, Seen::Owned)]);
        assert_eq!(d.plan(true), vec![Op::Delete(cni)]);
    }

    #[test]
    fn route_in_grace_that_felix_wants_is_replaced() {
        let mut d = tracker();
        let want = Route::dev(net("10.0.0.7/32"), 5);
        d.set(want.clone());
        let mut cni = kernel_of(&want);
        cni.protocol = libc::RTPROT_BOOT;
        resync(&mut d, &[(cni, Seen::OwnedInGrace)]);
        assert_eq!(
            d.plan(true),
            vec![Op::Write(want.clone(), WriteMode::Replace)]
        );
    }

    #[test]
    fn duplicate_owned_routes_keep_the_matching_one() {
        let mut d = tracker();
        let want = block(2);
        d.set(want.clone());
        let old = kernel_of(&want.with_metric(50));
        let good = kernel_of(&want);
        resync(&mut d, &[(old, Seen::Owned), (good, Seen::Owned)]);
        assert_eq!(d.plan(true), vec![Op::Delete(old)]);
    }

    #[test]
    fn kernel_resolved_oif_on_gateway_route_is_not_a_change() {
        let mut d = tracker();
        let r = block(2);
        d.set(r.clone());
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        let mut k = kernel_of(&r);
        k.oif = Some(3);
        resync(&mut d, &[(k, Seen::Owned)]);
        assert!(!d.has_work());
    }

    #[test]
    fn changed_target_on_resync_is_rewritten_in_place() {
        let mut d = tracker();
        let r = Route {
            target: RouteTarget::Interface(4),
            ..Route::blackhole(net("10.0.0.9/32"))
        };
        d.set(r.clone());
        let mut k = kernel_of(&r);
        k.oif = Some(8);
        resync(&mut d, &[(k, Seen::Owned)]);
        assert_eq!(d.plan(true), vec![Op::Write(r.clone(), WriteMode::Replace)]);
    }

    #[test]
    fn removed_link_forgets_exactly_its_routes() {
        let mut d = tracker();
        let (a4, a6) = (
            Route::dev(net("10.0.0.7/32"), 5),
            Route::dev(net("fd00::7/128"), 5),
        );
        let (b4, b6) = (
            Route::dev(net("10.0.0.8/32"), 6),
            Route::dev(net("fd00::8/128"), 6),
        );
        let far = block(1);
        for r in [&a4, &a6, &b4, &b6, &far] {
            d.set(r.clone());
        }
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        // Link 5 went down: IPv4 routes through it are gone, IPv6 stay.
        assert_eq!(d.forget_routes_via(5, true), 1);
        assert_eq!(d.plan(true), vec![Op::Write(a4.clone(), WriteMode::Create)]);
        // Deleted: both families; the other pod and the block are kept.
        d.remove(a4.dst);
        d.remove(a6.dst);
        assert_eq!(d.forget_routes_via(5, false), 1);
        assert!(d.plan(true).is_empty(), "nothing left to delete");
        assert_eq!(d.actual_len(), 3);
        assert!(!d.has_work());
        // The model now equals what a dump of the kernel shows.
        let kernel: Vec<_> = [b4, b6, far]
            .iter()
            .map(|r| (kernel_of(r), Seen::Owned))
            .collect();
        let counts = resync(&mut d, &kernel);
        assert_eq!(counts.owned_seen, 3);
        assert!(!d.has_work());
    }

    #[test]
    fn announced_deletion_of_our_route_makes_it_dirty_and_others_untouched() {
        let mut d = tracker();
        let (a, b) = (block(1), block(2));
        d.set(a.clone());
        d.set(b.clone());
        let ops = d.plan(true);
        all_done(&mut d, &ops);
        let mut foreign = kernel_of(&b);
        foreign.protocol = libc::RTPROT_STATIC;
        assert!(!d.forget_deleted(&foreign), "not felix's route");
        assert!(!d.forget_deleted(&kernel_of(&b.with_metric(7))));
        assert!(d.forget_deleted(&kernel_of(&a)));
        assert_eq!(d.plan(true), vec![Op::Write(a.clone(), WriteMode::Create)]);
    }

    #[test]
    fn routes_of_other_tables_are_ignored() {
        let mut d = tracker();
        let mut k = kernel_of(&block(1));
        k.table = 100;
        resync(&mut d, &[(k, Seen::Owned)]);
        assert!(d.plan(true).is_empty());
    }
}
