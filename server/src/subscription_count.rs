//! `pusher_internal:subscription_count` (and its webhook) for apps that enable it: sent on
//! every subscribe and unsubscribe of a non-presence channel, but for channels of more than
//! [`THROTTLE_ABOVE`] subscribers at most once per [`THROTTLE`], with a trailing update so the
//! last count is never lost.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::apps::App;
use crate::protocol::frames;
use crate::server::ServerState;
use crate::webhooks::WebhookEvent;

/// Channels larger than this are throttled.
pub const THROTTLE_ABOVE: u64 = 100;
/// At most one update per this period for large channels.
pub const THROTTLE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Sent {
    at: Instant,
    trailing_scheduled: bool,
}

/// When each channel's count was last sent.
#[derive(Debug, Default, Clone)]
pub struct SubscriptionCounts {
    sent: Arc<DashMap<(String, String), Sent>>,
}

/// What to do about a count change.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Now,
    Later(Instant),
    AlreadyScheduled,
}

impl SubscriptionCounts {
    fn decide(&self, app_id: &str, channel: &str, count: u64, now: Instant) -> Decision {
        let key = (app_id.to_owned(), channel.to_owned());
        if count == 0 {
            self.sent.remove(&key);
            return Decision::Now;
        }
        let mut entry =
            self.sent.entry(key).or_insert(Sent { at: now - THROTTLE, trailing_scheduled: false });
        if count <= THROTTLE_ABOVE || now.duration_since(entry.at) >= THROTTLE {
            entry.at = now;
            return Decision::Now;
        }
        if entry.trailing_scheduled {
            return Decision::AlreadyScheduled;
        }
        entry.trailing_scheduled = true;
        Decision::Later(entry.at + THROTTLE)
    }

    fn trailing_sent(&self, app_id: &str, channel: &str) {
        if let Some(mut e) = self.sent.get_mut(&(app_id.to_owned(), channel.to_owned())) {
            e.at = Instant::now();
            e.trailing_scheduled = false;
        }
    }
}

/// Reports a new count of `channel` to its subscribers and webhooks, throttled.
pub async fn report(state: &ServerState, app: &Arc<App>, channel: &str, count: u64) {
    match state.counts.decide(&app.id, channel, count, Instant::now()) {
        Decision::Now => send(state, app, channel, count).await,
        Decision::AlreadyScheduled => {}
        Decision::Later(at) => {
            let (state, app, channel) = (state.clone(), app.clone(), channel.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                state.counts.trailing_sent(&app.id, &channel);
                match state.cluster.channel_stats(&app.id, &channel).await {
                    Ok(stats) => send(&state, &app, &channel, stats.subscription_count).await,
                    Err(e) => match e {},
                }
            });
        }
    }
}

async fn send(state: &ServerState, app: &Arc<App>, channel: &str, count: u64) {
    if count > 0 {
        let frame = frames::subscription_count(channel, count);
        if let Err(e) = state.cluster.publish(&app.id, channel, frame.into(), None).await {
            match e {}
        }
    }
    let event = WebhookEvent::SubscriptionCount { channel: channel.to_owned(), subscription_count: count };
    state.webhooks.emit(app, event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_channels_report_every_change_large_ones_at_most_every_30_seconds() {
        let c = SubscriptionCounts::default();
        let t0 = Instant::now();
        assert_eq!(c.decide("1", "a", 5, t0), Decision::Now);
        assert_eq!(c.decide("1", "a", 6, t0), Decision::Now);
        assert_eq!(c.decide("1", "a", 101, t0), Decision::Later(t0 + THROTTLE));
        assert_eq!(c.decide("1", "a", 102, t0), Decision::AlreadyScheduled);
        c.trailing_sent("1", "a");
        assert_eq!(c.decide("1", "a", 150, Instant::now() + THROTTLE), Decision::Now);
        assert_eq!(c.decide("1", "a", 0, Instant::now()), Decision::Now);
    }
}
