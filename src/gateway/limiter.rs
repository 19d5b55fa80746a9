//! Brute-force protection for sign-in: failures are counted per account (the email as typed, so
//! unknown emails are limited exactly like real ones) and per client address; past a free
//! allowance each further failure doubles the wait before the next attempt, up to a ceiling.
//! State is in memory and per replica, bounded in size.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The first wait; doubled for each failure after it.
    pub base: Duration,
    pub max: Duration,
    /// A record with no failure for this long is forgotten.
    pub forget_after: Duration,
}

pub const ACCOUNT_POLICY: Policy = Policy {
    free_failures: 5,
    base: Duration::from_secs(1),
    max: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(60 * 60),
};

pub const ADDRESS_POLICY: Policy = Policy {
    free_failures: 20,
    base: Duration::from_secs(1),
    max: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(60 * 60),
};

/// Records kept per table; past it, the stalest are dropped first.
const MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

#[derive(Debug)]
struct Table<K> {
    policy: Policy,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: Policy) -> Self {
        Self { policy, records: HashMap::new() }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let record = self.records.get(key)?;
        (record.blocked_until > now).then(|| record.blocked_until - now)
    }

    fn fail(&mut self, key: &K, now: Instant) {
        if self.records.len() >= MAX_RECORDS && !self.records.contains_key(key) {
            self.evict(now);
        }
        let policy = self.policy;
        let record =
            self.records.entry(key.clone()).or_insert(Record { failures: 0, last_failure: now, blocked_until: now });
        if now.duration_since(record.last_failure) > policy.forget_after {
            record.failures = 0;
        }
        record.failures += 1;
        record.last_failure = now;
        if let Some(excess) = record.failures.checked_sub(policy.free_failures + 1) {
            let wait = policy.base.saturating_mul(2u32.saturating_pow(excess.min(30))).min(policy.max);
            record.blocked_until = now + wait;
        }
    }

    fn succeed(&mut self, key: &K) {
        self.records.remove(key);
    }

    /// Forgets expired records, and if that is not enough, the least recently failed half.
    fn evict(&mut self, now: Instant) {
        let forget_after = self.policy.forget_after;
        self.records.retain(|_, r| now.duration_since(r.last_failure) <= forget_after);
        if self.records.len() >= MAX_RECORDS {
            let mut times: Vec<Instant> = self.records.values().map(|r| r.last_failure).collect();
            times.sort_unstable();
            let cutoff = times[times.len() / 2];
            self.records.retain(|_, r| r.last_failure > cutoff);
        }
    }
}

#[derive(Debug)]
pub struct LoginLimiter {
    accounts: Table<String>,
    addresses: Table<IpAddr>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(ACCOUNT_POLICY, ADDRESS_POLICY)
    }
}

impl LoginLimiter {
    pub fn new(account: Policy, address: Policy) -> Self {
        Self { accounts: Table::new(account), addresses: Table::new(address) }
    }

    /// How long this attempt must wait, if it may not be tried now.
    pub fn wait(&self, email: &str, address: IpAddr, now: Instant) -> Option<Duration> {
        match (self.accounts.wait(&email.to_owned(), now), self.addresses.wait(&address, now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn failed(&mut self, email: &str, address: IpAddr, now: Instant) {
        self.accounts.fail(&email.to_owned(), now);
        self.addresses.fail(&address, now);
    }

    /// A correct password clears the account's record; the address keeps its count, so one
    /// valid account cannot be used to reset an address that is guessing others.
    pub fn succeeded(&mut self, email: &str) {
        self.accounts.succeed(&email.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_account_waits_after_its_free_failures_and_the_wait_doubles() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..ACCOUNT_POLICY.free_failures {
            assert_eq!(limiter.wait("a@x.example", addr(i as u8), now), None);
            limiter.failed("a@x.example", addr(i as u8), now);
        }
        assert_eq!(limiter.wait("a@x.example", addr(99), now), None, "the free allowance is not yet used up");
        limiter.failed("a@x.example", addr(99), now);
        assert_eq!(limiter.wait("a@x.example", addr(100), now), Some(Duration::from_secs(1)));
        limiter.failed("a@x.example", addr(100), now);
        assert_eq!(limiter.wait("a@x.example", addr(101), now), Some(Duration::from_secs(2)));
        assert_eq!(limiter.wait("b@x.example", addr(101), now), None, "other accounts are not affected");
        let later = now + Duration::from_secs(2);
        assert_eq!(limiter.wait("a@x.example", addr(101), later), None);
    }

    #[test]
    fn the_wait_has_a_ceiling() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..200 {
            limiter.failed("a@x.example", addr(1), now);
        }
        assert_eq!(limiter.wait("a@x.example", addr(2), now), Some(ACCOUNT_POLICY.max));
    }

    #[test]
    fn an_address_guessing_many_accounts_is_limited() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..=ADDRESS_POLICY.free_failures {
            limiter.failed(&format!("user{i}@x.example"), addr(7), now);
        }
        assert_eq!(limiter.wait("new@x.example", addr(7), now), Some(Duration::from_secs(1)));
        assert_eq!(limiter.wait("new@x.example", addr(8), now), None);
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..=ADDRESS_POLICY.free_failures {
            limiter.failed("a@x.example", addr(1), now);
        }
        limiter.succeeded("a@x.example");
        assert_eq!(limiter.wait("a@x.example", addr(2), now), None);
        assert!(limiter.wait("a@x.example", addr(1), now).is_some());
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..ACCOUNT_POLICY.free_failures {
            limiter.failed("a@x.example", addr(1), now);
        }
        let much_later = now + ACCOUNT_POLICY.forget_after + Duration::from_secs(1);
        limiter.failed("a@x.example", addr(2), much_later);
        assert_eq!(limiter.wait("a@x.example", addr(3), much_later), None);
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut table = Table::new(ACCOUNT_POLICY);
        let now = Instant::now();
        for i in 0..MAX_RECORDS + 10 {
            table.fail(&i, now + Duration::from_millis(i as u64));
        }
        assert!(table.records.len() <= MAX_RECORDS);
        assert!(table.records.contains_key(&(MAX_RECORDS + 9)), "the newest record is kept");
    }
}
