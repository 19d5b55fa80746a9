//! The AI relay: Anthropic's Messages API at `/api/orgs/{org}/projects/{project}/ai/v1/…`, for
//! clients inside the project's environment (its AI token, as `x-api-key`) and for members (a
//! session). Requests go to the organisation's jurisdiction's endpoint only, with the key from
//! ooda's namespace; the key never reaches a project. Answers stream back byte for byte.
//!
//! Nothing of a request or an answer is kept: no body is logged, cached or written, at any log
//! level. The only things read from an answer are its token counts (see [`usage`]), which become
//! metrics and the organisation's daily count. When the client goes, the upstream request goes
//! with it (dropping the answer's body closes the upstream connection); when the project stops
//! or the caller's access ends, open answers close.

pub mod limits;
pub mod usage;

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tracing::{debug, instrument, warn};

use crate::config::{AiRelay, OperatorConfig};
use crate::crd::names::TokenState;
use crate::crd::{DesiredState, Organisation, Project, Role};
use crate::gateway::Gateway;
use crate::gateway::auth::{Session, access};
use crate::gateway::error::ApiError;
use crate::gateway::extract::ApiPath;
use limits::Limits;
use usage::UsageTap;

/// The Messages API version sent when the client names none.
const DEFAULT_VERSION: &str = "2023-06-01";
/// Longest `anthropic-version` or `anthropic-beta` value passed on.
const MAX_HEADER_VALUE: usize = 1024;
/// Answer headers passed back to the client; the rest (the upstream account's rate limits and
/// organisation) are the platform's, not the client's.
const ANSWER_HEADERS: [&str; 4] = ["content-type", "request-id", "retry-after", "x-should-retry"];

/// Requests one replica relays at once; more are answered 503 with Retry-After.
pub const MAX_RELAYED: usize = 4096;

/// Per jurisdiction with a relay: a client with its timeouts. The organisations' limits, and
/// the requests in flight.
pub struct Relay {
    clients: BTreeMap<String, reqwest::Client>,
    limits: Limits,
    in_flight: Arc<Semaphore>,
}

impl Relay {
    pub fn new(config: &OperatorConfig) -> Self {
        let clients = config
            .jurisdictions
            .iter()
            .filter_map(|(name, jurisdiction)| Some((name.clone(), upstream_client(jurisdiction.ai.as_ref()?))))
            .collect();
        Self { clients, limits: Limits::default(), in_flight: Arc::new(Semaphore::new(MAX_RELAYED)) }
    }
}

fn upstream_client(relay: &AiRelay) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(relay.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Only the configured endpoint: never a proxy named by the environment.
        .no_proxy()
        .build()
        .expect("a TLS configuration from the built-in roots")
}

/// The Messages API operations the relay passes on.
#[derive(Clone, Copy)]
enum Operation {
    Messages,
    CountTokens,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Operation::Messages => "/v1/messages",
            Operation::CountTokens => "/v1/messages/count_tokens",
        }
    }
}

/// `POST …/ai/v1/messages`
pub async fn messages(
    State(gateway): State<Arc<Gateway>>,
    ApiPath((org, name)): ApiPath<(String, String)>,
    request: Request,
) -> Result<Response<Body>, RelayError> {
    relay(gateway, org, name, Operation::Messages, request).await
}

/// `POST …/ai/v1/messages/count_tokens`
pub async fn count_tokens(
    State(gateway): State<Arc<Gateway>>,
    ApiPath((org, name)): ApiPath<(String, String)>,
    request: Request,
) -> Result<Response<Body>, RelayError> {
    relay(gateway, org, name, Operation::CountTokens, request).await
}

