//! `POST events` and `POST batch_events`: the body goes to the one publish path
//! ([`crate::publish::Publisher`]); this edge only shapes the JSON answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::ApiError;
use crate::apps::App;
use crate::state::ServerState;

/// `POST /apps/{app_id}/events`.
pub async fn trigger(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let info = state.publisher.trigger(&app, &body).await?;
    Ok(Json(match info {
        Some(channels) => json!({ "channels": channels }),
        None => json!({}),
    }))
}

/// `POST /apps/{app_id}/batch_events`.
pub async fn batch(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let info = state.publisher.batch(&app, &body).await?;
    Ok(Json(match info {
        Some(batch) => json!({ "batch": batch }),
        None => json!({}),
    }))
}
