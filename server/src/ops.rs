//! The operations port: `/metrics`, `/healthz`, `/readyz` (not ready while draining or while
//! the cluster backend cannot answer for the whole cluster). Kept off the public port so it is
//! never exposed with the public Service by accident.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::cluster::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    health: Arc<dyn Health>,
}

/// The operations router: metrics, liveness and readiness (not ready while draining or while
/// the cluster backend is unavailable).
pub fn router(metrics: Arc<Metrics>, shutdown: CancellationToken, health: Arc<dyn Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(OpsState { metrics, shutdown, health })
}

async fn metrics_handler(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

async fn ready_handler(State(s): State<OpsState>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !s.health.ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "cluster backend unavailable: serving local sockets only\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
