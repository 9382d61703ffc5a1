//! UPDATE messages (RFC 4271 section 4.3, RFC 4760 MP_REACH/MP_UNREACH).
//!
//! Decoding is zero-copy: [`Update`] borrows the received frame, its NLRI
//! are iterated in place, and the attributes stay borrowed slices until a
//! RIB asks for an owned [`PathAttrs`] (once per UPDATE). Encoding packs
//! as many prefixes as fit into each 4096-byte message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use ipnetwork::IpNetwork;

use super::attributes::{self, DecodeCtx, PathAttrs, RawAttrs, flag, type_code as tc};
use super::error::{AttrAction, DecodeError};
use super::header::{MessageType, put_header};
use super::nlri::{self, NlriIter};
use super::{Family, HEADER_LEN, MAX_MESSAGE_LEN, Reader};

/// The reachable half of MP_REACH_NLRI.
#[derive(Debug, Clone)]
pub struct MpReach<'a> {
    pub family: Family,
    pub next_hop: IpAddr,
    /// RFC 2545: an IPv6 next hop may be followed by a link-local one.
    pub link_local: Option<Ipv6Addr>,
    pub nlri: NlriIter<'a>,
}

#[derive(Debug, Clone)]
pub struct MpUnreach<'a> {
    pub family: Family,
    pub withdrawn: NlriIter<'a>,
}

/// A decoded UPDATE, borrowing the message body.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// IPv4 unicast withdrawals from the Withdrawn Routes field.
    pub withdrawn: NlriIter<'a>,
    /// IPv4 unicast announcements from the NLRI field.
    pub nlri: NlriIter<'a>,
    pub attrs: RawAttrs<'a>,
    pub mp_reach: Option<MpReach<'a>>,
    pub mp_unreach: Option<MpUnreach<'a>>,
    /// AFI/SAFI pairs in MP attributes that we do not speak; ignored.
    pub foreign_families: Vec<(u16, u8)>,
}

impl Update<'_> {
    /// RFC 7606: every announced prefix is to be handled as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.attrs.action() == Some(AttrAction::TreatAsWithdraw)
    }

    /// RFC 4724 section 2: an UPDATE with nothing in it is the IPv4
    /// End-of-RIB; one with only an empty MP_UNREACH_NLRI is the marker for
    /// that family.
    pub fn end_of_rib(&self) -> Option<Family> {
        let only_unreach = self.attrs.origin.is_none()
            && self.attrs.as_path.is_none()
            && self.attrs.mp_reach.is_none()
            && self.attrs.issues.is_empty();
        if !(self.withdrawn.is_empty() && self.nlri.is_empty() && only_unreach) {
            return None;
        }
        match &self.mp_unreach {
            None if self.attrs.mp_unreach.is_none() => Some(Family::Ipv4Unicast),
            Some(u) if u.withdrawn.is_empty() => Some(u.family),
            _ => None,
        }
    }

    /// The session-reset error when the attribute list broke off where
    /// MP_REACH_NLRI may lie, on a session where MP_REACH_NLRI carries
    /// routes (any family but IPv4 unicast negotiated). RFC 7606 section
    /// 4's treat-as-withdraw needs the prefixes located: the Total
    /// Attribute Length finds the IPv4 NLRI field, but prefixes inside an
    /// unreadable MP_REACH_NLRI can be neither withdrawn nor kept, and
    /// keeping the peer's earlier routes for them would be wrong, so the
    /// session is reset (section 5.1: MP_REACH_NLRI SHALL come first, so a
    /// conforming speaker's is located unless it is the broken one).
    ///
    /// An MP_REACH_NLRI may be hidden when none was located and either the
    /// broken attribute is (or may be: unreadable header) an MP attribute,
    /// or the UPDATE has no IPv4 prefixes of its own (an MP UPDATE).
    pub fn unlocatable_nlri(&self, families: &[Family]) -> Option<DecodeError> {
        if !self.attrs.truncated
            || self.attrs.mp_reach.is_some()
            || families.iter().all(|f| *f == Family::Ipv4Unicast)
        {
            return None;
        }
        let broken = self.attrs.issues.last().map_or(0, |i| i.type_code);
        let mp_broken = matches!(broken, 0 | tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI);
        let ipv4_update = !self.nlri.is_empty() || !self.withdrawn.is_empty();
        (mp_broken || !ipv4_update).then_some(DecodeError::MalformedAttributeList(
            "attribute list broken where MP_REACH_NLRI may lie: its prefixes cannot be located",
        ))
    }

    /// The owned attributes for the IPv4 NLRI field.
    pub fn ipv4_attrs(&self, ctx: &DecodeCtx) -> PathAttrs {
        self.attrs
            .to_path_attrs(ctx, self.attrs.next_hop.map(IpAddr::V4), None)
    }

    /// The owned attributes for the MP_REACH_NLRI prefixes.
    pub fn mp_attrs(&self, ctx: &DecodeCtx) -> Option<PathAttrs> {
        let r = self.mp_reach.as_ref()?;
        Some(
            self.attrs
                .to_path_attrs(ctx, Some(r.next_hop), r.link_local),
        )
    }
}

