//! The prefix table: every path of every prefix, which makes it at once
//! each peer's Adj-RIB-In (the paths with that peer's id) and the Loc-RIB
//! (the first path of each prefix, and the ECMP paths after it).
//!
//! Layout, chosen for a million IPv4 prefixes in a few tens of megabytes:
//! - a [`Path`] is 8 bytes: interned attribute id, peer id, flags;
//! - IPv4 prefixes live in 65,536 buckets indexed by the top 16 address
//!   bits, each a vector of `(low 16 bits << 8 | length, slot)` kept
//!   sorted, 12 bytes per prefix (a bucket past 2,048 prefixes becomes a
//!   B-tree, so a dense /16 sent in descending order is not quadratic).
//!   Growth is per bucket, so the table never
//!   reallocates as a whole (no doubling spike of a hash table), and walking
//!   the buckets in order visits prefixes in address order, which the
//!   resumable scans of the route stream and `bird show routes` rely on.
//!   The bucket directory is a zeroed array of 4-byte indices into the
//!   vectors that exist: the kernel backs only its pages that are written,
//!   so a node's few pod blocks cost a page, not 1.5 MB of empty vectors;
//! - IPv6 prefixes, far fewer, live in a `BTreeMap`;
//! - a prefix with one path (the common case: each pod block comes from
//!   its node) stores it inline; one with several keeps them in a side
//!   arena, best first, then the rest of the ECMP set, then the others.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Bound;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::attrs::AttrId;
use crate::packet::Family;

/// A peer's index in the RIB; 0 is this speaker (locally originated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u16);

impl PeerId {
    pub const LOCAL: PeerId = PeerId(0);
    /// Never a peer: marks a slot whose paths live in the arena.
    const MULTI: PeerId = PeerId(u16::MAX);
    pub const MAX: u16 = u16::MAX - 1;
}

/// The path is left over from a session that went down gracefully (RFC
/// 4724): kept for forwarding until the peer refreshes or the timer runs
/// out.
pub const STALE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub attr: AttrId,
    pub peer: PeerId,
    pub flags: u8,
}

impl Path {
    pub fn new(peer: PeerId, attr: AttrId) -> Path {
        Path {
            attr,
            peer,
            flags: 0,
        }
    }

    pub fn stale(&self) -> bool {
        self.flags & STALE != 0
    }
}

/// One prefix's entry: a path, or (peer `MULTI`) an arena index.
#[derive(Debug, Clone, Copy)]
struct Slot(Path);

#[derive(Debug, Default)]
struct Multi {
    paths: Vec<Path>,
    ecmp: usize,
}

/// The paths of one prefix: `paths[0]` is the best, `paths[..ecmp]` the
/// equal-cost set.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    pub paths: &'a [Path],
    pub ecmp: usize,
}

impl<'a> Paths<'a> {
    pub fn best(&self) -> Path {
        self.paths[0]
    }

    pub fn ecmp_set(&self) -> &'a [Path] {
        &self.paths[..self.ecmp.clamp(1, self.paths.len())]
    }

    pub fn find(&self, peer: PeerId) -> Option<Path> {
        self.paths.iter().copied().find(|p| p.peer == peer)
    }

    /// What the Loc-RIB shows of this prefix: the best path and the ECMP
    /// set, to tell whether a change is visible outside.
    pub fn signature(&self) -> Signature {
        Signature(self.ecmp_set().iter().map(|p| (p.peer, p.attr)).collect())
    }
}

/// The best path and ECMP set of a prefix, for change detection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature(pub Vec<(PeerId, AttrId)>);

/// What [`Table::upsert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upserted {
    /// The prefix has this one path; `old` is the path it replaced.
    Single { old: Option<Path> },
    /// The prefix has several paths: selection must run. `old` is the
    /// replaced path of the same peer; `before` what the Loc-RIB showed.
    Multi {
        old: Option<Path>,
        before: Signature,
    },
}

/// What [`Table::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Nothing,
    /// The prefix had only this path and is gone.
    Last(Path),
    /// Other paths remain: selection must run.
    OneOf {
        old: Path,
        before: Signature,
    },
}

