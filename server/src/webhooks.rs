//! Webhooks as Pusher documents them: `POST {time_ms, events}` signed with the app secret
//! (`X-Pusher-Key`, `X-Pusher-Signature`), per-app batching, `channel_vacated` and
//! `member_removed` held for 3 s and dropped when the channel or member comes back, retries with
//! exponential backoff for up to 5 minutes, per-target event-type and channel filters.
//!
//! Emitting never blocks: events go into a bounded queue ([`Webhooks::emit`]); a full queue
//! drops the event with a log line and a metric. One worker task ([`worker`]) debounces and
//! batches; each delivery runs in its own task, limited by a semaphore.

mod delivery;
mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::{App, WebhookKind};
use crate::metrics::{AppLabel, Metrics, WebhookDropLabels};

/// How long `channel_vacated` and `member_removed` wait for the channel or member to return.
pub const DEBOUNCE: Duration = Duration::from_secs(3);
/// How long a failing delivery is retried.
pub const RETRY_FOR: Duration = Duration::from_secs(5 * 60);

/// One webhook event, serialized as Pusher's `events[]` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// First subscriber anywhere.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// Last subscriber gone.
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A user's first socket joined a presence channel.
    MemberAdded {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A user's last socket left a presence channel.
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// A client event was relayed.
    ClientEvent {
        /// The channel.
        channel: String,
        /// The event name.
        event: String,
        /// The event data as a string (JSON text when the client sent an object).
        data: String,
        /// The sender.
        socket_id: String,
        /// The sender's presence user id, on presence channels.
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// A subscriber found a cache channel empty.
    CacheMiss {
        /// The channel.
        channel: String,
    },
    /// A channel's subscriber count changed.
    SubscriptionCount {
        /// The channel.
        channel: String,
        /// Subscribers now.
        subscription_count: u64,
    },
}

impl WebhookEvent {
    /// The event's kind, for target filters.
    pub fn kind(&self) -> WebhookKind {
        match self {
            WebhookEvent::ChannelOccupied { .. } => WebhookKind::ChannelOccupied,
            WebhookEvent::ChannelVacated { .. } => WebhookKind::ChannelVacated,
            WebhookEvent::MemberAdded { .. } => WebhookKind::MemberAdded,
            WebhookEvent::MemberRemoved { .. } => WebhookKind::MemberRemoved,
            WebhookEvent::ClientEvent { .. } => WebhookKind::ClientEvent,
            WebhookEvent::CacheMiss { .. } => WebhookKind::CacheMiss,
            WebhookEvent::SubscriptionCount { .. } => WebhookKind::SubscriptionCount,
        }
    }

    /// The channel the event is about.
    pub fn channel(&self) -> &str {
        match self {
            WebhookEvent::ChannelOccupied { channel }
            | WebhookEvent::ChannelVacated { channel }
            | WebhookEvent::MemberAdded { channel, .. }
            | WebhookEvent::MemberRemoved { channel, .. }
            | WebhookEvent::ClientEvent { channel, .. }
            | WebhookEvent::CacheMiss { channel }
            | WebhookEvent::SubscriptionCount { channel, .. } => channel,
        }
    }
}

/// A webhook request as kept outside the process while it is delivered: enough to finish it on
/// another node (the same id, body and signature; the retry schedule from `started_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredRequest {
    /// `X-Herald-Webhook-Id`.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// Target URL.
    pub url: String,
    /// `X-Pusher-Key`.
    pub key: String,
    /// `X-Pusher-Signature` (the HMAC of the body; the secret itself is never stored).
    pub signature: String,
    /// The JSON body.
    pub body: String,
    /// When the first attempt was made (ms since the Unix epoch).
    pub started_ms: u64,
}

/// Where requests being delivered are kept, so that the node cleaning up after a dead one can
/// finish them (cluster mode). Best effort: a request that cannot be recorded is still sent.
#[async_trait::async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Keeps a request before its first attempt; returns where it is kept.
    async fn record(&self, request: &StoredRequest) -> Option<String>;
    /// Forgets a request delivered or given up.
    async fn done(&self, place: &str, id: &str);
}

/// What the worker is handed.
#[derive(Debug)]
enum Work {
    /// An event to hold, batch and send.
    Event(Queued),
    /// A request another node started, to finish.
    Resume(StoredRequest),
    /// Events whose windows were kept elsewhere that must reach each target in this order, in
    /// one request (see [`Webhooks::emit_in_order`]).
    InOrder(Arc<App>, Vec<WebhookEvent>),
}

