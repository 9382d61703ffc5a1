//! The whole receive path as one function over untrusted bytes, shared by
//! the cargo-fuzz target (`fuzz/`) and the bounded fuzz smoke test that
//! runs under `cargo test`.
//!
//! Input layout: the first byte selects the session context (bit 0:
//! 4-octet AS negotiated, bit 1: external peer, bit 2: IPv6 negotiated);
//! the rest is a TCP byte stream, framed, validated and decoded exactly as
//! a session would (zettabgp's capability decoder included), with UPDATEs
//! applied to a RIB (import policy, table, best path) through the same
//! `UpdateMsg` conversion the peer task uses.

use bytes::BytesMut;

use crate::fsm;
use crate::packet::attributes::DecodeCtx;
use crate::packet::header::{MessageType, split_frame};
use crate::packet::notification::Notification;
use crate::packet::open::Open;
use crate::packet::route_refresh::RouteRefresh;
use crate::packet::{Family, update};
use crate::policy::{LocalPolicy, PeerPolicy};
use crate::rib::{PeerId, PeerKey, Rib, SessionInfo, UpdateMsg};

/// What the receive path made of an input (for tests to assert on).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub messages: usize,
    /// The NOTIFICATION a session would send, if the input reset it.
    pub reset: Option<(u8, u8)>,
    pub routes: usize,
}

/// Runs `data` through framing, validation and decoding. Never panics on
/// any input; that is what the fuzzers check.
pub fn receive(data: &[u8]) -> Outcome {
    let Some((&mode, stream)) = data.split_first() else {
        return Outcome::default();
    };
    let ctx = DecodeCtx {
        four_octet_as: mode & 1 != 0,
        external: mode & 2 != 0,
        peer_as: if mode & 2 != 0 { 65001 } else { 65000 },
        local_v4: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    };
    let families: &[Family] = if mode & 4 != 0 {
        &Family::ALL
    } else {
        &[Family::Ipv4Unicast]
    };
    let cfg = fsm::Config {
        local_as: 65000,
        local_id: std::net::Ipv4Addr::new(10, 0, 0, 2),
        peer_as: ctx.peer_as,
        hold_time: 90,
        passive: true,
        wait_for_path: false,
        connect_retry: std::time::Duration::from_secs(5),
        connect_retry_max: std::time::Duration::from_secs(120),
        idle_hold: std::time::Duration::from_secs(1),
        idle_hold_max: std::time::Duration::from_secs(60),
        families: families.to_vec(),
        graceful_restart: Some(fsm::GracefulRestart {
            restart_time: 120,
            restarting: false,
        }),
    };
    let now = std::time::Instant::now();
    let mut rib = Rib::new(LocalPolicy::new(cfg.local_as, cfg.local_id), now);
    let key = PeerKey {
        id: PeerId(1),
        epoch: 1,
    };
    let mut peer = PeerPolicy::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        ctx.peer_as,
    );
    peer.calico_node = true;
    rib.add_peer(key, peer);
    rib.peer_up(
        key,
        SessionInfo {
            generation: 1,
            negotiated: fsm::Negotiated {
                peer_id: std::net::Ipv4Addr::new(10, 0, 0, 1),
                peer_as: ctx.peer_as,
                hold_time: 90,
                four_octet_as: ctx.four_octet_as,
                families: families.to_vec(),
                route_refresh: true,
                peer_gr: None,
            },
            local_addr: None,
            n_bit: true,
        },
        now,
    );
    let mut buf = BytesMut::from(stream);
    let mut out = Outcome::default();
    loop {
        let frame = match split_frame(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let n = Notification::from(&e);
                out.reset = Some((n.code, n.subcode));
                break;
            }
        };
        out.messages += 1;
        let err = match frame.kind {
            MessageType::Open => Open::decode(&frame.body)
                .map(|o| {
                    let _ = fsm::negotiate(&cfg, &o);
                    let _ = o.encode();
                })
                .err(),
            MessageType::Update => match update::decode(&frame.body, &ctx) {
                Ok(u) if u.unlocatable_nlri(families).is_some() => u.unlocatable_nlri(families),
                Ok(u) => {
                    let (msg, _) = UpdateMsg::from_update(&u, &ctx, families);
                    rib.apply_update(key, msg, now);
                    None
                }
                Err(e) => Some(e),
            },
            MessageType::Notification => Notification::decode(&frame.body)
                .map(|n| {
                    let _ = n.to_string();
                })
                .err(),
            MessageType::RouteRefresh => RouteRefresh::decode(&frame.body).err(),
            MessageType::Keepalive => None,
        };
        if let Some(e) = err {
            let n = Notification::from(&e);
            out.reset = Some((n.code, n.subcode));
            break;
        }
    }
    out.routes = rib.len();
    out
}

