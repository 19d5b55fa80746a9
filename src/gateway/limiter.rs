//! Brute-force protection for sign-in: failures are counted per account (the email as typed, so
//! unknown emails are limited exactly like real ones) and per client network (the IPv4 address,
//! or the IPv6 /64 that one subscriber typically holds whole); past a free
//! allowance each further failure doubles the wait before the next attempt, up to a ceiling.
//! State is in memory and per replica, bounded in size.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

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

    /// Takes back one failure counted in advance for an attempt that succeeded.
    fn refund(&mut self, key: &K) {
        let free = self.policy.free_failures;
        if let Some(record) = self.records.get_mut(key) {
            record.failures = record.failures.saturating_sub(1);
            // The wait this attempt started is lifted with it.
            if record.failures <= free {
                record.blocked_until = record.last_failure;
            }
        }
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

    /// Admits an attempt, or says how long it must wait. An admitted attempt counts as a failure
    /// at once, before its password is checked: concurrent guesses cannot all slip in under the
    /// limit while the first ones are still hashing.
    pub fn begin(&mut self, email: &str, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let email = email.to_owned();
        let address = network_of(address);
        let wait = match (self.accounts.wait(&email, now), self.addresses.wait(&address, now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(wait) = wait {
            return Err(wait);
        }
        self.accounts.fail(&email, now);
        self.addresses.fail(&address, now);
        Ok(())
    }

    /// An attempt whose client went away before its answer: it told them nothing, so it counts
    /// as no guess at all (otherwise abandoned sign-ins behind one NAT could lock everyone out).
    pub fn abandoned(&mut self, email: &str, address: IpAddr) {
        self.accounts.refund(&email.to_owned());
        self.addresses.refund(&network_of(address));
    }

    /// A correct password clears the account's record and refunds the address the attempt; the
    /// address keeps its other failures, so one valid account cannot be used to reset an address
    /// that is guessing others.
    pub fn succeeded(&mut self, email: &str, address: IpAddr) {
        self.accounts.succeed(&email.to_owned());
        self.addresses.refund(&network_of(address));
    }
}

/// What the address limit counts: an IPv4 address, or an IPv6 address's /64 (a subscriber gets
/// a whole /64, so counting single IPv6 addresses would give an attacker 2^64 fresh starts).
fn network_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// One sign-in attempt at a time per account: the next is admitted only once the previous one's
/// outcome is on record, so a burst of guesses cannot outrun the limiter while it hashes, and a
/// queue of right passwords is served in turn rather than counted against the account.
#[derive(Default)]
pub struct Turns {
    queues: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds an account's turn; the next attempt goes when it is dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    queue: Arc<tokio::sync::Mutex<()>>,
    held: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    pub async fn take(&self, key: &str) -> Turn<'_> {
        let queue = self.queues.lock().expect("turns lock").entry(key.to_owned()).or_default().clone();
        let held = Some(queue.clone().lock_owned().await);
        Turn { turns: self, key: key.to_owned(), queue, held }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held.take();
        let mut queues = self.turns.queues.lock().expect("turns lock");
        // Only the map and this turn hold the queue: nobody waits, so it can go (bounded map).
        if Arc::strong_count(&self.queue) == 2 {
            queues.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// Attempts until one is refused; returns how many were admitted and the refusal's wait.
    fn admit_until_refused(limiter: &mut LoginLimiter, email: &str, address: IpAddr, now: Instant) -> (u32, Duration) {
        let mut admitted = 0;
        loop {
            match limiter.begin(email, address, now) {
                Ok(()) => admitted += 1,
                Err(wait) => return (admitted, wait),
            }
        }
    }

    #[test]
    fn an_account_waits_after_its_free_failures_and_the_wait_doubles() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..=ACCOUNT_POLICY.free_failures {
            assert_eq!(limiter.begin("a@x.example", addr(i as u8), now), Ok(()), "attempt {i} is free");
        }
        assert_eq!(limiter.begin("a@x.example", addr(100), now), Err(Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert_eq!(limiter.begin("a@x.example", addr(101), later), Ok(()));
        assert_eq!(limiter.begin("a@x.example", addr(102), later), Err(Duration::from_secs(2)), "the wait doubles");
        assert_eq!(limiter.begin("b@x.example", addr(102), later), Ok(()), "other accounts are not affected");
    }

    #[test]
    fn attempts_count_before_their_outcome_so_a_burst_cannot_slip_under_the_limit() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        // A burst arrives together: no attempt has finished hashing when the next one asks.
        let (admitted, _) = admit_until_refused(&mut limiter, "a@x.example", addr(1), now);
        assert_eq!(admitted, ACCOUNT_POLICY.free_failures + 1);
    }

    #[test]
    fn the_wait_has_a_ceiling() {
        let mut limiter = LoginLimiter::default();
        let mut now = Instant::now();
        let mut longest = Duration::ZERO;
        for _ in 0..40 {
            let (_, wait) = admit_until_refused(&mut limiter, "a@x.example", addr(1), now);
            longest = longest.max(wait);
            now += wait;
        }
        assert_eq!(longest, ACCOUNT_POLICY.max);
    }

    #[test]
    fn an_address_guessing_many_accounts_is_limited() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..=ADDRESS_POLICY.free_failures {
            assert_eq!(limiter.begin(&format!("user{i}@x.example"), addr(7), now), Ok(()));
        }
        assert_eq!(limiter.begin("new@x.example", addr(7), now), Err(Duration::from_secs(1)));
        assert_eq!(limiter.begin("new@x.example", addr(8), now), Ok(()));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_limit_and_mapped_ipv4_is_ipv4() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..=ADDRESS_POLICY.free_failures {
            let rotating: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            assert_eq!(limiter.begin(&format!("user{i}@x.example"), rotating, now), Ok(()));
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(limiter.begin("new@x.example", same_64, now).is_err(), "a fresh address in the same /64");
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiter.begin("new@x.example", next_64, now), Ok(()));
        assert_eq!(network_of("::ffff:198.51.100.7".parse().unwrap()), "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn success_clears_the_account_and_refunds_only_its_own_attempt_to_the_address() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..ADDRESS_POLICY.free_failures {
            assert_eq!(limiter.begin(&format!("guess{i}@x.example"), addr(1), now), Ok(()));
        }
        assert_eq!(limiter.begin("a@x.example", addr(1), now), Ok(()));
        limiter.succeeded("a@x.example", addr(1));
        assert_eq!(limiter.begin("a@x.example", addr(1), now), Ok(()), "the address had one attempt left");
        assert!(limiter.begin("b@x.example", addr(1), now).is_err(), "and its guesses still count");
        assert_eq!(limiter.begin("a@x.example", addr(2), now), Ok(()), "the account itself is clear");
    }

    #[test]
    fn an_abandoned_attempt_counts_as_no_guess() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..=ADDRESS_POLICY.free_failures {
            limiter.begin("a@x.example", addr(1), now).ok();
            limiter.abandoned("a@x.example", addr(1));
        }
        assert_eq!(limiter.begin("a@x.example", addr(1), now), Ok(()), "neither the account nor the address is held");
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..ACCOUNT_POLICY.free_failures {
            limiter.begin("a@x.example", addr(1), now).expect("free");
        }
        let much_later = now + ACCOUNT_POLICY.forget_after + Duration::from_secs(1);
        let (admitted, _) = admit_until_refused(&mut limiter, "a@x.example", addr(2), much_later);
        assert_eq!(admitted, ACCOUNT_POLICY.free_failures + 1, "a fresh allowance");
    }

    #[tokio::test]
    async fn attempts_on_one_account_take_turns_and_leave_no_queue_behind() {
        let turns = Turns::default();
        let first = turns.take("a@x.example").await;
        let other = turns.take("b@x.example").await;
        let second = turns.take("a@x.example");
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending(), "the same account waits its turn");
        drop(other);
        drop(first);
        let second = second.await;
        drop(second);
        assert!(turns.queues.lock().unwrap().is_empty());
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
