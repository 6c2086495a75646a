//! Shutdown's drain: each socket closes with 4200 at a random moment of the drain spread, so
//! the clients of a stopping node reconnect to the others over seconds, not all at once.

use std::time::Duration;

use tokio::time::Instant;

/// A random moment of the drain spread, from now.
pub(super) fn drain_moment(spread: Duration) -> Instant {
    Instant::now() + spread.mul_f64(rand::random::<f64>())
}
