//! `ooda operator`: the Organisation and Project controllers behind a leader Lease.

pub mod apply;
pub mod conditions;
pub mod context;
pub mod error;
pub mod http;
pub mod labels;
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

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::wait::{await_condition, conditions as wait_conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, OperatorConfig};
use crate::crd::{Organisation, Project};
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
    #[error("lost the leader lease; exiting so that only one replica writes")]
    LostLeadership,
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

    wait_for_crds(&client).await?;
    health.crds_established.store(true, Ordering::Release);

    let mut elector = leader::LeaderElector::new(
        Api::namespaced(client.clone(), &options.namespace),
        &options.leader_lease,
        &options.identity,
        options.lease_duration,
    );
    tokio::select! {
        () = elector.acquire() => {}
        () = shutdown_signal() => return Ok(()),
    }
    metrics.leader.set(1);
    health.leading.store(true, Ordering::Release);

    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "ooda-operator".into(), instance: Some(options.identity.clone()) },
    );
    let cleanups: Vec<Arc<dyn ExternalCleanup>> = Vec::new();
    let shared = Arc::new(Context::new(
        client.clone(),
        config,
        metrics.clone(),
        recorder,
        cleanups,
        options.organisation_selector.clone(),
        health.caches_synced.clone(),
    ));

    let controllers = run_controllers(shared, health.clone(), &options);
    let outcome = tokio::select! {
        () = controllers => Ok(()),
        () = elector.hold() => Err(RunError::LostLeadership),
        () = shutdown_signal() => Ok(()),
    };
    metrics.leader.set(0);
    if outcome.is_ok() {
        elector.release().await;
    }
    outcome
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    info!("shutting down");
}

async fn wait_for_crds(client: &Client) -> Result<(), kube::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crd::definitions() {
        let name = crd.name_any();
        info!(crd = %name, "waiting for CRD to be established");
        await_condition(crds.clone(), &name, wait_conditions::is_crd_established())
            .await
            .map_err(|e| kube::Error::Service(Box::new(e)))?;
    }
    Ok(())
}

