//! OPEN messages (RFC 4271 section 4.2) with the Capabilities optional
//! parameter (RFC 5492).
//!
//! Decoding checks the structure only (version, parameter lengths,
//! capability TLVs); whether the contents are acceptable (peer AS, hold
//! time, BGP Identifier) is the session's decision, in
//! [`crate::fsm`].

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use super::capability::{self, Capability};
use super::error::DecodeError;
use super::header::{MessageType, put_header};
use super::{AS_TRANS, Reader};

/// Optional parameter type of capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field; [`AS_TRANS`] when the
    /// real AS needs four octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn`, putting AS_TRANS in the 2-octet field when the AS
    /// does not fit (RFC 6793 section 4.1).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS as u16),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present, else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    pub fn has(&self, want: &Capability) -> bool {
        self.capabilities.iter().any(|c| c == want)
    }

    /// Encodes the whole message. All capabilities go into one optional
    /// parameter, as BIRD and most speakers do.
    pub fn encode(&self) -> Bytes {
        let mut caps = BytesMut::new();
        for c in &self.capabilities {
            c.encode(&mut caps);
        }
        let mut params = BytesMut::new();
        if !caps.is_empty() {
            params.put_u8(PARAM_CAPABILITIES);
            params.put_u8(u8::try_from(caps.len()).unwrap_or(u8::MAX));
            params.put_slice(&caps[..caps.len().min(255)]);
        }
        let body_len = 10 + params.len();
        let mut out = BytesMut::with_capacity(super::HEADER_LEN + body_len);
        put_header(&mut out, MessageType::Open, body_len);
        out.put_u8(4);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_slice(&self.bgp_id.octets());
        out.put_u8(u8::try_from(params.len()).unwrap_or(u8::MAX));
        out.put_slice(&params);
        out.freeze()
    }

    /// Decodes an OPEN body (after the header).
    pub fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let mut r = Reader::new(body);
        let short = DecodeError::MalformedOpen("shorter than its fixed fields");
        let version = r.u8().ok_or(short.clone())?;
        // RFC 4271 section 6.2: version is checked first.
        if version != 4 {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let my_as = r.u16().ok_or(short.clone())?;
        let hold_time = r.u16().ok_or(short.clone())?;
        let id = r.u32().ok_or(short.clone())?;
        let params_len = r.u8().ok_or(short)?;
        // RFC 9072 extended parameters start with a length of 255 and a
        // type of 255; we do not negotiate them, so they fall out below as
        // an unsupported parameter type.
        if usize::from(params_len) != r.remaining() {
            return Err(DecodeError::MalformedOpen(
                "optional parameters length disagrees with message length",
            ));
        }
        let mut capabilities = Vec::new();
        while !r.is_empty() {
            let (Some(kind), Some(len)) = (r.u8(), r.u8()) else {
                return Err(DecodeError::MalformedOpen("truncated optional parameter"));
            };
            let Some(value) = r.take(usize::from(len)) else {
                return Err(DecodeError::MalformedOpen(
                    "optional parameter overruns the message",
                ));
            };
            if kind != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter { kind });
            }
            capability::decode_all(value, &mut capabilities)?;
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Family;
    use crate::packet::capability::GrFamily;

    fn sample() -> Open {
        Open::new(
            65001,
            90,
            Ipv4Addr::new(10, 0, 0, 1),
            vec![
                Capability::multiprotocol(Family::Ipv4Unicast),
                Capability::multiprotocol(Family::Ipv6Unicast),
                Capability::RouteRefresh,
                Capability::FourOctetAs(65001),
                Capability::GracefulRestart {
                    restarting: false,
                    notification: false,
                    restart_time: 120,
                    families: vec![],
                },
            ],
        )
    }

    #[rustfmt::skip]
    const GOLDEN: &[u8] = &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0, 55, 1,                       // length 55, OPEN
        4,                              // version
        0xfd, 0xe9,                     // my AS 65001
        0, 90,                          // hold time
        10, 0, 0, 1,                    // BGP identifier
        26,                             // optional parameters length
        2, 24,                          // capabilities parameter
        1, 4, 0, 1, 0, 1,               // MP IPv4 unicast
        1, 4, 0, 2, 0, 1,               // MP IPv6 unicast
        2, 0,                           // route refresh
        65, 4, 0, 0, 0xfd, 0xe9,        // 4-octet AS 65001
        64, 2, 0, 120,                  // graceful restart, 120 s
    ];

    #[test]
    fn golden_open_encode() {
        let wire = sample().encode();
        assert_eq!(&wire[..], GOLDEN);
    }

    #[test]
    fn golden_open_decode() {
        let open = Open::decode(&GOLDEN[19..]).unwrap();
        assert_eq!(open, sample());
        assert_eq!(open.asn(), 65001);
    }

    #[test]
    fn zettabgp_decodes_our_open_identically() {
        use zettabgp::prelude::BgpMessage;
        let wire = sample().encode();
        let params = zettabgp::BgpSessionParams::new(
            1,
            90,
            zettabgp::BgpTransportMode::IPv4,
            Ipv4Addr::new(1, 1, 1, 1),
            vec![],
        );
        let mut z = zettabgp::message::BgpOpenMessage::new();
        z.decode_from(&params, &wire[19..]).unwrap();
        assert_eq!(z.as_num, 65001);
        assert_eq!(z.hold_time, 90);
        assert_eq!(z.router_id, Ipv4Addr::new(10, 0, 0, 1));
        assert!(z.caps.contains(&zettabgp::BgpCapability::SafiIPv6u));
        assert!(z.caps.contains(&zettabgp::BgpCapability::CapASN32(65001)));
        assert!(z.caps.contains(&zettabgp::BgpCapability::CapRR));
    }

    #[test]
    fn four_octet_as_goes_out_as_as_trans() {
        let open = Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(1, 2, 3, 4),
            vec![Capability::FourOctetAs(4_200_000_001)],
        );
        assert_eq!(u32::from(open.my_as), AS_TRANS);
        let back = Open::decode(&open.encode()[19..]).unwrap();
        assert_eq!(back.asn(), 4_200_000_001);
    }

    #[test]
    fn version_3_is_unsupported_version() {
        let mut body = GOLDEN[19..].to_vec();
        body[0] = 3;
        assert_eq!(
            Open::decode(&body),
            Err(DecodeError::UnsupportedVersion { version: 3 })
        );
    }

    #[test]
    fn unknown_optional_parameter_is_unsupported_optional_parameter() {
        // Parameter type 1 (deprecated authentication).
        let body = [4, 0, 1, 0, 90, 1, 1, 1, 1, 3, 1, 1, 0];
        assert_eq!(
            Open::decode(&body),
            Err(DecodeError::UnsupportedOptionalParameter { kind: 1 })
        );
    }

    #[test]
    fn parameters_length_mismatch_is_malformed_open() {
        let mut body = GOLDEN[19..].to_vec();
        body[9] += 1;
        assert!(matches!(
            Open::decode(&body),
            Err(DecodeError::MalformedOpen(_))
        ));
        body[9] -= 2;
        assert!(matches!(
            Open::decode(&body),
            Err(DecodeError::MalformedOpen(_))
        ));
    }

    #[test]
    fn capability_longer_than_its_parameter_is_malformed_open() {
        // Parameter of 4 bytes holding a capability claiming 6.
        let body = [4, 0, 1, 0, 90, 1, 1, 1, 1, 6, 2, 4, 65, 6, 0, 0];
        assert!(matches!(
            Open::decode(&body),
            Err(DecodeError::MalformedOpen(_))
        ));
    }

    #[test]
    fn graceful_restart_families_decode() {
        let open = Open::new(
            1,
            90,
            Ipv4Addr::new(1, 1, 1, 1),
            vec![Capability::GracefulRestart {
                restarting: false,
                notification: false,
                restart_time: 90,
                families: vec![GrFamily {
                    afi: 1,
                    safi: 1,
                    forwarding_preserved: false,
                }],
            }],
        );
        assert_eq!(Open::decode(&open.encode()[19..]).unwrap(), open);
    }
}
