//! The RIB driven through its methods: selection, ECMP, reflection, split
//! horizon, import guard, max-prefix, graceful restart, the route stream.
//! No sockets, no tasks; time is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::fsm::{DownCause, PeerGr};
use crate::packet::aspath::AsPath;
use crate::packet::notification::{cease_sub, code};
use crate::policy::PeerPolicy;

const AS: u32 = 64512;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(id: u16) -> PeerKey {
    PeerKey {
        id: PeerId(id),
        epoch: 1,
    }
}

struct H {
    rib: Rib,
    now: Instant,
    generation: u64,
    outs: HashMap<u16, (Arc<AdjRibOut>, u64)>,
    stats: HashMap<u16, Arc<PeerStats>>,
}

fn gr_caps(forwarding: bool) -> PeerGr {
    PeerGr {
        restarting: false,
        notification: false,
        restart_time: 120,
        families: vec![
            (Family::Ipv4Unicast, forwarding),
            (Family::Ipv6Unicast, forwarding),
        ],
    }
}

impl H {
    fn new(rr: bool) -> H {
        let now = Instant::now();
        let mut local = LocalPolicy::new(AS, Ipv4Addr::new(10, 0, 0, 1));
        local.pools = vec![net("10.65.0.0/16")];
        if rr {
            local.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        }
        H {
            rib: Rib::new(local, now + Duration::from_secs(60)),
            now,
            generation: 0,
            outs: HashMap::new(),
            stats: HashMap::new(),
        }
    }

    /// Peer `id` at 10.0.0.<id>, with router id 10.0.0.<id>.
    fn add(&mut self, id: u16, asn: u32, f: impl FnOnce(&mut PeerPolicy)) {
        let mut p = PeerPolicy::new(ip(&format!("10.0.0.{id}")), asn);
        p.calico_node = asn == AS;
        f(&mut p);
        let (out, stats) = self.rib.add_peer(key(id), p);
        self.outs.insert(id, (out, 0));
        self.stats.insert(id, stats);
    }

    fn up_with(&mut self, id: u16, gr: Option<PeerGr>) {
        self.generation += 1;
        let asn = self.rib.peer(PeerId(id)).unwrap().policy.asn;
        let s = SessionInfo {
            generation: self.generation,
            negotiated: Negotiated {
                peer_id: Ipv4Addr::new(10, 0, 0, id as u8),
                peer_as: asn,
                hold_time: 90,
                four_octet_as: true,
                families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
                route_refresh: true,
                peer_gr: gr,
            },
            local_addr: Some(ip("10.0.0.1")),
            n_bit: true,
        };
        self.outs.get_mut(&id).unwrap().1 = self.generation;
        self.rib.peer_up(key(id), s, self.now);
    }

    fn up(&mut self, id: u16) {
        self.up_with(id, Some(gr_caps(true)));
    }

    fn send(&mut self, id: u16, attrs: PathAttrs, nets: &[&str]) -> Applied {
        let msg = UpdateMsg {
            announced: vec![(Arc::new(attrs), nets.iter().map(|s| net(s)).collect())],
            ..UpdateMsg::default()
        };
        self.rib.apply_update(key(id), msg, self.now)
    }

    fn withdraw(&mut self, id: u16, nets: &[&str]) {
        let msg = UpdateMsg {
            withdrawn: nets.iter().map(|s| net(s)).collect(),
            ..UpdateMsg::default()
        };
        self.rib.apply_update(key(id), msg, self.now);
    }

    fn eor(&mut self, id: u16, f: Family) {
        let msg = UpdateMsg {
            end_of_rib: Some(f),
            ..UpdateMsg::default()
        };
        self.rib.apply_update(key(id), msg, self.now);
    }

    /// Everything queued for peer `id` since the last call, applied to a
    /// model of what the peer holds.
    fn drain(&self, id: u16) -> OutBatch {
        let (out, generation) = &self.outs[&id];
        out.take(*generation, usize::MAX).unwrap_or(OutBatch {
            routes: vec![],
            end_of_rib: vec![],
            four_octet_as: true,
        })
    }

