//! Fixed one-second windows: per connection (client events) and per app (HTTP API events and
//! reads). A window is a counter and a start time; no timers, no background task.

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Counts what happened in the current one-second window.
#[derive(Debug)]
pub struct Window {
    started: Instant,
    count: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window { started: Instant::now(), count: 0 }
    }
}

impl Window {
    /// Whether `n` more fit under `per_second` (0 = unlimited); counts them if so.
    pub fn allow(&mut self, per_second: u32, n: u64) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = Instant::now();
        if now.duration_since(self.started) >= Duration::from_secs(1) {
            self.started = now;
            self.count = 0;
        }
        if self.count + n <= u64::from(per_second) {
            self.count += n;
            true
        } else {
            false
        }
    }
}

/// A token bucket: `burst` operations at once, refilled at `per_second`. For subscription
/// changes, where a reconnecting client legitimately subscribes to all its channels at once but
/// a sustained subscribe / unsubscribe cycle (each a Redis script and maybe a webhook) is not.
#[derive(Debug)]
pub struct Bucket {
    last: Instant,
    /// Tokens spent beyond a full bucket's, as of `last` (0 = full).
    spent: f32,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { last: Instant::now(), spent: 0.0 }
    }
}

impl Bucket {
    /// Whether one more operation fits (`per_second` 0 = unlimited); counts it if so.
    pub fn take(&mut self, per_second: u32, burst: usize) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let refilled = now.duration_since(self.last).as_secs_f32() * per_second as f32;
        self.last = now;
        self.spent = (self.spent - refilled).max(0.0);
        if self.spent + 1.0 > burst.max(1) as f32 {
            return false;
        }
        self.spent += 1.0;
        true
    }

    /// Counts one operation that happens whatever the bucket says (an unsubscribe is never
    /// refused), so what follows pays for it.
    pub fn spend(&mut self, per_second: u32) {
        if per_second > 0 {
            let _ = self.take(per_second, usize::MAX);
        }
    }
}

/// Which per-app limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppLimit {
    /// Events published through the HTTP API.
    BackendEvents,
    /// `GET` requests of the HTTP API.
    ReadRequests,
}

impl AppLimit {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            AppLimit::BackendEvents => "backend_events_per_second",
            AppLimit::ReadRequests => "read_requests_per_second",
        }
    }
}

/// Windows of every app and limit.
#[derive(Debug, Default)]
pub struct AppRates {
    windows: DashMap<(String, AppLimit), Window>,
}

impl AppRates {
    /// Whether `n` more fit under the app's `per_second` for `limit`.
    pub fn allow(&self, app_id: &str, limit: AppLimit, per_second: u32, n: u64) -> bool {
        self.windows.entry((app_id.to_owned(), limit)).or_default().allow(per_second, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_allows_its_limit_per_second_then_refills() {
        let mut w = Window::default();
        assert!((0..10).all(|_| w.allow(10, 1)));
        assert!(!w.allow(10, 1));
        w.started -= Duration::from_secs(1);
        assert!(w.allow(10, 1));
        assert!(!w.allow(10, 10), "a burst larger than what is left is refused whole");
        assert!((0..100).all(|_| Window::default().allow(0, 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_a_burst_then_its_rate() {
        let mut b = Bucket::default();
        assert!((0..5).all(|_| b.take(2, 5)), "the burst");
        assert!(!b.take(2, 5));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.take(2, 5), "one more after half a second at 2 per second");
        assert!(!b.take(2, 5));
        b.spend(2);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!b.take(2, 5), "a spent unsubscribe is paid back first");
        assert!((0..1000).all(|_| Bucket::default().take(0, 1)), "0 is unlimited");
    }

    #[tokio::test]
    async fn apps_and_limits_have_separate_windows() {
        let r = AppRates::default();
        assert!(r.allow("1", AppLimit::BackendEvents, 1, 1));
        assert!(!r.allow("1", AppLimit::BackendEvents, 1, 1));
        assert!(r.allow("1", AppLimit::ReadRequests, 1, 1));
        assert!(r.allow("2", AppLimit::BackendEvents, 1, 1));
    }
}
