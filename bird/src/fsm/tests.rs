//! State x event tests of the session FSM; no sockets. Test names state
//! the RFC 4271 action expected.

use super::*;
use crate::packet::capability::Capability;
use crate::packet::notification::cease_sub;

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER_ID_HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
const PEER_ID_LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn cfg(passive: bool) -> Config {
    Config {
        local_as: 65000,
        local_id: LOCAL_ID,
        peer_as: 65001,
        hold_time: 90,
        passive,
        wait_for_path: false,
        connect_retry: Duration::from_secs(5),
        connect_retry_max: Duration::from_secs(20),
        idle_hold: Duration::from_secs(1),
        idle_hold_max: Duration::from_secs(8),
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        graceful_restart: Some(GracefulRestart {
            restart_time: 120,
            restarting: true,
        }),
    }
}

fn peer_open(id: Ipv4Addr, asn: u32, hold: u16) -> Open {
    Open::new(
        asn,
        hold,
        id,
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::FourOctetAs(asn),
            Capability::RouteRefresh,
        ],
    )
}

fn sent_notification(actions: &[Action], conn: ConnId) -> Option<(u8, u8)> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            conn: c,
            msg: Msg::Notification(n),
        } if *c == conn => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn is_down(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Down(_)))
}

fn has(actions: &[Action], want: &Action) -> bool {
    actions.contains(want)
}

fn timer_started(actions: &[Action], timer: Timer) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::StartTimer { timer: t, after } if *t == timer => Some(*after),
        _ => None,
    })
}

/// Drives a fresh FSM to OpenSent on C1 (outgoing).
fn open_sent() -> Fsm {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Outgoing,
    });
    assert_eq!(f.state(), State::OpenSent);
    f
}

fn open_confirm() -> Fsm {
    let mut f = open_sent();
    f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(f.state(), State::OpenConfirm);
    f
}

fn established() -> Fsm {
    let mut f = open_confirm();
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert!(a.iter().any(|a| matches!(a, Action::Established { .. })));
    assert_eq!(f.state(), State::Established);
    f
}

#[test]
fn start_connects_and_arms_connect_retry() {
    let mut f = Fsm::new(cfg(false));
    assert_eq!(f.state(), State::Idle);
    let a = f.handle(Event::Start);
    assert_eq!(f.state(), State::Connect);
    assert!(has(&a, &Action::Connect));
    assert_eq!(
        timer_started(&a, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
}

#[test]
fn start_of_a_passive_peer_waits_in_active_without_connecting() {
    let mut f = Fsm::new(cfg(true));
    let a = f.handle(Event::Start);
    assert_eq!(f.state(), State::Active);
    assert!(!has(&a, &Action::Connect));
    assert_eq!(timer_started(&a, Timer::ConnectRetry), None);
}

#[test]
fn path_down_leaves_the_peers_next_connection_welcome() {
    let mut f = established_with_n_bit(true);
    f.handle(Event::PathDown {
        notification: Notification::cease(cease_sub::BFD_DOWN),
    });
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert!(!has(&a, &Action::Close { conn: C2 }));
    assert_eq!(f.state(), State::OpenSent);
}

#[test]
fn kick_takes_a_passive_peer_out_of_idle_to_accept_connections() {
    let mut f = Fsm::new(cfg(true));
    f.handle(Event::Start);
    f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Incoming,
    });
    f.handle(Event::Notification {
        conn: C1,
        notification: Notification::cease(cease_sub::CONNECTION_REJECTED),
    });
    assert_eq!(f.state(), State::Idle);
    let a = f.handle(Event::Kick);
    assert_eq!(f.state(), State::Active);
    assert!(has(&a, &Action::StopTimer(Timer::IdleHold)));
    assert!(!has(&a, &Action::Connect));
}

#[test]
fn connect_failure_moves_to_active_and_connect_retry_reconnects() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    let a = f.handle(Event::ConnectFailed {
        reason: "refused".into(),
    });
    assert_eq!(f.state(), State::Active);
    assert!(timer_started(&a, Timer::ConnectRetry).is_some());
    assert!(f.last_error().unwrap().contains("refused"));
    let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert_eq!(f.state(), State::Connect);
    assert!(has(&a, &Action::Connect));
}

