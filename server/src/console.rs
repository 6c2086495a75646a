//! The debug console: a page built into the binary (`GET /console`) that shows one app's live
//! connections, channels and presence members, streams what happens (connects, disconnects,
//! subscriptions, client events, server events, webhook deliveries) over server-sent events,
//! and triggers events through the same validation, rate limits and publish path as
//! `POST /apps/{id}/events`.
//!
//! On in the embedded default, off otherwise unless `--console`. Every data endpoint needs
//! `Authorization: Bearer <token>` where the token is the app's secret or `--console-token`.
//! The log is this node's: on a cluster, open the console of each node (or put one behind a
//! sticky route).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::apps::App;
use crate::http_api::ApiError;
use crate::metrics::AppLabel;
use crate::protocol::{parse_channel, ChannelKind};
use crate::server::ServerState;

/// The page, with its script and styles inline: nothing is fetched from elsewhere.
const PAGE: &str = include_str!("console/console.html");

/// Log lines kept for slow readers before they miss some (and are told so).
const BACKLOG: usize = 1024;

/// One thing that happened, as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// App the entry belongs to (not sent to the page: the stream is per app).
    #[serde(skip)]
    pub app_id: String,
    /// `connected`, `disconnected`, `subscribed`, `unsubscribed`, `client_event`,
    /// `server_event`, `webhook`.
    pub kind: &'static str,
    /// Channel, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Event name, for events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Socket, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_id: Option<String>,
    /// Free text: a close reason, a webhook's URL and status, an event's data (shortened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LogEntry {
    /// An entry of `kind` for `app_id`, stamped now.
    pub fn new(app_id: &str, kind: &'static str) -> Self {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        LogEntry {
            at,
            app_id: app_id.to_owned(),
            kind,
            channel: None,
            event: None,
            socket_id: None,
            detail: None,
        }
    }

    /// With a channel.
    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_owned());
        self
    }

    /// With an event name.
    pub fn event(mut self, event: &str) -> Self {
        self.event = Some(event.to_owned());
        self
    }

    /// With a socket id.
    pub fn socket(mut self, socket_id: &str) -> Self {
        self.socket_id = Some(socket_id.to_owned());
        self
    }

    /// With detail text, cut to 300 characters.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        let mut detail: String = detail.into();
        if let Some((cut, _)) = detail.char_indices().nth(300) {
            detail.truncate(cut);
            detail.push('…');
        }
        self.detail = Some(detail);
        self
    }
}

/// Where log entries go. Emitting costs one atomic load when no console is open.
#[derive(Clone, Debug)]
pub struct ConsoleLog {
    tx: broadcast::Sender<Arc<LogEntry>>,
}

impl Default for ConsoleLog {
    fn default() -> Self {
        ConsoleLog { tx: broadcast::Sender::new(BACKLOG) }
    }
}

impl ConsoleLog {
    /// Records what `entry` builds, only if someone is watching.
    pub fn emit(&self, entry: impl FnOnce() -> LogEntry) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(entry()));
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<LogEntry>> {
        self.tx.subscribe()
    }
}

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
    for (name, stats) in state.cluster.channels(&app.id, None).await.map_err(ApiError::from)? {
        let presence = parse_channel(&name, usize::MAX).is_ok_and(|c| c.kind == ChannelKind::Presence);
        let members = if presence {
            let members = state.cluster.members(&app.id, &name).await.map_err(ApiError::from)?;
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
    crate::http_api::events::trigger_value(&state, &app, body).await?;
    Ok(Json(json!({})))
}
