//! What a best route becomes when sent to one peer, or whether it is sent
//! at all: a pure function of the route, where it came from and the
//! target.
//!
//! Who gets what:
//! - first the target's export filters (BGPFilter rules, in order): the
//!   first matching rule decides; Reject is never sent, Accept is sent
//!   even where the defaults below would not (a route outside the pools,
//!   learned routes to a router), the iBGP rules still holding;
//! - our own blocks go to every peer;
//! - a learned route is passed on only if it is a pod route (inside an IP
//!   pool), as Calico's BIRD export filter does; then
//!   - to an external peer only if that peer is a calico node or is
//!     configured with `export_learned` (a ToR gets this node's blocks,
//!     not what the node heard from elsewhere);
//!   - from an external peer to internal peers, always;
//!   - from an internal peer to another internal peer only through route
//!     reflection (RFC 4456 section 6): a reflector sends a client's route
//!     to every peer and a non-client's route to clients only; without
//!     reflection the iBGP split horizon holds (RFC 4271 section 9.2.1:
//!     routes learned from an internal peer are not re-advertised to
//!     internal peers).
//!
//! What changes on the way out:
//! - towards an external peer: our AS is prepended, LOCAL_PREF,
//!   ORIGINATOR_ID and CLUSTER_LIST are removed, a learned MED is not
//!   passed on (RFC 4271 section 5.1.4), and the next hop is this end of
//!   the session unless the peer keeps next hops;
//! - towards an internal peer: LOCAL_PREF is always present; our blocks get
//!   next-hop self, learned routes keep their next hop; a reflected route
//!   gets ORIGINATOR_ID (if it has none) and our CLUSTER_ID in front of its
//!   CLUSTER_LIST.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use super::best::DEFAULT_LOCAL_PREF;
use crate::packet::Family;
use crate::packet::attributes::PathAttrs;
use crate::policy::{FilterAction, LocalPolicy, PeerPolicy, filter_verdict, within};

/// Where the best route came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// One of our blocks.
    Local,
    Peer {
        policy: &'a PeerPolicy,
        internal: bool,
        /// The BGP Identifier of that peer.
        router_id: Ipv4Addr,
    },
}

/// The peer a route would go to, with its session's details.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub policy: &'a PeerPolicy,
    pub internal: bool,
    pub router_id: Ipv4Addr,
    /// Our address on the session (next-hop self).
    pub local_addr: Option<IpAddr>,
    pub families: &'a [Family],
}

impl Target<'_> {
    fn next_hop_self(&self, family: Family) -> Option<IpAddr> {
        let own = self.local_addr.map(|a| a.to_canonical());
        match family {
            Family::Ipv4Unicast => self
                .policy
                .next_hop_v4
                .map(IpAddr::V4)
                .or(own.filter(IpAddr::is_ipv4)),
            Family::Ipv6Unicast => self
                .policy
                .next_hop_v6
                .map(IpAddr::V6)
                .or(own.filter(IpAddr::is_ipv6)),
        }
    }
}

/// Whether the route may go to the target at all.
fn allowed(local: &LocalPolicy, net: &IpNetwork, src: &Source<'_>, dst: &Target<'_>) -> bool {
    if !dst.families.contains(&Family::of(net)) {
        return false;
    }
    let learned = matches!(src, Source::Peer { .. });
    let verdict = filter_verdict(&dst.policy.export_filter, net, learned, None);
    if verdict == Some(FilterAction::Reject) {
        return false;
    }
    let Source::Peer {
        policy: from,
        internal: from_internal,
        ..
    } = src
    else {
        return true;
    };
    // An Accept of the target's export filters stands in for the
    // defaults below (only pod routes; to a router only our blocks); the
    // iBGP rules still hold.
    let accepted = verdict == Some(FilterAction::Accept);
    if !accepted && !local.pools.iter().any(|p| within(net, p)) {
        return false;
    }
    if !dst.internal {
        return accepted || dst.policy.calico_node || dst.policy.export_learned;
    }
    if !from_internal {
        return true;
    }
    local.cluster_id.is_some() && (from.rr_client || dst.policy.rr_client)
}

/// Whether `dst` can be sent routes learned from other peers at all (the
/// same rules as [`allowed`], for any learned source). A peer that gets
/// only this speaker's own blocks — a plain mesh peer — has its whole
/// Adj-RIB-Out as soon as the session is up, so its End-of-RIB need not
/// wait for the start-up deferral. Holding it there would deadlock a
/// cold-started mesh, every node waiting for the others' End-of-RIB until
/// the deferral timer.
pub fn receives_learned(local: &LocalPolicy, dst: &Target<'_>) -> bool {
    if dst.internal {
        local.cluster_id.is_some()
    } else {
        dst.policy.calico_node
            || dst.policy.export_learned
            || dst
                .policy
                .export_filter
                .iter()
                .any(|r| r.action == FilterAction::Accept)
    }
}

