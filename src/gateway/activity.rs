//! Activity: proxied traffic renews the project's `<project>-activity` Lease, the operator's idle
//! signal. Renewals are debounced per project (one write per interval however busy it is) and
//! made off the request path; a wake renews at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use crate::crd::names::{LAST_SIGNAL, activity_lease_name, organisation_namespace};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::metrics::Metrics;

pub struct Activity {
    client: Client,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// When each project's Lease was last renewed by this replica.
    renewed: Mutex<HashMap<(String, String), Instant>>,
}

impl Activity {
    pub fn new(client: Client, interval: Duration, metrics: Arc<Metrics>) -> Self {
        Self { client, interval, metrics, renewed: Mutex::new(HashMap::new()) }
    }

    /// Records activity: renews the Lease in the background unless this replica did so within
    /// the interval. The interval never exceeds a third of the idle timeout, so a project in
    /// use cannot hibernate between two renewals.
    pub fn touch(self: &Arc<Self>, org: &str, project: &str, idle_timeout: Duration, signal: &'static str) {
        let every = self.interval.min(idle_timeout / 3);
        if self.claim(org, project, every) {
            let this = self.clone();
            let (org, project) = (org.to_owned(), project.to_owned());
            tokio::spawn(async move {
                if let Err(error) = this.renew(&org, &project, signal).await {
                    warn!(%error, org, project, "could not renew the activity lease");
                    this.forget(&org, &project);
                }
            });
        }
    }

    /// Renews now (a wake): concurrent requests to the same hibernated project share one
    /// renewal per second.
    pub async fn renew_for_wake(&self, org: &str, project: &str) -> Result<(), kube::Error> {
        if !self.claim(org, project, Duration::from_secs(1)) {
            return Ok(());
        }
        let result = self.renew(org, project, "wake").await;
        if result.is_err() {
            self.forget(org, project);
        }
        result
    }

    fn claim(&self, org: &str, project: &str, every: Duration) -> bool {
        let now = Instant::now();
        let mut renewed = self.renewed.lock().expect("activity map lock");
        let key = (org.to_owned(), project.to_owned());
        match renewed.get(&key) {
            Some(last) if now.duration_since(*last) < every => false,
            _ => {
                // Bounded: entries older than any interval carry no information.
                if renewed.len() > 10_000 {
                    renewed.retain(|_, last| now.duration_since(*last) < self.interval);
                }
                renewed.insert(key, now);
                true
            }
        }
    }

    fn forget(&self, org: &str, project: &str) {
        self.renewed.lock().expect("activity map lock").remove(&(org.to_owned(), project.to_owned()));
    }

    async fn renew(&self, org: &str, project: &str, signal: &str) -> Result<(), kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &organisation_namespace(org));
        let patch = json!({
            "metadata": { "annotations": { LAST_SIGNAL: signal } },
            "spec": { "renewTime": MicroTime(Timestamp::now()) },
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        leases.patch(&activity_lease_name(project), &params, &Patch::Merge(&patch)).await?;
        self.metrics.activity_renewed();
        Ok(())
    }
}