#[derive(Debug, Default)]
pub struct Table {
    /// Empty until the first IPv4 prefix, then 65,536 entries: 0 for a
    /// bucket never used, else 1 + the bucket's index in `v4`.
    v4_at: Vec<u32>,
    /// The IPv4 buckets ever used, in the order of first use.
    v4: Vec<Bucket>,
    v6: BTreeMap<(u128, u8), Slot>,
    multi: Vec<Multi>,
    multi_free: Vec<u32>,
    n4: usize,
}

const BUCKETS: usize = 1 << 16;

/// Above this many prefixes a bucket turns from a sorted vector into a
/// B-tree: inserting into a sorted vector shifts what follows, so a peer
/// sending a dense /16 (up to 131,070 prefixes) in descending order would
/// cost quadratic time, seconds on the RIB's thread. Below it the vector
/// is smaller and faster; an insert shifts at most 24 KB.
const FLAT_MAX: usize = 2048;

/// The IPv4 prefixes of one /16, keyed by `(low 16 bits << 8 | length)`.
#[derive(Debug)]
enum Bucket {
    Flat(Vec<(u32, Slot)>),
    Tree(BTreeMap<u32, Slot>),
}

impl Bucket {
    fn get(&self, k: u32) -> Option<&Slot> {
        match self {
            Bucket::Flat(v) => v
                .binary_search_by_key(&k, |e| e.0)
                .ok()
                .and_then(|i| v.get(i).map(|e| &e.1)),
            Bucket::Tree(m) => m.get(&k),
        }
    }

    fn get_mut(&mut self, k: u32) -> Option<&mut Slot> {
        match self {
            Bucket::Flat(v) => match v.binary_search_by_key(&k, |e| e.0) {
                Ok(i) => v.get_mut(i).map(|e| &mut e.1),
                Err(_) => None,
            },
            Bucket::Tree(m) => m.get_mut(&k),
        }
    }

    /// The slot at `k` if there is one; else inserts `s` and returns
    /// `None`. One search either way.
    fn get_or_insert(&mut self, k: u32, s: Slot) -> Option<Slot> {
        match self {
            Bucket::Flat(v) => match v.binary_search_by_key(&k, |e| e.0) {
                Ok(i) => v.get(i).map(|e| e.1),
                Err(i) => {
                    if v.len() < FLAT_MAX {
                        v.insert(i, (k, s));
                    } else {
                        let mut m: BTreeMap<u32, Slot> = std::mem::take(v).into_iter().collect();
                        m.insert(k, s);
                        *self = Bucket::Tree(m);
                    }
                    None
                }
            },
            Bucket::Tree(m) => match m.entry(k) {
                std::collections::btree_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(s);
                    None
                }
            },
        }
    }

    /// Removes the prefix at `k`, giving memory back as the bucket shrinks.
    fn remove(&mut self, k: u32) -> Option<Slot> {
        let (gone, left) = match self {
            Bucket::Flat(v) => {
                let i = v.binary_search_by_key(&k, |e| e.0).ok()?;
                let (_, s) = v.remove(i);
                if v.capacity() > 16 && v.len() <= v.capacity() / 4 {
                    v.shrink_to(v.len() * 2);
                }
                (s, v.len())
            }
            Bucket::Tree(m) => {
                let s = m.remove(&k)?;
                if m.len() <= FLAT_MAX / 4 {
                    *self = Bucket::Flat(std::mem::take(m).into_iter().collect());
                }
                (s, self.len())
            }
        };
        if left == 0 {
            *self = Bucket::Flat(Vec::new());
        }
        Some(gone)
    }

    fn len(&self) -> usize {
        match self {
            Bucket::Flat(v) => v.len(),
            Bucket::Tree(m) => m.len(),
        }
    }

    /// The first prefix at or after key `k`.
    fn next_from(&self, k: u32) -> Option<(u32, &Slot)> {
        match self {
            Bucket::Flat(v) => v.get(v.partition_point(|e| e.0 < k)).map(|e| (e.0, &e.1)),
            Bucket::Tree(m) => m.range(k..).next().map(|(k, s)| (*k, s)),
        }
    }

    fn for_each_slot_mut(&mut self, mut f: impl FnMut(&mut Slot)) {
        match self {
            Bucket::Flat(v) => v.iter_mut().for_each(|e| f(&mut e.1)),
            Bucket::Tree(m) => m.values_mut().for_each(f),
        }
    }
}