    /// The attributes peer `id` was last sent for `n`.
    fn sent(&self, id: u16, n: &str) -> Option<Arc<PathAttrs>> {
        let _ = self.drain(id);
        self.outs[&id].0.lock().is_sent(&net(n)).cloned()
    }

    fn best_peer(&self, n: &str) -> Option<Option<IpAddr>> {
        self.rib.paths(&net(n)).first().map(|(p, _, _)| *p)
    }
}

fn ibgp(nh: &str) -> PathAttrs {
    PathAttrs {
        next_hop: Some(ip(nh)),
        local_pref: Some(100),
        ..Default::default()
    }
}

fn ebgp(asns: &[u32], nh: &str) -> PathAttrs {
    PathAttrs {
        as_path: AsPath::sequence(asns.iter().copied()),
        next_hop: Some(ip(nh)),
        ..Default::default()
    }
}

#[test]
fn better_path_replaces_the_best_and_withdrawal_falls_back() {
    let mut h = H::new(false);
    h.add(2, 65002, |_| {});
    h.add(3, 65003, |_| {});
    h.up(2);
    h.up(3);
    h.send(2, ebgp(&[65002, 65010], "10.0.0.2"), &["192.0.2.0/24"]);
    assert_eq!(h.best_peer("192.0.2.0/24"), Some(Some(ip("10.0.0.2"))));
    h.send(3, ebgp(&[65003], "10.0.0.3"), &["192.0.2.0/24"]);
    assert_eq!(h.best_peer("192.0.2.0/24"), Some(Some(ip("10.0.0.3"))));
    h.withdraw(3, &["192.0.2.0/24"]);
    assert_eq!(h.best_peer("192.0.2.0/24"), Some(Some(ip("10.0.0.2"))));
    h.withdraw(2, &["192.0.2.0/24"]);
    assert!(h.rib.is_empty());
    assert_eq!(
        h.rib.attrs.len(),
        0,
        "attribute sets are freed with their paths"
    );
}

#[test]
fn equal_paths_are_ecmp_and_the_stream_carries_every_next_hop() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.add(3, AS, |_| {});
    h.up(2);
    h.up(3);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    h.send(3, ibgp("10.0.0.3"), &["10.65.1.0/26"]);
    let r = h.rib.stream_route(&net("10.65.1.0/26")).unwrap();
    assert_eq!(r.next_hops, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
    assert!(r.from_node);
    // Lowest router ID is the best of the set.
    assert_eq!(h.best_peer("10.65.1.0/26"), Some(Some(ip("10.0.0.2"))));
    // A longer path drops out of the set.
    h.send(
        3,
        PathAttrs {
            as_path: AsPath::sequence([65099]),
            ..ibgp("10.0.0.3")
        },
        &["10.65.1.0/26"],
    );
    let r = h.rib.stream_route(&net("10.65.1.0/26")).unwrap();
    assert_eq!(r.next_hops, vec![ip("10.0.0.2")]);
}

#[test]
fn our_block_beats_a_learned_copy_and_is_not_streamed() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    h.send(2, ibgp("10.0.0.2"), &["10.65.7.0/26"]);
    assert!(h.rib.stream_route(&net("10.65.7.0/26")).is_some());
    h.rib.set_originated(&[net("10.65.7.0/26")]);
    assert_eq!(h.best_peer("10.65.7.0/26"), Some(None));
    assert!(h.rib.stream_route(&net("10.65.7.0/26")).is_none());
}

#[test]
fn mesh_node_sends_its_blocks_with_next_hop_self_but_not_ibgp_learned_routes() {
    let mut h = H::new(false);
    h.rib.set_originated(&[net("10.65.1.0/26")]);
    h.add(2, AS, |_| {});
    h.add(3, AS, |_| {});
    h.up(2);
    h.up(3);
    let a = h.sent(3, "10.65.1.0/26").unwrap();
    assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
    assert_eq!(a.local_pref, Some(100));
    h.send(2, ibgp("10.0.0.2"), &["10.65.2.0/26"]);
    assert!(h.sent(3, "10.65.2.0/26").is_none(), "iBGP split horizon");
    assert!(
        h.sent(2, "10.65.2.0/26").is_none(),
        "never back to the sender"
    );
}

