//! Desired routes for IPAM blocks.
//!
//! Each block this node owns gets `blackhole <block>`: addresses of the
//! block that no local pod holds must not leak out of the default route.
//! Each block another node owns gets `<block> via <node IP>` (the direct,
//! same-subnet case; [`RemoteVia::Tunnel`] is the shape the IPIP issue will
//! use, `via <node> dev tunl0 onlink`).
//! A block both local and remote (affinity moving between nodes) is routed
//! as local: the pods this node still has must stay reachable.
//!
//! This is pure state: every change returns the [`RouteUpdate`]s to send
//! to the reconciler. The bird→felix stream (a later issue) will drive it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::routes::{Route, RouteError, RouteHandle, RouteTarget, RouteUpdate};

/// How a remote block is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteVia {
    /// Next hop on a directly connected subnet.
    Direct(IpAddr),
    /// Through a tunnel device to the node's address.
    Tunnel { dev: u32, node: IpAddr },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {0} has host bits set; blocks are network prefixes like 10.65.0.0/26")]
    HostBits(IpNetwork),
    #[error("block {block} cannot be reached via {via} (other address family)")]
    FamilyMismatch { block: IpNetwork, via: IpAddr },
}

fn check_block(block: IpNetwork) -> Result<(), BlockError> {
    if block.network() != block.ip() {
        return Err(BlockError::HostBits(block));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockRoutes {
    local: BTreeSet<IpNetwork>,
    remote: BTreeMap<IpNetwork, RemoteVia>,
}

impl BlockRoutes {
    pub fn new() -> BlockRoutes {
        BlockRoutes::default()
    }

    /// The route felix wants for `block` now, if any.
    pub fn route_for(&self, block: &IpNetwork) -> Option<Route> {
        if self.local.contains(block) {
            return Some(Route::blackhole(*block));
        }
        self.remote.get(block).map(|via| Route {
            dst: *block,
            target: match *via {
                RemoteVia::Direct(gw) => RouteTarget::Gateway(gw),
                RemoteVia::Tunnel { dev, node } => RouteTarget::Tunnel {
                    dev,
                    gateway: node,
                    onlink: true,
                },
            },
            metric: 0,
        })
    }

    fn update_for(&self, block: IpNetwork) -> RouteUpdate {
        match self.route_for(&block) {
            Some(r) => RouteUpdate::Set(r),
            None => RouteUpdate::Remove(block),
        }
    }

    pub fn add_local(&mut self, block: IpNetwork) -> Result<Vec<RouteUpdate>, BlockError> {
        check_block(block)?;
        self.local.insert(block);
        Ok(vec![self.update_for(block)])
    }

    pub fn remove_local(&mut self, block: IpNetwork) -> Vec<RouteUpdate> {
        if !self.local.remove(&block) {
            return Vec::new();
        }
        vec![self.update_for(block)]
    }

    /// Replaces the whole set of local blocks (e.g. a full snapshot from
    /// the datastore).
    pub fn set_local(
        &mut self,
        blocks: impl IntoIterator<Item = IpNetwork>,
    ) -> Result<Vec<RouteUpdate>, BlockError> {
        let new: BTreeSet<IpNetwork> = blocks.into_iter().collect();
        new.iter().try_for_each(|b| check_block(*b))?;
        let changed: BTreeSet<IpNetwork> = self.local.symmetric_difference(&new).copied().collect();
        self.local = new;
        Ok(changed.into_iter().map(|b| self.update_for(b)).collect())
    }

    pub fn set_remote(
        &mut self,
        block: IpNetwork,
        via: RemoteVia,
    ) -> Result<Vec<RouteUpdate>, BlockError> {
        check_block(block)?;
        let gw = match via {
            RemoteVia::Direct(gw) | RemoteVia::Tunnel { node: gw, .. } => gw,
        };
        if gw.is_ipv6() != block.is_ipv6() {
            return Err(BlockError::FamilyMismatch { block, via: gw });
        }
        if self.remote.insert(block, via) == Some(via) {
            return Ok(Vec::new());
        }
        Ok(vec![self.update_for(block)])
    }

    pub fn remove_remote(&mut self, block: IpNetwork) -> Vec<RouteUpdate> {
        if self.remote.remove(&block).is_none() {
            return Vec::new();
        }
        vec![self.update_for(block)]
    }

    /// Replaces every remote block at once (a fresh stream from bird).
    pub fn set_all_remote(
        &mut self,
        blocks: impl IntoIterator<Item = (IpNetwork, RemoteVia)>,
    ) -> Result<Vec<RouteUpdate>, BlockError> {
        let mut next = BlockRoutes {
            local: self.local.clone(),
            remote: BTreeMap::new(),
        };
        for (b, via) in blocks {
            next.set_remote(b, via)?;
        }
        let touched: BTreeSet<IpNetwork> = self
            .remote
            .keys()
            .chain(next.remote.keys())
            .copied()
            .collect();
        let updates = touched
            .into_iter()
            .filter(|b| self.route_for(b) != next.route_for(b))
            .map(|b| next.update_for(b))
            .collect();
        *self = next;
        Ok(updates)
    }
}

/// Applies block changes straight to a reconciler.
pub fn apply(handle: &RouteHandle, updates: Vec<RouteUpdate>) -> Result<(), RouteError> {
    if updates.is_empty() {
        return Ok(());
    }
    handle.update(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_block_is_a_blackhole() {
        let mut b = BlockRoutes::new();
        let u = b.add_local(net("10.65.0.0/26")).unwrap();
        assert_eq!(
            u,
            vec![RouteUpdate::Set(Route::blackhole(net("10.65.0.0/26")))]
        );
    }

    #[test]
    fn remote_block_goes_via_its_node() {
        let mut b = BlockRoutes::new();
        let u = b
            .set_remote(net("10.65.1.0/26"), RemoteVia::Direct(ip("192.168.0.12")))
            .unwrap();
        assert_eq!(
            u,
            vec![RouteUpdate::Set(Route::via(
                net("10.65.1.0/26"),
                ip("192.168.0.12")
            ))]
        );
    }

    #[test]
    fn same_remote_again_is_no_update() {
        let mut b = BlockRoutes::new();
        let via = RemoteVia::Direct(ip("192.168.0.12"));
        b.set_remote(net("10.65.1.0/26"), via).unwrap();
        assert!(b.set_remote(net("10.65.1.0/26"), via).unwrap().is_empty());
    }

    #[test]
    fn local_wins_over_remote_and_remote_returns_when_local_goes() {
        let mut b = BlockRoutes::new();
        let block = net("10.65.2.0/26");
        b.set_remote(block, RemoteVia::Direct(ip("192.168.0.12")))
            .unwrap();
        assert_eq!(
            b.add_local(block).unwrap(),
            vec![RouteUpdate::Set(Route::blackhole(block))]
        );
        assert_eq!(
            b.remove_local(block),
            vec![RouteUpdate::Set(Route::via(block, ip("192.168.0.12")))]
        );
        assert_eq!(b.remove_remote(block), vec![RouteUpdate::Remove(block)]);
    }

    #[test]
    fn set_local_snapshot_touches_only_changes() {
        let mut b = BlockRoutes::new();
        b.set_local([net("10.65.0.0/26"), net("10.65.0.64/26")])
            .unwrap();
        let u = b
            .set_local([net("10.65.0.64/26"), net("10.65.0.128/26")])
            .unwrap();
        assert_eq!(
            u,
            vec![
                RouteUpdate::Remove(net("10.65.0.0/26")),
                RouteUpdate::Set(Route::blackhole(net("10.65.0.128/26"))),
            ]
        );
    }

    #[test]
    fn set_all_remote_withdraws_missing_and_skips_unchanged() {
        let mut b = BlockRoutes::new();
        let via = RemoteVia::Direct(ip("192.168.0.12"));
        b.set_remote(net("10.65.1.0/26"), via).unwrap();
        b.set_remote(net("10.65.2.0/26"), via).unwrap();
        let u = b
            .set_all_remote([
                (net("10.65.2.0/26"), via),
                (net("10.65.3.0/26"), RemoteVia::Direct(ip("192.168.0.13"))),
            ])
            .unwrap();
        assert_eq!(
            u,
            vec![
                RouteUpdate::Remove(net("10.65.1.0/26")),
                RouteUpdate::Set(Route::via(net("10.65.3.0/26"), ip("192.168.0.13"))),
            ]
        );
    }

    #[test]
    fn tunnel_via_is_an_onlink_tunnel_route() {
        let mut b = BlockRoutes::new();
        b.set_remote(
            net("10.65.4.0/26"),
            RemoteVia::Tunnel {
                dev: 7,
                node: ip("172.16.0.4"),
            },
        )
        .unwrap();
        let r = b.route_for(&net("10.65.4.0/26")).unwrap();
        assert_eq!(
            r.target,
            RouteTarget::Tunnel {
                dev: 7,
                gateway: ip("172.16.0.4"),
                onlink: true
            }
        );
    }

    #[test]
    fn bad_blocks_are_rejected_without_changing_state() {
        let mut b = BlockRoutes::new();
        assert_eq!(
            b.add_local(net("10.65.0.5/26")),
            Err(BlockError::HostBits(net("10.65.0.5/26")))
        );
        assert!(matches!(
            b.set_remote(net("fd00::/122"), RemoteVia::Direct(ip("10.0.0.1"))),
            Err(BlockError::FamilyMismatch { .. })
        ));
        assert_eq!(b, BlockRoutes::new());
    }

    #[test]
    fn ipv6_blocks_work_the_same() {
        let mut b = BlockRoutes::new();
        b.add_local(net("fd00:10::/122")).unwrap();
        let u = b
            .set_remote(net("fd00:10::40/122"), RemoteVia::Direct(ip("fd00:ff::2")))
            .unwrap();
        assert_eq!(
            u,
            vec![RouteUpdate::Set(Route::via(
                net("fd00:10::40/122"),
                ip("fd00:ff::2")
            ))]
        );
    }
}