#[test]
fn connect_retry_backs_off_on_repeated_failures_up_to_the_ceiling() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    let mut waits = Vec::new();
    for _ in 0..4 {
        let a = f.handle(Event::ConnectFailed {
            reason: "refused".into(),
        });
        waits.push(timer_started(&a, Timer::ConnectRetry).unwrap().as_secs());
        f.handle(Event::TimerExpired(Timer::ConnectRetry));
    }
    assert_eq!(waits, vec![5, 10, 20, 20]);
    // Once established, the next outage starts from the base time again.
    f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Outgoing,
    });
    f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    f.handle(Event::Keepalive { conn: C1 });
    f.handle(Event::TimerExpired(Timer::Hold(C1)));
    f.handle(Event::TimerExpired(Timer::IdleHold));
    let a = f.handle(Event::ConnectFailed {
        reason: "refused".into(),
    });
    assert_eq!(
        timer_started(&a, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
}

#[test]
fn connect_retry_expiry_in_connect_restarts_the_attempt() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert_eq!(f.state(), State::Connect);
    assert_eq!(a[0], Action::AbortConnect);
    assert!(has(&a, &Action::Connect));
}

#[test]
fn connection_up_sends_open_and_arms_the_large_hold_timer() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    let a = f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Outgoing,
    });
    assert_eq!(f.state(), State::OpenSent);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Send { conn: C1, msg: Msg::Open(o) } if o.asn() == 65000))
    );
    assert_eq!(timer_started(&a, Timer::Hold(C1)), Some(OPEN_HOLD));
    assert!(has(&a, &Action::StopTimer(Timer::ConnectRetry)));
}

#[test]
fn incoming_connection_in_active_is_accepted() {
    let mut f = Fsm::new(cfg(true));
    f.handle(Event::Start);
    let a = f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Incoming,
    });
    assert_eq!(f.state(), State::OpenSent);
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Send {
            msg: Msg::Open(_),
            ..
        }
    )));
}

#[test]
fn incoming_connection_in_connect_aborts_the_outgoing_attempt() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    let a = f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Incoming,
    });
    assert!(has(&a, &Action::AbortConnect));
    assert_eq!(f.state(), State::OpenSent);
}

#[test]
fn incoming_connection_in_idle_is_refused() {
    let mut f = Fsm::new(cfg(true));
    let a = f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Incoming,
    });
    assert_eq!(a, vec![Action::Close { conn: C1 }]);
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn valid_open_in_open_sent_sends_keepalive_and_negotiates_the_smaller_hold_time() {
    let mut f = open_sent();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(f.state(), State::OpenConfirm);
    assert!(has(
        &a,
        &Action::Send {
            conn: C1,
            msg: Msg::Keepalive
        }
    ));
    assert_eq!(
        timer_started(&a, Timer::Hold(C1)),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        timer_started(&a, Timer::Keepalive(C1)),
        Some(Duration::from_secs(10))
    );
    let n = f.negotiated().unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(n.four_octet_as && n.route_refresh);
}

#[test]
fn keepalive_in_open_confirm_establishes_the_session() {
    let mut f = open_confirm();
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert_eq!(f.state(), State::Established);
    assert!(a.iter().any(|a| matches!(a, Action::Established { conn: C1, negotiated } if negotiated.peer_id == PEER_ID_HIGH)));
    assert_eq!(
        timer_started(&a, Timer::Hold(C1)),
        Some(Duration::from_secs(30))
    );
    assert_eq!(f.established().map(|(c, _)| c), Some(C1));
}

