//! The webhook worker: holds `channel_vacated` / `member_removed` for the debounce window and
//! cancels them (with the matching occupied / added) when the channel or member comes back,
//! gathers each app's events for its batch window, and hands request bodies to deliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{delay_queue, DelayQueue};

use super::delivery::{deliver, Delivery};
use super::{now_ms, Journal, Queued, StoredRequest, WebhookEvent, WebhookMetrics, WebhookSettings, Work};
use crate::apps::App;
use crate::metrics::AppLabel;
use crate::signing;

/// Deliveries running at once; the rest wait for a permit.
const CONCURRENT_REQUESTS: usize = 64;

/// What a held-back event is waiting on: (app id, channel, user id for member events).
type DebounceKey = (String, String, Option<String>);

struct Batch {
    app: Arc<App>,
    events: Vec<WebhookEvent>,
    deadline: Instant,
}

pub(super) struct Worker {
    settings: WebhookSettings,
    metrics: WebhookMetrics,
    tasks: TaskTracker,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    pending: Arc<AtomicUsize>,
    held: DelayQueue<Queued>,
    held_keys: HashMap<DebounceKey, delay_queue::Key>,
    batches: HashMap<String, Batch>,
    /// Where requests are kept while delivered (cluster mode).
    journal: Option<Arc<dyn Journal>>,
}

/// The debounce key of an event, and whether it is the held (leaving) side.
fn debounce_key(app_id: &str, event: &WebhookEvent) -> Option<(DebounceKey, bool)> {
    let key =
        |channel: &str, user: Option<&str>| (app_id.to_owned(), channel.to_owned(), user.map(str::to_owned));
    match event {
        WebhookEvent::ChannelVacated { channel } => Some((key(channel, None), true)),
        WebhookEvent::ChannelOccupied { channel } => Some((key(channel, None), false)),
        WebhookEvent::MemberRemoved { channel, user_id } => Some((key(channel, Some(user_id)), true)),
        WebhookEvent::MemberAdded { channel, user_id } => Some((key(channel, Some(user_id)), false)),
        _ => None,
    }
}

#[derive(Serialize)]
struct Body<'a> {
    time_ms: u64,
    events: Vec<&'a WebhookEvent>,
}

