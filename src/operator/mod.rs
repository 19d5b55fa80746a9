//! `ooda operator`: the Organisation and Project controllers behind a leader Lease.

pub mod apply;
pub mod cleanup;
pub mod context;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod organisation;
pub mod project;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::wait::{await_condition, conditions as wait_conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, OperatorConfig};
use crate::crd::{Organisation, Project, names};
use crate::watch::{Compact, ManagedFields, Readiness, StartRetry};
use context::{Context, ExternalCleanup};
use http::Health;
use metrics::Metrics;

/// How `ooda operator` was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub http_addr: SocketAddr,
    /// Namespace of the leader Lease (the operator's own).
    pub namespace: String,
    pub leader_lease: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub organisation_selector: Option<String>,
    pub concurrency: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("HTTP endpoints on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
}

pub async fn run(options: Options) -> Result<(), RunError> {
    let config = Arc::new(OperatorConfig::load(&options.config)?);
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());

    let listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(|source| RunError::Http { addr: options.http_addr, source })?;
    info!(addr = %listener.local_addr().map_err(|source| RunError::Http { addr: options.http_addr, source })?, "operator HTTP endpoints listening");
    let server = axum::serve(listener, http::router(health.clone(), metrics.clone()));
    tokio::spawn(async move {
        if let Err(error) = server.await {
            error!(%error, "operator HTTP endpoints stopped");
        }
    });

    wait_for_crds(&client).await;
    health.crds_established.store(true, Ordering::Release);
    // Everything slow happens before the Lease is taken: once leading, the operator must renew
    // it within the lease duration.
    let secrets = Api::namespaced(client.clone(), &options.namespace);
    let buckets = crate::sites::Buckets::from_config(&config, &secrets).await;
    let cleanups: Vec<Arc<dyn ExternalCleanup>> =
        vec![Arc::new(cleanup::SitesPurge { buckets, client: client.clone() })];

    let mut elector = leader::LeaderElector::new(
        Api::namespaced(client.clone(), &options.namespace),
        &options.leader_lease,
        &options.identity,
        options.lease_duration,
    );
    let shutdown = crate::signal::shutdown();
    tokio::pin!(shutdown);
    // One term of leadership per turn: a leader that cannot renew its Lease in time (the API
    // server away for longer than two thirds of the lease) stops its controllers, and with them
    // every write, and stands for election again with fresh caches; the process lives on.
    loop {
        tokio::select! {
            () = elector.acquire() => {}
            () = &mut shutdown => return Ok(()),
        }
        metrics.leader.set(1);
        health.leading.store(true, Ordering::Release);
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: "ooda-operator".into(), instance: Some(options.identity.clone()) },
        );
        let shared = Arc::new(Context::new(
            client.clone(),
            config.clone(),
            metrics.clone(),
            recorder,
            cleanups.clone(),
            options.organisation_selector.clone(),
            health.caches.clone(),
        ));
        // The controllers and the renewals run as tasks of their own: however much work the
        // controllers have queued (a backlog of watch events on a busy machine), it must not delay
        // a renewal past the lease's deadline, nor keep this loop from seeing that one failed.
        let mut controllers = tokio::spawn(run_controllers(shared, health.clone(), options.clone()));
        let mut renewer = elector.clone();
        let mut renewing = tokio::spawn(async move { renewer.hold().await });
        let lost = tokio::select! {
            ended = &mut controllers => { resume_panic(ended); false }
            ended = &mut renewing => { resume_panic(ended); true }
            () = &mut shutdown => false,
        };
        // Both gone before the Lease is released or stood for again.
        for task in [controllers, renewing] {
            if !task.is_finished() {
                task.abort();
                let _ = task.await;
            }
        }
        metrics.leader.set(0);
        health.leading.store(false, Ordering::Release);
        *health.projects.lock().expect("projects lock") = None;
        if !lost {
            elector.release().await;
            return Ok(());
        }
        warn!("lost the leader lease: controllers stopped; standing for election again");
    }
}

/// A task's panic is the process's, as if the task had run inline.
fn resume_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Waits until each of ooda's CRDs is established. A failure to watch one is retried
/// ([`StartRetry`]: the operator's ClusterRoleBinding may not be seen yet), never the end of the
/// process. Meanwhile `/readyz` says what it waits for and the log names the refusal.
async fn wait_for_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crd::definitions() {
        let name = crd.name_any();
        info!(crd = %name, "waiting for CRD to be established");
        let mut retry = StartRetry::default();
        while let Err(error) = await_condition(crds.clone(), &name, wait_conditions::is_crd_established()).await {
            warn!(crd = %name, %error, retry_in = ?retry.next(), "cannot watch the CRD yet");
            retry.wait().await;
        }
    }
}

