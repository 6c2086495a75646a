//! One webhook request, retried with exponential backoff on non-2xx or error until it
//! succeeds or the retry period ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{Journal, StoredRequest, WebhookMetrics};
use crate::console_log::LogEntry;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Header carrying a request's id: the same on every retry of it, so a receiver that answered
/// too late (and got the request again) can drop the repeat.
pub const ID_HEADER: &str = "x-herald-webhook-id";

pub(super) struct Delivery {
    /// Stable id of this request across its retries.
    pub id: String,
    /// Kept outside the process while it is delivered (cluster mode), with when it started.
    pub journal: Option<(Arc<dyn Journal>, StoredRequest)>,
    pub client: reqwest::Client,
    pub url: String,
    pub key: String,
    pub signature: String,
    pub body: Bytes,
    pub app_id: String,
    pub first_retry: Duration,
    pub retry_for: Duration,
    pub permits: Arc<Semaphore>,
    pub pending: Arc<AtomicUsize>,
    pub sent: Counter,
    pub failed: Counter,
    pub metrics: WebhookMetrics,
}

pub(super) async fn deliver(d: Delivery) {
    // The schedule runs from the first attempt, wherever that was made.
    let elapsed = d
        .journal
        .as_ref()
        .map_or(Duration::ZERO, |(_, r)| Duration::from_millis(super::now_ms().saturating_sub(r.started_ms)));
    let give_up = Instant::now() + d.retry_for.saturating_sub(elapsed);
    let place = match &d.journal {
        Some((journal, request)) => journal.record(request).await,
        None => None,
    };
    let mut wait = d.first_retry;
    let mut attempt = 1u32;
    loop {
        let outcome = {
            // A closed semaphore cannot happen (it is never closed); treat it as a failure.
            let _permit = d.permits.acquire().await;
            d.client
                .post(&d.url)
                .header("content-type", "application/json")
                .header("x-pusher-key", &d.key)
                .header("x-pusher-signature", &d.signature)
                .header(ID_HEADER, &d.id)
                .body(d.body.clone())
                .send()
                .await
        };
        let error = match outcome {
            Ok(r) if r.status().is_success() => {
                d.sent.inc();
                let status = r.status().as_u16();
                d.metrics.console.emit(|| {
                    LogEntry::new(&d.app_id, "webhook")
                        .detail(format!("{} → {status} (attempt {attempt})", d.url))
                });
                break;
            }
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        d.failed.inc();
        d.metrics.console.emit(|| {
            LogEntry::new(&d.app_id, "webhook")
                .detail(format!("{} → {error} (attempt {attempt}, retrying)", d.url))
        });
        if Instant::now() + wait > give_up {
            tracing::error!(app_id = %d.app_id, url = %d.url, attempt, %error, "webhook dropped: retries exhausted");
            d.metrics.drop(&d.app_id, "retries_exhausted");
            break;
        }
        tracing::warn!(app_id = %d.app_id, url = %d.url, attempt, %error, retry_in = ?wait, "webhook failed");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
        attempt += 1;
    }
    if let (Some((journal, _)), Some(place)) = (&d.journal, &place) {
        journal.done(place, &d.id).await;
    }
    d.pending.fetch_sub(1, Ordering::AcqRel);
}
