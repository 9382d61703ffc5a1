//! Reads of the table for the control socket and the route stream, in
//! bounded chunks that resume after the last prefix returned, so no
//! caller holds the RIB for long or copies it whole.

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::{PeerId, Rib, StreamRoute, Watcher};
use crate::packet::attributes::PathAttrs;

/// Which rows `rows` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// Only paths from this peer.
    pub peer: Option<IpAddr>,
    /// Only the best path of each prefix.
    pub best_only: bool,
}

/// One path of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub prefix: IpNetwork,
    /// The peer it came from; `None` for our own blocks.
    pub peer: Option<IpAddr>,
    pub attrs: Arc<PathAttrs>,
    pub best: bool,
    /// Part of the ECMP set.
    pub ecmp: bool,
    pub stale: bool,
}

/// A part of a route-stream snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub routes: Vec<(IpNetwork, StreamRoute)>,
    /// The walk is over.
    pub done: bool,
    /// These routes begin a new snapshot (the watcher fell behind).
    pub resync: bool,
}

/// A chunk of rows; call again with `resume` until `done`.
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<RouteRow>,
    pub resume: Option<IpNetwork>,
    pub done: bool,
}

impl Rib {
    fn peer_by_address(&self, addr: IpAddr) -> Option<PeerId> {
        let addr = addr.to_canonical();
        self.peers.iter().enumerate().find_map(|(i, p)| {
            p.as_ref()
                .filter(|p| p.policy.address.to_canonical() == addr)
                .map(|_| PeerId(i as u16))
        })
    }

    /// About `max` rows after `after`.
    pub fn rows(&self, after: Option<IpNetwork>, max: usize, filter: &RowFilter) -> Rows {
        let only = match filter.peer {
            Some(a) => match self.peer_by_address(a) {
                Some(id) => Some(id),
                None => {
                    return Rows {
                        done: true,
                        ..Rows::default()
                    };
                }
            },
            None => None,
        };
        let mut out = Rows::default();
        let mut visited = 0;
        for (net, paths) in self.table.iter_after(after) {
            out.resume = Some(net);
            visited += 1;
            for (i, p) in paths.paths.iter().enumerate() {
                if filter.best_only && i > 0 {
                    break;
                }
                if only.is_some_and(|id| id != p.peer) {
                    continue;
                }
                let Some(attrs) = self.attrs.get(p.attr) else {
                    continue;
                };
                out.rows.push(RouteRow {
                    prefix: net,
                    peer: self.peer(p.peer).map(|ps| ps.policy.address),
                    attrs: attrs.clone(),
                    best: i == 0,
                    ecmp: i < paths.ecmp,
                    stale: p.stale(),
                });
            }
            if out.rows.len() >= max || visited >= max.saturating_mul(64) {
                return out;
            }
        }
        out.done = true;
        out
    }

    /// A new subscriber of the route stream; read its snapshot with
    /// [`Rib::snapshot_chunk`], then its changes with [`Watcher::take`].
    pub fn watch(&mut self) -> Arc<Watcher> {
        let w = Arc::new(Watcher::new(self.converged));
        self.watchers.push(w.clone());
        w
    }

    /// The next part of `w`'s snapshot: about `max` routes, whether the
    /// walk is over, and whether this chunk starts a new snapshot (a
    /// watcher that fell behind walks again; see [`super::watch`]). The
    /// marker is taken with the chunk, under the RIB, so it always comes
    /// with the first routes of the new walk.
    pub fn snapshot_chunk(&self, w: &Watcher, max: usize) -> Chunk {
        let mut st = w.lock();
        let mut out = Chunk {
            routes: Vec::new(),
            done: !st.scanning,
            resync: false,
        };
        if !st.scanning {
            return out;
        }
        if st.after.is_none() {
            out.resync = st.take_resync();
        }
        let mut visited = 0;
        for (net, paths) in self.table.iter_after(st.after) {
            st.after = Some(net);
            visited += 1;
            if let Some(v) = self.stream_view(paths) {
                out.routes.push((net, v));
            }
            if out.routes.len() >= max || visited >= max.saturating_mul(64) {
                return out;
            }
        }
        st.walk_finished();
        out.done = !st.scanning;
        out
    }

    /// What the route stream says about `net`.
    pub fn stream_route(&self, net: &IpNetwork) -> Option<StreamRoute> {
        self.table.get(net).and_then(|p| self.stream_view(p))
    }

    /// Every path of `net`, best first: (peer, attributes, stale).
    pub fn paths(&self, net: &IpNetwork) -> Vec<(Option<IpAddr>, Arc<PathAttrs>, bool)> {
        let Some(paths) = self.table.get(net) else {
            return Vec::new();
        };
        paths
            .paths
            .iter()
            .filter_map(|p| {
                let a = self.attrs.get(p.attr)?.clone();
                Some((self.peer(p.peer).map(|ps| ps.policy.address), a, p.stale()))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}
