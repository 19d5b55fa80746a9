//! The REST API under `/api`: organisations, members and projects, scoped to the caller's
//! current memberships. Reads come from the watch caches; writes go to the API server, which
//! validates them against the CRD schemas and says which field is wrong.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, instrument};

use crate::accounts;
use crate::crd::conditions;
use crate::crd::names::{activity_lease_name, organisation_namespace, organisation_of_namespace, project_host};
use crate::crd::{DesiredState, Phase, Project, ProjectSpec, Role};
use crate::gateway::FIELD_MANAGER;
use crate::gateway::Gateway;
use crate::gateway::auth::{Session, access, memberships, role_of};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::{ApiJson, ApiPath};
use crate::gateway::members;
use crate::gateway::sites::site_url;

pub async fn me(State(gateway): State<Arc<Gateway>>, session: Session) -> Json<Value> {
    let organisations = memberships(&gateway, &session.account, &session.credential, session.issued_at);
    Json(json!({ "email": session.email, "organisations": organisations }))
}

#[instrument(skip_all, fields(org = %org))]
pub async fn organisation(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let access = access(&gateway, &session, &org, Role::Member)?;
    let o = &access.organisation;
    let conditions = o.status.as_ref().map(|s| &s.conditions[..]).unwrap_or_default();
    Ok(Json(json!({
        "name": o.name_any(),
        "displayName": o.spec.display_name,
        "jurisdiction": o.spec.jurisdiction,
        "ready": conditions::is_true(conditions, "Ready"),
        "yourRole": access.role.as_str(),
        "quota": o.spec.quota,
    })))
}

pub async fn list_members(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let access = access(&gateway, &session, &org, Role::Member)?;
    Ok(Json(json!({ "members": access.organisation.spec.members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    role: Role,
}

#[instrument(skip_all, fields(org = %org, member = %email))]
pub async fn put_member(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, email)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<MemberRequest>,
) -> ApiResult<Json<Value>> {
    let access = access(&gateway, &session, &org, Role::Admin)?;
    accounts::check_email(&email).map_err(|e| ApiError::bad_request(e.to_string()))?;
    members::set(&gateway, &access.organisation, &session.email, &email, request.role).await?;
    info!(by = session.email, role = request.role.as_str(), "member set");
    Ok(Json(json!({ "email": email, "role": request.role.as_str() })))
}

#[instrument(skip_all, fields(org = %org, member = %email))]
pub async fn delete_member(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, email)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let access = access(&gateway, &session, &org, Role::Admin)?;
    members::remove(&gateway, &access.organisation, &session.email, &email).await?;
    info!(by = session.email, "member removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/orgs/{org}/members/{email}/sign-out` (admin): ends every session of the member
/// in this organisation (they sign in again to come back). Other organisations' sessions of the
/// same account are not this organisation's to end, and the answer is the same whether or not
/// the email has an account.
#[instrument(skip_all, fields(org = %org, member = %email))]
pub async fn sign_out_member(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, email)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let access = access(&gateway, &session, &org, Role::Admin)?;
    if role_of(&access.organisation, &email).is_none() {
        return Err(ApiError::not_found(format!("member {email:?}")));
    }
    gateway
        .update_account(&email, |account| {
            let now = account.session_time(Timestamp::now().as_second());
            account.organisation_sessions_not_before.insert(org.clone(), now);
            Ok(())
        })
        .await?;
    info!(by = session.email, "member signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_projects(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    access(&gateway, &session, &org, Role::Member)?;
    Ok(Json(json!({ "projects": organisation_projects(&gateway, &org) })))
}

/// `org`'s projects as the API shows them, by name, from the cache.
pub fn organisation_projects(gateway: &Gateway, org: &str) -> Vec<Value> {
    let namespace = organisation_namespace(org);
    let mut projects: Vec<Arc<Project>> =
        gateway.caches.projects.state().into_iter().filter(|p| p.namespace().as_deref() == Some(&namespace)).collect();
    projects.sort_by_key(|p| p.name_any());
    projects.iter().map(|p| summary(gateway, p)).collect()
}

/// Creates tried before a quota conflict is the caller's to retry, and the pause before each retry
/// (times the attempt, so concurrent creates spread out).
const QUOTA_CONFLICT_ATTEMPTS: u32 = 4;
const QUOTA_CONFLICT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    name: String,
    #[serde(default)]
    spec: Option<ProjectSpec>,
}

#[instrument(skip_all, fields(org = %org))]
pub async fn create_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath(org): ApiPath<String>,
    ApiJson(request): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    access(&gateway, &session, &org, Role::Member)?;
    let spec = request.spec.unwrap_or_else(|| serde_json::from_value(json!({})).expect("every field has a default"));
    let project = Project::new(&request.name, spec);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let projects = projects(&gateway, &org);
    let mut attempt = 1;
    let created = loop {
        match projects.create(&params, &project).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                return Err(ApiError::conflict("exists", format!("a project named {:?} already exists", request.name)));
            }
            // The organisation's ResourceQuota counts projects, and its admission answers 409 when
            // another write changed the quota's usage meanwhile: nothing was created, and the API
            // server's own clients retry.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                if attempt == QUOTA_CONFLICT_ATTEMPTS {
                    return Err(ApiError::unavailable(
                        "the organisation's quota is busy with other changes; try again",
                        1,
                    ));
                }
                attempt += 1;
                tokio::time::sleep(QUOTA_CONFLICT_PAUSE * attempt).await;
            }
            result => break result?,
        }
    };
    info!(project = request.name, by = session.email, "project created");
    Ok((StatusCode::CREATED, Json(summary(&gateway, &created))))
}