/// `GET …/ai/v1/models`: the models the jurisdiction allows, in the Models API's shape (clients
/// list them to offer a choice), answered here without asking the upstream.
pub async fn models(
    State(gateway): State<Arc<Gateway>>,
    ApiPath((org, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, RelayError> {
    let caller = Caller::of(&gateway, &org, &name, &headers)?;
    let target = Target::resolve(&gateway, &org, &name, &caller)?;
    let models = &target.relay.models;
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z" }))
        .collect();
    Ok(Json(json!({ "data": data, "has_more": false, "first_id": models.first(), "last_id": models.last() })))
}

#[instrument(skip_all, fields(org = %org, project = %name))]
async fn relay(
    gateway: Arc<Gateway>,
    org: String,
    name: String,
    operation: Operation,
    request: Request,
) -> Result<Response<Body>, RelayError> {
    let caller = Caller::of(&gateway, &org, &name, request.headers())?;
    let target = Target::resolve(&gateway, &org, &name, &caller)?;
    if let (Caller::Project { .. }, Some(project)) = (&caller, gateway.caches.project(&org, &name)) {
        // The environment at work: an agent that only talks to the model is not idle. (A member's
        // chat in the dashboard is not the environment's activity, and wakes nothing.)
        gateway.activity.touch(&org, &name, crate::gateway::idle_timeout(&gateway, &project), "ai");
    }
    let relay = target.relay.clone();
    let (version, beta) =
        (forwarded(request.headers(), "anthropic-version")?, forwarded(request.headers(), "anthropic-beta")?);
    let query = forwarded_query(request.uri().query())?;
    let body = read_body(request, relay.max_request_bytes).await?;
    let model = requested_model(&body, &relay)?;
    let key = gateway.caches.ai_key(&relay.credentials_secret).and_then(|key| HeaderValue::from_str(&key).ok());
    let Some(mut key) = key else {
        warn!(
            secret = relay.credentials_secret,
            "the AI relay's credentials Secret is missing or has no usable apiKey"
        );
        return Err(RelayError(ApiError::unavailable("the AI relay has no credentials for this jurisdiction yet", 5)));
    };
    // Never printed, whoever debug-formats the request.
    key.set_sensitive(true);
    let organisation = target.organisation.spec.ai.as_ref();
    if let Err(exceeded) = gateway.relay.limits.admit(&org, organisation, now_seconds()) {
        gateway.metrics.ai_request(&org, &model, "rate_limited");
        let mut refusal = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", exceeded.message);
        refusal.retry_after = Some(exceeded.retry_after.as_secs().max(1));
        return Err(RelayError(refusal));
    }

    let Ok(slot) = gateway.relay.in_flight.clone().try_acquire_owned() else {
        let message =
            format!("this gateway is relaying as many requests as it allows ({MAX_RELAYED}); try again shortly");
        return Err(RelayError(ApiError::unavailable(message, 2)));
    };
    let client = gateway.relay.clients.get(&target.jurisdiction).expect("a client for every jurisdiction with a relay");
    let url = format!("{}{}{query}", relay.endpoint.trim_end_matches('/'), operation.path());
    let mut upstream = client
        .post(url)
        .header("x-api-key", key)
        .header("anthropic-version", version.unwrap_or_else(|| HeaderValue::from_static(DEFAULT_VERSION)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(beta) = beta {
        upstream = upstream.header("anthropic-beta", beta);
    }
    let record =
        Record { gateway: gateway.clone(), org: org.clone(), model, outcome: "client_closed", tap: None, _slot: slot };
    // Subscribed before the answer comes, so that no change after the check below is missed.
    let closing = caller.closing(gateway.clone(), org.clone(), name.clone());
    let answer = match tokio::time::timeout(relay.idle_timeout, upstream.send()).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            warn!(jurisdiction = target.jurisdiction, error = %error.without_url(), "the AI endpoint failed");
            return Err(record.refuse(
                "upstream_unreachable",
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", "the AI endpoint could not be reached"),
            ));
        }
        Err(_) => {
            let message = format!("the AI endpoint did not answer within {}s", relay.idle_timeout.as_secs());
            return Err(record
                .refuse("upstream_timeout", ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)));
        }
    };
    // The project may have stopped or gone, or the token been replaced, while the upstream
    // thought: refuse in the API's shape rather than cut off an answer not yet begun.
    if let Err(refusal) = caller.standing(&gateway, &org, &name) {
        return Err(record.refuse("closed", refusal.0));
    }
    Ok(relayed(answer, record, operation, relay.idle_timeout, closing))
}

/// A value of the client's header `name` to pass on, checked.
fn forwarded(headers: &HeaderMap, name: &str) -> Result<Option<HeaderValue>, RelayError> {
    let Some(value) = headers.get(name) else { return Ok(None) };
    if value.len() > MAX_HEADER_VALUE || value.to_str().is_err() {
        return Err(RelayError(ApiError::bad_request(format!("{name} must be printable ASCII of at most 1 KiB"))));
    }
    Ok(Some(value.clone()))
}

/// The query to pass on (`?beta=true`, as Anthropic's SDKs send for beta features): short, and
/// only names and values of letters, digits, `_`, `-` and `.`.
fn forwarded_query(query: Option<&str>) -> Result<String, RelayError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else { return Ok(String::new()) };
    let plain = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    let valid = query.len() <= 256
        && query
            .split('&')
            .all(|pair| pair.split_once('=').map_or(plain(pair), |(name, value)| plain(name) && plain(value)));
    if !valid {
        return Err(RelayError(ApiError::bad_request("the query must be short name=value pairs such as beta=true")));
    }
    Ok(format!("?{query}"))
}

async fn read_body(request: Request, limit: u64) -> Result<Bytes, RelayError> {
    let too_large = || {
        let message = format!("the request body is larger than this relay's limit of {limit} bytes");
        RelayError(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message))
    };
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(_) => Err(RelayError(ApiError::bad_request("the request body broke off"))),
    }
}

