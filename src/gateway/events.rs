//! `GET /api/orgs/{org}/events`: the organisation's projects as server-sent events, pushed from
//! the gateway's watch caches, so the dashboard shows a project hibernating, waking or stopping as
//! the API server records it, with no polling.
//!
//! The stream opens with `projects` (every project, as `GET …/projects` lists them), then sends
//! `project` (one project, new or changed) and `deleted` (`{"name"}`) as the caches change, and a
//! comment every [`HEARTBEAT`] so proxies keep it open. The session is checked again on every
//! change: when it ends, or the caller stops being a member, the stream says `ended` and closes.
//! A stream also closes when its token expires. Clients authenticate with the `Authorization`
//! header (the dashboard reads the stream with `fetch`), so tokens never go into URLs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tracing::instrument;

use crate::crd::Role;
use crate::gateway::Gateway;
use crate::gateway::api::organisation_projects;
use crate::gateway::auth::{Session, access};
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::extract::ApiPath;

/// How often an idle stream sends a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Event streams one gateway holds open at most; more are refused with 503.
pub const MAX_STREAMS: usize = 4096;

#[instrument(skip_all, fields(org = %org))]
pub async fn events(
    State(gateway): State<Arc<Gateway>>,
    session: Session,
    ApiPath(org): ApiPath<String>,
) -> ApiResult<Response> {
    access(&gateway, &session, &org, Role::Member)?;
    let permit = gateway
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many open event streams; try again", 5))?;
    let expires = Instant::now() + session.remaining(&gateway);
    let follower = Follower {
        changes: gateway.caches.changes(),
        gateway,
        session,
        org,
        sent: None,
        heartbeat: Instant::now() + HEARTBEAT,
        expires,
        _permit: permit,
    };
    let body = Body::from_stream(stream::unfold(Some(follower), |follower| async move {
        let (chunk, next) = follower?.next().await;
        Some((Ok::<_, Infallible>(chunk), next))
    }));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    // Proxies that buffer responses (nginx) would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open stream: what it last sent, and how to notice changes.
struct Follower {
    gateway: Arc<Gateway>,
    session: Session,
    org: String,
    changes: watch::Receiver<u64>,
    /// The projects as last sent, by name (`None` before the first message).
    sent: Option<BTreeMap<String, Value>>,
    /// When to send a heartbeat if nothing else went out: changes elsewhere must not put it off.
    heartbeat: Instant,
    expires: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Follower {
    /// The next chunk to send, and the follower for the one after (`None`: the stream ends).
    async fn next(mut self) -> (Bytes, Option<Follower>) {
        if self.sent.is_none() {
            self.changes.mark_unchanged();
            let projects = self.projects();
            let chunk = message("projects", &json!({ "projects": projects.values().collect::<Vec<_>>() }));
            self.sent = Some(projects);
            self.heartbeat = Instant::now() + HEARTBEAT;
            return (chunk, Some(self));
        }
        loop {
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() {
                    return (message("ended", &json!({ "reason": "the gateway is shutting down" })), None);
                },
                () = tokio::time::sleep_until(self.heartbeat) => {
                    self.heartbeat = Instant::now() + HEARTBEAT;
                    return (Bytes::from_static(b": heartbeat\n\n"), Some(self));
                }
                () = tokio::time::sleep_until(self.expires) => {
                    return (message("ended", &json!({ "reason": "the session has expired" })), None);
                }
            }
            if let Err(refusal) = self.session.access_now(&self.gateway, &self.org, Role::Member) {
                return (message("ended", &json!({ "reason": refusal.message })), None);
            }
            let current = self.projects();
            let chunk = self.changes_since_sent(&current);
            self.sent = Some(current);
            if !chunk.is_empty() {
                self.heartbeat = Instant::now() + HEARTBEAT;
                return (Bytes::from(chunk), Some(self));
            }
        }
    }

    fn projects(&self) -> BTreeMap<String, Value> {
        organisation_projects(&self.gateway, &self.org)
            .into_iter()
            .map(|summary| (summary["name"].as_str().unwrap_or_default().to_owned(), summary))
            .collect()
    }

    /// `project` for each new or changed project, `deleted` for each gone one.
    fn changes_since_sent(&self, current: &BTreeMap<String, Value>) -> String {
        let sent = self.sent.as_ref().expect("sent once");
        let changed = current.iter().filter(|(name, summary)| sent.get(*name) != Some(summary));
        let deleted = sent.keys().filter(|name| !current.contains_key(*name));
        let mut chunk = String::new();
        for (_, summary) in changed {
            chunk.push_str(&event_text("project", summary));
        }
        for name in deleted {
            chunk.push_str(&event_text("deleted", &json!({ "name": name })));
        }
        chunk
    }
}

fn message(event: &str, data: &Value) -> Bytes {
    Bytes::from(event_text(event, data))
}

/// One server-sent event. JSON has no raw newlines, so `data` is one line.
fn event_text(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}