/// An event with its app, on its way to the worker.
#[derive(Debug)]
struct Queued {
    app: Arc<App>,
    event: WebhookEvent,
    /// Its window was kept cluster-wide already: not held again here.
    settled: bool,
}

/// Counters of the webhook pipeline, per app.
#[derive(Clone, Debug)]
struct WebhookMetrics {
    /// Deliveries are shown in the debug console.
    console: crate::console_log::ConsoleLog,
    queued: Family<AppLabel, Counter>,
    sent: Family<AppLabel, Counter>,
    failed: Family<AppLabel, Counter>,
    dropped: Family<WebhookDropLabels, Counter>,
}

impl WebhookMetrics {
    fn drop(&self, app_id: &str, reason: &'static str) {
        self.dropped.get_or_create(&WebhookDropLabels { app_id: app_id.to_owned(), reason }).inc();
    }
}

/// Settings of the webhook pipeline.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Events waiting for the worker before new ones are dropped.
    pub queue_size: usize,
    /// Requests in flight (including ones waiting to retry) before new ones are dropped.
    pub max_pending_deliveries: usize,
    /// Timeout of one delivery attempt.
    pub request_timeout: Duration,
    /// Debounce of vacated / removed events.
    pub debounce: Duration,
    /// First retry delay; doubles each attempt.
    pub first_retry: Duration,
    /// How long a delivery is retried.
    pub retry_for: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            queue_size: 10_000,
            max_pending_deliveries: 10_000,
            request_timeout: Duration::from_secs(10),
            debounce: DEBOUNCE,
            first_retry: Duration::from_secs(1),
            retry_for: RETRY_FOR,
        }
    }
}

/// Cheap-clone handle for emitting webhook events.
#[derive(Clone, Debug)]
pub struct Webhooks {
    tx: mpsc::Sender<Work>,
    metrics: WebhookMetrics,
    window: Duration,
}

/// The running pipeline: stop it after the sockets are closed so their last events go out.
pub struct WebhookPipeline {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl WebhookPipeline {
    /// Sends what is held back now, then waits (at most `grace`) for deliveries in flight.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("webhook deliveries still in flight at shutdown were abandoned");
        }
    }
}

impl Webhooks {
    /// Starts the worker.
    pub fn start(
        settings: WebhookSettings,
        metrics: &Metrics,
        console: crate::console_log::ConsoleLog,
        journal: Option<Arc<dyn Journal>>,
    ) -> (Webhooks, WebhookPipeline) {
        let (tx, rx) = mpsc::channel(settings.queue_size);
        let window = settings.debounce;
        let m = WebhookMetrics {
            console,
            queued: metrics.webhooks_queued.clone(),
            sent: metrics.webhooks_sent.clone(),
            failed: metrics.webhooks_failed.clone(),
            dropped: metrics.webhooks_dropped.clone(),
        };
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let worker = worker::Worker::new(settings, m.clone(), tasks.clone(), journal);
        tasks.spawn(worker.run(rx, stop.clone()));
        (Webhooks { tx, metrics: m, window }, WebhookPipeline { stop, tasks })
    }

    /// Queues an event for the app's webhook targets that want it. Never waits. A
    /// `channel_vacated` / `member_removed` is held for the window here (one node).
    pub fn emit(&self, app: &Arc<App>, event: WebhookEvent) {
        self.queue(app, event, false);
    }

    /// Queues an event whose window was already kept elsewhere (cluster-wide, in Redis): it is
    /// sent without being held again.
    pub fn emit_settled(&self, app: &Arc<App>, event: WebhookEvent) {
        self.queue(app, event, true);
    }

    /// Queues events, their windows kept elsewhere, that each target must get in this order:
    /// they go in one request (an overdue departure and the return that found it — sent apart,
    /// they could arrive the other way round, and a receiver would keep the departure).
    pub fn emit_in_order(&self, app: &Arc<App>, events: Vec<WebhookEvent>) {
        let wanted = |e: &WebhookEvent| app.webhooks.iter().any(|t| t.wants(e.kind(), e.channel()));
        let queued = events.iter().filter(|e| wanted(e)).count();
        if queued == 0 {
            return;
        }
        self.metrics.queued.get_or_create(&AppLabel::new(&app.id)).inc_by(queued as u64);
        let kinds: Vec<WebhookKind> = events.iter().map(WebhookEvent::kind).collect();
        if let Err(e) = self.tx.try_send(Work::InOrder(app.clone(), events)) {
            for kind in kinds {
                self.dropped(app, &e, kind);
            }
        }
    }

