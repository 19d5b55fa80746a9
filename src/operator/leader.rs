//! Leader election with a coordination.k8s.io Lease, so several replicas can run and only one
//! writes. Expiry is judged by this process's own clock from when it last saw the record change
//! (as client-go does), so clock skew between replicas does not matter.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The record as last seen and when: expiry is measured from here.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self { api, name: name.to_owned(), identity: identity.to_owned(), lease_duration, observed: None }
    }

    /// How often the leader renews and candidates retry.
    pub fn retry_period(&self) -> Duration {
        self.lease_duration / 4
    }

    /// Blocks until this process holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews until leadership is lost: a renewal refused, or none succeeding for two thirds of
    /// the lease duration (after which another replica may take over). A renewal still in flight
    /// at that point counts as failed: an API server answering slowly must not keep a leader
    /// leading past the moment a standby may start.
    pub async fn hold(&mut self) {
        let deadline = self.lease_duration * 2 / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            let left = deadline.saturating_sub(last_renewed.elapsed());
            // A standby counts from the renew time this request writes, i.e. from its start.
            let attempt = Instant::now();
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renewed = attempt,
                Ok(Ok(false)) => {
                    warn!(lease = %self.name, "another replica holds the lease");
                    return;
                }
                Ok(Err(error)) if last_renewed.elapsed() < deadline => warn!(%error, "renewing the leader lease"),
                Ok(Err(error)) => {
                    warn!(%error, "could not renew the leader lease in time");
                    return;
                }
                Err(_) => {
                    warn!(after = ?deadline, "could not renew the leader lease in time: the API server did not answer");
                    return;
                }
            }
        }
    }

    /// Gives the Lease up so another replica can lead at once (on clean shutdown).
    pub async fn release(&self) {
        if let Ok(mut lease) = self.api.get(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    warn!(%error, "releasing the leader lease");
                }
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let held_by_me = spec.holder_identity.as_deref() == Some(&self.identity);
        let unchanged_since = match &self.observed {
            Some((holder, renew, at)) if (holder, renew) == (&record.0, &record.1) => *at,
            _ => {
                self.observed = Some((record.0.clone(), record.1.clone(), Instant::now()));
                Instant::now()
            }
        };
        let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = unchanged_since.elapsed() >= self.lease_duration;
        if !(held_by_me || vacant || expired) {
            return Ok(false);
        }
        if !held_by_me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
