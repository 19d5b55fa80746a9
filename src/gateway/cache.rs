//! The gateway's view of the cluster: watch caches of Organisations, Projects, project pods,
//! project Secrets and the accounts in the gateway's namespace. Every change bumps one generation counter, so a request waiting for a pod
//! to become ready (or for its project to stop) wakes on the watch event, not on a timer.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

use crate::accounts::{Account, USER_LABEL, secret_name};
use crate::crd::names::{
    self, TOKEN_KEY, TOKEN_STATE, TokenState, object_ref, organisation_namespace, pod_name, preview_secret_name,
};
use crate::crd::{Organisation, Project};

#[derive(Clone)]
pub struct Caches {
    pub organisations: Store<Organisation>,
    pub projects: Store<Project>,
    pub pods: Store<Pod>,
    pub secrets: Store<Secret>,
    /// Account Secrets (label `ooda.run/user`) in the gateway's own namespace.
    pub accounts: Store<Secret>,
    accounts_namespace: String,
    changes: watch::Receiver<u64>,
    synced: Arc<AtomicUsize>,
}

const WATCHES: usize = 5;

impl Caches {
    /// Starts the watches; they run for as long as the process.
    pub fn start(client: &Client, namespace: &str) -> Self {
        let (changed, changes) = watch::channel(0u64);
        let synced = Arc::new(AtomicUsize::new(0));
        let managed = watcher::Config::default().labels(&names::managed_selector());
        let organisations = reflect(Api::all(client.clone()), watcher::Config::default(), &changed, &synced, false);
        let projects = reflect(Api::all(client.clone()), watcher::Config::default(), &changed, &synced, true);
        let pods = reflect(Api::all(client.clone()), managed.clone(), &changed, &synced, true);
        let secrets = reflect(Api::all(client.clone()), managed, &changed, &synced, true);
        let users = watcher::Config::default().labels(&format!("{USER_LABEL}=true"));
        let accounts = reflect(Api::namespaced(client.clone(), namespace), users, &changed, &synced, true);
        Self {
            organisations,
            projects,
            pods,
            secrets,
            accounts,
            accounts_namespace: namespace.to_owned(),
            changes,
            synced,
        }
    }

    /// Caches holding exactly these objects, synced, as if each watch had just listed them.
    /// Nothing will ever change them, so the change channel's sender is leaked rather than
    /// dropped: a dropped sender would read as the gateway shutting down.
    #[cfg(test)]
    pub fn from_objects(
        organisations: Vec<Organisation>,
        projects: Vec<Project>,
        pods: Vec<Pod>,
        secrets: Vec<Secret>,
        accounts: Vec<Secret>,
        accounts_namespace: &str,
    ) -> Self {
        fn listed<K>(objects: Vec<K>) -> Store<K>
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::Init);
            for object in objects {
                writer.apply_watcher_event(&watcher::Event::InitApply(object));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            store
        }
        let (changed, changes) = watch::channel(0u64);
        std::mem::forget(changed);
        Self {
            organisations: listed(organisations),
            projects: listed(projects),
            pods: listed(pods),
            secrets: listed(secrets),
            accounts: listed(accounts),
            accounts_namespace: accounts_namespace.to_owned(),
            changes,
            synced: Arc::new(AtomicUsize::new(WATCHES)),
        }
    }

    /// Every watch has delivered its initial list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= WATCHES
    }

    /// A receiver that sees every later change to any cache.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// `email`'s account as the watch last saw it.
    pub fn account(&self, email: &str) -> Option<Account> {
        let secret = self.accounts.get(&object_ref(&self.accounts_namespace, secret_name(email)))?;
        Account::from_cached(&secret).filter(|account| account.email == email)
    }

    /// Waits (up to `timeout`) until the watch has delivered the account Secret as written at
    /// `resource_version`, so this replica's next request sees its own write.
    pub async fn await_account(&self, email: &str, resource_version: Option<&str>, timeout: std::time::Duration) {
        let mut changes = self.changes();
        let key = object_ref(&self.accounts_namespace, secret_name(email));
        let seen = |caches: &Caches| {
            caches.accounts.get(&key).is_some_and(|s| s.metadata.resource_version.as_deref() == resource_version)
        };
        let _ = tokio::time::timeout(timeout, async {
            while !seen(self) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    pub fn organisation(&self, name: &str) -> Option<Arc<Organisation>> {
        self.organisations.get(&reflector::ObjectRef::new(name))
    }

    pub fn project(&self, org: &str, name: &str) -> Option<Arc<Project>> {
        self.projects.get(&object_ref(&organisation_namespace(org), name))
    }

    /// The project's pod, if it exists and is not being deleted.
    pub fn pod(&self, org: &str, project: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&object_ref(&organisation_namespace(org), pod_name(project)))
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
    }

    /// The project's current preview token, unless the project is stopped (the operator marks
    /// the Secret the moment it rotates the token on stop).
    pub fn preview_token(&self, org: &str, project: &str) -> Option<PreviewToken> {
        let secret = self.secrets.get(&object_ref(&organisation_namespace(org), preview_secret_name(project)))?;
        let state = TokenState::from_annotation(secret.annotations().get(TOKEN_STATE).map(String::as_str));
        let stopped = state == TokenState::Stopped;
        let token = secret.data.as_ref()?.get(TOKEN_KEY)?.0.clone();
        Some(PreviewToken { token, stopped })
    }
}

pub struct PreviewToken {
    pub token: Vec<u8>,
    pub stopped: bool,
}

/// The address of a pod that is Ready and has an IP.
pub fn ready_pod_ip(pod: &Pod) -> Option<std::net::IpAddr> {
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &watch::Sender<u64>,
    synced: &Arc<AtomicUsize>,
    drop_managed_fields: bool,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let changed = changed.clone();
    let synced = synced.clone();
    let kind = K::kind(&()).into_owned();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            // Organisations keep theirs: membership writes read who manages each entry.
            if drop_managed_fields {
                object.meta_mut().managed_fields = None;
            }
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut counted = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if matches!(event, watcher::Event::InitDone) && !counted {
                        counted = true;
                        synced.fetch_add(1, Ordering::AcqRel);
                    }
                    changed.send_modify(|generation| *generation += 1);
                }
                Err(error) => warn!(%error, kind, "watch failed; retrying"),
            }
        }
    });
    store
}
