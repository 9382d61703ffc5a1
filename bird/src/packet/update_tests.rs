//! UPDATE golden bytes (both directions), RFC 7606 actions, and
//! zettabgp as an independent decoder of what we encode.

use super::*;
use crate::packet::aspath::AsPath;
use crate::packet::attributes::{Aggregator, Origin};
use crate::packet::error::AttrAction;
use crate::packet::notification::Notification;

const EBGP: DecodeCtx = DecodeCtx {
    four_octet_as: true,
    external: true,
    peer_as: 65001,
    local_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
};

const IBGP: DecodeCtx = DecodeCtx {
    four_octet_as: true,
    external: false,
    peer_as: 65000,
    local_v4: None,
};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Builds an UPDATE body from raw attribute bytes and IPv4 NLRI bytes.
fn body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

const ORIGIN_IGP: [u8; 4] = [0x40, 1, 1, 0];
const PATH_65001: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NH_10_0_0_1: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 1];
const NLRI_10_1: [u8; 3] = [16, 10, 1];

fn valid_attrs() -> Vec<u8> {
    [&ORIGIN_IGP[..], &PATH_65001, &NH_10_0_0_1].concat()
}

#[rustfmt::skip]
const GOLDEN_V4: &[u8] = &[
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0, 53, 2,                               // length 53, UPDATE
    0, 0,                                   // no withdrawn routes
    0, 27,                                  // attributes length
    0x40, 1, 1, 0,                          // ORIGIN IGP
    0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9,     // AS_PATH: AS_SEQUENCE(65001)
    0x40, 3, 4, 10, 0, 0, 1,                // NEXT_HOP 10.0.0.1
    0x40, 5, 4, 0, 0, 0, 100,               // LOCAL_PREF 100
    16, 10, 1,                              // 10.1.0.0/16
];

#[rustfmt::skip]
const GOLDEN_V6: &[u8] = &[
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0, 68, 2,
    0, 0,
    0, 45,
    0x90, 14, 0, 28,                        // MP_REACH_NLRI, extended length
    0, 2, 1, 16,                            // IPv6 unicast, 16-byte next hop
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    0,                                      // reserved
    48, 0x20, 0x01, 0x0d, 0xb8, 0, 1,       // 2001:db8:1::/48
    0x40, 1, 1, 0,
    0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9,
];

fn v4_attrs() -> PathAttrs {
    PathAttrs {
        origin: Origin::Igp,
        as_path: AsPath::sequence([65001]),
        next_hop: Some("10.0.0.1".parse().unwrap()),
        local_pref: Some(100),
        ..Default::default()
    }
}

fn v6_attrs() -> PathAttrs {
    PathAttrs {
        as_path: AsPath::sequence([65001]),
        next_hop: Some("2001:db8::1".parse().unwrap()),
        ..Default::default()
    }
}

#[test]
fn golden_ipv4_update_encode() {
    let msgs = encode_announce(
        &v4_attrs(),
        &[net("10.1.0.0/16")],
        Family::Ipv4Unicast,
        true,
    )
    .unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(&msgs[0][..], GOLDEN_V4);
}

#[test]
fn golden_ipv4_update_decode() {
    let u = decode(&GOLDEN_V4[19..], &IBGP).unwrap();
    assert!(u.attrs.issues.is_empty());
    assert_eq!(u.nlri.clone().collect::<Vec<_>>(), vec![net("10.1.0.0/16")]);
    assert_eq!(u.ipv4_attrs(&IBGP), v4_attrs());
}

#[test]
fn golden_ipv6_update_encode() {
    let msgs = encode_announce(
        &v6_attrs(),
        &[net("2001:db8:1::/48")],
        Family::Ipv6Unicast,
        true,
    )
    .unwrap();
    assert_eq!(&msgs[0][..], GOLDEN_V6);
}

#[test]
fn golden_ipv6_update_decode() {
    let u = decode(&GOLDEN_V6[19..], &EBGP).unwrap();
    assert!(u.attrs.issues.is_empty(), "{:?}", u.attrs.issues);
    let mp = u.mp_reach.clone().unwrap();
    assert_eq!(mp.family, Family::Ipv6Unicast);
    assert_eq!(mp.nlri.collect::<Vec<_>>(), vec![net("2001:db8:1::/48")]);
    assert_eq!(u.mp_attrs(&EBGP).unwrap(), v6_attrs());
}

