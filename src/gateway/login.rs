//! Signing in. The client sends an auth key, never the password: `POST /api/auth/prelogin` tells
//! it how to derive one (see [`crate::accounts`]).
//!
//! An unknown email and a wrong password are the same to the caller: the same status and body,
//! and the same work (an unknown email derives a key with a decoy salt and the same parameters; a
//! known one derives one key, however many credentials it has). Hashing runs on the blocking pool
//! behind a semaphore, so a flood of sign-ins queues instead of taking the cores the proxy needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use base64::Engine;

use crate::accounts::{AccountError, AuthKey, CLIENT_ITERATIONS, CLIENT_KDF, Kdf, Key, client_salt, normalise_email};
use crate::gateway::Gateway;
use crate::gateway::auth::{Session, memberships};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::ApiJson;
use crate::gateway::token::Claims;

/// Longest email a user can have (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloginRequest {
    email: String,
}

/// `POST /api/auth/prelogin`: how a client derives the auth key for `email`. No account is read:
/// the salt comes from the email alone, so every email, known or not, gets the same answer's
/// shape, in the same time.
#[instrument(skip_all)]
pub async fn prelogin(ApiJson(request): ApiJson<PreloginRequest>) -> ApiResult<Json<Value>> {
    let email = normalise_email(&request.email);
    if email.len() > MAX_EMAIL_LEN {
        return Err(ApiError::bad_request(format!("email is at most {MAX_EMAIL_LEN} bytes")));
    }
    let salt = base64::engine::general_purpose::STANDARD.encode(client_salt(&email));
    Ok(Json(json!({ "kdf": CLIENT_KDF, "iterations": CLIENT_ITERATIONS, "salt": salt })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    email: String,
    /// The client's derivation of the password, as prelogin told it: 32 bytes, standard base64.
    auth_key: String,
}

/// The refusal of a malformed auth key (never a password: a client that sends one is told how).
pub fn parse_auth_key(text: &str) -> ApiResult<AuthKey> {
    AuthKey::parse(text).ok_or_else(|| {
        ApiError::bad_request(
            "authKey is 32 bytes in standard base64, derived from the password as POST /api/auth/prelogin says; \
             never the password itself",
        )
    })
}

/// A sign-in body as read: the email normalised, and the auth key.
fn sign_in_request(body: Result<Json<LoginRequest>, JsonRejection>) -> ApiResult<(String, AuthKey)> {
    let Json(request) = body?;
    let email = normalise_email(&request.email);
    if email.len() > MAX_EMAIL_LEN {
        return Err(ApiError::bad_request(format!("email is at most {MAX_EMAIL_LEN} bytes")));
    }
    Ok((email, parse_auth_key(&request.auth_key)?))
}

/// Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    use axum::extract::{FromRequest, Request};

    use super::*;

    /// A sign-in request's body read as `POST /api/auth/login` reads it, before any account is.
    pub async fn sign_in_body(request: Request) -> ApiResult<(String, AuthKey)> {
        sign_in_request(Json::<LoginRequest>::from_request(request, &()).await)
    }
}

#[instrument(skip_all, fields(client))]
pub async fn login(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let client = gateway.settings.trusted_proxies.client(peer.ip(), &headers);
    tracing::Span::current().record("client", tracing::field::display(client));
    let (email, auth_key) = sign_in_request(body)?;
    let _turn = gateway.turns.take(&email).await;
    let admitted = gateway.limiter.lock().expect("limiter lock").begin(&email, client, Instant::now());
    if let Err(wait) = admitted {
        gateway.metrics.login("limited");
        return Err(ApiError::too_many_requests(wait.as_secs().max(1)));
    }
    let mut attempt = Attempt { gateway: &gateway, email: &email, address: client, settled: false };
    let account = gateway.accounts.get(&email).await.map_err(|error| {
        warn!(%error, "could not read an account");
        ApiError::unavailable("accounts are unavailable; try again", 1)
    })?;
    // An account from before the client derivation can open for no key; it costs the same as
    // an unknown email, and its platform operator is told what to do.
    let kdf = match &account {
        Some(account) if account.kdf.takes_auth_keys() => account.kdf.clone(),
        Some(_) => {
            warn!(email, "this account predates client-side key derivation: reset it with `ooda user reset-password`");
            gateway.decoy_kdf.clone()
        }
        None => gateway.decoy_kdf.clone(),
    };
    let key = gateway.derive_key(kdf, auth_key).await?;
    let credential = account.as_ref().and_then(|a| Some((a, a.credential_for(&key)?.id.clone())));
    attempt.settled = true;
    let Some((account, credential)) = credential else {
        gateway.metrics.login("refused");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "wrong email or password"));
    };
    gateway.limiter.lock().expect("limiter lock").succeeded(&email, client);
    gateway.metrics.login("accepted");
    let issued = account.session_time(Timestamp::now().as_second());
    let expires = issued + gateway.settings.session_ttl.as_secs() as i64;
    let orgs = memberships(&gateway, account, &credential, issued);
    let claims = Claims {
        iss: gateway.settings.issuer.clone(),
        aud: gateway.settings.audience.clone(),
        sub: email.clone(),
        iat: issued,
        exp: expires,
        nbf: None,
        jti: crate::gateway::random_token(16),
        cred: credential,
        orgs: orgs.clone(),
    };
    let token = gateway.keys().issue(&claims);
    info!(email, "signed in");
    Ok(Json(json!({
        "token": token,
        "tokenType": "Bearer",
        "expiresAt": Timestamp::from_second(expires).map(|t| t.to_string()).unwrap_or_default(),
        "email": email,
        "organisations": orgs,
    })))
}

/// An admitted sign-in attempt. If it ends without an answer (the client went away, or the
/// accounts could not be read) it is handed back to the limiter: it revealed nothing.
struct Attempt<'a> {
    gateway: &'a Gateway,
    email: &'a str,
    address: std::net::IpAddr,
    settled: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.gateway.limiter.lock().expect("limiter lock").abandoned(self.email, self.address);
        }
    }
}

impl Gateway {
    /// PBKDF2 on the blocking pool, at most `hashing_slots` at a time.
    pub async fn derive_key(&self, kdf: Kdf, auth_key: AuthKey) -> ApiResult<Key> {
        let _slot = self.hashing.acquire().await.map_err(|_| ApiError::internal("shutting down"))?;
        tokio::task::spawn_blocking(move || kdf.derive(&auth_key))
            .await
            .map_err(|_| ApiError::internal("key check failed"))
    }
}

/// `POST /api/auth/sign-out-everywhere`: ends every session of the credential this one was
/// opened with, this one included. Other credentials of the account (other organisations'
/// invites) are not this session's to end.
#[instrument(skip_all)]
pub async fn sign_out_everywhere(State(gateway): State<Arc<Gateway>>, session: Session) -> ApiResult<StatusCode> {
    gateway
        .update_account(&session.email, |account| {
            let now = account.session_time(Timestamp::now().as_second());
            let credential =
                account.credential_mut(&session.credential).ok_or(AccountError::NotFound(session.email.clone()))?;
            credential.sessions_not_before = now;
            Ok(())
        })
        .await?;
    info!(email = session.email, "signed out everywhere");
    Ok(StatusCode::NO_CONTENT)
}
