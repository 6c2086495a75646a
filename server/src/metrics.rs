//! The Prometheus metrics registry (`herald_*`): every metric the server exports, with its
//! labels. A leaf: [`crate::ops`] serves it on the operations port.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of per-app metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app id.
    pub app_id: String,
}

impl AppLabel {
    /// Labels for `app_id`.
    pub fn new(app_id: &str) -> Self {
        AppLabel { app_id: app_id.to_owned() }
    }
}

/// Labels of disconnections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    /// The app id.
    pub app_id: String,
    /// Why the socket ended (`client` when the client went away).
    pub reason: &'static str,
}

/// Labels of HTTP API calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Response status code.
    pub status: u16,
}

/// Labels of dropped webhooks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookDropLabels {
    /// The app id.
    pub app_id: String,
    /// Why: `queue_full`, `too_many_pending`, `retries_exhausted`, `shutting_down`.
    pub reason: &'static str,
}

/// Labels of requests refused by a per-app rate limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The app id.
    pub app_id: String,
    /// Which limit.
    pub limit: &'static str,
}

/// Labels of TCP connections refused before HTTP.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Why: `per_ip_limit`, `handshake_timeout`.
    pub reason: &'static str,
}

/// Every metric the server exports. Families are cheap-clone handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connected: Family<AppLabel, Gauge>,
    /// Channels with at least one subscriber on this node.
    pub channels: Family<AppLabel, Gauge>,
    /// Connections accepted.
    pub new_connections: Family<AppLabel, Counter>,
    /// Connections ended, by reason.
    pub disconnections: Family<CloseLabels, Counter>,
    /// WebSocket frames received from clients.
    pub ws_messages_received: Family<AppLabel, Counter>,
    /// WebSocket frames sent to clients.
    pub ws_messages_sent: Family<AppLabel, Counter>,
    /// Bytes received in WebSocket frames.
    pub ws_bytes_received: Family<AppLabel, Counter>,
    /// Bytes sent in WebSocket frames.
    pub ws_bytes_sent: Family<AppLabel, Counter>,
    /// Events published through the HTTP API (one per channel).
    pub api_events: Family<AppLabel, Counter>,
    /// Client events relayed.
    pub client_events: Family<AppLabel, Counter>,
    /// HTTP API calls by response status.
    pub http_calls: Family<HttpLabels, Counter>,
    /// Webhook events accepted into the queue.
    pub webhooks_queued: Family<AppLabel, Counter>,
    /// Webhook requests answered with 2xx.
    pub webhooks_sent: Family<AppLabel, Counter>,
    /// Webhook attempts that failed (each retry counts).
    pub webhooks_failed: Family<AppLabel, Counter>,
    /// Webhook events or requests given up, by reason.
    pub webhooks_dropped: Family<WebhookDropLabels, Counter>,
    /// Requests, events and connections refused by a limit, by limit.
    pub limited: Family<LimitLabels, Counter>,
    /// Redis commands that failed.
    pub redis_errors: Counter,
    /// Lease renewals of this node.
    pub lease_renewals: Counter,
    /// Messages a node missed on pub/sub and delivered from the bus log.
    pub bus_replayed: Counter,
    /// Pub/sub gaps the bus log no longer covered (the node's sockets were asked to reconnect).
    pub bus_gaps: Counter,
    /// Cleanups performed (of dead nodes, of this node's previous incarnation, on shutdown).
    pub cleanups: Counter,
    /// TCP connections refused or cut before HTTP (per-IP limit, no request head in time).
    pub refused_connections: Family<RefusedLabels, Counter>,
    /// Round-trip time of the lease renewal, a steady sample of Redis latency.
    pub redis_latency: Histogram,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("herald");
        let m = Metrics {
            connected: Family::default(),
            channels: Family::default(),
            new_connections: Family::default(),
            disconnections: Family::default(),
            ws_messages_received: Family::default(),
            ws_messages_sent: Family::default(),
            ws_bytes_received: Family::default(),
            ws_bytes_sent: Family::default(),
            api_events: Family::default(),
            client_events: Family::default(),
            http_calls: Family::default(),
            webhooks_queued: Family::default(),
            webhooks_sent: Family::default(),
            webhooks_failed: Family::default(),
            webhooks_dropped: Family::default(),
            limited: Family::default(),
            redis_errors: Counter::default(),
            lease_renewals: Counter::default(),
            bus_replayed: Counter::default(),
            bus_gaps: Counter::default(),
            cleanups: Counter::default(),
            refused_connections: Family::default(),
            redis_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register("connected", "Open WebSocket connections", m.connected.clone());
        registry.register("channels", "Channels with a subscriber on this node", m.channels.clone());
        registry.register("new_connections", "WebSocket connections accepted", m.new_connections.clone());
        registry.register(
            "disconnections",
            "WebSocket connections ended, by reason",
            m.disconnections.clone(),
        );
        registry.register(
            "ws_messages_received",
            "WebSocket frames received",
            m.ws_messages_received.clone(),
        );
        registry.register("ws_messages_sent", "WebSocket frames sent", m.ws_messages_sent.clone());
        registry.register("ws_received_bytes", "Bytes received over WebSocket", m.ws_bytes_received.clone());
        registry.register("ws_sent_bytes", "Bytes sent over WebSocket", m.ws_bytes_sent.clone());
        registry.register("api_events", "Events published through the HTTP API", m.api_events.clone());
        registry.register("client_events", "Client events relayed", m.client_events.clone());
        registry.register("http_calls", "HTTP API calls by status", m.http_calls.clone());
        registry.register("webhooks_queued", "Webhook events queued", m.webhooks_queued.clone());
        registry.register("webhooks_sent", "Webhook requests delivered (2xx)", m.webhooks_sent.clone());
        registry.register("webhooks_failed", "Webhook attempts failed", m.webhooks_failed.clone());
        registry.register("webhooks_dropped", "Webhooks given up, by reason", m.webhooks_dropped.clone());
        registry.register("limited", "Requests refused by a per-app limit, by limit", m.limited.clone());
        registry.register(
            "refused_connections",
            "TCP connections refused or cut before HTTP, by reason",
            m.refused_connections.clone(),
        );
        registry.register("redis_errors", "Redis commands that failed", m.redis_errors.clone());
        registry.register("lease_renewals", "Lease renewals of this node", m.lease_renewals.clone());
        registry.register("cleanups", "Cluster cleanups performed", m.cleanups.clone());
        registry.register(
            "bus_replayed",
            "Messages missed on pub/sub and delivered from the bus log",
            m.bus_replayed.clone(),
        );
        registry.register(
            "bus_gaps",
            "Pub/sub gaps longer than the bus log (sockets asked to reconnect)",
            m.bus_gaps.clone(),
        );
        registry.register(
            "redis_latency_seconds",
            "Round-trip time of lease renewals",
            m.redis_latency.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts one refusal by a per-app limit in `herald_limited_total`.
    pub fn limit_hit(&self, app_id: &str, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { app_id: app_id.to_owned(), limit }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