#[test]
fn golden_end_of_rib_both_families() {
    let v4 = encode_end_of_rib(Family::Ipv4Unicast);
    assert_eq!(&v4[16..], &[0, 23, 2, 0, 0, 0, 0]);
    assert_eq!(
        decode(&v4[19..], &EBGP).unwrap().end_of_rib(),
        Some(Family::Ipv4Unicast)
    );
    let v6 = encode_end_of_rib(Family::Ipv6Unicast);
    assert_eq!(&v6[16..], &[0, 29, 2, 0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
    assert_eq!(
        decode(&v6[19..], &EBGP).unwrap().end_of_rib(),
        Some(Family::Ipv6Unicast)
    );
    assert_eq!(decode(&GOLDEN_V4[19..], &IBGP).unwrap().end_of_rib(), None);
}

#[test]
fn golden_withdrawals_both_families() {
    let v4 = encode_withdraw(&[net("10.1.0.0/16")], Family::Ipv4Unicast);
    assert_eq!(&v4[0][16..], &[0, 26, 2, 0, 3, 16, 10, 1, 0, 0]);
    let u = decode(&v4[0][19..], &EBGP).unwrap();
    assert_eq!(u.withdrawn.collect::<Vec<_>>(), vec![net("10.1.0.0/16")]);

    let v6 = encode_withdraw(&[net("2001:db8:1::/48")], Family::Ipv6Unicast);
    assert_eq!(
        &v6[0][16..],
        &[
            0, 37, 2, 0, 0, 0, 14, 0x90, 15, 0, 10, 0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1
        ]
    );
    let u = decode(&v6[0][19..], &EBGP).unwrap();
    assert_eq!(u.end_of_rib(), None);
    let w = u.mp_unreach.unwrap();
    assert_eq!(
        w.withdrawn.collect::<Vec<_>>(),
        vec![net("2001:db8:1::/48")]
    );
}

#[test]
fn many_prefixes_split_into_messages_of_at_most_4096_bytes() {
    let prefixes: Vec<IpNetwork> = (0..3000u32)
        .map(|i| IpNetwork::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24).unwrap())
        .collect();
    let msgs = encode_announce(&v4_attrs(), &prefixes, Family::Ipv4Unicast, true).unwrap();
    assert!(msgs.len() > 1);
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 4096);
        let u = decode(&m[19..], &IBGP).unwrap();
        seen.extend(u.nlri);
    }
    assert_eq!(seen, prefixes);

    let v6: Vec<IpNetwork> = (0..1000u128)
        .map(|i| {
            IpNetwork::new(
                Ipv6Addr::from((0x2001_0db8u128 << 96) + (i << 64)).into(),
                64,
            )
            .unwrap()
        })
        .collect();
    let msgs = encode_announce(&v6_attrs(), &v6, Family::Ipv6Unicast, true).unwrap();
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 4096);
        let u = decode(&m[19..], &EBGP).unwrap();
        seen.extend(u.mp_reach.unwrap().nlri);
    }
    assert_eq!(seen, v6);
    let w = encode_withdraw(&v6, Family::Ipv6Unicast);
    assert!(w.iter().all(|m| m.len() <= 4096));
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    let attrs = PathAttrs {
        as_path: AsPath::sequence([4_200_000_001, 65002]),
        next_hop: Some("10.0.0.1".parse().unwrap()),
        aggregator: Some(Aggregator {
            asn: 4_200_000_001,
            address: Ipv4Addr::new(1, 1, 1, 1),
        }),
        ..Default::default()
    };
    let msgs = encode_announce(&attrs, &[net("10.9.0.0/16")], Family::Ipv4Unicast, false).unwrap();
    let two = DecodeCtx {
        four_octet_as: false,
        external: true,
        peer_as: 4_200_000_001,
        local_v4: None,
    };
    let u = decode(&msgs[0][19..], &two).unwrap();
    assert!(u.attrs.issues.is_empty(), "{:?}", u.attrs.issues);
    // On the wire AS_PATH is 23456 65002 ...
    assert_eq!(u.attrs.as_path.unwrap(), &[2, 2, 0x5b, 0xa0, 0xfd, 0xea]);
    // ... and the receiver rebuilds the real path from AS4_PATH.
    let back = u.ipv4_attrs(&two);
    assert_eq!(back.as_path, attrs.as_path);
    assert_eq!(back.aggregator, attrs.aggregator);
}