pub async fn get_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    access(&gateway, &session, &org, Role::Member)?;
    Ok(Json(summary(&gateway, project(&gateway, &org, &name)?.as_ref())))
}

#[instrument(skip_all, fields(org = %org, project = %name))]
pub async fn delete_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    access(&gateway, &session, &org, Role::Admin)?;
    project(&gateway, &org, &name)?;
    projects(&gateway, &org).delete(&name, &DeleteParams::default()).await?;
    info!(by = session.email, "project deleted");
    Ok(StatusCode::ACCEPTED)
}

pub async fn start_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    set_state(&gateway, &session, &org, &name, DesiredState::Running).await
}

pub async fn stop_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    set_state(&gateway, &session, &org, &name, DesiredState::Stopped).await
}

#[instrument(skip_all, fields(org = %org, project = %name, state = ?state))]
async fn set_state(
    gateway: &Gateway,
    session: &Session,
    org: &str,
    name: &str,
    state: DesiredState,
) -> ApiResult<(StatusCode, Json<Value>)> {
    access(gateway, session, org, Role::Member)?;
    project(gateway, org, name)?;
    let apply = json!({
        "apiVersion": "ooda.run/v1alpha1", "kind": "Project",
        "metadata": { "name": name },
        "spec": { "lifecycle": { "state": state } },
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let updated = projects(gateway, org).patch(name, &params, &Patch::Apply(&apply)).await?;
    info!(by = session.email, "desired state set");
    Ok((StatusCode::ACCEPTED, Json(summary(gateway, &updated))))
}

/// Wakes a hibernated project (or keeps a running one awake) by renewing its activity Lease.
#[instrument(skip_all, fields(org = %org, project = %name))]
pub async fn wake_project(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    access(&gateway, &session, &org, Role::Member)?;
    let project = project(&gateway, &org, &name)?;
    if project.spec.lifecycle.state == DesiredState::Stopped {
        return Err(ApiError::conflict("stopped", "the project is stopped: start it instead"));
    }
    let leases: Api<Lease> = Api::namespaced(gateway.client.clone(), &organisation_namespace(&org));
    if leases.get_opt(&activity_lease_name(&name)).await?.is_none() {
        return Err(ApiError::conflict("provisioning", "the project is still being provisioned"));
    }
    gateway.activity.renew_for_wake(&org, &name).await?;
    Ok((StatusCode::ACCEPTED, Json(summary(&gateway, &project))))
}

/// The preview URL with the project's current token.
pub async fn preview(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath((org, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    access(&gateway, &session, &org, Role::Member)?;
    let project = project(&gateway, &org, &name)?;
    if !project.spec.ports.iter().any(|p| p.preview) {
        return Err(ApiError::conflict("no_preview_port", "the project has no port with preview: true"));
    }
    let token = gateway
        .caches
        .preview_token(&org, &name)
        .ok_or_else(|| ApiError::conflict("provisioning", "the project is still being provisioned"))?;
    let token = String::from_utf8(token.token).map_err(|_| ApiError::internal("unreadable preview token"))?;
    let host = project_host(&name, &org, &gateway.config.preview_domain);
    let origin = gateway.settings.public_origin(&host);
    Ok(Json(json!({
        "host": host,
        "url": format!("{origin}/?{}={token}", crate::gateway::proxy::TOKEN_QUERY),
        "token": token,
        "header": crate::gateway::proxy::TOKEN_HEADER,
    })))
}

fn projects(gateway: &Gateway, org: &str) -> Api<Project> {
    Api::namespaced(gateway.client.clone(), &organisation_namespace(org))
}

fn project(gateway: &Gateway, org: &str, name: &str) -> ApiResult<Arc<Project>> {
    gateway.caches.project(org, name).ok_or_else(|| ApiError::not_found(format!("project {name:?}")))
}

fn summary(gateway: &Gateway, project: &Project) -> Value {
    let status = project.status.as_ref();
    let conditions = status.map(|s| &s.conditions[..]).unwrap_or_default();
    let org = project.namespace().as_deref().and_then(organisation_of_namespace).map(str::to_owned);
    // Where its site is served, once a version is.
    let published = status.and_then(|s| s.published.as_ref()).is_some_and(|p| p.current.is_some());
    let site_url = org.as_deref().filter(|_| published).and_then(|org| site_url(gateway, org, &project.name_any()));
    json!({
        "name": project.name_any(),
        "organisation": org,
        "state": project.spec.lifecycle.state,
        "phase": status.and_then(|s| s.phase).unwrap_or(Phase::Pending),
        "ready": conditions::is_true(conditions, "Ready"),
        "previewHost": status.and_then(|s| s.preview_host.clone()),
        "lastActivity": status.and_then(|s| s.last_activity.clone()),
        "siteUrl": site_url,
        "spec": project.spec,
    })
}
