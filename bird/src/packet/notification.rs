//! NOTIFICATION messages (RFC 4271 section 4.5) and their error codes.
//!
//! zettabgp's `BgpNotificationMessage` keeps at most two data bytes and
//! always writes two, so an "Unsupported Capability" or "Bad Message
//! Length" NOTIFICATION would lose or gain data on the wire; this module
//! owns both directions instead.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::header::{MessageType, put_header};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Error codes (RFC 4271 section 4.5, RFC 7313 for 7).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Message Header Error subcodes.
pub mod header_sub {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271, RFC 5492 for 7).
pub mod open_sub {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes.
pub mod update_sub {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608).
pub mod fsm_sub {
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486).
pub mod cease_sub {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    /// RFC 8538 section 3.
    pub const HARD_RESET: u8 = 9;
    /// RFC 9384: the BFD session to the peer went down.
    pub const BFD_DOWN: u8 = 10;
}

/// A NOTIFICATION: error code, subcode and the data that goes with them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    pub fn with_data(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    pub fn hold_timer_expired() -> Self {
        Self::new(code::HOLD_TIMER_EXPIRED, 0)
    }

    pub fn cease(subcode: u8) -> Self {
        Self::new(code::CEASE, subcode)
    }

    /// Cease / Hard Reset standing for `inner`: RFC 8538 section 3, "the
    /// Data field [...] is the 'ErrCode' and 'Subcode' of the 'real'
    /// NOTIFICATION followed by its Data".
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = Vec::with_capacity(2 + inner.data.len());
        data.push(inner.code);
        data.push(inner.subcode);
        data.extend_from_slice(&inner.data);
        Self::with_data(code::CEASE, cease_sub::HARD_RESET, data)
    }

    pub fn is_hard_reset(&self) -> bool {
        self.code == code::CEASE && self.subcode == cease_sub::HARD_RESET
    }

    /// Cease / Maximum Number of Prefixes Reached with the RFC 4486
    /// section 4 data: AFI, SAFI and the upper bound.
    pub fn max_prefixes(family: super::Family, limit: u32) -> Self {
        let mut data = Vec::with_capacity(7);
        data.extend_from_slice(&family.afi().to_be_bytes());
        data.push(family.safi());
        data.extend_from_slice(&limit.to_be_bytes());
        Self::with_data(code::CEASE, cease_sub::MAX_PREFIXES, data)
    }

    /// Encodes the whole message, header included. Data that would not fit
    /// in one message is truncated (it is diagnostic only).
    pub fn encode(&self) -> Bytes {
        let room = MAX_MESSAGE_LEN - HEADER_LEN - 2;
        let data = &self.data[..self.data.len().min(room)];
        let mut out = BytesMut::with_capacity(HEADER_LEN + 2 + data.len());
        put_header(&mut out, MessageType::Notification, 2 + data.len());
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(data);
        out.freeze()
    }

    /// Decodes a NOTIFICATION body (the bytes after the header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match body {
            [code, subcode, data @ ..] => Ok(Notification {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }),
            // The framing layer already rejects these lengths; checked again
            // so the decoder is safe on its own.
            _ => Err(DecodeError::BadLength {
                length: (body.len() + HEADER_LEN) as u16,
            }),
        }
    }

    /// The RFC name of the code and subcode.
    pub fn name(&self) -> String {
        let sub = |names: &[(u8, &str)]| {
            names
                .iter()
                .find(|(s, _)| *s == self.subcode)
                .map(|(_, n)| (*n).to_string())
                .unwrap_or_else(|| format!("subcode {}", self.subcode))
        };
        match self.code {
            code::MESSAGE_HEADER => format!(
                "Message Header Error / {}",
                sub(&[
                    (1, "Connection Not Synchronized"),
                    (2, "Bad Message Length"),
                    (3, "Bad Message Type"),
                ])
            ),
            code::OPEN_MESSAGE => format!(
                "OPEN Message Error / {}",
                sub(&[
                    (0, "Unspecific"),
                    (1, "Unsupported Version Number"),
                    (2, "Bad Peer AS"),
                    (3, "Bad BGP Identifier"),
                    (4, "Unsupported Optional Parameter"),
                    (6, "Unacceptable Hold Time"),
                    (7, "Unsupported Capability"),
                ])
            ),
            code::UPDATE_MESSAGE => format!(
                "UPDATE Message Error / {}",
                sub(&[
                    (1, "Malformed Attribute List"),
                    (2, "Unrecognized Well-known Attribute"),
                    (3, "Missing Well-known Attribute"),
                    (4, "Attribute Flags Error"),
                    (5, "Attribute Length Error"),
                    (6, "Invalid ORIGIN Attribute"),
                    (8, "Invalid NEXT_HOP Attribute"),
                    (9, "Optional Attribute Error"),
                    (10, "Invalid Network Field"),
                    (11, "Malformed AS_PATH"),
                ])
            ),
            code::HOLD_TIMER_EXPIRED => "Hold Timer Expired".to_string(),
            code::FSM => format!(
                "Finite State Machine Error / {}",
                sub(&[
                    (0, "Unspecified"),
                    (1, "Unexpected Message in OpenSent"),
                    (2, "Unexpected Message in OpenConfirm"),
                    (3, "Unexpected Message in Established"),
                ])
            ),
            code::CEASE => format!(
                "Cease / {}",
                sub(&[
                    (1, "Maximum Number of Prefixes Reached"),
                    (2, "Administrative Shutdown"),
                    (3, "Peer De-configured"),
                    (4, "Administrative Reset"),
                    (5, "Connection Rejected"),
                    (6, "Other Configuration Change"),
                    (7, "Connection Collision Resolution"),
                    (8, "Out of Resources"),
                    (9, "Hard Reset"),
                    (10, "BFD Down"),
                ])
            ),
            code::ROUTE_REFRESH => {
                format!("ROUTE-REFRESH Message Error / subcode {}", self.subcode)
            }
            other => format!("error code {other} / subcode {}", self.subcode),
        }
    }

    /// RFC 8203 shutdown communication, when a Cease carries one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                cease_sub::ADMINISTRATIVE_SHUTDOWN | cease_sub::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (&len, text) = self.data.split_first()?;
        let text = text.get(..usize::from(len))?;
        std::str::from_utf8(text).ok().map(str::to_string)
    }
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}/{})", self.name(), self.code, self.subcode)?;
        if let Some(msg) = self.shutdown_message() {
            write!(f, ": {msg:?}")?;
        } else if !self.data.is_empty() {
            write!(f, " data ")?;
            for b in self.data.iter().take(32) {
                write!(f, "{b:02x}")?;
            }
            if self.data.len() > 32 {
                write!(f, "...")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bad_message_length_carries_the_length() {
        let n = Notification::with_data(1, 2, 5000u16.to_be_bytes());
        let mut expected = vec![0xff; 16];
        expected.extend_from_slice(&[0, 23, 3, 1, 2, 0x13, 0x88]);
        assert_eq!(&n.encode()[..], &expected[..]);
        assert_eq!(Notification::decode(&expected[19..]).unwrap(), n);
    }

    #[test]
    fn golden_hard_reset_wraps_max_prefixes_with_its_data() {
        let inner = Notification::max_prefixes(crate::packet::Family::Ipv4Unicast, 5);
        assert_eq!(inner.data, vec![0, 1, 1, 0, 0, 0, 5]);
        let n = Notification::hard_reset(&inner);
        assert!(n.is_hard_reset());
        assert_eq!(
            &n.encode()[16..],
            &[0, 30, 3, 6, 9, 6, 1, 0, 1, 1, 0, 0, 0, 5]
        );
    }

    #[test]
    fn golden_cease_without_data_is_21_bytes() {
        let n = Notification::cease(cease_sub::CONNECTION_COLLISION_RESOLUTION);
        let wire = n.encode();
        assert_eq!(wire.len(), 21);
        assert_eq!(&wire[16..], &[0, 21, 3, 6, 7]);
    }

    #[test]
    fn shutdown_communication_is_displayed() {
        let mut data = vec![5];
        data.extend_from_slice(b"maint");
        let n = Notification::with_data(6, 2, data);
        assert_eq!(n.shutdown_message().as_deref(), Some("maint"));
        assert!(n.to_string().contains("Administrative Shutdown"));
        assert!(n.to_string().contains("maint"));
    }

    #[test]
    fn zettabgp_reads_our_notification_code_and_subcode() {
        use zettabgp::prelude::BgpMessage;
        let n = Notification::with_data(3, 1, [0xab, 0xcd]);
        let wire = n.encode();
        let params = zettabgp::BgpSessionParams::new(
            1,
            90,
            zettabgp::BgpTransportMode::IPv4,
            std::net::Ipv4Addr::new(1, 1, 1, 1),
            vec![],
        );
        let mut z = zettabgp::message::notification::BgpNotificationMessage::new();
        z.decode_from(&params, &wire[HEADER_LEN..]).unwrap();
        assert_eq!((z.error_code, z.error_subcode, z.data), (3, 1, 0xabcd));
    }

    #[test]
    fn one_byte_body_is_rejected_not_indexed() {
        assert!(Notification::decode(&[6]).is_err());
    }
}
