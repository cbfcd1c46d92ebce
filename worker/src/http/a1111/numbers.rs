//! A1111's numeric fields as its pydantic models read them (lax mode): a
//! JSON number, a whole number sent as a float (`20.0`) for an integer field,
//! or a numeric string, trimmed (`"20"`, `" 7.5 "`: what
//! `/sdapi/v1/png-info` hands a client that resubmits its values). Booleans,
//! fractions for integer fields, non-finite and non-numeric strings are
//! refused. The whole-number rules are the contract's
//! ([`sd_worker_sdk::numbers`]), applied after a string is read as a number.
//!
//! Errors are plain sentences starting with [`MUST`] ("must be a whole number
//! ..., not `20.5`"); [`super::request::SdRequest::parse`] puts the field's
//! name in front of them.

use serde::de::{Deserialize, Deserializer, Error};
use serde_json::{Number, Value};

/// How every refusal of this module begins.
pub const MUST: &str = "must be ";

/// An optional whole number from 0 to `u32::MAX` (`steps`, `width`, ...).
///
/// # Errors
/// A fraction, a negative or larger number, a boolean, or a string that is
/// not such a number once trimmed.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let expected = || format!("{MUST}a whole number from 0 to {}", u32::MAX);
    let Some(v) = lax_number(d, &expected)? else {
        return Ok(None);
    };
    sd_worker_sdk::numbers::opt_u32(&v).map_err(|_| refused(&expected(), &v))
}

/// An optional seed: a whole number from 0 to `u64::MAX`; a negative one
/// (A1111's `-1`) means random and reads as `None`, like an absent seed.
///
/// # Errors
/// As [`opt_u32`], with `u64`'s range and negatives allowed.
pub fn opt_seed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let expected = || format!("{MUST}a whole number (-1 for a random seed)");
    let Some(v) = lax_number(d, &expected)? else {
        return Ok(None);
    };
    sd_worker_sdk::numbers::opt_seed(&v).map_err(|_| refused(&expected(), &v))
}

/// An optional finite number (`cfg_scale`, `denoising_strength`).
///
/// # Errors
/// A boolean, or a string that is not a finite number once trimmed.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let expected = || format!("{MUST}a number");
    let Some(v) = lax_number(d, &expected)? else {
        return Ok(None);
    };
    v.as_f64()
        .filter(|x| x.is_finite())
        .map(Some)
        .ok_or_else(|| refused(&expected(), &v))
}

/// The value as a JSON number: a number as sent, a string read as one after
/// trimming; `None` for `null`. Anything else is refused with `expected()`.
fn lax_number<'de, D: Deserializer<'de>>(
    d: D,
    expected: &dyn Fn() -> String,
) -> Result<Option<Value>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v)),
        Some(Value::String(s)) => parse_number(s.trim())
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| refused(&expected(), &Value::String(s))),
        Some(other) => Err(refused(&expected(), &other)),
    }
}

/// A decimal string as a JSON number: whole numbers exactly (as Python's
/// `int()` reads them, a leading `+` included), others as `f64`; `None` when
/// it is not a finite number.
fn parse_number(s: &str) -> Option<Number> {
    if let Ok(n) = s.parse::<i128>() {
        if let Ok(n) = u64::try_from(n) {
            return Some(n.into());
        }
        if let Ok(n) = i64::try_from(n) {
            return Some(n.into());
        }
    }
    // Rust also reads "inf" and "NaN", which `from_f64` refuses.
    s.parse::<f64>().ok().and_then(Number::from_f64)
}

/// "must be ..., not `value`".
fn refused<E: Error>(expected: &str, value: &Value) -> E {
    E::custom(format!("{expected}, not `{value}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    struct F {
        #[serde(default, deserialize_with = "opt_u32")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "opt_seed")]
        seed: Option<u64>,
        #[serde(default, deserialize_with = "opt_f64")]
        x: Option<f64>,
    }

    fn read(v: Value) -> Result<F, String> {
        F::deserialize(&v).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_integral_floats_and_numeric_strings_are_read_as_pydantic_does() {
        for n in [
            json!(20),
            json!(20.0),
            json!("20"),
            json!(" 20 "),
            json!("+20"),
            json!("20.0"),
            json!("2e1"),
        ] {
            assert_eq!(read(json!({ "n": n })).unwrap().n, Some(20), "{n}");
        }
        for s in [json!(-1), json!(-1.0), json!("-1"), json!(" -1 ")] {
            assert_eq!(read(json!({ "seed": s })).unwrap().seed, None, "{s}");
        }
        assert_eq!(read(json!({"seed": "42"})).unwrap().seed, Some(42));
        for (x, want) in [(json!(7), 7.0), (json!("7"), 7.0), (json!(" 6.5"), 6.5)] {
            assert_eq!(read(json!({ "x": x })).unwrap().x, Some(want), "{x}");
        }
        let f = read(json!({"n": null, "seed": null, "x": null})).unwrap();
        assert_eq!((f.n, f.seed, f.x), (None, None, None));
    }

    #[test]
    fn fractions_booleans_and_words_are_refused_in_plain_words() {
        for bad in [
            json!({"n": 20.5}),
            json!({"n": "twenty"}),
            json!({"n": "20.5"}),
            json!({"n": true}),
            json!({"n": -3}),
            json!({"n": ""}),
            json!({"n": [20]}),
            json!({"seed": 1.5}),
            json!({"seed": false}),
            json!({"x": "NaN"}),
            json!({"x": "inf"}),
            json!({"x": true}),
            json!({"x": "seven"}),
        ] {
            let e = read(bad.clone()).unwrap_err();
            assert!(e.starts_with(MUST), "{bad}: {e}");
            for rust in ["u32", "u64", "f64", "line ", "invalid type"] {
                assert!(!e.contains(rust), "{bad}: {e}");
            }
        }
    }
}
