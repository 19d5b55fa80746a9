//! Invites: how a member gets into an organisation. An admin invites an email; the gateway adds
//! the member and issues a single-use, expiring token (only its SHA-256 is stored, in a Secret
//! beside the accounts), which the admin passes on. Redeeming it admits one organisation, the
//! inviting one, to whoever redeems it (see [`crate::accounts`]): signed in, the session's own
//! credential; otherwise a credential for the auth key given, made for this organisation alone
//! whether or not the email already has an account. So an admin who redeems their own invite
//! for someone else's email gets into their own organisation and no other, and the answers
//! never tell whether the email had an account.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, instrument};

use crate::accounts::{self, AccountError, AuthKey};
use crate::crd::Role;
use crate::gateway::auth::{Session, access};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::{ApiJson, ApiPath};
use crate::gateway::login::parse_auth_key;
use crate::gateway::{FIELD_MANAGER, Gateway, members};

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
    ApiPath(org): ApiPath<String>,
    ApiJson(request): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let access = access(&gateway, &session, &org, Role::Admin)?;
    accounts::check_email(&request.email).map_err(|e| ApiError::bad_request(e.to_string()))?;
    members::set(&gateway, &access.organisation, &session.email, &request.email, request.role).await?;
    let secret = crate::gateway::random_token(32);
    let expires = Timestamp::now() + gateway.settings.invite_ttl;
    let id = invite_id(&org, &request.email);
    let name = format!("invite-{id}");
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
    // One invite per organisation and email: inviting again replaces the token, so the older
    // one dies; another organisation's invite for the same email is a different Secret.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    gateway.own_secrets().patch(&name, &params, &Patch::Apply(&invite)).await?;
    info!(email = request.email, by = session.email, "invited");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "email": request.email,
            "role": request.role.as_str(),
            "inviteToken": format!("{id}.{secret}"),
            "expiresAt": expires.to_string(),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AcceptRequest {
    token: String,
    /// Without a session: the auth key (derived from the password, as for signing in) of the
    /// credential to admit, a new one if it opens none.
    #[serde(default)]
    auth_key: Option<String>,
}

/// Redeems an invite: admits its organisation to the session's credential (signed in) or to the
/// credential the auth key opens or makes, and consumes the invite.
#[instrument(skip_all)]
pub async fn accept(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AcceptRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let session = match headers.contains_key(AUTHORIZATION) {
        true => Some(Session::from_headers(&gateway, &headers)?),
        false => None,
    };
    let invite = Invite::redeemable(&gateway, &request.token).await?;
    let redeemer = match (&session, request.auth_key) {
        (Some(session), None) if session.email == invite.email => Redeemer::Session(session),
        (Some(_), None) => {
            return Err(ApiError::conflict("invite_for_another_email", "this invite is for another email address"));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "signed in, accept without an authKey: the invite joins this session's account",
            ));
        }
        (None, Some(key)) => Redeemer::AuthKey(parse_auth_key(&key)?),
        (None, None) => {
            return Err(ApiError::bad_request(
                "an authKey (derived from a password) is required, or accept while signed in",
            ));
        }
    };
    invite.consume(&gateway).await?;
    let organisation = &invite.organisation;
    match redeemer {
        Redeemer::Session(session) => {
            let admitted = gateway
                .update_account(&session.email, |account| {
                    let credential = account
                        .credential_mut(&session.credential)
                        .ok_or(AccountError::NotFound(session.email.clone()))?;
                    credential.admit(organisation);
                    Ok(())
                })
                .await?;
            admitted.ok_or_else(|| ApiError::unauthorized("the session has ended; sign in again"))?;
        }
        Redeemer::AuthKey(key) => {
            gateway.admit_auth_key(&invite.email, key, organisation).await?;
        }
    }
    info!(email = invite.email, organisation = invite.organisation, "accepted an invite");
    Ok((StatusCode::CREATED, Json(json!({ "email": invite.email, "organisation": invite.organisation }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailsRequest {
    token: String,
}

/// `POST /api/auth/invite-details {token}`: whom an invite is for and where it leads, without
/// using it up. The invitee's client derives the auth key for that email, so a typo cannot spend
/// the invite on a credential nobody can open. Only the token's holder learns this, and it is
/// what the admin who handed the token out told them anyway.
#[instrument(skip_all)]
pub async fn details(
    State(gateway): State<Arc<Gateway>>,
    ApiJson(request): ApiJson<DetailsRequest>,
) -> ApiResult<Json<Value>> {
    let invite = Invite::redeemable(&gateway, &request.token).await?;
    Ok(Json(
        json!({ "email": invite.email, "organisation": invite.organisation, "expiresAt": invite.expires.to_string() }),
    ))
}

/// Who redeems an invite: a signed-in session (its own credential is admitted), or the holder of
/// a password's auth key (the credential it opens, or a new one).
enum Redeemer<'a> {
    Session(&'a Session),
    AuthKey(AuthKey),
}

/// An invite whose token checked out and that has not expired.
struct Invite {
    name: String,
    uid: Option<String>,
    resource_version: Option<String>,
    email: String,
    organisation: String,
    expires: Timestamp,
}

impl Invite {
    async fn redeemable(gateway: &Gateway, token: &str) -> ApiResult<Invite> {
        let invalid =
            || ApiError::new(StatusCode::BAD_REQUEST, "invalid_invite", "the invite is invalid or has expired");
        let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() > 64 {
            return Err(invalid());
        }
        let name = format!("invite-{id}");
        let invite = gateway.own_secrets().get_opt(&name).await?.ok_or_else(invalid)?;
        let field = |key: &str| invite.data.as_ref().and_then(|d| d.get(key)).map(|v| v.0.clone()).unwrap_or_default();
        let matches: bool = Sha256::digest(secret.as_bytes()).as_slice().ct_eq(&field("token-sha256")).into();
        let expires: Option<Timestamp> = String::from_utf8(field("expires-at")).ok().and_then(|t| t.parse().ok());
        let Some(expires) = expires.filter(|e| matches && *e > Timestamp::now()) else {
            return Err(invalid());
        };
        Ok(Invite {
            name,
            uid: invite.metadata.uid.clone(),
            resource_version: invite.metadata.resource_version.clone(),
            email: String::from_utf8(field("email")).map_err(|_| invalid())?,
            organisation: String::from_utf8(field("organisation")).map_err(|_| invalid())?,
            expires,
        })
    }

    /// Deletes the invite, only as it was read: of two redemptions at once, one wins.
    async fn consume(&self, gateway: &Gateway) -> ApiResult<()> {
        let preconditions = Preconditions { uid: self.uid.clone(), resource_version: self.resource_version.clone() };
        let params = DeleteParams { preconditions: Some(preconditions), ..Default::default() };
        match gateway.own_secrets().delete(&self.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_invite", "the invite is invalid or has expired"))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Invites are per organisation and email, so one organisation's invite never replaces another's.
fn invite_id(organisation: &str, email: &str) -> String {
    accounts::digest_hex(format!("{organisation}\n{email}").as_bytes())
}

impl Gateway {
    /// Secrets in the gateway's own namespace (accounts, invites, signing keys).
    pub fn own_secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}