/// The model a Messages request names, if the jurisdiction allows it.
fn requested_model(body: &[u8], relay: &AiRelay) -> Result<String, RelayError> {
    #[derive(Deserialize)]
    struct Head {
        model: Option<String>,
    }
    // serde_json's messages name the position, never the text.
    let head: Head = serde_json::from_slice(body)
        .map_err(|error| RelayError(ApiError::bad_request(format!("the body is not a JSON object: {error}"))))?;
    let Some(model) = head.model else {
        return Err(RelayError(ApiError::bad_request("model: a model is required")));
    };
    if !relay.models.contains(&model) {
        let printable: String = model.chars().take(128).filter(|c| !c.is_control()).collect();
        let allowed = relay.models.join(", ");
        let message = format!("model: {printable:?} is not allowed here; allowed: {allowed}");
        return Err(RelayError(ApiError::new(StatusCode::BAD_REQUEST, "model_not_allowed", message)));
    }
    Ok(model)
}

/// Who is asking: the environment (its project's AI token) or a member (a session).
#[derive(Clone)]
enum Caller {
    Project { token: Vec<u8> },
    Member(Box<Session>),
}

impl Caller {
    /// The project's AI token comes as `x-api-key` (Anthropic's SDKs) or as a bearer token
    /// (`ANTHROPIC_AUTH_TOKEN`); a bearer token with dots is a session.
    fn of(gateway: &Gateway, org: &str, name: &str, headers: &HeaderMap) -> Result<Self, RelayError> {
        gateway.freshness.check().map_err(RelayError)?;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, token)| token.trim());
        let presented = match (headers.get("x-api-key"), bearer) {
            (Some(key), _) => key.as_bytes(),
            (None, Some(token)) if token.contains('.') => {
                let session = Session::from_token(gateway, token)?;
                access(gateway, &session, org, Role::Member)?;
                return Ok(Caller::Member(Box::new(session)));
            }
            (None, Some(token)) => token.as_bytes(),
            (None, None) => {
                let message = "send the project's AI token as x-api-key, or a session as Authorization: Bearer";
                return Err(RelayError(ApiError::unauthorized(message)));
            }
        };
        match current_ai_token(gateway, org, name) {
            Some(token) if bool::from(token.as_slice().ct_eq(presented)) => Ok(Caller::Project { token }),
            _ => Err(RelayError(ApiError::unauthorized("the AI token is not valid for this project"))),
        }
    }

    /// Whether the caller may still use the project's relay: the refusal, if not.
    fn standing(&self, gateway: &Gateway, org: &str, name: &str) -> Result<(), RelayError> {
        gateway.freshness.check().map_err(RelayError)?;
        match self {
            Caller::Project { token } => match current_ai_token(gateway, org, name) {
                Some(current) if bool::from(current.as_slice().ct_eq(token)) => Ok(()),
                _ => Err(RelayError(ApiError::unauthorized("the project's AI token is no longer valid"))),
            },
            Caller::Member(session) => session.access_now(gateway, org, Role::Member).map(|_| ()).map_err(RelayError),
        }?;
        running_project(gateway, org, name).map(|_| ())
    }

    /// Resolves with the reason once the caller may no longer use the relay: the project stops
    /// or goes, the token is replaced, the member is removed, the session ends. Changes are
    /// watched from this call on, not from the first poll.
    fn closing(&self, gateway: Arc<Gateway>, org: String, name: String) -> BoxFuture<'static, String> {
        let mut changes = gateway.caches.changes();
        changes.borrow_and_update();
        let caller = self.clone();
        async move {
            let expiry = match &caller {
                Caller::Member(session) => session.remaining(&gateway),
                Caller::Project { .. } => Duration::MAX,
            };
            let watch = async {
                loop {
                    if changes.changed().await.is_err() {
                        return "the gateway is shutting down".to_owned();
                    }
                    if let Err(refusal) = caller.standing(&gateway, &org, &name) {
                        return refusal.0.message;
                    }
                }
            };
            tokio::select! {
                reason = watch => reason,
                () = tokio::time::sleep(expiry) => "the session has expired".to_owned(),
            }
        }
        .boxed()
    }
}

