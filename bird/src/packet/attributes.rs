//! Path attributes (RFC 4271 section 4.3 and 5, RFC 7606 error handling).
//!
//! [`parse`] is the validating pass over an UPDATE's attribute section:
//! it walks the TLVs with bounds checks, checks flags and lengths of the
//! attributes it knows, and records each problem with the RFC 7606 action
//! it calls for. What it returns, [`RawAttrs`], borrows the message; the
//! owned [`PathAttrs`] a RIB stores is built from it once per UPDATE (not
//! per prefix) by [`RawAttrs::to_path_attrs`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::aspath::{self, AsPath};
use super::error::{AttrAction, AttrIssue, DecodeError};

pub mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

use flag::{OPTIONAL, TRANSITIVE};
use type_code as tc;

/// The Optional and Transitive bits each known attribute must carry.
fn expected_flags(type_code: u8) -> Option<u8> {
    Some(match type_code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            TRANSITIVE
        }
        tc::MULTI_EXIT_DISC
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => OPTIONAL,
        tc::AGGREGATOR
        | tc::COMMUNITIES
        | tc::EXTENDED_COMMUNITIES
        | tc::AS4_PATH
        | tc::AS4_AGGREGATOR
        | tc::LARGE_COMMUNITIES => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    #[default]
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

impl Origin {
    pub fn from_u8(v: u8) -> Option<Origin> {
        Some(match v {
            0 => Origin::Igp,
            1 => Origin::Egp,
            2 => Origin::Incomplete,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// An optional transitive attribute we do not know, kept for propagation
/// with the Partial bit set (RFC 4271 section 9).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawAttr {
    pub flags: u8,
    pub type_code: u8,
    pub value: Box<[u8]>,
}

/// What the decoder needs to know about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCtx {
    /// Both sides sent the 4-octet AS capability.
    pub four_octet_as: bool,
    /// The peer is in another AS.
    pub external: bool,
    /// The peer's AS (as configured and confirmed by its OPEN).
    pub peer_as: u32,
    /// Our own addresses on the session, to reject our own next hop.
    pub local_v4: Option<Ipv4Addr>,
}

/// The validated attributes of one UPDATE, borrowing its bytes. Fields
/// that failed validation with attribute-discard are left empty.
#[derive(Debug, Clone, Default)]
pub struct RawAttrs<'a> {
    pub origin: Option<Origin>,
    pub as_path: Option<&'a [u8]>,
    pub as4_path: Option<&'a [u8]>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub as4_aggregator: Option<Aggregator>,
    pub communities: Option<&'a [u8]>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Option<&'a [u8]>,
    pub ext_communities: Option<&'a [u8]>,
    pub large_communities: Option<&'a [u8]>,
    /// Value of MP_REACH_NLRI (checked by the UPDATE decoder).
    pub mp_reach: Option<&'a [u8]>,
    /// Value of MP_UNREACH_NLRI (checked by the UPDATE decoder).
    pub mp_unreach: Option<&'a [u8]>,
    /// Whole TLVs of unknown optional transitive attributes.
    pub unknown: Vec<(u8, u8, &'a [u8])>,
    /// Problems the session survives, with their RFC 7606 action.
    pub issues: Vec<AttrIssue>,
    /// Set when the walk could not finish (RFC 7606 section 4): whatever
    /// followed the broken attribute is unknown.
    pub truncated: bool,
}

impl RawAttrs<'_> {
    fn issue(&mut self, type_code: u8, action: AttrAction, reason: &'static str) {
        self.issues.push(AttrIssue {
            type_code,
            action,
            reason,
        });
    }

    /// The strongest action among the issues, if any.
    pub fn action(&self) -> Option<AttrAction> {
        self.issues.iter().map(|i| i.action).max()
    }

    fn asn_size(&self, ctx: &DecodeCtx) -> usize {
        if ctx.four_octet_as { 4 } else { 2 }
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn ipv4_of(v: &[u8]) -> Option<Ipv4Addr> {
    u32_of(v).map(Ipv4Addr::from)
}

/// The most bytes of unknown optional transitive attributes (headers
/// included) kept per UPDATE: they are stored with every path and copied
/// to every peer.
/// Beyond this the rest are dropped (attribute discard: the route stays),
/// so a peer cannot make each of its paths carry ~4 KB into every
/// peer's Adj-RIB-Out.
pub const MAX_UNKNOWN_BYTES: usize = 512;

/// The validating pass over the Path Attributes field.
pub fn parse<'a>(section: &'a [u8], ctx: &DecodeCtx) -> Result<RawAttrs<'a>, DecodeError> {
    let mut a = RawAttrs::default();
    let mut seen = [false; 256];
    let mut rest = section;
    while !rest.is_empty() {
        // RFC 7606 section 4: "fewer than three octets remain (or fewer than
        // four octets, if the Attribute Flags field has the Extended Length
        // bit set) when beginning to parse the attribute" or "the length of
        // the last encountered path attribute would cause the Total
        // Attribute Length to be exceeded" -- "the 'treat-as-withdraw'
        // approach MUST be used [...] and the Total Attribute Length MUST be
        // relied upon to enable the beginning of the NLRI field to be
        // located."
        let (flags, code, hdr, len) = match *rest {
            [f, t, l0, l1, ..] if f & flag::EXTENDED_LENGTH != 0 => {
                (f, t, 4, usize::from(u16::from_be_bytes([l0, l1])))
            }
            [f, t, l, ..] if f & flag::EXTENDED_LENGTH == 0 => (f, t, 3, usize::from(l)),
            _ => {
                a.issue(0, AttrAction::TreatAsWithdraw, "attribute header truncated");
                a.truncated = true;
                break;
            }
        };
        let Some(tlv) = rest.get(..hdr + len) else {
            a.issue(
                code,
                AttrAction::TreatAsWithdraw,
                "attribute overruns the attribute section",
            );
            a.truncated = true;
            break;
        };
        rest = &rest[hdr + len..];
        let value = &tlv[hdr..];

        // RFC 7606 section 3 (g): "If the MP_REACH_NLRI attribute or the
        // MP_UNREACH_NLRI attribute appears more than once in the UPDATE
        // message, then a NOTIFICATION message MUST be sent with the Error
        // Subcode 'Malformed Attribute List'. If any other attribute [...]
        // appears more than once [...] all the occurrences of the attribute
        // other than the first one SHALL be discarded".
        let seen_before = std::mem::replace(&mut seen[usize::from(code)], true);
        if seen_before {
            if matches!(code, tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI) {
                return Err(DecodeError::MalformedAttributeList(
                    "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice",
                ));
            }
            a.issue(code, AttrAction::Discard, "repeated attribute");
            continue;
        }

        let Some(expected) = expected_flags(code) else {
            // RFC 4271 section 6.3: an unrecognized well-known attribute is
            // "Unrecognized Well-known Attribute", data = the attribute.
            if flags & OPTIONAL == 0 {
                return Err(DecodeError::UnrecognizedWellKnown {
                    type_code: code,
                    attribute: tlv.to_vec(),
                });
            }
            // Section 9: unrecognized optional non-transitive attributes are
            // "quietly ignored"; transitive ones are kept, Partial set.
            if flags & TRANSITIVE != 0 {
                let kept: usize = a.unknown.iter().map(|u| u.2.len() + 3).sum();
                if kept + value.len() + 3 > MAX_UNKNOWN_BYTES {
                    a.issue(
                        code,
                        AttrAction::Discard,
                        "unknown transitive attributes beyond 512 bytes are not kept",
                    );
                } else {
                    a.unknown.push((flags | flag::PARTIAL, code, value));
                }
            }
            continue;
        };

        // RFC 7606 section 3 (c): "If the value of either the Optional or
        // Transitive bits in the Attribute Flags is in conflict with their
        // specified values, then the attribute MUST be treated as malformed
        // and the 'treat-as-withdraw' approach used". MP_REACH/MP_UNREACH
        // are still parsed, so their prefixes can be withdrawn.
        if flags & (OPTIONAL | TRANSITIVE) != expected {
            a.issue(
                code,
                AttrAction::TreatAsWithdraw,
                "attribute flags conflict with its type",
            );
            match code {
                tc::MP_REACH_NLRI => a.mp_reach = Some(value),
                tc::MP_UNREACH_NLRI => a.mp_unreach = Some(value),
                _ => {}
            }
            continue;
        }
        parse_known(&mut a, code, value, ctx);
    }
    Ok(a)
}

/// Checks one known attribute's value; malformed ones become issues.
fn parse_known<'a>(a: &mut RawAttrs<'a>, code: u8, value: &'a [u8], ctx: &DecodeCtx) {
    use AttrAction::{Discard, TreatAsWithdraw};
    match code {
        // RFC 7606 section 7.1: wrong length or undefined value ->
        // treat-as-withdraw.
        tc::ORIGIN => match *value {
            [v] => match Origin::from_u8(v) {
                Some(o) => a.origin = Some(o),
                None => a.issue(code, TreatAsWithdraw, "undefined ORIGIN value"),
            },
            _ => a.issue(code, TreatAsWithdraw, "ORIGIN length is not 1"),
        },
        // Section 7.2: a malformed AS_PATH is treat-as-withdraw, and so is a
        // leftmost AS that is not the external peer's (RFC 4271 section
        // 6.3's check, which we always make).
        tc::AS_PATH => {
            let size = a.asn_size(ctx);
            if let Err(reason) = aspath::validate(value, size) {
                a.issue(code, TreatAsWithdraw, reason);
            } else if ctx.external && aspath::has_confed(value, size) {
                a.issue(
                    code,
                    TreatAsWithdraw,
                    "confederation segment from an external peer",
                );
            } else if ctx.external && aspath::first_as(value, size) != Some(wire_peer_as(ctx)) {
                a.issue(code, TreatAsWithdraw, "leftmost AS is not the peer's AS");
            } else if aspath::contains_zero(value, size) {
                // RFC 7607: AS 0 in AS_PATH is "malformed", treat-as-withdraw.
                a.issue(code, TreatAsWithdraw, "AS_PATH contains AS 0");
            } else {
                a.as_path = Some(value);
            }
        }
        // Section 7.3: malformed NEXT_HOP -> treat-as-withdraw; RFC 4271
        // section 6.3 adds the semantic checks.
        tc::NEXT_HOP => match ipv4_of(value) {
            None => a.issue(code, TreatAsWithdraw, "NEXT_HOP length is not 4"),
            Some(nh)
                if nh.is_unspecified()
                    || nh.is_multicast()
                    || nh.is_broadcast()
                    || Some(nh) == ctx.local_v4 =>
            {
                a.issue(
                    code,
                    TreatAsWithdraw,
                    "NEXT_HOP is not a usable unicast address",
                )
            }
            Some(nh) => a.next_hop = Some(nh),
        },
        // Section 7.4.
        tc::MULTI_EXIT_DISC => match u32_of(value) {
            Some(v) => a.med = Some(v),
            None => a.issue(code, TreatAsWithdraw, "MULTI_EXIT_DISC length is not 4"),
        },
        // Section 7.5: LOCAL_PREF from an external peer "SHALL be
        // discarded"; a wrong length is treat-as-withdraw.
        tc::LOCAL_PREF => {
            if ctx.external {
                a.issue(code, Discard, "LOCAL_PREF from an external peer");
            } else {
                match u32_of(value) {
                    Some(v) => a.local_pref = Some(v),
                    None => a.issue(code, TreatAsWithdraw, "LOCAL_PREF length is not 4"),
                }
            }
        }
        // Section 7.6: wrong length -> attribute discard.
        tc::ATOMIC_AGGREGATE => {
            if value.is_empty() {
                a.atomic_aggregate = true;
            } else {
                a.issue(code, Discard, "ATOMIC_AGGREGATE length is not 0");
            }
        }
        // Section 7.7: wrong length -> attribute discard.
        tc::AGGREGATOR => {
            let size = a.asn_size(ctx);
            match parse_aggregator(value, size) {
                Some(agg) => a.aggregator = Some(agg),
                None => a.issue(code, Discard, "AGGREGATOR has the wrong length"),
            }
        }
        // Section 7.8: length not a non-zero multiple of 4 ->
        // treat-as-withdraw.
        tc::COMMUNITIES => match multiple_of(value, 4) {
            true => a.communities = Some(value),
            false => a.issue(
                code,
                TreatAsWithdraw,
                "COMMUNITIES length is not a multiple of 4",
            ),
        },
        // Section 7.9 / 7.10 (route reflection): treat-as-withdraw.
        tc::ORIGINATOR_ID => match ipv4_of(value) {
            Some(id) => a.originator_id = Some(id),
            None => a.issue(code, TreatAsWithdraw, "ORIGINATOR_ID length is not 4"),
        },
        tc::CLUSTER_LIST => match multiple_of(value, 4) {
            true => a.cluster_list = Some(value),
            false => a.issue(
                code,
                TreatAsWithdraw,
                "CLUSTER_LIST length is not a multiple of 4",
            ),
        },
        tc::MP_REACH_NLRI => a.mp_reach = Some(value),
        tc::MP_UNREACH_NLRI => a.mp_unreach = Some(value),
        // Section 7.14: treat-as-withdraw.
        tc::EXTENDED_COMMUNITIES => match multiple_of(value, 8) {
            true => a.ext_communities = Some(value),
            false => a.issue(
                code,
                TreatAsWithdraw,
                "EXTENDED_COMMUNITIES length is not a multiple of 8",
            ),
        },
        // RFC 8092 section 6: treat-as-withdraw.
        tc::LARGE_COMMUNITIES => match multiple_of(value, 12) {
            true => a.large_communities = Some(value),
            false => a.issue(
                code,
                TreatAsWithdraw,
                "LARGE_COMMUNITY length is not a multiple of 12",
            ),
        },
        // RFC 6793 section 6: a NEW speaker discards AS4_PATH/AS4_AGGREGATOR
        // from another NEW speaker, and a malformed one is discarded too
        // (RFC 7606 section 7.? defers to RFC 6793).
        tc::AS4_PATH => {
            if ctx.four_octet_as {
                a.issue(code, Discard, "AS4_PATH from a 4-octet AS speaker");
            } else if aspath::validate(value, 4).is_err() || aspath::contains_zero(value, 4) {
                a.issue(code, Discard, "malformed AS4_PATH");
            } else {
                a.as4_path = Some(value);
            }
        }
        tc::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                a.issue(code, Discard, "AS4_AGGREGATOR from a 4-octet AS speaker");
            } else {
                match parse_aggregator(value, 4) {
                    Some(agg) => a.as4_aggregator = Some(agg),
                    None => a.issue(code, Discard, "AS4_AGGREGATOR has the wrong length"),
                }
            }
        }
        _ => {}
    }
}