    /// Finishes requests a dead node was delivering: the same ids, the rest of their retry
    /// schedule.
    pub fn resume(&self, requests: Vec<StoredRequest>) {
        for request in requests {
            let app_id = request.app_id.clone();
            if self.tx.try_send(Work::Resume(request)).is_err() {
                tracing::warn!(app_id = %app_id, "taken-over webhook dropped: queue full");
                self.metrics.drop(&app_id, "queue_full");
            }
        }
    }

    /// How long `channel_vacated` and `member_removed` wait for the channel or member to return.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn queue(&self, app: &Arc<App>, event: WebhookEvent, settled: bool) {
        let kind = event.kind();
        if !app.webhooks.iter().any(|t| t.wants(kind, event.channel())) {
            return;
        }
        self.metrics.queued.get_or_create(&AppLabel::new(&app.id)).inc();
        if let Err(e) = self.tx.try_send(Work::Event(Queued { app: app.clone(), event, settled })) {
            self.dropped(app, &e, kind);
        }
    }

    fn dropped(&self, app: &App, e: &mpsc::error::TrySendError<Work>, kind: WebhookKind) {
        let reason = match e {
            mpsc::error::TrySendError::Full(_) => "queue_full",
            mpsc::error::TrySendError::Closed(_) => "shutting_down",
        };
        tracing::warn!(app_id = %app.id, ?kind, reason, "webhook event dropped");
        self.metrics.drop(&app.id, reason);
    }
}

#[cfg(test)]
impl Webhooks {
    /// A handle whose events land in the returned receiver instead of a worker, so tests can
    /// see exactly what was emitted.
    pub(crate) fn recording(metrics: &Metrics) -> (Webhooks, Recorded) {
        let (tx, rx) = mpsc::channel(1024);
        let m = WebhookMetrics {
            console: crate::console_log::ConsoleLog::default(),
            queued: metrics.webhooks_queued.clone(),
            sent: metrics.webhooks_sent.clone(),
            failed: metrics.webhooks_failed.clone(),
            dropped: metrics.webhooks_dropped.clone(),
        };
        (Webhooks { tx, metrics: m, window: DEBOUNCE }, Recorded(rx))
    }
}

/// What a [`Webhooks::recording`] handle was given.
#[cfg(test)]
pub(crate) struct Recorded(mpsc::Receiver<Work>);

#[cfg(test)]
impl Recorded {
    /// Every event emitted so far, with its app id.
    pub(crate) fn drain(&mut self) -> Vec<(String, WebhookEvent)> {
        self.drain_settled().into_iter().map(|(app, event, _)| (app, event)).collect()
    }

    /// Every event emitted so far, with its app id and whether its window was kept elsewhere.
    pub(crate) fn drain_settled(&mut self) -> Vec<(String, WebhookEvent, bool)> {
        std::iter::from_fn(|| self.0.try_recv().ok())
            .flat_map(|w| match w {
                Work::Event(q) => vec![(q.app.id.clone(), q.event, q.settled)],
                Work::InOrder(app, events) => events.into_iter().map(|e| (app.id.clone(), e, true)).collect(),
                Work::Resume(_) => Vec::new(),
            })
            .collect()
    }
}

/// Milliseconds since the Unix epoch, for `time_ms`.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_pusher_documents_them() {
        let e = WebhookEvent::MemberAdded { channel: "presence-a".into(), user_id: "7".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"name":"member_added","channel":"presence-a","user_id":"7"}"#
        );
        let c = WebhookEvent::ClientEvent {
            channel: "private-a".into(),
            event: "client-x".into(),
            data: "{}".into(),
            socket_id: "1.2".into(),
            user_id: None,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"name":"client_event","channel":"private-a","event":"client-x","data":"{}","socket_id":"1.2"}"#
        );
        let s = WebhookEvent::SubscriptionCount { channel: "a".into(), subscription_count: 3 };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"name":"subscription_count","channel":"a","subscription_count":3}"#
        );
    }
}