/// A cache of `K` filtered by `labels`, and the stream of changes that feeds it.
fn reflect<K>(
    api: Api<K>,
    labels: Option<&str>,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if let Some(labels) = labels {
        config = config.labels(labels);
    }
    let stream = watcher(api, config)
        .default_backoff()
        // managedFields are most of an object's size and never read here.
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

async fn run_controllers(shared: Arc<Context>, health: Arc<Health>, options: &Options) {
    let client = shared.client.clone();
    let org_children = labels::managed_selector() + &format!(",!{}", labels::PROJECT);
    let project_children = labels::managed_selector() + &format!(",{}", labels::PROJECT);
    let org_selector = options.organisation_selector.as_deref();

    // Organisation controller.
    let (namespaces, namespace_events) = reflect::<Namespace>(Api::all(client.clone()), Some(&org_children));
    let (quotas, quota_events) = reflect::<ResourceQuota>(Api::all(client.clone()), Some(&org_children));
    let (limit_ranges, limit_range_events) = reflect::<LimitRange>(Api::all(client.clone()), Some(&org_children));
    let (org_policies, org_policy_events) = reflect::<NetworkPolicy>(Api::all(client.clone()), Some(&org_children));
    let organisation_ctx = Arc::new(organisation::OrganisationContext {
        shared: shared.clone(),
        children: organisation::Children {
            namespaces: namespaces.clone(),
            quotas: quotas.clone(),
            limit_ranges: limit_ranges.clone(),
            network_policies: org_policies.clone(),
        },
    });
    let mut org_watch = watcher::Config::default();
    if let Some(selector) = org_selector {
        org_watch = org_watch.labels(selector);
    }
    let controller_config = ControllerConfig::default().concurrency(options.concurrency);
    // Namespaced children of a cluster-scoped owner: `owns` would look the owner up in the
    // child's namespace, so they lead back to their organisation by label instead.
    fn owning_organisation<K: Resource>(child: K) -> Option<ObjectRef<Organisation>> {
        child.meta().labels.as_ref()?.get(labels::ORGANISATION).map(|name| ObjectRef::new(name))
    }
    let organisations = Controller::new(Api::<Organisation>::all(client.clone()), org_watch.clone())
        .with_config(controller_config.clone())
        .owns_stream(namespace_events)
        .watches_stream(quota_events, owning_organisation)
        .watches_stream(limit_range_events, owning_organisation)
        .watches_stream(org_policy_events, owning_organisation);
    let organisation_store = organisations.store();

    // Project controller.
    let (org_cache, org_cache_events) = reflect::<Organisation>(Api::all(client.clone()), org_selector);
    let (service_accounts, sa_events) = reflect::<ServiceAccount>(Api::all(client.clone()), Some(&project_children));
    let (claims, claim_events) = reflect::<PersistentVolumeClaim>(Api::all(client.clone()), Some(&project_children));
    let (stateful_sets, sts_events) = reflect::<StatefulSet>(Api::all(client.clone()), Some(&project_children));
    let (services, service_events) = reflect::<Service>(Api::all(client.clone()), Some(&project_children));
    let (policies, policy_events) = reflect::<NetworkPolicy>(Api::all(client.clone()), Some(&project_children));
    let (secrets, secret_events) = reflect::<Secret>(Api::all(client.clone()), Some(&project_children));
    let (leases, lease_events) = reflect::<Lease>(Api::all(client.clone()), Some(&project_children));
    let (pods, pod_events) = reflect::<Pod>(Api::all(client.clone()), Some(&project_children));
    let project_ctx = Arc::new(project::ProjectContext {
        shared: shared.clone(),
        children: project::Children {
            organisations: org_cache.clone(),
            service_accounts: service_accounts.clone(),
            claims: claims.clone(),
            stateful_sets: stateful_sets.clone(),
            services: services.clone(),
            network_policies: policies.clone(),
            secrets: secrets.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
        },
    });
    let projects =
        Controller::new(Api::<Project>::all(client.clone()), watcher::Config::default()).with_config(controller_config);
    let project_store = projects.store();
    let projects_of_org = project_store.clone();
    let projects = projects
        .owns_stream(sa_events)
        .owns_stream(claim_events)
        .owns_stream(sts_events)
        .owns_stream(service_events)
        .owns_stream(policy_events)
        .owns_stream(secret_events)
        .owns_stream(lease_events)
        // Pods belong to the StatefulSet; their project label leads back to the project.
        .watches_stream(pod_events, |pod: Pod| {
            let project = pod.labels().get(labels::PROJECT)?.clone();
            Some(ObjectRef::<Project>::new(&project).within(&pod.namespace()?))
        })
        // A project waits for its organisation: re-check every project of an organisation that changes.
        .watches_stream(org_cache_events, move |org: Organisation| {
            let namespace = labels::organisation_namespace(&org.name_any());
            projects_of_org
                .state()
                .into_iter()
                .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        });
    let _ = health.projects.set(project_store.clone());

    // Ready once every cache has its initial list.
    let caches: Vec<(&'static str, BoxFuture<'static, ()>)> = vec![
        ("Organisation", cache_ready(organisation_store.clone())),
        ("Namespace", cache_ready(namespaces.clone())),
        ("ResourceQuota", cache_ready(quotas.clone())),
        ("LimitRange", cache_ready(limit_ranges.clone())),
        ("NetworkPolicy (organisation)", cache_ready(org_policies.clone())),
        ("Organisation (projects)", cache_ready(org_cache.clone())),
        ("Project", cache_ready(project_store.clone())),
        ("ServiceAccount", cache_ready(service_accounts.clone())),
        ("PersistentVolumeClaim", cache_ready(claims.clone())),
        ("StatefulSet", cache_ready(stateful_sets.clone())),
        ("Service", cache_ready(services.clone())),
        ("NetworkPolicy (project)", cache_ready(policies.clone())),
        ("Secret", cache_ready(secrets.clone())),
        ("Lease", cache_ready(leases.clone())),
        ("Pod", cache_ready(pods.clone())),
    ];
    let synced_flag = health.caches_synced.clone();
    let pending: Arc<std::sync::Mutex<Vec<&'static str>>> =
        Arc::new(std::sync::Mutex::new(caches.iter().map(|(k, _)| *k).collect()));
    let watchdog = pending.clone();
    tokio::spawn(async move {
        futures::future::join_all(caches.into_iter().map(|(kind, ready)| {
            let pending = pending.clone();
            async move {
                ready.await;
                pending.lock().expect("pending caches lock").retain(|k| *k != kind);
                debug!(kind, "cache synced");
            }
        }))
        .await;
        synced_flag.store(true, Ordering::Release);
        info!("all caches synced");
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let waiting = watchdog.lock().expect("pending caches lock").clone();
            if waiting.is_empty() {
                break;
            }
            warn!(?waiting, "caches still waiting for their initial list");
        }
    });

    let organisations = organisations
        .run(organisation::reconcile, organisation::error_policy, organisation_ctx)
        .for_each(|result| async move { log_outcome(organisation::CONTROLLER, result) });
    let projects = projects
        .run(project::reconcile, project::error_policy, project_ctx)
        .for_each(|result| async move { log_outcome(project::CONTROLLER, result) });
    tokio::join!(organisations, projects);
}

fn cache_ready<K>(store: Store<K>) -> BoxFuture<'static, ()>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    async move {
        // An error means the writer is gone: the controller has stopped, and so will we.
        let _ = store.wait_until_ready().await;
    }
    .boxed()
}

fn log_outcome<K: Resource, E: std::error::Error, Q: std::error::Error>(
    controller: &str,
    result: Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, Q>>,
) {
    use kube::runtime::controller::Error as ControllerError;
    match result {
        // Already counted and logged by error_action.
        Ok(_) | Err(ControllerError::ReconcilerFailed(..)) => {}
        // A child or related object of something this operator does not manage (another
        // operator's organisation, or an object deleted meanwhile).
        Err(error @ ControllerError::ObjectNotFound(..)) => debug!(controller, %error, "nothing to reconcile"),
        Err(error) => warn!(controller, %error, "controller"),
    }
}

/// What to do after a failed reconcile: count it, then wait for a change (invalid objects) or
/// retry with exponential backoff (everything else).
/// Retry interval for objects that arrive before the caches have synced.
pub(crate) const UNTIL_SYNCED: Duration = Duration::from_millis(500);

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
