//! The Organisation controller: namespace `org-<name>` with Pod Security `restricted`, quota,
//! container defaults and default-deny networking; nothing at all for an unknown jurisdiction.

pub mod build;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument};

use crate::crd::Organisation;
use crate::crd::conditions::{self, Progress};
use crate::crd::names::{FINALIZER, object_ref, organisation_namespace};
use crate::operator::apply::{apply_child, apply_status, in_namespace};
use crate::operator::context::Context;
use crate::operator::error::{During, Error, Result};

pub const CONTROLLER: &str = "organisation";

/// Caches of the organisation's children, for skipping writes that would change nothing.
pub struct Children {
    pub namespaces: Store<Namespace>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    pub network_policies: Store<NetworkPolicy>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
}

pub struct OrganisationContext {
    pub shared: Arc<Context>,
    pub children: Children,
}

#[instrument(skip_all, fields(organisation = %org.name_any()))]
pub async fn reconcile(org: Arc<Organisation>, ctx: Arc<OrganisationContext>) -> Result<Action> {
    if !ctx.shared.caches_synced() {
        return Ok(Action::requeue(super::UNTIL_SYNCED));
    }
    let started = Instant::now();
    let result = if org.metadata.deletion_timestamp.is_some() {
        delete_namespace_first(&org, &ctx).await
    } else {
        match ensure_finalizer(&org, &ctx.shared).await {
            Ok(()) => reconcile_inner(&org, &ctx).await,
            Err(e) => Err(e),
        }
    };
    ctx.shared.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.shared.record_success(&org.name_any());
    }
    result
}

// An organisation goes only after its namespace: the namespace's projects run their own
// finalizers (purging what they own outside Kubernetes) while the organisation, and so its
// jurisdiction's configuration, is still there to read. The finalizer is handled here by hand,
// not with kube's `finalizer()`, because that would have to fail the reconcile to keep waiting
// for the namespace to go; here the namespace's own deletion events bring the reconcile back.

async fn ensure_finalizer(org: &Organisation, ctx: &Context) -> Result<()> {
    if org.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = org.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(org, finalizers, ctx).await
}

