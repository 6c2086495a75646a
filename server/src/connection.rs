//! One task per socket. It reads client frames and answers them, writes frames queued in its
//! bounded [`Outbox`], pings a silent client and closes it with 4201 when it stays silent, and
//! leaves every channel when the socket ends. A close requested from elsewhere (slow consumer,
//! shutdown) ends the loop with that reason.

mod admission;
mod drain;
mod signin;
mod subscribe;

pub use signin::parse_user_data;

use admission::{admit, new_socket_id, origin_allowed};
use drain::drain_moment;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, debug_span, Instrument};

use crate::apps::{App, QuotaCode};
use crate::cluster::Origin;
use crate::console_log::LogEntry;
use crate::metrics::{AppLabel, CloseLabels};
use crate::outbox::{Inbox, Outbox};
use crate::protocol::frames;
use crate::protocol::{parse_channel, ClientMessage, CloseReason, CLIENT_EVENT_RATE_LIMITED};
use crate::ratelimit::{Bucket, Window};
use crate::state::ServerState;
use crate::webhooks::WebhookEvent;

/// Initial read buffer of a socket. Client frames are small (a subscribe is under 300 bytes);
/// a larger frame grows the buffer while it is read (one more read call for it). Measured per
/// idle connection (docs/benchmarks.md, idle scenario): 4 KB → 1 KB saved ~3 KB of RSS, and
/// 1 KB → 256 bytes saved the rest of that allocation.
const READ_BUFFER: usize = 256;

/// Query string of `/app/{key}`.
#[derive(Debug, Deserialize)]
pub struct ConnectQuery {
    protocol: Option<String>,
}

