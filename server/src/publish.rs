//! The one publish path of server events: a `POST events` / `POST batch_events` body (or the
//! debug console's form) is parsed and validated against the app's limits, counted against its
//! rate limit, then each event is serialized once per channel, cached for cache channels and
//! published through the cluster. No HTTP types here: the HTTP API and the console are edges
//! that call [`Publisher`] and turn a [`PublishError`] into their own answer.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::apps::App;
use crate::cluster::{Cache, ChannelState, Cluster, FanOut, FanOutError, Outgoing};
use crate::console_log::{ConsoleLog, LogEntry};
use crate::metrics::{AppLabel, Metrics};
use crate::protocol::{frames, is_socket_id, parse_channel, ChannelKind, ChannelName, ChannelNameError};
use crate::ratelimit::{AppLimit, AppRates};

/// Why an event was refused. Messages say what was wrong; the HTTP API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The body is not the JSON the endpoint takes.
    #[error("Invalid JSON body: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// A required body member is missing.
    #[error("Missing {0} in the request body")]
    Missing(&'static str),
    /// Neither `channels` nor `channel`, or an empty list.
    #[error("An event needs 1 to {max} channels, got {given}")]
    ChannelCount {
        /// Channels named.
        given: usize,
        /// The app's limit.
        max: usize,
    },
    /// A channel name breaks the rules.
    #[error("Invalid channel {channel:?}: {source}")]
    InvalidChannel {
        /// The channel.
        channel: String,
        /// What is wrong with it.
        source: ChannelNameError,
    },
    /// Event name too long or empty.
    #[error("Event name must be 1 to {max} characters, got {len}")]
    EventName {
        /// Its length.
        len: usize,
        /// The app's limit.
        max: usize,
    },
    /// Event data over the app's limit.
    #[error("Event data is {size} bytes; the limit is {max} bytes")]
    PayloadTooLarge {
        /// Bytes of `data`.
        size: usize,
        /// The app's limit.
        max: usize,
    },
    /// `socket_id` is not `\d+.\d+`.
    #[error("Invalid socket_id {0:?}")]
    InvalidSocketId(String),
    /// Too many events in a batch.
    #[error("A batch may hold 1 to {max} events, got {given}")]
    BatchSize {
        /// Events given.
        given: usize,
        /// The app's limit.
        max: usize,
    },
    /// Unknown `info` attribute.
    #[error("Unknown info attribute {0:?}; expected user_count or subscription_count")]
    UnknownInfo(String),
    /// The event reached this node's subscribers but maybe not the other nodes' (Redis
    /// unreachable): the SDKs retry on 503.
    #[error("Cluster state is unavailable (Redis unreachable); retry shortly")]
    Unavailable(#[from] FanOutError),
    /// The app's backend-events rate limit refused the request.
    #[error("Rate limit exceeded: {limit} is {per_second}")]
    RateLimited {
        /// Which limit.
        limit: &'static str,
        /// Its value.
        per_second: u32,
    },
}

impl PublishError {
    /// The per-app limit that refused the event, for `herald_limited_total`.
    fn limit(&self) -> Option<&'static str> {
        match self {
            PublishError::PayloadTooLarge { .. } => Some("max_event_data_size"),
            PublishError::ChannelCount { given, .. } if *given > 0 => Some("max_channels_per_event"),
            PublishError::BatchSize { given, .. } if *given > 0 => Some("max_batch_size"),
            _ => None,
        }
    }
}

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

