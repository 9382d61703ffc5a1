//! Small serde adapters for the places where Calico's Go JSON is looser
//! than a derived Rust type would be.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serializer};

/// `Option<Enum>` where an empty string means unset: Go's string-typed enums
/// treat `""` as "not specified" (the CRD rules test `size(self.x) == 0`).
pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::deserialize(s.into_deserializer()).map(Some),
    }
}

/// A collection where JSON `null` means empty: a nil Go slice or map
/// without `omitempty` is written as `null`.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// BlockAffinity's `deleted`: a bool carried as the string `"true"`/`"false"`
/// (Calico kept the string type for compatibility with releases that wrote
/// it that way). Reads anything Go's `strconv.ParseBool` reads, a real
/// bool, or `""` (false); writes `"true"`/`"false"`.
pub(crate) mod bool_string {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "true" } else { "false" })
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(BoolStringVisitor)
    }

    struct BoolStringVisitor;

    impl de::Visitor<'_> for BoolStringVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"a boolean or one of the strings "true" / "false""#)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v {
                "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                other => Err(E::custom(format!(
                    r#"invalid boolean string {other:?}: expected "true" or "false""#
                ))),
            }
        }
    }
}
