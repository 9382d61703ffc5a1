//! BFD Control packets (RFC 5880 section 4.1): the 24-byte mandatory
//! section, parsed with every reception check of section 6.8.6 that does
//! not need session state, and the authentication section of Keyed SHA1
//! and Meticulous Keyed SHA1 (sections 4.4, 6.7.4): parsed here, the
//! digest computed and checked here ([`Key`]); whether a packet must or
//! must not carry one, and its sequence number, are the session's
//! business ([`super::session`]). Other authentication types (simple
//! password, MD5) are refused as unsupported.

use std::fmt;

use sha1::{Digest as _, Sha1};

/// The length of a Control packet without authentication.
pub const LEN: usize = 24;
/// The Auth Len of a SHA1 authentication section (RFC 5880 section 4.4).
pub const SHA1_AUTH_LEN: usize = 28;
/// The length of a Control packet with a SHA1 authentication section.
pub const SHA1_LEN: usize = LEN + SHA1_AUTH_LEN;
/// Where the 20-byte Auth Key/Digest field starts in such a packet.
const DIGEST_AT: usize = LEN + 8;
/// The longest key SHA1 authentication takes (the digest field's size).
pub const MAX_KEY_LEN: usize = 20;

/// The SHA1 authentication types (RFC 5880 section 4.1, Auth Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// Type 4: the sequence number may stay the same between packets.
    KeyedSha1,
    /// Type 5: the sequence number goes up with every packet.
    MeticulousKeyedSha1,
}

impl AuthKind {
    pub fn code(self) -> u8 {
        match self {
            AuthKind::KeyedSha1 => 4,
            AuthKind::MeticulousKeyedSha1 => 5,
        }
    }

    fn from_code(t: u8) -> Option<AuthKind> {
        match t {
            4 => Some(AuthKind::KeyedSha1),
            5 => Some(AuthKind::MeticulousKeyedSha1),
            _ => None,
        }
    }
}

impl fmt::Display for AuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthKind::KeyedSha1 => "keyed SHA1",
            AuthKind::MeticulousKeyedSha1 => "meticulous keyed SHA1",
        })
    }
}

/// A received packet's authentication section (SHA1 types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSection {
    pub kind: AuthKind,
    pub key_id: u8,
    pub seq: u32,
    pub digest: [u8; 20],
}

/// A session's authentication key: type, Key ID, and the secret padded
/// with zeros to 20 bytes (RFC 5880 section 6.7.4). Debug output does
/// not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    pub kind: AuthKind,
    pub id: u8,
    secret: [u8; MAX_KEY_LEN],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a BFD SHA1 key must be 1 to 20 bytes long, not {0}")]
pub struct KeyLengthError(pub usize);

impl Key {
    pub fn new(kind: AuthKind, id: u8, secret: &[u8]) -> Result<Key, KeyLengthError> {
        if secret.is_empty() || secret.len() > MAX_KEY_LEN {
            return Err(KeyLengthError(secret.len()));
        }
        let mut padded = [0u8; MAX_KEY_LEN];
        padded[..secret.len()].copy_from_slice(secret);
        Ok(Key {
            kind,
            id,
            secret: padded,
        })
    }

    /// The SHA1 digest of a packet (its first [`SHA1_LEN`] bytes) with
    /// this key in the digest field.
    fn digest(&self, packet: &[u8; SHA1_LEN]) -> [u8; 20] {
        let mut p = *packet;
        p[DIGEST_AT..].copy_from_slice(&self.secret);
        Sha1::digest(p).into()
    }

