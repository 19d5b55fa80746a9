//! The gateway's view of the cluster: watch caches of Organisations, Projects and the accounts in
//! the gateway's namespace, and, per organisation namespace, of project pods and Secrets (the
//! gateway may read those only there: the operator gives it a Role in each organisation's
//! namespace once the organisation is Ready). Every change bumps one generation counter, so a
//! request waiting for a pod to become ready (or for its project to stop) wakes on the watch
//! event, not on a timer.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::warn;

use crate::accounts::{Account, USER_LABEL, secret_name};
use crate::crd::names::{
    self, TOKEN_KEY, TOKEN_STATE, TokenState, ai_secret_name, object_ref, organisation_namespace, pod_name,
    preview_secret_name,
};
use crate::crd::{Organisation, Project};

/// The key of the AI relay's credentials Secrets that holds the upstream API key.
pub const AI_KEY: &str = "apiKey";
use crate::watch::{Listed, ManagedFields, Readiness};

#[derive(Clone)]
pub struct Caches {
    pub organisations: Store<Organisation>,
    pub projects: Store<Project>,
    pub pods: PerNamespace<Pod>,
    pub secrets: PerNamespace<Secret>,
    /// Account Secrets (label `ooda.run/user`) in the gateway's own namespace.
    pub accounts: Store<Secret>,
    /// The AI relay's credentials Secrets in the gateway's own namespace, by name. Not waited
    /// for: until one has listed, its jurisdiction's relay answers 503.
    ai_credentials: HashMap<String, Store<Secret>>,
    accounts_namespace: String,
    changes: watch::Receiver<u64>,
    readiness: Readiness,
}

impl Caches {
    /// Starts the watches; they run for as long as the process. `ai_credentials`: the names of
    /// the AI relay's credentials Secrets, each watched on its own.
    pub fn start(client: &Client, namespace: &str, ai_credentials: &BTreeSet<String>) -> Self {
        let (changed, changes) = watch::channel(0u64);
        // The per-namespace watches start as organisations become Ready. Those of the
        // organisations there are at start are waited for (a new replica serves their previews
        // as soon as it is ready); a later one's previews are refused until it has listed.
        let readiness = Readiness::default();
        let all = watcher::Config::default();
        // Organisation events also start and stop the per-namespace watches; nothing else does.
        let organisations_changed = watch::Sender::new(0u64);
        let organisations = reflect(
            Api::all(client.clone()),
            all.clone(),
            ManagedFields::Keep,
            readiness.register("Organisation"),
            &[&changed, &organisations_changed],
        );
        let projects =
            reflect(Api::all(client.clone()), all, ManagedFields::Drop, readiness.register("Project"), &[&changed]);
        let users = watcher::Config::default().labels(&format!("{USER_LABEL}=true"));
        let accounts = reflect(
            Api::namespaced(client.clone(), namespace),
            users,
            ManagedFields::Drop,
            readiness.register("account Secret"),
            &[&changed],
        );
        let own_secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let ai_credentials = ai_credentials
            .iter()
            .map(|name| {
                let one = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let listed = Readiness::default().register("AI credentials Secret");
                (name.clone(), reflect(own_secrets.clone(), one, ManagedFields::Drop, listed, &[]))
            })
            .collect();
        let (pods, secrets) = (PerNamespace::default(), PerNamespace::default());
        let watches = NamespaceWatches { pods: pods.clone(), secrets: secrets.clone(), changed };
        let initial = readiness.register("organisation namespaces");
        follow_organisations(
            client.clone(),
            organisations.clone(),
            watches,
            organisations_changed.subscribe(),
            initial,
        );
        Self {
            organisations,
            projects,
            pods,
            secrets,
            accounts,
            ai_credentials,
            accounts_namespace: namespace.to_owned(),
            changes,
            readiness,
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
        let (changed, changes) = watch::channel(0u64);
        std::mem::forget(changed);
        let namespaces: Vec<String> = organisations.iter().map(|o| organisation_namespace(&o.name_any())).collect();
        Self {
            organisations: listed(organisations),
            projects: listed(projects),
            pods: PerNamespace::listed(pods, &namespaces),
            secrets: PerNamespace::listed(secrets, &namespaces),
            accounts: listed(accounts),
            ai_credentials: HashMap::new(),
            accounts_namespace: accounts_namespace.to_owned(),
            changes,
            readiness: Readiness::default(),
        }
    }

    /// Every watch has delivered its initial list.
    pub fn synced(&self) -> bool {
        self.readiness.is_ready()
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

    /// The project, unless it is being deleted: from then on it is gone to every client.
    pub fn project(&self, org: &str, name: &str) -> Option<Arc<Project>> {
        self.projects
            .get(&object_ref(&organisation_namespace(org), name))
            .filter(|project| project.metadata.deletion_timestamp.is_none())
    }

    /// The project's pod, if it exists and is not being deleted.
    pub fn pod(&self, org: &str, project: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&organisation_namespace(org), &pod_name(project))
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
    }

    /// Whether `org`'s namespace has been listed (its pods and Secrets): until then a project
    /// there has no token or pod as far as this gateway knows, though it may well have both.
    pub fn namespace_listed(&self, org: &str) -> bool {
        let namespace = organisation_namespace(org);
        self.pods.has_listed(&namespace) && self.secrets.has_listed(&namespace)
    }

    /// A Secret the operator made in `org`'s namespace.
    pub fn secret(&self, org: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&organisation_namespace(org), name)
    }