#[test]
fn reflector_reflects_client_routes_to_all_and_non_client_routes_to_clients() {
    let mut h = H::new(true);
    h.add(2, AS, |p| p.rr_client = true);
    h.add(3, AS, |p| p.rr_client = true);
    h.add(4, AS, |_| {});
    for id in [2, 3, 4] {
        h.up(id);
    }
    h.send(2, ibgp("10.0.0.2"), &["10.65.2.0/26"]);
    for id in [3, 4] {
        let a = h
            .sent(id, "10.65.2.0/26")
            .expect("client route goes to everyone");
        assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.cluster_list, vec![Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(a.next_hop, Some(ip("10.0.0.2")));
    }
    assert!(h.sent(2, "10.65.2.0/26").is_none());
    h.send(4, ibgp("10.0.0.4"), &["10.65.4.0/26"]);
    assert!(h.sent(2, "10.65.4.0/26").is_some());
    assert!(h.sent(3, "10.65.4.0/26").is_some());
}

#[test]
fn reflected_route_carrying_our_cluster_id_or_router_id_is_dropped() {
    let mut h = H::new(true);
    h.add(2, AS, |p| p.rr_client = true);
    h.up(2);
    let mut looped = ibgp("10.0.0.9");
    looped.cluster_list = vec![Ipv4Addr::new(1, 1, 1, 1)];
    let a = h.send(2, looped, &["10.65.9.0/26"]);
    assert_eq!(a.rejection, Some(Rejection::ClusterLoop));
    let mut mine = ibgp("10.0.0.9");
    mine.originator_id = Some(Ipv4Addr::new(10, 0, 0, 1));
    let a = h.send(2, mine, &["10.65.9.0/26"]);
    assert_eq!(a.rejection, Some(Rejection::OwnOriginator));
    assert!(h.rib.is_empty());
}

#[test]
fn tor_gets_exactly_our_blocks_with_communities_and_cannot_hijack_a_pool() {
    let mut h = H::new(false);
    let mut local = h.rib.local().clone();
    local.communities = vec![crate::policy::PrefixCommunities {
        cidr: net("10.65.0.0/16"),
        communities: vec![(65000 << 16) | 100],
        large: vec![[65000, 7, 8]],
    }];
    local.import.accept_default_route = true;
    h.rib.set_local(local);
    h.rib.set_originated(&[net("10.65.1.0/26")]);
    h.add(2, AS, |_| {});
    h.add(254, 65000, |_| {});
    h.up(2);
    h.up(254);
    h.send(2, ibgp("10.0.0.2"), &["10.65.2.0/26"]);
    let batch = h.drain(254);
    let sent: Vec<IpNetwork> = batch.routes.iter().map(|(n, _)| *n).collect();
    assert_eq!(sent, vec![net("10.65.1.0/26")], "only our own block");
    let a = batch.routes[0].1.clone().unwrap();
    assert_eq!(a.as_path, AsPath::sequence([AS]));
    assert_eq!(a.communities, vec![(65000 << 16) | 100]);
    assert_eq!(a.large_communities, vec![[65000, 7, 8]]);
    // The ToR announces something inside the pool, and something outside.
    let r = h.send(
        254,
        ebgp(&[65000], "10.0.0.254"),
        &["10.65.2.0/26", "0.0.0.0/0"],
    );
    assert_eq!((r.announced, r.rejected), (1, 1));
    assert_eq!(r.rejection, Some(Rejection::PoolGuard));
    assert_eq!(h.best_peer("10.65.2.0/26"), Some(Some(ip("10.0.0.2"))));
    assert_eq!(h.rib.paths(&net("10.65.2.0/26")).len(), 1);
    assert_eq!(h.best_peer("0.0.0.0/0"), Some(Some(ip("10.0.0.254"))));
    let s = &h.stats[&254];
    assert_eq!(s.rejected.load(Ordering::Relaxed), 1);
    // A default route from a router is streamed, marked as not from a node.
    assert!(!h.rib.stream_route(&net("0.0.0.0/0")).unwrap().from_node);
}

#[test]
fn a_router_cannot_install_a_default_route_the_underlay_or_a_pod_next_hop() {
    let mut h = H::new(false);
    let mut local = h.rib.local().clone();
    local.node_networks = vec![net("10.0.0.1/24")];
    h.rib.set_local(local);
    h.add(254, 65000, |_| {});
    h.up(254);
    // Issue 19 item 5: each of these would otherwise reach felix.
    let r = h.send(
        254,
        ebgp(&[65000], "10.0.0.254"),
        &["0.0.0.0/0", "10.0.0.0/25", "10.0.0.1/32", "192.168.9.0/24"],
    );
    assert_eq!((r.announced, r.rejected), (1, 3), "{r:?}");
    assert!(h.rib.paths(&net("0.0.0.0/0")).is_empty());
    assert!(h.rib.paths(&net("10.0.0.0/25")).is_empty());
    assert_eq!(h.best_peer("192.168.9.0/24"), Some(Some(ip("10.0.0.254"))));
    for (nh, why) in [
        ("10.65.1.5", Rejection::NextHopInPool),
        ("10.0.0.1", Rejection::NextHopLocal),
        ("172.16.0.1", Rejection::NextHopNotConnected),
    ] {
        let r = h.send(254, ebgp(&[65000], nh), &["192.168.10.0/24"]);
        assert_eq!(r.rejection, Some(why), "{nh}");
        assert!(h.rib.paths(&net("192.168.10.0/24")).is_empty(), "{nh}");
    }
    // A bad next hop also takes back what the peer announced before.
    h.send(254, ebgp(&[65000], "10.0.0.254"), &["192.168.10.0/24"]);
    assert_eq!(h.best_peer("192.168.10.0/24"), Some(Some(ip("10.0.0.254"))));
    h.send(254, ebgp(&[65000], "10.65.1.5"), &["192.168.10.0/24"]);
    assert!(h.rib.paths(&net("192.168.10.0/24")).is_empty());
    // Configured to accept the default route, it is taken.
    let mut local = h.rib.local().clone();
    local.import.accept_default_route = true;
    h.rib.set_local(local);
    let r = h.send(254, ebgp(&[65000], "10.0.0.254"), &["0.0.0.0/0"]);
    assert_eq!(r.announced, 1);
    assert_eq!(h.best_peer("0.0.0.0/0"), Some(Some(ip("10.0.0.254"))));
    // The node gains an address in a network the router announced: the
    // route now refused is dropped, and the router asked for a refresh.
    h.rib.take_actions();
    let mut local = h.rib.local().clone();
    local.node_networks.push(net("192.168.9.7/24"));
    h.rib.set_local(local);
    assert!(h.rib.paths(&net("192.168.9.0/24")).is_empty());
    assert_eq!(h.best_peer("0.0.0.0/0"), Some(Some(ip("10.0.0.254"))));
    assert!(h.rib.take_actions().contains(&RibAction::RouteRefresh {
        peer: key(254),
        family: Family::Ipv4Unicast,
    }));
}

#[test]
fn a_new_pool_drops_routes_the_guard_now_refuses_and_asks_for_a_refresh() {
    let mut h = H::new(false);
    h.add(254, 65000, |_| {});
    h.up(254);
    h.send(254, ebgp(&[65000], "10.0.0.254"), &["10.66.1.0/24"]);
    let mut local = h.rib.local().clone();
    local.pools.push(net("10.66.0.0/16"));
    h.rib.set_local(local);
    assert!(h.rib.is_empty());
    let actions = h.rib.take_actions();
    assert!(actions.contains(&RibAction::RouteRefresh {
        peer: key(254),
        family: Family::Ipv4Unicast
    }));
}

#[test]
fn max_prefixes_asks_for_one_reset_with_cease_max_prefixes() {
    let mut h = H::new(false);
    h.add(254, 65000, |p| p.max_prefixes = Some(2));
    h.up(254);
    h.send(
        254,
        ebgp(&[65000], "10.0.0.254"),
        &["192.0.2.0/24", "198.51.100.0/24"],
    );
    assert!(h.rib.take_actions().is_empty(), "at the limit is fine");
    h.send(254, ebgp(&[65000], "10.0.0.254"), &["203.0.113.0/24"]);
    h.send(254, ebgp(&[65000], "10.0.0.254"), &["203.0.114.0/24"]);
    let actions = h.rib.take_actions();
    assert_eq!(actions.len(), 1, "{actions:?}");
    let RibAction::Reset { peer, notification } = &actions[0] else {
        panic!("{actions:?}");
    };
    assert_eq!(*peer, key(254));
    assert_eq!(
        (notification.code, notification.subcode),
        (code::CEASE, cease_sub::MAX_PREFIXES)
    );
    assert_eq!(notification.data, vec![0, 1, 1, 0, 0, 0, 2]);
    // The reset ends the session with that NOTIFICATION: no restart.
    h.rib
        .peer_down(key(254), &DownCause::Sent(notification.clone()), h.now);
    assert!(h.rib.is_empty());
}

#[test]
fn graceful_restart_keeps_stale_routes_then_sweeps_what_was_not_reannounced() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26", "10.65.2.0/26"]);
    let w = h.rib.watch();
    while !h.rib.snapshot_chunk(&w, 100).done {}
    h.rib.on_timer(h.now + Duration::from_secs(61));
    assert!(w.snapshot_complete());
    let _ = w.take(100);

    h.rib.peer_down(key(2), &DownCause::ConnectionLost, h.now);
    let paths = h.rib.paths(&net("10.65.1.0/26"));
    assert!(paths[0].2, "marked stale");
    assert_eq!(h.stats[&2].stale.load(Ordering::Relaxed), 2);
    assert!(
        w.take(100).is_empty(),
        "the stream sees no change while stale"
    );

    h.up(2);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    assert!(!h.rib.paths(&net("10.65.1.0/26"))[0].2, "refreshed");
    assert!(h.rib.paths(&net("10.65.2.0/26"))[0].2, "still stale");
    assert!(w.take(100).is_empty());
    h.eor(2, Family::Ipv4Unicast);
    assert!(h.rib.paths(&net("10.65.2.0/26")).is_empty(), "swept");
    assert_eq!(
        w.take(100),
        Changes {
            upserts: vec![],
            withdraws: vec![net("10.65.2.0/26")]
        }
    );
    assert_eq!(h.stats[&2].stale.load(Ordering::Relaxed), 0);
}