    /// Whether `raw` (a datagram [`Control::parse`] accepted with an
    /// authentication section) carries this key's digest. Any other
    /// shape of datagram is not.
    pub fn verify(&self, raw: &[u8]) -> bool {
        let Some(p) = raw
            .get(..SHA1_LEN)
            .and_then(|p| <&[u8; SHA1_LEN]>::try_from(p).ok())
        else {
            return false;
        };
        if usize::from(p[3]) != SHA1_LEN {
            return false;
        }
        let want = self.digest(p);
        // Constant time: no early exit on the first differing byte.
        want.iter()
            .zip(&p[DIGEST_AT..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

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
    /// The authentication section, if the packet has one (A bit).
    pub auth: Option<AuthSection>,
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
    #[error("authentication section length {auth_len} does not fit the packet length {field}")]
    AuthLength { field: u8, auth_len: u8 },
    #[error(
        "authentication type {0} is not supported (only keyed SHA1, 4, and meticulous keyed SHA1, 5)"
    )]
    AuthType(u8),
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
        let auth = if auth {
            Some(Self::parse_auth(b, length)?)
        } else {
            None
        };
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
            auth,
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

    /// The authentication section of `b`, whose length field is `length`
    /// (already known to fit `b`).
    fn parse_auth(b: &[u8], length: u8) -> Result<AuthSection, PacketError> {
        let len = usize::from(length);
        let (Some(&t), Some(&auth_len)) = (b.get(LEN), b.get(LEN + 1)) else {
            return Err(PacketError::AuthLength {
                field: length,
                auth_len: 0,
            });
        };
        if len < LEN + 2 || LEN + usize::from(auth_len) != len {
            return Err(PacketError::AuthLength {
                field: length,
                auth_len,
            });
        }
        let kind = AuthKind::from_code(t).ok_or(PacketError::AuthType(t))?;
        if usize::from(auth_len) != SHA1_AUTH_LEN {
            return Err(PacketError::AuthLength {
                field: length,
                auth_len,
            });
        }
        let s = b.get(LEN..SHA1_LEN).ok_or(PacketError::AuthLength {
            field: length,
            auth_len,
        })?;
        let mut digest = [0u8; 20];
        digest.copy_from_slice(&s[8..28]);
        Ok(AuthSection {
            kind,
            key_id: s[2],
            // s[3] is reserved: ignored on receipt.
            seq: u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
            digest,
        })
    }

    /// The packet with an authentication section by `key`, sequence
    /// number `seq` (RFC 5880 section 6.7.4). `self.auth` is ignored.
    pub fn encode_signed(&self, key: &Key, seq: u32) -> [u8; SHA1_LEN] {
        let mut p = [0u8; SHA1_LEN];
        p[..LEN].copy_from_slice(&self.encode());
        p[1] |= 0x04;
        p[3] = SHA1_LEN as u8;
        p[LEN] = key.kind.code();
        p[LEN + 1] = SHA1_AUTH_LEN as u8;
        p[LEN + 2] = key.id;
        p[LEN + 4..DIGEST_AT].copy_from_slice(&seq.to_be_bytes());
        let d = key.digest(&p);
        p[DIGEST_AT..].copy_from_slice(&d);
        p
    }

    /// The mandatory section alone (no authentication; `self.auth` is
    /// ignored).
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
            auth: None,
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
        // The A bit on a 24-byte packet: no room for the section.
        let mut bad = good;
        bad[1] |= 0x04;
        assert!(matches!(
            Control::parse(&bad),
            Err(PacketError::AuthLength { .. })
        ));
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

    fn key(kind: AuthKind, id: u8, secret: &[u8]) -> Key {
        Key::new(kind, id, secret).unwrap()
    }

    #[test]
    fn a_signed_packet_has_the_rfc_layout_and_an_independently_computed_digest() {
        let k = key(AuthKind::MeticulousKeyedSha1, 7, b"s3cret");
        let b = sample().encode_signed(&k, 0xffff_fffe);
        // A bit set, length 52; type 5, Auth Len 28, key ID 7, reserved 0.
        assert_eq!(&b[..4], &[0x21, 0xa4, 3, 52]);
        assert_eq!(&b[24..28], &[5, 28, 7, 0]);
        assert_eq!(&b[28..32], &0xffff_fffeu32.to_be_bytes());
        // SHA1 over the packet with the key, zero-padded to 20 bytes, in
        // the digest field: computed with Python's hashlib.
        let want = "05eaab1a5dc6d5d856943c657af6d6d24e1d5de3";
        let got: String = b[32..52].iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_signed_packet_round_trips_and_verifies_only_with_its_key() {
        for kind in [AuthKind::KeyedSha1, AuthKind::MeticulousKeyedSha1] {
            let k = key(kind, 200, b"01234567890123456789");
            let b = sample().encode_signed(&k, 42);
            let c = Control::parse(&b).unwrap();
            let a = c.auth.unwrap();
            assert_eq!((a.kind, a.key_id, a.seq), (kind, 200, 42));
            assert_eq!(&a.digest, &b[32..52]);
            assert_eq!(
                Control { auth: None, ..c },
                sample(),
                "the mandatory section is unchanged"
            );
            assert!(k.verify(&b));
            // Another secret, the same secret one byte shorter, or a
            // changed byte anywhere: refused.
            assert!(!key(kind, 200, b"01234567890123456780").verify(&b));
            assert!(!key(kind, 200, b"0123456789012345678").verify(&b));
            for i in 0..b.len() {
                let mut bad = b;
                bad[i] ^= 0x40;
                assert!(!k.verify(&bad), "byte {i} changed, still verified");
            }
            // Shorter than a signed packet: not verified, no panic.
            for n in 0..b.len() {
                assert!(!k.verify(&b[..n]));
            }
        }
    }

    #[test]
    fn every_authentication_section_check_refuses() {
        let k = key(AuthKind::KeyedSha1, 1, b"k");
        let good = sample().encode_signed(&k, 1);
        // Unsupported types: simple password (1), MD5 (2, 3), unknown.
        for t in [0u8, 1, 2, 3, 6, 255] {
            let mut bad = good;
            bad[24] = t;
            assert_eq!(Control::parse(&bad), Err(PacketError::AuthType(t)));
        }
        // Auth Len not 28, or not matching the packet length.
        for auth_len in [0u8, 2, 27, 29, 255] {
            let mut bad = good;
            bad[25] = auth_len;
            assert!(
                matches!(Control::parse(&bad), Err(PacketError::AuthLength { .. })),
                "auth len {auth_len}"
            );
        }
        // A shorter packet length (the datagram still 52 bytes).
        for length in [25u8, 26, 51] {
            let mut bad = good;
            bad[3] = length;
            assert!(
                matches!(Control::parse(&bad), Err(PacketError::AuthLength { .. })),
                "length {length}"
            );
        }
        // A section shorter than SHA1's, consistent with its length.
        let mut short = good;
        short[3] = 40;
        short[25] = 16;
        assert!(matches!(
            Control::parse(&short[..40]),
            Err(PacketError::AuthLength { .. })
        ));
        // Every truncation is refused without a panic.
        for n in 0..good.len() {
            assert!(Control::parse(&good[..n]).is_err(), "{n} bytes");
        }
        // Trailing padding after a signed packet is allowed.
        let mut long = good.to_vec();
        long.extend_from_slice(&[0; 8]);
        assert!(Control::parse(&long).unwrap().auth.is_some());
        assert!(k.verify(&long));
    }

    #[test]
    fn keys_are_1_to_20_bytes_and_not_printed() {
        assert_eq!(
            Key::new(AuthKind::KeyedSha1, 1, b""),
            Err(KeyLengthError(0))
        );
        assert_eq!(
            Key::new(AuthKind::KeyedSha1, 1, &[b'x'; 21]),
            Err(KeyLengthError(21))
        );
        let k = key(AuthKind::KeyedSha1, 1, b"topsecret");
        assert!(!format!("{k:?}").contains("topsecret"));
        assert!(!format!("{k:?}").contains("116"), "no bytes either");
    }
}
