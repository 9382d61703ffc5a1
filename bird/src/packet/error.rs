//! Decode errors and the action each one calls for.
//!
//! Two kinds of problem come out of the decoders:
//! - a [`DecodeError`] means the message cannot be used at all and the
//!   session resets with the one NOTIFICATION it maps to
//!   (`From<&DecodeError> for Notification`);
//! - an [`AttrIssue`] is a malformed path attribute that RFC 7606 lets the
//!   session survive: its [`AttrAction`] is either attribute-discard or
//!   treat-as-withdraw, and the UPDATE still decodes.

use std::fmt;

use super::notification::{Notification, code, header_sub, open_sub, update_sub};

/// What RFC 7606 says to do with a malformed attribute, weakest first so
/// that `max()` picks the approach that wins. RFC 7606 section 3 (d): "When
/// multiple attribute errors exist in an UPDATE message, [...] the approach
/// with the strongest action MUST be used."
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrAction {
    /// Drop this attribute, keep the routes.
    Discard,
    /// Keep the session, but handle every prefix the UPDATE announces as a
    /// withdrawal.
    TreatAsWithdraw,
    /// Reset the session (carried by a [`DecodeError`], never stored as an
    /// issue).
    SessionReset,
}

/// One malformed attribute the session survived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrIssue {
    pub type_code: u8,
    pub action: AttrAction,
    pub reason: &'static str,
}

impl fmt::Display for AttrIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attribute {} {}: {:?}",
            self.type_code, self.reason, self.action
        )
    }
}

/// One log line for every issue of an UPDATE: how many, then each
/// distinct (attribute, reason, action) once with its count. A 4 KB
/// UPDATE can repeat an attribute over a thousand times; one line per
/// issue would let a peer flood the log.
pub fn summarize_issues(issues: &[AttrIssue]) -> String {
    let mut distinct: Vec<(&AttrIssue, usize)> = Vec::new();
    for i in issues {
        if let Some((_, n)) = distinct.iter_mut().find(|(d, _)| *d == i) {
            *n += 1;
        } else if distinct.len() < 8 {
            distinct.push((i, 1));
        }
    }
    let mut out = format!("{} malformed attribute(s):", issues.len());
    for (i, n) in &distinct {
        out.push_str(&format!(" [{i} x{n}]"));
    }
    out
}