/// What the BFD receive path made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdOutcome {
    /// The datagram passed every check of [`crate::bfd::packet::Control::parse`].
    pub accepted: bool,
    /// The session took it too (TTL, authentication: [`crate::bfd::session::Discard`]).
    pub admitted: bool,
    /// The session's state right after the packet.
    pub state: crate::bfd::State,
}

/// The key of the authenticated fuzz sessions: ID 1, secret "fuzz".
pub const BFD_FUZZ_KEY: &[u8] = b"fuzz";

/// The BFD receive path over untrusted bytes. The input's first byte
/// selects the session: bits 0-1 its starting state (bit 0: the peer's
/// Down was heard, Init; bit 1 too: its Init, Up), bits 2-3 its
/// protection (0 none, 1 keyed SHA1, 2 meticulous keyed SHA1, both with
/// [`BFD_FUZZ_KEY`] and sequence numbers 1 and 2 used by the bring-up,
/// 3 TTL 255 required); the rest is the datagram, which arrives with TTL
/// 255 (254 when bit 4 is set). If accepted, it must re-encode to the same
/// mandatory section (and authentication section fields), and it is fed
/// to the session, whose next packet and timers are exercised too.
pub fn bfd_receive(data: &[u8]) -> BfdOutcome {
    use crate::bfd::packet::{AuthKind, Control, Key, LEN};
    use crate::bfd::session::{Protection, Session, Timing};
    use tokio::time::Instant;

    let now = Instant::now();
    let Some((&sel, rest)) = data.split_first() else {
        let s = Session::new(Timing::default(), 0x1234_5678, now);
        return BfdOutcome {
            accepted: false,
            admitted: false,
            state: s.status().state,
        };
    };
    let key = |kind| Key::new(kind, 1, BFD_FUZZ_KEY).ok();
    let protection = match (sel >> 2) & 3 {
        0 => Protection::default(),
        1 => Protection {
            min_ttl: None,
            key: key(AuthKind::KeyedSha1),
        },
        2 => Protection {
            min_ttl: None,
            key: key(AuthKind::MeticulousKeyedSha1),
        },
        _ => Protection {
            min_ttl: Some(255),
            key: None,
        },
    };
    let ttl = Some(if sel & 0x10 != 0 { 254 } else { 255 });
    let mut s = Session::new(Timing::default(), 0x1234_5678, now).protected(protection.clone(), 7);
    // Bring the session to Init or Up first, with well-formed packets.
    let mut peer = Control {
        diag: 0,
        state: crate::bfd::State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 99,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    let deliver = |s: &mut Session, c: &Control, seq: u32| {
        let raw = match &protection.key {
            Some(k) => c.encode_signed(k, seq).to_vec(),
            None => c.encode().to_vec(),
        };
        if let Ok(c) = Control::parse(&raw) {
            let _ = s.receive(&c, &raw, Some(255), now);
        }
    };
    if sel & 1 != 0 {
        deliver(&mut s, &peer, 1);
        if sel & 2 != 0 {
            peer.state = crate::bfd::State::Init;
            peer.your_discr = s.local_discr;
            deliver(&mut s, &peer, 2);
        }
    }
    let Ok(c) = Control::parse(rest) else {
        return BfdOutcome {
            accepted: false,
            admitted: false,
            state: s.status().state,
        };
    };
    let enc = c.encode();
    assert_eq!(
        Control::parse(&enc),
        Ok(Control { auth: None, ..c }),
        "re-encoding changed the packet"
    );
    assert_eq!(
        &enc[4..LEN],
        &rest[4..LEN],
        "re-encoding changed the fields"
    );
    if let Some(a) = c.auth {
        // Signing it again keeps every field; the digest is the key's.
        let k = Key::new(a.kind, a.key_id, BFD_FUZZ_KEY).ok();
        if let Some(k) = k {
            let signed = c.encode_signed(&k, a.seq);
            let back = Control::parse(&signed).map(|b| b.auth.map(|b| (b.kind, b.key_id, b.seq)));
            assert_eq!(back, Ok(Some((a.kind, a.key_id, a.seq))), "re-signing");
            assert!(k.verify(&signed), "a packet we signed must verify");
        }
    }
    let admitted = s.receive(&c, rest, ttl, now).is_ok();
    let state = s.status().state;
    if let Some(c) = s.transmit(now) {
        let _ = s.seal(&c);
    }
    let _ = s.detection_time();
    let later = now + std::time::Duration::from_secs(3600);
    let _ = s.tick(later);
    if let Some(c) = s.transmit(later) {
        let _ = s.seal(&c);
    }
    if let Some(c) = s.admin_down() {
        let _ = s.seal(&c);
    }
    BfdOutcome {
        accepted: true,
        admitted,
        state,
    }
}
