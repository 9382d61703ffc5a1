//! Message framing: the 19-byte header (RFC 4271 section 4.1) and the
//! per-type length bounds of section 6.1.
//!
//! [`check`] looks at a receive buffer without consuming it (cheap, like
//! mini-redis' `check` before `parse`); [`split_frame`] then cuts exactly
//! one message off the buffer without copying it.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    pub fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// Smallest and largest total length (header included) per type.
    fn bounds(self) -> (usize, usize) {
        match self {
            // Version, My AS, Hold Time, BGP Identifier, Opt Parm Len.
            MessageType::Open => (HEADER_LEN + 10, MAX_MESSAGE_LEN),
            // Withdrawn Routes Length and Total Path Attribute Length.
            MessageType::Update => (HEADER_LEN + 4, MAX_MESSAGE_LEN),
            // Error code and subcode.
            MessageType::Notification => (HEADER_LEN + 2, MAX_MESSAGE_LEN),
            // "A KEEPALIVE message consists of only the message header".
            MessageType::Keepalive => (HEADER_LEN, HEADER_LEN),
            // RFC 2918: AFI, reserved, SAFI.
            MessageType::RouteRefresh => (HEADER_LEN + 4, HEADER_LEN + 4),
        }
    }
}

/// One complete message: its type and its body (the bytes after the
/// header), sharing the receive buffer's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: MessageType,
    pub body: Bytes,
}

/// Validates the header at the start of `buf`. `Ok(None)` means more bytes
/// are needed; `Ok(Some((kind, len)))` gives the full message length.
pub fn check(buf: &[u8]) -> Result<Option<(MessageType, usize)>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        // Reject a bad marker as soon as it is visible, so garbage is not
        // buffered while waiting for a full header.
        let seen = &buf[..buf.len().min(16)];
        if seen.iter().any(|&b| b != 0xff) {
            return Err(DecodeError::BadMarker);
        }
        return Ok(None);
    };
    // RFC 4271 section 6.1: the marker must be all ones, else "Connection
    // Not Synchronized".
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err(DecodeError::BadMarker);
    }
    let length = u16::from_be_bytes([header[16], header[17]]);
    let len = usize::from(length);
    // "if the Length field of the message header is less than 19 or greater
    // than 4096 [...] the Error Subcode MUST be set to Bad Message Length."
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(DecodeError::BadLength { length });
    }
    let Some(kind) = MessageType::from_u8(header[18]) else {
        return Err(DecodeError::BadType { kind: header[18] });
    };
    let (min, max) = kind.bounds();
    if len < min || len > max {
        return Err(DecodeError::BadLength { length });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some((kind, len)))
}

/// Cuts one message off the front of `buf` if a whole one is there.
pub fn split_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some((kind, len)) = check(buf)? else {
        return Ok(None);
    };
    let mut msg = buf.split_to(len);
    let body = msg.split_off(HEADER_LEN).freeze();
    Ok(Some(Frame { kind, body }))
}

/// Writes a header for a body of `body_len` bytes. Callers keep messages
/// within [`MAX_MESSAGE_LEN`]; the length saturates rather than wraps if
/// one ever does not.
pub fn put_header(out: &mut BytesMut, kind: MessageType, body_len: usize) {
    out.put_slice(&[0xff; 16]);
    let total = u16::try_from(HEADER_LEN + body_len).unwrap_or(u16::MAX);
    out.put_u16(total);
    out.put_u8(kind as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u16, kind: u8) -> Vec<u8> {
        let mut v = vec![0xff; 16];
        v.extend_from_slice(&len.to_be_bytes());
        v.push(kind);
        v
    }

    #[test]
    fn keepalive_frames_with_an_empty_body() {
        let mut buf = BytesMut::from(&header(19, 4)[..]);
        let f = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, MessageType::Keepalive);
        assert!(f.body.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_message_waits_for_more_bytes() {
        let mut v = header(23, 2);
        v.extend_from_slice(&[0, 0]);
        assert_eq!(check(&v), Ok(None));
        assert_eq!(check(&v[..10]), Ok(None));
    }

    #[test]
    fn length_below_19_is_bad_message_length() {
        assert_eq!(
            check(&header(18, 4)),
            Err(DecodeError::BadLength { length: 18 })
        );
    }

    #[test]
    fn length_above_4096_is_bad_message_length() {
        assert_eq!(
            check(&header(4097, 2)),
            Err(DecodeError::BadLength { length: 4097 })
        );
    }

    #[test]
    fn keepalive_with_a_body_is_bad_message_length() {
        assert_eq!(
            check(&header(20, 4)),
            Err(DecodeError::BadLength { length: 20 })
        );
    }

    #[test]
    fn short_open_and_update_are_bad_message_length() {
        assert_eq!(
            check(&header(28, 1)),
            Err(DecodeError::BadLength { length: 28 })
        );
        assert_eq!(
            check(&header(22, 2)),
            Err(DecodeError::BadLength { length: 22 })
        );
        assert_eq!(
            check(&header(20, 3)),
            Err(DecodeError::BadLength { length: 20 })
        );
    }

    #[test]
    fn unknown_type_is_bad_message_type() {
        assert_eq!(check(&header(19, 9)), Err(DecodeError::BadType { kind: 9 }));
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized_even_when_partial() {
        let mut v = header(19, 4);
        v[3] = 0;
        assert_eq!(check(&v), Err(DecodeError::BadMarker));
        assert_eq!(check(&v[..5]), Err(DecodeError::BadMarker));
    }

    #[test]
    fn two_messages_in_one_buffer_split_in_order() {
        let mut v = header(19, 4);
        v.extend_from_slice(&header(23, 2));
        v.extend_from_slice(&[0, 0, 0, 0]);
        let mut buf = BytesMut::from(&v[..]);
        assert_eq!(
            split_frame(&mut buf).unwrap().unwrap().kind,
            MessageType::Keepalive
        );
        let f = split_frame(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, MessageType::Update);
        assert_eq!(&f.body[..], &[0, 0, 0, 0]);
        assert_eq!(split_frame(&mut buf).unwrap(), None);
    }

    #[test]
    fn golden_keepalive_both_directions() {
        let wire = crate::packet::encode_keepalive();
        assert_eq!(&wire[..], &header(19, 4)[..]);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            split_frame(&mut buf).unwrap().unwrap().kind,
            MessageType::Keepalive
        );
    }
}
