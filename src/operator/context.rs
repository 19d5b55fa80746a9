//! What every reconcile shares: the client, configuration, caches, metrics and Events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::config::OperatorConfig;
use crate::crd::Project;
use crate::operator::apply::{APPLIED_HASH, Applied};
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
    /// Statuses this process wrote, until its cache shows them.
    pub written_status: WrittenStatus,
    /// Token Secrets this process wrote, until its cache shows them.
    pub written_tokens: WrittenTokens,
    /// What this process last applied to each child, until its cache shows it.
    pub applied: Applied,
}

/// Token Secrets this process wrote, by namespace and name, until its cache shows them: a token
/// made anew for want of one the cache has not delivered yet would replace one already handed out
/// (to a pod, a preview link). Reading them back from the API server instead cost a request per
/// Secret on every reconcile until the watch caught up.
#[derive(Default)]
pub struct WrittenTokens(UntilCached<(String, String), Arc<Secret>>);

/// The status this process last wrote to each object (by uid, as JSON), until its cache shows it.
/// A reconcile triggered before its own status write reached the cache would recompute the same
/// status from a stale `old` and write (and announce) it twice, or decide from an older phase.
/// Forgotten once the cache shows it: an object deleted without a finalizer never comes back to
/// say it is gone.
#[derive(Default)]
pub struct WrittenStatus(UntilCached<String, String>);

impl WrittenStatus {
    /// Records that `status` is about to be written for `uid`; false when it was the last status
    /// written for it and the cache has not shown it yet (nothing to do).
    pub fn claim(&self, uid: &str, status: &impl serde::Serialize) -> bool {
        let text = serde_json::to_string(status).expect("status serialises");
        let uid = uid.to_owned();
        if self.0.pending(&uid, |_| false).as_ref() == Some(&text) {
            return false;
        }
        self.0.remember(uid, text);
        true
    }

    /// The status last written for `uid` while the cache shows another (`cached`, as written:
    /// without the fields others own); `None` once the cache shows it.
    pub fn ahead_of_cache<S: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        uid: &str,
        cached: &S,
    ) -> Option<S> {
        // Serialised only when something is pending: this runs on every reconcile.
        let shows = |written: &String| serde_json::to_string(cached).is_ok_and(|cached| *written == cached);
        let written = self.0.pending(&uid.to_owned(), shows)?;
        serde_json::from_str(&written).ok()
    }

    /// Forgets the status written for `uid` (the write failed, or the object is gone).
    pub fn forget(&self, uid: &str) {
        self.0.forget(&uid.to_owned());
    }
}

/// What this process wrote, by key, until its cache shows it: a reconcile that runs before the
/// watch delivers a write would otherwise decide from the object as it was before.
pub struct UntilCached<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for UntilCached<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

/// Longer than any cache takes to deliver a write; an entry still there then is forgotten (its
/// object went before the cache showed it).
const UNTIL_CACHED_TTL: Duration = Duration::from_secs(600);

impl<K: Eq + std::hash::Hash, V: Clone> UntilCached<K, V> {
    pub fn remember(&self, key: K, value: V) {
        let mut written = self.0.lock().expect("written map lock");
        written.retain(|_, (_, at)| at.elapsed() < UNTIL_CACHED_TTL);
        written.insert(key, (value, Instant::now()));
    }

    pub fn contains(&self, key: &K) -> bool {
        self.0.lock().expect("written map lock").contains_key(key)
    }

    pub fn forget(&self, key: &K) {
        self.0.lock().expect("written map lock").remove(key);
    }

    /// What was written under `key`, unless `caught_up` says the cache shows it now: then it is
    /// forgotten, and the cache is the truth from then on.
    pub fn pending(&self, key: &K, caught_up: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut written = self.0.lock().expect("written map lock");
        let (value, _) = written.get(key)?;
        if caught_up(value) {
            written.remove(key);
            return None;
        }
        Some(value.clone())
    }
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
            written_status: WrittenStatus::default(),
            written_tokens: WrittenTokens::default(),
            applied: Applied::default(),
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

impl WrittenTokens {
    /// Remembers a token Secret just written, until the cache shows it.
    pub fn remember(&self, secret: &Secret) {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        self.0.remember(key, Arc::new(secret.clone()));
    }