fn nlri_error(e: nlri::NlriError) -> DecodeError {
    DecodeError::InvalidNetworkField(e.reason())
}

fn mp_error(code: u8, reason: &'static str, value: &[u8]) -> DecodeError {
    let mut attribute = Vec::with_capacity(value.len() + 4);
    attribute.push(flag::OPTIONAL | flag::EXTENDED_LENGTH);
    attribute.push(code);
    attribute.extend_from_slice(&(value.len() as u16).to_be_bytes());
    attribute.extend_from_slice(value);
    DecodeError::OptionalAttribute {
        type_code: code,
        reason,
        attribute,
    }
}

/// Decodes an UPDATE body (after the header).
pub fn decode<'a>(body: &'a [u8], ctx: &DecodeCtx) -> Result<Update<'a>, DecodeError> {
    let mut r = Reader::new(body);
    // RFC 4271 section 6.3: "If the Withdrawn Routes Length or Total
    // Attribute Length is too large (i.e., if Withdrawn Routes Length +
    // Total Attribute Length + 23 exceeds the message Length), then the
    // Error Subcode MUST be set to Malformed Attribute List."
    let too_long = DecodeError::MalformedAttributeList("lengths exceed the message");
    let wlen = r.u16().ok_or(too_long.clone())?;
    let withdrawn = r.take(usize::from(wlen)).ok_or(too_long.clone())?;
    let alen = r.u16().ok_or(too_long.clone())?;
    let section = r.take(usize::from(alen)).ok_or(too_long)?;
    let nlri_field = r.rest();

    // RFC 7606 section 5.3: the Withdrawn Routes and NLRI fields must parse
    // completely, or the session is reset.
    nlri::validate(withdrawn, Family::Ipv4Unicast).map_err(nlri_error)?;
    nlri::validate(nlri_field, Family::Ipv4Unicast).map_err(nlri_error)?;

    let mut attrs = attributes::parse(section, ctx)?;
    let mut foreign_families = Vec::new();
    let mp_reach = match attrs.mp_reach {
        Some(v) => decode_mp_reach(v, &mut foreign_families)?,
        None => None,
    };
    let mp_unreach = match attrs.mp_unreach {
        Some(v) => decode_mp_unreach(v, &mut foreign_families)?,
        None => None,
    };

    // RFC 7606 section 3 (d): "If any of the well-known mandatory
    // attributes are not present in an UPDATE message, then
    // 'treat-as-withdraw' MUST be used." NEXT_HOP is mandatory only with
    // IPv4 NLRI (RFC 4760 section 3 makes it discretionary otherwise).
    let announces = !nlri_field.is_empty() || mp_reach.as_ref().is_some_and(|m| !m.nlri.is_empty());
    if announces {
        let has_issue = |a: &RawAttrs, code| a.issues.iter().any(|i| i.type_code == code);
        if attrs.origin.is_none() && !has_issue(&attrs, tc::ORIGIN) {
            push_missing(&mut attrs, tc::ORIGIN, "ORIGIN is missing");
        }
        if attrs.as_path.is_none() && !has_issue(&attrs, tc::AS_PATH) {
            push_missing(&mut attrs, tc::AS_PATH, "AS_PATH is missing");
        }
        if !nlri_field.is_empty() && attrs.next_hop.is_none() && !has_issue(&attrs, tc::NEXT_HOP) {
            push_missing(&mut attrs, tc::NEXT_HOP, "NEXT_HOP is missing");
        }
    }

    Ok(Update {
        withdrawn: NlriIter::new(withdrawn, Family::Ipv4Unicast),
        nlri: NlriIter::new(nlri_field, Family::Ipv4Unicast),
        attrs,
        mp_reach,
        mp_unreach,
        foreign_families,
    })
}

