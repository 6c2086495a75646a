//! `POST events` and `POST batch_events`: validate everything first, then serialize each
//! event once per channel and publish it through the cluster.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{check_rate, ApiError};
use crate::apps::App;
use crate::metrics::AppLabel;
use crate::protocol::{frames, is_socket_id, parse_channel, ChannelKind, ChannelName};
use crate::ratelimit::AppLimit;
use crate::server::ServerState;
use axum::extract::ws::Utf8Bytes;

#[derive(Deserialize)]
struct EventBody {
    name: Option<String>,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Option<Vec<EventBody>>,
}

/// Which counts a caller asked for with `info=`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Info {
    pub user_count: bool,
    pub subscription_count: bool,
}

impl Info {
    pub(super) fn parse(info: Option<&str>) -> Result<Info, ApiError> {
        let mut parsed = Info::default();
        for attr in info.unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => parsed.user_count = true,
                "subscription_count" => parsed.subscription_count = true,
                other => return Err(ApiError::UnknownInfo(other.to_owned())),
            }
        }
        Ok(parsed)
    }

    fn any(self) -> bool {
        self.user_count || self.subscription_count
    }
}

/// A validated event, ready to publish.
struct Event {
    name: String,
    data: String,
    channels: Vec<(String, ChannelName)>,
    socket_id: Option<String>,
    info: Info,
}

