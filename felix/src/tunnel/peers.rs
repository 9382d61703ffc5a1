//! The userspace tunnel's forwarding table. When the kernel hands a packet
//! to the TUN device, the route's gateway (the remote node) is lost; the
//! tunnel finds it again by a longest-prefix match of the inner
//! destination over the remote blocks. The same table says which node
//! addresses may send IP-in-IP to this node: Calico only accepts IP-in-IP
//! from known hosts, so a packet from anyone else is dropped, never
//! decapsulated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnetwork::Ipv4Network;

/// An immutable snapshot; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTable {
    /// (prefix length, masked network → node), longest prefix first. Pools
    /// use one or two block sizes, so this is one or two hash lookups.
    by_len: Vec<(u8, HashMap<u32, u32>)>,
    nodes: HashSet<u32>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl PeerTable {
    /// Builds the table from remote block → node address.
    pub fn new(blocks: &BTreeMap<Ipv4Network, Ipv4Addr>) -> PeerTable {
        let mut by_len: BTreeMap<u8, HashMap<u32, u32>> = BTreeMap::new();
        let mut nodes = HashSet::new();
        for (block, node) in blocks {
            let len = block.prefix();
            by_len
                .entry(len)
                .or_default()
                .insert(u32::from(block.network()) & mask(len), u32::from(*node));
            nodes.insert(u32::from(*node));
        }
        PeerTable {
            by_len: by_len.into_iter().rev().collect(),
            nodes,
        }
    }

    /// The node owning the longest block that contains `dst`.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<u32> {
        self.by_len
            .iter()
            .find_map(|(len, m)| m.get(&(dst & mask(*len))).copied())
    }

    /// Whether `src` is a node this node exchanges IP-in-IP with.
    #[inline]
    pub fn is_node(&self, src: u32) -> bool {
        self.nodes.contains(&src)
    }

    /// The node addresses, in order.
    pub fn nodes(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        self.nodes.iter().map(|n| Ipv4Addr::from(*n)).collect()
    }

    pub fn blocks(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }
}

/// The current table, shared between the dataplane (writer) and the
/// tunnel's threads (readers, which check the generation once per batch
/// and only take the lock when it moved).
#[derive(Debug, Default)]
pub struct SharedPeers {
    generation: AtomicU64,
    table: RwLock<Arc<PeerTable>>,
}

impl SharedPeers {
    pub fn set(&self, table: PeerTable) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        *t = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self) -> Arc<PeerTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A reader's cached view of [`SharedPeers`].
#[derive(Debug)]
pub struct PeersView {
    shared: Arc<SharedPeers>,
    seen: u64,
    table: Arc<PeerTable>,
}

impl PeersView {
    pub fn new(shared: Arc<SharedPeers>) -> PeersView {
        let seen = shared.generation();
        let table = shared.get();
        PeersView {
            shared,
            seen,
            table,
        }
    }

    /// The latest table (cheap when nothing changed).
    #[inline]
    pub fn refresh(&mut self) -> &PeerTable {
        let g = self.shared.generation();
        if g != self.seen {
            self.seen = g;
            self.table = self.shared.get();
        }
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn table(entries: &[(&str, &str)]) -> PeerTable {
        PeerTable::new(
            &entries
                .iter()
                .map(|(b, n)| (b.parse().unwrap(), n.parse().unwrap()))
                .collect(),
        )
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[
            ("10.65.0.0/16", "172.30.0.1"),
            ("10.65.1.0/26", "172.30.1.1"),
        ]);
        assert_eq!(t.lookup(ip("10.65.1.5")), Some(ip("172.30.1.1")));
        assert_eq!(t.lookup(ip("10.65.1.64")), Some(ip("172.30.0.1")));
        assert_eq!(t.lookup(ip("10.66.0.1")), None);
        assert_eq!(t.blocks(), 2);
    }

    #[test]
    fn only_owning_nodes_are_known() {
        let t = table(&[("10.65.1.0/26", "172.30.1.1")]);
        assert!(t.is_node(ip("172.30.1.1")));
        assert!(!t.is_node(ip("172.30.1.2")));
        assert!(!PeerTable::default().is_node(ip("172.30.1.1")));
    }

    #[test]
    fn view_follows_updates() {
        let shared = Arc::new(SharedPeers::default());
        let mut v = PeersView::new(shared.clone());
        assert_eq!(v.refresh().lookup(ip("10.65.1.1")), None);
        shared.set(table(&[("10.65.1.0/26", "172.30.1.1")]));
        assert_eq!(v.refresh().lookup(ip("10.65.1.1")), Some(ip("172.30.1.1")));
    }
}
