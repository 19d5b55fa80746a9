//! Who is asking and what they may do. A session is a JWT re-verified on every request, and
//! checked against the account it was opened with, from the watch cache: a password reset or a
//! "sign out everywhere" ends it. What it may do comes from the Organisation cache at that
//! moment, not from the token, so removing or demoting a member takes effect on their next
//! request; and only in organisations its credential was admitted to (see [`crate::accounts`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use k8s_openapi::jiff::Timestamp;
use tracing::debug;

use crate::accounts::Account;
use crate::crd::{Organisation, Role};
use crate::gateway::Gateway;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::token::{Expectations, Membership};

/// A verified session: the bearer of a valid, unexpired token issued by this gateway, whose
/// credential still exists and has not been signed out since.
#[derive(Debug, Clone)]
pub struct Session {
    pub email: String,
    /// The credential the session was opened with.
    pub credential: String,
    pub issued_at: i64,
    /// The memberships the token was issued with (what the user was when signing in).
    pub claimed: Vec<Membership>,
    pub account: Arc<Account>,
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
        let Some(token) = bearer_token(header) else {
            return Err(ApiError::unauthorized("sign in: send `Authorization: Bearer <token>` from /api/auth/login"));
        };
        Session::from_token(gateway, token)
    }

    /// The session `token` carries, re-verified now. The account and memberships it is checked
    /// against come from the caches, so while those cannot be confirmed (see `freshness`) no
    /// session is honoured: a password changed or a member removed meanwhile would not show.
    pub fn from_token(gateway: &Gateway, token: &str) -> ApiResult<Self> {
        gateway.freshness.check()?;
        let settings = &gateway.settings;
        let expect = Expectations {
            issuer: &settings.issuer,
            audience: &settings.audience,
            leeway: settings.token_leeway,
            session_ttl: settings.session_ttl,
        };
        let ended = || ApiError::unauthorized("the session token is invalid or expired; sign in again");
        let claims = gateway.keys().verify(token, &expect, Timestamp::now()).map_err(|error| {
            debug!(%error, "refused a session token");
            ended()
        })?;
        let account = gateway.caches.account(&claims.sub).ok_or_else(ended)?;
        if !account.session_valid(&claims.cred, claims.iat) {
            debug!("refused a session of an ended credential");
            return Err(ended());
        }
        Ok(Session {
            email: claims.sub,
            credential: claims.cred,
            issued_at: claims.iat,
            claimed: claims.orgs,
            account: Arc::new(account),
        })
    }
}

impl Session {
    /// This session's access to `org` as the caches have it now: for what outlives the request
    /// that opened it (an event stream, a terminal), which must end with the session, the
    /// credential or the membership.
    pub fn access_now(&self, gateway: &Gateway, org: &str, needed: Role) -> ApiResult<Access> {
        let ended = || ApiError::unauthorized("the session has ended");
        let account = gateway.caches.account(&self.email).ok_or_else(ended)?;
        if !account.session_valid(&self.credential, self.issued_at) {
            return Err(ended());
        }
        access(gateway, &Session { account: Arc::new(account), ..self.clone() }, org, needed)
    }

    /// How long until the token expires (tokens live at most one session lifetime).
    pub fn remaining(&self, gateway: &Gateway) -> std::time::Duration {
        let expires = self.issued_at + gateway.settings.session_ttl.as_secs() as i64;
        std::time::Duration::from_secs((expires - Timestamp::now().as_second()).max(0) as u64)
    }
}

/// The token of an `Authorization` header using the `Bearer` scheme, whose name is
/// case-insensitive (RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A member's access to one organisation, as of this request.
pub struct Access {
    pub organisation: Arc<Organisation>,
    pub role: Role,
}

/// The caller's current role in `org`, which must be at least `needed`. An organisation the
/// caller does not belong to, or that the session's credential was never admitted to, answers
/// 404, as if it did not exist; a token that still names an organisation the user was removed
/// from (or signed out of) is no longer a valid session there (401).
pub fn access(gateway: &Gateway, session: &Session, org: &str, needed: Role) -> ApiResult<Access> {
    let organisation = gateway.caches.organisation(org);
    let role = organisation
        .as_deref()
        .and_then(|o| role_of(o, &session.email))
        .filter(|_| session.account.session_admits(&session.credential, session.issued_at, org));
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

/// Every organisation a session of `credential` issued at `issued_at` may act in, with the role,
/// from the cache: those that list the email, that the credential was admitted to, and that have
/// not signed the member out since.
pub fn memberships(gateway: &Gateway, account: &Account, credential: &str, issued_at: i64) -> Vec<Membership> {
    let mut found: Vec<Membership> = gateway
        .caches
        .organisations
        .state()
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter_map(|o| {
            let name = o.metadata.name.clone()?;
            let role = role_of(o, &account.email).filter(|_| account.session_admits(credential, issued_at, &name))?;
            Some(Membership { org: name, role: role.as_str().to_owned() })
        })
        .collect();
    found.sort_by(|a, b| a.org.cmp(&b.org));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }
}
