//! Every API failure leaves the gateway as `{"error": code, "message": …}` with the right status,
//! through one type, so clients can branch on a stable code and people can read the message.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::warn;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `not_found`, `forbidden`, `invalid_request`…
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// For a refused object: each field the API server named (`spec.ports[0].port`) and why, so
    /// a form can show the reason beside its field.
    pub fields: Vec<(String, String)>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, fields: Vec::new() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message) }
    }

    pub fn too_many_requests(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "too many attempts; try again later")
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if !self.fields.is_empty() {
            let fields = self.fields.iter().map(|(field, message)| json!({ "field": field, "message": message }));
            body["fields"] = fields.collect();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The API server's answer to a write, in the client's terms: its validation messages name the
/// field, so they are passed on; anything unexpected is logged and reported without detail.
impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        match &error {
            kube::Error::Api(status) => match status.code {
                400 | 422 => Self {
                    fields: status
                        .details
                        .iter()
                        .flat_map(|details| &details.causes)
                        // The API server names no field for some refusals ("<nil>").
                        .filter(|cause| !cause.field.is_empty() && cause.field != "<nil>")
                        .map(|cause| (cause.field.clone(), cause.message.clone()))
                        .collect(),
                    ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", status.message.clone())
                },
                // The ResourceQuota admission plugin answers 403 too, but it is the organisation's
                // limit, not the gateway's permissions: the caller can act on it.
                403 if status.message.contains("exceeded quota") => {
                    let message =
                        status.message.find("exceeded quota").map_or(&status.message[..], |at| &status.message[at..]);
                    Self::conflict("quota_exceeded", format!("the organisation's quota does not allow this: {message}"))
                }
                403 => {
                    warn!(message = %status.message, "the API server refused the gateway");
                    Self::internal("the gateway is not allowed to do this; see its logs")
                }
                404 => Self::not_found("object"),
                409 => Self::conflict("conflict", status.message.clone()),
                _ => {
                    warn!(%error, "API server error");
                    Self::unavailable("the Kubernetes API server failed; try again", 1)
                }
            },
            _ => {
                warn!(%error, "API server unreachable");
                Self::unavailable("the Kubernetes API server is unreachable; try again", 1)
            }
        }
    }
}

/// A body that is not the JSON an endpoint takes: say why (serde names the field), with 413
/// for bodies over the limit.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(status, "too_large", "request body too large");
        }
        let code =
            if status == StatusCode::UNSUPPORTED_MEDIA_TYPE { "unsupported_media_type" } else { "invalid_request" };
        Self::new(status, code, rejection.body_text())
    }
}