fn validate(app: &App, body: EventBody, channels: Vec<String>) -> Result<Event, ApiError> {
    let limits = &app.limits;
    let name = body.name.ok_or(ApiError::Missing("name"))?;
    if name.is_empty() || name.len() > limits.max_event_name_length {
        return Err(ApiError::EventName { len: name.len(), max: limits.max_event_name_length });
    }
    let raw = body.data.ok_or(ApiError::Missing("data"))?;
    // Pusher's API takes `data` as a string; a JSON value other than a string is accepted and
    // forwarded as its JSON text, as lenient servers do.
    let data = match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => s,
        Err(_) => raw.get().to_owned(),
    };
    if data.len() > limits.max_event_data_size {
        return Err(ApiError::PayloadTooLarge { size: data.len(), max: limits.max_event_data_size });
    }
    if channels.is_empty() || channels.len() > limits.max_channels_per_event {
        return Err(ApiError::ChannelCount { given: channels.len(), max: limits.max_channels_per_event });
    }
    let channels = channels
        .into_iter()
        .map(|c| match parse_channel(&c, limits.max_channel_name_length) {
            Ok(name) => Ok((c, name)),
            Err(source) => Err(ApiError::InvalidChannel { channel: c, source }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(id) = &body.socket_id {
        if !is_socket_id(id) {
            return Err(ApiError::InvalidSocketId(id.clone()));
        }
    }
    let info = Info::parse(body.info.as_deref())?;
    Ok(Event { name, data, channels, socket_id: body.socket_id, info })
}

/// Publishes an event; returns the `info` attributes of each channel when asked.
async fn publish(state: &ServerState, app: &App, event: &Event) -> Result<Map<String, Value>, ApiError> {
    let counter = state.metrics.api_events.get_or_create(&AppLabel::new(&app.id)).clone();
    let mut info = Map::new();
    for (channel, name) in &event.channels {
        let frame: Utf8Bytes = frames::channel_event(&event.name, channel, &event.data).into();
        if name.cache {
            state.cluster.cache_set(&app.id, channel, frame.clone(), app.cache_ttl).await?;
        }
        state.cluster.publish(&app.id, channel, frame, event.socket_id.as_deref()).await?;
        counter.inc();
        state.console.emit(|| {
            crate::console::LogEntry::new(&app.id, "server_event")
                .channel(channel)
                .event(&event.name)
                .detail(&event.data)
        });
        if event.info.any() {
            let stats = state.cluster.channel_stats(&app.id, channel).await?;
            let mut attrs = Map::new();
            if event.info.user_count && name.kind == ChannelKind::Presence {
                attrs.insert("user_count".into(), stats.user_count.into());
            }
            if event.info.subscription_count {
                attrs.insert("subscription_count".into(), stats.subscription_count.into());
            }
            info.insert(channel.clone(), Value::Object(attrs));
        }
    }
    Ok(info)
}

/// Parses and validates a `POST events` body against the app's limits without publishing it
/// (what the handler does before publishing; exposed for fuzzing).
pub fn check_trigger_body(app: &App, body: &[u8]) -> Result<(), ApiError> {
    let mut body: EventBody = serde_json::from_slice(body)?;
    let channels = match (body.channels.take(), body.channel.take()) {
        (Some(list), _) => list,
        (None, Some(one)) => vec![one],
        (None, None) => Vec::new(),
    };
    validate(app, body, channels).map(|_| ())
}

/// Publishes one event given as a `POST events` body, with the same validation, rate limit and
/// path as the HTTP API (the debug console's trigger form).
pub(crate) async fn trigger_value(state: &ServerState, app: &App, body: Value) -> Result<(), ApiError> {
    let mut body: EventBody = serde_json::from_value(body)?;
    let channels = body.channel.take().into_iter().collect();
    let event = validate(app, body, channels).inspect_err(|e| count_limit(state, app, e))?;
    if let Some(per_second) = app.limits.max_backend_events_per_second {
        check_rate(state, app, AppLimit::BackendEvents, per_second, event.channels.len() as u64)?;
    }
    publish(state, app, &event).await.map(|_| ())
}

/// `POST /apps/{app_id}/events`.
pub async fn trigger(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut body: EventBody = serde_json::from_slice(&body)?;
    let channels = match (body.channels.take(), body.channel.take()) {
        (Some(list), _) => list,
        (None, Some(one)) => vec![one],
        (None, None) => Vec::new(),
    };
    let event = validate(&app, body, channels).inspect_err(|e| count_limit(&state, &app, e))?;
    if let Some(per_second) = app.limits.max_backend_events_per_second {
        check_rate(&state, &app, AppLimit::BackendEvents, per_second, event.channels.len() as u64)?;
    }
    let info = publish(&state, &app, &event).await?;
    Ok(Json(if event.info.any() { json!({ "channels": info }) } else { json!({}) }))
}

/// `POST /apps/{app_id}/batch_events`.
pub async fn batch(
    State(state): State<ServerState>,
    Extension(app): Extension<Arc<App>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: BatchBody = serde_json::from_slice(&body)?;
    let batch = body.batch.ok_or(ApiError::Missing("batch"))?;
    let max = app.limits.max_batch_size;
    if batch.is_empty() || batch.len() > max {
        let error = ApiError::BatchSize { given: batch.len(), max };
        count_limit(&state, &app, &error);
        return Err(error);
    }
    let events = batch
        .into_iter()
        .map(|mut e| {
            let channel = e.channel.take().ok_or(ApiError::Missing("channel"))?;
            validate(&app, e, vec![channel])
        })
        .collect::<Result<Vec<_>, _>>()
        .inspect_err(|e| count_limit(&state, &app, e))?;
    if let Some(per_second) = app.limits.max_backend_events_per_second {
        check_rate(&state, &app, AppLimit::BackendEvents, per_second, events.len() as u64)?;
    }
    let mut results = Vec::with_capacity(events.len());
    for event in &events {
        let mut info = publish(&state, &app, event).await?;
        let attrs = event.channels.first().and_then(|(c, _)| info.remove(c)).unwrap_or(json!({}));
        results.push(attrs);
    }
    let any_info = events.iter().any(|e| e.info.any());
    Ok(Json(if any_info { json!({ "batch": results }) } else { json!({}) }))
}

/// Counts refusals by the app's size and count limits in `herald_limited_total`.
fn count_limit(state: &ServerState, app: &App, error: &ApiError) {
    let limit = match error {
        ApiError::PayloadTooLarge { .. } => "max_event_data_size",
        ApiError::ChannelCount { given, .. } if *given > 0 => "max_channels_per_event",
        ApiError::BatchSize { given, .. } if *given > 0 => "max_batch_size",
        _ => return,
    };
    state.metrics.limit_hit(&app.id, limit);
}