#[test]
fn keepalive_in_open_sent_is_fsm_error_unexpected_in_open_sent() {
    let mut f = open_sent();
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert_eq!(sent_notification(&a, C1), Some((5, 1)));
    assert!(has(&a, &Action::Close { conn: C1 }));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn update_in_open_confirm_is_fsm_error_unexpected_in_open_confirm() {
    let mut f = open_confirm();
    let a = f.handle(Event::Update { conn: C1 });
    assert_eq!(sent_notification(&a, C1), Some((5, 2)));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn open_in_established_is_fsm_error_and_drops_the_routes() {
    let mut f = established();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(sent_notification(&a, C1), Some((5, 3)));
    assert!(is_down(&a));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn open_from_the_wrong_as_is_bad_peer_as() {
    let mut f = open_sent();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65099, 30),
    });
    assert_eq!(sent_notification(&a, C1), Some((2, 2)));
    assert_eq!(f.state(), State::Idle);
    assert!(timer_started(&a, Timer::IdleHold).is_some());
}

#[test]
fn open_with_hold_time_of_two_seconds_is_unacceptable_hold_time() {
    let mut f = open_sent();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 2),
    });
    assert_eq!(sent_notification(&a, C1), Some((2, 6)));
}

#[test]
fn open_with_zero_identifier_is_bad_bgp_identifier() {
    let mut f = open_sent();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(Ipv4Addr::UNSPECIFIED, 65001, 90),
    });
    assert_eq!(sent_notification(&a, C1), Some((2, 3)));
}

#[test]
fn internal_peer_with_our_identifier_is_bad_bgp_identifier() {
    let mut c = cfg(false);
    c.peer_as = 65000;
    let open = peer_open(LOCAL_ID, 65000, 90);
    assert_eq!(negotiate(&c, &open).unwrap_err().subcode, 3);
    // An external peer may share it (RFC 6286).
    assert!(negotiate(&cfg(false), &peer_open(LOCAL_ID, 65001, 90)).is_ok());
}

#[test]
fn peer_without_multiprotocol_capabilities_speaks_ipv4_only() {
    let open = Open::new(65001, 90, PEER_ID_HIGH, vec![]);
    let n = negotiate(&cfg(false), &open).unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.four_octet_as);
    let open = Open::new(
        65001,
        90,
        PEER_ID_HIGH,
        vec![Capability::multiprotocol(Family::Ipv6Unicast)],
    );
    assert_eq!(
        negotiate(&cfg(false), &open).unwrap().families,
        vec![Family::Ipv6Unicast]
    );
}

#[test]
fn four_octet_peer_as_is_read_from_the_capability() {
    let mut c = cfg(false);
    c.peer_as = 4_200_000_001;
    let open = peer_open(PEER_ID_HIGH, 4_200_000_001, 90);
    assert_eq!(u32::from(open.my_as), crate::packet::AS_TRANS);
    assert_eq!(negotiate(&c, &open).unwrap().peer_as, 4_200_000_001);
}

#[test]
fn hold_time_zero_disables_keepalives_and_the_hold_timer() {
    let mut f = open_sent();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 0),
    });
    assert!(has(&a, &Action::StopTimer(Timer::Hold(C1))));
    assert_eq!(timer_started(&a, Timer::Keepalive(C1)), None);
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert_eq!(timer_started(&a, Timer::Hold(C1)), None);
    assert_eq!(f.state(), State::Established);
}

#[test]
fn hold_timer_expiry_in_established_sends_hold_timer_expired_and_drops_routes() {
    let mut f = established();
    let a = f.handle(Event::TimerExpired(Timer::Hold(C1)));
    assert_eq!(sent_notification(&a, C1), Some((4, 0)));
    assert!(is_down(&a));
    assert_eq!(f.state(), State::Idle);
    assert_eq!(f.last_error(), Some("hold timer expired"));
}

#[test]
fn hold_timer_expiry_in_open_sent_sends_hold_timer_expired() {
    let mut f = open_sent();
    let a = f.handle(Event::TimerExpired(Timer::Hold(C1)));
    assert_eq!(sent_notification(&a, C1), Some((4, 0)));
    assert!(!is_down(&a));
}

