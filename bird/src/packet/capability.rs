//! Capabilities advertisement (RFC 5492) and the capabilities this speaker
//! knows: multiprotocol (RFC 4760), route refresh (RFC 2918), graceful
//! restart (RFC 4724), 4-octet AS numbers (RFC 6793) and enhanced route
//! refresh (RFC 7313, understood, not advertised).
//!
//! Decoding is split in two. Our pass walks the capability TLVs with
//! bounds checks and checks the length rules of every code we recognise;
//! only a TLV that passed is handed to zettabgp's
//! `BgpCapability::from_buffer`, and only for the codes whose zettabgp
//! decoders are known to be correct on valid input (1, 2, 65, 70).
//! Graceful restart (64) is decoded here: zettabgp drops the RFC 8538
//! "N" (Notification) flag.
//! Everything else (add-path, long-lived GR, FQDN, whose zettabgp decoder
//! rejects valid hostnames) is kept as [`Capability::Unknown`].

use bytes::{BufMut, BytesMut};

use super::Family;
use super::error::DecodeError;

pub mod code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// One address family in a graceful-restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrFamily {
    pub afi: u16,
    pub safi: u8,
    /// "Forwarding State" bit: forwarding was preserved across a restart.
    pub forwarding_preserved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    GracefulRestart {
        /// "Restart State" bit: the sender has restarted.
        restarting: bool,
        /// RFC 8538 "N" bit: graceful restart also applies to sessions
        /// ended by a NOTIFICATION (other than Hard Reset).
        notification: bool,
        /// Seconds, 12 bits.
        restart_time: u16,
        families: Vec<GrFamily>,
    },
    FourOctetAs(u32),
    EnhancedRouteRefresh,
    Unknown {
        code: u8,
        value: Vec<u8>,
    },
}

impl Capability {
    pub fn multiprotocol(f: Family) -> Capability {
        Capability::Multiprotocol {
            afi: f.afi(),
            safi: f.safi(),
        }
    }

    fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::GracefulRestart { .. } => code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Appends code, length and value.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.code());
        let len_at = out.len();
        out.put_u8(0);
        match self {
            Capability::Multiprotocol { afi, safi } => {
                out.put_u16(*afi);
                out.put_u8(0);
                out.put_u8(*safi);
            }
            Capability::RouteRefresh | Capability::EnhancedRouteRefresh => {}
            Capability::GracefulRestart {
                restarting,
                notification,
                restart_time,
                families,
            } => {
                let mut flags = if *restarting { GR_RESTART_STATE } else { 0 };
                if *notification {
                    flags |= GR_NOTIFICATION;
                }
                out.put_u16(flags | (restart_time & 0x0fff));
                for f in families {
                    out.put_u16(f.afi);
                    out.put_u8(f.safi);
                    out.put_u8(if f.forwarding_preserved {
                        GR_FORWARDING
                    } else {
                        0
                    });
                }
            }
            Capability::FourOctetAs(asn) => out.put_u32(*asn),
            Capability::Unknown { value, .. } => {
                out.put_slice(&value[..value.len().min(255)]);
            }
        }
        let len = out.len() - len_at - 1;
        out[len_at] = u8::try_from(len).unwrap_or(u8::MAX);
    }

    /// Decodes one validated TLV (code, length, value).
    fn from_tlv(code: u8, value: &[u8], tlv: &[u8]) -> Result<Capability, DecodeError> {
        check_length(code, value.len())?;
        if code == code::GRACEFUL_RESTART {
            return Ok(decode_graceful_restart(value));
        }
        if !matches!(
            code,
            code::MULTIPROTOCOL
                | code::ROUTE_REFRESH
                | code::FOUR_OCTET_AS
                | code::ENHANCED_ROUTE_REFRESH
        ) {
            return Ok(Capability::Unknown {
                code,
                value: value.to_vec(),
            });
        }
        // Safe to hand over: the TLV is complete and its length matches
        // what zettabgp's decoder for this code indexes.
        let (decoded, _used) = zettabgp::BgpCapability::from_buffer(tlv)
            .map_err(|_| DecodeError::MalformedOpen("capability rejected"))?;
        Ok(match decoded {
            Ok(cap) => from_zettabgp(cap).unwrap_or(Capability::Unknown {
                code,
                value: value.to_vec(),
            }),
            // zettabgp returns unknown AFI/SAFI pairs this way.
            Err(_) => match (code, value) {
                (code::MULTIPROTOCOL, [a0, a1, _, safi]) => Capability::Multiprotocol {
                    afi: u16::from_be_bytes([*a0, *a1]),
                    safi: *safi,
                },
                _ => Capability::Unknown {
                    code,
                    value: value.to_vec(),
                },
            },
        })
    }
}

/// Restart Flags (RFC 4724 section 3, RFC 8538 section 2), in the first
/// 16-bit word with the 12-bit Restart Time.
const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
/// Flags for Address Family: "Forwarding State" bit.
const GR_FORWARDING: u8 = 0x80;

