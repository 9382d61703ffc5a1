//! The RIB alone, in process, on the `bgp_ingest` load: how long
//! `Rib::apply_update` takes for N scattered /24s (announced, then
//! withdrawn), without sockets or tasks. Separates the table's cost from
//! the I/O pipeline's when tuning.
//!
//! With `descending`, the load is instead every prefix inside one /16
//! (/17 to /32, 131,070 of them) in descending address order: the worst
//! case of the table's per-/16 buckets (issue 19 item 8).
//!
//! ```text
//! cargo run --release -p bird --example rib_ingest [-- N]
//! cargo run --release -p bird --example rib_ingest -- descending
//! ```
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use bird::fsm::Negotiated;
use bird::packet::Family;
use bird::packet::aspath::AsPath;
use bird::packet::attributes::PathAttrs;
use bird::policy::{LocalPolicy, PeerPolicy};
use bird::rib::{PeerId, PeerKey, Rib, SessionInfo, UpdateMsg};
use ipnetwork::{IpNetwork, Ipv4Network};

/// Every prefix inside 10.65.0.0/16 but the /16 itself, in descending
/// address order.
fn dense_descending() -> Vec<IpNetwork> {
    let mut v: Vec<IpNetwork> = (17..=32u8)
        .flat_map(|len| {
            let step = 1u32 << (32 - len);
            (0..(1u32 << (len - 16))).map(move |i| {
                IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(0x0a41_0000 + i * step), len).unwrap(),
                )
            })
        })
        .collect();
    v.sort();
    v.reverse();
    v
}

fn main() {
    let arg = std::env::args().nth(1);
    let prefixes: Vec<IpNetwork> = if arg.as_deref() == Some("descending") {
        dense_descending()
    } else {
        let n: u32 = arg.and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
        let space = 126 * 65536u64;
        (0..n)
            .map(|i| {
                let j = ((u64::from(i) * 1_000_003) % space) as u32;
                IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from((1u32 << 24) + (j << 8)), 24).unwrap(),
                )
            })
            .collect()
    };
    let n = prefixes.len();
    let now = Instant::now();
    let mut local = LocalPolicy::new(64512, Ipv4Addr::new(10, 0, 0, 1));
    local.pools = vec!["192.168.0.0/16".parse().unwrap()];
    let mut rib = Rib::new(local, now);
    let key = PeerKey {
        id: PeerId(1),
        epoch: 1,
    };
    rib.add_peer(key, PeerPolicy::new("10.0.0.2".parse().unwrap(), 65001));
    rib.peer_up(
        key,
        SessionInfo {
            generation: 1,
            negotiated: Negotiated {
                peer_id: Ipv4Addr::new(10, 0, 0, 2),
                peer_as: 65001,
                hold_time: 90,
                four_octet_as: true,
                families: vec![Family::Ipv4Unicast],
                route_refresh: true,
                peer_gr: None,
            },
            local_addr: Some("10.0.0.1".parse().unwrap()),
            n_bit: true,
        },
        now,
    );
    let msgs: Vec<UpdateMsg> = prefixes
        .chunks(1000)
        .enumerate()
        .map(|(k, c)| UpdateMsg {
            announced: vec![(
                Arc::new(PathAttrs {
                    as_path: AsPath::sequence([65001, 64600 + k as u32 % 400]),
                    next_hop: Some("10.0.0.2".parse().unwrap()),
                    ..Default::default()
                }),
                c.to_vec(),
            )],
            ..Default::default()
        })
        .collect();
    let t = Instant::now();
    for m in msgs {
        rib.apply_update(key, m, now);
    }
    let ingest = t.elapsed();
    assert_eq!(rib.len(), n);
    let t = Instant::now();
    for c in prefixes.chunks(1000) {
        rib.apply_update(
            key,
            UpdateMsg {
                withdrawn: c.to_vec(),
                ..Default::default()
            },
            now,
        );
    }
    let withdraw = t.elapsed();
    assert!(rib.is_empty());
    println!(
        "{n} prefixes: apply {:.1} ms, withdraw {:.1} ms",
        ingest.as_secs_f64() * 1e3,
        withdraw.as_secs_f64() * 1e3
    );
}