/// Replaces the finalizer list, guarded by the resourceVersion it was computed from.
async fn set_finalizers(org: &Organisation, finalizers: Vec<String>, ctx: &Context) -> Result<()> {
    let api: Api<Organisation> = Api::all(ctx.client.clone());
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": org.resource_version() } });
    api.patch(&org.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .during(|| format!("setting the finalizers of Organisation {}", org.name_any()))?;
    ctx.metrics.wrote("Organisation");
    Ok(())
}

async fn delete_namespace_first(org: &Organisation, ctx: &OrganisationContext) -> Result<Action> {
    let shared = &ctx.shared;
    if !org.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = organisation_namespace(&org.name_any());
    let owned = |ns: &Namespace| ns.owner_references().iter().any(|o| Some(&o.uid) == org.metadata.uid.as_ref());
    if let Some(namespace) = ctx.children.namespaces.get(&ObjectRef::new(&name)).filter(|ns| owned(ns)) {
        if namespace.metadata.deletion_timestamp.is_none() {
            Api::<Namespace>::all(shared.client.clone())
                .delete(&name, &DeleteParams::background())
                .await
                .during(|| format!("deleting Namespace {name}"))?;
            shared.metrics.wrote("Namespace");
            info!(namespace = %name, "deleting the organisation's namespace");
        }
        // The namespace's deletion events bring us back here.
        return Ok(Action::await_change());
    }
    let finalizers: Vec<String> = org.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    set_finalizers(org, finalizers, shared).await?;
    shared.written_status.forget(org.metadata.uid.as_deref().unwrap_or_default());
    Ok(Action::await_change())
}

async fn reconcile_inner(org: &Organisation, ctx: &OrganisationContext) -> Result<Action> {
    let shared = &ctx.shared;
    let name = org.name_any();
    let now = Time(Timestamp::now());
    let generation = org.metadata.generation;
    let old = org.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = generation;
    let namespace_name = organisation_namespace(&name);

    let mut action = Action::await_change();
    let residency = shared.config.jurisdictions.get(&org.spec.jurisdiction);
    let conflict = ctx.children.namespaces.get(&ObjectRef::new(&namespace_name)).filter(|ns| {
        !ns.owner_references().iter().any(|o| Some(&o.uid) == org.metadata.uid.as_ref() && o.controller == Some(true))
    });

    if residency.is_none() {
        let message = format!(
            "jurisdiction {:?} is not configured on this operator; nothing is provisioned until it is",
            org.spec.jurisdiction
        );
        conditions::set(
            &mut status.conditions,
            "ResidencySatisfied",
            false,
            "UnknownJurisdiction",
            &message,
            generation,
            &now,
        );
        conditions::set(&mut status.conditions, "Ready", false, "UnknownJurisdiction", &message, generation, &now);
        let stalled = Progress::Stalled { reason: "UnknownJurisdiction", message: &message };
        conditions::set_progress(&mut status.conditions, stalled, generation, &now);
    } else if conflict.is_some() {
        let message = format!("namespace {namespace_name} already exists and does not belong to this organisation");
        conditions::set(
            &mut status.conditions,
            "ResidencySatisfied",
            true,
            "JurisdictionConfigured",
            "",
            generation,
            &now,
        );
        conditions::set(&mut status.conditions, "Ready", false, "NamespaceConflict", &message, generation, &now);
        let stalled = Progress::Stalled { reason: "NamespaceConflict", message: &message };
        conditions::set_progress(&mut status.conditions, stalled, generation, &now);
    } else {
        let quota = provision(org, ctx).await?;
        let quota_counted = quota == QuotaState::Counted;
        if let QuotaState::Pending { recheck: Some(after) } = quota {
            action = Action::requeue(after);
        }
        status.namespace = Some(namespace_name.clone());
        conditions::set(
            &mut status.conditions,
            "ResidencySatisfied",
            true,
            "JurisdictionConfigured",
            format!("data stays in jurisdiction {}", org.spec.jurisdiction),
            generation,
            &now,
        );
        if quota_counted {
            let message = format!("namespace {namespace_name} is ready");
            conditions::set(&mut status.conditions, "Ready", true, "Provisioned", message, generation, &now);
            conditions::set_progress(&mut status.conditions, Progress::Settled, generation, &now);
        } else {
            // Until the quota controller has counted usage, the API server refuses new projects.
            let message = "waiting for Kubernetes to count the namespace's usage against its quota";
            conditions::set(&mut status.conditions, "Ready", false, "QuotaPending", message, generation, &now);
            let reconciling = Progress::Reconciling { reason: "QuotaPending", message };
            conditions::set_progress(&mut status.conditions, reconciling, generation, &now);
        }
    }

    let api: Api<Organisation> = Api::all(shared.client.clone());
    if apply_status(shared, &api, org, &old, &status, "OrganisationStatus").await? {
        let was_ready = conditions::is_true(&old.conditions, "Ready");
        let ready = conditions::is_true(&status.conditions, "Ready");
        let reason =
            status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| (c.reason.clone(), c.message.clone()));
        let reason_changed = old.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone())
            != reason.as_ref().map(|r| r.0.clone());
        if (was_ready != ready || reason_changed)
            && let Some((reason, message)) = reason
        {
            info!(ready, %reason, "organisation readiness changed");
            let warning = !ready && reason != "QuotaPending";
            shared.event(&org.object_ref(&()), warning, &reason, "Reconcile", message).await;
        }
    }
    Ok(action)
}

/// Whether the organisation's quota is in force: the quota controller reports usage for every
/// limit (until then the API server refuses every project in the namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuotaState {
    Counted,
    /// Not yet; look again after `recheck`, or when the quota changes.
    Pending {
        recheck: Option<Duration>,
    },
}

/// The quota controller's discovery period: a resource it did not know when it counted a quota
/// (ooda's own Projects, in the first half minute after the CRDs are installed) is known by then.
const QUOTA_DISCOVERY_PERIOD: Duration = Duration::from_secs(30);

/// What to do about a quota that is not (fully) counted.
#[derive(Debug, PartialEq, Eq)]
enum Recount {
    /// The controller has not counted it yet: it will.
    Wait,
    /// Counted without some of its resources, and young: the controller may not have discovered
    /// them yet; look again then.
    RecheckIn(Duration),
    /// Counted without some of its resources though they have had time to be discovered. The
    /// controller counts a quota again only when its limits change or at its full resync (5
    /// minutes by default), so it is made anew, and counted at once. (Recreating it leaves the
    /// namespace without a quota for a moment; the new one counts whatever came in meanwhile.)
    Recreate,
}

fn recount(live: &ResourceQuota, now: Timestamp) -> Recount {
    let counted_once = live.status.as_ref().and_then(|s| s.hard.as_ref()).is_some_and(|h| !h.is_empty());
    if !counted_once {
        return Recount::Wait;
    }
    let created = live.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let age = Duration::try_from(now.duration_since(created)).unwrap_or_default();
    match QUOTA_DISCOVERY_PERIOD.checked_sub(age) {
        Some(left) if !left.is_zero() => Recount::RecheckIn(left),
        _ => Recount::Recreate,
    }
}