/// The project's AI token, unless the project is gone or stopped (fail closed: no Secret, no
/// token).
fn current_ai_token(gateway: &Gateway, org: &str, name: &str) -> Option<Vec<u8>> {
    let project = gateway.caches.project(org, name)?;
    let issued = gateway.caches.ai_token(org, name)?;
    let running = project.spec.lifecycle.state != DesiredState::Stopped && issued.state == TokenState::Running;
    running.then_some(issued.token)
}

fn running_project(gateway: &Gateway, org: &str, name: &str) -> Result<Arc<Project>, RelayError> {
    let project = gateway
        .caches
        .project(org, name)
        .ok_or_else(|| RelayError(ApiError::not_found(format!("project {name:?}"))))?;
    if project.spec.lifecycle.state == DesiredState::Stopped {
        let message = format!("project {name:?} is stopped; start it to use its AI relay");
        return Err(RelayError(ApiError::conflict("project_stopped", message)));
    }
    Ok(project)
}

/// Where a request goes: the organisation's jurisdiction's relay, and nowhere else.
struct Target {
    organisation: Arc<Organisation>,
    jurisdiction: String,
    relay: AiRelay,
}

impl Target {
    fn resolve(gateway: &Gateway, org: &str, name: &str, caller: &Caller) -> Result<Self, RelayError> {
        if let Caller::Member(_) = caller {
            running_project(gateway, org, name)?;
        }
        let organisation = gateway
            .caches
            .organisation(org)
            .ok_or_else(|| RelayError(ApiError::not_found(format!("organisation {org:?}"))))?;
        let jurisdiction = organisation.spec.jurisdiction.clone();
        let Some(relay) = gateway.config.jurisdictions.get(&jurisdiction).and_then(|j| j.ai.clone()) else {
            let message = format!("jurisdiction {jurisdiction:?} has no AI relay configured");
            return Err(RelayError(ApiError::conflict("ai_not_configured", message)));
        };
        Ok(Self { organisation, jurisdiction, relay })
    }
}

/// What one relayed request is counted as, once it ends (however it ends: dropped with the
/// client's connection, too).
struct Record {
    gateway: Arc<Gateway>,
    org: String,
    model: String,
    outcome: &'static str,
    tap: Option<UsageTap>,
    /// Held until the answer ends.
    _slot: OwnedSemaphorePermit,
}

impl Record {
    fn refuse(mut self, outcome: &'static str, error: ApiError) -> RelayError {
        self.outcome = outcome;
        RelayError(error)
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let metrics = &self.gateway.metrics;
        metrics.ai_request(&self.org, &self.model, self.outcome);
        if let Some(tap) = &self.tap {
            let usage = tap.usage();
            metrics.ai_tokens(&self.org, &self.model, usage.input(), usage.output_tokens);
            self.gateway.relay.limits.used(&self.org, usage.total(), now_seconds());
        }
    }
}

