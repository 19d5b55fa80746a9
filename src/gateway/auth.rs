//! Who is asking and what they may do. A session is a JWT re-verified on every request; what it
//! may do comes from the Organisation cache at that moment, not from the token, so removing or
//! demoting a member takes effect on their next request.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use tracing::debug;

use crate::accounts::{AccountError, AccountStore, PasswordHash};
use crate::crd::{Organisation, Role};
use crate::gateway::Gateway;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::token::{Expectations, Membership};

/// Where passwords are kept. The gateway uses Secrets ([`AccountStore`]).
pub trait Accounts: Send + Sync {
    fn password_hash<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<PasswordHash>, AccountError>>;
    fn create<'a>(&'a self, email: &'a str, hash: &'a PasswordHash) -> BoxFuture<'a, Result<(), AccountError>>;
}

impl Accounts for AccountStore {
    fn password_hash<'a>(&'a self, email: &'a str) -> BoxFuture<'a, Result<Option<PasswordHash>, AccountError>> {
        Box::pin(AccountStore::password_hash(self, email))
    }

    fn create<'a>(&'a self, email: &'a str, hash: &'a PasswordHash) -> BoxFuture<'a, Result<(), AccountError>> {
        Box::pin(self.add(email, hash))
    }
}

/// A verified session: the bearer of a valid, unexpired token issued by this gateway.
#[derive(Debug, Clone)]
pub struct Session {
    pub email: String,
    /// The memberships the token was issued with (what the user was when signing in).
    pub claimed: Vec<Membership>,
}

impl FromRequestParts<Arc<Gateway>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> ApiResult<Self> {
        Session::from_headers(gateway, &parts.headers)
    }
}

impl Session {
    /// The session a request's `Authorization: Bearer` header carries, re-verified now.
    pub fn from_headers(gateway: &Gateway, headers: &HeaderMap) -> ApiResult<Self> {
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(ApiError::unauthorized("sign in: send `Authorization: Bearer <token>` from /api/auth/login"));
        };
        let settings = &gateway.settings;
        let expect =
            Expectations { issuer: &settings.issuer, audience: &settings.audience, leeway: settings.token_leeway };
        let claims = gateway.keys().verify(token, &expect, Timestamp::now()).map_err(|error| {
            debug!(%error, "refused a session token");
            ApiError::unauthorized("the session token is invalid or expired; sign in again")
        })?;
        Ok(Session { email: claims.sub, claimed: claims.orgs })
    }
}

/// A member's access to one organisation, as of this request.
pub struct Access {
    pub organisation: Arc<Organisation>,
    pub role: Role,
}

/// The caller's current role in `org`, which must be at least `needed`. An organisation the
/// caller does not belong to answers 404, as if it did not exist; a token that still names an
/// organisation the user was removed from is no longer a valid session (401).
pub fn access(gateway: &Gateway, session: &Session, org: &str, needed: Role) -> ApiResult<Access> {
    let organisation = gateway.caches.organisation(org);
    let role = organisation.as_deref().and_then(|o| role_of(o, &session.email));
    let Some(role) = role else {
        if session.claimed.iter().any(|m| m.org == org) {
            return Err(ApiError::unauthorized("your membership has changed; sign in again"));
        }
        return Err(ApiError::not_found(format!("organisation {org:?}")));
    };
    if needed == Role::Admin && role != Role::Admin {
        return Err(ApiError::forbidden(format!("only an admin of {org:?} may do this")));
    }
    let organisation = organisation.expect("a role implies the organisation");
    Ok(Access { organisation, role })
}

pub fn role_of(organisation: &Organisation, email: &str) -> Option<Role> {
    organisation.spec.members.iter().find(|m| m.email == email).map(|m| m.role)
}

/// Every organisation `email` belongs to, with the role, from the cache.
pub fn memberships(gateway: &Gateway, email: &str) -> Vec<Membership> {
    let mut found: Vec<Membership> = gateway
        .caches
        .organisations
        .state()
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter_map(|o| {
            let role = role_of(o, email)?;
            Some(Membership { org: o.metadata.name.clone()?, role: role_name(role).to_owned() })
        })
        .collect();
    found.sort_by(|a, b| a.org.cmp(&b.org));
    found
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}
