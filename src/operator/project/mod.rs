//! The Project controller: an isolated, residency-pinned environment that hibernates when idle,
//! wakes on activity, stops on request, and cleans up after itself.

pub mod build;
pub mod lifecycle;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::crd::conditions;
use crate::crd::names::{
    LAST_SIGNAL, TOKEN_KEY, TOKEN_STATE, TokenState, activity_lease_name, object_ref, organisation_of_namespace,
    pod_name, preview_secret_name, project_host, project_labels, publish_secret_name, workspace_name,
};
use crate::crd::{DesiredState, IdleStatus, Organisation, Phase, Project, ProjectStatus, WakeStatus};
use crate::duration;
use crate::operator::apply::{FIELD_MANAGER, apply_child, apply_status, in_namespace};
use crate::operator::context::Context;
use crate::operator::error::{During, Error, Result};
use crate::operator::metrics::phase_name;

pub const CONTROLLER: &str = "project";
pub const FINALIZER: &str = "ooda.run/cleanup";

/// Caches of everything a project's reconcile reads.
pub struct Children {
    pub organisations: Store<Organisation>,
    pub service_accounts: Store<ServiceAccount>,
    pub claims: Store<PersistentVolumeClaim>,
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub network_policies: Store<NetworkPolicy>,
    pub secrets: Store<Secret>,
    pub leases: Store<Lease>,
    pub pods: Store<Pod>,
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
        return Ok(Action::await_change());
    }
    let api: Api<Project> = Api::namespaced(ctx.shared.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, project.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(project) => apply_project(&project, organisation.as_deref(), &ctx).await,
            FinalizerEvent::Cleanup(project) => cleanup(&project, &ctx).await,
        }
    })
    .await
    .or_else(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => Err(e),
        // A reconcile queued from a cache that had not yet seen the project go: the cleanup ran
        // again (it is idempotent) and the finalizer it would remove is gone with the project.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 404 => {
            Ok(Action::await_change())
        }
        other => Err(Error::Finalizer(Box::new(other))),
    });
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