/// The upstream's answer as the client's: its status, the headers that are the client's
/// business, and the body as it arrives.
fn relayed(
    answer: reqwest::Response,
    mut record: Record,
    operation: Operation,
    idle: Duration,
    closing: BoxFuture<'static, String>,
) -> Response<Body> {
    let status = answer.status();
    let mut head = Response::builder().status(status.as_u16());
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(name) {
            head = head.header(HeaderName::from_static(name), value.as_bytes());
        }
    }
    let content_type = answer.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let events = content_type.starts_with("text/event-stream");
    record.outcome = if status.is_success() { "client_closed" } else { "upstream_error" };
    if status.is_success() && matches!(operation, Operation::Messages) {
        record.tap = Some(UsageTap::for_content_type(content_type));
    }
    let state = Relayed {
        upstream: answer.bytes_stream().boxed(),
        idle,
        stall: Box::pin(tokio::time::sleep(idle)),
        closing,
        events,
        at_boundary: true,
        ending: None,
        success: status.is_success(),
        record,
    };
    let body = futures::stream::unfold(state, Relayed::next);
    head.body(Body::from_stream(body)).expect("a status and headers taken from a valid answer")
}

/// An answer's body on its way: the upstream's bytes, until they end, stall, or the caller may
/// no longer have them.
struct Relayed {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    idle: Duration,
    /// Fires once the upstream has sent nothing for `idle`; reset by every piece.
    stall: Pin<Box<Sleep>>,
    closing: BoxFuture<'static, String>,
    /// The answer is a Server-Sent Events stream.
    events: bool,
    /// What was sent so far ends with a whole event, so an `error` event may follow.
    at_boundary: bool,
    /// Closing: the stream ends after this.
    ending: Option<&'static str>,
    success: bool,
    record: Record,
}

impl Relayed {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Self)> {
        if let Some(outcome) = self.ending {
            self.record.outcome = outcome;
            return None;
        }
        let reason = tokio::select! {
            reason = &mut self.closing => (reason, "closed"),
            () = &mut self.stall => (format!("the AI endpoint sent nothing for {}s", self.idle.as_secs()), "upstream_timeout"),
            next = self.upstream.next() => match next {
                Some(Ok(bytes)) => {
                    if let Some(tap) = self.record.tap.as_mut() {
                        tap.feed(&bytes);
                    }
                    self.at_boundary = bytes.ends_with(b"\n\n") || bytes.ends_with(b"\r\n\r\n");
                    self.stall.as_mut().reset(tokio::time::Instant::now() + self.idle);
                    return Some((Ok(bytes), self));
                }
                None => {
                    self.record.outcome = if self.success { "completed" } else { "upstream_error" };
                    return None;
                }
                Some(Err(error)) => {
                    debug!(error = %error.without_url(), "the AI endpoint's answer broke off");
                    ("the AI endpoint's answer broke off".to_owned(), "upstream_failed")
                }
            },
        };
        let (message, outcome) = reason;
        debug!(reason = message, "closing a relayed answer");
        self.record.outcome = outcome;
        if self.events && self.at_boundary {
            // Anthropic's own way to fail a stream: clients raise it as an error.
            let event = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
            self.ending = Some(outcome);
            return Some((Ok(Bytes::from(format!("event: error\ndata: {event}\n\n"))), self));
        }
        // Mid-event: cut the response off, so the client cannot take it for a whole one.
        self.ending = Some(outcome);
        Some((Err(io::Error::other(message)), self))
    }
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A refusal in the Messages API's error shape, which Anthropic's clients read: the same status,
/// message and `Retry-After` as the rest of the API, with ooda's code beside Anthropic's type.
pub struct RelayError(pub ApiError);

impl From<ApiError> for RelayError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> axum::response::Response {
        let error = self.0;
        let kind = match error.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            status if status.is_client_error() => "invalid_request_error",
            _ => "api_error",
        };
        let body = json!({ "type": "error", "error": { "type": kind, "message": error.message, "code": error.code } });
        let mut response = (error.status, Json(body)).into_response();
        if let Some(seconds) = error.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_query_is_passed_on() {
        let passed = |query: Option<&str>| forwarded_query(query).ok();
        assert_eq!(passed(None), Some(String::new()));
        assert_eq!(passed(Some("")), Some(String::new()));
        assert_eq!(passed(Some("beta=true")), Some("?beta=true".to_owned()));
        assert_eq!(passed(Some("beta=true&limit=20")), Some("?beta=true&limit=20".to_owned()));
        for refused in ["beta=%2F..", "x=1#", "a=b=c", "=1", "a=", "a&&b", &"a".repeat(300)] {
            assert!(forwarded_query(Some(refused)).is_err(), "{refused:?}");
        }
    }
}
