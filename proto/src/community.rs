//! BGP communities as configuration spells them: `"aa:nn"` for a standard
//! community (RFC 1997, two 16-bit parts) and `"aa:nn:mm"` for a large one
//! (RFC 8092, three 32-bit parts). [`parse_community`] is the one parser:
//! the CRD validation (ippool-crd) and bird's configuration both use it;
//! `Display` writes the same form back.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Community {
    /// `(aa << 16) | nn`.
    Standard(u32),
    Large([u32; 3]),
}

/// A community string in neither form, or with a part too large.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    #[error("community {0:?} is not \"aa:nn\" (16-bit parts) or \"aa:nn:mm\" (32-bit parts)")]
    Form(String),
    #[error("community {0:?}: standard community parts must each fit in 16 bits")]
    Standard(String),
    #[error("community {0:?}: large community parts must each fit in 32 bits")]
    Large(String),
}

/// Parses `"aa:nn"` into a standard community or `"aa:nn:mm"` into a large
/// one (RFC 8092). Parts are decimal digits only (no sign, no spaces).
pub fn parse_community(s: &str) -> Result<Community, CommunityError> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CommunityError::Form(s.to_string()));
    }
    match parts.as_slice() {
        [a, n] => {
            let bad = || CommunityError::Standard(s.to_string());
            let a: u16 = a.parse().map_err(|_| bad())?;
            let n: u16 = n.parse().map_err(|_| bad())?;
            Ok(Community::Standard((u32::from(a) << 16) | u32::from(n)))
        }
        [a, n, m] => {
            let bad = || CommunityError::Large(s.to_string());
            Ok(Community::Large([
                a.parse().map_err(|_| bad())?,
                n.parse().map_err(|_| bad())?,
                m.parse().map_err(|_| bad())?,
            ]))
        }
        _ => Err(CommunityError::Form(s.to_string())),
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Community::Large([a, n, m]) => write!(f, "{a}:{n}:{m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_parse_standard_and_large_and_reject_overflow() {
        assert_eq!(
            parse_community("65000:100"),
            Ok(Community::Standard((65000 << 16) | 100))
        );
        assert_eq!(
            parse_community("4200000000:1:2"),
            Ok(Community::Large([4_200_000_000, 1, 2]))
        );
        assert!(
            parse_community("70000:1")
                .unwrap_err()
                .to_string()
                .contains("16 bits")
        );
        assert!(parse_community("1:2:3:4").is_err());
        assert!(
            parse_community("1:2:4294967296")
                .unwrap_err()
                .to_string()
                .contains("32 bits")
        );
        for bad in ["+5:1", "1: 2", ":1", "1:", "a:b", ""] {
            assert_eq!(
                parse_community(bad),
                Err(CommunityError::Form(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_writes_what_the_parser_reads() {
        for s in ["65000:100", "0:0", "65535:65535", "4200000000:1:2"] {
            assert_eq!(parse_community(s).unwrap().to_string(), s);
        }
    }
}