impl Worker {
    pub(super) fn new(
        settings: WebhookSettings,
        metrics: WebhookMetrics,
        tasks: TaskTracker,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        let client = reqwest::Client::builder().timeout(settings.request_timeout).build().unwrap_or_default();
        Worker {
            settings,
            metrics,
            tasks,
            client,
            permits: Arc::new(Semaphore::new(CONCURRENT_REQUESTS)),
            pending: Arc::new(AtomicUsize::new(0)),
            held: DelayQueue::new(),
            held_keys: HashMap::new(),
            batches: HashMap::new(),
            journal,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Work>, stop: CancellationToken) {
        loop {
            let next_batch = self.batches.values().map(|b| b.deadline).min();
            tokio::select! {
                _ = stop.cancelled() => break,
                work = rx.recv() => match work {
                    Some(Work::Event(q)) => self.accept(q),
                    Some(Work::Resume(r)) => self.resume(r),
                    Some(Work::InOrder(app, events)) => self.ready_in_order(app, events),
                    None => break,
                },
                Some(expired) = self.held.next(), if !self.held.is_empty() => {
                    let q = expired.into_inner();
                    if let Some((key, _)) = debounce_key(&q.app.id, &q.event) {
                        self.held_keys.remove(&key);
                    }
                    self.ready(q);
                }
                _ = sleep_until(next_batch.unwrap_or_else(Instant::now)), if next_batch.is_some() => {
                    self.flush_due(false);
                }
            }
        }
        // Shutting down: whatever is held or batched goes out now.
        while let Ok(work) = rx.try_recv() {
            match work {
                Work::Event(q) => self.accept(q),
                Work::Resume(r) => self.resume(r),
                Work::InOrder(app, events) => self.ready_in_order(app, events),
            }
        }
        for key in std::mem::take(&mut self.held_keys).into_values() {
            let q = self.held.remove(&key).into_inner();
            self.ready(q);
        }
        self.flush_due(true);
    }

    fn accept(&mut self, q: Queued) {
        if q.settled {
            return self.ready(q);
        }
        match debounce_key(&q.app.id, &q.event) {
            Some((key, true)) => {
                if let Some(old) = self.held_keys.remove(&key) {
                    self.held.remove(&old);
                }
                let k = self.held.insert(q, self.settings.debounce);
                self.held_keys.insert(key, k);
            }
            Some((key, false)) => match self.held_keys.remove(&key) {
                // Came back within the window: neither the leave nor this return is sent.
                Some(held) => {
                    self.held.remove(&held);
                }
                None => self.ready(q),
            },
            None => self.ready(q),
        }
    }

    fn ready(&mut self, q: Queued) {
        if q.app.webhook_batch_window.is_zero() {
            self.send(&q.app, std::slice::from_ref(&q.event));
            return;
        }
        let window = q.app.webhook_batch_window;
        let batch = self.batches.entry(q.app.id.clone()).or_insert_with(|| Batch {
            app: q.app.clone(),
            events: Vec::new(),
            deadline: Instant::now() + window,
        });
        batch.events.push(q.event);
    }

    /// Events to send in this order: one request per target now, or the app's batch (itself
    /// one request).
    fn ready_in_order(&mut self, app: Arc<App>, events: Vec<WebhookEvent>) {
        if app.webhook_batch_window.is_zero() {
            return self.send(&app, &events);
        }
        for event in events {
            self.ready(Queued { app: app.clone(), event, settled: true });
        }
    }

    fn flush_due(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<String> =
            self.batches.iter().filter(|(_, b)| all || b.deadline <= now).map(|(k, _)| k.clone()).collect();
        for app_id in due {
            if let Some(batch) = self.batches.remove(&app_id) {
                self.send(&batch.app, &batch.events);
            }
        }
    }

    /// One request per target, with the events that target wants.
    fn send(&self, app: &Arc<App>, events: &[WebhookEvent]) {
        for target in &app.webhooks {
            let wanted: Vec<&WebhookEvent> =
                events.iter().filter(|e| target.wants(e.kind(), e.channel())).collect();
            if wanted.is_empty() {
                continue;
            }
            if self.pending.load(Ordering::Acquire) >= self.settings.max_pending_deliveries {
                tracing::warn!(app_id = %app.id, url = %target.url, "webhook dropped: too many deliveries pending");
                self.metrics.drop(&app.id, "too_many_pending");
                continue;
            }
            let body = match serde_json::to_vec(&Body { time_ms: now_ms(), events: wanted }) {
                Ok(b) => bytes::Bytes::from(b),
                Err(_) => continue,
            };
            let id = format!("{:032x}", rand::random::<u128>());
            let signature = signing::sign(&app.secret, &body);
            let journal = self.journal.clone().map(|j| {
                let request = StoredRequest {
                    id: id.clone(),
                    app_id: app.id.clone(),
                    url: target.url.clone(),
                    key: app.key.clone(),
                    signature: signature.clone(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    started_ms: now_ms(),
                };
                (j, request)
            });
            let delivery = Delivery {
                id,
                journal,
                client: self.client.clone(),
                url: target.url.clone(),
                key: app.key.clone(),
                signature,
                body,
                app_id: app.id.clone(),
                first_retry: self.settings.first_retry,
                retry_for: self.settings.retry_for,
                permits: self.permits.clone(),
                pending: self.pending.clone(),
                sent: self.metrics.sent.get_or_create(&AppLabel::new(&app.id)).clone(),
                failed: self.metrics.failed.get_or_create(&AppLabel::new(&app.id)).clone(),
                metrics: self.metrics.clone(),
            };
            self.pending.fetch_add(1, Ordering::AcqRel);
            self.tasks.spawn(deliver(delivery));
        }
    }

    /// Finishes a request another node started: same id, body and signature, the rest of its
    /// retry schedule, kept in this node's journal in turn.
    fn resume(&mut self, r: StoredRequest) {
        let label = AppLabel::new(&r.app_id);
        let delivery = Delivery {
            id: r.id.clone(),
            client: self.client.clone(),
            url: r.url.clone(),
            key: r.key.clone(),
            signature: r.signature.clone(),
            body: bytes::Bytes::from(r.body.clone().into_bytes()),
            app_id: r.app_id.clone(),
            first_retry: self.settings.first_retry,
            retry_for: self.settings.retry_for,
            permits: self.permits.clone(),
            pending: self.pending.clone(),
            sent: self.metrics.sent.get_or_create(&label).clone(),
            failed: self.metrics.failed.get_or_create(&label).clone(),
            metrics: self.metrics.clone(),
            journal: self.journal.clone().map(|j| (j, r)),
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.tasks.spawn(deliver(delivery));
    }
}
