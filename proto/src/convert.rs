//! Conversions between protobuf address types and `std::net` / `ipnetwork`.
//!
//! Inside the code, prefixes and addresses are always typed; bytes only
//! exist on the wire. A malformed wire value (wrong length, prefix too long)
//! is an error the caller turns into `InvalidArgument`, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::common::{IpAddress, IpPrefix};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("address has {0} bytes; expected 4 (IPv4) or 16 (IPv6)")]
    AddressLength(usize),
    #[error("prefix length {len} is longer than the address ({max} bits)")]
    PrefixLength { len: u32, max: u8 },
    #[error("required field `{0}` is missing")]
    Missing(&'static str),
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, ConvertError> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(ConvertError::AddressLength(b.len()))
    }
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        IpAddress {
            addr: ip_to_bytes(ip),
        }
    }
}

impl TryFrom<&IpAddress> for IpAddr {
    type Error = ConvertError;
    fn try_from(a: &IpAddress) -> Result<Self, ConvertError> {
        ip_from_bytes(&a.addr)
    }
}

impl From<IpNetwork> for IpPrefix {
    fn from(n: IpNetwork) -> Self {
        IpPrefix {
            addr: ip_to_bytes(n.ip()),
            prefix_len: u32::from(n.prefix()),
        }
    }
}

impl TryFrom<&IpPrefix> for IpNetwork {
    type Error = ConvertError;
    fn try_from(p: &IpPrefix) -> Result<Self, ConvertError> {
        let ip = ip_from_bytes(&p.addr)?;
        let max = if ip.is_ipv4() { 32u8 } else { 128u8 };
        let len = u8::try_from(p.prefix_len)
            .ok()
            .filter(|l| *l <= max)
            .ok_or(ConvertError::PrefixLength {
                len: p.prefix_len,
                max,
            })?;
        // The length was checked against the family above, so this cannot fail.
        IpNetwork::new(ip, len).map_err(|_| ConvertError::PrefixLength {
            len: p.prefix_len,
            max,
        })
    }
}

/// Unwraps an optional message field, naming it in the error.
pub fn required<'a, T>(field: &'a Option<T>, name: &'static str) -> Result<&'a T, ConvertError> {
    field.as_ref().ok_or(ConvertError::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_both_families() {
        for s in [
            "10.65.0.0/26",
            "0.0.0.0/0",
            "192.168.1.7/32",
            "fd00:10::/122",
            "::/0",
        ] {
            let n: IpNetwork = s.parse().unwrap();
            let wire = IpPrefix::from(n);
            assert_eq!(IpNetwork::try_from(&wire).unwrap(), n, "{s}");
        }
    }

    #[test]
    fn wrong_address_length_is_an_error_not_a_panic() {
        let p = IpPrefix {
            addr: vec![10, 0, 0],
            prefix_len: 8,
        };
        assert_eq!(IpNetwork::try_from(&p), Err(ConvertError::AddressLength(3)));
    }

    #[test]
    fn prefix_longer_than_family_is_rejected() {
        let p = IpPrefix {
            addr: vec![10, 0, 0, 0],
            prefix_len: 33,
        };
        assert_eq!(
            IpNetwork::try_from(&p),
            Err(ConvertError::PrefixLength { len: 33, max: 32 })
        );
        let p = IpPrefix {
            addr: vec![0; 16],
            prefix_len: 4_000_000_000,
        };
        assert!(matches!(
            IpNetwork::try_from(&p),
            Err(ConvertError::PrefixLength { max: 128, .. })
        ));
    }
}