fn push_missing(a: &mut RawAttrs, code: u8, reason: &'static str) {
    a.issues.push(super::error::AttrIssue {
        type_code: code,
        action: AttrAction::TreatAsWithdraw,
        reason,
    });
}

fn decode_mp_reach<'a>(
    v: &'a [u8],
    foreign: &mut Vec<(u16, u8)>,
) -> Result<Option<MpReach<'a>>, DecodeError> {
    let code = tc::MP_REACH_NLRI;
    let mut r = Reader::new(v);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(mp_error(code, "MP_REACH_NLRI is truncated", v));
    };
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        foreign.push((afi, safi));
        return Ok(None);
    };
    let (Some(nh), Some(_reserved)) = (r.take(usize::from(nh_len)), r.u8()) else {
        return Err(mp_error(
            code,
            "MP_REACH_NLRI next hop overruns the attribute",
            v,
        ));
    };
    // RFC 7606 section 7.11: "If the Length of Next Hop Network Address
    // field of the MP_REACH attribute is inconsistent with that which was
    // expected, the attribute is considered malformed. Since the next hop
    // precedes the NLRI field in the attribute, in this case it will not be
    // possible to reliably locate the NLRI; thus, the 'session reset' or
    // 'AFI/SAFI disable' approach MUST be used."
    let (next_hop, link_local) = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => {
            let a: [u8; 4] = nh.try_into().unwrap_or_default();
            (IpAddr::V4(Ipv4Addr::from(a)), None)
        }
        (Family::Ipv6Unicast, 16 | 32) => {
            let g: [u8; 16] = nh
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default();
            let ll = nh
                .get(16..32)
                .and_then(|s| <[u8; 16]>::try_from(s).ok())
                .map(Ipv6Addr::from);
            (IpAddr::V6(Ipv6Addr::from(g)), ll)
        }
        _ => {
            return Err(mp_error(
                code,
                "next hop length does not match the family",
                v,
            ));
        }
    };
    let field = r.rest();
    nlri::validate(field, family).map_err(|e| mp_error(code, e.reason(), v))?;
    Ok(Some(MpReach {
        family,
        next_hop,
        link_local,
        nlri: NlriIter::new(field, family),
    }))
}

fn decode_mp_unreach<'a>(
    v: &'a [u8],
    foreign: &mut Vec<(u16, u8)>,
) -> Result<Option<MpUnreach<'a>>, DecodeError> {
    let code = tc::MP_UNREACH_NLRI;
    let mut r = Reader::new(v);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(mp_error(code, "MP_UNREACH_NLRI is truncated", v));
    };
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        foreign.push((afi, safi));
        return Ok(None);
    };
    let field = r.rest();
    nlri::validate(field, family).map_err(|e| mp_error(code, e.reason(), v))?;
    Ok(Some(MpUnreach {
        family,
        withdrawn: NlriIter::new(field, family),
    }))
}

/// Largest UPDATE body.
const MAX_BODY: usize = MAX_MESSAGE_LEN - HEADER_LEN;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("path attributes take {0} bytes, leaving no room for NLRI in a 4096-byte UPDATE")]
    AttributesTooLong(usize),
    #[error("no next hop of the prefix's family to announce {0} with")]
    NoNextHop(IpNetwork),
}

fn finish(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    put_header(&mut out, MessageType::Update, body.len());
    out.put_slice(body);
    out.freeze()
}