/// `GET /app/{key}`: upgrades to a WebSocket and runs the connection.
pub async fn upgrade(
    State(state): State<ServerState>,
    Path(key): Path<String>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server is shutting down").into_response();
    }
    if let Some(app) = state.apps.by_key(&key) {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if !origin_allowed(&app.allowed_origins, origin) {
            debug!(app_id = %app.id, ?origin, "WebSocket refused: origin not allowed");
            state.metrics.limit_hit(&app.id, "allowed_origins");
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    let settings = &state.settings;
    let ws = ws
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        // Small buffers: most sockets are idle, and a large default per socket adds up.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0);
    let tracker = state.connections.clone();
    // The socket runs in a task of its own rather than in axum's upgrade task, whose future
    // keeps the upgrade's configuration and callback for as long as the socket lives.
    ws.on_upgrade(move |socket| {
        tokio::spawn(tracker.track_future(serve(socket, state, key, query.protocol)));
        std::future::ready(())
    })
}

/// Admits the socket and runs it. Not `async` itself: an async fn keeps its arguments for its
/// whole life, so the socket is boxed and the key and protocol are used up before the task's
/// future is built (measured per idle socket, docs/benchmarks.md).
fn serve(
    socket: WebSocket,
    state: ServerState,
    key: String,
    protocol: Option<String>,
) -> impl std::future::Future<Output = ()> {
    let admitted = admit(&state, &key, protocol.as_deref()).inspect_err(|reason| {
        debug!(key, code = reason.code(), "connection refused");
    });
    run_socket(Box::new(socket), state, admitted)
}

async fn run_socket(mut socket: Box<WebSocket>, state: ServerState, admitted: Result<Arc<App>, CloseReason>) {
    let app = match admitted {
        Ok(app) => app,
        Err(reason) => {
            close(&mut socket, reason, reason.message()).await;
            return;
        }
    };
    let quota_reason = match app.limits.connection_quota_code {
        QuotaCode::Quota4004 => CloseReason::OverConnectionQuota,
        QuotaCode::Capacity4100 => CloseReason::OverCapacity,
    };
    if !state.cluster.channels.connect(&app.id, app.limits.max_connections).await {
        state.metrics.limit_hit(&app.id, "max_connections");
        close(&mut socket, quota_reason, quota_reason.message()).await;
        return;
    }
    let socket_id = new_socket_id();
    // Debug level, like every event of a socket: an enabled span is kept by the subscriber for
    // the socket's life (about 500 bytes per idle socket at the default `info`, measured).
    let span = debug_span!("socket", app_id = %app.id, socket_id = %socket_id);
    async move {
        let label = AppLabel::new(&app.id);
        state.metrics.new_connections.get_or_create(&label).inc();
        let (outbox, rx) = Outbox::new(socket_id.clone(), state.settings.max_queued_messages);
        let control = outbox.clone();
        let mut conn = Connection {
            counters: Counters::new(&state, &label),
            state: state.clone(),
            app: app.clone(),
            socket_id,
            outbox,
            subscriptions: HashMap::new(),
            client_events: Window::default(),
            subscription_changes: Bucket::default(),
            user: None,
            auth_deadline: app.user_authentication.then(|| Instant::now() + app.user_authentication_timeout),
            ending: None,
            app_changes: state.apps.changes(),
        };
        debug!("connected");
        state.console.emit(|| LogEntry::new(&app.id, "connected").socket(&conn.socket_id));
        let reason = conn.run(&mut socket, rx, &control).await;
        // Boxed: only a closing socket needs room for it.
        Box::pin(conn.leave_all()).await;
        state.cluster.channels.disconnect(&app.id).await;
        let reason_label = reason.as_ref().map_or("client", Ending::label);
        state
            .metrics
            .disconnections
            .get_or_create(&CloseLabels { app_id: app.id.clone(), reason: reason_label })
            .inc();
        debug!(reason = reason_label, "disconnected");
        state
            .console
            .emit(|| LogEntry::new(&app.id, "disconnected").socket(&conn.socket_id).detail(reason_label));
        match reason {
            Some(Ending::Pusher(reason)) => close(&mut socket, reason, reason.message()).await,
            Some(Ending::Refused(reason, message)) => close(&mut socket, reason, &message).await,
            Some(Ending::TooBig) => {
                let frame = CloseFrame { code: 1009, reason: "Message too big".into() };
                let _ = timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
            }
            Some(Ending::InvalidUtf8) => {
                let frame = CloseFrame { code: 1007, reason: "Text frames must be UTF-8".into() };
                let _ = timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
            }
            None => {}
        }
    }
    .instrument(span)
    .await
}

/// Sends `pusher:error` with the close code, then the close frame. Bounded in time: a client
/// that does not read must not hold the task.
async fn close(socket: &mut WebSocket, reason: CloseReason, message: &str) {
    let send = async {
        let error = frames::error(message, Some(reason.code()));
        socket.send(Message::Text(error.into())).await?;
        let frame = CloseFrame { code: reason.code(), reason: reason.message().into() };
        socket.send(Message::Close(Some(frame))).await
    };
    let _ = timeout(Duration::from_secs(1), send).await;
}

/// Why the loop ended, when the server ends it.
#[derive(Debug, Clone)]
enum Ending {
    /// A Pusher close code.
    Pusher(CloseReason),
    /// A Pusher close code with a message saying exactly what was refused.
    Refused(CloseReason, String),
    /// The client sent a message over the size limit (WebSocket close 1009).
    TooBig,
    /// The client sent a text frame that is not UTF-8 (WebSocket close 1007).
    InvalidUtf8,
}

impl Ending {
    fn label(&self) -> &'static str {
        match self {
            Ending::Pusher(r) | Ending::Refused(r, _) => r.label(),
            Ending::TooBig => "message_too_big",
            Ending::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// The socket went away while we were writing to it.
struct Gone;

/// Per-connection handles of the app's counters, fetched once so the hot path only does
/// atomic increments.
struct Counters {
    messages_received: Counter,
    messages_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    client_events: Counter,
}

impl Counters {
    fn new(state: &ServerState, label: &AppLabel) -> Self {
        let m = &state.metrics;
        Counters {
            messages_received: m.ws_messages_received.get_or_create(label).clone(),
            messages_sent: m.ws_messages_sent.get_or_create(label).clone(),
            bytes_received: m.ws_bytes_received.get_or_create(label).clone(),
            bytes_sent: m.ws_bytes_sent.get_or_create(label).clone(),
            client_events: m.client_events.get_or_create(label).clone(),
        }
    }
}

/// The most frames written before one flush, so one busy socket cannot starve its reader.
const WRITE_BATCH: usize = 64;

struct Connection {
    state: ServerState,
    app: Arc<App>,
    socket_id: Arc<str>,
    outbox: Outbox,
    /// Subscribed channels, with the presence user id this socket joined as.
    subscriptions: HashMap<String, Option<Arc<str>>>,
    client_events: Window,
    /// Subscribes and unsubscribes, against the app's churn limit.
    subscription_changes: Bucket,
    counters: Counters,
    /// The user this socket signed in as.
    user: Option<signin::SignedIn>,
    /// With "authorized connections": when an unauthenticated socket is closed.
    auth_deadline: Option<Instant>,
    /// Set by a handler that ends the connection.
    ending: Option<Ending>,
    /// Ticks when apps change (Kubernetes-backed apps change live).
    app_changes: watch::Receiver<u64>,
}

impl Connection {
    /// Takes the app's current settings (a rotated secret signs the next subscription), or
    /// ends the connection when the app was deleted (4001) or disabled (4003).
    fn refresh_app(&mut self) -> Option<Ending> {
        match self.state.apps.by_id(&self.app.id) {
            None => {
                debug!("app deleted: closing");
                Some(Ending::Pusher(CloseReason::AppNotFound))
            }
            Some(app) if !app.enabled => {
                debug!("app disabled: closing");
                Some(Ending::Pusher(CloseReason::AppDisabled))
            }
            Some(app) => {
                self.app = app;
                None
            }
        }
    }

    async fn run(&mut self, socket: &mut WebSocket, mut rx: Inbox, control: &Outbox) -> Option<Ending> {
        let established =
            frames::connection_established(&self.socket_id, self.state.settings.activity_timeout.as_secs());
        if self.send(socket, established).await.is_err() {
            return None;
        }
        let activity_timeout = self.state.settings.activity_timeout;
        let pong_timeout = self.state.settings.pong_timeout;
        let mut last_seen = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let shutdown = self.state.shutdown.clone();
        // In a shutdown, when this socket closes with 4200: spread so clients reconnect over time.
        let mut drain_at: Option<Instant> = None;
        let spread = self.state.settings.drain_spread;
        // One timer for every deadline (ping / pong, signing in, draining), kept across
        // iterations.
        let timer = sleep_until(last_seen + activity_timeout);
        tokio::pin!(timer);
        loop {
            let deadline = match ping_sent {
                Some(at) => at + pong_timeout,
                None => last_seen + activity_timeout,
            };
            let wake = [self.auth_deadline, drain_at].into_iter().flatten().fold(deadline, Instant::min);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                _ = shutdown.cancelled(), if drain_at.is_none() => {
                    if spread.is_zero() {
                        return Some(Ending::Pusher(CloseReason::Reconnect));
                    }
                    drain_at = Some(drain_moment(spread));
                }
                reason = control.requested() => return Some(Ending::Pusher(reason)),
                Ok(()) = self.app_changes.changed() => {
                    if let Some(ending) = self.refresh_app() {
                        return Some(ending);
                    }
                }
                incoming = socket.recv() => match incoming {
                    None => return None,
                    Some(Err(e)) => return read_error(e),
                    Some(Ok(msg)) => {
                        last_seen = Instant::now();
                        ping_sent = None;
                        // Boxed: an idle socket's task then holds no room for the largest
                        // handler's state (measured: the task's future 2,856 → 2,448 bytes).
                        match Box::pin(self.on_message(socket, msg)).await {
                            Ok(true) => {}
                            Ok(false) | Err(Gone) => return None,
                        }
                        if let Some(ending) = self.ending.take() {
                            return Some(ending);
                        }
                    }
                },
                Some(frame) = rx.recv() => {
                    // A client that stops reading blocks this write; a close request (slow
                    // consumer, shutdown at this socket's drain moment — from the loop's one
                    // timer: no second `Sleep` in every socket's future) must still get through.
                    let write = self.write_queued(socket, frame, &mut rx);
                    tokio::pin!(write);
                    loop {
                        tokio::select! {
                            written = &mut write => {
                                if written.is_err() {
                                    return None;
                                }
                                break;
                            }
                            _ = shutdown.cancelled(), if drain_at.is_none() => {
                                if spread.is_zero() {
                                    return Some(Ending::Pusher(CloseReason::Reconnect));
                                }
                                let at = drain_moment(spread);
                                drain_at = Some(at);
                                timer.as_mut().reset(at);
                            }
                            () = &mut timer, if drain_at.is_some() => {
                                match drain_at {
                                    Some(at) if Instant::now() < at => timer.as_mut().reset(at),
                                    _ => return Some(Ending::Pusher(CloseReason::Reconnect)),
                                }
                            }
                            reason = control.requested() => return Some(Ending::Pusher(reason)),
                        }
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if drain_at.is_some_and(|at| now >= at) {
                        return Some(Ending::Pusher(CloseReason::Reconnect));
                    }
                    if self.auth_deadline.is_some_and(|auth| now >= auth) {
                        let msg = "Connection not authorized within the timeout: sign in or subscribe to a private channel";
                        return Some(Ending::Refused(CloseReason::Unauthorized, msg.into()));
                    }
                    if now < deadline {
                        continue;
                    }
                    if ping_sent.is_some() {
                        return Some(Ending::Pusher(CloseReason::PongNotReceived));
                    }
                    if self.send(socket, frames::ping()).await.is_err() {
                        return None;
                    }
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once.
    async fn write_queued(
        &mut self,
        socket: &mut WebSocket,
        first: Utf8Bytes,
        rx: &mut Inbox,
    ) -> Result<(), Gone> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(frame) = next {
            self.counters.bytes_sent.inc_by(frame.len() as u64);
            socket.feed(Message::Text(frame)).await.map_err(|_| Gone)?;
            written += 1;
            next = if written < WRITE_BATCH { rx.try_recv() } else { None };
        }
        self.counters.messages_sent.inc_by(written as u64);
        socket.flush().await.map_err(|_| Gone)
    }

    /// Sends one frame of our own (a reply), at once.
    async fn send(&self, socket: &mut WebSocket, frame: String) -> Result<(), Gone> {
        self.counters.messages_sent.inc();
        self.counters.bytes_sent.inc_by(frame.len() as u64);
        socket.send(Message::Text(frame.into())).await.map_err(|_| Gone)
    }

    async fn send_error(&self, socket: &mut WebSocket, message: &str, code: Option<u16>) -> Result<(), Gone> {
        self.send(socket, frames::error(message, code)).await
    }

    /// Handles one message; `Ok(false)` when the client closed.
    async fn on_message(&mut self, socket: &mut WebSocket, msg: Message) -> Result<bool, Gone> {
        self.counters.messages_received.inc();
        match msg {
            Message::Text(text) => {
                self.counters.bytes_received.inc_by(text.len() as u64);
                self.on_text(socket, text.as_str()).await?;
            }
            Message::Binary(bytes) => {
                self.counters.bytes_received.inc_by(bytes.len() as u64);
                self.send_error(socket, "Binary frames are not supported; send JSON text frames", None)
                    .await?;
            }
            // The WebSocket layer answers pings itself; both count as activity.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return Ok(false),
        }
        Ok(true)
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), Gone> {
        let message = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => return self.send_error(socket, &e.to_string(), None).await,
        };
        match message {
            ClientMessage::Ping => self.send(socket, frames::pong()).await,
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe(sub) => self.subscribe(socket, sub).await,
            ClientMessage::Signin(signin) => self.signin(socket, signin).await,
            ClientMessage::Unsubscribe { channel } => {
                self.unsubscribe(&channel).await;
                Ok(())
            }
            ClientMessage::ClientEvent { event, channel, data } => {
                self.client_event(socket, &event, &channel, data).await
            }
            ClientMessage::Unknown(event) if event.starts_with("pusher:") => {
                self.send_error(socket, &format!("Unsupported event {event}"), None).await
            }
            ClientMessage::Unknown(event) => {
                let msg = format!("Event {event} refused: events sent by clients must start with 'client-'");
                self.send_error(socket, &msg, None).await
            }
        }
    }

    async fn client_event(
        &mut self,
        socket: &mut WebSocket,
        event: &str,
        channel: &str,
        data: &RawValue,
    ) -> Result<(), Gone> {
        let limits = &self.app.limits;
        if !self.app.client_events {
            return self
                .send_error(socket, "To send client events, you must enable this feature for the app", None)
                .await;
        }
        let kind = match parse_channel(channel, limits.max_channel_name_length) {
            Ok(name) => name,
            Err(e) => {
                return self.send_error(socket, &format!("Invalid channel {channel:?}: {e}"), None).await
            }
        };
        if !kind.allows_client_events() {
            let msg =
                format!("Client events are only allowed on private and presence channels, not {channel}");
            return self.send_error(socket, &msg, None).await;
        }
        let Some(user_id) = self.subscriptions.get(channel).cloned() else {
            let msg =
                format!("Cannot broadcast client event (connection not subscribed to channel {channel})");
            return self.send_error(socket, &msg, None).await;
        };
        if event.len() > limits.max_event_name_length {
            let msg = format!("Event name is longer than {} characters", limits.max_event_name_length);
            return self.send_error(socket, &msg, None).await;
        }
        if data.get().len() > limits.max_event_data_size {
            let msg = format!("Client event data is larger than {} bytes", limits.max_event_data_size);
            self.state.metrics.limit_hit(&self.app.id, "max_event_data_size");
            return self.send_error(socket, &msg, None).await;
        }
        if !self.client_events.allow(limits.client_events_per_second, 1) {
            let msg = format!(
                "Client event rejected due to rate limit ({} per second)",
                limits.client_events_per_second
            );
            self.state.metrics.limit_hit(&self.app.id, "client_events_per_second");
            return self.send_error(socket, &msg, Some(CLIENT_EVENT_RATE_LIMITED)).await;
        }
        let frame = frames::client_event(event, channel, data, user_id.as_deref());
        self.state.console.emit(|| {
            LogEntry::new(&self.app.id, "client_event")
                .channel(channel)
                .event(event)
                .socket(&self.socket_id)
                .detail(data.get())
        });
        self.counters.client_events.inc();
        let data_text = match serde_json::from_str::<String>(data.get()) {
            Ok(s) => s,
            Err(_) => data.get().to_owned(),
        };
        self.state.webhooks.emit(
            &self.app,
            WebhookEvent::ClientEvent {
                channel: channel.to_owned(),
                event: event.to_owned(),
                data: data_text,
                socket_id: self.socket_id.to_string(),
                user_id: user_id.as_deref().map(str::to_owned),
            },
        );
        let published = self
            .state
            .cluster
            .fanout
            .publish(&self.app.id, channel, frame.into(), Some(&self.socket_id))
            .await;
        if let Err(e) = published {
            // Pusher has no answer to a client event; the node is degraded and not ready.
            debug!(channel, error = %e, "client event reached this node's subscribers only");
        }
        Ok(())
    }

    /// Leaves one channel, telling the other members when this was the user's last socket.
    async fn unsubscribe(&mut self, channel: &str) {
        if self.subscriptions.remove(channel).is_none() {
            return;
        }
        self.subscription_changes.spend(self.app.limits.subscription_changes_per_second);
        self.state
            .console
            .emit(|| LogEntry::new(&self.app.id, "unsubscribed").channel(channel).socket(&self.socket_id));
        self.leave(channel).await;
    }

    async fn leave(&self, channel: &str) {
        let transitions = self.state.cluster.channels.leave(&self.app.id, channel, &self.socket_id).await;
        self.announce(transitions).await;
    }

    /// Announces what this socket's action changed.
    async fn announce(&self, transitions: Vec<crate::cluster::Transition>) {
        let origin = Origin::Socket(self.socket_id.clone());
        self.state.announcer.announce(&self.app, &origin, transitions).await;
    }

    async fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.subscriptions).into_keys() {
            self.leave(&channel).await;
        }
        self.sign_out().await;
    }
}

fn read_error(e: axum::Error) -> Option<Ending> {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(Ending::TooBig),
        Some(tungstenite::Error::Utf8(_)) => Some(Ending::InvalidUtf8),
        _ => {
            debug!(error = %inner, "read failed");
            None
        }
    }
}

#[cfg(test)]
mod tests;
