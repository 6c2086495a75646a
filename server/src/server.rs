//! Wiring: builds the state (apps, cluster backend, webhooks) and the rules over it (announcer,
//! publisher) into the handle the edges share, serves the two listeners (public WebSocket +
//! HTTP API, and operations), and shuts down gracefully — stop accepting, close every socket
//! with 4200 so clients reconnect elsewhere, finish in-flight HTTP requests, announce the
//! node's goodbye, send the webhooks it caused, then return.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::announce::Announcer;
use crate::apps::kubernetes::KubeApps;
use crate::apps::{AppStore, StaticApps};
use crate::channels::Registry;
use crate::cluster::{AnnounceSender, Announcement, Cluster, LocalCluster, RedisCluster};
use crate::config::{ClusterMode, Config, RedisSettings};
use crate::connection;
use crate::console_log::ConsoleLog;
use crate::http_api::{self, ApiError};
use crate::listener::{GuardedListener, Guards};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::ratelimit::AppRates;
use crate::state::{ServerState, Shared};
use crate::webhooks::{WebhookPipeline, WebhookSettings, Webhooks};

/// A bound, not yet running server.
pub struct Server {
    state: ServerState,
    listener: TcpListener,
    ops_listener: TcpListener,
    webhooks: WebhookPipeline,
    /// The announcer's queue of backend transitions, kept to flush it at shutdown.
    announcements: AnnounceSender,
    /// TLS on the public port, when configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Binds both listeners of the embedded default (static apps, local cluster).
    pub async fn bind(config: &Config) -> io::Result<Server> {
        let webhooks = WebhookSettings {
            queue_size: config.settings.webhook_queue_size,
            max_pending_deliveries: config.settings.max_pending_webhooks,
            ..WebhookSettings::default()
        };
        Self::bind_with(config, webhooks).await
    }

