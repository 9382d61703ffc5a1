//! The BGP-4 wire format: framing, OPEN, UPDATE, NOTIFICATION, KEEPALIVE
//! and ROUTE-REFRESH, in both directions.
//!
//! Every received byte goes through [`header::split_frame`] (marker,
//! length, type) and then one message decoder, each a bounds-checked pass
//! over a borrowed slice that returns a [`error::DecodeError`] (which maps
//! to exactly one NOTIFICATION) instead of panicking. UPDATEs decode
//! without copying: [`update::Update`] borrows the frame and its NLRI are
//! iterated in place by [`nlri::NlriIter`].

pub mod aspath;
pub mod attributes;
pub mod capability;
pub mod error;
pub mod header;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub use error::{AttrAction, DecodeError};
pub use header::{Frame, MessageType};
pub use notification::Notification;

/// Header length: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 section 4.1: "The value of the Length field MUST always be at
/// least 19 and no greater than 4096". Extended messages (RFC 8654) are not
/// negotiated.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The AS number a 2-octet-only speaker sees in place of a 4-octet one
/// (RFC 6793 section 9).
pub const AS_TRANS: u32 = 23456;

/// Address family identifiers (IANA).
pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
/// Subsequent address family identifier for unicast.
pub const SAFI_UNICAST: u8 = 1;

/// The address families this speaker exchanges routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4Unicast),
            (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn afi(self) -> u16 {
        match self {
            Family::Ipv4Unicast => AFI_IPV4,
            Family::Ipv6Unicast => AFI_IPV6,
        }
    }

    pub fn safi(self) -> u8 {
        SAFI_UNICAST
    }

    /// The longest valid prefix length in this family.
    pub fn max_len(self) -> u8 {
        match self {
            Family::Ipv4Unicast => 32,
            Family::Ipv6Unicast => 128,
        }
    }

    pub fn of(net: &ipnetwork::IpNetwork) -> Family {
        match net {
            ipnetwork::IpNetwork::V4(_) => Family::Ipv4Unicast,
            ipnetwork::IpNetwork::V6(_) => Family::Ipv6Unicast,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A KEEPALIVE: the header alone (RFC 4271 section 4.4).
pub fn encode_keepalive() -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(HEADER_LEN);
    header::put_header(&mut out, MessageType::Keepalive, 0);
    out.freeze()
}

/// Cursor helpers over a borrowed slice: every read checks bounds and
/// reports a short buffer as `None`, so no decoder indexes out of range.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}
