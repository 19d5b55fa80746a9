//! The Project controller: an isolated, residency-pinned environment that hibernates when idle,
//! wakes on activity, stops on request, and cleans up after itself.

pub mod build;
pub mod lifecycle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodSpec, PodStatus, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument};

use crate::crd::conditions::{self, Progress};
use crate::crd::names::{
    FINALIZER, LAST_SIGNAL, LOADER_CONTAINER, TOKEN_KEY, TOKEN_STATE, TokenState, WORKSPACE_SEEDED,
    activity_lease_name, ai_secret_name, object_ref, organisation_of_namespace, pod_name, preview_secret_name,
    project_host, project_labels, publish_secret_name, workspace_name,
};
use crate::crd::{DesiredState, IdleStatus, Organisation, Phase, Project, ProjectStatus, WakeStatus};
use crate::operator::apply::{FIELD_MANAGER, apply_child, apply_status, in_namespace};
use crate::operator::context::Context;
use crate::operator::error::{During, Error, Result};
use crate::watch::Compact;

pub const CONTROLLER: &str = "project";

/// Caches of everything a project's reconcile reads.
pub struct Children {
    pub organisations: Store<Organisation>,
    pub service_accounts: Compact<ServiceAccount>,
    pub claims: Compact<PersistentVolumeClaim>,
    pub stateful_sets: Compact<StatefulSet>,
    pub services: Compact<Service>,
    pub network_policies: Compact<NetworkPolicy>,
    pub secrets: Compact<Secret>,
    pub leases: Compact<Lease>,
    pub pods: Compact<Pod>,
}

pub struct ProjectContext {
    pub shared: Arc<Context>,
    pub children: Children,
}

fn key(project: &Project) -> String {
    format!("{}/{}", project.namespace().unwrap_or_default(), project.name_any())
}

#[instrument(skip_all, fields(project = %key(&project)))]
pub async fn reconcile(project: Arc<Project>, ctx: Arc<ProjectContext>) -> Result<Action> {
    if !ctx.shared.caches_synced() {
        return Ok(Action::requeue(super::UNTIL_SYNCED));
    }
    let started = Instant::now();
    let namespace = project.namespace().unwrap_or_default();
    let organisation =
        organisation_of_namespace(&namespace).and_then(|name| ctx.children.organisations.get(&ObjectRef::new(name)));
    // Another operator instance manages the organisations outside our selector.
    if ctx.shared.organisation_selector.is_some() && organisation.is_none() {
        debug!("no organisation of this operator's for the namespace (or none cached yet); waiting for a change");
        return Ok(Action::await_change());
    }
    let finalized = project.finalizers().iter().any(|f| f == FINALIZER);
    let result = match (project.metadata.deletion_timestamp.is_some(), finalized) {
        (false, _) => apply_project(&project, organisation.as_deref(), &ctx).await,
        (true, true) => cleanup(&project, &ctx).await,
        // Nothing of it outside the cluster: its children go with it, by their owner references.
        (true, false) => Ok(Action::await_change()),
    };
    ctx.shared.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.shared.record_success(&key(&project));
    }
    result
}

pub fn error_policy(project: Arc<Project>, error: &Error, ctx: Arc<ProjectContext>) -> Action {
    super::error_action(CONTROLLER, &key(&project), error, &ctx.shared)
}

/// Why a project cannot be provisioned, as a (reason, message) for its conditions.
fn blocker(project: &Project, organisation: Option<&Organisation>) -> Option<(&'static str, String)> {
    let namespace = project.namespace().unwrap_or_default();
    let Some(org) = organisation else {
        return Some((
            "NotInOrganisationNamespace",
            format!("namespace {namespace} is not the namespace of an existing organisation (org-<organisation>)"),
        ));
    };
    let org_name = org.name_any();
    let status = org.status.as_ref();
    if status.and_then(|s| s.namespace.as_deref()) != Some(namespace.as_str())
        || !status.is_some_and(|s| conditions::is_true(&s.conditions, "Ready"))
    {
        return Some(("OrganisationNotReady", format!("organisation {org_name} is not Ready")));
    }
    None
}

