//! Whole numbers as JSON sends them.
//!
//! JSON has a single number type, and many clients cannot tell `8` from `8.0`
//! (Python's `20 * 0.4` is `8.0`; JavaScript prints `1e21` for a large
//! integer). The integer fields of the contract therefore accept any JSON
//! number with no fractional part (`4`, `4.0`, `1e2`) within the field's range,
//! as JSON Schema's `integer` type does, and refuse `4.5`, a negative number or
//! one beyond the range with an "invalid value" error that the worker reports
//! as `422 invalid_value` naming the field. `null` reads as absent.
//!
//! Used with `#[serde(default, deserialize_with = "…")]` on `Option` fields, so
//! the schema (OpenAPI, TypeScript) still says integer.

use serde::de::{self, Deserializer, Unexpected, Visitor};
use std::fmt;

/// An optional `u32`: a whole JSON number from 0 to `u32::MAX`, or `null`.
///
/// # Errors
/// A fractional, negative or larger number, or a value of another JSON type.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let n = d.deserialize_option(Optional(Whole {
        max: u64::from(u32::MAX),
        negative_is_none: false,
    }))?;
    n.map(|n| {
        u32::try_from(n).map_err(|_| de::Error::invalid_value(Unexpected::Unsigned(n), &"a u32"))
    })
    .transpose()
}

/// An optional seed: a whole JSON number from 0 to `u64::MAX`, or `null`; any
/// negative whole number (AUTOMATIC1111's `-1`) means "random" and reads as
/// `None`, like an absent seed.
///
/// # Errors
/// A fractional number, a number of 2^64 or more, or a value of another JSON type.
pub fn opt_seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Optional(Whole {
        max: u64::MAX,
        negative_is_none: true,
    }))
}

/// Reads a whole number in `0..=max`; with `negative_is_none`, a negative
/// whole number reads as `None`.
#[derive(Clone, Copy)]
struct Whole {
    max: u64,
    negative_is_none: bool,
}

impl Whole {
    fn negative<E: de::Error>(self, unexpected: Unexpected) -> Result<Option<u64>, E> {
        if self.negative_is_none {
            Ok(None)
        } else {
            Err(E::invalid_value(unexpected, &self))
        }
    }
}

impl<'de> Visitor<'de> for Whole {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.max)?;
        if self.negative_is_none {
            f.write_str(" (or a negative one for a random value)")?;
        }
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if v > self.max {
            return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
        }
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => self.negative(Unexpected::Signed(v)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(
                Unexpected::Other("a 128-bit number"),
                &self,
            )),
        }
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) if v < 0 => self.negative(Unexpected::Other("a negative 128-bit number")),
            Err(_) => Err(E::invalid_value(
                Unexpected::Other("a 128-bit number"),
                &self,
            )),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if !v.is_finite() || v.fract() != 0.0 {
            return Err(E::invalid_value(Unexpected::Float(v), &self));
        }
        if v < 0.0 {
            return self.negative(Unexpected::Float(v));
        }
        // Integral and finite: the conversion to u128 is exact below 2^128 and
        // saturates above it, both beyond any `max`.
        match u64::try_from(v as u128) {
            Ok(n) if n <= self.max => Ok(Some(n)),
            _ => Err(E::invalid_value(Unexpected::Float(v), &self)),
        }
    }
}

/// `null` (or an absent value) as `None`, anything else through the inner visitor.
struct Optional(Whole);

impl<'de> Visitor<'de> for Optional {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Fields {
        #[serde(default, deserialize_with = "opt_u32")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "opt_seed")]
        seed: Option<u64>,
    }

    fn read(json: &str) -> Result<Fields, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_read_as_whole_numbers() {
        for (json, n) in [
            (r#"{"n": 4}"#, 4),
            (r#"{"n": 4.0}"#, 4),
            (r#"{"n": 1e2}"#, 100),
            (r#"{"n": 1E3}"#, 1000),
            (r#"{"n": -0.0}"#, 0),
            (r#"{"n": 4294967295}"#, u32::MAX),
            (r#"{"n": 4294967295.0}"#, u32::MAX),
        ] {
            assert_eq!(read(json).unwrap().n, Some(n), "{json}");
        }
        // Through a `Value` too, as the worker reads bodies.
        let v = serde_json::json!({"n": 8.0, "seed": 1e3});
        let f = Fields::deserialize(v).unwrap();
        assert_eq!((f.n, f.seed), (Some(8), Some(1000)));
    }

    #[test]
    fn fractions_negatives_overflow_and_other_types_are_invalid_values() {
        for json in [
            r#"{"n": 4.5}"#,
            r#"{"n": 0.1}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 4294967296.0}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": "4"}"#,
            r#"{"n": true}"#,
            r#"{"n": [4]}"#,
            r#"{"seed": 1.5}"#,
            r#"{"seed": -1.5}"#,
            r#"{"seed": 18446744073709551616}"#,
            r#"{"seed": "42"}"#,
        ] {
            let e = read(json).unwrap_err();
            assert!(e.starts_with("invalid "), "{json}: {e}");
            assert!(e.contains("whole number"), "{json}: {e}");
        }
    }

    #[test]
    fn null_and_absent_are_none_and_negative_seeds_are_random() {
        let f = read(r#"{"n": null, "seed": null}"#).unwrap();
        assert_eq!((f.n, f.seed), (None, None));
        let f = read("{}").unwrap();
        assert_eq!((f.n, f.seed), (None, None));
        for json in [
            r#"{"seed": -1}"#,
            r#"{"seed": -1.0}"#,
            r#"{"seed": -9223372036854775808}"#,
            r#"{"seed": -1e300}"#,
        ] {
            assert_eq!(read(json).unwrap().seed, None, "{json}");
        }
        assert_eq!(read(r#"{"seed": 0}"#).unwrap().seed, Some(0));
        assert_eq!(
            read(r#"{"seed": 18446744073709551615}"#).unwrap().seed,
            Some(u64::MAX)
        );
    }
}
