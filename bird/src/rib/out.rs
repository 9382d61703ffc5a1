//! One peer's Adj-RIB-Out: what was sent, and what is still to send.
//!
//! The RIB task writes the latest decision for a prefix (`set`); the
//! connection's writer task takes batches (`take`) when the socket can
//! take more. Both only hold the mutex for a map operation or a bounded
//! batch, so the RIB task never waits for a slow peer: while the peer is
//! not reading, changes pile up here, and several changes of one prefix
//! collapse into the last one. A prefix whose decision returns to what was
//! last sent leaves the pending set without being sent at all.
//!
//! Attribute sets are interned per peer, so a thousand prefixes sent with
//! the same attributes share one allocation and are packed into the same
//! UPDATEs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ipnetwork::IpNetwork;
use tokio::sync::Notify;

use crate::packet::Family;
use crate::packet::attributes::PathAttrs;
use crate::packet::update;

#[derive(Debug, Default)]
pub struct OutState {
    /// The session the content belongs to; 0 when there is none.
    generation: u64,
    four_octet_as: bool,
    sent: HashMap<IpNetwork, Arc<PathAttrs>>,
    pending: HashMap<IpNetwork, Option<Arc<PathAttrs>>>,
    interned: HashSet<Arc<PathAttrs>>,
    /// End-of-RIB markers to send once `pending` is empty.
    eor: Vec<Family>,
    /// End-of-RIB is held back until the RIB has converged after start-up.
    eor_hold: bool,
}

impl OutState {
    /// Starts a new session: nothing sent yet.
    pub fn reset(&mut self, generation: u64, four_octet_as: bool) {
        *self = OutState {
            generation,
            four_octet_as,
            ..OutState::default()
        };
    }

    /// The session ended.
    pub fn clear(&mut self) {
        self.reset(0, false);
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records the latest decision for `net`: send these attributes, or
    /// (`None`) do not advertise it.
    pub fn set(&mut self, net: IpNetwork, attrs: Option<PathAttrs>) {
        if self.generation == 0
            || (attrs.is_none() && self.sent.is_empty() && self.pending.is_empty())
        {
            return;
        }
        let attrs = attrs.map(|a| self.intern(a));
        let same = match (&attrs, self.sent.get(&net)) {
            (None, None) => true,
            (Some(a), Some(s)) => Arc::ptr_eq(a, s),
            _ => false,
        };
        if same {
            self.pending.remove(&net);
        } else {
            self.pending.insert(net, attrs);
        }
    }

    fn intern(&mut self, a: PathAttrs) -> Arc<PathAttrs> {
        if let Some(x) = self.interned.get(&a) {
            return x.clone();
        }
        let x = Arc::new(a);
        self.interned.insert(x.clone());
        x
    }

    /// Queue End-of-RIB for `families` after the current pending set.
    pub fn end_of_rib(&mut self, families: &[Family], hold: bool) {
        self.eor = families.to_vec();
        self.eor_hold = hold;
    }

    /// One more End-of-RIB after what is pending (after a route refresh;
    /// RFC 2918 does not ask for it, but it tells the peer the refresh is
    /// complete, as RFC 7313's End-of-RIB-Refresh would).
    pub fn add_end_of_rib(&mut self, family: Family) {
        if !self.eor.contains(&family) {
            self.eor.push(family);
        }
    }

    pub fn release_end_of_rib(&mut self) {
        self.eor_hold = false;
    }

    pub fn advertised(&self) -> usize {
        self.sent.len()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn is_sent(&self, net: &IpNetwork) -> Option<&Arc<PathAttrs>> {
        self.sent.get(net)
    }

    pub fn sent_prefixes(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.sent.keys().copied()
    }

    /// Forgets that `nets` were sent, so they are sent again (the peer
    /// asked for a ROUTE-REFRESH).
    pub fn forget(&mut self, nets: &[IpNetwork]) {
        for n in nets {
            self.sent.remove(n);
        }
    }

    fn collect_garbage(&mut self) {
        let live = self.sent.len() + self.pending.len();
        if self.interned.len() > 64 && self.interned.len() > 2 * live {
            self.interned.retain(|a| Arc::strong_count(a) > 1);
        }
    }

    fn take(&mut self, generation: u64, max: usize) -> Option<OutBatch> {
        if generation == 0 || self.generation != generation {
            return None;
        }
        let routes: Vec<(IpNetwork, Option<Arc<PathAttrs>>)> = if self.pending.len() <= max {
            self.pending.drain().collect()
        } else {
            let keys: Vec<IpNetwork> = self.pending.keys().take(max).copied().collect();
            keys.into_iter()
                .filter_map(|k| self.pending.remove_entry(&k))
                .collect()
        };
        for (net, a) in &routes {
            match a {
                Some(a) => {
                    self.sent.insert(*net, a.clone());
                }
                None => {
                    self.sent.remove(net);
                }
            }
        }
        let end_of_rib = if self.pending.is_empty() && !self.eor_hold {
            std::mem::take(&mut self.eor)
        } else {
            Vec::new()
        };
        self.collect_garbage();
        if routes.is_empty() && end_of_rib.is_empty() {
            return None;
        }
        Some(OutBatch {
            routes,
            end_of_rib,
            four_octet_as: self.four_octet_as,
        })
    }
}

/// Shared between the RIB task and the writer of the peer's connection.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    state: Mutex<OutState>,
    notify: Notify,
}

impl AdjRibOut {
    pub fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the writer: there is something to take.
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Up to `max` pending changes of session `generation`, marked sent.
    pub fn take(&self, generation: u64, max: usize) -> Option<OutBatch> {
        self.lock().take(generation, max)
    }