/// Applies the organisation's objects; returns whether its quota (if any) is in force.
async fn provision(org: &Organisation, ctx: &OrganisationContext) -> Result<QuotaState> {
    let shared = &ctx.shared;
    let children = &ctx.children;
    let desired = build::desired(org);
    let namespace_name = desired.namespace.name_any();
    let live = children.namespaces.get(&ObjectRef::new(&namespace_name));
    apply_child(shared, &Api::all(shared.client.clone()), &desired.namespace, live.as_deref()).await?;

    let live = children.quotas.get(&object_ref(&namespace_name, build::QUOTA_NAME));
    let quota_state = match (&desired.quota, live) {
        (Some(quota), live) => {
            apply_child(shared, &in_namespace(shared, &namespace_name), quota, live.as_deref()).await?;
            let limits =
                quota.spec.as_ref().and_then(|s| s.hard.as_ref()).map(|h| h.keys().cloned().collect::<Vec<_>>());
            let used = live.as_ref().and_then(|q| q.status.as_ref()?.used.as_ref());
            let counted = limits.unwrap_or_default().iter().all(|key| used.is_some_and(|u| u.contains_key(key)));
            match (counted, live.as_deref().map(|live| (live, recount(live, Timestamp::now())))) {
                (true, _) => QuotaState::Counted,
                (false, None | Some((_, Recount::Wait))) => QuotaState::Pending { recheck: None },
                (false, Some((_, Recount::RecheckIn(after)))) => QuotaState::Pending { recheck: Some(after) },
                (false, Some((live, Recount::Recreate))) => {
                    let quotas: Api<ResourceQuota> = Api::namespaced(shared.client.clone(), &namespace_name);
                    let this_one = DeleteParams {
                        preconditions: Some(Preconditions { uid: live.metadata.uid.clone(), resource_version: None }),
                        ..DeleteParams::background()
                    };
                    info!(namespace = %namespace_name, "recreating a quota counted before ooda's resources were discovered");
                    quotas
                        .delete(build::QUOTA_NAME, &this_one)
                        .await
                        .during(|| format!("recreating ResourceQuota {namespace_name}/{}", build::QUOTA_NAME))?;
                    shared.metrics.wrote("ResourceQuota");
                    QuotaState::Pending { recheck: None }
                }
            }
        }
        (None, Some(_)) => {
            let quotas: Api<ResourceQuota> = Api::namespaced(shared.client.clone(), &namespace_name);
            quotas
                .delete(build::QUOTA_NAME, &DeleteParams::background())
                .await
                .during(|| format!("deleting ResourceQuota {namespace_name}/{}", build::QUOTA_NAME))?;
            shared.metrics.wrote("ResourceQuota");
            QuotaState::Counted
        }
        (None, None) => QuotaState::Counted,
    };
    let live = children.limit_ranges.get(&object_ref(&namespace_name, build::LIMIT_RANGE_NAME));
    apply_child(shared, &in_namespace(shared, &namespace_name), &desired.limit_range, live.as_deref()).await?;
    let live = children.network_policies.get(&object_ref(&namespace_name, build::DEFAULT_DENY_NAME));
    apply_child(shared, &in_namespace(shared, &namespace_name), &desired.default_deny, live.as_deref()).await?;
    let access = build::gateway_access(org, &shared.config.gateway);
    let live = children.roles.get(&object_ref(&namespace_name, build::GATEWAY_ACCESS_NAME));
    apply_child(shared, &in_namespace(shared, &namespace_name), &access.role, live.as_deref()).await?;
    for binding in [&access.binding, &access.exec_binding] {
        let name = binding.metadata.name.as_deref().expect("a binding has a name");
        let live = children.role_bindings.get(&object_ref(&namespace_name, name));
        apply_child(shared, &in_namespace(shared, &namespace_name), binding, live.as_deref()).await?;
    }
    Ok(quota_state)
}

pub fn error_policy(org: Arc<Organisation>, error: &Error, ctx: Arc<OrganisationContext>) -> Action {
    super::error_action(CONTROLLER, &org.name_any(), error, &ctx.shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(created: i64, hard: Option<serde_json::Value>) -> ResourceQuota {
        serde_json::from_value(json!({
            "metadata": { "name": "organisation-quota", "creationTimestamp": Timestamp::from_second(created).unwrap() },
            "spec": { "hard": { "count/projects.ooda.run": "10", "requests.cpu": "16" } },
            "status": { "hard": hard, "used": { "requests.cpu": "0" } },
        }))
        .expect("quota")
    }

    #[test]
    fn a_quota_counted_without_a_resource_is_made_anew_once_discovery_has_had_its_time() {
        let now = Timestamp::from_second(1_000).unwrap();
        let counted = Some(json!({ "count/projects.ooda.run": "10", "requests.cpu": "16" }));
        assert_eq!(recount(&quota(990, None), now), Recount::Wait, "not counted at all yet: the controller will");
        assert_eq!(recount(&quota(990, counted.clone()), now), Recount::RecheckIn(Duration::from_secs(20)));
        assert_eq!(recount(&quota(970, counted.clone()), now), Recount::Recreate);
        assert_eq!(recount(&quota(900, counted), now), Recount::Recreate);
    }
}