#[test]
fn keepalive_timer_in_established_sends_keepalive_and_rearms() {
    let mut f = established();
    let a = f.handle(Event::TimerExpired(Timer::Keepalive(C1)));
    assert!(has(
        &a,
        &Action::Send {
            conn: C1,
            msg: Msg::Keepalive
        }
    ));
    assert_eq!(
        timer_started(&a, Timer::Keepalive(C1)),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn update_and_keepalive_in_established_restart_the_hold_timer() {
    let mut f = established();
    for ev in [
        Event::Update { conn: C1 },
        Event::Keepalive { conn: C1 },
        Event::RouteRefresh { conn: C1 },
    ] {
        let a = f.handle(ev);
        assert_eq!(
            timer_started(&a, Timer::Hold(C1)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(f.state(), State::Established);
    }
}

#[test]
fn notification_received_goes_idle_without_replying() {
    let mut f = established();
    let a = f.handle(Event::Notification {
        conn: C1,
        notification: Notification::cease(cease_sub::ADMINISTRATIVE_SHUTDOWN),
    });
    assert_eq!(sent_notification(&a, C1), None);
    assert!(has(&a, &Action::Close { conn: C1 }));
    assert!(is_down(&a));
    assert_eq!(f.state(), State::Idle);
    assert!(f.last_error().unwrap().contains("Administrative Shutdown"));
}

#[test]
fn decode_error_sends_its_notification_and_resets() {
    let mut f = established();
    let a = f.handle(Event::DecodeError {
        conn: C1,
        notification: Notification::new(3, 1),
    });
    assert_eq!(sent_notification(&a, C1), Some((3, 1)));
    assert!(is_down(&a));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn tcp_close_in_open_sent_moves_to_active_and_retries() {
    let mut f = open_sent();
    let a = f.handle(Event::Closed {
        conn: C1,
        reason: "eof".into(),
    });
    assert_eq!(f.state(), State::Active);
    assert!(timer_started(&a, Timer::ConnectRetry).is_some());
}

#[test]
fn tcp_close_in_established_goes_idle_and_waits_idle_hold() {
    let mut f = established();
    let a = f.handle(Event::Closed {
        conn: C1,
        reason: "reset".into(),
    });
    assert_eq!(f.state(), State::Idle);
    assert!(is_down(&a));
    assert_eq!(
        timer_started(&a, Timer::IdleHold),
        Some(Duration::from_secs(1))
    );
    let a = f.handle(Event::TimerExpired(Timer::IdleHold));
    assert_eq!(f.state(), State::Connect);
    assert!(has(&a, &Action::Connect));
}

#[test]
fn idle_hold_doubles_on_repeated_errors_and_resets_once_established() {
    let mut f = open_sent();
    let mut waits = Vec::new();
    for _ in 0..5 {
        let a = f.handle(Event::TimerExpired(Timer::Hold(C1)));
        waits.push(timer_started(&a, Timer::IdleHold).unwrap().as_secs());
        f.handle(Event::TimerExpired(Timer::IdleHold));
        f.handle(Event::Connected {
            conn: C1,
            dir: Direction::Outgoing,
        });
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 8]);
    f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    f.handle(Event::Keepalive { conn: C1 });
    let a = f.handle(Event::TimerExpired(Timer::Hold(C1)));
    assert_eq!(
        timer_started(&a, Timer::IdleHold),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn stop_in_established_sends_cease_administrative_shutdown() {
    let mut f = established();
    let a = f.handle(Event::Stop);
    assert_eq!(sent_notification(&a, C1), Some((6, 2)));
    assert!(is_down(&a));
    assert_eq!(f.state(), State::Idle);
    // Stopped: no automatic restart, and new connections are refused.
    let a = f.handle(Event::TimerExpired(Timer::IdleHold));
    assert!(a.is_empty());
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert_eq!(a, vec![Action::Close { conn: C2 }]);
}

/// Outgoing C1 in OpenSent, then the peer's own connection C2 arrives.
fn collision() -> (Fsm, Vec<Action>) {
    let mut f = open_sent();
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    (f, a)
}

#[test]
fn second_connection_during_open_sent_gets_its_own_open() {
    let (f, a) = collision();
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Send {
            conn: C2,
            msg: Msg::Open(_)
        }
    )));
    assert_eq!(timer_started(&a, Timer::Hold(C2)), Some(OPEN_HOLD));
    assert_eq!(f.state(), State::OpenSent);
}

#[test]
fn collision_with_higher_local_identifier_keeps_our_outgoing_connection() {
    let (mut f, _) = collision();
    // The peer's identifier is lower than ours: its connection loses.
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(PEER_ID_LOW, 65001, 30),
    });
    assert_eq!(sent_notification(&a, C2), Some((6, 7)));
    assert!(has(&a, &Action::Close { conn: C2 }));
    assert!(!has(&a, &Action::Close { conn: C1 }));
    assert_eq!(f.state(), State::OpenSent, "C1 still waits for its OPEN");
    f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_LOW, 65001, 30),
    });
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn collision_with_lower_local_identifier_keeps_the_peers_connection() {
    let (mut f, _) = collision();
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(sent_notification(&a, C1), Some((6, 7)));
    assert!(has(&a, &Action::Close { conn: C1 }));
    assert!(has(
        &a,
        &Action::Send {
            conn: C2,
            msg: Msg::Keepalive
        }
    ));
    assert_eq!(f.state(), State::OpenConfirm);
    f.handle(Event::Keepalive { conn: C2 });
    assert_eq!(f.established().map(|(c, _)| c), Some(C2));
}