#[test]
fn stale_routes_go_when_the_restart_timer_expires() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    h.rib.peer_down(key(2), &DownCause::ConnectionLost, h.now);
    let at = h.rib.next_deadline().unwrap();
    assert!(at <= h.now + Duration::from_secs(120));
    h.rib.on_timer(h.now + Duration::from_secs(119));
    assert_eq!(h.rib.len(), 1);
    h.rib.on_timer(h.now + Duration::from_secs(120));
    assert!(h.rib.is_empty());
}

#[test]
fn stale_routes_go_at_once_without_the_forwarding_bit_or_the_capability() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    h.rib.peer_down(key(2), &DownCause::ConnectionLost, h.now);
    h.up_with(2, Some(gr_caps(false)));
    assert!(h.rib.is_empty(), "the peer lost its forwarding state");

    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    h.rib.peer_down(
        key(2),
        &DownCause::Received(Notification::cease(cease_sub::ADMINISTRATIVE_RESET)),
        h.now,
    );
    assert!(h.rib.is_empty(), "NOTIFICATION without the N bit");

    h.up_with(2, None);
    h.send(2, ibgp("10.0.0.2"), &["10.65.1.0/26"]);
    h.rib.peer_down(key(2), &DownCause::ConnectionLost, h.now);
    assert!(h.rib.is_empty(), "no graceful restart capability");
}

