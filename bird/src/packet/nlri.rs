//! NLRI fields: a sequence of (length, prefix bytes) pairs (RFC 4271
//! section 4.3, RFC 4760 section 5).
//!
//! [`validate`] checks a whole field once; afterwards [`NlriIter`] walks
//! the same borrowed bytes yielding `IpNetwork`s with no allocation, which
//! is what lets a session take in millions of prefixes a second.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::Family;

/// Why an NLRI field is syntactically incorrect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NlriError {
    PrefixTooLong,
    Truncated,
}

impl NlriError {
    pub fn reason(self) -> &'static str {
        match self {
            NlriError::PrefixTooLong => "prefix length exceeds the address family",
            NlriError::Truncated => "prefix overruns the NLRI field",
        }
    }
}

/// Checks that `buf` is a well-formed NLRI field of `family`; returns the
/// number of prefixes.
pub fn validate(buf: &[u8], family: Family) -> Result<usize, NlriError> {
    let max = family.max_len();
    let mut pos = 0;
    let mut count = 0;
    while let Some(&len) = buf.get(pos) {
        if len > max {
            return Err(NlriError::PrefixTooLong);
        }
        pos += 1 + usize::from(len).div_ceil(8);
        if pos > buf.len() {
            return Err(NlriError::Truncated);
        }
        count += 1;
    }
    Ok(count)
}

/// Iterates over a validated NLRI field. On bytes that were not validated
/// it stops at the first malformed prefix instead of panicking.
#[derive(Debug, Clone)]
pub struct NlriIter<'a> {
    buf: &'a [u8],
    family: Family,
}

impl<'a> NlriIter<'a> {
    pub fn new(buf: &'a [u8], family: Family) -> Self {
        NlriIter { buf, family }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

impl Iterator for NlriIter<'_> {
    type Item = IpNetwork;

    fn next(&mut self) -> Option<IpNetwork> {
        let (&len, rest) = self.buf.split_first()?;
        let nbytes = usize::from(len).div_ceil(8);
        if len > self.family.max_len() || nbytes > rest.len() {
            self.buf = &[];
            return None;
        }
        let (bytes, rest) = rest.split_at(nbytes);
        self.buf = rest;
        Some(prefix_from(bytes, len, self.family))
    }
}

/// Builds the network from its significant bytes, clearing any bits past
/// the prefix length so equal prefixes are equal keys.
fn prefix_from(bytes: &[u8], len: u8, family: Family) -> IpNetwork {
    match family {
        Family::Ipv4Unicast => {
            let mut a = [0u8; 4];
            a[..bytes.len()].copy_from_slice(bytes);
            let raw = u32::from_be_bytes(a);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            let net = Ipv4Network::new(Ipv4Addr::from(raw & mask), len);
            // len <= 32 was checked by the caller.
            IpNetwork::V4(net.unwrap_or_else(|_| Ipv4Network::from(Ipv4Addr::UNSPECIFIED)))
        }
        Family::Ipv6Unicast => {
            let mut a = [0u8; 16];
            a[..bytes.len()].copy_from_slice(bytes);
            let raw = u128::from_be_bytes(a);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let net = Ipv6Network::new(Ipv6Addr::from(raw & mask), len);
            IpNetwork::V6(net.unwrap_or_else(|_| Ipv6Network::from(Ipv6Addr::UNSPECIFIED)))
        }
    }
}

/// Bytes `net` takes in an NLRI field.
pub fn encoded_len(net: &IpNetwork) -> usize {
    1 + usize::from(net.prefix()).div_ceil(8)
}

/// Appends `net` in NLRI encoding.
pub fn encode(out: &mut BytesMut, net: &IpNetwork) {
    let len = net.prefix();
    let nbytes = usize::from(len).div_ceil(8);
    out.put_u8(len);
    match net {
        IpNetwork::V4(n) => out.put_slice(&n.network().octets()[..nbytes]),
        IpNetwork::V6(n) => out.put_slice(&n.network().octets()[..nbytes]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNetwork> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn golden_ipv4_nlri_both_directions() {
        let input = nets(&["10.1.0.0/16", "192.168.1.0/24", "0.0.0.0/0", "1.2.3.4/32"]);
        let mut b = BytesMut::new();
        for n in &input {
            encode(&mut b, n);
        }
        assert_eq!(&b[..], &[16, 10, 1, 24, 192, 168, 1, 0, 32, 1, 2, 3, 4]);
        assert_eq!(validate(&b, Family::Ipv4Unicast), Ok(4));
        assert_eq!(
            NlriIter::new(&b, Family::Ipv4Unicast).collect::<Vec<_>>(),
            input
        );
    }

    #[test]
    fn golden_ipv6_nlri_both_directions() {
        let input = nets(&["2001:db8::/32", "fd00:1:2::/48", "::/0"]);
        let mut b = BytesMut::new();
        for n in &input {
            encode(&mut b, n);
        }
        assert_eq!(
            &b[..],
            &[32, 0x20, 0x01, 0x0d, 0xb8, 48, 0xfd, 0, 0, 1, 0, 2, 0]
        );
        assert_eq!(
            NlriIter::new(&b, Family::Ipv6Unicast).collect::<Vec<_>>(),
            input
        );
    }

    #[test]
    fn host_bits_past_the_prefix_length_are_cleared() {
        // 10.1.255.0/17 on the wire: byte 255 has bits past /17 set.
        let b = [17, 10, 1, 255];
        let got: Vec<_> = NlriIter::new(&b, Family::Ipv4Unicast).collect();
        assert_eq!(got, nets(&["10.1.128.0/17"]));
    }

    #[test]
    fn prefix_length_33_is_invalid_for_ipv4() {
        assert_eq!(
            validate(&[33, 1, 2, 3, 4, 5], Family::Ipv4Unicast),
            Err(NlriError::PrefixTooLong)
        );
        assert_eq!(
            validate(&[129], Family::Ipv6Unicast),
            Err(NlriError::PrefixTooLong)
        );
    }

    #[test]
    fn truncated_prefix_is_invalid_and_iteration_stops() {
        let b = [24, 10, 1, 0, 24, 10, 2];
        assert_eq!(validate(&b, Family::Ipv4Unicast), Err(NlriError::Truncated));
        assert_eq!(NlriIter::new(&b, Family::Ipv4Unicast).count(), 1);
    }
}
