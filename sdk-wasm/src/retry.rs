//! When to retry a request and how long to wait first: jittered exponential
//! backoff, overridden by the server's `Retry-After`.
//!
//! Pure Rust and deterministic (the caller passes the random draw), so the
//! browser client and the native tests share it.

/// First delay, before jitter.
pub const BASE_DELAY_MS: u64 = 500;
/// Longest backoff delay, before jitter.
pub const MAX_DELAY_MS: u64 = 15_000;
/// Longest wait a `Retry-After` may impose (a larger value is capped).
pub const MAX_RETRY_AFTER_MS: u64 = 120_000;
/// Retries a client makes by default before giving up.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// Statuses worth retrying: the worker's queue is full (429), the model is
/// loading or the worker is stopping (503), or a proxy in front of it failed
/// (502, 504). Every other 4xx and 5xx is final.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Parses a `Retry-After` header given in seconds (`"5"`, `" 2 "`, `"1.5"`)
/// into milliseconds. HTTP dates and anything else give `None` (the caller
/// then falls back to backoff). Huge values are capped to
/// [`MAX_RETRY_AFTER_MS`].
pub fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut ms = whole.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    ms = ms.saturating_mul(1000);
    // Milliseconds from the first three decimals; anything finer rounds up.
    let mut scale = 100;
    for (i, b) in fraction.bytes().enumerate() {
        let digit = u64::from(b - b'0');
        if i < 3 {
            ms += digit * scale;
            scale /= 10;
        } else if digit > 0 {
            ms += 1;
            break;
        }
    }
    Some(ms.min(MAX_RETRY_AFTER_MS))
}

/// The wait before retry number `attempt` (0 for the first retry).
///
/// Without `retry_after_ms`: exponential backoff `BASE * 2^attempt` capped at
/// [`MAX_DELAY_MS`], with "equal jitter" (a uniform draw in the upper half),
/// so clients that failed together do not come back together. With it: the
/// server's wait plus up to 10% (at most 1 s) of jitter, never less than asked.
///
/// `random` is a uniform draw in `[0, 1)` (`Math.random()`); values outside
/// are clamped.
pub fn delay_ms(attempt: u32, retry_after_ms: Option<u64>, random: f64) -> u64 {
    let random = if random.is_nan() {
        0.0
    } else {
        random.clamp(0.0, 1.0)
    };
    match retry_after_ms {
        Some(wait) => {
            let wait = wait.min(MAX_RETRY_AFTER_MS);
            let spread = (wait / 10).min(1_000);
            wait + (spread as f64 * random) as u64
        }
        None => {
            let ceiling = BASE_DELAY_MS
                .saturating_mul(1u64 << attempt.min(20))
                .min(MAX_DELAY_MS);
            let half = ceiling / 2;
            half + ((ceiling - half) as f64 * random) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for s in [429, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [
            200, 202, 400, 401, 403, 404, 409, 410, 413, 415, 422, 500, 501,
        ] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("5"), Some(5_000));
        assert_eq!(parse_retry_after(" 2 "), Some(2_000));
        assert_eq!(parse_retry_after("0"), Some(0));
        assert_eq!(parse_retry_after("1.5"), Some(1_500));
        assert_eq!(parse_retry_after("0.0001"), Some(1), "rounded up");
        assert_eq!(parse_retry_after("0.25"), Some(250));
        assert_eq!(parse_retry_after("3."), Some(3_000));
        assert_eq!(parse_retry_after(".5"), Some(500));
        assert_eq!(parse_retry_after("1.2345"), Some(1_235));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(
            parse_retry_after("99999999999999999999999999"),
            Some(MAX_RETRY_AFTER_MS)
        );
    }

    #[test]
    fn retry_after_rejects_what_is_not_seconds() {
        for v in [
            "",
            "  ",
            "-1",
            "+3",
            "abc",
            "1e3",
            "1..2",
            ".",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "5 s",
        ] {
            assert_eq!(parse_retry_after(v), None, "{v:?}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut previous_max = 0;
        for attempt in 0..40 {
            let ceiling = (BASE_DELAY_MS << attempt.min(20)).min(MAX_DELAY_MS);
            let lo = delay_ms(attempt, None, 0.0);
            let hi = delay_ms(attempt, None, 0.999_999);
            assert_eq!(lo, ceiling / 2, "attempt {attempt}");
            assert!(hi <= ceiling && hi >= lo, "attempt {attempt}: {hi}");
            assert!(hi >= previous_max.min(MAX_DELAY_MS) / 2);
            assert!(hi <= MAX_DELAY_MS);
            previous_max = hi;
        }
        assert_eq!(delay_ms(0, None, 0.0), 250);
        assert_eq!(delay_ms(1, None, 0.0), 500);
        assert_eq!(delay_ms(2, None, 0.5), 1_500);
        assert_eq!(delay_ms(u32::MAX, None, 1.0), MAX_DELAY_MS);
    }

    #[test]
    fn backoff_jitter_spreads_over_the_upper_half() {
        let draws: Vec<u64> = (0..100)
            .map(|i| delay_ms(3, None, f64::from(i) / 100.0))
            .collect();
        assert!(draws.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(draws[0], 2_000);
        assert!(draws[99] > 3_900 && draws[99] <= 4_000);
    }

    #[test]
    fn retry_after_wins_with_bounded_jitter() {
        assert_eq!(delay_ms(0, Some(5_000), 0.0), 5_000);
        assert_eq!(delay_ms(7, Some(5_000), 0.999), 5_499);
        assert_eq!(delay_ms(0, Some(0), 0.7), 0);
        // Jitter at most 1 s, however long the wait.
        assert_eq!(delay_ms(0, Some(60_000), 1.0), 61_000);
        // Never beyond the cap plus its jitter.
        assert_eq!(delay_ms(0, Some(u64::MAX), 1.0), MAX_RETRY_AFTER_MS + 1_000);
    }

    #[test]
    fn bad_random_draws_are_clamped() {
        assert_eq!(delay_ms(0, None, f64::NAN), 250);
        assert_eq!(delay_ms(0, None, -3.0), 250);
        assert_eq!(delay_ms(0, None, 7.0), 500);
    }
}