#[test]
fn route_stream_snapshot_then_changes_including_those_made_during_the_walk() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    let nets: Vec<String> = (0..10).map(|i| format!("10.65.{i}.0/26")).collect();
    let refs: Vec<&str> = nets.iter().map(String::as_str).collect();
    h.send(2, ibgp("10.0.0.2"), &refs);
    let w = h.rib.watch();
    let first = h.rib.snapshot_chunk(&w, 4).routes;
    assert_eq!(first.len(), 4);
    // One change behind the walk, one ahead of it.
    h.withdraw(2, &["10.65.1.0/26", "10.65.8.0/26"]);
    let mut seen: Vec<IpNetwork> = first.iter().map(|(n, _)| *n).collect();
    loop {
        let c = h.rib.snapshot_chunk(&w, 4);
        seen.extend(c.routes.iter().map(|(n, _)| *n));
        if c.done {
            break;
        }
    }
    assert!(!seen.contains(&net("10.65.8.0/26")), "the walk saw it gone");
    assert!(!w.snapshot_complete(), "not converged yet");
    let c = w.take(100);
    assert_eq!(c.withdraws, vec![net("10.65.1.0/26")]);
    h.eor(2, Family::Ipv4Unicast);
    h.eor(2, Family::Ipv6Unicast);
    assert!(w.snapshot_complete(), "every peer sent End-of-RIB");
}