async fn apply_project(project: &Project, organisation: Option<&Organisation>, ctx: &ProjectContext) -> Result<Action> {
    let shared = &ctx.shared;
    let now = Timestamp::now();
    let generation = project.metadata.generation;
    let old = current_status(project, shared);
    let mut status = old.clone();
    status.observed_generation = generation;

    // The organisation is going, and its namespace with it: nothing may be created there any
    // more, and the project's own deletion (and finalizer) follows.
    if organisation.is_some_and(|org| org.metadata.deletion_timestamp.is_some()) {
        return Ok(Action::await_change());
    }
    if let Some((reason, message)) = blocker(project, organisation) {
        let time = Time(now);
        status.phase = Some(Phase::Pending);
        conditions::set(&mut status.conditions, "Ready", false, reason, &message, generation, &time);
        finish(project, &old, status, shared).await?;
        return Ok(Action::await_change());
    }
    let org = organisation.expect("no blocker means an organisation");
    let org_name = org.name_any();
    let Some(jurisdiction) = shared.config.jurisdictions.get(&org.spec.jurisdiction) else {
        return Err(Error::Invalid(format!("jurisdiction {} is not configured", org.spec.jurisdiction)));
    };
    let name = project.name_any();
    let namespace = project.namespace().unwrap_or_default();
    let idle_timeout = match &project.spec.lifecycle.idle_timeout {
        Some(text) => duration::parse(text).map_err(|e| Error::Invalid(e.to_string()))?,
        None => shared.config.default_idle_timeout(),
    };

    // Activity: the Lease the gateway renews. Created once here; never applied again, so the
    // gateway's renewals are the only writes to it.
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), &namespace);
    let lease_name = activity_lease_name(&name);
    let lease = match ctx.children.leases.get(&object_ref(&namespace, &lease_name)) {
        Some(lease) => (*lease).clone(),
        None => create_activity_lease(project, &org_name, &leases, now, shared).await?,
    };
    let lease_spec = lease.spec.clone().unwrap_or_default();
    let last_activity = lease_spec.renew_time.as_ref().map_or(now, |t| t.0);
    let mut last_signal = lease.annotations().get(LAST_SIGNAL).cloned();

    let pod = ctx.children.pods.get(&object_ref(&namespace, pod_name(&name)));
    let ready_condition = pod.as_deref().filter(|pod| pod.metadata.deletion_timestamp.is_none()).and_then(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")
    });
    let pod_ready = ready_condition.is_some();
    let ready_since = ready_condition.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0);
    let decision = lifecycle::decide(&lifecycle::Facts {
        desired: project.spec.lifecycle.state,
        previous_phase: old.phase,
        last_activity,
        idle_timeout,
        pod_ready,
        ready_since,
        now,
    });
    let last_activity = if decision.renew_activity {
        renew_activity(&leases, &lease_name, "start", now, shared).await?;
        last_signal = Some("start".into());
        now
    } else {
        last_activity
    };

    // The preview token: kept while the project runs, replaced the moment it is stopped.
    let secret = ctx.children.secrets.get(&object_ref(&namespace, preview_secret_name(&name)));
    let token_state =
        if project.spec.lifecycle.state == DesiredState::Stopped { TokenState::Stopped } else { TokenState::Running };
    let existing_token = secret.as_ref().and_then(|s| s.data.as_ref()?.get(TOKEN_KEY)).map(|t| t.0.clone());
    let issued_for =
        secret.as_ref().map(|s| TokenState::from_annotation(s.annotations().get(TOKEN_STATE).map(String::as_str)));
    let rotate = token_state == TokenState::Stopped && issued_for != Some(TokenState::Stopped);
    let token = match existing_token {
        Some(token) if !rotate => {
            String::from_utf8(token).map_err(|_| Error::Invalid("preview token is not UTF-8".into()))?
        }
        _ => new_token(),
    };

    // The publish token: created once, kept for the project's life.
    let publish_secret = ctx.children.secrets.get(&object_ref(&namespace, publish_secret_name(&name)));
    let publish_token = match publish_secret.as_ref().and_then(|s| s.data.as_ref()?.get(TOKEN_KEY)) {
        Some(token) => {
            String::from_utf8(token.0.clone()).map_err(|_| Error::Invalid("publish token is not UTF-8".into()))?
        }
        None => new_token(),
    };

    let desired = build::desired(&build::Inputs {
        project,
        organisation: &org_name,
        jurisdiction,
        config: &shared.config,
        replicas: decision.replicas,
        token: &token,
        token_state,
        publish_token: &publish_token,
    });
    let children = &ctx.children;
    apply_child(
        shared,
        &in_namespace(shared, &namespace),
        &desired.service_account,
        children.service_accounts.get(&object_ref(&namespace, &name)).as_deref(),
    )
    .await?;
    apply_child(shared, &in_namespace(shared, &namespace), &desired.preview_secret, secret.as_deref()).await?;
    apply_child(shared, &in_namespace(shared, &namespace), &desired.publish_secret, publish_secret.as_deref()).await?;
    let workspace = children.claims.get(&object_ref(&namespace, workspace_name(&name)));
    apply_child(shared, &in_namespace(shared, &namespace), &desired.workspace, workspace.as_deref()).await?;
    apply_child(
        shared,
        &in_namespace(shared, &namespace),
        &desired.network_policy,
        children.network_policies.get(&object_ref(&namespace, &name)).as_deref(),
    )
    .await?;
    let live_service = children.services.get(&object_ref(&namespace, &name));
    match &desired.service {
        Some(service) => {
            apply_child(shared, &in_namespace(shared, &namespace), service, live_service.as_deref()).await?
        }
        None if live_service.as_ref().is_some_and(|s| is_controlled_by(&s.metadata, project)) => {
            Api::<Service>::namespaced(shared.client.clone(), &namespace)
                .delete(&name, &DeleteParams::background())
                .await
                .during(|| format!("deleting Service {namespace}/{name}"))?;
            shared.metrics.wrote("Service");
        }
        None => {}
    }
    apply_child(
        shared,
        &in_namespace(shared, &namespace),
        &desired.stateful_set,
        children.stateful_sets.get(&object_ref(&namespace, &name)).as_deref(),
    )
    .await?;
    if rotate {
        info!("preview token rotated: the project is stopped");
    }

    // Status.
    let time = Time(now);
    status.phase = Some(decision.phase);
    status.preview_host = Some(project_host(&name, &org_name, &shared.config.preview_domain));
    status.last_activity = Some(Time(truncate_to_seconds(last_activity)));
    status.idle = Some(IdleStatus { since: Some(Time(truncate_to_seconds(last_activity))), last_signal });
    if let Some(took) = decision.completed_wake {
        status.last_wake = Some(WakeStatus { completed_at: time.clone(), milliseconds: took.as_millis() as i64 });
    }
    let (ready, reason, message) = match decision.phase {
        Phase::Running => (true, "Running", "the environment is ready".to_owned()),
        Phase::Provisioning => (false, "Provisioning", "waiting for the environment's pod to become ready".to_owned()),
        Phase::Waking => (false, "Waking", "woken by activity; waiting for the pod to become ready".to_owned()),
        Phase::Hibernated => {
            (false, "Hibernated", format!("no activity for {}; wakes on the next request", humanize(idle_timeout)))
        }
        Phase::Stopped => (false, "Stopped", "stopped on request; start it to use it again".to_owned()),
        other => (false, phase_name(other), String::new()),
    };
    conditions::set(
        &mut status.conditions,
        "Provisioned",
        true,
        "ChildrenApplied",
        "all of the project's objects are in place",
        generation,
        &time,
    );
    conditions::set(&mut status.conditions, "Ready", ready, reason, message, generation, &time);
    let hibernated = decision.phase == Phase::Hibernated;
    conditions::set(
        &mut status.conditions,
        "Hibernated",
        hibernated,
        if hibernated { "Idle" } else { "Active" },
        if hibernated { "scaled to zero; the workspace volume is kept" } else { "" },
        generation,
        &time,
    );
    let written = finish(project, &old, status, shared).await?;
    if let (true, Some(took)) = (written, decision.completed_wake) {
        shared.metrics.woke(took);
    }

    Ok(match decision.recheck_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Writes status if it changed, and tells users about phase changes with an Event. Returns
/// whether it wrote.
/// The project's status as this operator last knew it: what it last wrote (a reconcile may run
/// on a cached object that has not caught up with that write yet, and must not decide from an
/// older phase), with `published`, which the gateway writes, from the object.
fn current_status(project: &Project, ctx: &Context) -> ProjectStatus {
    let cached = project.status.clone().unwrap_or_default();
    let uid = project.metadata.uid.as_deref().unwrap_or_default();
    match ctx.last_written_status::<ProjectStatus>(uid) {
        Some(written) => ProjectStatus { published: cached.published, ..written },
        None => cached,
    }
}

/// Writes the operator's part of a project's status. `published` is left out: it is the
/// gateway's (its own field manager), and writing back a cached copy could undo a publish.
async fn finish(project: &Project, old: &ProjectStatus, status: ProjectStatus, ctx: &Context) -> Result<bool> {
    let api: Api<Project> = Api::namespaced(ctx.client.clone(), &project.namespace().unwrap_or_default());
    let old = ProjectStatus { published: None, ..old.clone() };
    let status = ProjectStatus { published: None, ..status };
    if !apply_status(ctx, &api, project, &old, &status, "ProjectStatus").await? {
        return Ok(false);
    }
    if status.phase != old.phase
        && let Some(phase) = status.phase
    {
        info!(phase = phase_name(phase), "project phase changed");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let note =
            ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| phase_name(phase).to_owned());
        let warning = phase == Phase::Pending || phase == Phase::Failed;
        ctx.event(&project.object_ref(&()), warning, phase_name(phase), "Reconcile", note).await;
    }
    Ok(true)
}

async fn cleanup(project: &Project, ctx: &ProjectContext) -> Result<Action> {
    let shared = &ctx.shared;
    let old = current_status(project, shared);
    let mut deleting = old.clone();
    deleting.phase = Some(Phase::Deleting);
    finish(project, &old, deleting.clone(), shared).await?;
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
            finish(project, &deleting, blocked, shared).await?;
            return Err(Error::Cleanup { cleanup: cleanup.name(), source });
        }
    }
    shared.forget_status(project.metadata.uid.as_deref().unwrap_or_default());
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
}
