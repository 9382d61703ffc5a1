//! What applying a configuration changes, decided on data alone (the
//! running configuration and the new one), for
//! [`Speaker::apply`](crate::speaker::Speaker::apply) to carry out:
//!
//! - the same configuration again (confd pushes every second) changes
//!   nothing at all;
//! - a new peer starts; a peer no longer listed stops with Cease / Peer
//!   De-configured and its routes go;
//! - a peer whose session parameters changed (address form, AS, port,
//!   timers, password, GTSM, families, being held down), or every peer
//!   when the speaker's AS or router ID changed, restarts: Cease / Other
//!   Configuration Change, then a new session. A new password is a new
//!   TCP-MD5 key, which the kernel holds per socket: the running
//!   connection keeps the old one, so only a new connection carries the
//!   new key. That peer restarts; no other session is touched;
//! - a peer whose policy, name, prefixes or BFD changed keeps its
//!   session, and the RIB gets its new policy;
//! - a peer whose configuration is identical is left alone.
//!
//! Peers are matched by canonical address, so an IPv4 peer written as
//! `::ffff:a.b.c.d` is the same peer.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::{Config, PeerConfig};
use crate::network::canonical;

/// What happens to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// Newly configured: start its session.
    Add,
    /// No longer configured: stop it, flush its routes.
    Remove,
    /// A new session is needed: stop it, flush its routes, start it anew.
    Restart,
    /// Same session, new policy (or name, prefixes, BFD).
    Update,
}

/// Counts of what an apply did, as `ApplyBgpConfigReply` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: u32,
    pub removed: u32,
    /// Restarted or updated in place.
    pub changed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPlan {
    /// The new configuration is the running one: do nothing.
    pub unchanged: bool,
    /// There is no running configuration (this process just started).
    pub first: bool,
    /// Every peer that changes, by canonical address: the running peers in
    /// their order first, then the new ones in theirs.
    pub peers: Vec<(IpAddr, PeerChange)>,
}

impl ApplyPlan {
    pub fn report(&self) -> ApplyReport {
        let mut r = ApplyReport::default();
        for (_, c) in &self.peers {
            match c {
                PeerChange::Add => r.added += 1,
                PeerChange::Remove => r.removed += 1,
                PeerChange::Restart | PeerChange::Update => r.changed += 1,
            }
        }
        r
    }

    /// The change planned for the peer at `addr` (canonical), if any.
    pub fn change(&self, addr: IpAddr) -> Option<PeerChange> {
        self.peers.iter().find(|(a, _)| *a == addr).map(|(_, c)| *c)
    }
}