#[test]
fn collision_detected_by_open_on_the_existing_connection_too() {
    let (mut f, _) = collision();
    let a = f.handle(Event::Open {
        conn: C1,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    // C1 is ours and the peer's identifier is higher: C1 loses, and its
    // OPEN is not processed; C2 waits for its own OPEN.
    assert_eq!(sent_notification(&a, C1), Some((6, 7)));
    assert_eq!(f.state(), State::OpenSent);
    f.handle(Event::Open {
        conn: C2,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn collision_with_equal_identifiers_keeps_the_larger_as() {
    let (mut f, _) = collision();
    // Same identifier as ours; we are AS 65000 < 65001, so the peer's
    // connection (incoming C2) survives.
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(LOCAL_ID, 65001, 30),
    });
    assert!(has(&a, &Action::Close { conn: C1 }));
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn connection_attempt_while_established_is_closed_with_collision_cease() {
    let mut f = established();
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert_eq!(sent_notification(&a, C2), Some((6, 7)));
    assert!(has(&a, &Action::Close { conn: C2 }));
    assert_eq!(f.established().map(|(c, _)| c), Some(C1));
}

#[test]
fn second_connection_is_closed_when_the_first_becomes_established() {
    let mut f = open_confirm();
    f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert_eq!(sent_notification(&a, C2), Some((6, 7)));
    assert_eq!(f.state(), State::Established);
}

#[test]
fn losing_the_main_connection_promotes_the_second_one() {
    let (mut f, _) = collision();
    let a = f.handle(Event::Closed {
        conn: C1,
        reason: "reset".into(),
    });
    assert!(!has(&a, &Action::Connect));
    assert_eq!(f.state(), State::OpenSent);
    f.handle(Event::Open {
        conn: C2,
        open: peer_open(PEER_ID_HIGH, 65001, 30),
    });
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn unexpected_message_on_the_second_connection_only_drops_it() {
    let (mut f, _) = collision();
    let a = f.handle(Event::Keepalive { conn: C2 });
    assert_eq!(sent_notification(&a, C2), Some((5, 1)));
    assert_eq!(f.state(), State::OpenSent);
    assert!(!has(&a, &Action::Close { conn: C1 }));
}

#[test]
fn events_for_unknown_connections_are_ignored() {
    let mut f = established();
    for ev in [
        Event::Keepalive { conn: ConnId(77) },
        Event::Update { conn: ConnId(77) },
        Event::TimerExpired(Timer::Hold(ConnId(77))),
        Event::Closed {
            conn: ConnId(77),
            reason: "x".into(),
        },
    ] {
        assert!(f.handle(ev).is_empty());
    }
    assert_eq!(f.state(), State::Established);
}

#[test]
fn our_open_offers_families_four_octet_as_route_refresh_and_graceful_restart() {
    let open = cfg(false).open();
    assert!(open.has(&Capability::multiprotocol(Family::Ipv6Unicast)));
    assert!(open.has(&Capability::RouteRefresh));
    assert_eq!(open.four_octet_as(), Some(65000));
    let gr = open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart {
            restart_time: 120,
            restarting: true,
            notification: true,
            families,
        } => Some(families.clone()),
        _ => None,
    });
    // Both families, each with the Forwarding State bit.
    let fams = gr.expect("graceful restart capability with R and N set");
    assert_eq!(fams.len(), 2);
    assert!(fams.iter().all(|f| f.forwarding_preserved));
}

#[test]
fn restart_state_bit_is_only_in_opens_before_the_first_session() {
    let mut f = established();
    f.handle(Event::Closed {
        conn: C1,
        reason: "reset".into(),
    });
    let open = f.config().open();
    assert!(open.capabilities.iter().any(|c| matches!(
        c,
        Capability::GracefulRestart {
            restarting: false,
            ..
        }
    )));
}

#[test]
fn connection_lost_in_established_is_down_without_notification() {
    let mut f = established();
    let a = f.handle(Event::Closed {
        conn: C1,
        reason: "reset".into(),
    });
    assert!(a.contains(&Action::Down(DownCause::ConnectionLost)));
}

#[test]
fn received_notification_is_the_down_cause() {
    let mut f = established();
    let n = Notification::cease(cease_sub::ADMINISTRATIVE_SHUTDOWN);
    let a = f.handle(Event::Notification {
        conn: C1,
        notification: n.clone(),
    });
    assert!(a.contains(&Action::Down(DownCause::Received(n))));
}

fn established_with_n_bit(peer_n: bool) -> Fsm {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Outgoing,
    });
    let mut open = peer_open(PEER_ID_HIGH, 65001, 90);
    open.capabilities.push(Capability::GracefulRestart {
        restarting: false,
        notification: peer_n,
        restart_time: 60,
        families: vec![],
    });
    f.handle(Event::Open { conn: C1, open });
    f.handle(Event::Keepalive { conn: C1 });
    assert_eq!(f.state(), State::Established);
    f
}

#[test]
fn reset_for_max_prefixes_is_a_hard_reset_when_both_sides_set_n() {
    let limit = Notification::max_prefixes(Family::Ipv4Unicast, 5);
    let mut f = established_with_n_bit(true);
    let a = f.handle(Event::Reset {
        notification: limit.clone(),
        hard_reset: true,
    });
    assert_eq!(sent_notification(&a, C1), Some((6, cease_sub::HARD_RESET)));
    assert!(
        a.contains(&Action::Down(DownCause::Sent(Notification::hard_reset(
            &limit
        ))))
    );
    assert_eq!(f.state(), State::Idle);
    // The session comes back after the IdleHold time.
    let a = f.handle(Event::TimerExpired(Timer::IdleHold));
    assert!(a.contains(&Action::Connect));

    let mut f = established_with_n_bit(false);
    let a = f.handle(Event::Reset {
        notification: limit.clone(),
        hard_reset: true,
    });
    assert_eq!(
        sent_notification(&a, C1),
        Some((6, cease_sub::MAX_PREFIXES))
    );
}

#[test]
fn stop_is_a_plain_administrative_shutdown_even_with_n() {
    let mut f = established_with_n_bit(true);
    let a = f.handle(Event::Stop);
    assert_eq!(
        sent_notification(&a, C1),
        Some((6, cease_sub::ADMINISTRATIVE_SHUTDOWN))
    );
    let mut f = established_with_n_bit(true);
    let a = f.handle(Event::Shutdown {
        notification: Notification::cease(cease_sub::PEER_DECONFIGURED),
        hard_reset: true,
    });
    assert_eq!(sent_notification(&a, C1), Some((6, cease_sub::HARD_RESET)));
    assert!(f.handle(Event::TimerExpired(Timer::IdleHold)).is_empty());
}

#[test]
fn open_on_a_new_connection_replaces_an_established_graceful_restart_session() {
    // RFC 4724 section 4.2: the peer restarted; the old connection is
    // still up here.
    let mut f = established_with_n_bit(false);
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Send { conn, msg: Msg::Open(_) } if *conn == C2))
    );
    assert_eq!(f.state(), State::Established, "until its OPEN arrives");
    let mut open = peer_open(PEER_ID_HIGH, 65001, 90);
    open.capabilities.push(Capability::GracefulRestart {
        restarting: true,
        notification: false,
        restart_time: 60,
        families: vec![],
    });
    let a = f.handle(Event::Open { conn: C2, open });
    // The old session goes down as if its connection was lost (routes
    // kept as stale), with no NOTIFICATION on it.
    assert!(a.contains(&Action::Down(DownCause::ConnectionLost)));
    assert!(a.contains(&Action::Close { conn: C1 }));
    assert_eq!(sent_notification(&a, C1), None);
    assert_eq!(f.state(), State::OpenConfirm);
    let a = f.handle(Event::Keepalive { conn: C2 });
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Established { conn, .. } if *conn == C2))
    );
}