    /// The AI relay's upstream API key (`apiKey`) from the credentials Secret `name`.
    pub fn ai_key(&self, name: &str) -> Option<String> {
        let secret = self.ai_credentials.get(name)?.get(&object_ref(&self.accounts_namespace, name))?;
        let key = secret.data.as_ref()?.get(AI_KEY)?;
        String::from_utf8(key.0.clone()).ok().map(|key| key.trim().to_owned()).filter(|key| !key.is_empty())
    }

    /// The project's current preview token, and the desired state it was issued for (the
    /// operator marks the Secret the moment it rotates the token on stop).
    pub fn preview_token(&self, org: &str, project: &str) -> Option<IssuedToken> {
        self.issued_token(org, &preview_secret_name(project))
    }

    /// The project's current AI token (see [`Caches::preview_token`]).
    pub fn ai_token(&self, org: &str, project: &str) -> Option<IssuedToken> {
        self.issued_token(org, &ai_secret_name(project))
    }

    fn issued_token(&self, org: &str, secret_name: &str) -> Option<IssuedToken> {
        let secret = self.secret(org, secret_name)?;
        let state = TokenState::from_annotation(secret.annotations().get(TOKEN_STATE).map(String::as_str));
        let token = secret.data.as_ref()?.get(TOKEN_KEY)?.0.clone();
        Some(IssuedToken { token, state })
    }
}

