//! Serves the public router on the guarded listener with hyper's HTTP/1.1 connection: TLS first
//! when configured (the handshake within the request-head deadline), upgrades for WebSockets, a
//! deadline on every request head (the first one and each keep-alive request after it — an idle
//! keep-alive connection is closed once it passes), and a graceful drain: on shutdown no new
//! connection is accepted and each open one finishes its request in flight.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::GuardedListener;

/// Accepts until `shutdown` is cancelled, then waits for the open HTTP connections to finish
/// (upgraded WebSockets have left hyper by then and are drained by the caller).
pub async fn serve(
    mut listener: GuardedListener,
    router: Router,
    head_timeout: Duration,
    tls: Option<TlsAcceptor>,
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
        let (builder, router, shutdown) = (builder.clone(), router.clone(), shutdown.clone());
        match &tls {
            None => connections.spawn(connection(builder, io, router, addr, shutdown)),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    // A client that never finishes its handshake is cut like a slow request head.
                    match tokio::time::timeout(head_timeout, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => connection(builder, tls, router, addr, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake not done in time"),
                    }
                })
            }
        };
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One HTTP/1.1 connection (plain or TLS), with upgrades, until it ends or the drain.
async fn connection<I>(
    builder: http1::Builder,
    io: I,
    router: Router,
    addr: SocketAddr,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
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
}
