//! Wiring: the shared state every handler gets, the two listeners (public WebSocket + HTTP API,
//! and operations), and graceful shutdown — stop accepting, close every socket with 4200 so
//! clients reconnect elsewhere, finish in-flight HTTP requests, then return.

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apps::kubernetes::KubeApps;
use crate::apps::{AppStore, StaticApps};
use crate::channels::Registry;
use crate::cluster::{Cluster, LocalCluster, RedisCluster};
use crate::config::{ClusterMode, Config, Settings};
use crate::connection;
use crate::console::ConsoleLog;
use crate::http_api::{self, ApiError};
use crate::listener::{GuardedListener, Guards};
use crate::metrics::{ops_router, Metrics};
use crate::ratelimit::AppRates;
use crate::subscription_count::SubscriptionCounts;
use crate::webhooks::{WebhookPipeline, WebhookSettings, Webhooks};

/// What every handler and connection task shares.
pub struct Shared {
    /// Server-wide settings.
    pub settings: Settings,
    /// Where apps come from.
    pub apps: Arc<dyn AppStore>,
    /// What crosses nodes.
    pub cluster: Arc<dyn Cluster>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// Where webhook events go.
    pub webhooks: Webhooks,
    /// Throttle state of subscription counts.
    pub counts: SubscriptionCounts,
    /// Per-app rate windows of the HTTP API.
    pub rates: AppRates,
    /// What the debug console streams.
    pub console: ConsoleLog,
}

/// Cheap-clone handle to [`Shared`].
#[derive(Clone)]
pub struct ServerState(Arc<Shared>);

impl Deref for ServerState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A bound, not yet running server.
pub struct Server {
    state: ServerState,
    listener: TcpListener,
    ops_listener: TcpListener,
    webhooks: WebhookPipeline,
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
        let (webhooks, pipeline) = Webhooks::start(webhook_settings, &metrics, console.clone());
        let shutdown = CancellationToken::new();
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
        let cluster: Arc<dyn Cluster> = match &s.cluster {
            ClusterMode::Local => Arc::new(LocalCluster::new(registry)),
            ClusterMode::Redis(redis) => Arc::new(
                RedisCluster::connect(
                    redis.clone(),
                    registry,
                    apps.clone(),
                    webhooks.clone(),
                    metrics.clone(),
                )
                .await
                .map_err(|e| {
                    io::Error::other(format!("cannot join the Redis cluster at {}: {e}", redis.url))
                })?,
            ),
        };
        let state = ServerState(Arc::new(Shared {
            settings: config.settings.clone(),
            apps,
            cluster,
            metrics,
            shutdown,
            connections: TaskTracker::new(),
            webhooks,
            counts: SubscriptionCounts::default(),
            rates: AppRates::default(),
            console,
        }));
        Ok(Server { state, listener, ops_listener, webhooks: pipeline })
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

    /// Serves until the shutdown token is cancelled, then drains: sockets close with 4200,
    /// in-flight HTTP requests finish, then the webhooks those closes caused are sent.
    pub async fn run(self) -> io::Result<()> {
        let Server { state, listener, ops_listener, webhooks } = self;
        let token = state.shutdown.clone();
        let app = Router::new()
            .route("/app/{key}", get(connection::upgrade))
            .merge(http_api::router(state.clone()))
            .merge(if state.settings.dev_auth { crate::dev_auth::router() } else { Router::new() })
            .merge(if state.settings.console { crate::console::router() } else { Router::new() })
            .fallback(|| async { ApiError::NotFound })
            .with_state(state.clone());
        let ops = ops_router(state.metrics.clone(), token.clone(), state.cluster.clone());
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
        crate::http_server::serve(listener, app, guards.handshake_timeout, token.clone()).await?;
        state.connections.close();
        let grace = state.settings.shutdown_grace;
        if tokio::time::timeout(grace, state.connections.wait()).await.is_err() {
            let remaining = state.connections.len();
            tracing::warn!(remaining, "sockets still open after the shutdown grace period");
        }
        state.cluster.shutdown().await;
        webhooks.shutdown(grace).await;
        ops_task.await.map_err(io::Error::other)??;
        Ok(())
    }
}