#[test]
fn as4_path_from_a_four_octet_peer_is_attribute_discard() {
    let as4 = [0xc0, 17, 6, 2, 1, 0, 0, 0, 9];
    let b = body(&[], &[&valid_attrs()[..], &as4].concat(), &NLRI_10_1);
    let u = decode(&b, &EBGP).unwrap();
    assert_eq!(u.attrs.action(), Some(AttrAction::Discard));
    assert!(!u.treat_as_withdraw());
    assert_eq!(u.ipv4_attrs(&EBGP).as_path, AsPath::sequence([65001]));
}

#[test]
fn zettabgp_decodes_our_ipv4_update_as_a_sequence() {
    use zettabgp::prelude::*;
    let mut params = BgpSessionParams::new(
        65000,
        90,
        BgpTransportMode::IPv4,
        Ipv4Addr::new(1, 1, 1, 1),
        vec![],
    );
    params.fuzzy_pathid = false;
    params.has_as32bit = true;
    let attrs = PathAttrs {
        as_path: AsPath::sequence([65001, 4_200_000_000]),
        communities: vec![0xfde9_0001],
        med: Some(7),
        ..v4_attrs()
    };
    let msgs = encode_announce(
        &attrs,
        &[net("10.1.0.0/16"), net("10.2.3.0/24")],
        Family::Ipv4Unicast,
        true,
    )
    .unwrap();
    let mut z = BgpUpdateMessage::new();
    z.decode_from(&params, &msgs[0][19..]).unwrap();
    let path = z.get_attr_aspath().unwrap();
    assert_eq!(path.value.len(), 1);
    match &path.value[0] {
        BgpASitem::Seq(s) => {
            let v: Vec<u32> = s.value.iter().map(|a| a.value).collect();
            assert_eq!(v, vec![65001, 4_200_000_000]);
        }
        other => panic!("AS_SEQUENCE decoded as {other:?}"),
    }
    assert_eq!(
        z.get_attr_nexthop().unwrap().value,
        "10.0.0.1".parse::<IpAddr>().unwrap()
    );
    match &z.updates {
        BgpAddrs::IPV4U(v) => {
            let got: Vec<(Ipv4Addr, u8)> = v.iter().map(|a| (a.addr, a.prefixlen)).collect();
            assert_eq!(
                got,
                vec![
                    ("10.1.0.0".parse().unwrap(), 16),
                    ("10.2.3.0".parse().unwrap(), 24)
                ]
            );
        }
        other => panic!("unexpected NLRI {other:?}"),
    }
}

#[test]
fn zettabgp_decodes_our_ipv6_update() {
    use zettabgp::prelude::*;
    let mut params = BgpSessionParams::new(
        65000,
        90,
        BgpTransportMode::IPv4,
        Ipv4Addr::new(1, 1, 1, 1),
        vec![],
    );
    params.fuzzy_pathid = false;
    let mut z = BgpUpdateMessage::new();
    z.decode_from(&params, &GOLDEN_V6[19..]).unwrap();
    let mp = z.get_mpupdates().unwrap();
    match &mp.addrs {
        BgpAddrs::IPV6U(v) => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].prefixlen, 48);
            assert_eq!(v[0].addr, "2001:db8:1::".parse::<Ipv6Addr>().unwrap());
        }
        other => panic!("unexpected NLRI {other:?}"),
    }
}

// ----- RFC 7606 actions -----------------------------------------------

fn decode_ok(attrs: &[u8], nlri: &[u8], ctx: &DecodeCtx) -> Update<'static> {
    let b: &'static [u8] = Box::leak(body(&[], attrs, nlri).into_boxed_slice());
    decode(b, ctx).unwrap()
}

fn reset(attrs: &[u8], nlri: &[u8]) -> DecodeError {
    decode(&body(&[], attrs, nlri), &EBGP).unwrap_err()
}

#[test]
fn undefined_origin_is_treat_as_withdraw() {
    let a = [&[0x40, 1, 1, 7][..], &PATH_65001, &NH_10_0_0_1].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(u.treat_as_withdraw());
    assert_eq!(u.nlri.count(), 1, "prefixes still located to withdraw them");
}

