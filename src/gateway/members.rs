//! Membership writes. Members are a list-map keyed by email, written by server-side apply under
//! the gateway's own field manager, so entries declared in Git and entries added here each keep
//! their owner. An apply states everything its manager wants, so each one carries every entry the
//! gateway applied before, plus the change. Every write is conditional on the resourceVersion the
//! last-admin check read, so two admins cannot demote each other into an organisation without one.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::crd::{Member, Organisation, Role};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::Gateway;
use crate::gateway::auth::role_of;
use crate::gateway::error::{ApiError, ApiResult};

/// Attempts at a membership write that keeps meeting other writes to the organisation (the
/// operator's status writes, another admin, this gateway's own write not yet in its cache).
const ATTEMPTS: usize = 5;

/// Gives `email` the `role` in `organisation` (adding the member if new), on behalf of admin `by`.
pub async fn set(gateway: &Gateway, organisation: &Organisation, by: &str, email: &str, role: Role) -> ApiResult<()> {
    retried(gateway, organisation, by, |organisation| set_once(gateway, organisation, email, role)).await
}

/// Removes `email` from `organisation`, whoever added it, on behalf of admin `by`.
pub async fn remove(gateway: &Gateway, organisation: &Organisation, by: &str, email: &str) -> ApiResult<()> {
    retried(gateway, organisation, by, |organisation| remove_once(gateway, organisation, email)).await
}

/// Runs `write` against the cached organisation, and again against a fresh read whenever the
/// organisation changed under it; every check (the caller still an admin, the last admin kept)
/// is made again on what is being written over.
async fn retried<F, Fut>(gateway: &Gateway, cached: &Organisation, by: &str, write: F) -> ApiResult<()>
where
    F: Fn(Organisation) -> Fut,
    Fut: Future<Output = Result<(), NotWritten>>,
{
    let mut organisation = cached.clone();
    for _ in 0..ATTEMPTS {
        if role_of(&organisation, by) != Some(Role::Admin) {
            return Err(ApiError::forbidden("only an admin of the organisation may do this"));
        }
        match write(organisation).await {
            Ok(()) => return Ok(()),
            Err(NotWritten::Changed) => organisation = organisations(gateway).get(&cached.name_any()).await?,
            Err(NotWritten::Refused(error)) => return Err(error),
        }
    }
    Err(ApiError::conflict("conflict", "the organisation kept changing while this request ran; try again"))
}

/// Why one attempt at a membership write did not write.
enum NotWritten {
    /// The organisation changed since it was read: read it again and retry.
    Changed,
    Refused(ApiError),
}

impl From<ApiError> for NotWritten {
    fn from(error: ApiError) -> Self {
        NotWritten::Refused(error)
    }
}

async fn set_once(gateway: &Gateway, organisation: Organisation, email: &str, role: Role) -> Result<(), NotWritten> {
    let organisation = &organisation;
    if role != Role::Admin && is_last_admin(organisation, email) {
        return Err(last_admin().into());
    }
    let owned = applied_by(&organisation.metadata.managed_fields.clone().unwrap_or_default(), FIELD_MANAGER);
    let mut members: Vec<Member> =
        organisation.spec.members.iter().filter(|m| owned.contains(&m.email) && m.email != email).cloned().collect();
    members.push(Member { email: email.to_owned(), role });
    let apply = json!({
        "apiVersion": "ooda.run/v1alpha1",
        "kind": "Organisation",
        "metadata": { "name": organisation.name_any(), "resourceVersion": organisation.resource_version() },
        "spec": { "members": members },
    });
    // Forced: an admin's explicit change takes the entry's role over from whoever set it before.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    organisations(gateway).patch(&organisation.name_any(), &params, &Patch::Apply(&apply)).await.map_err(changed)?;
    Ok(())
}

