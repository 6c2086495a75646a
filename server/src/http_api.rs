//! The Pusher HTTP API under `/apps/{app_id}/...`: every request passes the signature layer
//! ([`auth`]), then the event ([`events`]) or query ([`queries`]) handlers. Errors are JSON
//! `{"error": "..."}` with the status Pusher documents.

pub mod auth;
mod error;
pub(crate) mod events;
mod queries;
mod users;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use crate::publish::check_trigger_body;
pub use error::ApiError;

use crate::apps::App;
use crate::metrics::HttpLabels;
use crate::ratelimit::AppLimit;
use crate::state::ServerState;

/// The API routes, behind the signature layer.
pub fn router(state: ServerState) -> Router<ServerState> {
    Router::new()
        .route("/apps/{app_id}/events", post(events::trigger))
        .route("/apps/{app_id}/batch_events", post(events::batch))
        .route("/apps/{app_id}/channels", get(queries::channels))
        .route("/apps/{app_id}/channels/{channel}", get(queries::channel))
        .route("/apps/{app_id}/channels/{channel}/users", get(queries::users))
        .route("/apps/{app_id}/users/{user_id}/terminate_connections", post(users::terminate))
        // The official Python SDK leaves out /apps/{app_id} here; the app comes from auth_key.
        .route("/users/{user_id}/terminate_connections", post(users::terminate))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::verify))
        .layer(middleware::from_fn_with_state(state, count_calls))
}

/// Counts every API call by status for `herald_http_calls_total`.
async fn count_calls(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let labels = HttpLabels { status: response.status().as_u16() };
    state.metrics.http_calls.get_or_create(&labels).inc();
    response
}

/// Counts `n` against an app's rate limit; refuses with 429 (and a metric) when over it.
fn check_rate(
    state: &ServerState,
    app: &App,
    limit: AppLimit,
    per_second: u32,
    n: u64,
) -> Result<(), ApiError> {
    if state.rates.allow(&app.id, limit, per_second, n) {
        return Ok(());
    }
    state.metrics.limit_hit(&app.id, limit.label());
    Err(ApiError::RateLimited { limit: limit.label(), per_second })
}