#[test]
fn end_of_rib_waits_for_start_up_convergence_only_where_learned_routes_go() {
    let mut h = H::new(false);
    h.rib.set_originated(&[net("10.65.1.0/26")]);
    h.add(2, AS, |_| {});
    h.add(3, AS, |_| {});
    h.add(254, 65000, |p| p.export_learned = true);
    // A mesh peer only ever gets this node's own blocks: its End-of-RIB
    // follows them at once (no cold-start deadlock between nodes).
    h.up(2);
    let b = h.drain(2);
    assert_eq!((b.routes.len(), b.end_of_rib.len()), (1, 2));
    // The ToR also gets learned routes: its End-of-RIB waits until every
    // peer has sent its own.
    h.up(254);
    let b = h.drain(254);
    assert_eq!((b.routes.len(), b.end_of_rib.len()), (1, 0));
    h.up(3);
    assert_eq!(h.drain(3).end_of_rib.len(), 2);
    for peer in [2, 3] {
        h.eor(peer, Family::Ipv4Unicast);
        h.eor(peer, Family::Ipv6Unicast);
    }
    assert!(
        h.drain(254).end_of_rib.is_empty(),
        "the ToR itself has not synced yet"
    );
    h.eor(254, Family::Ipv4Unicast);
    h.eor(254, Family::Ipv6Unicast);
    assert_eq!(h.drain(254).end_of_rib.len(), 2);
    // Later sessions get their End-of-RIB right after the routes.
    h.rib.peer_down(key(254), &DownCause::ConnectionLost, h.now);
    h.up(254);
    assert_eq!(h.drain(254).end_of_rib.len(), 2);
}

#[test]
fn removing_a_peer_withdraws_its_routes_everywhere() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.add(254, 65000, |p| p.export_learned = true);
    h.up(2);
    h.up(254);
    h.send(2, ibgp("10.0.0.2"), &["10.65.2.0/26"]);
    assert!(h.sent(254, "10.65.2.0/26").is_some());
    h.rib.remove_peer(key(2), h.now);
    assert!(h.rib.is_empty());
    assert!(h.sent(254, "10.65.2.0/26").is_none());
    // Events from the removed incarnation are ignored.
    h.add(2, AS, |_| {});
    let stale_key = PeerKey {
        id: PeerId(2),
        epoch: 0,
    };
    let msg = UpdateMsg {
        announced: vec![(Arc::new(ibgp("10.0.0.2")), vec![net("10.65.3.0/26")])],
        ..UpdateMsg::default()
    };
    h.rib.apply_update(stale_key, msg, h.now);
    assert!(h.rib.is_empty());
}

#[test]
fn route_refresh_request_resends_everything() {
    let mut h = H::new(false);
    h.rib
        .set_originated(&[net("10.65.1.0/26"), net("10.65.2.0/26")]);
    h.add(2, AS, |_| {});
    h.up(2);
    assert_eq!(h.drain(2).routes.len(), 2);
    h.rib.refresh_out(key(2), Family::Ipv4Unicast);
    assert_eq!(h.drain(2).routes.len(), 2);
}