    /// The token Secret `namespace/name` as last written: the one this process wrote, until
    /// `cached` holds the same (token and applied hash), and the cached one from then on.
    pub fn get(&self, namespace: &str, name: &str, cached: Option<Arc<Secret>>) -> Option<Arc<Secret>> {
        let caught_up = |ours: &Arc<Secret>| {
            cached.as_deref().is_some_and(|cached| {
                cached.data == ours.data
                    && cached.annotations().get(APPLIED_HASH) == ours.annotations().get(APPLIED_HASH)
            })
        };
        self.0.pending(&(namespace.to_owned(), name.to_owned()), caught_up).or(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::apply::stamp;

    fn token_secret(token: &str, state: &str) -> Secret {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "shop-preview", "namespace": "org-acme", "annotations": { "ooda.run/token-state": state } },
            "data": { "token": k8s_openapi::ByteString(token.as_bytes().to_vec()) },
        }))
        .unwrap();
        stamp(&mut secret);
        secret
    }

    #[test]
    fn a_written_token_is_read_back_until_the_cache_holds_it() {
        let written = WrittenTokens::default();
        let stale = Arc::new(token_secret("old", "running"));
        assert_eq!(written.get("org-acme", "shop-preview", None), None, "nothing written, nothing cached");
        assert_eq!(written.get("org-acme", "shop-preview", Some(stale.clone())), Some(stale.clone()));

        let rotated = token_secret("new", "stopped");
        written.remember(&rotated);
        assert_eq!(written.get("org-acme", "shop-preview", None).as_deref(), Some(&rotated), "not cached yet");
        assert_eq!(written.get("org-acme", "shop-preview", Some(stale.clone())).as_deref(), Some(&rotated), "stale");
        assert_eq!(written.get("org-acme", "other", None), None, "by name");
        // The same token under another state (a start after a stop) is not caught up yet either.
        let restarted = token_secret("new", "running");
        written.remember(&restarted);
        let stopped_in_cache = Arc::new(rotated.clone());
        assert_eq!(written.get("org-acme", "shop-preview", Some(stopped_in_cache)).as_deref(), Some(&restarted));

        let caught_up = Arc::new(restarted.clone());
        assert_eq!(written.get("org-acme", "shop-preview", Some(caught_up.clone())), Some(caught_up));
        // Forgotten once the cache showed it: the cache is the truth from then on.
        assert_eq!(written.get("org-acme", "shop-preview", Some(stale.clone())), Some(stale));
    }

    #[test]
    fn a_written_status_counts_until_the_cache_shows_it_and_is_then_forgotten() {
        use crate::crd::{Phase, ProjectStatus};
        let status = |phase| ProjectStatus { phase: Some(phase), ..Default::default() };
        let written = WrittenStatus::default();
        assert!(written.claim("uid-1", &status(Phase::Provisioning)));
        assert!(!written.claim("uid-1", &status(Phase::Provisioning)), "the same status twice: written once");
        assert!(written.claim("uid-2", &status(Phase::Provisioning)), "by uid");
        assert_eq!(written.ahead_of_cache("uid-1", &ProjectStatus::default()), Some(status(Phase::Provisioning)));

        assert_eq!(written.ahead_of_cache("uid-1", &status(Phase::Provisioning)), None, "the cache shows it");
        // Forgotten: the cache decides from now on, and the map keeps nothing of the object.
        assert_eq!(written.ahead_of_cache("uid-1", &ProjectStatus::default()), None);
        assert!(!written.0.contains(&"uid-1".to_owned()));

        written.forget("uid-2");
        assert_eq!(written.ahead_of_cache("uid-2", &ProjectStatus::default()), None, "a failed write is forgotten");
    }
}
