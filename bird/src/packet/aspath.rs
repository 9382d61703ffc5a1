//! AS_PATH and AS4_PATH (RFC 4271 section 5.1.2, RFC 6793).
//!
//! On the wire a path is a list of segments (type, count, ASNs), with
//! 2-octet ASNs towards speakers without the 4-octet AS capability and
//! 4-octet ones otherwise. Inside the daemon a path always holds 4-octet
//! ASNs: a 2-octet peer's AS_PATH is merged with its AS4_PATH on receipt
//! (RFC 6793 section 4.2.3), and split back into AS_PATH with AS_TRANS
//! plus AS4_PATH on sending (section 4.2.2).
//!
//! This module exists because zettabgp 0.6.0 writes an AS_SEQUENCE with
//! segment type 1 (AS_SET) and its decoder loops forever on a segment
//! shorter than two bytes.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::AS_TRANS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl SegmentType {
    pub fn from_u8(v: u8) -> Option<SegmentType> {
        Some(match v {
            1 => SegmentType::Set,
            2 => SegmentType::Sequence,
            3 => SegmentType::ConfedSequence,
            4 => SegmentType::ConfedSet,
            _ => return None,
        })
    }

    fn is_confed(self) -> bool {
        matches!(self, SegmentType::ConfedSequence | SegmentType::ConfedSet)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Segment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsPath {
    pub segments: Vec<Segment>,
}

/// Why a path value is malformed.
pub type PathError = &'static str;

/// Checks a path value whose ASNs are `asn_size` (2 or 4) bytes.
/// RFC 7606 section 7.2 lists what makes AS_PATH malformed: a segment
/// overrunning the attribute, a segment with zero ASNs, an unknown type.
pub fn validate(value: &[u8], asn_size: usize) -> Result<(), PathError> {
    let mut rest = value;
    while !rest.is_empty() {
        let [kind, count, ..] = *rest else {
            return Err("segment header is truncated");
        };
        if SegmentType::from_u8(kind).is_none() {
            return Err("unknown segment type");
        }
        if count == 0 {
            return Err("segment with no AS numbers");
        }
        let len = 2 + usize::from(count) * asn_size;
        if len > rest.len() {
            return Err("segment overruns the attribute");
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// Iterates the segments of a validated value as (type, raw ASN bytes).
fn segments(value: &[u8], asn_size: usize) -> impl Iterator<Item = (SegmentType, &[u8])> {
    let mut rest = value;
    std::iter::from_fn(move || {
        let [kind, count, ..] = *rest else {
            return None;
        };
        let kind = SegmentType::from_u8(kind)?;
        let len = 2 + usize::from(count) * asn_size;
        let seg = rest.get(2..len)?;
        rest = &rest[len..];
        Some((kind, seg))
    })
}

fn asns(raw: &[u8], asn_size: usize) -> impl Iterator<Item = u32> + '_ {
    raw.chunks_exact(asn_size).map(|c| match *c {
        [a, b] => u32::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    })
}

/// The leftmost AS of a validated value, if it starts with a sequence.
pub fn first_as(value: &[u8], asn_size: usize) -> Option<u32> {
    let (kind, raw) = segments(value, asn_size).next()?;
    (kind == SegmentType::Sequence)
        .then(|| asns(raw, asn_size).next())
        .flatten()
}

/// Whether a validated value holds confederation segments.
pub fn has_confed(value: &[u8], asn_size: usize) -> bool {
    segments(value, asn_size).any(|(k, _)| k.is_confed())
}

/// Whether a validated value contains AS 0 (RFC 7607).
pub fn contains_zero(value: &[u8], asn_size: usize) -> bool {
    segments(value, asn_size).any(|(_, raw)| asns(raw, asn_size).any(|a| a == 0))
}

impl AsPath {
    /// Builds a path from a validated value.
    pub fn from_wire(value: &[u8], asn_size: usize) -> AsPath {
        AsPath {
            segments: segments(value, asn_size)
                .map(|(kind, raw)| Segment {
                    kind,
                    asns: asns(raw, asn_size).collect(),
                })
                .collect(),
        }
    }

    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> AsPath {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![Segment {
                kind: SegmentType::Sequence,
                asns,
            }],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Path length for best-path selection and RFC 6793 merging: a set
    /// counts one, confederation segments count zero.
    pub fn count(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                SegmentType::ConfedSequence | SegmentType::ConfedSet => 0,
            })
            .sum()
    }

    pub fn first_as(&self) -> Option<u32> {
        let s = self.segments.first()?;
        (s.kind == SegmentType::Sequence)
            .then(|| s.asns.first().copied())
            .flatten()
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }

    /// Puts `asn` in front, as a speaker does when sending to an external
    /// peer (RFC 4271 section 5.1.2).
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(s) if s.kind == SegmentType::Sequence && s.asns.len() < 255 => {
                s.asns.insert(0, asn);
            }
            _ => self.segments.insert(
                0,
                Segment {
                    kind: SegmentType::Sequence,
                    asns: vec![asn],
                },
            ),
        }
    }

    /// Whether sending to a 2-octet peer needs AS4_PATH alongside.
    pub fn needs_as4(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > 0xffff))
    }

    /// Encodes the segments (no attribute header). With `four_octet` false
    /// every ASN above 65535 becomes AS_TRANS. Segments longer than 255
    /// ASNs are split, as the count is one octet.
    pub fn encode_value(&self, out: &mut BytesMut, four_octet: bool, skip_confed: bool) {
        for s in &self.segments {
            if skip_confed && s.kind.is_confed() {
                continue;
            }
            for chunk in s.asns.chunks(255) {
                out.put_u8(s.kind as u8);
                out.put_u8(chunk.len() as u8);
                for &a in chunk {
                    if four_octet {
                        out.put_u32(a);
                    } else {
                        out.put_u16(u16::try_from(a).unwrap_or(AS_TRANS as u16));
                    }
                }
            }
        }
    }

    /// RFC 6793 section 4.2.3: rebuilds the real path of a route from a
    /// 2-octet peer out of its AS_PATH and AS4_PATH. "If the number of AS
    /// numbers in the AS_PATH attribute is less than the number of AS
    /// numbers in the AS4_PATH attribute, then the AS4_PATH attribute SHALL
    /// be ignored, and the AS_PATH attribute SHALL be taken as the AS path
    /// information." Otherwise the leading ASes of AS_PATH that AS4_PATH
    /// does not cover are kept and AS4_PATH follows them.
    pub fn merge_as4(self, as4: AsPath) -> AsPath {
        // AS4_PATH must not carry confederation segments; drop any.
        let as4 = AsPath {
            segments: as4
                .segments
                .into_iter()
                .filter(|s| !s.kind.is_confed())
                .collect(),
        };
        let (n, n4) = (self.count(), as4.count());
        if n < n4 {
            return self;
        }
        let mut keep = n - n4;
        let mut merged = Vec::new();
        for s in self.segments {
            if keep == 0 && !s.kind.is_confed() {
                break;
            }
            match s.kind {
                SegmentType::Sequence if s.asns.len() > keep => {
                    merged.push(Segment {
                        kind: s.kind,
                        asns: s.asns[..keep].to_vec(),
                    });
                    keep = 0;
                }
                SegmentType::Sequence => {
                    keep -= s.asns.len();
                    merged.push(s);
                }
                SegmentType::Set => {
                    keep -= 1;
                    merged.push(s);
                }
                SegmentType::ConfedSequence | SegmentType::ConfedSet => merged.push(s),
            }
        }
        merged.retain(|s| !s.asns.is_empty());
        merged.extend(as4.segments);
        // Adjacent sequences (the cut one and AS4_PATH's first) join up.
        let mut out: Vec<Segment> = Vec::with_capacity(merged.len());
        for s in merged {
            match out.last_mut() {
                Some(prev)
                    if prev.kind == SegmentType::Sequence
                        && s.kind == SegmentType::Sequence
                        && prev.asns.len() + s.asns.len() <= 255 =>
                {
                    prev.asns.extend(s.asns);
                }
                _ => out.push(s),
            }
        }
        AsPath { segments: out }
    }
}