/// Packs `prefixes` (all of `family`) with `attrs` into UPDATEs. IPv4 goes
/// in the NLRI field with a NEXT_HOP attribute; IPv6 in MP_REACH_NLRI,
/// encoded first as RFC 7606 section 5.1 asks.
pub fn encode_announce(
    attrs: &PathAttrs,
    prefixes: &[IpNetwork],
    family: Family,
    four_octet_as: bool,
) -> Result<Vec<Bytes>, EncodeError> {
    let mut out = Vec::new();
    let Some(first) = prefixes.first() else {
        return Ok(out);
    };
    let mut common = BytesMut::new();
    attrs.encode(&mut common, four_octet_as, family == Family::Ipv4Unicast);
    let next_hop = match (family, attrs.next_hop) {
        (Family::Ipv4Unicast, Some(IpAddr::V4(_))) => Vec::new(),
        (Family::Ipv6Unicast, Some(IpAddr::V6(g))) => {
            let mut nh = g.octets().to_vec();
            if let Some(ll) = attrs.link_local_next_hop {
                nh.extend_from_slice(&ll.octets());
            }
            nh
        }
        _ => return Err(EncodeError::NoNextHop(*first)),
    };
    // MP_REACH header: flags, type, 2-byte length, AFI, SAFI, NH length,
    // next hop, reserved.
    let mp_fixed = if family == Family::Ipv4Unicast {
        0
    } else {
        4 + 4 + next_hop.len() + 1
    };
    let fixed = 4 + common.len() + mp_fixed;
    let room = MAX_BODY
        .checked_sub(fixed)
        .filter(|r| *r >= 17)
        .ok_or(EncodeError::AttributesTooLong(common.len() + mp_fixed))?;

    let mut rest = prefixes;
    while !rest.is_empty() {
        let mut used = 0;
        let mut n = 0;
        for p in rest {
            let l = nlri::encoded_len(p);
            if used + l > room {
                break;
            }
            used += l;
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let mut nlri_bytes = BytesMut::with_capacity(used);
        for p in batch {
            nlri::encode(&mut nlri_bytes, p);
        }
        let mut body = BytesMut::with_capacity(fixed + used);
        body.put_u16(0);
        if family == Family::Ipv4Unicast {
            body.put_u16(common.len() as u16);
            body.put_slice(&common);
            body.put_slice(&nlri_bytes);
        } else {
            let mut mp = BytesMut::with_capacity(mp_fixed + used);
            mp.put_u16(family.afi());
            mp.put_u8(family.safi());
            mp.put_u8(next_hop.len() as u8);
            mp.put_slice(&next_hop);
            mp.put_u8(0);
            mp.put_slice(&nlri_bytes);
            body.put_u16((4 + mp.len() + common.len()) as u16);
            body.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
            body.put_u8(tc::MP_REACH_NLRI);
            body.put_u16(mp.len() as u16);
            body.put_slice(&mp);
            body.put_slice(&common);
        }
        out.push(finish(&body));
    }
    Ok(out)
}

/// Packs withdrawals of `prefixes` (all of `family`) into UPDATEs.
pub fn encode_withdraw(prefixes: &[IpNetwork], family: Family) -> Vec<Bytes> {
    let room = match family {
        Family::Ipv4Unicast => MAX_BODY - 4,
        Family::Ipv6Unicast => MAX_BODY - 4 - 4 - 3,
    };
    let mut out = Vec::new();
    for batch in pack(prefixes, room) {
        let mut field = BytesMut::new();
        for p in batch {
            nlri::encode(&mut field, p);
        }
        let mut body = BytesMut::new();
        if family == Family::Ipv4Unicast {
            body.put_u16(field.len() as u16);
            body.put_slice(&field);
            body.put_u16(0);
        } else {
            body.put_u16(0);
            body.put_u16((4 + 3 + field.len()) as u16);
            // Always the extended-length form, so the header size is fixed.
            body.put_u8(flag::OPTIONAL | flag::EXTENDED_LENGTH);
            body.put_u8(tc::MP_UNREACH_NLRI);
            body.put_u16((3 + field.len()) as u16);
            body.put_u16(family.afi());
            body.put_u8(family.safi());
            body.put_slice(&field);
        }
        out.push(finish(&body));
    }
    out
}

fn pack(prefixes: &[IpNetwork], room: usize) -> Vec<&[IpNetwork]> {
    let mut out = Vec::new();
    let mut rest = prefixes;
    while !rest.is_empty() {
        let mut used = 0;
        let n = rest
            .iter()
            .take_while(|p| {
                used += nlri::encoded_len(p);
                used <= room
            })
            .count()
            .max(1);
        let (batch, tail) = rest.split_at(n.min(rest.len()));
        out.push(batch);
        rest = tail;
    }
    out
}

/// The End-of-RIB marker for `family` (RFC 4724 section 2).
pub fn encode_end_of_rib(family: Family) -> Bytes {
    match family {
        Family::Ipv4Unicast => finish(&[0, 0, 0, 0]),
        Family::Ipv6Unicast => {
            let mut value = BytesMut::new();
            value.put_u16(family.afi());
            value.put_u8(family.safi());
            let mut body = BytesMut::new();
            body.put_u16(0);
            body.put_u16(6);
            attributes::put_attr(&mut body, flag::OPTIONAL, tc::MP_UNREACH_NLRI, &value);
            finish(&body)
        }
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