/// The plan for moving from `old` (the running configuration, if any) to
/// `new`.
pub fn plan(old: Option<&Config>, new: &Config) -> ApplyPlan {
    let Some(old) = old else {
        return ApplyPlan {
            unchanged: false,
            first: true,
            peers: new
                .peers
                .iter()
                .map(|p| (canonical(p.address()), PeerChange::Add))
                .collect(),
        };
    };
    if old == new {
        return ApplyPlan {
            unchanged: true,
            first: false,
            peers: Vec::new(),
        };
    }
    // The OPEN carries our AS and BGP Identifier: every session restarts.
    let global_reset = old.asn != new.asn || old.router_id != new.router_id;
    let wanted: HashMap<IpAddr, &PeerConfig> = new
        .peers
        .iter()
        .map(|p| (canonical(p.address()), p))
        .collect();
    let mut peers = Vec::new();
    for p in &old.peers {
        let addr = canonical(p.address());
        let change = match wanted.get(&addr) {
            None => Some(PeerChange::Remove),
            Some(n) if global_reset || p.session_differs(n) => Some(PeerChange::Restart),
            Some(n) if *n != p => Some(PeerChange::Update),
            Some(_) => None,
        };
        if let Some(c) = change {
            peers.push((addr, c));
        }
    }
    let running: Vec<IpAddr> = old.peers.iter().map(|p| canonical(p.address())).collect();
    for p in &new.peers {
        let addr = canonical(p.address());
        if !running.contains(&addr) {
            peers.push((addr, PeerChange::Add));
        }
    }
    ApplyPlan {
        unchanged: false,
        first: false,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(peers: &str) -> Config {
        toml::from_str(&format!(
            "router_id = \"10.0.0.1\"\nasn = 64512\nadvertise = [\"10.65.1.0/26\"]\n{peers}"
        ))
        .unwrap()
    }

    const TWO: &str = "[[peers]]\naddress = \"10.0.0.2\"\nasn = 64512\n\
                       [[peers]]\naddress = \"10.0.0.3\"\nasn = 65000\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_configuration_adds_every_peer() {
        let p = plan(None, &config(TWO));
        assert!(p.first && !p.unchanged);
        assert_eq!(
            p.peers,
            vec![
                (ip("10.0.0.2"), PeerChange::Add),
                (ip("10.0.0.3"), PeerChange::Add)
            ]
        );
        assert_eq!(
            p.report(),
            ApplyReport {
                added: 2,
                removed: 0,
                changed: 0
            }
        );
    }

    #[test]
    fn an_unchanged_configuration_plans_nothing() {
        let p = plan(Some(&config(TWO)), &config(TWO));
        assert!(p.unchanged && !p.first);
        assert!(p.peers.is_empty());
        assert_eq!(p.report(), ApplyReport::default());
    }

    #[test]
    fn a_new_peer_is_added_and_the_others_are_left_alone() {
        let new = config(&format!(
            "{TWO}[[peers]]\naddress = \"10.0.0.4\"\nasn = 64512\n"
        ));
        let p = plan(Some(&config(TWO)), &new);
        assert!(!p.unchanged);
        assert_eq!(p.peers, vec![(ip("10.0.0.4"), PeerChange::Add)]);
    }

    #[test]
    fn a_peer_no_longer_listed_is_removed() {
        let new = config("[[peers]]\naddress = \"10.0.0.2\"\nasn = 64512\n");
        let p = plan(Some(&config(TWO)), &new);
        assert_eq!(p.peers, vec![(ip("10.0.0.3"), PeerChange::Remove)]);
        assert_eq!(p.report().removed, 1);
    }

    #[test]
    fn changed_session_parameters_restart_the_peer() {
        let old = config(TWO);
        let mut new = old.clone();
        new.peers[1].session.hold_time = 30;
        assert_eq!(
            plan(Some(&old), &new).peers,
            vec![(ip("10.0.0.3"), PeerChange::Restart)]
        );
        let mut new = old.clone();
        new.peers[0].policy.asn = 64513;
        assert_eq!(
            plan(Some(&old), &new).peers,
            vec![(ip("10.0.0.2"), PeerChange::Restart)]
        );
    }

    #[test]
    fn a_new_password_restarts_that_peer_and_no_other() {
        let old = config(
            "[[peers]]\naddress = \"10.0.0.2\"\nasn = 64512\npassword = \"one\"\n\
             [[peers]]\naddress = \"10.0.0.3\"\nasn = 65000\npassword = \"other\"\n",
        );
        let mut new = old.clone();
        new.peers[0].session.password = Some("two".into());
        let p = plan(Some(&old), &new);
        assert_eq!(p.peers, vec![(ip("10.0.0.2"), PeerChange::Restart)]);
        assert_eq!(p.report().changed, 1);
        // A password set where there was none, and removed: the same.
        let mut new = old.clone();
        new.peers[1].session.password = None;
        assert_eq!(
            plan(Some(&old), &new).peers,
            vec![(ip("10.0.0.3"), PeerChange::Restart)]
        );
    }

    #[test]
    fn holding_a_peer_down_and_releasing_it_restarts_that_peer_alone() {
        let old = config(TWO);
        let mut held = old.clone();
        held.peers[1].session.held_down = Some("password secret missing".into());
        assert_eq!(
            plan(Some(&old), &held).peers,
            vec![(ip("10.0.0.3"), PeerChange::Restart)]
        );
        let mut released = held.clone();
        released.peers[1].session.held_down = None;
        released.peers[1].session.password = Some("arrived".into());
        assert_eq!(
            plan(Some(&held), &released).peers,
            vec![(ip("10.0.0.3"), PeerChange::Restart)]
        );
        // Held down for the same reason again: nothing to do.
        assert!(plan(Some(&held), &held.clone()).unchanged);
    }

    #[test]
    fn a_policy_only_change_updates_the_peer_in_place() {
        let old = config(TWO);
        let mut new = old.clone();
        new.peers[1].policy.max_prefixes = Some(100);
        new.peers[0].name = Some("Mesh_10_0_0_2".into());
        let p = plan(Some(&old), &new);
        assert_eq!(
            p.peers,
            vec![
                (ip("10.0.0.2"), PeerChange::Update),
                (ip("10.0.0.3"), PeerChange::Update)
            ]
        );
        assert_eq!(p.report().changed, 2);
    }

    #[test]
    fn a_speaker_wide_change_without_peer_changes_plans_no_peer_change() {
        let old = config(TWO);
        let mut new = old.clone();
        new.advertise.push("10.65.2.0/26".parse().unwrap());
        let p = plan(Some(&old), &new);
        assert!(!p.unchanged);
        assert!(p.peers.is_empty());
    }

    #[test]
    fn a_new_router_id_restarts_every_peer() {
        let old = config(TWO);
        let mut new = old.clone();
        new.router_id = "10.0.0.9".parse().unwrap();
        assert_eq!(
            plan(Some(&old), &new).peers,
            vec![
                (ip("10.0.0.2"), PeerChange::Restart),
                (ip("10.0.0.3"), PeerChange::Restart)
            ]
        );
    }

    #[test]
    fn peers_match_by_canonical_address() {
        let old = config(TWO);
        let mut new = old.clone();
        new.peers[1].policy.address = ip("::ffff:10.0.0.3");
        new.peers[1].policy.max_prefixes = Some(1);
        // The same peer, but written differently: a new session, not a
        // removal and an addition.
        assert_eq!(
            plan(Some(&old), &new).peers,
            vec![(ip("10.0.0.3"), PeerChange::Restart)]
        );
    }
}
