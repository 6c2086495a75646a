//! When to send `pusher_internal:subscription_count` (and its webhook) for apps that enable it:
//! on every subscribe and unsubscribe of a non-presence channel, but for channels of more than
//! [`THROTTLE_ABOVE`] subscribers at most once per [`THROTTLE`], with a trailing update so the
//! last count is never lost. The decision only; `crate::announce` sends.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

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
pub enum Decision {
    /// Send it now.
    Now,
    /// Send the count as it is then, at this instant.
    Later(Instant),
    /// A trailing update is already scheduled.
    AlreadyScheduled,
}

impl SubscriptionCounts {
    /// Records a count change of a channel and says when to send it.
    pub fn decide(&self, app_id: &str, channel: &str, count: u64, now: Instant) -> Decision {
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

    /// Records that the trailing update went out.
    pub fn trailing_sent(&self, app_id: &str, channel: &str) {
        if let Some(mut e) = self.sent.get_mut(&(app_id.to_owned(), channel.to_owned())) {
            e.at = Instant::now();
            e.trailing_scheduled = false;
        }
    }
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