/// The peer's AS as it appears in a path it sends: AS_TRANS from a 2-octet
/// session when the real AS does not fit.
fn wire_peer_as(ctx: &DecodeCtx) -> u32 {
    if ctx.four_octet_as || ctx.peer_as <= 0xffff {
        ctx.peer_as
    } else {
        super::AS_TRANS
    }
}

fn multiple_of(v: &[u8], n: usize) -> bool {
    !v.is_empty() && v.len().is_multiple_of(n)
}

fn parse_aggregator(v: &[u8], asn_size: usize) -> Option<Aggregator> {
    if v.len() != asn_size + 4 {
        return None;
    }
    let (asn, addr) = v.split_at(asn_size);
    let asn = match *asn {
        [a, b] => u32::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => return None,
    };
    Some(Aggregator {
        asn,
        address: ipv4_of(addr)?,
    })
}

/// Where a route goes: the attributes a RIB stores, shared by every prefix
/// of the UPDATE that carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    /// Always 4-octet ASNs (AS4_PATH already merged in).
    pub as_path: AsPath,
    pub next_hop: Option<IpAddr>,
    pub link_local_next_hop: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    pub communities: Vec<u32>,
    pub ext_communities: Vec<[u8; 8]>,
    pub large_communities: Vec<[u32; 3]>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub unknown: Vec<RawAttr>,
}

