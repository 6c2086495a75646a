//! `/metrics` and `/healthz` of the operator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct WebState {
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the controllers run (CRDs found, watches started).
    pub running: Arc<AtomicBool>,
}

/// The router.
pub fn router(state: WebState) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(State(state): State<WebState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn healthz(State(state): State<WebState>) -> impl IntoResponse {
    if state.running.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