impl EventBody {
    /// `channels`, else `channel` as a list of one.
    fn take_channels(&mut self) -> Vec<String> {
        match (self.channels.take(), self.channel.take()) {
            (Some(list), _) => list,
            (None, Some(one)) => vec![one],
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Option<Vec<EventBody>>,
}

/// Which counts a caller asked for with `info=`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Info {
    /// `user_count` (presence channels).
    pub user_count: bool,
    /// `subscription_count`.
    pub subscription_count: bool,
}

impl Info {
    /// Parses a comma-separated `info` value.
    pub fn parse(info: Option<&str>) -> Result<Info, PublishError> {
        let mut parsed = Info::default();
        for attr in info.unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => parsed.user_count = true,
                "subscription_count" => parsed.subscription_count = true,
                other => return Err(PublishError::UnknownInfo(other.to_owned())),
            }
        }
        Ok(parsed)
    }

    /// Whether any count was asked for.
    pub fn any(self) -> bool {
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

fn validate(app: &App, body: EventBody, channels: Vec<String>) -> Result<Event, PublishError> {
    let limits = &app.limits;
    let name = body.name.ok_or(PublishError::Missing("name"))?;
    if name.is_empty() || name.len() > limits.max_event_name_length {
        return Err(PublishError::EventName { len: name.len(), max: limits.max_event_name_length });
    }
    let raw = body.data.ok_or(PublishError::Missing("data"))?;
    // Pusher's API takes `data` as a string; a JSON value other than a string is accepted and
    // forwarded as its JSON text, as lenient servers do.
    let data = match serde_json::from_str::<String>(raw.get()) {
        Ok(s) => s,
        Err(_) => raw.get().to_owned(),
    };
    if data.len() > limits.max_event_data_size {
        return Err(PublishError::PayloadTooLarge { size: data.len(), max: limits.max_event_data_size });
    }
    if channels.is_empty() || channels.len() > limits.max_channels_per_event {
        return Err(PublishError::ChannelCount { given: channels.len(), max: limits.max_channels_per_event });
    }
    let channels = channels
        .into_iter()
        .map(|c| match parse_channel(&c, limits.max_channel_name_length) {
            Ok(name) => Ok((c, name)),
            Err(source) => Err(PublishError::InvalidChannel { channel: c, source }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(id) = &body.socket_id {
        if !is_socket_id(id) {
            return Err(PublishError::InvalidSocketId(id.clone()));
        }
    }
    let info = Info::parse(body.info.as_deref())?;
    Ok(Event { name, data, channels, socket_id: body.socket_id, info })
}

/// Parses and validates a `POST events` body against the app's limits without publishing it
/// (what [`Publisher::trigger`] does first; exposed for fuzzing).
pub fn check_trigger_body(app: &App, body: &[u8]) -> Result<(), PublishError> {
    let mut body: EventBody = serde_json::from_slice(body)?;
    let channels = body.take_channels();
    validate(app, body, channels).map(|_| ())
}

/// Publishes server events. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    fanout: Arc<dyn FanOut>,
    cache: Arc<dyn Cache>,
    /// Read for `info=` counts.
    channels: Arc<dyn ChannelState>,
    rates: Arc<AppRates>,
    metrics: Arc<Metrics>,
    console: ConsoleLog,
}

impl Publisher {
    /// A publisher over `cluster`, counting against `rates`.
    pub fn new(cluster: &Cluster, rates: Arc<AppRates>, metrics: Arc<Metrics>, console: ConsoleLog) -> Self {
        Publisher {
            fanout: cluster.fanout.clone(),
            cache: cluster.cache.clone(),
            channels: cluster.channels.clone(),
            rates,
            metrics,
            console,
        }
    }

    /// A `POST events` body: publishes the event; returns the `info` attributes of each
    /// channel when they were asked for.
    pub async fn trigger(&self, app: &App, body: &[u8]) -> Result<Option<Map<String, Value>>, PublishError> {
        let mut body: EventBody = serde_json::from_slice(body)?;
        let channels = body.take_channels();
        let event = self.check(app, validate(app, body, channels))?;
        self.check_rate(app, event.channels.len())?;
        let info = self.publish(app, &event).await?;
        Ok(event.info.any().then_some(info))
    }

    /// A `POST batch_events` body: publishes every event, in order, once all are valid;
    /// returns each event's `info` attributes when any were asked for.
    pub async fn batch(&self, app: &App, body: &[u8]) -> Result<Option<Vec<Value>>, PublishError> {
        let body: BatchBody = serde_json::from_slice(body)?;
        let batch = body.batch.ok_or(PublishError::Missing("batch"))?;
        let max = app.limits.max_batch_size;
        if batch.is_empty() || batch.len() > max {
            return Err(self.counted(app, PublishError::BatchSize { given: batch.len(), max }));
        }
        let events = batch
            .into_iter()
            .map(|mut e| {
                let channel = e.channel.take().ok_or(PublishError::Missing("channel"))?;
                validate(app, e, vec![channel])
            })
            .collect::<Result<Vec<_>, _>>();
        let events = self.check(app, events)?;
        self.check_rate(app, events.len())?;
        // Every event's frames go out together (one round trip to the other nodes), in order.
        let mut frames = Vec::new();
        for event in &events {
            frames.extend(self.frames(app, event).await);
        }
        self.fanout.publish_all(&app.id, frames).await?;
        let mut results = Vec::with_capacity(events.len());
        for event in &events {
            let mut info = self.published(app, event).await;
            let attrs = event.channels.first().and_then(|(c, _)| info.remove(c)).unwrap_or(json!({}));
            results.push(attrs);
        }
        Ok(events.iter().any(|e| e.info.any()).then_some(results))
    }

    /// One event given as a `POST events` body with a single `channel` (the debug console's
    /// form), with the same validation, rate limit and path as the HTTP API.
    pub async fn trigger_value(&self, app: &App, body: Value) -> Result<(), PublishError> {
        let mut body: EventBody = serde_json::from_value(body)?;
        let channels = body.channel.take().into_iter().collect();
        let event = self.check(app, validate(app, body, channels))?;
        self.check_rate(app, event.channels.len())?;
        self.publish(app, &event).await?;
        Ok(())
    }

    /// Counts a refusal by a size or count limit in `herald_limited_total`.
    fn counted(&self, app: &App, error: PublishError) -> PublishError {
        if let Some(limit) = error.limit() {
            self.metrics.limit_hit(&app.id, limit);
        }
        error
    }

    fn check<T>(&self, app: &App, result: Result<T, PublishError>) -> Result<T, PublishError> {
        result.map_err(|e| self.counted(app, e))
    }

    /// Counts `n` events against the app's backend-events rate limit.
    fn check_rate(&self, app: &App, n: usize) -> Result<(), PublishError> {
        let Some(per_second) = app.limits.max_backend_events_per_second else { return Ok(()) };
        let limit = AppLimit::BackendEvents;
        if self.rates.allow(&app.id, limit, per_second, n as u64) {
            return Ok(());
        }
        self.metrics.limit_hit(&app.id, limit.label());
        Err(PublishError::RateLimited { limit: limit.label(), per_second })
    }

    /// Publishes a validated event; returns the `info` attributes of each channel when asked.
    async fn publish(&self, app: &App, event: &Event) -> Result<Map<String, Value>, PublishError> {
        let frames = self.frames(app, event).await;
        self.fanout.publish_all(&app.id, frames).await?;
        Ok(self.published(app, event).await)
    }

    /// The event's frame for each of its channels, each cache channel's cached first.
    async fn frames(&self, app: &App, event: &Event) -> Vec<Outgoing> {
        let mut out = Vec::with_capacity(event.channels.len());
        for (channel, name) in &event.channels {
            let frame: Utf8Bytes = frames::channel_event(&event.name, channel, &event.data).into();
            if name.cache {
                self.cache.cache_set(&app.id, channel, frame.clone(), app.cache_ttl).await;
            }
            out.push(Outgoing { channel: channel.clone(), frame, except: event.socket_id.clone() });
        }
        out
    }

    /// Counts and logs a published event; the `info` attributes of each channel when asked.
    async fn published(&self, app: &App, event: &Event) -> Map<String, Value> {
        let counter = self.metrics.api_events.get_or_create(&AppLabel::new(&app.id)).clone();
        let mut info = Map::new();
        for (channel, name) in &event.channels {
            counter.inc();
            self.console.emit(|| {
                LogEntry::new(&app.id, "server_event").channel(channel).event(&event.name).detail(&event.data)
            });
            if event.info.any() {
                let stats = self.channels.channel_stats(&app.id, channel).await;
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
        info
    }
}