/// The attributes to send `net` with to `dst`, or `None` when it is not
/// sent.
pub fn export(
    local: &LocalPolicy,
    net: &IpNetwork,
    src: &Source<'_>,
    attrs: &PathAttrs,
    dst: &Target<'_>,
) -> Option<PathAttrs> {
    if !allowed(local, net, src, dst) {
        return None;
    }
    let family = Family::of(net);
    let is_local = matches!(src, Source::Local);
    let mut out = attrs.clone();
    if dst.internal {
        out.local_pref = Some(match src {
            Source::Local => dst.policy.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            Source::Peer { .. } => attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
        });
        if is_local {
            out.med = dst.policy.med;
        }
        if is_local || dst.policy.next_hop_self {
            out.next_hop = Some(dst.next_hop_self(family)?);
            out.link_local_next_hop = None;
        }
        if let Source::Peer {
            internal: true,
            router_id,
            ..
        } = src
        {
            // RFC 4456 section 8: "ORIGINATOR_ID [...] created by an RR"
            // and "When an RR reflects a route, it MUST prepend the local
            // CLUSTER_ID to the CLUSTER_LIST."
            let originator = attrs.originator_id.unwrap_or(*router_id);
            if originator == dst.router_id {
                // The target originated it; it would drop it anyway.
                return None;
            }
            out.originator_id = Some(originator);
            if let Some(id) = local.cluster_id {
                out.cluster_list.insert(0, id);
            }
        }
    } else {
        out.as_path.prepend(dst.policy.local_as(local.asn));
        out.local_pref = None;
        out.originator_id = None;
        out.cluster_list.clear();
        out.med = if is_local { dst.policy.med } else { None };
        if is_local || dst.policy.next_hop_self || !dst.policy.keep_next_hop {
            out.next_hop = Some(dst.next_hop_self(family)?);
            out.link_local_next_hop = None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::aspath::AsPath;

    const AS: u32 = 64512;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn local(rr: bool) -> LocalPolicy {
        let mut l = LocalPolicy::new(AS, Ipv4Addr::new(10, 0, 0, 1));
        l.pools = vec![net("10.65.0.0/16")];
        if rr {
            l.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
        }
        l
    }

    fn peer(addr: &str, asn: u32) -> PeerPolicy {
        let mut p = PeerPolicy::new(ip(addr), asn);
        p.calico_node = asn == AS;
        p
    }

    const BOTH: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    fn target<'a>(p: &'a PeerPolicy, id: u8) -> Target<'a> {
        Target {
            policy: p,
            internal: p.asn == AS,
            router_id: Ipv4Addr::new(10, 0, 0, id),
            local_addr: Some(ip("10.0.0.1")),
            families: &BOTH,
        }
    }

    fn from<'a>(p: &'a PeerPolicy, id: u8) -> Source<'a> {
        Source::Peer {
            policy: p,
            internal: p.asn == AS,
            router_id: Ipv4Addr::new(10, 0, 0, id),
        }
    }

    fn learned() -> PathAttrs {
        PathAttrs {
            next_hop: Some(ip("10.0.0.2")),
            local_pref: Some(100),
            ..Default::default()
        }
    }

    fn block() -> IpNetwork {
        net("10.65.2.0/26")
    }

    #[test]
    fn our_blocks_go_everywhere_with_next_hop_self() {
        let l = local(false);
        let mesh = peer("10.0.0.3", AS);
        let tor = peer("10.0.0.254", 65000);
        let own = PathAttrs::default();
        let to_mesh = export(&l, &block(), &Source::Local, &own, &target(&mesh, 3)).unwrap();
        assert_eq!(to_mesh.next_hop, Some(ip("10.0.0.1")));
        assert_eq!(to_mesh.local_pref, Some(100));
        assert!(to_mesh.as_path.is_empty());
        let to_tor = export(&l, &block(), &Source::Local, &own, &target(&tor, 254)).unwrap();
        assert_eq!(to_tor.as_path, AsPath::sequence([AS]));
        assert_eq!(to_tor.local_pref, None);
        assert_eq!(to_tor.next_hop, Some(ip("10.0.0.1")));
    }

    #[test]
    fn ibgp_learned_routes_are_not_sent_to_other_ibgp_peers_without_reflection() {
        let l = local(false);
        let a = peer("10.0.0.2", AS);
        let b = peer("10.0.0.3", AS);
        assert!(export(&l, &block(), &from(&a, 2), &learned(), &target(&b, 3)).is_none());
    }

    #[test]
    fn reflector_sends_client_routes_to_everyone() {
        let l = local(true);
        let mut client = peer("10.0.0.2", AS);
        client.rr_client = true;
        let mut other_client = peer("10.0.0.3", AS);
        other_client.rr_client = true;
        let non_client = peer("10.0.0.4", AS);
        for dst in [&other_client, &non_client] {
            let a = export(&l, &block(), &from(&client, 2), &learned(), &target(dst, 9)).unwrap();
            assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
            assert_eq!(a.cluster_list, vec![Ipv4Addr::new(1, 1, 1, 1)]);
            assert_eq!(
                a.next_hop,
                Some(ip("10.0.0.2")),
                "reflection keeps the next hop"
            );
        }
    }

    #[test]
    fn next_hop_mode_self_rewrites_reflected_and_external_routes() {
        let l = local(true);
        let mut client = peer("10.0.0.2", AS);
        client.rr_client = true;
        let mut other = peer("10.0.0.3", AS);
        other.rr_client = true;
        other.next_hop_self = true;
        let a = export(
            &l,
            &block(),
            &from(&client, 2),
            &learned(),
            &target(&other, 3),
        )
        .unwrap();
        assert_eq!(
            a.next_hop,
            Some(ip("10.0.0.1")),
            "reflected with next hop self"
        );
        // Reflection is otherwise unchanged.
        assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.cluster_list, vec![Ipv4Addr::new(1, 1, 1, 1)]);
        // Self wins over keep towards an external peer.
        let mut tor = peer("10.0.0.254", 65000);
        tor.export_learned = true;
        tor.keep_next_hop = true;
        tor.next_hop_self = true;
        let a = export(
            &l,
            &block(),
            &from(&client, 2),
            &learned(),
            &target(&tor, 254),
        )
        .unwrap();
        assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
    }

    #[test]
    fn reflector_sends_non_client_routes_to_clients_only() {
        let l = local(true);
        let mut client = peer("10.0.0.2", AS);
        client.rr_client = true;
        let non_client = peer("10.0.0.4", AS);
        let other_non_client = peer("10.0.0.5", AS);
        assert!(
            export(
                &l,
                &block(),
                &from(&non_client, 4),
                &learned(),
                &target(&client, 2)
            )
            .is_some()
        );
        assert!(
            export(
                &l,
                &block(),
                &from(&non_client, 4),
                &learned(),
                &target(&other_non_client, 5)
            )
            .is_none()
        );
    }

    #[test]
    fn reflection_keeps_an_existing_originator_and_prepends_the_cluster_id() {
        let l = local(true);
        let mut client = peer("10.0.0.2", AS);
        client.rr_client = true;
        let mut a = learned();
        a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 7));
        a.cluster_list = vec![Ipv4Addr::new(2, 2, 2, 2)];
        let out = export(
            &l,
            &block(),
            &from(&client, 2),
            &a,
            &target(&peer("10.0.0.3", AS), 3),
        )
        .unwrap();
        assert_eq!(out.originator_id, Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(
            out.cluster_list,
            vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)]
        );
        // Not back to the originator.
        assert!(
            export(
                &l,
                &block(),
                &from(&client, 2),
                &a,
                &target(&peer("10.0.0.7", AS), 7)
            )
            .is_none()
        );
    }

    #[test]
    fn a_tor_gets_learned_routes_only_when_configured() {
        let l = local(false);
        let mesh = peer("10.0.0.2", AS);
        let mut tor = peer("10.0.0.254", 65000);
        assert!(
            export(
                &l,
                &block(),
                &from(&mesh, 2),
                &learned(),
                &target(&tor, 254)
            )
            .is_none()
        );
        tor.export_learned = true;
        let a = export(
            &l,
            &block(),
            &from(&mesh, 2),
            &learned(),
            &target(&tor, 254),
        )
        .unwrap();
        assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
        assert_eq!(a.as_path, AsPath::sequence([AS]));
        tor.keep_next_hop = true;
        let a = export(
            &l,
            &block(),
            &from(&mesh, 2),
            &learned(),
            &target(&tor, 254),
        )
        .unwrap();
        assert_eq!(a.next_hop, Some(ip("10.0.0.2")));
    }

    #[test]
    fn only_pod_routes_are_passed_on() {
        let l = local(false);
        let tor = peer("10.0.0.254", 65000);
        let mesh = peer("10.0.0.2", AS);
        // An external route from the ToR is not pushed into the mesh...
        assert!(
            export(
                &l,
                &net("192.0.2.0/24"),
                &from(&tor, 254),
                &learned(),
                &target(&mesh, 2)
            )
            .is_none()
        );
        // ...but a pod route from an external calico node is, with
        // LOCAL_PREF added.
        let mut ext_node = peer("10.0.1.1", 65001);
        ext_node.calico_node = true;
        let mut a = learned();
        a.local_pref = None;
        a.med = Some(7);
        let out = export(&l, &block(), &from(&ext_node, 11), &a, &target(&mesh, 2)).unwrap();
        assert_eq!(out.local_pref, Some(100));
        assert_eq!(out.med, Some(7), "MED travels inside the AS");
    }

    #[test]
    fn learned_med_is_not_sent_to_another_as() {
        let l = local(false);
        let mesh = peer("10.0.0.2", AS);
        let mut node = peer("10.0.1.1", 65001);
        node.calico_node = true;
        let mut a = learned();
        a.med = Some(7);
        let out = export(&l, &block(), &from(&mesh, 2), &a, &target(&node, 11)).unwrap();
        assert_eq!(out.med, None);
    }

    #[test]
    fn families_the_session_did_not_negotiate_are_not_sent() {
        let l = local(false);
        let mesh = peer("10.0.0.2", AS);
        let mut t = target(&mesh, 2);
        t.families = &[Family::Ipv6Unicast];
        assert!(export(&l, &block(), &Source::Local, &PathAttrs::default(), &t).is_none());
    }

    #[test]
    fn our_ipv6_block_over_an_ipv4_session_needs_a_configured_next_hop() {
        let l = local(false);
        let mut mesh = peer("10.0.0.2", AS);
        let v6 = net("fd65::/122");
        assert!(
            export(
                &l,
                &v6,
                &Source::Local,
                &PathAttrs::default(),
                &target(&mesh, 2)
            )
            .is_none()
        );
        mesh.next_hop_v6 = Some("fd00::1".parse().unwrap());
        let a = export(
            &l,
            &v6,
            &Source::Local,
            &PathAttrs::default(),
            &target(&mesh, 2),
        )
        .unwrap();
        assert_eq!(a.next_hop, Some(ip("fd00::1")));
    }

    fn rule(
        action: FilterAction,
        op: crate::policy::MatchOp,
        cidr: &str,
    ) -> crate::policy::FilterRule {
        crate::policy::FilterRule {
            action,
            ipv4: None,
            op: Some(op),
            cidr: Some(net(cidr)),
            min_len: None,
            max_len: None,
            remote_peers_only: false,
            interface: None,
        }
    }

    #[test]
    fn export_filters_reject_one_block_and_accept_learned_routes_for_a_router() {
        use crate::policy::MatchOp;
        let l = local(false);
        let mesh = peer("10.0.0.2", AS);
        let mut tor = peer("10.0.0.254", 65000);
        let own = PathAttrs::default();
        tor.export_filter = vec![
            rule(FilterAction::Reject, MatchOp::Equal, "10.65.9.0/26"),
            crate::policy::FilterRule {
                remote_peers_only: true,
                ..rule(FilterAction::Accept, MatchOp::In, "172.16.0.0/12")
            },
        ]
        .into();
        let t = target(&tor, 254);
        // The rejected block is not sent; the other one is.
        assert!(export(&l, &net("10.65.9.0/26"), &Source::Local, &own, &t).is_none());
        assert!(export(&l, &net("10.65.9.64/26"), &Source::Local, &own, &t).is_some());
        // A learned route outside the pools goes to the router only
        // because a rule accepts it...
        let learned_route = net("172.16.5.0/24");
        assert!(export(&l, &learned_route, &from(&mesh, 2), &learned(), &t).is_some());
        assert!(receives_learned(&l, &t));
        // ...and learned pod routes still do not (no rule matches: the
        // default, only our blocks).
        assert!(export(&l, &block(), &from(&mesh, 2), &learned(), &t).is_none());
        // An internal peer's route to another internal peer stays under
        // the split horizon even when accepted.
        let mut other = peer("10.0.0.3", AS);
        other.export_filter = vec![rule(FilterAction::Accept, MatchOp::In, "0.0.0.0/0")].into();
        assert!(
            export(
                &l,
                &block(),
                &from(&mesh, 2),
                &learned(),
                &target(&other, 3)
            )
            .is_none()
        );
    }
}
