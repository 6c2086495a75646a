//! Serves the public router on the guarded listener with hyper's HTTP/1.1 connection: TLS first
//! when configured (the handshake within the request-head deadline), upgrades for WebSockets, a
//! deadline on every request head (the first one and each keep-alive request after it — an idle
//! keep-alive connection is closed once it passes), and a graceful drain: on shutdown no new
//! connection is accepted, and each open one answers its next request with `Connection: close`
//! (or closes once idle for [`IDLE_DRAIN`]) rather than closing under a request the client is
//! sending.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, StatusCode};
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

/// After shutdown, how long an open keep-alive connection waits for one more request before it
/// is closed idle. A client holding it (through a Service that has already dropped this pod)
/// may be sending on it right now; closing it under that request loses the request, so the
/// next one is answered instead, with `Connection: close`.
pub const IDLE_DRAIN: Duration = Duration::from_secs(1);

/// Accepts until `shutdown` is cancelled; returns then, with the open HTTP connections still
/// draining in the tracker (upgraded WebSockets have left hyper and are drained by the caller).
pub async fn serve(
    mut listener: GuardedListener,
    router: Router,
    head_timeout: Duration,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> io::Result<TaskTracker> {
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
    Ok(connections)
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
    let service = {
        let (router, shutdown) = (TowerToHyperService::new(router), shutdown.clone());
        hyper::service::service_fn(move |request| {
            let (answer, shutdown) = (hyper::service::Service::call(&router, request), shutdown.clone());
            async move {
                let mut response = answer.await?;
                // Told in the answer, the client opens its next connection elsewhere.
                if shutdown.is_cancelled() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            // A request on it now is answered and the connection closes after the answer.
            tokio::select! {
                r = conn.as_mut() => return log_end(addr, r),
                () = tokio::time::sleep(IDLE_DRAIN) => {}
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    log_end(addr, result);
}

fn log_end(addr: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%addr, error = %e, "HTTP connection ended with an error");
    }
}
