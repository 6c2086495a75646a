//! Serves the public router on the guarded listener with hyper's HTTP/1.1 connection: upgrades
//! for WebSockets, a deadline on every request head (the first one and each keep-alive request
//! after it — an idle keep-alive connection is closed once it passes), and a graceful drain:
//! on shutdown no new connection is accepted and each open one finishes its request in flight.

use std::io;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::GuardedListener;

/// Accepts until `shutdown` is cancelled, then waits for the open HTTP connections to finish
/// (upgraded WebSockets have left hyper by then and are drained by the caller).
pub async fn serve(
    mut listener: GuardedListener,
    router: Router,
    head_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(head_timeout).keep_alive(true);
    let connections = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}
