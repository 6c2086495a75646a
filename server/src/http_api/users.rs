//! `POST /apps/{app_id}/users/{user_id}/terminate_connections` (and the app-less
//! `/users/{user_id}/terminate_connections` the Python SDK sends): closes every socket signed in
//! as the user, on every node, with 4009 (pusher-js does not reconnect).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::ApiError;
use crate::apps::App;
use crate::state::ServerState;

/// Terminates a user's connections.
pub async fn terminate(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    Path(path): Path<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let user_id = path.get("user_id").cloned().unwrap_or_default();
    let valid = !user_id.is_empty()
        && user_id.len() <= app.limits.max_user_id_length
        && user_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '=' | '@' | ',' | '.' | ';'));
    if !valid {
        return Err(ApiError::InvalidUserId(user_id));
    }
    state.cluster.users.terminate_user(&app.id, &user_id).await;
    tracing::info!(app_id = %app.id, user_id, "terminated user connections");
    Ok(Json(json!({})))
}
