//! The operator's own HTTP endpoints: `/healthz` (alive), `/readyz` (CRDs established and, on the
//! leader, every cache synced) and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;

use crate::crd::{Phase, Project};
use crate::operator::metrics::Metrics;
use crate::watch::Readiness;

#[derive(Default)]
pub struct Health {
    pub crds_established: AtomicBool,
    pub leading: AtomicBool,
    pub caches: Readiness,
    /// The leader's project cache (this term's), for the projects-by-phase gauge.
    pub projects: Mutex<Option<Store<Project>>>,
}

impl Health {
    /// Ready: the CRDs are established and, while leading, every watch has synced. A standby
    /// replica is ready as soon as it can take over.
    fn readiness(&self) -> Result<&'static str, &'static str> {
        if !self.crds_established.load(Ordering::Acquire) {
            return Err("waiting for the ooda.run CRDs to be established");
        }
        if !self.leading.load(Ordering::Acquire) {
            return Ok("standby: waiting for leadership");
        }
        if !self.caches.is_ready() {
            return Err("leader: waiting for watches to sync");
        }
        Ok("leader: reconciling")
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(why) => (StatusCode::OK, why),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let projects = state.health.projects.lock().expect("projects lock").clone();
    if let Some(projects) = projects {
        let all = projects.state();
        state.metrics.set_project_phases(|phase: Phase| {
            all.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase) == Some(phase)).count() as i64
        });
    }
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