#[test]
fn as_path_segment_overrunning_its_attribute_is_treat_as_withdraw() {
    // Segment claims 5 ASNs; the attribute holds 1.
    let a = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 6, 2, 5, 0, 0, 0xfd, 0xe9],
        &NH_10_0_0_1,
    ]
    .concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
    // One byte of AS_PATH: the input zettabgp loops on.
    let a = [&ORIGIN_IGP[..], &[0x40, 2, 1, 2], &NH_10_0_0_1].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn leftmost_as_other_than_the_external_peer_is_treat_as_withdraw() {
    let a = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 6, 2, 1, 0, 0, 0, 9],
        &NH_10_0_0_1,
    ]
    .concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
    // An internal peer's empty path is fine.
    let a = [&ORIGIN_IGP[..], &[0x40, 2, 0], &NH_10_0_0_1].concat();
    assert!(!decode_ok(&a, &NLRI_10_1, &IBGP).treat_as_withdraw());
}

#[test]
fn short_communities_is_treat_as_withdraw() {
    let a = [&valid_attrs()[..], &[0xc0, 8, 3, 0, 0, 1]].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
    let a = [&valid_attrs()[..], &[0xc0, 8, 0]].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn communities_decode_when_well_formed() {
    let a = [
        &valid_attrs()[..],
        &[0xc0, 8, 8, 0xfd, 0xe9, 0, 1, 0xff, 0xff, 0xff, 0x01],
    ]
    .concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(u.attrs.issues.is_empty());
    assert_eq!(
        u.ipv4_attrs(&EBGP).communities,
        vec![0xfde9_0001, 0xffff_ff01]
    );
}

#[test]
fn atomic_aggregate_with_a_value_is_attribute_discard() {
    let a = [&valid_attrs()[..], &[0x40, 6, 1, 0]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.action(), Some(AttrAction::Discard));
    assert!(!u.ipv4_attrs(&EBGP).atomic_aggregate);
}

#[test]
fn aggregator_of_the_wrong_length_is_attribute_discard() {
    let a = [&valid_attrs()[..], &[0xc0, 7, 6, 0xfd, 0xe9, 1, 1, 1, 1]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.action(), Some(AttrAction::Discard));
    assert_eq!(u.ipv4_attrs(&EBGP).aggregator, None);
}

#[test]
fn local_pref_from_an_external_peer_is_attribute_discard() {
    let a = [&valid_attrs()[..], &[0x40, 5, 4, 0, 0, 0, 200]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.action(), Some(AttrAction::Discard));
    assert_eq!(u.ipv4_attrs(&EBGP).local_pref, None);
    let a = [
        &ORIGIN_IGP[..],
        &[0x40, 2, 0],
        &NH_10_0_0_1,
        &[0x40, 5, 4, 0, 0, 0, 200],
    ]
    .concat();
    assert_eq!(
        decode_ok(&a, &NLRI_10_1, &IBGP)
            .ipv4_attrs(&IBGP)
            .local_pref,
        Some(200)
    );
}

#[test]
fn attribute_flags_conflict_is_treat_as_withdraw() {
    // ORIGIN marked optional.
    let a = [&[0xc0, 1, 1, 0][..], &PATH_65001, &NH_10_0_0_1].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn repeated_attribute_is_discarded_and_the_first_kept() {
    let a = [&valid_attrs()[..], &[0x40, 1, 1, 2]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.action(), Some(AttrAction::Discard));
    assert_eq!(u.ipv4_attrs(&EBGP).origin, Origin::Igp);
}

#[test]
fn repeated_mp_reach_is_session_reset_with_malformed_attribute_list() {
    let mp = [0x80, 14, 5, 0, 2, 1, 0, 0];
    let a = [&mp[..], &mp, &ORIGIN_IGP, &PATH_65001].concat();
    let e = reset(&a, &[]);
    assert!(matches!(e, DecodeError::MalformedAttributeList(_)), "{e:?}");
    assert_eq!(Notification::from(&e).subcode, 1);
}

#[test]
fn missing_next_hop_with_ipv4_nlri_is_treat_as_withdraw() {
    let a = [&ORIGIN_IGP[..], &PATH_65001].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn missing_origin_is_treat_as_withdraw() {
    let a = [&PATH_65001[..], &NH_10_0_0_1].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn own_address_as_next_hop_is_treat_as_withdraw() {
    let a = [&ORIGIN_IGP[..], &PATH_65001, &[0x40, 3, 4, 10, 0, 0, 2]].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn attribute_overrunning_the_section_is_treat_as_withdraw_and_nlri_still_found() {
    // MED claims 9 bytes; 4 follow before the section ends.
    let a = [&valid_attrs()[..], &[0x80, 4, 9, 0, 0, 0, 1]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(u.treat_as_withdraw());
    assert!(u.attrs.truncated);
    assert_eq!(u.nlri.collect::<Vec<_>>(), vec![net("10.1.0.0/16")]);
    // Two stray bytes: fewer than a minimal attribute header.
    let a = [&valid_attrs()[..], &[0x40, 1]].concat();
    assert!(decode_ok(&a, &NLRI_10_1, &EBGP).treat_as_withdraw());
}

#[test]
fn withdrawn_length_beyond_the_message_is_malformed_attribute_list() {
    let b = [0, 200, 0, 0];
    assert!(matches!(
        decode(&b, &EBGP),
        Err(DecodeError::MalformedAttributeList(_))
    ));
    let b = [0, 0, 0, 50, 0x40, 1, 1, 0];
    assert!(matches!(
        decode(&b, &EBGP),
        Err(DecodeError::MalformedAttributeList(_))
    ));
}

#[test]
fn nlri_prefix_longer_than_32_is_invalid_network_field() {
    let e = reset(&valid_attrs(), &[33, 10, 1, 2, 3, 4]);
    assert_eq!(Notification::from(&e).subcode, 10);
    let e = decode(&body(&[24, 10], &[], &[]), &EBGP).unwrap_err();
    assert_eq!(Notification::from(&e).subcode, 10);
}

#[test]
fn truncated_mp_reach_is_optional_attribute_error() {
    // AFI/SAFI and a next hop length of 16, but only 4 next hop bytes.
    let mp = [0x80, 14, 8, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8];
    let e = reset(&[&mp[..], &ORIGIN_IGP, &PATH_65001].concat(), &[]);
    let n = Notification::from(&e);
    assert_eq!((n.code, n.subcode), (3, 9));
    // Too short for even AFI/SAFI.
    let e = reset(
        &[&[0x80, 14, 2, 0, 2][..], &ORIGIN_IGP, &PATH_65001].concat(),
        &[],
    );
    assert_eq!(Notification::from(&e).subcode, 9);
}

#[test]
fn mp_reach_next_hop_of_the_wrong_length_is_session_reset() {
    let mut mp = vec![0x80, 14, 14, 0, 2, 1, 8];
    mp.extend_from_slice(&[0; 8]);
    mp.extend_from_slice(&[0, 0]);
    let e = reset(&[&mp[..], &ORIGIN_IGP, &PATH_65001].concat(), &[]);
    assert_eq!(Notification::from(&e).subcode, 9);
}

#[test]
fn mp_reach_with_a_bad_prefix_is_session_reset() {
    let mut mp = vec![0x80, 14, 23, 0, 2, 1, 16];
    mp.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    mp.extend_from_slice(&[0, 130, 1]);
    let e = reset(&[&mp[..], &ORIGIN_IGP, &PATH_65001].concat(), &[]);
    assert_eq!(Notification::from(&e).subcode, 9);
}

#[test]
fn mp_reach_of_an_unknown_family_is_ignored() {
    let mp = [0x80, 14, 9, 0, 25, 65, 4, 1, 2, 3, 4, 0];
    let u = decode_ok(&[&mp[..], &ORIGIN_IGP, &PATH_65001].concat(), &[], &EBGP);
    assert!(u.mp_reach.is_none());
    assert_eq!(u.foreign_families, vec![(25, 65)]);
}

#[test]
fn unrecognized_well_known_attribute_is_session_reset_with_the_attribute() {
    let a = [&valid_attrs()[..], &[0x40, 99, 2, 0xaa, 0xbb]].concat();
    let e = reset(&a, &NLRI_10_1);
    let n = Notification::from(&e);
    assert_eq!((n.code, n.subcode), (3, 2));
    assert_eq!(n.data, vec![0x40, 99, 2, 0xaa, 0xbb]);
}

#[test]
fn unknown_optional_transitive_is_kept_with_partial_set() {
    let a = [
        &valid_attrs()[..],
        &[0xc0, 99, 2, 0xaa, 0xbb],
        &[0x80, 98, 1, 0],
    ]
    .concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(u.attrs.issues.is_empty());
    let p = u.ipv4_attrs(&EBGP);
    assert_eq!(p.unknown.len(), 1, "non-transitive one is quietly ignored");
    assert_eq!(p.unknown[0].flags, 0xe0);
    assert_eq!(&p.unknown[0].value[..], &[0xaa, 0xbb]);
}

#[test]
fn strongest_action_wins_when_several_attributes_are_malformed() {
    let a = [&valid_attrs()[..], &[0x40, 6, 1, 0], &[0xc0, 8, 3, 0, 0, 1]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.issues.len(), 2);
    assert!(u.treat_as_withdraw());
}

#[test]
fn truncation_that_may_hide_mp_reach_resets_the_session_where_mp_families_run() {
    // RFC 7606 section 5: prefixes that cannot be located cannot be
    // treated as withdrawn. Issue 19 item 10.
    let both = [Family::Ipv4Unicast, Family::Ipv6Unicast];
    let v4 = [Family::Ipv4Unicast];
    // MP_REACH_NLRI itself overruns the section: its prefixes are lost.
    let mp = [0x80, 14, 40, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8];
    let a = [&ORIGIN_IGP[..], &PATH_65001, &mp].concat();
    let u = decode_ok(&a, &[], &IBGP);
    assert!(u.attrs.truncated);
    let e = u.unlocatable_nlri(&both).expect("session reset");
    let n = Notification::from(&e);
    assert_eq!((n.code, n.subcode), (3, 1));
    // An IPv4-only session: whatever hid there is not ours to lose.
    assert!(u.unlocatable_nlri(&v4).is_none());
    // An UPDATE with nothing in its NLRI field whose list breaks before
    // any MP_REACH_NLRI was seen: its announcements may lie beyond.
    let a = [&ORIGIN_IGP[..], &PATH_65001, &[0x80, 4, 9, 0, 0, 0, 1]].concat();
    let u = decode_ok(&a, &[], &IBGP);
    assert!(u.unlocatable_nlri(&both).is_some());
    // The IPv4 UPDATE broken after its attributes keeps RFC 7606
    // section 4's treat-as-withdraw: its NLRI field is located.
    let a = [&valid_attrs()[..], &[0x80, 4, 9, 0, 0, 0, 1]].concat();
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(u.treat_as_withdraw());
    assert!(u.unlocatable_nlri(&both).is_none());
    // MP_REACH_NLRI located before the break: its prefixes are withdrawn.
    let mp = [
        0x80, 14, 22, 0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
    ];
    let a = [&mp[..], &ORIGIN_IGP, &PATH_65001, &[0x80, 4, 9, 0, 0, 0, 1]].concat();
    let u = decode_ok(&a, &[], &IBGP);
    assert!(u.mp_reach.is_some() && u.attrs.truncated);
    assert!(u.unlocatable_nlri(&both).is_none());
}

#[test]
fn a_thousand_repeated_attributes_make_one_log_line() {
    let mut a = valid_attrs();
    for _ in 0..1300 {
        a.extend_from_slice(&[0x40, 1, 0]);
    }
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert_eq!(u.attrs.issues.len(), 1300);
    let line = crate::packet::error::summarize_issues(&u.attrs.issues);
    assert!(!line.contains('\n'));
    assert_eq!(line.matches("repeated attribute").count(), 1, "{line}");
    assert!(line.contains("1300"), "{line}");
    assert!(line.len() < 300, "{line}");
}

#[test]
fn unknown_transitive_attributes_are_kept_only_up_to_their_budget() {
    // Issue 19 item 8: kept per path and copied to every peer, they must
    // not cost ~4 KB each.
    let mut a = valid_attrs();
    for code in 200..216u8 {
        a.extend_from_slice(&[0xc0, code, 200]);
        a.extend_from_slice(&[code; 200]);
    }
    let u = decode_ok(&a, &NLRI_10_1, &EBGP);
    assert!(!u.treat_as_withdraw(), "the route stays");
    let p = u.ipv4_attrs(&EBGP);
    let kept: usize = p.unknown.iter().map(|r| r.value.len() + 3).sum();
    assert!(
        kept <= attributes::MAX_UNKNOWN_BYTES,
        "{kept} bytes of unknown attributes kept"
    );
    assert!(!p.unknown.is_empty(), "the first ones still pass through");
    assert_eq!(p.unknown[0].type_code, 200);
    assert!(
        u.attrs
            .issues
            .iter()
            .any(|i| i.action == AttrAction::Discard && i.type_code >= 200)
    );
}
