//! The debug console: a page built into the binary (`GET /console`) that shows one app's live
//! connections, channels and presence members, streams what happens (connects, disconnects,
//! subscriptions, client events, server events, webhook deliveries: [`crate::console_log`]) over
//! server-sent events, and triggers events through the same validation, rate limits and publish
//! path as `POST /apps/{id}/events` ([`crate::publish`]).
//!
//! On in the embedded default, off otherwise unless `--console`. Every data endpoint needs
//! `Authorization: Bearer <token>` where the token is the app's secret or `--console-token`.
//! The log is this node's: on a cluster, open the console of each node (or put one behind a
//! sticky route).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::apps::App;
use crate::http_api::ApiError;
use crate::metrics::AppLabel;
use crate::protocol::{parse_channel, ChannelKind};
use crate::state::ServerState;

/// The page, with its script and styles inline: nothing is fetched from elsewhere.
const PAGE: &str = include_str!("console/console.html");

/// The console's routes (only mounted when the console is on).
pub fn router() -> Router<ServerState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/api/apps/{app_id}/state", get(app_state))
        .route("/console/api/apps/{app_id}/stream", get(stream))
        .route("/console/api/apps/{app_id}/trigger", post(trigger))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(PAGE),
    )
}

/// Why a console call is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No app with that id.
    #[error("no app with id {0:?}")]
    UnknownApp(String),
    /// Missing or wrong token.
    #[error("the console needs Authorization: Bearer <the app's secret or the console token>")]
    Unauthorized,
    /// The trigger was refused the way the HTTP API refuses it.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::Api(e) => e.into_response(),
            ConsoleError::UnknownApp(_) => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": self.to_string() }))).into_response()
            }
            ConsoleError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": self.to_string() }))).into_response()
            }
        }
    }
}

/// Constant-time comparison of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &ServerState, app_id: &str, headers: &HeaderMap) -> Result<Arc<App>, ConsoleError> {
    let app = state.apps.by_id(app_id).ok_or_else(|| ConsoleError::UnknownApp(app_id.to_owned()))?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ConsoleError::Unauthorized)?;
    let console_token = state.settings.console_token.as_deref().is_some_and(|t| same(t, token));
    if console_token || same(&app.secret, token) {
        Ok(app)
    } else {
        Err(ConsoleError::Unauthorized)
    }
}

/// `GET /console/api/apps/{id}/state`: connections on this node, channels (cluster-wide) with
/// subscriber counts and presence members.
async fn app_state(
    State(state): State<ServerState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ConsoleError> {
    let app = authorize(&state, &app_id, &headers)?;
    let connections = state.metrics.connected.get_or_create(&AppLabel::new(&app.id)).get();
    let mut channels = Vec::new();
    for (name, stats) in state.cluster.channels.channels(&app.id, None).await {
        let presence = parse_channel(&name, usize::MAX).is_ok_and(|c| c.kind == ChannelKind::Presence);
        let members = if presence {
            let members = state.cluster.channels.members(&app.id, &name).await;
            Some(
                members
                    .iter()
                    .map(|m| json!({ "id": &*m.user_id, "info": m.user_info.as_deref() }))
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        channels.push(json!({ "name": name, "subscriptions": stats.subscription_count, "users": stats.user_count, "members": members }));
    }
    Ok(Json(json!({ "app_id": app.id, "connections": connections, "channels": channels })))
}

/// `GET /console/api/apps/{id}/stream`: the app's log as server-sent events.
async fn stream(
    State(state): State<ServerState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ConsoleError> {
    let app = authorize(&state, &app_id, &headers)?;
    let rx = state.console.subscribe();
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (rx, app.id.clone(), shutdown),
        |(mut rx, app_id, shutdown)| async move {
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    r = rx.recv() => r,
                };
                let event = match received {
                    Ok(entry) if entry.app_id == app_id => {
                        SseEvent::default().event("log").json_data(entry.as_ref()).unwrap_or_default()
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        SseEvent::default().event("lagged").data(missed.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(event), (rx, app_id, shutdown)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Deserialize)]
struct TriggerForm {
    channel: String,
    event: String,
    data: String,
}

/// `POST /console/api/apps/{id}/trigger`: `{channel, event, data}`, published like
/// `POST /apps/{id}/events` (same validation, limits and path).
async fn trigger(
    State(state): State<ServerState>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    Json(form): Json<TriggerForm>,
) -> Result<Json<Value>, ConsoleError> {
    let app = authorize(&state, &app_id, &headers)?;
    let body = json!({ "name": form.event, "channel": form.channel, "data": form.data });
    state.publisher.trigger_value(&app, body).await.map_err(ApiError::from)?;
    Ok(Json(json!({})))
}