    pub fn advertised(&self) -> usize {
        self.lock().advertised()
    }
}

/// What the writer sends next.
#[derive(Debug)]
pub struct OutBatch {
    pub routes: Vec<(IpNetwork, Option<Arc<PathAttrs>>)>,
    pub end_of_rib: Vec<Family>,
    pub four_octet_as: bool,
}

impl OutBatch {
    /// UPDATE messages: withdrawals first, then announcements grouped by
    /// attribute set, then End-of-RIB markers. A route that cannot be
    /// encoded (attributes too long for one message) is skipped and
    /// reported.
    pub fn encode(&self) -> (Vec<Bytes>, Vec<update::EncodeError>) {
        let mut msgs = Vec::new();
        let mut errors = Vec::new();
        for family in Family::ALL {
            let withdrawn: Vec<IpNetwork> = self
                .routes
                .iter()
                .filter(|(n, a)| a.is_none() && Family::of(n) == family)
                .map(|(n, _)| *n)
                .collect();
            if !withdrawn.is_empty() {
                msgs.extend(update::encode_withdraw(&withdrawn, family));
            }
            let mut groups: Vec<(&Arc<PathAttrs>, Vec<IpNetwork>)> = Vec::new();
            let mut index: HashMap<*const PathAttrs, usize> = HashMap::new();
            for (n, a) in &self.routes {
                let Some(a) = a else { continue };
                if Family::of(n) != family {
                    continue;
                }
                let i = *index.entry(Arc::as_ptr(a)).or_insert_with(|| {
                    groups.push((a, Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push(*n);
            }
            for (a, mut nets) in groups {
                nets.sort_unstable();
                match update::encode_announce(a, &nets, family, self.four_octet_as) {
                    Ok(m) => msgs.extend(m),
                    Err(e) => errors.push(e),
                }
            }
        }
        for f in &self.end_of_rib {
            msgs.push(update::encode_end_of_rib(*f));
        }
        (msgs, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::aspath::AsPath;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn attrs(asn: u32) -> PathAttrs {
        PathAttrs {
            as_path: AsPath::sequence([asn]),
            next_hop: Some("10.0.0.1".parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn changes_coalesce_and_a_return_to_what_was_sent_cancels() {
        let out = AdjRibOut::default();
        let mut s = out.lock();
        s.reset(1, true);
        s.set(net("10.1.0.0/26"), Some(attrs(1)));
        s.set(net("10.1.0.0/26"), Some(attrs(2)));
        assert_eq!(s.pending(), 1);
        drop(s);
        let b = out.take(1, 100).unwrap();
        assert_eq!(b.routes.len(), 1);
        assert_eq!(
            b.routes[0].1.as_ref().unwrap().as_path,
            AsPath::sequence([2])
        );
        let mut s = out.lock();
        assert_eq!(s.advertised(), 1);
        s.set(net("10.1.0.0/26"), Some(attrs(3)));
        s.set(net("10.1.0.0/26"), Some(attrs(2)));
        assert_eq!(s.pending(), 0, "back to what the peer has");
        // Withdrawing something never sent sends nothing.
        s.set(net("10.9.0.0/26"), None);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_writer_of_another_session_takes_nothing() {
        let out = AdjRibOut::default();
        out.lock().reset(2, true);
        out.lock().set(net("10.1.0.0/26"), Some(attrs(1)));
        assert!(out.take(1, 100).is_none());
        assert!(out.take(2, 100).is_some());
    }

    #[test]
    fn end_of_rib_follows_the_initial_routes_and_waits_while_held() {
        let out = AdjRibOut::default();
        {
            let mut s = out.lock();
            s.reset(1, true);
            for i in 0..10u8 {
                s.set(net(&format!("10.1.{i}.0/24")), Some(attrs(1)));
            }
            s.end_of_rib(&[Family::Ipv4Unicast], true);
        }
        let b = out.take(1, 6).unwrap();
        assert_eq!((b.routes.len(), b.end_of_rib.len()), (6, 0));
        let b = out.take(1, 6).unwrap();
        assert_eq!((b.routes.len(), b.end_of_rib.len()), (4, 0), "held");
        out.lock().release_end_of_rib();
        let b = out.take(1, 6).unwrap();
        assert_eq!((b.routes.len(), b.end_of_rib.len()), (0, 1));
        assert!(out.take(1, 6).is_none());
    }

    #[test]
    fn batch_encodes_withdrawals_and_groups_announcements_by_attributes() {
        let out = AdjRibOut::default();
        {
            let mut s = out.lock();
            s.reset(1, true);
            s.set(net("10.1.0.0/24"), Some(attrs(1)));
            s.set(net("10.2.0.0/24"), Some(attrs(1)));
            s.set(net("10.3.0.0/24"), Some(attrs(2)));
        }
        let (msgs, errs) = out.take(1, 100).unwrap().encode();
        assert!(errs.is_empty());
        assert_eq!(msgs.len(), 2, "one UPDATE per attribute set");
        out.lock().set(net("10.1.0.0/24"), None);
        let (msgs, _) = out.take(1, 100).unwrap().encode();
        assert_eq!(msgs.len(), 1);
        assert_eq!(out.advertised(), 2);
    }
}