/// Objects per page of a watch's initial list. A page is decoded whole before its objects are
/// cached one by one, so at thousands of projects the pages (a dozen watches listing at once when
/// a replica takes over) would make the operator's peak memory; smaller pages cost a few more
/// requests at start only.
const LIST_PAGE: u32 = 100;

/// Every cache the controllers read, registered with one readiness that the controllers (and
/// `/readyz`) wait on.
struct Caches {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

impl Caches {
    /// A cache of `K` filtered by `labels`, and the stream of changes that feeds it.
    fn reflect<K>(
        &self,
        name: &'static str,
        api: Api<K>,
        labels: Option<&str>,
    ) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let mut config = watcher::Config::default().page_size(LIST_PAGE);
        if let Some(labels) = labels {
            config = config.labels(labels);
        }
        let listed = self.readiness.register(name);
        let (store, events) = crate::watch::reflector(api, config, ManagedFields::Drop, listed);
        (store, events.touched_objects())
    }

    /// A [`Compact`] cache of `K` filtered by `labels`, cut down by `prune`, and the stream of
    /// changes that feeds it: for the children of every project.
    fn compact<K>(
        &self,
        name: &'static str,
        api: Api<K>,
        labels: &str,
        prune: fn(&mut K),
    ) -> (Compact<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let config = watcher::Config::default().labels(labels).page_size(LIST_PAGE);
        let listed = self.readiness.register(name);
        let (cache, events) = crate::watch::compact_reflector(api, config, prune, listed);
        let measured = cache.clone();
        self.metrics.measure_cache(name, move || measured.bytes());
        (cache, events.touched_objects())
    }

    /// Logs once every cache has its initial list, warning about laggards meanwhile.
    async fn report(self) {
        let started = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.readiness.ready() => {
                    info!(after = ?started.elapsed(), "all caches synced");
                    return;
                }
                () = tokio::time::sleep(Duration::from_secs(15)) => {
                    warn!(waiting = ?self.readiness.pending(), "caches still waiting for their initial list");
                }
            }
        }
    }
}