    /// Like [`Server::bind`], with webhook timings of the caller's choosing (tests shorten
    /// the retry backoff).
    pub async fn bind_with(config: &Config, webhook_settings: WebhookSettings) -> io::Result<Server> {
        let s = &config.settings;
        let listener = TcpListener::bind(SocketAddr::new(s.bind, s.port)).await?;
        let ops_listener = TcpListener::bind(SocketAddr::new(s.bind, s.metrics_port)).await?;
        let metrics = Metrics::new();
        let registry = Registry::new(&metrics);
        let console = ConsoleLog::default();
        let shutdown = CancellationToken::new();
        let tls = match &s.tls {
            Some(files) => Some(
                crate::tls::acceptor(files.clone(), shutdown.clone())
                    .map_err(|e| io::Error::other(format!("TLS on the public port: {e}")))?,
            ),
            None => None,
        };
        let apps: Arc<dyn AppStore> = match &config.kubernetes {
            None => Arc::new(StaticApps::new(config.apps.iter().cloned())),
            Some(k) => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    io::Error::other(format!("--apps kubernetes: cannot build a Kubernetes client: {e}"))
                })?;
                KubeApps::start(client, &k.namespace, &k.cluster, shutdown.clone())
                    .await
                    .map_err(|e| io::Error::other(format!("--apps kubernetes: {e}")))?
            }
        };
        let (announcements, backend_transitions) = mpsc::unbounded_channel();
        let (cluster, journal) = match &s.cluster {
            ClusterMode::Local => {
                let local = LocalCluster::new(registry);
                local.start_cache_sweeper();
                (Cluster::of(local), None)
            }
            ClusterMode::Redis(redis) => {
                let backend = join_redis(redis, registry, &announcements, &metrics).await.map_err(|e| {
                    let url = crate::config::redacted_url(&redis.url);
                    io::Error::other(format!("cannot join the Redis cluster at {url}: {e}"))
                })?;
                // Webhook requests being delivered are kept in Redis, for a takeover.
                let journal: Arc<dyn crate::webhooks::Journal> = Arc::new(backend.clone());
                (Cluster::of(backend), Some(journal))
            }
        };
        let (webhooks, pipeline) = Webhooks::start(webhook_settings, &metrics, console.clone(), journal);
        let announcer = Announcer::new(&cluster, webhooks.clone(), apps.clone());
        tokio::spawn(announcer.clone().run_backend(backend_transitions));
        let rates = Arc::new(AppRates::default());
        let publisher = Publisher::new(&cluster, rates.clone(), metrics.clone(), console.clone());
        let state = ServerState(Arc::new(Shared {
            settings: config.settings.clone(),
            apps,
            cluster,
            announcer,
            publisher,
            metrics,
            shutdown,
            connections: TaskTracker::new(),
            webhooks,
            rates,
            console,
        }));
        Ok(Server { state, listener, ops_listener, webhooks: pipeline, announcements, tls })
    }

    /// Address of the WebSocket + HTTP API listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Address of the operations listener.
    pub fn ops_addr(&self) -> io::Result<SocketAddr> {
        self.ops_listener.local_addr()
    }

    /// Cancel it to shut the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: sockets close with 4200 while
    /// open HTTP connections answer their next request with `Connection: close`, then the
    /// webhooks those closes caused are sent.
    pub async fn run(self) -> io::Result<()> {
        let Server { state, listener, ops_listener, webhooks, announcements, tls } = self;
        let token = state.shutdown.clone();
        let app = Router::new()
            .route("/app/{key}", get(connection::upgrade))
            .merge(http_api::router(state.clone()))
            .merge(if state.settings.dev_auth { crate::dev_auth::router() } else { Router::new() })
            .merge(if state.settings.console { crate::console::router() } else { Router::new() })
            .fallback(|| async { ApiError::NotFound })
            .with_state(state.clone());
        let ops = crate::ops::router(state.metrics.clone(), token.clone(), state.cluster.health.clone());
        let ops_shutdown = token.clone().cancelled_owned();
        let ops_task =
            tokio::spawn(
                async move { axum::serve(ops_listener, ops).with_graceful_shutdown(ops_shutdown).await },
            );
        let guards = Guards {
            max_connections_per_ip: state.settings.max_connections_per_ip,
            handshake_timeout: state.settings.handshake_timeout,
        };
        let listener = GuardedListener::new(listener, guards, state.metrics.refused_connections.clone());
        let http =
            crate::http_server::serve(listener, app, guards.handshake_timeout, tls, token.clone()).await?;
        state.connections.close();
        let grace = state.settings.shutdown_grace;
        if tokio::time::timeout(grace, state.connections.wait()).await.is_err() {
            let remaining = state.connections.len();
            tracing::warn!(remaining, "sockets still open after the shutdown grace period");
        }
        // HTTP connections drained meanwhile; each ends within IDLE_DRAIN unless a request is slow.
        if tokio::time::timeout(grace, http.wait()).await.is_err() {
            tracing::warn!(
                remaining = http.len(),
                "HTTP requests still running after the shutdown grace period"
            );
        }
        state.cluster.health.shutdown().await;
        // The goodbye's own transitions are announced before the webhooks are flushed.
        let (flushed, done) = oneshot::channel();
        if announcements.send(Announcement::Flush(flushed)).is_ok() {
            let _ = tokio::time::timeout(grace, done).await;
        }
        // Webhooks held cluster-wide end their window now, as the webhook queue's own do.
        state.announcer.release_holds(grace).await;
        webhooks.shutdown(grace).await;
        ops_task.await.map_err(io::Error::other)??;
        Ok(())
    }
}

/// Redis (or its name) not there yet: refused, timed out, dropped, or a name that does not
/// resolve yet (a new Service's DNS record, a DNS server starting; getaddrinfo's errors have no
/// stable kind, so the message is matched).
fn not_there_yet(e: &redis::RedisError) -> bool {
    e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || crate::cluster::redis::not_serving(e)
        || e.to_string().contains("failed to lookup address")
}

/// How long a starting node waits for Redis to accept connections: a Redis pod started beside
/// the servers (its Service's endpoints, its DNS name) can take seconds, which need not cost a
/// crash loop.
/// Any other error (authentication, TLS, a bad URL) fails at once.
const REDIS_START_WAIT: Duration = Duration::from_secs(10);

async fn join_redis(
    redis: &RedisSettings,
    registry: Registry,
    announcements: &AnnounceSender,
    metrics: &Arc<Metrics>,
) -> redis::RedisResult<RedisCluster> {
    let deadline = Instant::now() + REDIS_START_WAIT;
    let mut pause = Duration::from_millis(200);
    loop {
        let joined =
            RedisCluster::connect(redis.clone(), registry.clone(), announcements.clone(), metrics.clone())
                .await;
        match joined {
            Err(e) if not_there_yet(&e) && Instant::now() + pause < deadline => {
                let url = crate::config::redacted_url(&redis.url);
                tracing::warn!(%url, error = %e, "Redis not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            joined => return joined,
        }
    }
}
