//! ROUTE-REFRESH messages (RFC 2918 section 3; the subtype byte of
//! RFC 7313 is carried but only "normal request" is acted on).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::DecodeError;
use super::header::{MessageType, put_header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    /// 0 in RFC 2918; RFC 7313 uses 1 and 2 for begin/end of route refresh.
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefresh {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(23);
        put_header(&mut out, MessageType::RouteRefresh, 4);
        out.put_u16(self.afi);
        out.put_u8(self.subtype);
        out.put_u8(self.safi);
        out.freeze()
    }

    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        match *body {
            [a0, a1, subtype, safi] => Ok(RouteRefresh {
                afi: u16::from_be_bytes([a0, a1]),
                subtype,
                safi,
            }),
            _ => Err(DecodeError::MalformedRouteRefresh("body is not 4 bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_route_refresh_both_directions() {
        let rr = RouteRefresh {
            afi: 2,
            subtype: 0,
            safi: 1,
        };
        let mut expected = vec![0xff; 16];
        expected.extend_from_slice(&[0, 23, 5, 0, 2, 0, 1]);
        assert_eq!(&rr.encode()[..], &expected[..]);
        assert_eq!(RouteRefresh::decode(&expected[19..]).unwrap(), rr);
        assert!(RouteRefresh::decode(&[0, 1, 0]).is_err());
    }
}
