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