/// A received message that cannot be processed; the session resets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("header marker is not all ones (connection not synchronized)")]
    BadMarker,
    #[error("bad message length {length}")]
    BadLength { length: u16 },
    #[error("bad message type {kind}")]
    BadType { kind: u8 },

    #[error("unsupported BGP version {version}; only 4 is supported")]
    UnsupportedVersion { version: u8 },
    #[error("malformed OPEN: {0}")]
    MalformedOpen(&'static str),
    #[error("unsupported optional parameter type {kind} in OPEN")]
    UnsupportedOptionalParameter { kind: u8 },

    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(&'static str),
    #[error("unrecognized well-known attribute {type_code}")]
    UnrecognizedWellKnown { type_code: u8, attribute: Vec<u8> },
    #[error("malformed optional attribute {type_code}: {reason}")]
    OptionalAttribute {
        type_code: u8,
        reason: &'static str,
        attribute: Vec<u8>,
    },
    #[error("invalid network field: {0}")]
    InvalidNetworkField(&'static str),

    #[error("malformed ROUTE-REFRESH: {0}")]
    MalformedRouteRefresh(&'static str),
}

impl From<&DecodeError> for Notification {
    fn from(e: &DecodeError) -> Notification {
        use DecodeError::*;
        match e {
            BadMarker => Notification::new(
                code::MESSAGE_HEADER,
                header_sub::CONNECTION_NOT_SYNCHRONIZED,
            ),
            // RFC 4271 section 6.1: "The Data field MUST contain the
            // erroneous Length field."
            BadLength { length } => Notification::with_data(
                code::MESSAGE_HEADER,
                header_sub::BAD_MESSAGE_LENGTH,
                length.to_be_bytes(),
            ),
            // "The Data field MUST contain the erroneous Type field."
            BadType { kind } => {
                Notification::with_data(code::MESSAGE_HEADER, header_sub::BAD_MESSAGE_TYPE, [*kind])
            }
            // RFC 4271 section 6.2: the data is "the largest locally-
            // supported version number less than the version the remote
            // BGP peer bid", as a 2-octet unsigned integer.
            UnsupportedVersion { .. } => Notification::with_data(
                code::OPEN_MESSAGE,
                open_sub::UNSUPPORTED_VERSION,
                4u16.to_be_bytes(),
            ),
            MalformedOpen(_) => Notification::new(code::OPEN_MESSAGE, open_sub::UNSPECIFIC),
            UnsupportedOptionalParameter { .. } => {
                Notification::new(code::OPEN_MESSAGE, open_sub::UNSUPPORTED_OPTIONAL_PARAMETER)
            }
            MalformedAttributeList(_) => {
                Notification::new(code::UPDATE_MESSAGE, update_sub::MALFORMED_ATTRIBUTE_LIST)
            }
            // RFC 4271 section 6.3: "The Data field MUST contain the
            // unrecognized attribute (type, length, and value)."
            UnrecognizedWellKnown { attribute, .. } => Notification::with_data(
                code::UPDATE_MESSAGE,
                update_sub::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                attribute.clone(),
            ),
            // RFC 4760 section 7: a malformed MP_REACH/MP_UNREACH terminates
            // the session with "UPDATE Message Error"/"Optional Attribute
            // Error".
            OptionalAttribute { attribute, .. } => Notification::with_data(
                code::UPDATE_MESSAGE,
                update_sub::OPTIONAL_ATTRIBUTE_ERROR,
                attribute.clone(),
            ),
            InvalidNetworkField(_) => {
                Notification::new(code::UPDATE_MESSAGE, update_sub::INVALID_NETWORK_FIELD)
            }
            // RFC 7313 defines no subcode for a plain malformed
            // ROUTE-REFRESH; RFC 2918 messages have a fixed length, so a
            // wrong one is a header length error.
            MalformedRouteRefresh(_) => {
                Notification::new(code::MESSAGE_HEADER, header_sub::BAD_MESSAGE_LENGTH)
            }
        }
    }
}

impl From<DecodeError> for Notification {
    fn from(e: DecodeError) -> Notification {
        Notification::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_action_wins() {
        let actions = [
            AttrAction::Discard,
            AttrAction::TreatAsWithdraw,
            AttrAction::Discard,
        ];
        assert_eq!(actions.iter().max(), Some(&AttrAction::TreatAsWithdraw));
        assert!(AttrAction::SessionReset > AttrAction::TreatAsWithdraw);
    }

    #[test]
    fn every_decode_error_maps_to_its_rfc_code() {
        let cases: Vec<(DecodeError, (u8, u8))> = vec![
            (DecodeError::BadMarker, (1, 1)),
            (DecodeError::BadLength { length: 18 }, (1, 2)),
            (DecodeError::BadType { kind: 9 }, (1, 3)),
            (DecodeError::UnsupportedVersion { version: 3 }, (2, 1)),
            (DecodeError::MalformedOpen("x"), (2, 0)),
            (
                DecodeError::UnsupportedOptionalParameter { kind: 1 },
                (2, 4),
            ),
            (DecodeError::MalformedAttributeList("x"), (3, 1)),
            (
                DecodeError::UnrecognizedWellKnown {
                    type_code: 99,
                    attribute: vec![0x40, 99, 0],
                },
                (3, 2),
            ),
            (
                DecodeError::OptionalAttribute {
                    type_code: 14,
                    reason: "x",
                    attribute: vec![],
                },
                (3, 9),
            ),
            (DecodeError::InvalidNetworkField("x"), (3, 10)),
        ];
        for (e, (c, s)) in cases {
            let n = Notification::from(&e);
            assert_eq!((n.code, n.subcode), (c, s), "{e}");
        }
        let n = Notification::from(DecodeError::BadLength { length: 5000 });
        assert_eq!(n.data, vec![0x13, 0x88]);
        let n = Notification::from(DecodeError::UnsupportedVersion { version: 5 });
        assert_eq!(n.data, vec![0, 4]);
    }
}