impl fmt::Display for AsPath {
    /// BIRD's notation: a sequence as space-separated ASNs, a set in
    /// braces, confederation segments in parentheses / brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segments {
            let (open, close) = match s.kind {
                SegmentType::Sequence => ("", ""),
                SegmentType::Set => ("{", "}"),
                SegmentType::ConfedSequence => ("(", ")"),
                SegmentType::ConfedSet => ("[", "]"),
            };
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(open)?;
            for (i, a) in s.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(if open.is_empty() { " " } else { "," })?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(v: &[u32]) -> Segment {
        Segment {
            kind: SegmentType::Sequence,
            asns: v.to_vec(),
        }
    }

    #[test]
    fn golden_as_sequence_is_segment_type_2() {
        let mut b = BytesMut::new();
        AsPath::sequence([65001, 65002]).encode_value(&mut b, true, false);
        assert_eq!(&b[..], &[2, 2, 0, 0, 0xfd, 0xe9, 0, 0, 0xfd, 0xea]);
        let mut b2 = BytesMut::new();
        AsPath::sequence([65001, 4_200_000_000]).encode_value(&mut b2, false, false);
        assert_eq!(&b2[..], &[2, 2, 0xfd, 0xe9, 0x5b, 0xa0]);
    }

    #[test]
    fn segment_overrunning_the_attribute_is_malformed() {
        // Claims 3 four-octet ASNs, carries 2.
        let v = [2, 3, 0, 0, 0, 1, 0, 0, 0, 2];
        assert!(validate(&v, 4).is_err());
        assert!(validate(&[2], 4).is_err());
        assert!(validate(&[2, 0], 4).is_err());
        assert!(validate(&[9, 1, 0, 1], 2).is_err());
        assert!(validate(&[], 4).is_ok());
    }