#[test]
fn new_connection_while_established_without_graceful_restart_is_a_collision() {
    let mut f = established();
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert_eq!(sent_notification(&a, C2), Some((6, 7)));
    assert_eq!(f.state(), State::Established);
}

fn bfd_cfg() -> Config {
    Config {
        wait_for_path: true,
        ..cfg(false)
    }
}

#[test]
fn peer_with_bfd_opens_no_connection_until_bfd_reports_the_path_up() {
    let mut f = Fsm::new(bfd_cfg());
    let a = f.handle(Event::Start);
    assert_eq!(f.state(), State::Active);
    assert!(f.waiting_for_path());
    assert!(!has(&a, &Action::Connect));
    assert_eq!(timer_started(&a, Timer::ConnectRetry), None);
    let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(!has(&a, &Action::Connect));
    let a = f.handle(Event::Kick);
    assert!(!f.waiting_for_path());
    assert_eq!(f.state(), State::Connect);
    assert!(has(&a, &Action::Connect));
}

#[test]
fn peer_with_bfd_still_accepts_the_peers_connection_while_waiting() {
    let mut f = Fsm::new(bfd_cfg());
    f.handle(Event::Start);
    let a = f.handle(Event::Connected {
        conn: C1,
        dir: Direction::Incoming,
    });
    assert_eq!(f.state(), State::OpenSent);
    assert!(a.iter().any(|a| matches!(
        a,
        Action::Send {
            conn: C1,
            msg: Msg::Open(_)
        }
    )));
}

