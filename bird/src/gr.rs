//! Graceful restart (RFC 4724, with RFC 8538's "N" bit) as decisions over
//! plain data; the RIB marks, keeps and sweeps the stale paths.
//!
//! As the *receiving* speaker (the helper), when a session goes down:
//! - the peer's routes are kept, marked stale, for the families it listed
//!   in its graceful-restart capability, if the session ended without a
//!   NOTIFICATION (RFC 4724 section 4.2), or with one other than Hard
//!   Reset when both sides sent the "N" bit (RFC 8538 section 4);
//! - they stay until the session is back and the peer's End-of-RIB for the
//!   family arrives (then what the peer did not re-announce is removed),
//!   or until the peer's Restart Time passes without a new session, or
//!   until [`STALE_ROUTES_TIME`] passes after the new session without an
//!   End-of-RIB;
//! - when the new OPEN does not list the family with the Forwarding State
//!   bit, the peer did not keep its forwarding state, and the stale routes
//!   go at once (RFC 4724 section 4.2: "MUST immediately remove all the
//!   stale routes").
//!
//! As the *restarting* speaker: bird's own routes are its blocks, which
//! felix keeps in the kernel while bird is down. bird advertises every
//! family with the Forwarding State bit set, the Restart State bit in the
//! OPENs of its first sessions, and sends End-of-RIB after its initial
//! updates once its own table has converged (the RIB's start-up
//! deferral), so a reflector does not make its clients sweep routes it has
//! not relearned yet.

use std::time::Duration;

use crate::fsm::{DownCause, Negotiated};
use crate::packet::Family;

/// How long stale routes wait for the End-of-RIB of a session that came
/// back (RFC 4724 section 4.2's "locally configurable" bound).
pub const STALE_ROUTES_TIME: Duration = Duration::from_secs(300);

/// The families whose routes are kept (stale) when a session ends for
/// `cause`; empty means flush everything now. `n_bit` is whether we sent
/// the "N" bit ourselves.
pub fn keep_on_down(cause: &DownCause, neg: &Negotiated, n_bit: bool) -> Vec<Family> {
    let Some(gr) = &neg.peer_gr else {
        return Vec::new();
    };
    if gr.restart_time == 0 {
        return Vec::new();
    }
    let graceful = match cause {
        DownCause::ConnectionLost => true,
        DownCause::Sent(n) | DownCause::Received(n) => {
            n_bit && gr.notification && !n.is_hard_reset()
        }
    };
    if !graceful {
        return Vec::new();
    }
    neg.families
        .iter()
        .copied()
        .filter(|f| gr.lists(*f))
        .collect()
}

/// How long to wait for the peer to come back.
pub fn restart_time(neg: &Negotiated) -> Duration {
    Duration::from_secs(
        neg.peer_gr
            .as_ref()
            .map_or(0, |g| u64::from(g.restart_time)),
    )
}

/// Whether stale routes of `family` survive the new session `neg`: the
/// family is negotiated and listed with the Forwarding State bit.
pub fn keep_on_reconnect(family: Family, neg: &Negotiated) -> bool {
    neg.families.contains(&family) && neg.peer_gr.as_ref().is_some_and(|g| g.preserved(family))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::PeerGr;
    use crate::packet::notification::{Notification, cease_sub};

    fn neg(gr: Option<PeerGr>) -> Negotiated {
        Negotiated {
            peer_id: "10.0.0.2".parse().unwrap(),
            peer_as: 64512,
            hold_time: 90,
            four_octet_as: true,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            route_refresh: true,
            peer_gr: gr,
        }
    }

    fn gr(n: bool, fwd: bool) -> PeerGr {
        PeerGr {
            restarting: false,
            notification: n,
            restart_time: 120,
            families: vec![(Family::Ipv4Unicast, fwd)],
        }
    }

    #[test]
    fn tcp_loss_keeps_the_families_the_peer_listed() {
        let n = neg(Some(gr(false, true)));
        assert_eq!(
            keep_on_down(&DownCause::ConnectionLost, &n, true),
            vec![Family::Ipv4Unicast]
        );
        assert_eq!(restart_time(&n), Duration::from_secs(120));
    }

    #[test]
    fn without_the_capability_everything_is_flushed() {
        assert!(keep_on_down(&DownCause::ConnectionLost, &neg(None), true).is_empty());
        let mut g = gr(true, true);
        g.restart_time = 0;
        assert!(keep_on_down(&DownCause::ConnectionLost, &neg(Some(g)), true).is_empty());
    }

    #[test]
    fn notification_is_graceful_only_when_both_sides_set_n() {
        let cease = Notification::cease(cease_sub::ADMINISTRATIVE_SHUTDOWN);
        for cause in [
            DownCause::Sent(cease.clone()),
            DownCause::Received(cease.clone()),
        ] {
            assert!(keep_on_down(&cause, &neg(Some(gr(false, true))), true).is_empty());
            assert!(keep_on_down(&cause, &neg(Some(gr(true, true))), false).is_empty());
            assert_eq!(
                keep_on_down(&cause, &neg(Some(gr(true, true))), true),
                vec![Family::Ipv4Unicast]
            );
        }
        let hold = DownCause::Sent(Notification::hold_timer_expired());
        assert_eq!(
            keep_on_down(&hold, &neg(Some(gr(true, true))), true).len(),
            1
        );
    }

    #[test]
    fn hard_reset_always_flushes() {
        let hard = Notification::hard_reset(&Notification::cease(cease_sub::PEER_DECONFIGURED));
        assert!(
            keep_on_down(&DownCause::Received(hard), &neg(Some(gr(true, true))), true).is_empty()
        );
    }

    #[test]
    fn stale_routes_survive_reconnect_only_with_the_forwarding_bit() {
        assert!(keep_on_reconnect(
            Family::Ipv4Unicast,
            &neg(Some(gr(false, true)))
        ));
        assert!(!keep_on_reconnect(
            Family::Ipv4Unicast,
            &neg(Some(gr(false, false)))
        ));
        assert!(!keep_on_reconnect(
            Family::Ipv6Unicast,
            &neg(Some(gr(false, true)))
        ));
        assert!(!keep_on_reconnect(Family::Ipv4Unicast, &neg(None)));
    }
}
