//! Interned path attribute sets.
//!
//! A table of a million prefixes typically carries a few thousand distinct
//! attribute sets (one per UPDATE at most, far fewer once identical ones
//! are merged), so a path stores a 4-byte [`AttrId`] instead of a pointer
//! and the set itself lives here once, with a reference count of the paths
//! using it. Ids are reused after their set is freed.
//!
//! Each slot also keeps the [`Rank`]: the values best-path selection
//! compares, extracted once per set instead of once per comparison.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::packet::attributes::PathAttrs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrId(pub u32);

/// What best-path selection reads from an attribute set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank {
    pub local_pref: Option<u32>,
    pub as_path_len: u32,
    pub origin: u8,
    /// A missing MED is the lowest possible value (RFC 4271 section
    /// 9.1.2.2 (c)).
    pub med: u32,
    /// The leftmost AS of the path: whose MEDs are comparable. `None` for
    /// an empty path (a route from inside our AS).
    pub neighbor_as: Option<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list_len: u32,
}

impl Rank {
    pub fn of(a: &PathAttrs) -> Rank {
        Rank {
            local_pref: a.local_pref,
            as_path_len: u32::try_from(a.as_path.count()).unwrap_or(u32::MAX),
            origin: a.origin as u8,
            med: a.med.unwrap_or(0),
            neighbor_as: a.as_path.first_as(),
            originator_id: a.originator_id,
            cluster_list_len: u32::try_from(a.cluster_list.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug)]
struct Slot {
    attrs: Arc<PathAttrs>,
    rank: Rank,
    refs: u32,
}

#[derive(Debug, Default)]
pub struct AttrStore {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    index: HashMap<Arc<PathAttrs>, u32>,
}

impl AttrStore {
    /// The id of `attrs`, adding the set if it is new. A new set starts
    /// with no references: call [`AttrStore::retain`] per path that uses it
    /// and [`AttrStore::release_if_unused`] when done.
    pub fn intern(&mut self, attrs: Arc<PathAttrs>) -> AttrId {
        if let Some(&id) = self.index.get(&attrs) {
            return AttrId(id);
        }
        let slot = Slot {
            rank: Rank::of(&attrs),
            attrs: attrs.clone(),
            refs: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(attrs, id);
        AttrId(id)
    }

    fn slot(&self, id: AttrId) -> Option<&Slot> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    pub fn get(&self, id: AttrId) -> Option<&Arc<PathAttrs>> {
        self.slot(id).map(|s| &s.attrs)
    }

    pub fn rank(&self, id: AttrId) -> Option<Rank> {
        self.slot(id).map(|s| s.rank)
    }

    pub fn retain(&mut self, id: AttrId) {
        if let Some(Some(s)) = self.slots.get_mut(id.0 as usize) {
            s.refs += 1;
        }
    }

    /// Drops one reference; the set is freed with its last one.
    pub fn release(&mut self, id: AttrId) {
        if let Some(Some(s)) = self.slots.get_mut(id.0 as usize) {
            s.refs = s.refs.saturating_sub(1);
        }
        self.release_if_unused(id);
    }

    pub fn release_if_unused(&mut self, id: AttrId) {
        let i = id.0 as usize;
        if let Some(Some(s)) = self.slots.get(i)
            && s.refs == 0
            && let Some(s) = self.slots[i].take()
        {
            self.index.remove(&s.attrs);
            self.free.push(id.0);
        }
    }

    /// Number of distinct sets in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::aspath::AsPath;

    fn attrs(asn: u32) -> Arc<PathAttrs> {
        Arc::new(PathAttrs {
            as_path: AsPath::sequence([asn]),
            ..Default::default()
        })
    }

    #[test]
    fn identical_sets_share_one_id_and_are_freed_with_their_last_path() {
        let mut s = AttrStore::default();
        let a = s.intern(attrs(1));
        assert_eq!(s.intern(attrs(1)), a);
        s.retain(a);
        s.retain(a);
        s.release(a);
        assert!(s.get(a).is_some());
        s.release(a);
        assert!(s.get(a).is_none());
        assert!(s.is_empty());
        // The id is reused.
        let b = s.intern(attrs(2));
        assert_eq!(b, a);
        assert_eq!(s.rank(b).unwrap().neighbor_as, Some(2));
    }

    #[test]
    fn unused_new_set_is_dropped_by_release_if_unused() {
        let mut s = AttrStore::default();
        let a = s.intern(attrs(1));
        s.release_if_unused(a);
        assert!(s.is_empty());
    }
}
