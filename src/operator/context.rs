//! What every reconcile shares: the client, configuration, caches, metrics and Events.

use std::collections::HashMap;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::{debug, warn};

use crate::config::OperatorConfig;
use crate::crd::Project;
use crate::operator::error::CleanupError;
use crate::operator::metrics::Metrics;
use crate::watch::Readiness;

/// Clean-up of what a project owns outside Kubernetes (published sites in S3, …), run by the
/// project finalizer before the project may go. Must be idempotent: it is retried until it
/// succeeds, with backoff.
pub trait ExternalCleanup: Send + Sync {
    /// Short name for logs and conditions, e.g. `published-sites`.
    fn name(&self) -> &'static str;
    fn purge<'a>(&'a self, organisation: &'a str, project: &'a Project) -> BoxFuture<'a, Result<(), CleanupError>>;
}

pub struct Context {
    pub client: Client,
    pub config: Arc<OperatorConfig>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub cleanups: Vec<Arc<dyn ExternalCleanup>>,
    /// Set when this operator manages only the organisations matching a label selector; other
    /// organisations' projects are then left alone entirely (another operator owns them).
    pub organisation_selector: Option<String>,
    /// Ready once every cache has its initial list: deciding from a half-filled cache would
    /// re-create children that exist and misjudge readiness.
    pub caches: Readiness,
    failures: Mutex<HashMap<String, u32>>,
    /// Status last written per object uid. A reconcile triggered before our own status write
    /// reached the cache recomputes the same status from a stale `old`; this stops it from
    /// writing (and announcing) it twice.
    written_status: Mutex<HashMap<String, String>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Arc<OperatorConfig>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        cleanups: Vec<Arc<dyn ExternalCleanup>>,
        organisation_selector: Option<String>,
        caches: Readiness,
    ) -> Self {
        Self {
            client,
            config,
            metrics,
            recorder,
            cleanups,
            organisation_selector,
            caches,
            failures: Mutex::default(),
            written_status: Mutex::default(),
        }
    }

    pub fn caches_synced(&self) -> bool {
        self.caches.is_ready()
    }

    /// Counts a failure of `key` and returns how many in a row.
    pub fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock");
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count += 1;
        *count - 1
    }

    pub fn record_success(&self, key: &str) {
        self.failures.lock().expect("failure map lock").remove(key);
    }

    /// Records that `status` is about to be written for `uid`; false when it was the last status
    /// written for it (nothing to do).
    pub fn claim_status_write(&self, uid: &str, status: &impl serde::Serialize) -> bool {
        let text = serde_json::to_string(status).expect("status serialises");
        let mut written = self.written_status.lock().expect("status map lock");
        if written.get(uid) == Some(&text) {
            return false;
        }
        written.insert(uid.to_owned(), text);
        true
    }

    /// The status last written for `uid` by this process, if any: newer than a cache that has
    /// not yet delivered that write.
    pub fn last_written_status<S: serde::de::DeserializeOwned>(&self, uid: &str) -> Option<S> {
        let written = self.written_status.lock().expect("status map lock");
        serde_json::from_str(written.get(uid)?).ok()
    }

    /// Forgets an object's last written status (it failed to write, or the object is gone).
    pub fn forget_status(&self, uid: &str) {
        self.written_status.lock().expect("status map lock").remove(uid);
    }

    /// Publishes an Event about `object`; failing to publish is logged, never fatal.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        match self.recorder.publish(&event, object).await {
            Ok(()) => self.metrics.wrote("Event"),
            // A namespace being deleted takes no new objects, Events included; nobody would read them.
            Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains("being terminated") => {
                debug!(reason, "not publishing an Event into a terminating namespace");
            }
            Err(error) => warn!(%error, reason, "publishing an Event"),
        }
    }
}