async fn run_controllers(shared: Arc<Context>, health: Arc<Health>, options: Options) {
    let client = shared.client.clone();
    let org_children = names::managed_selector() + &format!(",!{}", names::PROJECT);
    let project_children = names::managed_selector() + &format!(",{}", names::PROJECT);
    let org_selector = options.organisation_selector.as_deref();
    let sync = Caches { readiness: health.caches.clone(), metrics: shared.metrics.clone() };

    // Organisation controller.
    let (organisation_store, organisation_events) =
        sync.reflect::<Organisation>("Organisation", Api::all(client.clone()), org_selector);
    let (namespaces, namespace_events) =
        sync.reflect::<Namespace>("Namespace", Api::all(client.clone()), Some(&org_children));
    let (quotas, quota_events) =
        sync.reflect::<ResourceQuota>("ResourceQuota", Api::all(client.clone()), Some(&org_children));
    let (limit_ranges, limit_range_events) =
        sync.reflect::<LimitRange>("LimitRange", Api::all(client.clone()), Some(&org_children));
    let (org_policies, org_policy_events) =
        sync.reflect::<NetworkPolicy>("NetworkPolicy (organisation)", Api::all(client.clone()), Some(&org_children));
    let (roles, role_events) = sync.reflect::<Role>("Role", Api::all(client.clone()), Some(&org_children));
    let (role_bindings, role_binding_events) =
        sync.reflect::<RoleBinding>("RoleBinding", Api::all(client.clone()), Some(&org_children));
    let organisation_ctx = Arc::new(organisation::OrganisationContext {
        shared: shared.clone(),
        children: organisation::Children {
            namespaces,
            quotas,
            limit_ranges,
            network_policies: org_policies,
            roles,
            role_bindings,
        },
    });
    // Namespaced children of a cluster-scoped owner: `owns` would look the owner up in the
    // child's namespace, so they lead back to their organisation by label instead.
    fn owning_organisation<K: Resource>(child: K) -> Option<ObjectRef<Organisation>> {
        child.meta().labels.as_ref()?.get(names::ORGANISATION).map(|name| ObjectRef::new(name))
    }
    let controller_config = ControllerConfig::default().concurrency(options.concurrency);
    let organisations = Controller::for_stream(organisation_events, organisation_store)
        .with_config(controller_config.clone())
        .owns_stream(namespace_events)
        .watches_stream(quota_events, owning_organisation)
        .watches_stream(limit_range_events, owning_organisation)
        .watches_stream(org_policy_events, owning_organisation)
        .watches_stream(role_events, owning_organisation)
        .watches_stream(role_binding_events, owning_organisation);

    // Project controller.
    let (project_store, project_events) = sync.reflect::<Project>("Project", Api::all(client.clone()), None);
    let (org_cache, org_cache_events) =
        sync.reflect::<Organisation>("Organisation (for projects)", Api::all(client.clone()), org_selector);
    let children = project_children.as_str();
    let (service_accounts, sa_events) =
        sync.compact::<ServiceAccount>("ServiceAccount", Api::all(client.clone()), children, keep_all);
    let (claims, claim_events) =
        sync.compact::<PersistentVolumeClaim>("PersistentVolumeClaim", Api::all(client.clone()), children, keep_all);
    let (stateful_sets, sts_events) =
        sync.compact::<StatefulSet>("StatefulSet", Api::all(client.clone()), children, project::set_as_read);
    let (services, service_events) = sync.compact::<Service>("Service", Api::all(client.clone()), children, keep_all);
    let (policies, policy_events) =
        sync.compact::<NetworkPolicy>("NetworkPolicy (project)", Api::all(client.clone()), children, keep_all);
    let (secrets, secret_events) = sync.compact::<Secret>("Secret", Api::all(client.clone()), children, keep_all);
    let (leases, lease_events) = sync.compact::<Lease>("Lease", Api::all(client.clone()), children, keep_all);
    let (pods, pod_events) = sync.compact::<Pod>("Pod", Api::all(client.clone()), children, project::pod_as_read);
    let project_ctx = Arc::new(project::ProjectContext {
        shared: shared.clone(),
        children: project::Children {
            organisations: org_cache,
            service_accounts,
            claims,
            stateful_sets,
            services,
            network_policies: policies,
            secrets,
            leases,
            pods,
        },
    });
    *health.projects.lock().expect("projects lock") = Some(project_store.clone());
    let projects_of_org = project_store.clone();
    let projects = Controller::for_stream(project_events, project_store)
        .with_config(controller_config)
        .owns_stream(sa_events)
        .owns_stream(claim_events)
        .owns_stream(sts_events)
        .owns_stream(service_events)
        .owns_stream(policy_events)
        .owns_stream(secret_events)
        .owns_stream(lease_events)
        // Pods belong to the StatefulSet; their project label leads back to the project.
        .watches_stream(pod_events, |pod: Pod| {
            let project = pod.labels().get(names::PROJECT)?.clone();
            Some(ObjectRef::<Project>::new(&project).within(&pod.namespace()?))
        })
        // A project waits for its organisation: re-check every project of an organisation that changes.
        .watches_stream(org_cache_events, move |org: Organisation| {
            let namespace = names::organisation_namespace(&org.name_any());
            projects_of_org
                .state()
                .into_iter()
                .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        });

    tokio::spawn(sync.report());
    let for_organisations = shared.clone();
    let organisations = organisations
        .run(organisation::reconcile, organisation::error_policy, organisation_ctx)
        .for_each(move |result| {
            log_outcome(organisation::CONTROLLER, result, &for_organisations);
            std::future::ready(())
        });
    let projects = projects.run(project::reconcile, project::error_policy, project_ctx).for_each(move |result| {
        log_outcome(project::CONTROLLER, result, &shared);
        std::future::ready(())
    });
    tokio::join!(organisations, projects);
}

/// Caches everything the watch delivers (managed fields aside).
fn keep_all<K>(_: &mut K) {}

fn log_outcome<K: Resource, E: std::error::Error, Q: std::error::Error>(
    controller: &str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, Q>>,
    shared: &Context,
) {
    use kube::runtime::controller::Error as ControllerError;
    match result {
        // Already counted and logged by error_action.
        Ok(_) | Err(ControllerError::ReconcilerFailed(..)) => {}
        // A child or related object of something this operator does not manage (another
        // operator's organisation, or an object deleted meanwhile).
        Err(ControllerError::ObjectNotFound(gone)) => {
            debug!(controller, object = %gone, "nothing to reconcile");
            // Deleted: its count of failures in a row goes with it (keyed as error_action's are).
            let key = gone.namespace.as_ref().map_or_else(|| gone.name.clone(), |ns| format!("{ns}/{}", gone.name));
            shared.record_success(&key);
        }
        Err(error) => warn!(controller, %error, "controller"),
    }
}

/// Retry interval for objects that arrive before the caches have synced.
pub(crate) const UNTIL_SYNCED: Duration = Duration::from_millis(500);

/// What to do after a failed reconcile: count it, then wait for a change (invalid objects) or
/// retry with exponential backoff (everything else).
pub(crate) fn error_action(controller: &'static str, key: &str, error: &error::Error, ctx: &Context) -> Action {
    ctx.metrics.failed(controller, error.category());
    if error.is_transient() {
        let delay = error::backoff(ctx.record_failure(key));
        warn!(controller, object = key, category = error.category(), %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    } else {
        warn!(controller, object = key, category = error.category(), %error, "reconcile failed; waiting for a change");
        Action::await_change()
    }
}
