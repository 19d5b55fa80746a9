//! Durations in the form the CRDs accept (`90s`, `15m`, `2h`, `1h30m`): what the API server's CEL
//! `duration()` parses, restricted to whole hours, minutes and seconds.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a duration such as 90s, 15m or 2h")]
pub struct DurationError {
    input: String,
}

/// Parses `<number><h|m|s>` repeated, e.g. `1h30m`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let error = || DurationError { input: input.to_owned() };
    if input.is_empty() {
        return Err(error());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in input.chars() {
        match c {
            '0'..='9' => digits.push(c),
            'h' | 'm' | 's' if !digits.is_empty() => {
                let value: u64 = digits.parse().map_err(|_| error())?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = value.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(error)?;
                digits.clear();
            }
            _ => return Err(error()),
        }
    }
    if !digits.is_empty() {
        return Err(error());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_crd_accepts() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1h30m10s"), Ok(Duration::from_secs(5410)));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", "15", "m", "1.5h", "1d", "-5m", "5 m", "5ms", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