#[test]
fn path_down_hard_resets_the_session_and_no_connection_follows_until_the_path_is_up() {
    let mut f = established_with_n_bit(true);
    let a = f.handle(Event::PathDown {
        notification: Notification::cease(cease_sub::BFD_DOWN),
    });
    assert_eq!(sent_notification(&a, C1), Some((6, cease_sub::HARD_RESET)));
    assert!(is_down(&a));
    // Active, not Idle: the peer's connection is accepted as soon as its
    // BFD sees the path back, even if ours has not yet.
    assert_eq!(f.state(), State::Active);
    assert!(f.waiting_for_path());
    assert_eq!(timer_started(&a, Timer::IdleHold), None);
    assert_eq!(timer_started(&a, Timer::ConnectRetry), None);
    let a = f.handle(Event::TimerExpired(Timer::ConnectRetry));
    assert!(!has(&a, &Action::Connect));
    // BFD Up again: connect at once.
    let a = f.handle(Event::Kick);
    assert!(has(&a, &Action::Connect));
}

#[test]
fn path_down_during_a_connection_attempt_abandons_it() {
    let mut f = Fsm::new(cfg(false));
    f.handle(Event::Start);
    assert_eq!(f.state(), State::Connect);
    let a = f.handle(Event::PathDown {
        notification: Notification::cease(cease_sub::BFD_DOWN),
    });
    assert!(has(&a, &Action::AbortConnect));
    assert!(has(&a, &Action::StopTimer(Timer::ConnectRetry)));
    let a = f.handle(Event::ConnectFailed {
        reason: "aborted".into(),
    });
    assert!(!has(&a, &Action::Connect));
    assert_eq!(timer_started(&a, Timer::ConnectRetry), None);
}

/// An established graceful-restart session and a second connection from
/// the peer's address, our OPEN sent on it, its OPEN not yet read.
fn established_with_a_second_connection() -> Fsm {
    let mut f = established_with_n_bit(false);
    f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert_eq!(f.state(), State::Established);
    f
}