/// Everything but deletion, as named steps: observe (reads), plan (pure), build (pure), apply
/// (writes), then the status (pure) and its write.
async fn apply_project(project: &Project, organisation: Option<&Organisation>, ctx: &ProjectContext) -> Result<Action> {
    let shared = &ctx.shared;
    let now = Timestamp::now();
    let old = current_status(project, shared);
    // The organisation is going, and its namespace with it: nothing may be created there any
    // more, and the project's own deletion (and finalizer) follows.
    if organisation.is_some_and(|org| org.metadata.deletion_timestamp.is_some()) {
        return Ok(Action::await_change());
    }
    if let Some((reason, message)) = blocker(project, organisation) {
        write_status(project, &old, stuck(&old, project, Phase::Pending, reason, &message, now), shared).await?;
        return Ok(Action::await_change());
    }
    let org = organisation.expect("no blocker means an organisation");
    let org_name = org.name_any();
    let Some(jurisdiction) = shared.config.jurisdictions.get(&org.spec.jurisdiction) else {
        let message = format!("jurisdiction {} is not configured", org.spec.jurisdiction);
        return fail(project, &old, "JurisdictionNotConfigured", message, now, shared).await;
    };
    let idle_timeout = match shared.config.idle_timeout(project) {
        Ok(timeout) => timeout,
        Err(error) => return fail(project, &old, "InvalidIdleTimeout", error.to_string(), now, shared).await,
    };

    let observed = observe(project, &org_name, jurisdiction.ai.is_some(), ctx, now).await?;
    let plan = match plan(project, &old, &observed, idle_timeout, now, new_token) {
        Ok(plan) => plan,
        Err(message) => return fail(project, &old, "UnreadableToken", message, now, shared).await,
    };
    if plan.decision.renew_activity {
        let leases: Api<Lease> = Api::namespaced(shared.client.clone(), &project.namespace().unwrap_or_default());
        renew_activity(&leases, &activity_lease_name(&project.name_any()), "start", now, shared).await?;
    }
    let desired = build::desired(&build::Inputs {
        project,
        organisation: &org_name,
        jurisdiction,
        config: &shared.config,
        replicas: plan.decision.replicas,
        token: &plan.token,
        token_state: plan.token_state,
        publish_token: &plan.publish_token,
        ai_token: &plan.ai_token,
        workspace_seeded: observed.workspace_seeded,
        load_workspace: load_workspace(
            observed.workspace_seeded,
            plan.decision.replicas,
            observed.ready_pod_ran_loader,
            &observed.children,
        ),
    });
    apply_children(project, &desired, &observed, shared).await?;
    if plan.rotate {
        info!("preview and AI tokens rotated: the project is stopped");
    }

    let status = project_status(
        &old,
        project,
        &plan,
        &project_host(&project.name_any(), &org_name, &shared.config.preview_domain),
        idle_timeout,
        now,
    );
    write_status(project, &old, status, shared).await?;
    Ok(match plan.decision.recheck_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Whether pods start with the loader. Once the workspace is seeded they do not (a wake is then
/// one container start shorter: about a second under gVisor), but a running pod is never
/// restarted just to drop it: the template loses the loader when the project scales to zero.
/// What runs is read from the pod as well as the StatefulSet: a StatefulSet this process has
/// just created may not be in its cache yet while its pod already is, Ready (seen after an
/// operator restart on a loaded machine: the template lost the loader and the pod restarted).
fn load_workspace(workspace_seeded: bool, replicas: i32, ready_pod_ran_loader: bool, live: &LiveChildren) -> bool {
    let template_has_loader = live
        .stateful_set
        .as_ref()
        .and_then(|set| set.spec.as_ref()?.template.spec.as_ref()?.init_containers.as_ref())
        .is_some_and(|init| init.iter().any(|c| c.name == LOADER_CONTAINER));
    let running_with_loader = replicas > 0 && (ready_pod_ran_loader || template_has_loader);
    !workspace_seeded || running_with_loader
}

/// What a reconcile reads: the activity Lease (created if missing, so the gateway has one to
/// renew), the pod's readiness, the tokens, and the live children.
struct Observed {
    last_activity: Timestamp,
    last_signal: Option<String>,
    pod_ready: bool,
    ready_since: Option<Timestamp>,
    /// See [`lifecycle::Facts::set_caught_up`].
    set_caught_up: bool,
    /// The workspace claim is annotated as seeded, or a Ready pod ran the loader on it.
    workspace_seeded: bool,
    /// The project's pod is Ready (and not being deleted) and was started with the loader.
    ready_pod_ran_loader: bool,
    preview_token: StoppableToken,
    publish_token: Option<Vec<u8>>,
    ai_token: StoppableToken,
    children: LiveChildren,
}

/// A token that is replaced when its project stops: its value, and the desired state it was
/// issued for (the Secret's annotation).
#[derive(Default)]
struct StoppableToken {
    value: Option<Vec<u8>>,
    issued_for: Option<TokenState>,
}

impl StoppableToken {
    fn of(secret: Option<&Secret>) -> Self {
        Self {
            value: secret.and_then(|s| s.data.as_ref()?.get(TOKEN_KEY)).map(|t| t.0.clone()),
            issued_for: secret
                .map(|s| TokenState::from_annotation(s.annotations().get(TOKEN_STATE).map(String::as_str))),
        }
    }
}

/// The project's children as the caches hold them, for skipping writes that change nothing.
#[derive(Default)]
struct LiveChildren {
    service_account: Option<Arc<ServiceAccount>>,
    preview_secret: Option<Arc<Secret>>,
    publish_secret: Option<Arc<Secret>>,
    ai_secret: Option<Arc<Secret>>,
    workspace: Option<Arc<PersistentVolumeClaim>>,
    network_policy: Option<Arc<NetworkPolicy>>,
    service: Option<Arc<Service>>,
    stateful_set: Option<Arc<StatefulSet>>,
}

async fn observe(
    project: &Project,
    org_name: &str,
    relay: bool,
    ctx: &ProjectContext,
    now: Timestamp,
) -> Result<Observed> {
    let caches = &ctx.children;
    let name = project.name_any();
    let namespace = project.namespace().unwrap_or_default();
    let lease = match caches.leases.get(&object_ref(&namespace, activity_lease_name(&name))) {
        Some(lease) => (*lease).clone(),
        None => {
            let leases: Api<Lease> = Api::namespaced(ctx.shared.client.clone(), &namespace);
            create_activity_lease(project, org_name, &leases, now, &ctx.shared).await?
        }
    };
    let pod = caches.pods.get(&object_ref(&namespace, pod_name(&name)));
    let ready = pod.as_ref().and_then(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
        pod.metadata.deletion_timestamp.is_none().then(|| ready.last_transition_time.as_ref().map(|t| t.0))
    });
    let workspace = caches.claims.get(&object_ref(&namespace, workspace_name(&name)));
    // Init containers run to success before a pod can be Ready: a Ready pod with the loader seeded
    // the claim it mounts (or found it already holding something).
    let ready_pod_ran_loader = ready.is_some()
        && pod
            .as_ref()
            .and_then(|p| p.spec.as_ref()?.init_containers.as_ref())
            .is_some_and(|init| init.iter().any(|c| c.name == LOADER_CONTAINER));
    let workspace_seeded = workspace.as_ref().is_some_and(|claim| {
        ready_pod_ran_loader || claim.annotations().get(WORKSPACE_SEEDED).is_some_and(|v| v == "true")
    });
    let preview_secret = token_secret(ctx, &namespace, preview_secret_name(&name));
    let publish_secret = token_secret(ctx, &namespace, publish_secret_name(&name));
    // Without a relay there is no AI token to keep: a Secret left from one is only deleted.
    let ai_secret = match relay {
        true => token_secret(ctx, &namespace, ai_secret_name(&name)),
        false => caches.secrets.get(&object_ref(&namespace, ai_secret_name(&name))),
    };
    let stateful_set = caches.stateful_sets.get(&object_ref(&namespace, name.clone()));
    let set_caught_up = stateful_set.as_deref().is_some_and(|set| {
        let running = set.spec.as_ref().is_some_and(|spec| spec.replicas.unwrap_or(1) > 0);
        let observed = set.status.as_ref().and_then(|status| status.observed_generation);
        running
            && observed.is_some_and(|observed| Some(observed) >= set.metadata.generation)
            && ctx.shared.applied.shows_last_apply(set)
    });
    Ok(Observed {
        last_activity: lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map_or(now, |t| t.0),
        last_signal: lease.annotations().get(LAST_SIGNAL).cloned(),
        pod_ready: ready.is_some(),
        ready_since: ready.flatten(),
        set_caught_up,
        workspace_seeded,
        ready_pod_ran_loader,
        preview_token: StoppableToken::of(preview_secret.as_deref()),
        publish_token: StoppableToken::of(publish_secret.as_deref()).value,
        ai_token: StoppableToken::of(ai_secret.as_deref()),
        children: LiveChildren {
            service_account: caches.service_accounts.get(&object_ref(&namespace, name.clone())),
            preview_secret,
            publish_secret,
            ai_secret,
            workspace,
            network_policy: caches.network_policies.get(&object_ref(&namespace, name.clone())),
            service: caches.services.get(&object_ref(&namespace, name.clone())),
            stateful_set,
        },
    })
}

/// Cuts a pod down to what [`observe`] reads of it (its name and labels, whether it is terminating,
/// its init containers' names and its Ready condition) before it is cached: the pod is by far the
/// largest of a project's objects, and written by others many times over.
pub fn pod_as_read(pod: &mut Pod) {
    let init_containers = pod.spec.as_ref().and_then(|spec| spec.init_containers.as_ref()).map(|init| {
        init.iter().map(|container| Container { name: container.name.clone(), ..Container::default() }).collect()
    });
    pod.spec = Some(PodSpec { init_containers, ..PodSpec::default() });
    let ready = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .map(|conditions| conditions.iter().filter(|c| c.type_ == "Ready").cloned().collect());
    pod.status = Some(PodStatus { conditions: ready, ..PodStatus::default() });
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
}

/// Cuts a StatefulSet's status down to its observed generation: its pod says whether the project
/// is Ready, and the generation whether the controller has acted on the last apply.
pub fn set_as_read(set: &mut StatefulSet) {
    let observed_generation = set.status.as_ref().and_then(|status| status.observed_generation);
    set.status = Some(StatefulSetStatus { observed_generation, ..StatefulSetStatus::default() });
}

/// A token Secret as last written: the cache may not have delivered yet what the last reconcile
/// wrote (see [`WrittenTokens`](crate::operator::context::WrittenTokens)).
fn token_secret(ctx: &ProjectContext, namespace: &str, name: String) -> Option<Arc<Secret>> {
    let cached = ctx.children.secrets.get(&object_ref(namespace, name.clone()));
    ctx.shared.written_tokens.get(namespace, &name, cached)
}

/// What this reconcile decided: run, hibernate, wake or stop, and the tokens to keep or issue.
#[derive(Debug)]
struct Plan {
    decision: lifecycle::Decision,
    /// The activity the status reports: now, if the Lease is renewed as part of the plan.
    last_activity: Timestamp,
    last_signal: Option<String>,
    token: String,
    token_state: TokenState,
    /// The preview token is replaced: the project was just stopped.
    rotate: bool,
    publish_token: String,
    ai_token: String,
}

/// Decides, from what was observed. Pure: `fresh` makes new tokens. The preview and AI tokens
/// are kept while the project runs and replaced the moment it stops; the publish token is made
/// once.
fn plan(
    project: &Project,
    old: &ProjectStatus,
    observed: &Observed,
    idle_timeout: std::time::Duration,
    now: Timestamp,
    mut fresh: impl FnMut() -> String,
) -> Result<Plan, String> {
    let decision = lifecycle::decide(&lifecycle::Facts {
        desired: project.spec.lifecycle.state,
        previous_phase: old.phase,
        last_activity: observed.last_activity,
        idle_timeout,
        pod_ready: observed.pod_ready,
        ready_since: observed.ready_since,
        hibernation_changed: old.conditions.iter().find(|c| c.type_ == "Hibernated").map(|c| c.last_transition_time.0),
        set_caught_up: observed.set_caught_up,
        now,
    });
    let (last_activity, last_signal) = match decision.renew_activity {
        true => (now, Some("start".to_owned())),
        false => (observed.last_activity, observed.last_signal.clone()),
    };
    let token_state =
        if project.spec.lifecycle.state == DesiredState::Stopped { TokenState::Stopped } else { TokenState::Running };
    let kept = |token: &Option<Vec<u8>>, what: &str| {
        token.clone().map(|t| String::from_utf8(t).map_err(|_| format!("the {what} token is not UTF-8"))).transpose()
    };
    let mut stoppable = |token: &StoppableToken, what: &str| -> Result<(String, bool), String> {
        let rotate = token_state == TokenState::Stopped && token.issued_for != Some(TokenState::Stopped);
        Ok(match kept(&token.value, what)? {
            Some(token) if !rotate => (token, false),
            _ => (fresh(), rotate),
        })
    };
    let (token, rotate) = stoppable(&observed.preview_token, "preview")?;
    let (ai_token, _) = stoppable(&observed.ai_token, "AI")?;
    let publish_token = kept(&observed.publish_token, "publish")?.unwrap_or_else(&mut fresh);
    Ok(Plan { decision, last_activity, last_signal, token, token_state, rotate, publish_token, ai_token })
}

/// Applies every desired child (skipping those already as desired), and deletes the Service
/// when the project has no ports any more, and the AI token where the jurisdiction has no relay.
async fn apply_children(project: &Project, desired: &build::Desired, observed: &Observed, ctx: &Context) -> Result<()> {
    let namespace = project.namespace().unwrap_or_default();
    let live = &observed.children;
    apply_child(ctx, &in_namespace(ctx, &namespace), &desired.service_account, live.service_account.as_deref()).await?;
    for (token, live) in [
        (Some(&desired.preview_secret), &live.preview_secret),
        (Some(&desired.publish_secret), &live.publish_secret),
        (desired.ai_secret.as_ref(), &live.ai_secret),
    ] {
        if apply_or_remove(project, ctx, token, live.as_deref()).await?
            && let Some(token) = token
        {
            ctx.written_tokens.remember(token);
        }
    }
    apply_child(ctx, &in_namespace(ctx, &namespace), &desired.workspace, live.workspace.as_deref()).await?;
    apply_child(ctx, &in_namespace(ctx, &namespace), &desired.network_policy, live.network_policy.as_deref()).await?;
    apply_or_remove(project, ctx, desired.service.as_ref(), live.service.as_deref()).await?;
    apply_child(ctx, &in_namespace(ctx, &namespace), &desired.stateful_set, live.stateful_set.as_deref()).await?;
    Ok(())
}

/// Applies a child the project may or may not have: `desired`, or else deletes the `live` one
/// if this project controls it. Returns whether it wrote.
async fn apply_or_remove<K>(project: &Project, ctx: &Context, desired: Option<&K>, live: Option<&K>) -> Result<bool>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let namespace = project.namespace().unwrap_or_default();
    match (desired, live) {
        (Some(desired), live) => apply_child(ctx, &in_namespace(ctx, &namespace), desired, live).await,
        (None, Some(live)) if is_controlled_by(live.meta(), project) => {
            let name = live.name_any();
            let kind = <K as k8s_openapi::Resource>::KIND;
            in_namespace::<K>(ctx, &namespace)
                .delete(&name, &DeleteParams::background())
                .await
                .during(|| format!("deleting {kind} {namespace}/{name}"))?;
            ctx.metrics.wrote(kind);
            Ok(true)
        }
        (None, _) => Ok(false),
    }
}

/// The status after this reconcile. Pure.
fn project_status(
    old: &ProjectStatus,
    project: &Project,
    plan: &Plan,
    preview_host: &str,
    idle_timeout: std::time::Duration,
    now: Timestamp,
) -> ProjectStatus {
    let generation = project.metadata.generation;
    let time = Time(now);
    let mut status = ProjectStatus { observed_generation: generation, ..old.clone() };
    let phase = plan.decision.phase;
    status.phase = Some(phase);
    status.preview_host = Some(preview_host.to_owned());
    status.last_activity = Some(Time(truncate_to_seconds(plan.last_activity)));
    status.idle = Some(IdleStatus {
        since: Some(Time(truncate_to_seconds(plan.last_activity))),
        last_signal: plan.last_signal.clone(),
    });
    if let Some(took) = plan.decision.completed_wake {
        status.last_wake = Some(WakeStatus { completed_at: time.clone(), milliseconds: took.as_millis() as i64 });
    }
    let (ready, reason, message) = readiness(phase, idle_timeout);
    let conditions = &mut status.conditions;
    let provisioned = "all of the project's objects are in place";
    conditions::set(conditions, "Provisioned", true, "ChildrenApplied", provisioned, generation, &time);
    conditions::set(conditions, "Ready", ready, reason, &message, generation, &time);
    let progress = match ready {
        true => Progress::Settled,
        false => Progress::Reconciling { reason, message: &message },
    };
    conditions::set_progress(conditions, progress, generation, &time);
    let hibernated = phase == Phase::Hibernated;
    let (reason, message) = match hibernated {
        true => ("Idle", "scaled to zero; the workspace volume is kept"),
        false => ("Active", ""),
    };
    conditions::set(conditions, "Hibernated", hibernated, reason, message, generation, &time);
    status
}

/// The `Ready` condition of a provisioned project in `phase`: (status, reason, message). Ready is
/// True once the project is as its spec asks: serving, hibernated (it wakes on the next request)
/// or stopped on request. So GitOps tools, which read Ready as "reconciled" (kstatus, Flux), do
/// not take a project that sleeps as asked for one that is still on its way; the phase (and the
/// `Hibernated` condition) says whether it serves right now.
fn readiness(phase: Phase, idle_timeout: std::time::Duration) -> (bool, &'static str, String) {
    match phase {
        Phase::Running => (true, "Running", "the environment is ready".to_owned()),
        Phase::Provisioning => (false, "Provisioning", "waiting for the environment's pod to become ready".to_owned()),
        Phase::Waking => (false, "Waking", "woken by activity; waiting for the pod to become ready".to_owned()),
        Phase::Hibernated => {
            (true, "Hibernated", format!("no activity for {}; wakes on the next request", humanize(idle_timeout)))
        }
        Phase::Stopped => (true, "Stopped", "stopped on request; start it to use it again".to_owned()),
        other => (false, other.as_str(), String::new()),
    }
}

/// The status of a project that cannot go on: `phase`, with `Ready=False` saying why.
fn stuck(
    old: &ProjectStatus,
    project: &Project,
    phase: Phase,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ProjectStatus {
    let generation = project.metadata.generation;
    let mut status = ProjectStatus { observed_generation: generation, phase: Some(phase), ..old.clone() };
    let time = Time(now);
    conditions::set(&mut status.conditions, "Ready", false, reason, message, generation, &time);
    // Failed, or in no organisation's namespace: nothing changes until someone changes something.
    // Pending on its organisation: that comes on its own.
    let progress = match phase == Phase::Failed || reason == "NotInOrganisationNamespace" {
        true => Progress::Stalled { reason, message },
        false => Progress::Reconciling { reason, message },
    };
    conditions::set_progress(&mut status.conditions, progress, generation, &time);
    status
}

/// Records that the project cannot be provisioned as it is (`Failed`, and why), and waits for it
/// or the configuration to change.
async fn fail(
    project: &Project,
    old: &ProjectStatus,
    reason: &str,
    message: String,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action> {
    write_status(project, old, stuck(old, project, Phase::Failed, reason, &message, now), ctx).await?;
    Err(Error::Invalid(message))
}

/// The project's status as this operator last knew it: what it last wrote (a reconcile may run
/// on a cached object that has not caught up with that write yet, and must not decide from an
/// older phase), with `published`, which the gateway writes, from the object.
fn current_status(project: &Project, ctx: &Context) -> ProjectStatus {
    let cached = project.status.clone().unwrap_or_default();
    let uid = project.metadata.uid.as_deref().unwrap_or_default();
    let as_written = ProjectStatus { published: None, ..cached.clone() };
    match ctx.written_status.ahead_of_cache(uid, &as_written) {
        Some(written) => ProjectStatus { published: cached.published, ..written },
        None => cached,
    }
}

/// Writes the operator's part of a project's status if it changed, and tells users about phase
/// changes with an Event (and a completed wake with its metric). `published` is left out: it is the
/// gateway's (its own field manager), and writing back a cached copy could undo a publish.
async fn write_status(project: &Project, old: &ProjectStatus, status: ProjectStatus, ctx: &Context) -> Result<()> {
    let api: Api<Project> = Api::namespaced(ctx.client.clone(), &project.namespace().unwrap_or_default());
    let old = ProjectStatus { published: None, ..old.clone() };
    let status = ProjectStatus { published: None, ..status };
    if !apply_status(ctx, &api, project, &old, &status, "ProjectStatus").await? {
        return Ok(());
    }
    // Measured as soon as it is on record, before the Event (one more round trip) goes out.
    if status.last_wake != old.last_wake
        && let Some(wake) = &status.last_wake
    {
        ctx.metrics.woke(std::time::Duration::from_millis(wake.milliseconds.max(0) as u64));
    }
    if status.phase != old.phase
        && !is_first_start(old.phase, status.phase)
        && let Some(phase) = status.phase
    {
        info!(phase = phase.as_str(), "project phase changed");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let note =
            ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| phase.as_str().to_owned());
        let warning = phase == Phase::Pending || phase == Phase::Failed;
        ctx.event(&project.object_ref(&()), warning, phase.as_str(), "Reconcile", note).await;
    }
    Ok(())
}

/// A new project's first phase, and its pod becoming ready after provisioning: what creating (or
/// starting) it means, told by its phase and its Ready condition's transition time. An Event for
/// these would add a write per project and nothing else; Events are for the changes that follow
/// (hibernating, waking, stopping, failing).
fn is_first_start(old: Option<Phase>, new: Option<Phase>) -> bool {
    matches!((old, new), (None, Some(Phase::Provisioning)) | (Some(Phase::Provisioning), Some(Phase::Running)))
}

/// Removes the finalizer once its cleanup is done. Unguarded by resourceVersion (the cleanup has
/// just written the status): a project being deleted can lose finalizers but gain none, so the
/// list written back cannot restore one that someone else removed meanwhile. A project already
/// gone (a reconcile queued from a cache that had not seen it go) is done too.
async fn remove_finalizer(project: &Project, ctx: &Context) -> Result<()> {
    let namespace = project.namespace().unwrap_or_default();
    let finalizers: Vec<&String> = project.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({ "metadata": { "finalizers": finalizers } });
    match Api::<Project>::namespaced(ctx.client.clone(), &namespace)
        .patch(&project.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            ctx.metrics.wrote("Project");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Api { action: format!("removing the finalizer of {}", key(project)), source }),
    }
}

async fn cleanup(project: &Project, ctx: &ProjectContext) -> Result<Action> {
    let shared = &ctx.shared;
    let old = current_status(project, shared);
    let mut deleting = old.clone();
    deleting.phase = Some(Phase::Deleting);
    write_status(project, &old, deleting.clone(), shared).await?;
    let namespace = project.namespace().unwrap_or_default();
    let organisation = organisation_of_namespace(&namespace).unwrap_or_default();
    for cleanup in &shared.cleanups {
        if let Err(source) = cleanup.purge(organisation, project).await {
            // Say why the deletion waits, on the object people are looking at.
            let mut blocked = deleting.clone();
            let message = format!("{}: {source}; retrying", cleanup.name());
            let now = Time(Timestamp::now());
            let generation = project.metadata.generation;
            conditions::set(
                &mut blocked.conditions,
                "CleanupBlocked",
                true,
                "ExternalCleanupFailed",
                message,
                generation,
                &now,
            );
            write_status(project, &deleting, blocked, shared).await?;
            return Err(Error::Cleanup { cleanup: cleanup.name(), source });
        }
    }
    shared.written_status.forget(project.metadata.uid.as_deref().unwrap_or_default());
    remove_finalizer(project, shared).await?;
    Ok(Action::await_change())
}

async fn create_activity_lease(
    project: &Project,
    organisation: &str,
    leases: &Api<Lease>,
    now: Timestamp,
    ctx: &Context,
) -> Result<Lease> {
    let name = project.name_any();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(activity_lease_name(&name)),
            labels: Some(project_labels(organisation, &name)),
            annotations: Some(BTreeMap::from([(LAST_SIGNAL.to_owned(), "created".to_owned())])),
            owner_references: Some(vec![project.controller_owner_ref(&()).expect("project has a uid")]),
            ..Default::default()
        },
        spec: Some(LeaseSpec { renew_time: Some(MicroTime(now)), ..Default::default() }),
    };
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match leases.create(&params, &lease).await {
        Ok(created) => {
            ctx.metrics.wrote("Lease");
            Ok(created)
        }
        // Created since our cache last looked: use it.
        Err(kube::Error::Api(status)) if status.code == 409 => leases
            .get(&activity_lease_name(&name))
            .await
            .during(|| format!("reading Lease {}", activity_lease_name(&name))),
        Err(source) => Err(Error::Api { action: format!("creating Lease {}", activity_lease_name(&name)), source }),
    }
}