fn v4_key(n: Ipv4Network) -> (usize, u32) {
    let a = u32::from(n.network());
    (
        (a >> 16) as usize,
        ((a & 0xffff) << 8) | u32::from(n.prefix()),
    )
}

fn v4_net(bucket: usize, key: u32) -> IpNetwork {
    let addr = ((bucket as u32) << 16) | (key >> 8);
    let len = (key & 0xff) as u8;
    IpNetwork::V4(
        Ipv4Network::new(Ipv4Addr::from(addr), len.min(32))
            .unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::UNSPECIFIED)),
    )
}

fn v6_key(n: Ipv6Network) -> (u128, u8) {
    (u128::from(n.network()), n.prefix())
}

fn v6_net(k: (u128, u8)) -> IpNetwork {
    IpNetwork::V6(
        Ipv6Network::new(Ipv6Addr::from(k.0), k.1.min(128))
            .unwrap_or_else(|_| Ipv6Network::from(Ipv6Addr::UNSPECIFIED)),
    )
}

/// Asks the CPU to start loading the cache line at `p`. A hint only.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and architecturally reads nothing,
    // whatever the address; SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Table {
    fn bucket(&self, b: usize) -> Option<&Bucket> {
        let at = *self.v4_at.get(b)? as usize;
        self.v4.get(at.wrapping_sub(1))
    }

    fn bucket_mut(&mut self, b: usize) -> Option<&mut Bucket> {
        let at = *self.v4_at.get(b)? as usize;
        self.v4.get_mut(at.wrapping_sub(1))
    }

    fn bucket_or_new(&mut self, b: usize) -> &mut Bucket {
        if self.v4_at.is_empty() {
            // Zeroed: mapped fresh, resident only where written.
            self.v4_at = vec![0; BUCKETS];
        }
        if self.v4_at[b] == 0 {
            self.v4.push(Bucket::Flat(Vec::new()));
            self.v4_at[b] = self.v4.len() as u32;
        }
        let at = self.v4_at[b] as usize - 1;
        &mut self.v4[at]
    }

    /// Starts loading what looking up the IPv4 prefixes of `nets` will
    /// touch (bucket headers, then bucket contents), so the cache misses
    /// of a group of lookups overlap instead of queueing one behind the
    /// other. With prefixes scattered over the address space every lookup
    /// misses more than once; a group of 32 prefetched first runs about
    /// twice as fast. Changes nothing.
    pub fn prefetch(&self, nets: &[IpNetwork]) {
        if self.v4_at.is_empty() {
            return;
        }
        let at = self.v4_at.as_ptr();
        for n in nets {
            if let IpNetwork::V4(n) = n {
                prefetch(at.wrapping_add(v4_key(*n).0));
            }
        }
        let buckets = self.v4.as_ptr();
        for n in nets {
            if let IpNetwork::V4(n) = n {
                let i = self.v4_at[v4_key(*n).0] as usize;
                prefetch(buckets.wrapping_add(i.wrapping_sub(1)));
            }
        }
        for n in nets {
            if let IpNetwork::V4(n) = n
                && let Some(Bucket::Flat(bucket)) = self.bucket(v4_key(*n).0)
            {
                let bytes = bucket.len() * std::mem::size_of::<(u32, Slot)>();
                let start = bucket.as_ptr().cast::<u8>();
                for off in (0..bytes.min(512)).step_by(64) {
                    prefetch(start.wrapping_add(off));
                }
            }
        }
    }

    pub fn len_v4(&self) -> usize {
        self.n4
    }

    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    pub fn len(&self) -> usize {
        self.n4 + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn paths_of<'a>(&'a self, s: &'a Slot) -> Paths<'a> {
        if s.0.peer == PeerId::MULTI {
            match self.multi.get(s.0.attr.0 as usize) {
                Some(m) if !m.paths.is_empty() => {
                    return Paths {
                        paths: &m.paths,
                        ecmp: m.ecmp,
                    };
                }
                // Unreachable by construction; an empty view is safe.
                _ => {
                    return Paths {
                        paths: &[],
                        ecmp: 0,
                    };
                }
            }
        }
        Paths {
            paths: std::slice::from_ref(&s.0),
            ecmp: 1,
        }
    }

    fn slot(&self, net: &IpNetwork) -> Option<&Slot> {
        match net {
            IpNetwork::V4(n) => {
                let (b, k) = v4_key(*n);
                self.bucket(b)?.get(k)
            }
            IpNetwork::V6(n) => self.v6.get(&v6_key(*n)),
        }
    }

    fn slot_mut(&mut self, net: &IpNetwork) -> Option<&mut Slot> {
        match net {
            IpNetwork::V4(n) => {
                let (b, k) = v4_key(*n);
                self.bucket_mut(b)?.get_mut(k)
            }
            IpNetwork::V6(n) => self.v6.get_mut(&v6_key(*n)),
        }
    }

    pub fn get(&self, net: &IpNetwork) -> Option<Paths<'_>> {
        self.slot(net)
            .map(|s| self.paths_of(s))
            .filter(|p| !p.paths.is_empty())
    }

    fn new_multi(&mut self, paths: Vec<Path>) -> Slot {
        let m = Multi { paths, ecmp: 1 };
        let i = match self.multi_free.pop() {
            Some(i) => {
                self.multi[i as usize] = m;
                i
            }
            None => {
                self.multi.push(m);
                (self.multi.len() - 1) as u32
            }
        };
        Slot(Path {
            attr: AttrId(i),
            peer: PeerId::MULTI,
            flags: 0,
        })
    }

    /// Adds or replaces the path of `path.peer` for `net`.
    pub fn upsert(&mut self, net: IpNetwork, path: Path) -> Upserted {
        let slot = match net {
            IpNetwork::V4(n) => {
                let (b, k) = v4_key(n);
                match self.bucket_or_new(b).get_or_insert(k, Slot(path)) {
                    Some(s) => s,
                    None => {
                        self.n4 += 1;
                        return Upserted::Single { old: None };
                    }
                }
            }
            IpNetwork::V6(n) => match self.v6.entry(v6_key(n)) {
                std::collections::btree_map::Entry::Occupied(e) => *e.get(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Slot(path));
                    return Upserted::Single { old: None };
                }
            },
        };
        if slot.0.peer == path.peer {
            if let Some(s) = self.slot_mut(&net) {
                *s = Slot(path);
            }
            return Upserted::Single { old: Some(slot.0) };
        }
        if slot.0.peer != PeerId::MULTI {
            let before = Signature(vec![(slot.0.peer, slot.0.attr)]);
            let new = self.new_multi(vec![slot.0, path]);
            if let Some(s) = self.slot_mut(&net) {
                *s = new;
            }
            return Upserted::Multi { old: None, before };
        }
        let before = self.paths_of(&slot).signature();
        let Some(m) = self.multi.get_mut(slot.0.attr.0 as usize) else {
            return Upserted::Multi { old: None, before };
        };
        let old = match m.paths.iter_mut().find(|p| p.peer == path.peer) {
            Some(p) => Some(std::mem::replace(p, path)),
            None => {
                m.paths.push(path);
                None
            }
        };
        Upserted::Multi { old, before }
    }

    /// Removes the path of `peer` for `net`.
    pub fn remove(&mut self, net: &IpNetwork, peer: PeerId) -> Removed {
        // The common case, the only path of an IPv4 prefix, in one search.
        if let IpNetwork::V4(n) = net {
            let (b, k) = v4_key(*n);
            let Some(bucket) = self.bucket_mut(b) else {
                return Removed::Nothing;
            };
            let Some(slot) = bucket.get(k).copied() else {
                return Removed::Nothing;
            };
            if slot.0.peer == peer {
                bucket.remove(k);
                self.n4 -= 1;
                return Removed::Last(slot.0);
            }
            if slot.0.peer != PeerId::MULTI {
                return Removed::Nothing;
            }
            return self.remove_from_multi(net, slot, peer);
        }
        let Some(slot) = self.slot(net).copied() else {
            return Removed::Nothing;
        };
        if slot.0.peer == peer {
            self.delete(net);
            return Removed::Last(slot.0);
        }
        if slot.0.peer != PeerId::MULTI {
            return Removed::Nothing;
        }
        self.remove_from_multi(net, slot, peer)
    }

    fn remove_from_multi(&mut self, net: &IpNetwork, slot: Slot, peer: PeerId) -> Removed {
        let idx = slot.0.attr.0 as usize;
        let before = self.paths_of(&slot).signature();
        let Some(m) = self.multi.get_mut(idx) else {
            return Removed::Nothing;
        };
        let Some(pos) = m.paths.iter().position(|p| p.peer == peer) else {
            return Removed::Nothing;
        };
        let old = m.paths.remove(pos);
        if pos < m.ecmp {
            m.ecmp -= 1;
        }
        m.ecmp = m.ecmp.max(1);
        if m.paths.len() == 1 {
            let only = m.paths[0];
            self.multi[idx] = Multi::default();
            self.multi_free.push(idx as u32);
            if let Some(s) = self.slot_mut(net) {
                *s = Slot(only);
            }
        }
        Removed::OneOf { old, before }
    }

    fn delete(&mut self, net: &IpNetwork) {
        match net {
            IpNetwork::V4(n) => {
                let (b, k) = v4_key(*n);
                if let Some(bucket) = self.bucket_mut(b)
                    && bucket.remove(k).is_some()
                {
                    self.n4 -= 1;
                }
            }
            IpNetwork::V6(n) => {
                self.v6.remove(&v6_key(*n));
            }
        }
    }

    /// Puts the paths of `net` in the order selection chose: `order` lists
    /// path indices, best first; the first `ecmp` are the ECMP set.
    pub fn reorder(&mut self, net: &IpNetwork, order: &[usize], ecmp: usize) {
        let Some(slot) = self.slot(net).copied() else {
            return;
        };
        if slot.0.peer != PeerId::MULTI {
            return;
        }
        if let Some(m) = self.multi.get_mut(slot.0.attr.0 as usize)
            && order.len() == m.paths.len()
        {
            let sorted: Vec<Path> = order
                .iter()
                .filter_map(|&i| m.paths.get(i).copied())
                .collect();
            if sorted.len() == m.paths.len() {
                m.paths = sorted;
                m.ecmp = ecmp.clamp(1, m.paths.len());
            }
        }
    }

    /// Sets or clears flag bits on the path of `peer` for `net`.
    pub fn set_flags(&mut self, net: &IpNetwork, peer: PeerId, flags: u8, on: bool) {
        let Some(slot) = self.slot_mut(net) else {
            return;
        };
        let apply = |p: &mut Path| {
            if on {
                p.flags |= flags;
            } else {
                p.flags &= !flags;
            }
        };
        if slot.0.peer == peer {
            apply(&mut slot.0);
            return;
        }
        if slot.0.peer == PeerId::MULTI {
            let idx = slot.0.attr.0 as usize;
            if let Some(p) = self
                .multi
                .get_mut(idx)
                .and_then(|m| m.paths.iter_mut().find(|p| p.peer == peer))
            {
                apply(p);
            }
        }
    }

    /// Sets `flag` on every path of `peer` in `family`, in one pass;
    /// returns how many paths had it newly set.
    pub fn flag_peer(&mut self, peer: PeerId, family: Family, flag: u8) -> usize {
        let multi = &mut self.multi;
        let mut n = 0;
        let mut visit = |slot: &mut Slot| {
            let p = if slot.0.peer == PeerId::MULTI {
                multi
                    .get_mut(slot.0.attr.0 as usize)
                    .and_then(|m| m.paths.iter_mut().find(|p| p.peer == peer))
            } else if slot.0.peer == peer {
                Some(&mut slot.0)
            } else {
                None
            };
            if let Some(p) = p
                && p.flags & flag == 0
            {
                p.flags |= flag;
                n += 1;
            }
        };
        match family {
            Family::Ipv4Unicast => {
                for bucket in &mut self.v4 {
                    bucket.for_each_slot_mut(&mut visit);
                }
            }
            Family::Ipv6Unicast => {
                for slot in self.v6.values_mut() {
                    visit(slot);
                }
            }
        }
        n
    }

    /// Prefixes in address order (IPv4 first), starting after `after`.
    pub fn iter_after(&self, after: Option<IpNetwork>) -> Iter<'_> {
        let (bucket, from, v6_from) = match after {
            None => (0, 0, Bound::Unbounded),
            Some(IpNetwork::V4(n)) => {
                // Keys stay below 2^24, so the next one never overflows.
                let (b, k) = v4_key(n);
                (b, k + 1, Bound::Unbounded)
            }
            Some(IpNetwork::V6(n)) => (BUCKETS, 0, Bound::Excluded(v6_key(n))),
        };
        Iter {
            t: self,
            bucket,
            from,
            v6: self.v6.range((v6_from, Bound::Unbounded)),
        }
    }
}

