//! Go duration strings (`metav1.Duration`): `120s`, `2m`, `1h30m`, `1.5s`,
//! `500ms`. Calico stores BGP timers this way.

use std::time::Duration;

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason}; write a number with a unit, e.g. 120s, 2m, 1h30m \
     (units: ns, us, ms, s, m, h)"
)]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses a non-negative Go duration. `"0"` alone is allowed, as in Go.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.strip_prefix('+').unwrap_or(input);
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (int_part, frac_part) = match rest[..num_len].split_once('.') {
            Some((i, f)) => (i, f),
            None => (&rest[..num_len], ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        if frac_part.contains('.') {
            return Err(err("bad number"));
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ns: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        let too_big = || err("out of range");
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_big())?
        };
        // Fraction digits beyond nanosecond precision cannot matter.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        let frac: u128 = if frac_digits.is_empty() {
            0
        } else {
            frac_digits.parse().map_err(|_| err("bad number"))?
        };
        let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(0));
        let ns = int
            .checked_mul(unit_ns)
            .and_then(|v| v.checked_add(frac * unit_ns / scale))
            .ok_or_else(too_big)?;
        total_ns = total_ns.checked_add(ns).ok_or_else(too_big)?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err("out of range"))?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in [
            "",
            "10",
            "s",
            "-5s",
            "5x",
            "1..2s",
            "ms5",
            ".s",
            "99999999999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