/// Decodes a graceful-restart value whose length `check_length` accepted
/// (2 + 4n bytes).
fn decode_graceful_restart(value: &[u8]) -> Capability {
    let word = match value {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    };
    let families = value
        .get(2..)
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|f| GrFamily {
            afi: u16::from_be_bytes([f[0], f[1]]),
            safi: f[2],
            forwarding_preserved: f[3] & GR_FORWARDING != 0,
        })
        .collect();
    Capability::GracefulRestart {
        restarting: word & GR_RESTART_STATE != 0,
        notification: word & GR_NOTIFICATION != 0,
        restart_time: word & 0x0fff,
        families,
    }
}

/// The length rules of the capabilities we recognise.
fn check_length(code: u8, len: usize) -> Result<(), DecodeError> {
    let ok = match code {
        code::MULTIPROTOCOL => len == 4,
        code::ROUTE_REFRESH | code::ENHANCED_ROUTE_REFRESH => len == 0,
        code::GRACEFUL_RESTART => len >= 2 && (len - 2).is_multiple_of(4),
        code::FOUR_OCTET_AS => len == 4,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::MalformedOpen(
            "capability has the wrong length",
        ))
    }
}

fn from_zettabgp(cap: zettabgp::BgpCapability) -> Option<Capability> {
    use zettabgp::BgpCapability as Z;
    Some(match cap {
        Z::CapRR => Capability::RouteRefresh,
        Z::CapEnhancedRR => Capability::EnhancedRouteRefresh,
        Z::CapASN32(asn) => Capability::FourOctetAs(asn),
        other => {
            let (afi, safi) = other.afi_safi()?;
            Capability::Multiprotocol { afi, safi }
        }
    })
}

/// Walks the capabilities inside one Capabilities optional parameter
/// (RFC 5492 section 4), appending them to `out`.
pub fn decode_all(mut param: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    while !param.is_empty() {
        let [code, len, ..] = *param else {
            return Err(DecodeError::MalformedOpen("truncated capability header"));
        };
        let end = 2 + usize::from(len);
        let Some(tlv) = param.get(..end) else {
            return Err(DecodeError::MalformedOpen(
                "capability overruns its optional parameter",
            ));
        };
        out.push(Capability::from_tlv(code, &tlv[2..], tlv)?);
        param = &param[end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Capability) {
        let mut b = BytesMut::new();
        c.encode(&mut b);
        let mut out = vec![];
        decode_all(&b, &mut out).unwrap();
        assert_eq!(out, vec![c]);
    }

    #[test]
    fn known_capabilities_round_trip_through_zettabgp() {
        roundtrip(Capability::multiprotocol(Family::Ipv4Unicast));
        roundtrip(Capability::multiprotocol(Family::Ipv6Unicast));
        roundtrip(Capability::RouteRefresh);
        roundtrip(Capability::EnhancedRouteRefresh);
        roundtrip(Capability::FourOctetAs(4_200_000_001));
        roundtrip(Capability::GracefulRestart {
            restarting: true,
            notification: true,
            restart_time: 120,
            families: vec![GrFamily {
                afi: 2,
                safi: 1,
                forwarding_preserved: true,
            }],
        });
        roundtrip(Capability::Multiprotocol { afi: 1, safi: 77 });
        roundtrip(Capability::Unknown {
            code: 73,
            value: b"\x04host\x00".to_vec(),
        });
    }

    #[test]
    fn golden_four_octet_as() {
        let mut b = BytesMut::new();
        Capability::FourOctetAs(65001).encode(&mut b);
        assert_eq!(&b[..], &[65, 4, 0, 0, 0xfd, 0xe9]);
    }

    #[test]
    fn golden_graceful_restart_with_n_bit_and_forwarding_state() {
        let c = Capability::GracefulRestart {
            restarting: true,
            notification: true,
            restart_time: 120,
            families: vec![GrFamily {
                afi: 1,
                safi: 1,
                forwarding_preserved: true,
            }],
        };
        let mut b = BytesMut::new();
        c.encode(&mut b);
        // R and N set, 120 s; IPv4 unicast with the Forwarding State bit.
        assert_eq!(&b[..], &[64, 6, 0xc0, 120, 0, 1, 1, 0x80]);
        let mut out = vec![];
        decode_all(&b, &mut out).unwrap();
        assert_eq!(out, vec![c]);
    }

    #[test]
    fn capability_overrunning_its_parameter_is_malformed_open() {
        let mut out = vec![];
        assert!(decode_all(&[65, 4, 0, 0], &mut out).is_err());
        assert!(decode_all(&[65], &mut out).is_err());
    }

    #[test]
    fn wrong_length_for_a_known_code_is_rejected_before_zettabgp() {
        let mut out = vec![];
        // A 3-byte value for the 4-octet AS capability.
        assert!(decode_all(&[65, 3, 0, 0, 1], &mut out).is_err());
        // Graceful restart with a partial family.
        assert!(decode_all(&[64, 4, 0, 120, 0, 1], &mut out).is_err());
    }
}
