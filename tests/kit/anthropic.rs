//! A stand-in for Anthropic's Messages API on loopback, for the relay's tests and benchmark. It
//! answers `POST /v1/messages` as the API does, streamed (`message_start`, `content_block_*`,
//! `message_delta` with `usage`, `message_stop`) or not, and records what it received and which
//! streams were cut off before their end.
//!
//! The reply is `"<name> heard: <the last user message>"`, so whatever the prompt holds travels
//! back. The prompt steers it: `slowly` streams 600 pieces 50 ms apart (half a minute), `stall`
//! falls silent for a minute after `message_start`, `hold` answers only once the test calls
//! `release_one`, and a `max_tokens` over 100,000 is refused with the API's own error shape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

/// What one request brought.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub query: Option<String>,
    /// Every header, `name: value` per line.
    pub headers: String,
    pub api_key: Option<String>,
    pub version: Option<String>,
    pub beta: Option<String>,
    pub body: String,
}

pub struct StandIn {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Streams the relay cut off before their end, counted as each is dropped.
    pub cancelled: watch::Receiver<u32>,
    held: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    name: String,
    received: Arc<Mutex<Vec<Received>>>,
    cancelled: Arc<watch::Sender<u32>>,
    /// Pieces a plain streamed reply is cut into.
    pieces: usize,
    /// One permit per `hold` request let go.
    held: Arc<Semaphore>,
}

impl StandIn {
    /// Starts one on a free loopback port; `name` is in every reply.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, 5).await
    }

    /// The same, cutting streamed replies into `pieces` `content_block_delta` events.
    pub async fn start_with(name: &str, pieces: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the stand-in");
        let addr = listener.local_addr().expect("address");
        let (cancelled, cancelled_rx) = watch::channel(0);
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            name: name.to_owned(),
            received: received.clone(),
            cancelled: Arc::new(cancelled),
            pieces: pieces.max(1),
            held: Arc::new(Semaphore::new(0)),
        };
        let held = shared.held.clone();
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("stand-in serves");
        });
        Self { addr, received, cancelled: cancelled_rx, held, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").clone()
    }

    /// Lets one `hold` request be answered.
    pub fn release_one(&self) {
        self.held.add_permits(1);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(shared: &Shared, path: &str, query: Option<String>, headers: &HeaderMap, body: &Bytes) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let all = headers.iter().map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect();
    shared.received.lock().expect("received lock").push(Received {
        path: path.to_owned(),
        query,
        headers: all,
        api_key: header("x-api-key"),
        version: header("anthropic-version"),
        beta: header("anthropic-beta"),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

/// The text of the last user message: a string, or its text blocks.
fn prompt(request: &Value) -> String {
    let last = request["messages"].as_array().and_then(|m| m.iter().rev().find(|m| m["role"] == "user"));
    match last.map(|m| &m["content"]) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

async fn messages(
    State(shared): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, "/v1/messages", query, &headers, &body);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", "the body is not JSON");
    };
    let max_tokens = request["max_tokens"].as_u64().unwrap_or(0);
    if max_tokens > 100_000 {
        let message = format!("max_tokens: {max_tokens} > 64000, which is the maximum allowed");
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", &message);
    }
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let prompt = prompt(&request);
    let reply = format!("{} heard: {prompt}", shared.name);
    let input_tokens = prompt.split_whitespace().count() as u64 + 10;
    if prompt.contains("hold") {
        shared.held.acquire().await.expect("the semaphore is never closed").forget();
    }
    if request["stream"].as_bool() != Some(true) {
        let message = json!({
            "id": "msg_standin", "type": "message", "role": "assistant", "model": model,
            "content": [{ "type": "text", "text": reply }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": input_tokens, "output_tokens": 7 },
        });
        return ([("content-type", "application/json"), ("request-id", "req_standin")], message.to_string())
            .into_response();
    }
    let (pieces, gap) = if prompt.contains("slowly") {
        (600, Duration::from_millis(50))
    } else if prompt.contains("stall") {
        (1, Duration::from_secs(60))
    } else {
        (shared.pieces, Duration::ZERO)
    };
    let events = stream_events(reply, model, input_tokens, pieces, gap, shared);
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("request-id", "req_standin")
        .body(Body::from_stream(events))
        .expect("a response")
}

/// Counts a cut-off stream when dropped before its end.
struct Cutoff {
    finished: bool,
    cancelled: Arc<watch::Sender<u32>>,
}

impl Cutoff {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Cutoff {
    fn drop(&mut self) {
        if !self.finished {
            self.cancelled.send_modify(|n| *n += 1);
        }
    }
}

fn stream_events(
    reply: String,
    model: String,
    input_tokens: u64,
    pieces: usize,
    gap: Duration,
    shared: Shared,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let chars: Vec<char> = reply.chars().collect();
    let size = chars.len().div_ceil(pieces).max(1);
    let mut deltas: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    deltas.resize(pieces, String::new());
    let head = vec![
        event(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": "msg_standin", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": input_tokens, "output_tokens": 1 },
            } }),
        ),
        event(
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        event("ping", json!({ "type": "ping" })),
    ];
    let tail = vec![
        event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })),
        event(
            "message_delta",
            json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                    "usage": { "output_tokens": pieces } }),
        ),
        event("message_stop", json!({ "type": "message_stop" })),
    ];
    let body: Vec<Bytes> = head
        .into_iter()
        .chain(deltas.into_iter().map(|text| {
            event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": text } }),
            )
        }))
        .chain(tail)
        .collect();
    let cutoff = Cutoff { finished: false, cancelled: shared.cancelled.clone() };
    futures::stream::unfold((body.into_iter(), cutoff, true), move |(mut events, mut cutoff, first)| async move {
        if !first && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        match events.next() {
            Some(bytes) => Some((Ok(bytes), (events, cutoff, false))),
            None => {
                cutoff.finish();
                None
            }
        }
    })
}

async fn count_tokens(
    State(shared): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, "/v1/messages/count_tokens", query, &headers, &body);
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let tokens = prompt(&request).split_whitespace().count() + 10;
    ([("content-type", "application/json")], json!({ "input_tokens": tokens }).to_string()).into_response()
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    (status, [("content-type", "application/json"), ("request-id", "req_standin")], body.to_string()).into_response()
}