    #[test]
    fn wire_round_trip_with_sets() {
        let p = AsPath {
            segments: vec![
                seq(&[1, 2]),
                Segment {
                    kind: SegmentType::Set,
                    asns: vec![7, 8],
                },
            ],
        };
        let mut b = BytesMut::new();
        p.encode_value(&mut b, true, false);
        assert!(validate(&b, 4).is_ok());
        assert_eq!(AsPath::from_wire(&b, 4), p);
        assert_eq!(p.to_string(), "1 2 {7,8}");
        assert_eq!(p.count(), 3);
    }

    #[test]
    fn as4_path_replaces_the_as_trans_tail() {
        // RFC 6793: a 2-octet path 65001 23456 23456 with AS4_PATH
        // 4200000001 4200000002 becomes 65001 4200000001 4200000002.
        let two = AsPath::sequence([65001, AS_TRANS, AS_TRANS]);
        let four = AsPath::sequence([4_200_000_001, 4_200_000_002]);
        assert_eq!(
            two.merge_as4(four),
            AsPath::sequence([65001, 4_200_000_001, 4_200_000_002])
        );
    }

    #[test]
    fn as4_path_longer_than_as_path_is_ignored() {
        let two = AsPath::sequence([AS_TRANS]);
        let four = AsPath::sequence([4_200_000_001, 4_200_000_002]);
        assert_eq!(two.clone().merge_as4(four), two);
    }

    #[test]
    fn as4_path_with_a_set_counts_it_as_one() {
        let two = AsPath {
            segments: vec![
                seq(&[100, AS_TRANS]),
                Segment {
                    kind: SegmentType::Set,
                    asns: vec![AS_TRANS, 5],
                },
            ],
        };
        let four = AsPath {
            segments: vec![
                seq(&[4_200_000_001]),
                Segment {
                    kind: SegmentType::Set,
                    asns: vec![4_200_000_002, 5],
                },
            ],
        };
        let merged = two.merge_as4(four);
        assert_eq!(merged.to_string(), "100 4200000001 {4200000002,5}");
    }

    #[test]
    fn prepend_extends_the_leading_sequence() {
        let mut p = AsPath::default();
        p.prepend(2);
        p.prepend(1);
        assert_eq!(p, AsPath::sequence([1, 2]));
        assert_eq!(p.first_as(), Some(1));
    }

    #[test]
    fn long_sequences_split_at_255() {
        let p = AsPath::sequence(1..=300);
        let mut b = BytesMut::new();
        p.encode_value(&mut b, true, false);
        assert_eq!(b[1], 255);
        assert_eq!(b[2 + 255 * 4 + 1], 45);
        assert_eq!(AsPath::from_wire(&b, 4).count(), 300);
    }
}