/// A token the operator issued for a project, as its Secret holds it.
pub struct IssuedToken {
    pub token: Vec<u8>,
    /// The desired state it was issued for.
    pub state: TokenState,
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

/// The address of a waking pod: one that has an IP and is not going away. Its port may not listen
/// yet; whoever waits on it checks that itself, rather than wait for the kubelet's next readiness
/// probe (up to a probe period after the server listens).
pub fn waking_pod_ip(pod: &Pod) -> Option<std::net::IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// A watch cache per organisation namespace, of the objects there labelled as ooda's.
pub struct PerNamespace<K: Resource<DynamicType = ()> + 'static> {
    watches: Arc<RwLock<HashMap<String, NamespaceWatch<K>>>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for PerNamespace<K> {
    fn clone(&self) -> Self {
        Self { watches: self.watches.clone() }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Default for PerNamespace<K> {
    fn default() -> Self {
        Self { watches: Arc::default() }
    }
}

struct NamespaceWatch<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    readiness: Readiness,
    task: Option<tokio::task::AbortHandle>,
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for NamespaceWatch<K> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl<K> PerNamespace<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// The object, once its namespace's watch has listed; `None` before (fail closed).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let watches = self.watches.read().expect("namespace watches lock");
        let watch = watches.get(namespace).filter(|w| w.readiness.is_ready())?;
        watch.store.get(&object_ref(namespace, name))
    }

    /// Whether `namespace`'s watch has listed: before, an object missing there is unknown, not
    /// absent.
    pub fn has_listed(&self, namespace: &str) -> bool {
        let watches = self.watches.read().expect("namespace watches lock");
        watches.get(namespace).is_some_and(|w| w.readiness.is_ready())
    }

    /// Whether the watch of every namespace in `namespaces` has listed.
    fn all_listed(&self, namespaces: &BTreeSet<String>) -> bool {
        namespaces.iter().all(|namespace| self.has_listed(namespace))
    }

    /// Watches every namespace in `wanted` not watched yet; stops watching those not in `keep`.
    fn follow(
        &self,
        client: &Client,
        wanted: &BTreeSet<String>,
        keep: &BTreeSet<String>,
        changed: &watch::Sender<u64>,
    ) {
        let mut watches = self.watches.write().expect("namespace watches lock");
        watches.retain(|namespace, _| keep.contains(namespace));
        let missing: Vec<&String> = wanted.iter().filter(|n| !watches.contains_key(*n)).collect();
        for namespace in missing {
            let readiness = Readiness::default();
            let listed = readiness.register("organisation namespace");
            let config = watcher::Config::default().labels(&names::managed_selector());
            let api = Api::namespaced(client.clone(), namespace);
            let (store, task) = spawn_reflector(api, config, ManagedFields::Drop, listed, &[changed]);
            watches.insert(namespace.clone(), NamespaceWatch { store, readiness, task: Some(task) });
        }
    }

    /// Watches of `namespaces` (and those of `objects`) that have listed exactly these objects,
    /// for in-process tests.
    #[cfg(test)]
    fn listed(objects: Vec<K>, namespaces: &[String]) -> Self {
        let mut by_namespace: HashMap<String, Vec<K>> =
            namespaces.iter().map(|namespace| (namespace.clone(), Vec::new())).collect();
        for object in objects {
            by_namespace.entry(object.meta().namespace.clone().unwrap_or_default()).or_default().push(object);
        }
        let watches = by_namespace
            .into_iter()
            .map(|(namespace, objects)| {
                let watch = NamespaceWatch { store: listed(objects), readiness: Readiness::default(), task: None };
                (namespace, watch)
            })
            .collect();
        Self { watches: Arc::new(RwLock::new(watches)) }
    }
}

/// A store holding exactly these objects, as if its watch had just listed them.
#[cfg(test)]
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

/// Keeps the per-namespace watches in step with the organisations: a namespace is watched from
/// when its organisation is Ready (the operator has given the gateway its Role there by then)
/// for as long as the organisation exists.
fn follow_organisations(
    client: Client,
    organisations: Store<Organisation>,
    watches: NamespaceWatches,
    mut organisation_changes: watch::Receiver<u64>,
    initial: Listed,
) {
    let NamespaceWatches { pods, secrets, changed } = watches;
    let mut namespace_events = changed.subscribe();
    tokio::spawn(async move {
        // The organisations' initial list, then their namespaces' watches: `initial` is done
        // once those have listed too, or after [`INITIAL_NAMESPACES`] at most (a namespace this
        // gateway may not read must not keep it unready for ever; its previews are refused).
        if organisations.wait_until_ready().await.is_err() {
            return;
        }
        let mut initial = Some(initial);
        let give_up = tokio::time::Instant::now() + INITIAL_NAMESPACES;
        loop {
            let all = organisations.state();
            let keep: BTreeSet<String> = all.iter().map(|o| organisation_namespace(&o.name_any())).collect();
            let wanted: BTreeSet<String> = all
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .filter(|o| o.status.as_ref().is_some_and(|s| crate::crd::conditions::is_true(&s.conditions, "Ready")))
                .map(|o| organisation_namespace(&o.name_any()))
                .collect();
            pods.follow(&client, &wanted, &keep, &changed);
            secrets.follow(&client, &wanted, &keep, &changed);
            if initial.is_some() && pods.all_listed(&wanted) && secrets.all_listed(&wanted) {
                initial.take().expect("checked").done();
            }
            tokio::select! {
                changed = organisation_changes.changed() => if changed.is_err() { return },
                // Only while waiting for the initial namespaces: their events may be their lists.
                _ = namespace_events.changed(), if initial.is_some() => {}
                () = tokio::time::sleep_until(give_up), if initial.is_some() => {
                    warn!(after = ?INITIAL_NAMESPACES, "some organisation namespaces have not listed; ready without them (their previews are refused until they do)");
                    initial.take().expect("checked").done();
                }
            }
        }
    });
}

/// Longest a starting gateway waits for its organisations' namespaces to list before it is ready.
const INITIAL_NAMESPACES: Duration = Duration::from_secs(10);

/// The per-namespace caches, and the change counter their events bump.
struct NamespaceWatches {
    pods: PerNamespace<Pod>,
    secrets: PerNamespace<Secret>,
    changed: watch::Sender<u64>,
}

/// A reflector running for as long as the process; every event bumps each change counter.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    managed_fields: ManagedFields,
    listed: Listed,
    changed: &[&watch::Sender<u64>],
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    spawn_reflector(api, config, managed_fields, listed, changed).0
}

/// A reflector in its own task, which the handle stops.
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    managed_fields: ManagedFields,
    listed: Listed,
    changed: &[&watch::Sender<u64>],
) -> (Store<K>, tokio::task::AbortHandle)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, events) = crate::watch::reflector(api, config, managed_fields, listed);
    let changed: Vec<watch::Sender<u64>> = changed.iter().map(|sender| (*sender).clone()).collect();
    let kind = K::kind(&()).into_owned();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => changed.iter().for_each(|counter| counter.send_modify(|generation| *generation += 1)),
                Err(error) => warn!(%error, kind, "watch failed; retrying"),
            }
        }
    });
    (store, task.abort_handle())
}
