//! Shutdown's drain: each socket closes with 4200 at a random moment of the drain spread, so
//! the clients of a stopping node reconnect to the others over seconds, not all at once.

use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// A random moment of the drain spread, from now.
pub(super) fn drain_moment(spread: Duration) -> Instant {
    Instant::now() + spread.mul_f64(rand::random::<f64>())
}

/// Resolves when a socket busy writing should close for shutdown: at its drain moment, or one
/// drawn when shutdown begins.
pub(super) async fn drained(shutdown: &CancellationToken, drain_at: Option<Instant>, spread: Duration) {
    let at = match drain_at {
        Some(at) => at,
        None => {
            shutdown.cancelled().await;
            drain_moment(spread)
        }
    };
    sleep_until(at).await;
}