impl RawAttrs<'_> {
    /// The owned attribute set, with `next_hop` chosen by the caller
    /// (NEXT_HOP for IPv4 NLRI, the MP_REACH next hop otherwise).
    pub fn to_path_attrs(
        &self,
        ctx: &DecodeCtx,
        next_hop: Option<IpAddr>,
        link_local: Option<Ipv6Addr>,
    ) -> PathAttrs {
        let size = self.asn_size(ctx);
        let mut as_path = self
            .as_path
            .map(|v| AsPath::from_wire(v, size))
            .unwrap_or_default();
        let mut aggregator = self.aggregator;
        if !ctx.four_octet_as {
            // RFC 6793 section 4.2.3: "if the AGGREGATOR attribute [...]
            // carries an AS number other than AS_TRANS, then [...] the
            // AS4_AGGREGATOR and the AS4_PATH attributes SHALL be ignored".
            let ignore_as4 = matches!(aggregator, Some(g) if g.asn != super::AS_TRANS)
                && self.as4_aggregator.is_some();
            if !ignore_as4 {
                if let Some(g) = self.as4_aggregator {
                    aggregator = Some(g);
                }
                if let Some(v) = self.as4_path {
                    as_path = as_path.merge_as4(AsPath::from_wire(v, 4));
                }
            }
        }
        PathAttrs {
            origin: self.origin.unwrap_or_default(),
            as_path,
            next_hop,
            link_local_next_hop: link_local,
            med: self.med,
            local_pref: self.local_pref,
            atomic_aggregate: self.atomic_aggregate,
            aggregator,
            communities: chunks::<4>(self.communities)
                .map(u32::from_be_bytes)
                .collect(),
            ext_communities: chunks::<8>(self.ext_communities).collect(),
            large_communities: chunks::<12>(self.large_communities)
                .map(|c| {
                    let w = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                    [w(0), w(4), w(8)]
                })
                .collect(),
            originator_id: self.originator_id,
            cluster_list: chunks::<4>(self.cluster_list).map(Ipv4Addr::from).collect(),
            unknown: self
                .unknown
                .iter()
                .map(|&(flags, type_code, value)| RawAttr {
                    flags,
                    type_code,
                    value: value.into(),
                })
                .collect(),
        }
    }
}

