//! Invites: how a new member gets an account. An admin invites an email into the organisation;
//! if that email has no account yet, the gateway issues a single-use, expiring token (only its
//! SHA-256 is stored, in a Secret beside the accounts) that lets the holder set a password.
//! Knowing an email is never enough to claim an account.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, instrument, warn};

use crate::accounts::{self, AccountError};
use crate::crd::Role;
use crate::gateway::Gateway;
use crate::gateway::activity::FIELD_MANAGER;
use crate::gateway::auth::{Session, access, role_name};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::members;

pub const INVITE_LABEL: &str = "ooda.run/invite";
const SECRET_TYPE: &str = "ooda.run/invite";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    email: String,
    role: Role,
}

#[instrument(skip_all, fields(org = %org))]
pub async fn create(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    Path(org): Path<String>,
    body: Result<Json<InviteRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let access = access(&gateway, &session, &org, Role::Admin)?;
    let Json(request) = body?;
    accounts::check_email(&request.email).map_err(|e| ApiError::bad_request(e.to_string()))?;
    members::set(&gateway, &access.organisation, &request.email, request.role).await?;
    let has_account = gateway.accounts.password_hash(&request.email).await.map_err(account_error)?.is_some();
    let mut answer = json!({ "email": request.email, "role": role_name(request.role), "hasAccount": has_account });
    if !has_account {
        let secret = random_secret();
        let expires = Timestamp::now() + gateway.settings.invite_ttl;
        let name = invite_name(&request.email);
        let invite = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(INVITE_LABEL.to_owned(), "true".to_owned())])),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE.into()),
            data: Some(BTreeMap::from([
                ("email".to_owned(), ByteString(request.email.clone().into_bytes())),
                ("organisation".to_owned(), ByteString(org.clone().into_bytes())),
                ("invited-by".to_owned(), ByteString(session.email.clone().into_bytes())),
                ("expires-at".to_owned(), ByteString(expires.to_string().into_bytes())),
                ("token-sha256".to_owned(), ByteString(Sha256::digest(secret.as_bytes()).to_vec())),
            ])),
            ..Default::default()
        };
        // One invite per email: inviting again replaces the token, so the older one dies.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        gateway.own_secrets().patch(&name, &params, &Patch::Apply(&invite)).await?;
        let token = format!("{}.{secret}", name.trim_start_matches("invite-"));
        answer["inviteToken"] = json!(token);
        answer["expiresAt"] = json!(expires.to_string());
        info!(email = request.email, by = session.email, "invited");
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    token: String,
    password: String,
}

/// Redeems an invite: creates the account with the chosen password and consumes the invite.
#[instrument(skip_all)]
pub async fn accept(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Json<AcceptRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(request) = body?;
    let invalid = || ApiError::new(StatusCode::BAD_REQUEST, "invalid_invite", "the invite is invalid or has expired");
    let (id, secret) = request.token.split_once('.').ok_or_else(invalid)?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() > 64 {
        return Err(invalid());
    }
    let name = format!("invite-{id}");
    let invite = gateway.own_secrets().get_opt(&name).await?.ok_or_else(invalid)?;
    let field = |key: &str| invite.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.clone()).unwrap_or_default();
    let matches: bool = Sha256::digest(secret.as_bytes()).as_slice().ct_eq(&field("token-sha256")).into();
    let expires: Option<Timestamp> = String::from_utf8(field("expires-at")).ok().and_then(|t| t.parse().ok());
    if !matches || expires.is_none_or(|e| e <= Timestamp::now()) {
        return Err(invalid());
    }
    let email = String::from_utf8(field("email")).map_err(|_| invalid())?;
    let hash = gateway.hash_password(request.password).await?;
    // The account's creation is the single use: a second redemption finds it exists.
    gateway.accounts.create(&email, &hash).await.map_err(account_error)?;
    // Tidy-up only: once the account exists the invite can no longer be redeemed.
    let preconditions = Preconditions { uid: invite.metadata.uid.clone(), resource_version: None };
    let params = DeleteParams { preconditions: Some(preconditions), ..Default::default() };
    if let Err(error) = gateway.own_secrets().delete(&name, &params).await {
        warn!(%error, "could not delete a redeemed invite");
    }
    info!(email, "accepted an invite");
    Ok((StatusCode::CREATED, Json(json!({ "email": email }))))
}

fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::Exists(_) => ApiError::conflict("account_exists", "this account already exists; sign in"),
        AccountError::Kube(e) => e.into(),
        other => ApiError::bad_request(other.to_string()),
    }
}

fn invite_name(email: &str) -> String {
    accounts::secret_name(email).replacen("user-", "invite-", 1)
}

fn random_secret() -> String {
    crate::gateway::random_token(32)
}

impl Gateway {
    /// Secrets in the gateway's own namespace (accounts, invites, signing keys).
    pub fn own_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}