pub struct Iter<'a> {
    t: &'a Table,
    bucket: usize,
    /// The next key to look at in `bucket` (a key, not a position, so a
    /// bucket's representation does not matter).
    from: u32,
    v6: std::collections::btree_map::Range<'a, (u128, u8), Slot>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (IpNetwork, Paths<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.bucket < self.t.v4_at.len() {
            if let Some((k, s)) = self
                .t
                .bucket(self.bucket)
                .and_then(|v| v.next_from(self.from))
            {
                self.from = k + 1;
                return Some((v4_net(self.bucket, k), self.t.paths_of(s)));
            }
            self.bucket += 1;
            self.from = 0;
        }
        let (k, s) = self.v6.next()?;
        Some((v6_net(*k), self.t.paths_of(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn p(peer: u16, attr: u32) -> Path {
        Path::new(PeerId(peer), AttrId(attr))
    }

    #[test]
    fn a_path_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Path>(), 8);
        assert_eq!(std::mem::size_of::<(u32, Slot)>(), 12);
    }

    #[test]
    fn single_path_inserts_replaces_and_removes() {
        let mut t = Table::default();
        assert_eq!(
            t.upsert(net("10.1.0.0/16"), p(1, 5)),
            Upserted::Single { old: None }
        );
        assert_eq!(
            t.upsert(net("10.1.0.0/16"), p(1, 6)),
            Upserted::Single { old: Some(p(1, 5)) }
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(&net("10.1.0.0/16"), PeerId(2)), Removed::Nothing);
        assert_eq!(
            t.remove(&net("10.1.0.0/16"), PeerId(1)),
            Removed::Last(p(1, 6))
        );
        assert!(t.is_empty());
    }

    #[test]
    fn second_peer_makes_a_multi_entry_that_collapses_back() {
        let mut t = Table::default();
        let n = net("fd00:1::/64");
        t.upsert(n, p(1, 5));
        let u = t.upsert(n, p(2, 7));
        assert_eq!(
            u,
            Upserted::Multi {
                old: None,
                before: Signature(vec![(PeerId(1), AttrId(5))])
            }
        );
        t.reorder(&n, &[1, 0], 2);
        let paths = t.get(&n).unwrap();
        assert_eq!(paths.best(), p(2, 7));
        assert_eq!(paths.ecmp_set().len(), 2);
        assert!(matches!(
            t.remove(&n, PeerId(2)),
            Removed::OneOf { old, .. } if old == p(2, 7)
        ));
        let paths = t.get(&n).unwrap();
        assert_eq!(paths.paths, &[p(1, 5)]);
        assert_eq!(t.multi_free.len(), 1);
    }

    #[test]
    fn iteration_is_in_address_order_and_resumes_after_a_prefix() {
        let mut t = Table::default();
        for s in [
            "10.2.0.0/16",
            "10.1.0.0/24",
            "10.1.0.0/16",
            "fd00::/64",
            "1.0.0.0/8",
            "10.1.0.128/25",
        ] {
            t.upsert(net(s), p(1, 1));
        }
        let all: Vec<String> = t.iter_after(None).map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            all,
            [
                "1.0.0.0/8",
                "10.1.0.0/16",
                "10.1.0.0/24",
                "10.1.0.128/25",
                "10.2.0.0/16",
                "fd00::/64"
            ]
        );
        let mut sorted: Vec<IpNetwork> = all.iter().map(|s| net(s)).collect();
        sorted.sort();
        assert_eq!(
            sorted.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            all,
            "table order is IpNetwork order"
        );
        let rest: Vec<String> = t
            .iter_after(Some(net("10.1.0.0/24")))
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(rest, ["10.1.0.128/25", "10.2.0.0/16", "fd00::/64"]);
        let rest: Vec<String> = t
            .iter_after(Some(net("10.1.0.5/32")))
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(rest[0], "10.1.0.128/25", "resumes after a removed key");
        assert_eq!(t.iter_after(Some(net("fd00::/64"))).count(), 0);
    }

    /// Every prefix inside 10.65.0.0/16 (/17 to /32: 131,070 of them, one
    /// bucket), in address order or its reverse.
    fn dense(descending: bool) -> Vec<IpNetwork> {
        let mut v: Vec<IpNetwork> = (17..=32u8)
            .flat_map(|len| {
                let step = 1u32 << (32 - len);
                (0..(1u32 << (len - 16))).map(move |i| {
                    IpNetwork::V4(
                        Ipv4Network::new(Ipv4Addr::from(0x0a41_0000 + i * step), len).unwrap(),
                    )
                })
            })
            .collect();
        v.sort();
        if descending {
            v.reverse();
        }
        v
    }

    fn fill(t: &mut Table, nets: &[IpNetwork]) -> std::time::Duration {
        let start = std::time::Instant::now();
        for n in nets {
            t.upsert(*n, p(1, 1));
        }
        start.elapsed()
    }

    #[test]
    fn a_dense_bucket_filled_in_descending_order_costs_no_more_than_ascending() {
        // Issue 19 item 8: with one sorted vector per /16, each descending
        // insert shifted the whole bucket (quadratic: seconds for 65,536
        // /32s on the thread that also sends keepalives).
        let mut up = Table::default();
        let asc = fill(&mut up, &dense(false));
        let mut down = Table::default();
        let desc = fill(&mut down, &dense(true));
        assert_eq!(down.len(), 131_070);
        assert!(
            desc < asc * 4 + std::time::Duration::from_millis(200),
            "descending {desc:?} against ascending {asc:?}"
        );
        // Same content, same order, same lookups either way.
        assert!(
            up.iter_after(None)
                .map(|(n, _)| n)
                .eq(down.iter_after(None).map(|(n, _)| n))
        );
        let mid = net("10.65.128.7/32");
        assert!(down.get(&mid).is_some());
        let after: Vec<IpNetwork> = down.iter_after(Some(mid)).take(2).map(|(n, _)| n).collect();
        assert_eq!(after, vec![net("10.65.128.8/29"), net("10.65.128.8/30")]);
        // And it empties again (in the other order).
        for n in dense(false) {
            assert!(matches!(down.remove(&n, PeerId(1)), Removed::Last(_)));
        }
        assert!(down.is_empty());
        assert_eq!(down.iter_after(None).count(), 0);
    }

    #[test]
    fn host_bits_do_not_make_a_different_prefix() {
        let mut t = Table::default();
        t.upsert(net("10.1.2.3/16"), p(1, 1));
        assert!(t.get(&net("10.1.0.0/16")).is_some());
    }

    #[test]
    fn flags_follow_the_peer_in_single_and_multi_entries() {
        let mut t = Table::default();
        let n = net("10.1.0.0/16");
        t.upsert(n, p(1, 1));
        t.set_flags(&n, PeerId(1), STALE, true);
        assert!(t.get(&n).unwrap().best().stale());
        t.upsert(n, p(2, 2));
        t.set_flags(&n, PeerId(2), STALE, true);
        t.set_flags(&n, PeerId(1), STALE, false);
        let paths = t.get(&n).unwrap();
        assert!(!paths.find(PeerId(1)).unwrap().stale());
        assert!(paths.find(PeerId(2)).unwrap().stale());
    }

    #[test]
    fn flag_peer_marks_one_peer_in_one_family() {
        let mut t = Table::default();
        t.upsert(net("10.1.0.0/16"), p(1, 1));
        t.upsert(net("10.2.0.0/16"), p(1, 1));
        t.upsert(net("10.2.0.0/16"), p(2, 1));
        t.upsert(net("fd00::/64"), p(1, 1));
        assert_eq!(t.flag_peer(PeerId(1), Family::Ipv4Unicast, STALE), 2);
        assert_eq!(t.flag_peer(PeerId(1), Family::Ipv4Unicast, STALE), 0);
        assert!(!t.get(&net("fd00::/64")).unwrap().best().stale());
        assert!(
            !t.get(&net("10.2.0.0/16"))
                .unwrap()
                .find(PeerId(2))
                .unwrap()
                .stale()
        );
    }
}