fn chunks<const N: usize>(v: Option<&[u8]>) -> impl Iterator<Item = [u8; N]> + '_ {
    v.unwrap_or_default()
        .chunks_exact(N)
        .filter_map(|c| <[u8; N]>::try_from(c).ok())
}

/// Appends one attribute, choosing the extended length form when needed.
pub fn put_attr(out: &mut BytesMut, flags: u8, code: u8, value: &[u8]) {
    let len = value.len().min(usize::from(u16::MAX));
    if len > 255 {
        out.put_u8(flags | flag::EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u16(len as u16);
    } else {
        out.put_u8(flags & !flag::EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u8(len as u8);
    }
    out.put_slice(&value[..len]);
}

impl PathAttrs {
    /// Encodes every attribute except MP_REACH/MP_UNREACH, in ascending
    /// type order (RFC 4271 section 5: "SHOULD order path attributes [...]
    /// in ascending order of attribute type"). NEXT_HOP is written only for
    /// IPv4 NLRI (`with_next_hop`); a 2-octet peer gets AS_TRANS in AS_PATH
    /// and the real path in AS4_PATH.
    pub fn encode(&self, out: &mut BytesMut, four_octet_as: bool, with_next_hop: bool) {
        put_attr(out, TRANSITIVE, tc::ORIGIN, &[self.origin as u8]);
        let mut path = BytesMut::new();
        self.as_path.encode_value(&mut path, four_octet_as, false);
        put_attr(out, TRANSITIVE, tc::AS_PATH, &path);
        if let (true, Some(IpAddr::V4(nh))) = (with_next_hop, self.next_hop) {
            put_attr(out, TRANSITIVE, tc::NEXT_HOP, &nh.octets());
        }
        if let Some(med) = self.med {
            put_attr(out, OPTIONAL, tc::MULTI_EXIT_DISC, &med.to_be_bytes());
        }
        if let Some(lp) = self.local_pref {
            put_attr(out, TRANSITIVE, tc::LOCAL_PREF, &lp.to_be_bytes());
        }
        if self.atomic_aggregate {
            put_attr(out, TRANSITIVE, tc::ATOMIC_AGGREGATE, &[]);
        }
        let needs_as4_agg = matches!(self.aggregator, Some(g) if !four_octet_as && g.asn > 0xffff);
        if let Some(g) = self.aggregator {
            let mut v = BytesMut::new();
            if four_octet_as {
                v.put_u32(g.asn);
            } else {
                v.put_u16(u16::try_from(g.asn).unwrap_or(super::AS_TRANS as u16));
            }
            v.put_slice(&g.address.octets());
            put_attr(out, OPTIONAL | TRANSITIVE, tc::AGGREGATOR, &v);
        }
        if !self.communities.is_empty() {
            let v: Vec<u8> = self
                .communities
                .iter()
                .flat_map(|c| c.to_be_bytes())
                .collect();
            put_attr(out, OPTIONAL | TRANSITIVE, tc::COMMUNITIES, &v);
        }
        if let Some(id) = self.originator_id {
            put_attr(out, OPTIONAL, tc::ORIGINATOR_ID, &id.octets());
        }
        if !self.cluster_list.is_empty() {
            let v: Vec<u8> = self.cluster_list.iter().flat_map(|c| c.octets()).collect();
            put_attr(out, OPTIONAL, tc::CLUSTER_LIST, &v);
        }
        if !self.ext_communities.is_empty() {
            let v: Vec<u8> = self.ext_communities.iter().flatten().copied().collect();
            put_attr(out, OPTIONAL | TRANSITIVE, tc::EXTENDED_COMMUNITIES, &v);
        }
        if !four_octet_as && self.as_path.needs_as4() {
            let mut v = BytesMut::new();
            self.as_path.encode_value(&mut v, true, true);
            put_attr(out, OPTIONAL | TRANSITIVE, tc::AS4_PATH, &v);
        }
        if let (true, Some(g)) = (needs_as4_agg, self.aggregator) {
            let mut v = BytesMut::new();
            v.put_u32(g.asn);
            v.put_slice(&g.address.octets());
            put_attr(out, OPTIONAL | TRANSITIVE, tc::AS4_AGGREGATOR, &v);
        }
        if !self.large_communities.is_empty() {
            let v: Vec<u8> = self
                .large_communities
                .iter()
                .flatten()
                .flat_map(|w| w.to_be_bytes())
                .collect();
            put_attr(out, OPTIONAL | TRANSITIVE, tc::LARGE_COMMUNITIES, &v);
        }
        for u in &self.unknown {
            put_attr(out, u.flags, u.type_code, &u.value);
        }
    }
}