#[test]
fn treat_as_withdraw_and_foreign_families_from_a_decoded_update() {
    use crate::packet::update::{decode, encode_announce};
    let ctx = crate::packet::attributes::DecodeCtx {
        four_octet_as: true,
        external: true,
        peer_as: 65001,
        local_v4: None,
    };
    let m = encode_announce(
        &ebgp(&[65001], "10.0.0.9"),
        &[net("192.0.2.0/24")],
        Family::Ipv4Unicast,
        true,
    )
    .unwrap();
    let u = decode(&m[0][19..], &ctx).unwrap();
    let (msg, ignored) = UpdateMsg::from_update(&u, &ctx, &[Family::Ipv4Unicast]);
    assert_eq!((msg.announced.len(), ignored), (1, 0));
    let (msg, ignored) = UpdateMsg::from_update(&u, &ctx, &[Family::Ipv6Unicast]);
    assert_eq!((msg.announced.len(), ignored), (0, 1));
}

#[test]
fn a_watcher_that_falls_behind_gets_a_new_walk_marked_resync_on_its_first_chunk() {
    let mut h = H::new(false);
    h.add(2, AS, |_| {});
    h.up(2);
    h.rib.on_timer(h.now + Duration::from_secs(61));
    let w = h.rib.watch();
    let c = h.rib.snapshot_chunk(&w, 10);
    assert!(c.done && !c.resync, "empty table, first snapshot");
    // More changes than a watcher may queue.
    let n = watch::PENDING_MAX + 10;
    let nets: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = nets.iter().map(String::as_str).collect();
    h.send(2, ibgp("10.0.0.2"), &refs);
    assert!(!w.has_pending(), "queue given up");
    let first = h.rib.snapshot_chunk(&w, 100);
    assert!(first.resync && first.routes.len() == 100);
    let mut got = first.routes.len();
    loop {
        let c = h.rib.snapshot_chunk(&w, 5000);
        assert!(!c.resync);
        got += c.routes.len();
        if c.done {
            break;
        }
    }
    assert_eq!(got, n);
    assert!(w.snapshot_complete());
}

#[test]
fn a_peers_new_import_filter_drops_what_it_rejects_and_asks_only_that_peer_for_a_refresh() {
    use crate::policy::{FilterAction, FilterRule, MatchOp};
    let mut h = H::new(false);
    h.add(253, 65000, |_| {});
    h.add(254, 65001, |_| {});
    h.up(253);
    h.up(254);
    h.send(253, ebgp(&[65000], "10.0.0.253"), &["192.168.10.0/24"]);
    h.send(
        254,
        ebgp(&[65001], "10.0.0.254"),
        &["192.168.20.0/24", "192.168.21.0/24"],
    );
    h.rib.take_actions();
    let mut p = PeerPolicy::new(ip("10.0.0.254"), 65001);
    p.import_filter = vec![FilterRule {
        action: FilterAction::Reject,
        ipv4: Some(true),
        op: Some(MatchOp::Equal),
        cidr: Some(net("192.168.20.0/24")),
        min_len: None,
        max_len: None,
        remote_peers_only: false,
        interface: None,
    }]
    .into();
    h.rib.set_peer_policy(key(254), p.clone());
    assert!(h.rib.paths(&net("192.168.20.0/24")).is_empty());
    assert_eq!(h.best_peer("192.168.21.0/24"), Some(Some(ip("10.0.0.254"))));
    assert_eq!(h.best_peer("192.168.10.0/24"), Some(Some(ip("10.0.0.253"))));
    let refreshed: Vec<PeerKey> = h
        .rib
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            RibAction::RouteRefresh { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert!(
        !refreshed.is_empty() && refreshed.iter().all(|k| *k == key(254)),
        "{refreshed:?}"
    );
    // The rejected route is refused when sent again; the same policy
    // pushed again changes nothing.
    let r = h.send(254, ebgp(&[65001], "10.0.0.254"), &["192.168.20.0/24"]);
    assert_eq!((r.announced, r.rejected), (0, 1));
    assert_eq!(r.rejection, Some(crate::policy::Rejection::Filtered));
    h.rib.set_peer_policy(key(254), p);
    assert!(
        h.rib
            .take_actions()
            .iter()
            .all(|a| !matches!(a, RibAction::RouteRefresh { .. }))
    );
}