async fn renew_activity(leases: &Api<Lease>, name: &str, signal: &str, now: Timestamp, ctx: &Context) -> Result<()> {
    let patch = json!({
        "metadata": { "annotations": { LAST_SIGNAL: signal } },
        "spec": { "renewTime": MicroTime(now) },
    });
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .during(|| format!("renewing Lease {name}"))?;
    ctx.metrics.wrote("Lease");
    Ok(())
}

fn is_controlled_by(meta: &ObjectMeta, project: &Project) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == project.metadata.uid.as_ref())
}

/// 256 random bits from the operating system, base64url without padding.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Status times are whole seconds on the wire; comparing like with like keeps status stable.
fn truncate_to_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).expect("a valid timestamp stays valid")
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn project(namespace: &str) -> Project {
        serde_json::from_value(json!({ "metadata": { "name": "shop", "namespace": namespace }, "spec": {} })).unwrap()
    }

    fn organisation(namespace: Option<&str>, ready: &str) -> Organisation {
        serde_json::from_value(json!({
            "metadata": { "name": "acme" },
            "spec": { "jurisdiction": "eu" },
            "status": {
                "namespace": namespace,
                "conditions": [{ "type": "Ready", "status": ready, "reason": "R", "message": "",
                                 "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_project_outside_an_organisation_namespace_is_blocked_with_a_reason() {
        let (reason, message) = blocker(&project("default"), None).expect("blocked");
        assert_eq!(reason, "NotInOrganisationNamespace");
        assert!(message.contains("default"), "{message}");
    }

    #[test]
    fn a_project_waits_for_its_organisation_to_be_ready() {
        let (reason, _) =
            blocker(&project("org-acme"), Some(&organisation(Some("org-acme"), "False"))).expect("blocked");
        assert_eq!(reason, "OrganisationNotReady");
        let (reason, _) = blocker(&project("org-acme"), Some(&organisation(None, "True"))).expect("blocked");
        assert_eq!(reason, "OrganisationNotReady");
        assert_eq!(blocker(&project("org-acme"), Some(&organisation(Some("org-acme"), "True"))), None);
    }

    #[test]
    fn events_tell_what_happens_to_a_project_after_it_first_runs() {
        use Phase::*;
        assert!(is_first_start(None, Some(Provisioning)));
        assert!(is_first_start(Some(Provisioning), Some(Running)));
        for (old, new) in [
            (Running, Hibernated),
            (Hibernated, Waking),
            (Waking, Running),
            (Running, Stopped),
            (Stopped, Provisioning),
            (Provisioning, Failed),
            (Provisioning, Pending),
        ] {
            assert!(!is_first_start(Some(old), Some(new)), "{old:?} → {new:?} is told");
        }
    }

    fn observed(preview: Option<(&str, TokenState)>, publish: Option<&str>) -> Observed {
        let stoppable = |token: Option<(&str, TokenState)>| StoppableToken {
            value: token.map(|(t, _)| t.as_bytes().to_vec()),
            issued_for: token.map(|(_, state)| state),
        };
        Observed {
            last_activity: Timestamp::from_second(1_000).unwrap(),
            last_signal: Some("http".into()),
            pod_ready: true,
            ready_since: Some(Timestamp::from_second(900).unwrap()),
            set_caught_up: true,
            workspace_seeded: false,
            ready_pod_ran_loader: false,
            preview_token: stoppable(preview),
            publish_token: publish.map(|t| t.as_bytes().to_vec()),
            ai_token: stoppable(preview.map(|(_, state)| ("ai", state))),
            children: LiveChildren::default(),
        }
    }

    fn running(state: DesiredState) -> Project {
        let mut project = project("org-acme");
        project.spec.lifecycle.state = state;
        project
    }

    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn every_phase_has_its_ready_condition() {
        let table = [
            (Phase::Running, true, "Running", "the environment is ready"),
            (Phase::Provisioning, false, "Provisioning", "waiting for the environment's pod to become ready"),
            (Phase::Waking, false, "Waking", "woken by activity; waiting for the pod to become ready"),
            (Phase::Hibernated, true, "Hibernated", "no activity for 15m; wakes on the next request"),
            (Phase::Stopped, true, "Stopped", "stopped on request; start it to use it again"),
            (Phase::Pending, false, "Pending", ""),
            (Phase::Failed, false, "Failed", ""),
            (Phase::Deleting, false, "Deleting", ""),
        ];
        for (phase, ready, reason, message) in table {
            assert_eq!(readiness(phase, 15 * MINUTE), (ready, reason, message.to_owned()), "{phase:?}");
        }
        assert_eq!(
            readiness(Phase::Hibernated, std::time::Duration::from_secs(90)).2,
            "no activity for 90s; wakes on the next request"
        );
    }

    #[test]
    fn a_running_project_keeps_its_tokens_and_a_stopped_one_gets_new_preview_and_ai_tokens_once() {
        let now = Timestamp::from_second(1_030).unwrap();
        let mut minted = 0;
        let mut fresh = || {
            minted += 1;
            format!("fresh-{minted}")
        };
        let kept = observed(Some(("preview", TokenState::Running)), Some("publish"));
        let running_plan = plan_for(DesiredState::Running, &kept, now, &mut fresh);
        assert_eq!(
            (
                running_plan.token.as_str(),
                running_plan.publish_token.as_str(),
                running_plan.ai_token.as_str(),
                running_plan.rotate
            ),
            ("preview", "publish", "ai", false)
        );
        assert_eq!(running_plan.token_state, TokenState::Running);

        let stopping = plan_for(DesiredState::Stopped, &kept, now, &mut fresh);
        assert!(stopping.rotate && stopping.token.starts_with("fresh-") && stopping.publish_token == "publish");
        assert!(stopping.ai_token.starts_with("fresh-") && stopping.ai_token != stopping.token);
        assert_eq!(stopping.token_state, TokenState::Stopped);
        // Already rotated for this stop: kept.
        let stopped = plan_for(
            DesiredState::Stopped,
            &observed(Some(("rotated", TokenState::Stopped)), Some("publish")),
            now,
            &mut fresh,
        );
        assert_eq!((stopped.token.as_str(), stopped.ai_token.as_str(), stopped.rotate), ("rotated", "ai", false));
        // Started again: the tokens issued while stopped are kept.
        let started = plan_for(
            DesiredState::Running,
            &observed(Some(("rotated", TokenState::Stopped)), Some("publish")),
            now,
            &mut fresh,
        );
        assert_eq!((started.token.as_str(), started.ai_token.as_str(), started.rotate), ("rotated", "ai", false));
        // A new project gets both tokens made.
        let new = plan_for(DesiredState::Running, &observed(None, None), now, &mut fresh);
        assert!(
            new.token.starts_with("fresh-")
                && new.publish_token.starts_with("fresh-")
                && new.ai_token.starts_with("fresh-")
                && new.token != new.publish_token
                && new.ai_token != new.token
        );
        // An unreadable token is an invalid object, not a silent replacement.
        let broken = Observed { publish_token: Some(vec![0xff]), ..observed(None, None) };
        assert!(
            plan(&running(DesiredState::Running), &ProjectStatus::default(), &broken, 15 * MINUTE, now, fresh).is_err()
        );
    }

    fn plan_for(state: DesiredState, observed: &Observed, now: Timestamp, fresh: impl FnMut() -> String) -> Plan {
        plan(&running(state), &ProjectStatus::default(), observed, 15 * MINUTE, now, fresh).unwrap()
    }

    #[test]
    fn the_status_reports_the_plan() {
        let now = Timestamp::from_second(1_030).unwrap();
        let plan = plan_for(
            DesiredState::Running,
            &observed(Some(("t", TokenState::Running)), Some("p")),
            now,
            || unreachable!(),
        );
        let status = project_status(
            &ProjectStatus::default(),
            &running(DesiredState::Running),
            &plan,
            "shop--acme.preview",
            15 * MINUTE,
            now,
        );
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(status.preview_host.as_deref(), Some("shop--acme.preview"));
        assert_eq!(status.idle.as_ref().unwrap().last_signal.as_deref(), Some("http"));
        assert!(
            conditions::is_true(&status.conditions, "Ready") && conditions::is_true(&status.conditions, "Provisioned")
        );
        assert!(!conditions::is_true(&status.conditions, "Hibernated"));
        // The same facts later give the same status: nothing to write.
        let later = Timestamp::from_second(1_040).unwrap();
        assert_eq!(
            project_status(&status, &running(DesiredState::Running), &plan, "shop--acme.preview", 15 * MINUTE, later),
            status
        );
    }

    fn with_template(loader: bool) -> LiveChildren {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "spec": {
                "selector": {}, "serviceName": "p",
                "template": { "spec": {
                    "containers": [{ "name": "workspace" }],
                    "initContainers": if loader { serde_json::json!([{ "name": "loader" }]) } else { serde_json::json!([]) },
                } },
            }
        }))
        .unwrap();
        LiveChildren { stateful_set: Some(Arc::new(set)), ..Default::default() }
    }

    #[test]
    fn the_loader_goes_once_the_workspace_is_seeded_but_never_restarts_a_running_pod() {
        // Not seeded yet: always loaded.
        assert!(load_workspace(false, 1, false, &with_template(false)));
        assert!(load_workspace(false, 0, false, &with_template(true)));
        // Seeded while running with it: kept until the project scales to zero…
        assert!(load_workspace(true, 1, true, &with_template(true)));
        assert!(!load_workspace(true, 0, true, &with_template(true)));
        // …and not put back when it wakes.
        assert!(!load_workspace(true, 1, false, &with_template(false)));
    }

    #[test]
    fn a_pod_running_the_loader_keeps_it_while_the_stateful_set_is_not_cached_yet() {
        assert!(load_workspace(true, 1, true, &LiveChildren::default()), "the Ready pod ran it: no restart");
        assert!(!load_workspace(true, 1, false, &LiveChildren::default()), "nothing runs with it");
        assert!(!load_workspace(true, 0, true, &LiveChildren::default()), "scaling to zero drops it");
    }
}
