//! BGP AS numbers as Calico reads them: a JSON integer, or a string holding
//! either the plain number (`"64513"`, as Calico's own docs patch it) or
//! asdot notation (`"1.10"` = 1·65536 + 10). We always write the integer,
//! which is what Calico writes too.

use std::fmt;

use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserializer, Serializer, de};

/// An AS number that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid AS number {input:?}: expected an integer 0–4294967295 or asdot notation \
     <high>.<low> with both parts 0–65535 (e.g. 1.10)"
)]
pub struct AsnParseError {
    pub input: String,
}

/// Parses `"64512"` or asdot `"1.10"`.
pub fn parse(s: &str) -> Result<u32, AsnParseError> {
    let err = || AsnParseError {
        input: s.to_string(),
    };
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let (high, low) = s.split_once('.').ok_or_else(err)?;
    let high: u16 = high.parse().map_err(|_| err())?;
    let low: u16 = low.parse().map_err(|_| err())?;
    Ok((u32::from(high) << 16) | u32::from(low))
}

/// asdot text for an AS number (`65546` → `"1.10"`, `64512` → `"64512"`).
pub fn to_asdot(asn: u32) -> String {
    if asn > u32::from(u16::MAX) {
        format!("{}.{}", asn >> 16, asn & 0xffff)
    } else {
        asn.to_string()
    }
}

/// serde `with` module for `Option<u32>` AS number fields.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u32(*n),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> de::Visitor<'de> for OptionVisitor {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an AS number (integer, or string in plain or asdot notation)")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(AsnVisitor).map(Some)
        }
    }
}

struct AsnVisitor;

impl de::Visitor<'_> for AsnVisitor {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AS number (integer 0–4294967295, or string in plain or asdot notation)")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| {
            E::custom(AsnParseError {
                input: v.to_string(),
            })
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| {
            E::custom(AsnParseError {
                input: v.to_string(),
            })
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        parse(v).map_err(E::custom)
    }
}

/// Schema for AS number fields: the integer form, which is what the
/// Kubernetes API stores.
pub(crate) fn schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int64",
        "minimum": 0,
        "maximum": 4294967295u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_asdot_parse() {
        assert_eq!(parse("64512"), Ok(64512));
        assert_eq!(parse("1.10"), Ok(65546));
        assert_eq!(parse("4294967295"), Ok(u32::MAX));
        assert!(parse("4294967296").is_err());
        assert!(parse("1.65536").is_err());
        assert!(parse("").is_err());
        assert!(parse("a.b").is_err());
    }

    #[test]
    fn asdot_round_trips() {
        assert_eq!(to_asdot(65546), "1.10");
        assert_eq!(parse(&to_asdot(4_000_000_000)), Ok(4_000_000_000));
        assert_eq!(to_asdot(64512), "64512");
    }
}
