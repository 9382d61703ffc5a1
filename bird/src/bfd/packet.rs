//! BFD Control packets (RFC 5880 section 4.1): the 24-byte mandatory
//! section, parsed with every reception check of section 6.8.6 that does
//! not need session state. Authentication is not supported: a packet with
//! the A bit is refused (RFC 5880 says to discard it when the session has
//! no authentication configured).

use std::fmt;

/// The length of a Control packet without authentication.
pub const LEN: usize = 24;

/// bfd.SessionState / the Sta field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// Diagnostic codes (RFC 5880 section 4.1).
pub mod diag {
    pub const NONE: u8 = 0;
    pub const DETECTION_TIME_EXPIRED: u8 = 1;
    pub const NEIGHBOR_SIGNALED_DOWN: u8 = 3;
    pub const ADMIN_DOWN: u8 = 7;

    /// A diagnostic as text, for logs and status.
    pub fn describe(d: u8) -> &'static str {
        match d {
            0 => "no diagnostic",
            1 => "control detection time expired",
            2 => "echo function failed",
            3 => "neighbor signaled session down",
            4 => "forwarding plane reset",
            5 => "path down",
            6 => "concatenated path down",
            7 => "administratively down",
            8 => "reverse concatenated path down",
            _ => "unknown diagnostic",
        }
    }
}

/// One Control packet's mandatory section. Intervals are in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub diag: u8,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    /// Control Plane Independent.
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
}

/// Why a packet was discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("{0} bytes is shorter than a BFD Control packet ({LEN})")]
    Short(usize),
    #[error("BFD version {0} (only 1 exists)")]
    Version(u8),
    #[error("length field {field} does not fit the {got}-byte datagram")]
    Length { field: u8, got: usize },
    #[error("authentication is not configured but the packet carries it")]
    Authenticated,
    #[error("detect multiplier is 0")]
    ZeroMultiplier,
    #[error("the multipoint bit is set")]
    Multipoint,
    #[error("my discriminator is 0")]
    ZeroDiscriminator,
}

impl Control {
    /// Parses and checks a datagram's payload (RFC 5880 section 6.8.6, the
    /// checks that need no session).
    pub fn parse(b: &[u8]) -> Result<Control, PacketError> {
        if b.len() < LEN {
            return Err(PacketError::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(PacketError::Version(version));
        }
        let flags = b[1];
        let length = b[3];
        let auth = flags & 0x04 != 0;
        if (length as usize) < LEN || length as usize > b.len() {
            return Err(PacketError::Length {
                field: length,
                got: b.len(),
            });
        }
        if auth {
            return Err(PacketError::Authenticated);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let c = Control {
            diag: b[0] & 0x1f,
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            cpi: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: b[2],
            my_discr: word(4),
            your_discr: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        if c.detect_mult == 0 {
            return Err(PacketError::ZeroMultiplier);
        }
        if c.my_discr == 0 {
            return Err(PacketError::ZeroDiscriminator);
        }
        Ok(c)
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Control {
        Control {
            diag: diag::DETECTION_TIME_EXPIRED,
            state: State::Init,
            poll: true,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 7,
            desired_min_tx: 100_000,
            required_min_rx: 200_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn round_trips_and_matches_the_rfc_layout() {
        let c = sample();
        let b = c.encode();
        // Version 1, diag 1; Init (2) with Poll; mult 3; length 24.
        assert_eq!(&b[..4], &[0x21, 0xa0, 3, 24]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[12..16], &100_000u32.to_be_bytes());
        assert_eq!(Control::parse(&b), Ok(c));
        for s in [State::AdminDown, State::Down, State::Init, State::Up] {
            let c = Control {
                state: s,
                ..sample()
            };
            assert_eq!(Control::parse(&c.encode()).unwrap().state, s);
        }
    }

    #[test]
    fn every_reception_check_refuses() {
        let good = sample().encode();
        let mut bad = good;
        bad[0] = (2 << 5) | 1;
        assert_eq!(Control::parse(&bad), Err(PacketError::Version(2)));
        assert_eq!(Control::parse(&good[..23]), Err(PacketError::Short(23)));
        let mut bad = good;
        bad[3] = 30;
        assert!(matches!(
            Control::parse(&bad),
            Err(PacketError::Length { .. })
        ));
        let mut bad = good;
        bad[3] = 20;
        assert!(matches!(
            Control::parse(&bad),
            Err(PacketError::Length { .. })
        ));
        let mut bad = good;
        bad[1] |= 0x04;
        assert_eq!(Control::parse(&bad), Err(PacketError::Authenticated));
        let mut bad = good;
        bad[1] |= 0x01;
        assert_eq!(Control::parse(&bad), Err(PacketError::Multipoint));
        let mut bad = good;
        bad[2] = 0;
        assert_eq!(Control::parse(&bad), Err(PacketError::ZeroMultiplier));
        let mut bad = good;
        bad[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(Control::parse(&bad), Err(PacketError::ZeroDiscriminator));
        // Trailing bytes beyond the length field are allowed (padding).
        let mut long = good.to_vec();
        long.extend_from_slice(&[0; 8]);
        assert!(Control::parse(&long).is_ok());
    }
}
