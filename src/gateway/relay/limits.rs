//! An organisation's AI limits (`spec.ai`), counted in this gateway replica's memory: requests
//! per minute as a token bucket, tokens per UTC day as a running sum. Nothing is written
//! anywhere; with several replicas behind a balancer each admits up to the limit, so the
//! cluster-wide ceiling is the limit times the replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::crd::OrganisationAi;

const SECONDS_PER_DAY: u64 = 86_400;

/// Why a request was refused, and when to come back.
#[derive(Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub message: String,
    pub retry_after: Duration,
}

#[derive(Default)]
pub struct Limits {
    by_organisation: Mutex<HashMap<String, Counters>>,
}

struct Counters {
    /// Requests that may start now (fractional: the bucket refills continuously).
    bucket: f64,
    refilled_at: f64,
    /// The UTC day `tokens` counts, as days since the epoch.
    day: u64,
    tokens: u64,
}

impl Limits {
    /// Admits one request of `org` at `now` (seconds since the epoch), or says why not.
    pub fn admit(&self, org: &str, limits: Option<&OrganisationAi>, now: f64) -> Result<(), Exceeded> {
        let Some(limits) = limits else { return Ok(()) };
        let mut all = self.by_organisation.lock().expect("AI limits lock");
        let counters = all.entry(org.to_owned()).or_insert_with(|| Counters::new(limits, now));
        if let Some(per_day) = limits.tokens_per_day {
            counters.roll_day(now);
            if counters.tokens >= per_day.max(0) as u64 {
                let midnight = (counters.day + 1) * SECONDS_PER_DAY;
                return Err(Exceeded {
                    message: format!("organisation {org:?} has used its {per_day} AI tokens for today (UTC)"),
                    retry_after: Duration::from_secs_f64((midnight as f64 - now).max(1.0)),
                });
            }
        }
        if let Some(per_minute) = limits.requests_per_minute {
            let capacity = f64::from(per_minute);
            let rate = capacity / 60.0;
            counters.bucket = (counters.bucket + (now - counters.refilled_at).max(0.0) * rate).min(capacity);
            counters.refilled_at = now;
            if counters.bucket < 1.0 {
                return Err(Exceeded {
                    message: format!("organisation {org:?} may make {per_minute} AI requests per minute"),
                    retry_after: Duration::from_secs_f64(((1.0 - counters.bucket) / rate).ceil().max(1.0)),
                });
            }
            counters.bucket -= 1.0;
        }
        Ok(())
    }

    /// Adds tokens an answer used to `org`'s day.
    pub fn used(&self, org: &str, tokens: u64, now: f64) {
        if tokens == 0 {
            return;
        }
        let mut all = self.by_organisation.lock().expect("AI limits lock");
        if let Some(counters) = all.get_mut(org) {
            counters.roll_day(now);
            counters.tokens = counters.tokens.saturating_add(tokens);
        }
    }
}

impl Counters {
    fn new(limits: &OrganisationAi, now: f64) -> Self {
        let bucket = limits.requests_per_minute.map_or(0.0, f64::from);
        Self { bucket, refilled_at: now, day: day_of(now), tokens: 0 }
    }

    fn roll_day(&mut self, now: f64) {
        let today = day_of(now);
        if today != self.day {
            self.day = today;
            self.tokens = 0;
        }
    }
}

fn day_of(now: f64) -> u64 {
    now.max(0.0) as u64 / SECONDS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: f64 = 20_000.0 * 86_400.0 + 43_200.0;

    fn limits(per_minute: Option<u32>, per_day: Option<i64>) -> OrganisationAi {
        OrganisationAi { requests_per_minute: per_minute, tokens_per_day: per_day }
    }

    #[test]
    fn requests_per_minute_allow_a_burst_then_one_per_interval() {
        let counted = Limits::default();
        let per_minute = limits(Some(3), None);
        for _ in 0..3 {
            assert_eq!(counted.admit("acme", Some(&per_minute), NOON), Ok(()));
        }
        let refused = counted.admit("acme", Some(&per_minute), NOON).expect_err("the fourth in the same second");
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert!(refused.message.contains("3 AI requests per minute"), "{}", refused.message);
        assert!(counted.admit("globex", Some(&per_minute), NOON).is_ok(), "each organisation has its own");
        assert!(counted.admit("acme", Some(&per_minute), NOON + 19.0).is_err());
        assert!(counted.admit("acme", Some(&per_minute), NOON + 20.0).is_ok());
        assert!(counted.admit("acme", None, NOON + 20.0).is_ok(), "no limits: nothing counted");
    }

    #[test]
    fn tokens_per_day_refuse_until_midnight_utc() {
        let counted = Limits::default();
        let per_day = limits(None, Some(100));
        assert!(counted.admit("acme", Some(&per_day), NOON).is_ok());
        counted.used("acme", 60, NOON);
        assert!(counted.admit("acme", Some(&per_day), NOON + 1.0).is_ok(), "60 of 100");
        counted.used("acme", 60, NOON + 2.0);
        let refused = counted.admit("acme", Some(&per_day), NOON + 3.0).expect_err("120 of 100");
        assert_eq!(refused.retry_after, Duration::from_secs(43_197));
        assert!(refused.message.contains("100 AI tokens"), "{}", refused.message);
        assert!(counted.admit("acme", Some(&per_day), NOON + 43_200.0).is_ok(), "a new day");
    }
}