async fn remove_once(gateway: &Gateway, organisation: Organisation, email: &str) -> Result<(), NotWritten> {
    let organisation = &organisation;
    let Some(index) = organisation.spec.members.iter().position(|m| m.email == email) else {
        return Err(ApiError::not_found(format!("member {email:?}")).into());
    };
    if is_last_admin(organisation, email) {
        return Err(last_admin().into());
    }
    // A merge patch of the whole list, not an apply: the entry may be owned by another manager.
    // Entries left unchanged keep their owners; the resourceVersion makes it conditional on the
    // list the checks above saw.
    let mut members = organisation.spec.members.clone();
    members.remove(index);
    let patch = json!({
        "metadata": { "resourceVersion": organisation.resource_version() },
        "spec": { "members": members },
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    organisations(gateway).patch(&organisation.name_any(), &params, &Patch::Merge(&patch)).await.map_err(changed)?;
    Ok(())
}

fn organisations(gateway: &Gateway) -> Api<Organisation> {
    Api::all(gateway.client.clone())
}

fn is_last_admin(organisation: &Organisation, email: &str) -> bool {
    let admins: Vec<&str> =
        organisation.spec.members.iter().filter(|m| m.role == Role::Admin).map(|m| m.email.as_str()).collect();
    admins == [email]
}

fn last_admin() -> ApiError {
    ApiError::conflict("last_admin", "an organisation keeps at least one admin: promote someone else first")
}

/// A stale resourceVersion means the organisation changed since this request read it.
fn changed(error: kube::Error) -> NotWritten {
    match &error {
        kube::Error::Api(status) if status.code == 409 => NotWritten::Changed,
        _ => NotWritten::Refused(error.into()),
    }
}

/// Emails of the member entries `manager` holds by server-side apply, from `managedFields`
/// (`f:spec` → `f:members` → `k:{"email":"…"}`).
pub fn applied_by(managed_fields: &[ManagedFieldsEntry], manager: &str) -> BTreeSet<String> {
    managed_fields
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some(manager) && entry.operation.as_deref() == Some("Apply"))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .filter_map(|fields| fields.0.get("f:spec")?.get("f:members")?.as_object())
        .flat_map(|members| members.keys())
        .filter_map(|key| key.strip_prefix("k:"))
        .filter_map(|key| serde_json::from_str::<Value>(key).ok()?.get("email")?.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn applied_entries_are_read_from_the_managers_own_apply_record() {
        let fields = |emails: &[&str]| {
            let members: serde_json::Map<String, Value> = emails
                .iter()
                .map(|e| (format!("k:{{\"email\":\"{e}\"}}"), json!({ ".": {}, "f:email": {}, "f:role": {} })))
                .collect();
            json!({ "f:spec": { "f:members": members } })
        };
        let managed = [
            entry("ooda-gateway", "Apply", fields(&["carol@acme.example", "dave@acme.example"])),
            entry("argocd", "Apply", fields(&["alice@acme.example"])),
            entry("ooda-gateway", "Update", fields(&["erin@acme.example"])),
            entry("ooda-gateway", "Apply", json!({ "f:metadata": {} })),
        ];
        let owned = applied_by(&managed, "ooda-gateway");
        assert_eq!(owned, BTreeSet::from(["carol@acme.example".to_owned(), "dave@acme.example".to_owned()]));
        assert!(applied_by(&managed, "nobody").is_empty());
    }

    #[test]
    fn the_last_admin_is_recognised() {
        let org = |members: &[(&str, Role)]| {
            let mut o = Organisation::new(
                "acme",
                serde_json::from_value(json!({ "jurisdiction": "eu" })).expect("minimal spec"),
            );
            o.spec.members = members.iter().map(|(e, r)| Member { email: (*e).into(), role: *r }).collect();
            o
        };
        let one = org(&[("a@x.example", Role::Admin), ("b@x.example", Role::Member)]);
        assert!(is_last_admin(&one, "a@x.example"));
        assert!(!is_last_admin(&one, "b@x.example"));
        let two = org(&[("a@x.example", Role::Admin), ("c@x.example", Role::Admin)]);
        assert!(!is_last_admin(&two, "a@x.example"));
    }
}
