//! Parameter types shared by several stages.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number, or `auto` to let the stage choose it from the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoOr<T> {
    Auto,
    Value(T),
}

impl<T: Serialize> Serialize for AutoOr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoOr::Auto => s.serialize_str("auto"),
            AutoOr::Value(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AutoOr<f64> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AutoOr<f64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or `auto`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "auto" {
                    Ok(AutoOr::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(AutoOr::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(AutoOr::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AutoOr::Value(v as f64))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for AutoOr<f64> {
    fn schema_name() -> Cow<'static, str> {
        "NumberOrAuto".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "anyOf": [ { "type": "number" }, { "const": "auto" } ] })
    }
}

impl<'de> Deserialize<'de> for AutoOr<usize> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AutoOr<usize>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number or `auto`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v == "auto" {
                    Ok(AutoOr::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(AutoOr::Value)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(AutoOr::Value(v as usize))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for AutoOr<usize> {
    fn schema_name() -> Cow<'static, str> {
        "CountOrAuto".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "anyOf": [ { "type": "integer", "minimum": 0 }, { "const": "auto" } ] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_or_number_parses_both_and_rejects_other_strings() {
        let a: AutoOr<f64> = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(a, AutoOr::Auto);
        let b: AutoOr<f64> = serde_json::from_str("0.25").unwrap();
        assert_eq!(b, AutoOr::Value(0.25));
        let c: AutoOr<f64> = serde_json::from_str("3").unwrap();
        assert_eq!(c, AutoOr::Value(3.0));
        let err = serde_json::from_str::<AutoOr<f64>>("\"automatic\"").unwrap_err();
        assert!(err.to_string().contains("a number or `auto`"), "{err}");
        assert_eq!(
            serde_json::to_string(&AutoOr::<f64>::Auto).unwrap(),
            "\"auto\""
        );
    }

    #[test]
    fn auto_or_count_parses_both_and_rejects_fractions_and_negatives() {
        let a: AutoOr<usize> = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(a, AutoOr::Auto);
        let b: AutoOr<usize> = serde_json::from_str("4").unwrap();
        assert_eq!(b, AutoOr::Value(4));
        for bad in ["-1", "2.5", "\"four\""] {
            let err = serde_json::from_str::<AutoOr<usize>>(bad).unwrap_err();
            assert!(
                err.to_string().contains("whole number or `auto`"),
                "{bad}: {err}"
            );
        }
    }
}
