//! `GET channels`, `GET channels/{name}`, `GET channels/{name}/users`: answered from the
//! cluster's counts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::ApiError;
use crate::apps::App;
use crate::protocol::{parse_channel, ChannelKind};
use crate::publish::Info;
use crate::state::ServerState;

/// `GET /apps/{app_id}/channels?filter_by_prefix=&info=user_count`.
pub async fn channels(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let prefix = query.get("filter_by_prefix").map(String::as_str).filter(|p| !p.is_empty());
    let info = Info::parse(query.get("info").map(String::as_str))?;
    if info.user_count && !prefix.is_some_and(|p| p.starts_with("presence-")) {
        return Err(ApiError::UserCountNeedsPresence);
    }
    let mut channels = Map::new();
    for (name, stats) in state.cluster.channels.channels(&app.id, prefix).await {
        let mut attrs = Map::new();
        if info.user_count {
            attrs.insert("user_count".into(), stats.user_count.into());
        }
        if info.subscription_count {
            attrs.insert("subscription_count".into(), stats.subscription_count.into());
        }
        channels.insert(name, Value::Object(attrs));
    }
    Ok(Json(json!({ "channels": channels })))
}

fn kind_of(app: &App, channel: &str) -> Result<ChannelKind, ApiError> {
    parse_channel(channel, app.limits.max_channel_name_length)
        .map(|n| n.kind)
        .map_err(|source| ApiError::InvalidChannel { channel: channel.to_owned(), source })
}

/// `GET /apps/{app_id}/channels/{channel}?info=user_count,subscription_count`.
pub async fn channel(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    Path((_, channel)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let kind = kind_of(&app, &channel)?;
    let info = Info::parse(query.get("info").map(String::as_str))?;
    if info.user_count && kind != ChannelKind::Presence {
        return Err(ApiError::UserCountNeedsPresence);
    }
    let stats = state.cluster.channels.channel_stats(&app.id, &channel).await;
    let mut body = Map::new();
    body.insert("occupied".into(), (stats.subscription_count > 0).into());
    if info.user_count {
        body.insert("user_count".into(), stats.user_count.into());
    }
    if info.subscription_count {
        body.insert("subscription_count".into(), stats.subscription_count.into());
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /apps/{app_id}/channels/{channel}/users`.
pub async fn users(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    Path((_, channel)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if kind_of(&app, &channel)? != ChannelKind::Presence {
        return Err(ApiError::NotPresence(channel));
    }
    let members = state.cluster.channels.members(&app.id, &channel).await;
    let users: Vec<Value> = members.iter().map(|m| json!({ "id": &*m.user_id })).collect();
    Ok(Json(json!({ "users": users })))
}