#[test]
fn open_from_the_wrong_as_on_a_new_connection_leaves_the_established_session_alone() {
    // RFC 4724 section 4.2 replaces the session only for the same peer
    // restarting: a connection whose OPEN fails negotiation is refused on
    // its own and the established session goes on.
    let mut f = established_with_a_second_connection();
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(PEER_ID_HIGH, 65099, 90),
    });
    assert_eq!(sent_notification(&a, C2), Some((2, 2)), "Bad Peer AS on C2");
    assert!(a.contains(&Action::Close { conn: C2 }));
    assert!(!is_down(&a), "the established session stays: {a:?}");
    assert!(!a.contains(&Action::Close { conn: C1 }));
    assert_eq!(f.state(), State::Established);
    assert_eq!(f.established().map(|(c, _)| c), Some(C1));
    // It still keeps its timers going.
    let a = f.handle(Event::Keepalive { conn: C1 });
    assert!(timer_started(&a, Timer::Hold(C1)).is_some());
}

#[test]
fn open_with_another_identifier_on_a_new_connection_leaves_the_established_session_alone() {
    let mut f = established_with_a_second_connection();
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(Ipv4Addr::new(10, 0, 0, 77), 65001, 90),
    });
    assert_eq!(
        sent_notification(&a, C2),
        Some((6, cease_sub::CONNECTION_REJECTED))
    );
    assert!(!is_down(&a), "{a:?}");
    assert_eq!(f.established().map(|(c, _)| c), Some(C1));
    // An unusable identifier (ours) is refused the same way.
    let mut f = established_with_a_second_connection();
    let a = f.handle(Event::Open {
        conn: C2,
        open: peer_open(LOCAL_ID, 65001, 90),
    });
    assert!(sent_notification(&a, C2).is_some());
    assert!(!is_down(&a), "{a:?}");
    assert_eq!(f.established().map(|(c, _)| c), Some(C1));
}

#[test]
fn incoming_connection_after_the_peer_closed_is_accepted_while_waiting_idle_hold() {
    // The peer closed the session and reconnects at once: waiting out
    // IdleHold would refuse it, and a peer that retries only every 120 s
    // would stay down that long.
    for passive in [false, true] {
        let mut f = Fsm::new(cfg(passive));
        f.handle(Event::Start);
        f.handle(Event::Connected {
            conn: C1,
            dir: Direction::Outgoing,
        });
        f.handle(Event::Open {
            conn: C1,
            open: peer_open(PEER_ID_HIGH, 65001, 90),
        });
        f.handle(Event::Keepalive { conn: C1 });
        assert_eq!(f.state(), State::Established);
        let a = f.handle(Event::Closed {
            conn: C1,
            reason: "eof".into(),
        });
        assert_eq!(f.state(), State::Idle);
        assert!(timer_started(&a, Timer::IdleHold).is_some());
        let a = f.handle(Event::Connected {
            conn: C2,
            dir: Direction::Incoming,
        });
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Send { conn, msg: Msg::Open(_) } if *conn == C2)),
            "passive={passive}: {a:?}"
        );
        assert!(a.contains(&Action::StopTimer(Timer::IdleHold)));
        assert_eq!(f.state(), State::OpenSent);
        f.handle(Event::Open {
            conn: C2,
            open: peer_open(PEER_ID_HIGH, 65001, 90),
        });
        let a = f.handle(Event::Keepalive { conn: C2 });
        assert!(a.iter().any(|x| matches!(x, Action::Established { .. })));
    }
}

#[test]
fn after_an_error_we_reported_idle_hold_still_refuses_connections() {
    // Damping stays for sessions we reset (hold timer, a decode error,
    // max-prefix): the peer's immediate reconnection is refused.
    let mut f = established();
    f.handle(Event::TimerExpired(Timer::Hold(C1)));
    assert_eq!(f.state(), State::Idle);
    let a = f.handle(Event::Connected {
        conn: C2,
        dir: Direction::Incoming,
    });
    assert_eq!(a, vec![Action::Close { conn: C2 }]);
}
